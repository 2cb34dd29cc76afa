//! Each binary started with exactly its container's environment (addresses
//! rewritten to this machine) starts and answers its probes; a placeholder JWT
//! key is refused.

use super::*;

/// The value of `variable` in the manifest of `workload`.
fn setting(manifests: &Manifests, secrets: &TestSecrets, workload: &str, variable: &str) -> String {
    manifests
        .environment(manifests.container(workload), &|s, k| secrets.get(s, k))
        .remove(variable)
        .unwrap_or_else(|| panic!("{workload}'s manifest sets no {variable}"))
}

/// GETs `path` until it answers 200 (bounded); the last answer, which the
/// caller asserts on with what the path is for.
async fn until_ok(http: &Http, path: &str) -> e2e::Reply {
    let (Ok(reply) | Err(reply)) = poll_until(
        Poll::within(e2e::START_TIMEOUT).every(Duration::from_millis(50)),
        async || {
            let reply = http.get(path).await;
            if reply.status == 200 {
                Ok(reply)
            } else {
                Err(reply)
            }
        },
    )
    .await;
    reply
}

#[tokio::test]
async fn the_user_service_runs_with_its_manifest_and_answers_its_probes() {
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let redis = manifests::start_redis(&manifests, &secrets).await;
    let metrics_port = free_port();
    let users = manifests::start_user_service(&manifests, &secrets, &redis, metrics_port).await;
    let container = manifests.container("user-service");
    let grpc_port = listen_port(&setting(
        &manifests,
        &secrets,
        "user-service",
        "LISTEN_ADDR",
    ));
    assert_eq!(container_port(container, &json!("grpc")), Some(grpc_port));

    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let grpc = &container[probe]["grpc"];
        assert_eq!(
            container_port(container, &grpc["port"]),
            Some(grpc_port),
            "the {probe} asks the port LISTEN_ADDR serves"
        );
        let service = grpc["service"].as_str().unwrap_or_default();
        assert_eq!(
            e2e::faults::health(&users.url(), service).await,
            Some(tonic_health::pb::health_check_response::ServingStatus::Serving),
            "the {probe}'s health check"
        );
    }

    // Metrics where the scrape annotations say.
    let annotations = &manifests.pod_template("user-service")["metadata"]["annotations"];
    let scrape_port: u16 = annotations["prometheus.io/port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let metrics_listen = setting(&manifests, &secrets, "user-service", "METRICS_LISTEN_ADDR");
    assert_eq!(
        listen_port(&metrics_listen),
        scrape_port,
        "METRICS_LISTEN_ADDR is the scraped port"
    );
    let path = annotations["prometheus.io/path"].as_str().unwrap();
    let metrics = until_ok(&Http::new(([127, 0, 0, 1], metrics_port).into()), path).await;
    assert_eq!(
        metrics.status, 200,
        "GET {path} on METRICS_LISTEN_ADDR: {:?}",
        metrics.body
    );

    // The service token is demanded: the one in the file SERVICE_TOKEN_FILE
    // names (the Secret's key, mounted), and no call goes through without it.
    use users_proto::v1::{ListUsersRequest, user_service_client::UserServiceClient};
    let mut client = UserServiceClient::connect(users.url()).await.unwrap();
    let refused = client
        .list_users(ListUsersRequest::default())
        .await
        .expect_err("a call without the service token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let path = setting(&manifests, &secrets, "user-service", "SERVICE_TOKEN_FILE");
    let token = manifests::secret_file_value(&manifests, &secrets, "user-service", &path);
    let mut request = tonic::Request::new(ListUsersRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    client
        .list_users(request)
        .await
        .expect("a call with the mounted token goes through");

    // LOG_FORMAT=json: every line a JSON object.
    for line in users.process.logs() {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok_and(|v| v.is_object()),
            "not a JSON log line: {line}"
        );
    }
}

#[tokio::test]
async fn the_gateway_runs_with_its_manifest_and_answers_its_probes() {
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let redis = manifests::start_redis(&manifests, &secrets).await;
    let users = manifests::start_user_service(&manifests, &secrets, &redis, free_port()).await;
    let gateway = manifests::start_gateway(&manifests, &secrets, &users.url(), &redis).await;
    let http = Http::new(gateway.addr);
    let container = manifests.container("gateway");
    let port = listen_port(&setting(&manifests, &secrets, "gateway", "LISTEN_ADDR"));
    assert_eq!(container_port(container, &json!("http")), Some(port));

    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            container_port(container, &get["port"]),
            Some(port),
            "the {probe} asks the port LISTEN_ADDR serves"
        );
        let path = get["path"].as_str().unwrap();
        let reply = until_ok(&http, path).await;
        assert_eq!(reply.status, 200, "{probe} GET {path}: {:?}", reply.body);
    }

    // Authentication is on, with the Secret's key; the service token is the one the
    // user-service wants (a REST call goes through).
    let token = manifests::token(&manifests, &secrets, "deploy-test");
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    assert_eq!(
        http.get("/api/users/").await.status,
        401,
        "authentication is on"
    );
    let listed = http.send("GET", "/api/users/", None, None, &auth).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);

    // The paths the Ingress routes are served.
    for path in PUBLIC_PATHS.iter().filter(|p| !p.starts_with("/ws/")) {
        let reply = http.send("GET", path, None, None, &auth).await;
        assert_eq!(reply.status, 200, "GET {path}");
    }
    let mut socket = Socket::connect(gateway.addr, &format!("token={token}")).await;
    let hello = socket.next(STEP_TIMEOUT).await.expect("a hello frame");
    assert_eq!(hello["type"], "hello");

    // Metrics where the scrape annotations say: the metrics port, not the
    // public one (which answers 404 for /metrics).
    let annotations = &manifests.pod_template("gateway")["metadata"]["annotations"];
    let scrape_port: u16 = annotations["prometheus.io/port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let metrics_listen = setting(&manifests, &secrets, "gateway", "METRICS_LISTEN_ADDR");
    assert_eq!(listen_port(&metrics_listen), scrape_port);
    assert_eq!(
        container_port(container, &json!("metrics")),
        Some(scrape_port)
    );
    let path = annotations["prometheus.io/path"].as_str().unwrap();
    let internal = Http::new(e2e::logged_addr(&gateway, "metrics_listen"));
    let metrics = internal.get(path).await;
    assert_eq!(metrics.status, 200, "GET {path}: {:?}", metrics.body);
    assert_eq!(http.get(path).await.status, 404, "not on the public port");

    // Redis as redis.yaml runs it: the gateway's ACL user (its URL and password
    // file) reads the stream, and may not write it; nobody may anonymously.
    let gateway_env = manifests::gateway_environment(&manifests, &secrets, &users.url(), &redis);
    let password = gateway_env
        .iter()
        .find(|(k, _)| k == "REDIS_PASSWORD_FILE")
        .map(|(_, v)| std::fs::read_to_string(v).unwrap())
        .expect("the gateway reads its Redis password from a file");
    let user = setting(&manifests, &secrets, "gateway", "REDIS_URL");
    let user = user
        .trim_start_matches("redis://")
        .split('@')
        .next()
        .unwrap()
        .to_owned();
    let said = redis
        .say(&[
            &["AUTH", &user, password.trim()],
            &["XREVRANGE", "users:events", "+", "-", "COUNT", "1"],
            &["XADD", "users:events", "*", "epoch", "x", "event", "forged"],
        ])
        .await;
    assert_eq!(said[0], "+OK", "{said:?}");
    assert!(
        said[1].starts_with('*'),
        "the gateway's user reads: {said:?}"
    );
    assert!(
        said[2].starts_with("-NOPERM"),
        "and may not forge: {said:?}"
    );
    let anonymous = redis.say(&[&["XREVRANGE", "users:events", "+", "-"]]).await;
    assert!(anonymous[0].starts_with("-NOAUTH"), "{anonymous:?}");

    for line in gateway.logs() {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok_and(|v| v.is_object()),
            "not a JSON log line: {line}"
        );
    }
}

#[tokio::test]
async fn a_gateway_given_the_placeholder_jwt_key_refuses_to_start() {
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let redis = manifests::start_redis(&manifests, &secrets).await;
    let mut environment =
        manifests::gateway_environment(&manifests, &secrets, "http://127.0.0.1:1", &redis);
    let placeholder = manifests.secret_value("users-secrets", "jwt-secret");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwt-secret");
    std::fs::write(&file, format!("{placeholder}\n")).unwrap();
    let mut replaced = false;
    for (name, value) in &mut environment {
        if name == "JWT_SECRET_FILE" {
            *value = file.display().to_string();
            replaced = true;
        }
    }
    assert!(replaced, "the gateway reads its key from JWT_SECRET_FILE");
    let started = manifests::start_with_environment("gateway", &environment).await;
    let error = started
        .err()
        .expect("the gateway refuses the placeholder key");
    assert!(error.to_string().contains("at least 32 bytes"), "{error}");
}
