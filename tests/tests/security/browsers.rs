//! Browsers: socket tokens as a subprotocol and 4001 at expiry, origins and
//! CORS, and the security headers on every answer.

use super::*;

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
