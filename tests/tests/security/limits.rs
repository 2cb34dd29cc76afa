//! Limits: rate limits answer 429 with Retry-After and serve again after it,
//! socket caps answer 503, and oversized bodies, frames, queries and heads are
//! refused.

use super::*;

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
