//! The security suite against the real binaries: bad tokens of every kind get 401
//! and change nothing; field-limited and read-only tokens get 403 and change
//! nothing; every rate limit answers 429 with Retry-After and serves again after
//! it; socket caps, foreign origins, oversized bodies, frames, queries and heads
//! are refused; the user-service refuses RPCs without the service token; TLS works
//! on both paths. Every key, secret and certificate is made here, at test time.

use std::time::Duration;

use e2e::{
    Ended, Http, Poll, Process, Reply, STEP_TIMEOUT, Socket, UserService,
    credentials::{self, Pki, claims, hs256},
    eventually, start_gateway,
};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use users_proto::v1::{self as pb, user_service_client::UserServiceClient};

const NOT_PROVIDED: &str = "Authentication credentials were not provided.";
const INVALID: &str = "Given token not valid for any token type";
const FORBIDDEN: &str = "You do not have permission to perform this action.";
const AUDIENCE: &str = "users-api";

/// A user-service requiring a service token, and a gateway with JWT auth in front
/// of it.
struct Stack {
    users: UserService,
    gateway: Process,
    http: Http,
    secret: String,
    service_token: String,
}

impl Stack {
    /// HS256 with audience `users-api`, and `extra` gateway flags.
    async fn start(extra: &[&str]) -> Stack {
        let secret = credentials::random_secret();
        let service_token = credentials::random_secret();
        let users = UserService::start(&["--service-token".into(), service_token.clone()]).await;
        let mut flags: Vec<String> = [
            "--auth",
            "jwt",
            "--jwt-secret",
            &secret,
            "--jwt-audience",
            AUDIENCE,
            "--service-token",
            &service_token,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        flags.extend(extra.iter().map(|s| (*s).to_owned()));
        let gateway = start_gateway(&users.url(), &flags).await;
        let http = Http::new(gateway.addr);
        http.wait_ready().await;
        Stack {
            users,
            gateway,
            http,
            secret,
            service_token,
        }
    }

    /// A token for `sub` with `extra` claims merged in.
    fn token(&self, sub: &str, extra: Value) -> String {
        let mut claims = claims(sub);
        claims["aud"] = json!(AUDIENCE);
        for (key, value) in extra.as_object().unwrap() {
            claims[key] = value.clone();
        }
        hs256(&self.secret, &claims)
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        let content_type = body.as_ref().map(|_| "application/json");
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.http
            .send(method, path, content_type, body, &headers)
            .await
    }

    /// Creates a user with a full token; its JSON.
    async fn create(&self) -> Value {
        let admin = self.token("admin", json!({}));
        let reply = self
            .call(
                Some(&admin),
                "POST",
                "/api/users/",
                Some(json!({"first_name": "Ada", "last_name": "Lovelace"})),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        reply.json()
    }

    /// The user as it is now, read with a full token.
    async fn current(&self, id: i64) -> Value {
        let admin = self.token("admin", json!({}));
        let reply = self
            .call(Some(&admin), "GET", &format!("/api/users/{id}/"), None)
            .await;
        assert_eq!(reply.status, 200);
        reply.json()
    }
}

fn assert_detail(reply: &Reply, status: u16, detail: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.json(), json!({ "detail": detail }));
}

#[tokio::test]
async fn every_kind_of_bad_token_gets_401_and_changes_nothing() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let path = format!("/api/users/{}/", user["id"]);
    let now = credentials::now();
    let other_secret = credentials::random_secret();
    let mut wrong_signature = claims("mallory");
    wrong_signature["aud"] = json!(AUDIENCE);
    let bad = [
        (
            "expired",
            stack.token("mallory", json!({"exp": now - 3600})),
        ),
        (
            "not yet valid",
            stack.token("mallory", json!({"nbf": now + 3600})),
        ),
        ("wrong signature", hs256(&other_secret, &wrong_signature)),
        ("alg none", credentials::unsigned(&wrong_signature)),
        (
            "wrong audience",
            stack.token("mallory", json!({"aud": "another-api"})),
        ),
        ("no exp", {
            let mut claims = wrong_signature.clone();
            claims.as_object_mut().unwrap().remove("exp");
            hs256(&stack.secret, &claims)
        }),
        ("garbage", "not.a.jwt".to_owned()),
    ];

    let missing = stack
        .call(None, "PATCH", &path, Some(json!({"first_name": "Eve"})))
        .await;
    assert_detail(&missing, 401, NOT_PROVIDED);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"api\"")
    );
    assert_detail(
        &stack.call(None, "GET", &path, None).await,
        401,
        NOT_PROVIDED,
    );
    for (name, token) in &bad {
        for (method, body) in [
            ("PATCH", Some(json!({"first_name": "Eve"}))),
            ("DELETE", None),
            ("GET", None),
        ] {
            let reply = stack.call(Some(token), method, &path, body).await;
            assert_eq!(reply.status, 401, "{name} {method}: {:?}", reply.body);
            assert_eq!(reply.json()["detail"], INVALID, "{name}");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"api\"")
            );
        }
        assert_eq!(
            Socket::try_connect(stack.gateway.addr, &format!("token={token}"), &[])
                .await
                .err(),
            Some(401),
            "{name} on the socket"
        );
    }
    assert_eq!(
        Socket::try_connect(stack.gateway.addr, "", &[]).await.err(),
        Some(401),
        "no token on the socket"
    );
    assert_eq!(stack.current(user["id"].as_i64().unwrap()).await, user);
}

/// A ready gateway verifying `algorithm` tokens with the PEM `public_key`, which
/// lives in the returned folder.
async fn public_key_gateway(
    users: &UserService,
    algorithm: &str,
    public_key: &str,
) -> (Process, Http, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let public_path = dir.path().join("jwt.pub.pem");
    std::fs::write(&public_path, public_key).unwrap();
    let gateway = start_gateway(
        &users.url(),
        &[
            "--auth".into(),
            "jwt".into(),
            "--jwt-algorithm".into(),
            algorithm.into(),
            "--jwt-public-key".into(),
            public_path.display().to_string(),
        ],
    )
    .await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    (gateway, http, dir)
}

#[tokio::test]
async fn an_hs256_token_made_with_the_rs256_public_key_is_refused() {
    let users = UserService::start(&[]).await;
    let (private_pem, public_pem) = credentials::rsa_keys();
    let (_gateway, http, _key_dir) = public_key_gateway(&users, "RS256", public_pem).await;
    let get = |token: String| {
        let http = http.clone();
        async move {
            let bearer = format!("Bearer {token}");
            http.send(
                "GET",
                "/api/users/",
                None,
                None,
                &[("authorization", &bearer)],
            )
            .await
        }
    };

    let good = credentials::sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        &claims("alice"),
    );
    assert_eq!(get(good).await.status, 200, "a real RS256 token");
    let confused = hs256(public_pem, &claims("mallory"));
    assert_detail(&get(confused).await, 401, INVALID);
    let (ec_private, _) = credentials::ec_keys();
    let es256 = credentials::sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
        &claims("mallory"),
    );
    assert_detail(&get(es256).await, 401, INVALID);
    assert_detail(
        &get(credentials::unsigned(&claims("mallory"))).await,
        401,
        INVALID,
    );
}

#[tokio::test]
async fn an_es256_gateway_accepts_its_own_key_only() {
    let users = UserService::start(&[]).await;
    let (private_pem, public_pem) = credentials::ec_keys();
    let (other_private, _) = credentials::ec_keys();
    let (_gateway, http, _key_dir) = public_key_gateway(&users, "ES256", &public_pem).await;
    for (key, expected) in [(private_pem, 200), (other_private, 401)] {
        let token = credentials::sign(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(key.as_bytes()).unwrap(),
            &claims("alice"),
        );
        let bearer = format!("Bearer {token}");
        let reply = http
            .send(
                "GET",
                "/api/users/",
                None,
                None,
                &[("authorization", &bearer)],
            )
            .await;
        assert_eq!(reply.status, expected);
    }
    let confused = hs256(&public_pem, &claims("mallory"));
    let bearer = format!("Bearer {confused}");
    let reply = http
        .send(
            "GET",
            "/api/users/",
            None,
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn a_field_limited_token_writes_its_field_and_nothing_else() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let id = user["id"].as_i64().unwrap();
    let path = format!("/api/users/{id}/");
    let first_only = stack.token("window-1", json!({"fields": ["first_name"]}));

    let ok = stack
        .call(
            Some(&first_only),
            "PATCH",
            &path,
            Some(json!({"first_name": "Ada B."})),
        )
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let before = stack.current(id).await;
    assert_eq!(before["first_name"], "Ada B.");

    for (method, body) in [
        ("PATCH", Some(json!({"last_name": "Byron"}))),
        (
            "PATCH",
            Some(json!({"first_name": "X", "last_name": "Byron"})),
        ),
        (
            "PUT",
            Some(json!({"first_name": "Ada", "last_name": "Byron"})),
        ),
        ("DELETE", None),
    ] {
        let reply = stack.call(Some(&first_only), method, &path, body).await;
        assert_detail(&reply, 403, FORBIDDEN);
    }
    let create = stack
        .call(
            Some(&first_only),
            "POST",
            "/api/users/",
            Some(json!({"first_name": "A", "last_name": "B"})),
        )
        .await;
    assert_detail(&create, 403, FORBIDDEN);
    assert_eq!(stack.current(id).await, before, "nothing changed");
    let list = stack
        .call(
            Some(&stack.token("admin", json!({}))),
            "GET",
            "/api/users/",
            None,
        )
        .await;
    assert_eq!(list.json().as_array().unwrap().len(), 1, "nothing created");
}

#[tokio::test]
async fn a_read_only_token_reads_and_listens_but_never_writes() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let id = user["id"].as_i64().unwrap();
    let path = format!("/api/users/{id}/");
    let reader = stack.token("reader", json!({"scope": "users:read"}));

    assert_eq!(
        stack.call(Some(&reader), "GET", &path, None).await.status,
        200
    );
    for (method, body) in [
        ("PATCH", Some(json!({"first_name": "Eve"}))),
        ("PUT", Some(json!({"first_name": "Eve", "last_name": "X"}))),
        ("DELETE", None),
    ] {
        assert_detail(
            &stack.call(Some(&reader), method, &path, body).await,
            403,
            FORBIDDEN,
        );
    }
    let (mut socket, _) = Socket::try_connect(stack.gateway.addr, &format!("token={reader}"), &[])
        .await
        .expect("a reader may listen");
    assert_eq!(socket.frame().await["type"], "hello");
    assert_eq!(stack.current(id).await, user, "nothing changed");

    let writer_only = stack.token("writer", json!({"scope": "users:write"}));
    assert_detail(
        &stack.call(Some(&writer_only), "GET", &path, None).await,
        403,
        FORBIDDEN,
    );
    assert_eq!(
        Socket::try_connect(stack.gateway.addr, &format!("token={writer_only}"), &[])
            .await
            .err(),
        Some(403)
    );
}

#[tokio::test]
async fn a_write_only_token_gets_the_writes_status_and_never_the_record() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let id = user["id"].as_i64().unwrap();
    let path = format!("/api/users/{id}/");
    let writer = stack.token("writer", json!({"scope": "users:write"}));

    for body in [json!({}), json!({"first_name": "Eve"})] {
        let reply = stack.call(Some(&writer), "PATCH", &path, Some(body)).await;
        assert_eq!(reply.status, 200);
        assert!(reply.body.is_empty(), "no record: {:?}", reply.body);
        assert!(reply.header("etag").is_some());
    }
    let created = stack
        .call(
            Some(&writer),
            "POST",
            "/api/users/",
            Some(json!({"first_name": "New", "last_name": "User"})),
        )
        .await;
    assert_eq!(created.status, 201);
    assert!(created.body.is_empty(), "no record: {:?}", created.body);
    assert!(created.header("x-users-seq").is_some());
    assert_eq!(
        stack.current(id).await["first_name"],
        "Eve",
        "the write applied"
    );
}

#[tokio::test]
async fn absurd_claim_values_get_401_and_the_gateway_keeps_serving() {
    let stack = Stack::start(&[]).await;
    for extra in [
        json!({"exp": u64::MAX}),
        json!({"exp": -1}),
        json!({"exp": 1e300}),
        json!({"nbf": u64::MAX}),
        json!({"iat": i64::MIN}),
        json!({"fields": null}),
        json!({"fields": "first_name"}),
    ] {
        let token = stack.token("absurd", extra.clone());
        let reply = stack.call(Some(&token), "GET", "/api/users/", None).await;
        assert_detail(&reply, 401, INVALID);
        let admin = stack.token("admin", json!({}));
        let after = stack.call(Some(&admin), "GET", "/api/users/", None).await;
        assert_eq!(after.status, 200, "still serving after {extra}");
    }
}

/// Sends `request` until it is throttled; the 429 answer and how many passed.
async fn burst_until_429<F, Fut>(mut request: F) -> (Reply, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    for passed in 0..100 {
        let reply = request().await;
        if reply.status == 429 {
            return (reply, passed);
        }
        assert!(reply.status < 300, "{:?}", reply.body);
    }
    panic!("never throttled");
}

#[tokio::test]
async fn bad_tokens_spend_the_clients_read_budget_until_429() {
    let stack = Stack::start(&["--rate-limit-reads", "5/min"]).await;
    let mut refused = 0;
    let throttled = loop {
        let reply = stack
            .call(Some("not.a.token"), "GET", "/api/users/", None)
            .await;
        if reply.status == 429 {
            break reply;
        }
        assert_detail(&reply, 401, INVALID);
        refused += 1;
        assert!(refused <= 5, "never throttled");
    };
    assert_eq!(
        refused, 5,
        "the client's read budget, as an anonymous reader's"
    );
    assert!(throttled.header("retry-after").is_some());
    let socket = Socket::try_connect(stack.gateway.addr, "token=not.a.token", &[]).await;
    assert_eq!(socket.err(), Some(429), "sockets spend the same budget");
}

fn retry_after(reply: &Reply) -> u64 {
    let seconds: u64 = reply
        .header("retry-after")
        .expect("a 429 carries Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&seconds), "{seconds}");
    let detail = reply.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.starts_with("Request was throttled. Expected available in "),
        "{detail}"
    );
    seconds
}

#[tokio::test]
async fn bursts_beyond_each_rate_limit_get_429_then_service_again() {
    let stack = Stack::start(&[
        "--rate-limit-reads",
        "3/s",
        "--rate-limit-writes",
        "2/s",
        "--rate-limit-connects",
        "2/s",
    ])
    .await;
    let user = stack.create().await;
    let path = format!("/api/users/{}/", user["id"]);
    let alice = stack.token("alice", json!({}));
    let bob = stack.token("bob", json!({}));

    // Reads.
    let (throttled, passed) =
        burst_until_429(|| stack.call(Some(&alice), "GET", &path, None)).await;
    assert!((2..=4).contains(&passed), "{passed} reads passed");
    let wait = retry_after(&throttled);
    assert_eq!(
        stack.call(Some(&bob), "GET", &path, None).await.status,
        200,
        "another identity has its own budget"
    );
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        stack.call(Some(&alice), "GET", &path, None).await.status,
        200
    );

    // Writes.
    let (throttled, passed) = burst_until_429(|| {
        stack.call(
            Some(&alice),
            "PATCH",
            &path,
            Some(json!({"first_name": "Ada"})),
        )
    })
    .await;
    assert!((1..=3).contains(&passed), "{passed} writes passed");
    let wait = retry_after(&throttled);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = stack
        .call(
            Some(&alice),
            "PATCH",
            &path,
            Some(json!({"first_name": "Ada"})),
        )
        .await;
    assert_eq!(again.status, 200);

    // Socket connects.
    let query = format!("token={alice}");
    let mut sockets = Vec::new();
    let refused = loop {
        match Socket::try_connect(stack.gateway.addr, &query, &[]).await {
            Ok((socket, _)) => sockets.push(socket),
            Err(status) => break status,
        }
        assert!(sockets.len() < 10, "never throttled");
    };
    assert_eq!(refused, 429);
    assert!((1..=3).contains(&sockets.len()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        Socket::try_connect(stack.gateway.addr, &query, &[])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn socket_caps_refuse_handshakes_with_503() {
    let stack = Stack::start(&["--ws-max-per-identity", "2", "--ws-max-total", "3"]).await;
    let connect = |sub: &str| {
        let query = format!("token={}", stack.token(sub, json!({})));
        let addr = stack.gateway.addr;
        async move { Socket::try_connect(addr, &query, &[]).await }
    };
    let mut a1 = connect("alice").await.expect("alice 1").0;
    assert_eq!(a1.frame().await["type"], "hello");
    let _a2 = connect("alice").await.expect("alice 2");
    assert_eq!(connect("alice").await.err(), Some(503), "per identity");
    let _b1 = connect("bob").await.expect("bob 1");
    assert_eq!(connect("carol").await.err(), Some(503), "in total");

    a1.stream.close(None).await.unwrap();
    eventually(
        Poll::within(STEP_TIMEOUT).every(Duration::from_millis(50)),
        "the freed slot to be reusable",
        async || match connect("alice").await {
            Ok(_) => Ok(()),
            Err(503) => Err("still 503"),
            Err(status) => panic!("a freed slot is reusable, got {status}"),
        },
    )
    .await;
}

#[tokio::test]
async fn sockets_take_the_token_as_a_subprotocol_and_close_with_4001_when_it_expires() {
    let stack = Stack::start(&["--jwt-leeway", "0s"]).await;
    let token = stack.token("alice", json!({"exp": credentials::now() + 2}));
    let protocol = format!("bearer, {token}");
    let (mut socket, headers) = Socket::try_connect(
        stack.gateway.addr,
        "",
        &[("sec-websocket-protocol", &protocol)],
    )
    .await
    .expect("the subprotocol carries the token");
    assert_eq!(headers["sec-websocket-protocol"], "bearer");
    assert_eq!(socket.frame().await["type"], "hello");
    assert_eq!(
        socket.next(Duration::from_secs(5)).await,
        Err(Ended::Closed(Some(4001)))
    );
}

#[tokio::test]
async fn sockets_from_foreign_origins_are_refused_and_cors_follows_the_list() {
    let stack = Stack::start(&["--cors-allow-origins", "https://app.example"]).await;
    let query = format!("token={}", stack.token("alice", json!({})));
    let own = format!("http://{}", stack.gateway.addr);
    assert_eq!(
        Socket::try_connect(
            stack.gateway.addr,
            &query,
            &[("origin", "https://evil.example")]
        )
        .await
        .err(),
        Some(403)
    );
    assert!(
        Socket::try_connect(stack.gateway.addr, &query, &[("origin", &own)])
            .await
            .is_ok()
    );
    assert!(
        Socket::try_connect(
            stack.gateway.addr,
            &query,
            &[("origin", "https://app.example")]
        )
        .await
        .is_ok()
    );

    let preflight = |origin: &'static str| {
        let http = stack.http.clone();
        async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "PATCH"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ];
            http.send("OPTIONS", "/api/users/1/", None, None, &headers)
                .await
        }
    };
    let allowed = preflight("https://app.example").await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let refused = preflight("https://evil.example").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), None);

    let bearer = format!("Bearer {}", stack.token("alice", json!({})));
    let get = stack
        .http
        .send(
            "GET",
            "/api/users/",
            None,
            None,
            &[
                ("authorization", &bearer),
                ("origin", "https://app.example"),
            ],
        )
        .await;
    assert_eq!(
        get.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let stack = Stack::start(&[]).await;
    for path in ["/api/users/", "/nope", "/", "/healthz", "/api/openapi.json"] {
        let reply = stack.http.get(path).await;
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            reply.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert!(
            reply
                .header("content-security-policy")
                .is_some_and(|csp| csp.contains("frame-ancestors 'none'")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn oversized_bodies_frames_queries_and_heads_are_refused() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let path = format!("/api/users/{}/", user["id"]);
    let admin = stack.token("admin", json!({}));

    let big = json!({"first_name": "x".repeat(17 * 1024)});
    let reply = stack.call(Some(&admin), "PATCH", &path, Some(big)).await;
    assert_eq!(reply.status, 413);
    let long_query = format!("/api/users/?x={}", "a".repeat(5000));
    let bearer = format!("Bearer {admin}");
    let reply = stack
        .http
        .send(
            "GET",
            &long_query,
            None,
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(reply.status, 414);
    let huge_header = "h".repeat(20 * 1024);
    let reply = stack
        .http
        .send(
            "GET",
            "/api/users/",
            None,
            None,
            &[("x-padding", &huge_header)],
        )
        .await;
    assert_eq!(reply.status, 431);
    assert!(
        reply.header("x-content-type-options").is_some(),
        "our own 431, with the security headers: {:?}",
        reply.headers
    );
    let reply = stack
        .call(Some(&admin), "GET", "/api/users/?limit=1000000", None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["count"], 1);
    assert_eq!(stack.current(user["id"].as_i64().unwrap()).await, user);

    let (mut socket, _) = Socket::try_connect(stack.gateway.addr, &format!("token={admin}"), &[])
        .await
        .unwrap();
    assert_eq!(socket.frame().await["type"], "hello");
    socket.send_text(&"x".repeat(64 * 1024 + 1)).await;
    let ended = socket.next(STEP_TIMEOUT).await;
    assert_eq!(ended, Err(Ended::Closed(Some(1009))));
}

#[tokio::test]
async fn the_user_service_refuses_rpcs_without_the_service_token_and_logs_the_caller() {
    let stack = Stack::start(&[]).await;
    let url = stack.users.url();
    let mut client = UserServiceClient::connect(url.clone()).await.unwrap();
    let bare = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bare.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(pb::ListUsersRequest::default());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().unwrap());
    assert_eq!(
        client.list_users(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut right = tonic::Request::new(pb::ListUsersRequest::default());
    right.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", stack.service_token).parse().unwrap(),
    );
    assert!(client.list_users(right).await.is_ok());
    assert!(
        e2e::faults::health(&url, "").await.is_some(),
        "health stays open"
    );

    // Through the gateway, the caller's sub reaches the user-service's log.
    let user = stack.create().await;
    assert!(user["id"].is_number());
    let logged = stack
        .users
        .process
        .logs()
        .iter()
        .any(|line| line.contains("CreateUser") && line.contains("\"sub\":\"admin\""));
    assert!(logged, "the user-service logs who created the user");
}

#[tokio::test]
async fn grpc_between_gateway_and_user_service_runs_over_tls() {
    let pki = Pki::new();
    let users = UserService::start(&pki.server_flags()).await;
    let url = format!("https://localhost:{}", users.process.addr.port());
    let gateway = start_gateway(
        &url,
        &["--user-service-ca".into(), pki.ca.display().to_string()],
    )
    .await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut socket = Socket::connect(gateway.addr, "").await;
    assert_eq!(socket.frame().await["type"], "hello");
    let created = http.create("Grace", "Hopper").await;
    let event = socket.frame().await;
    assert_eq!(
        event["data"]["user"], created,
        "the watch runs over TLS too"
    );

    // Plain-text gRPC to a TLS port fails.
    let plain = start_gateway(&users.url(), &[]).await;
    let reply = Http::new(plain.addr).get("/api/users/").await;
    assert!(matches!(reply.status, 500 | 503), "{}", reply.status);
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("tls"),
        "no internals"
    );
}

#[tokio::test]
async fn the_gateway_serves_https_and_wss() {
    let pki = Pki::new();
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &pki.server_flags()).await;
    let addr = gateway.addr;
    eventually(
        Poll::within(STEP_TIMEOUT).every(Duration::from_millis(50)),
        "the gateway to be ready over HTTPS",
        async || {
            let ready = credentials::https_get(addr, &pki.ca, "/readyz", &[]).await;
            if ready.status == 200 {
                Ok(())
            } else {
                Err(format!("{} {:?}", ready.status, ready.body))
            }
        },
    )
    .await;
    let reply = credentials::https_get(addr, &pki.ca, "/api/users/", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("strict-transport-security").is_some());

    let tls = credentials::tls_connect(addr, &pki.ca).await;
    let url = format!("wss://localhost:{}/ws/user-updates/", addr.port());
    let (mut wss, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("WSS handshake");
    let hello = tokio::time::timeout(STEP_TIMEOUT, wss.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Text(text) = hello else {
        panic!("expected hello, got {hello:?}");
    };
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["type"],
        "hello"
    );
    wss.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
}
