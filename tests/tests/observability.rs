//! What operators see, on the real binaries: the gateway's `/metrics` and the
//! user-service's metrics port follow REST calls, socket events and socket
//! closes; one request id goes from an HTTP request through the gateway's logs
//! into the user-service's; and no token or query string ever reaches a log line.

use std::{net::SocketAddr, time::Duration};

use e2e::{
    Http, Poll, Process, STEP_TIMEOUT, Socket, UserService, binary,
    credentials::{claims, hs256, random_secret},
    eventually, logged_addr, metric_value as value, start_gateway,
};
use serde_json::{Value, json};

/// The value of `series`, which must be there.
fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// `GET /metrics` at `addr`, as Prometheus would scrape it.
async fn scrape(addr: SocketAddr) -> String {
    let reply = Http::new(addr).get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    String::from_utf8(reply.body.to_vec()).expect("the exposition is UTF-8")
}

/// Scrapes `addr` until `done` holds (bounded); the last text.
async fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    eventually(
        Poll::within(STEP_TIMEOUT).every(Duration::from_millis(50)),
        what,
        async || {
            let text = scrape(addr).await;
            if done(&text) {
                Ok(text)
            } else {
                Err(format!("\n{text}"))
            }
        },
    )
    .await
}

/// The JSON log lines of `process` that mention `text` anywhere.
fn lines_with(process: &Process, text: &str) -> Vec<Value> {
    process
        .logs()
        .iter()
        .filter(|line| line.contains(text))
        .map(|line| serde_json::from_str(line).expect("log lines are JSON"))
        .collect()
}

/// Waits (bounded) until `process` has logged a line mentioning `text`.
async fn wait_for_log(process: &Process, text: &str) -> Vec<Value> {
    eventually(
        STEP_TIMEOUT,
        &format!("a log line mentioning {text:?}"),
        async || {
            let lines = lines_with(process, text);
            if lines.is_empty() {
                Err(format!("\n{}", process.logs().join("\n")))
            } else {
                Ok(lines)
            }
        },
    )
    .await
}

fn metrics_flag() -> Vec<String> {
    vec!["--metrics-listen".into(), "127.0.0.1:0".into()]
}

#[tokio::test]
async fn metrics_follow_rest_calls_socket_events_and_closes() {
    let users = UserService::start(&metrics_flag()).await;
    let users_metrics = logged_addr(&users.process, "metrics_listen");
    let gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;

    let created = http.create("Ada", "Lovelace").await;
    let id = created["id"].as_i64().unwrap();
    let mut socket = Socket::connect(gateway.addr, "").await;
    let hello = socket.frame().await;
    assert_eq!(hello["type"], "hello");
    let text = scrape(gateway.addr).await;
    assert_eq!(value(&text, "gateway_ws_connections"), Some(1.0), "{text}");

    http.rename(id, "Augusta").await;
    assert_eq!(socket.frame().await["type"], "user_update");
    assert_eq!(
        http.get("/api/users/987654/").await.status,
        404,
        "a missing user"
    );

    let text = scrape(gateway.addr).await;
    let http_count = |route: &str, status: u16| {
        value(
            &text,
            &format!(
                r#"gateway_http_request_duration_seconds_count{{route="{route}",status="{status}"}}"#
            ),
        )
    };
    assert_eq!(http_count("/api/users/", 201), Some(1.0), "{text}");
    assert_eq!(http_count("/api/users/{id}/", 200), Some(1.0), "{text}");
    assert_eq!(http_count("/api/users/{id}/", 404), Some(1.0), "{text}");
    assert_eq!(http_count("/ws/user-updates/", 101), Some(1.0), "{text}");
    assert!(http_count("/readyz", 200).is_some(), "{text}");
    assert!(
        !text.contains(r#"route="/metrics""#) && !text.contains("987654"),
        "scrapes are not counted and raw paths are never labels:\n{text}"
    );
    let grpc = |method: &str, code: &str| {
        value(
            &text,
            &format!(
                r#"gateway_grpc_client_duration_seconds_count{{method="{method}",code="{code}"}}"#
            ),
        )
    };
    assert_eq!(grpc("CreateUser", "OK"), Some(1.0), "{text}");
    assert_eq!(grpc("UpdateUser", "OK"), Some(1.0), "{text}");
    assert_eq!(grpc("GetUser", "NOT_FOUND"), Some(1.0), "{text}");
    assert!(grpc("WatchUsers", "OK").is_some(), "{text}");
    // Both events were fanned out; only the rename had a socket to go to.
    assert_eq!(must(&text, "gateway_events_fanned_out_total"), 2.0);
    assert_eq!(must(&text, "gateway_ws_frames_queued_total"), 1.0);
    let lag_count = must(&text, "gateway_fanout_lag_seconds_count");
    let lag_sum = must(&text, "gateway_fanout_lag_seconds_sum");
    assert_eq!(lag_count, 2.0);
    assert!(
        (0.0..5.0).contains(&(lag_sum / lag_count)),
        "a plausible fan-out lag: {lag_sum} s over {lag_count} events"
    );
    assert_eq!(must(&text, "gateway_event_source_up"), 1.0);
    assert_eq!(must(&text, "gateway_ws_connections"), 1.0);

    // A resume within the window, and one from another database.
    let epoch = hello["epoch"].as_str().unwrap();
    let seq = hello["seq"].as_u64().unwrap();
    let mut resumed = Socket::connect(gateway.addr, &format!("since={seq}&epoch={epoch}")).await;
    assert_eq!(resumed.frame().await["type"], "hello");
    assert_eq!(resumed.frame().await["type"], "user_update", "the replay");
    let mut foreign = Socket::connect(gateway.addr, "since=1&epoch=another-database").await;
    assert_eq!(foreign.frame().await["type"], "hello");
    assert_eq!(foreign.frame().await["type"], "resync");

    // Closing the sockets brings the gauge back to 0 and says why they closed.
    for mut socket in [socket, resumed, foreign] {
        socket.stream.close(None).await.expect("closing the socket");
    }
    let text = scrape_until(gateway.addr, "every socket to close", |text| {
        value(text, "gateway_ws_connections") == Some(0.0)
    })
    .await;
    assert_eq!(
        value(&text, r#"gateway_ws_closed_total{reason="client_closed"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(must(&text, "gateway_ws_resumes_total"), 1.0);
    assert_eq!(must(&text, "gateway_ws_resyncs_total"), 1.0);

    // The user-service's own port.
    let text = scrape(users_metrics).await;
    let rpc = |method: &str, code: &str| {
        value(
            &text,
            &format!(
                r#"user_service_grpc_duration_seconds_count{{method="{method}",code="{code}"}}"#
            ),
        )
    };
    assert_eq!(rpc("CreateUser", "OK"), Some(1.0), "{text}");
    assert_eq!(rpc("UpdateUser", "OK"), Some(1.0), "{text}");
    assert_eq!(rpc("GetUser", "NOT_FOUND"), Some(1.0), "{text}");
    assert!(
        must(
            &text,
            r#"user_service_db_query_duration_seconds_count{op="write_batch"}"#
        ) >= 2.0
    );
    assert_eq!(must(&text, "user_service_head_seq"), 2.0);
    assert_eq!(
        must(&text, "user_service_watchers"),
        1.0,
        "the gateway's WatchUsers stream"
    );
    assert_eq!(Http::new(users_metrics).get("/").await.status, 404);
}

#[tokio::test]
async fn a_fresh_gateway_exposes_every_known_series_at_zero_from_the_first_scrape() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    let text = scrape(gateway.addr).await;
    for series in [
        "gateway_ws_connections",
        "gateway_events_fanned_out_total",
        "gateway_ws_frames_queued_total",
        "gateway_ws_resyncs_total",
        r#"gateway_ws_closed_total{reason="too_slow"}"#,
        r#"gateway_ws_closed_total{reason="ping_timeout"}"#,
        r#"gateway_write_feed_waits_total{outcome="timed_out"}"#,
        r#"gateway_connections_shed_total{reason="over_cap"}"#,
    ] {
        assert_eq!(value(&text, series), Some(0.0), "{series} in:\n{text}");
    }
}

#[tokio::test]
async fn one_request_id_runs_from_the_http_request_into_the_user_services_logs() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    let path = format!("/api/users/{id}/");
    let patch = |request_id: String| {
        let http = http.clone();
        let path = path.clone();
        async move {
            let body = serde_json::to_vec(&json!({"first_name": request_id.len().to_string()}));
            http.send(
                "PATCH",
                &path,
                Some("application/json"),
                Some(body.unwrap()),
                &[("x-request-id", &request_id)],
            )
            .await
        }
    };

    let reply = patch("abc-123".into()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some("abc-123"));
    let logged = wait_for_log(&users.process, "abc-123").await;
    assert!(
        logged
            .iter()
            .any(|line| line["request_id"] == "abc-123" && line["method"] == "UpdateUser"),
        "the user-service logs the call with the gateway's id: {logged:?}"
    );
    let logged = wait_for_log(&gateway, "abc-123").await;
    assert!(
        logged.iter().any(|line| line["message"] == "request"
            && line["span"]["request_id"] == "abc-123"
            && line["span"]["route"] == "/api/users/{id}/"
            && line["path"] == path.as_str()
            && line["status"] == 200
            && line["latency_ms"].is_number()),
        "the gateway logs the request in its span: {logged:?}"
    );

    for invalid in ["not valid!".to_owned(), "x".repeat(129), "a/b".to_owned()] {
        let reply = patch(invalid.clone()).await;
        assert_eq!(reply.status, 200);
        let made = reply
            .header("x-request-id")
            .expect("an id is always echoed");
        assert_ne!(made, invalid);
        assert_eq!(made.len(), 32, "a generated id: {made}");
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        wait_for_log(&users.process, made).await;
        for process in [&users.process, &gateway] {
            assert!(
                lines_with(process, &invalid).is_empty(),
                "an invalid id is never logged"
            );
        }
    }

    // Each request gets its own id.
    let (a, b) = (http.get(&path).await, http.get(&path).await);
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
}

#[tokio::test]
async fn tokens_and_query_strings_never_reach_a_log_line() {
    let secret = random_secret();
    let service_token = random_secret();
    let debug = |command: &mut tokio::process::Command| {
        command.env("RUST_LOG", "debug");
    };
    let users =
        UserService::start_with(&["--service-token".into(), service_token.clone()], debug).await;
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--user-service-url",
        &users.url(),
        "--auth",
        "jwt",
        "--jwt-secret",
        &secret,
        "--service-token",
        &service_token,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let gateway = Process::start_with(&binary("gateway"), &args, debug)
        .await
        .expect("the gateway starts");
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let token = hs256(&secret, &claims("alice"));
    let bearer = format!("Bearer {token}");

    // A socket with a good token in the query, and one with a bad one.
    let mut socket = Socket::connect(gateway.addr, &format!("token={token}&since=0")).await;
    assert_eq!(socket.frame().await["type"], "hello");
    let refused = Socket::try_connect(gateway.addr, "token=query-secret-xyz", &[]).await;
    assert_eq!(refused.err(), Some(401));
    // REST with a good bearer and a query holding a token, and a forged bearer.
    let reply = http
        .send(
            "GET",
            "/api/users/?limit=1&token=rest-secret-xyz",
            None,
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(reply.status, 200);
    let forged = http
        .send(
            "GET",
            "/api/users/",
            None,
            None,
            &[("authorization", "Bearer forged-secret-xyz")],
        )
        .await;
    assert_eq!(forged.status, 401);
    socket.stream.close(None).await.expect("closing the socket");

    // The requests were logged (at debug), by path only.
    wait_for_log(&gateway, r#""path":"/ws/user-updates/""#).await;
    wait_for_log(&gateway, r#""path":"/api/users/""#).await;
    for process in [&users.process, &gateway] {
        for never in [
            token.as_str(),
            "query-secret-xyz",
            "rest-secret-xyz",
            "forged-secret-xyz",
            "token=",
            "limit=1",
            &secret,
            &service_token,
        ] {
            let leaked = lines_with(process, never);
            assert!(leaked.is_empty(), "{never:?} was logged: {leaked:?}");
        }
    }
}

/// With `--metrics-listen` the gateway's metrics move to a port of their own
/// (only `/metrics` there), and its public port answers 404 for them: no
/// ingress route to the public port can expose them.
#[tokio::test]
async fn a_gateway_metrics_port_of_its_own_takes_metrics_off_the_public_port() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &metrics_flag()).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    http.create("Ada", "Lovelace").await;
    let internal = logged_addr(&gateway, "metrics_listen");
    assert_ne!(internal, gateway.addr);
    let text = scrape_until(internal, "the create counted", |text| {
        text.lines().any(|line| {
            line.starts_with("gateway_http_request_duration_seconds_count")
                && line.contains(r#"route="/api/users/""#)
        })
    })
    .await;
    assert!(text.contains("gateway_ws_connections"), "{text}");
    assert_eq!(
        http.get("/metrics").await.status,
        404,
        "not on the public port"
    );
    assert_eq!(
        Http::new(internal).get("/").await.status,
        404,
        "nothing else on the metrics port"
    );
}
