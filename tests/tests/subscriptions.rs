//! Per-user subscriptions on the real binaries: a socket opened with `?users=`
//! gets exactly its users' events (live, after `subscribe`/`unsubscribe`
//! mid-stream, and in a resume's replay), while an unfiltered socket on the same
//! gateway still gets everything; bad values are refused in the contract's
//! shapes.

use std::time::Duration;

use e2e::{Ended, Http, Socket, UserService, start_gateway, unthrottled};
use serde_json::{Value, json};

/// A user-service, a gateway on its WatchUsers feed, and three users.
struct Stack {
    _users: UserService,
    gateway: e2e::Process,
    http: Http,
    ids: [i64; 3],
}

impl Stack {
    async fn start() -> Stack {
        let users = UserService::start(&[]).await;
        let gateway = start_gateway(&users.url(), &unthrottled()).await;
        let http = Http::new(gateway.addr);
        http.wait_ready().await;
        let mut ids = [0; 3];
        for (i, id) in ids.iter_mut().enumerate() {
            *id = http.create(&format!("U{i}"), "Sub").await["id"]
                .as_i64()
                .unwrap();
        }
        Stack {
            _users: users,
            gateway,
            http,
            ids,
        }
    }

    /// Renames user `id` to `name`; the event's seq (the answer's header).
    async fn rename(&self, id: i64, name: &str) -> u64 {
        let reply = self
            .http
            .json(
                "PATCH",
                &format!("/api/users/{id}/"),
                &json!({ "first_name": name }),
            )
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.header("x-users-seq").unwrap().parse().unwrap()
    }
}

/// Every text frame until none comes for a moment, but presence lists (tested
/// in presence.rs).
async fn frames(socket: &mut Socket) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        match socket.next(Duration::from_millis(400)).await {
            Ok(frame) if frame["type"] == "presence" => {}
            Ok(frame) => frames.push(frame),
            Err(Ended::TimedOut) => return frames,
            Err(ended) => panic!("the socket ended: {ended:?}"),
        }
    }
}

/// `(user id, first name)` of each `user_update` among `frames`.
fn updates(frames: &[Value]) -> Vec<(i64, String)> {
    frames
        .iter()
        .filter(|f| f["type"] == "user_update")
        .map(|f| {
            let user = &f["data"]["user"];
            (
                user["id"].as_i64().unwrap(),
                user["first_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_filtered_socket_gets_exactly_its_users_live_and_after_changing_its_set() {
    let stack = Stack::start().await;
    let [a, b, c] = stack.ids;
    let mut all = Socket::connect(stack.gateway.addr, "").await;
    let mut only_a = Socket::connect(stack.gateway.addr, &format!("users={a}")).await;
    let hello = only_a.frame().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["users"], json!([a]));
    assert!(
        all.frame().await.get("users").is_none(),
        "an unfiltered hello names no users"
    );

    stack.rename(a, "A1").await;
    stack.rename(b, "B1").await;
    stack.rename(c, "C1").await;
    assert_eq!(updates(&frames(&mut only_a).await), [(a, "A1".into())]);

    only_a
        .send_text(&json!({ "type": "subscribe", "users": [c, b] }).to_string())
        .await;
    let subscribed = only_a.frame().await;
    let mut set = vec![a, b, c];
    set.sort_unstable();
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["users"], json!(set));
    let at = subscribed["seq"].as_u64().unwrap();
    let b2 = stack.rename(b, "B2").await;
    assert!(
        b2 > at,
        "events after the change have a seq above the frame's"
    );
    only_a
        .send_text(&json!({ "type": "unsubscribe", "users": [a] }).to_string())
        .await;
    stack.rename(a, "A2").await;
    stack.rename(c, "C2").await;
    let after = frames(&mut only_a).await;
    assert_eq!(after[1]["type"], "subscribed", "{after:?}");
    let mut left = vec![b, c];
    left.sort_unstable();
    assert_eq!(after[1]["users"], json!(left));
    assert_eq!(updates(&after), [(b, "B2".into()), (c, "C2".into())]);

    let everything = updates(&frames(&mut all).await);
    assert_eq!(
        everything.len(),
        6,
        "the unfiltered socket gets every event: {everything:?}"
    );
}

#[tokio::test]
async fn a_filtered_resume_replays_only_its_users_events() {
    let stack = Stack::start().await;
    let [a, b, _] = stack.ids;
    let mut first = Socket::connect(stack.gateway.addr, &format!("users={a}")).await;
    let hello = first.frame().await;
    let (since, epoch) = (
        hello["seq"].as_u64().unwrap(),
        hello["epoch"].as_str().unwrap().to_owned(),
    );
    for i in 0..3 {
        stack.rename(a, &format!("A{i}")).await;
        stack.rename(b, &format!("B{i}")).await;
    }
    let mut resumed = Socket::connect(
        stack.gateway.addr,
        &format!("users={a}&since={since}&epoch={epoch}"),
    )
    .await;
    let replay = frames(&mut resumed).await;
    assert_eq!(replay[0]["type"], "hello");
    assert_eq!(
        updates(&replay),
        [(a, "A0".into()), (a, "A1".into()), (a, "A2".into())]
    );
    let seqs: Vec<u64> = replay[1..]
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in seq order: {seqs:?}"
    );
}

#[tokio::test]
async fn bad_user_sets_are_refused_in_the_contracts_shapes() {
    let stack = Stack::start().await;
    let upgrade = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let many: Vec<String> = (1..=1001).map(|i| i.to_string()).collect();
    for users in ["x", "0", "-3", "1,2,b", &many.join(",")] {
        let reply = stack
            .http
            .send(
                "GET",
                &format!("/ws/user-updates/?users={users}"),
                None,
                None,
                &upgrade,
            )
            .await;
        assert_eq!(reply.status, 400, "users={users:.20}: {:?}", reply.body);
        let body = reply.json();
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
        assert_eq!(body.as_object().unwrap().len(), 1, "DRF's shape: {body}");
    }

    let mut empty = Socket::connect(stack.gateway.addr, "users=").await;
    assert_eq!(empty.frame().await["users"], json!([]));
    let mut unfiltered = Socket::connect(stack.gateway.addr, "").await;
    unfiltered.frame().await;
    let mut sockets = [unfiltered, empty];
    for (which, message) in [
        (0, json!({ "type": "subscribe", "users": [1] })),
        (1, json!({ "type": "subscribe", "users": ["1"] })),
        (
            1,
            json!({ "type": "subscribe", "users": (1..=1001).collect::<Vec<_>>() }),
        ),
        (1, json!({ "type": "unsubscribe" })),
    ] {
        let socket = &mut sockets[which];
        socket.send_text(&message.to_string()).await;
        let error = socket.frame().await;
        assert_eq!(error["type"], "error", "{message}: {error}");
        assert!(error["detail"].is_string());
    }
    let [_, mut empty] = sockets;
    // Still open, and the set unchanged: a ping gets its pong, no event comes.
    stack.rename(stack.ids[0], "Nobody follows").await;
    empty.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(empty.frame().await["type"], "pong");
    assert!(updates(&frames(&mut empty).await).is_empty());
}
