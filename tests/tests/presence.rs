//! Presence on the real binaries: across two gateways on one Redis (join, a
//! change of meta, a clean leave, a gateway killed with SIGKILL), within one
//! gateway without Redis, and its rules (filtered sockets, followed users, meta
//! shape, the rate limit).

use std::time::{Duration, Instant};

use e2e::{Ended, Http, Redis, Socket, UserService, faults::gateway_flags, start_gateway};
use serde_json::{Value, json};

/// How long a presence change may take to show on another gateway's socket.
const CROSS_GATEWAY: Duration = Duration::from_secs(5);

/// The member metas of the first `presence` frame for `user` (skipping other
/// frames) whose members satisfy `wanted`, within `within`.
async fn presence_until(
    socket: &mut Socket,
    user: i64,
    within: Duration,
    wanted: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match socket.next(left).await {
            Ok(frame) if frame["type"] == "presence" && frame["user"] == user => {
                let members = frame["members"].as_array().cloned().unwrap_or_default();
                if wanted(&members) {
                    return members;
                }
                last = Some(members);
            }
            Ok(_) => {}
            Err(Ended::TimedOut) => {
                panic!("no wanted presence for {user} within {within:?}; last {last:?}")
            }
            Err(ended) => panic!("the socket ended: {ended:?}"),
        }
    }
}

fn metas(members: &[Value]) -> Vec<Value> {
    members.iter().map(|m| m["meta"].clone()).collect()
}

async fn say(socket: &mut Socket, user: i64, meta: Value) {
    socket
        .send_text(&json!({ "type": "presence", "user": user, "meta": meta }).to_string())
        .await;
}

/// The next `error` frame's detail, skipping other frames.
async fn error(socket: &mut Socket) -> String {
    loop {
        let frame = socket.frame().await;
        if frame["type"] == "error" {
            return frame["detail"].as_str().unwrap().to_owned();
        }
    }
}

#[tokio::test]
async fn presence_crosses_gateways_and_a_killed_gateways_members_leave_within_30_s() {
    let redis = Redis::start().await;
    let users = UserService::start(&redis.flags()).await;
    let flags = gateway_flags(Some(&redis));
    let one = start_gateway(&users.url(), &flags).await;
    let mut two = start_gateway(&users.url(), &flags).await;
    let http = Http::new(one.addr);
    http.wait_ready().await;
    Http::new(two.addr).wait_ready().await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    let query = format!("users={id}");

    let mut a = Socket::connect(one.addr, &query).await;
    assert_eq!(a.frame().await["type"], "hello");
    let first = a.frame().await;
    assert_eq!(
        first,
        json!({ "type": "presence", "user": id, "members": [] }),
        "presence right after hello"
    );
    let mut b = Socket::connect(two.addr, &query).await;
    b.frame().await;
    b.frame().await;

    say(&mut a, id, json!({ "window": 1, "typing": false })).await;
    let seen = presence_until(&mut b, id, CROSS_GATEWAY, |m| m.len() == 1).await;
    assert_eq!(metas(&seen), [json!({ "window": 1, "typing": false })]);
    assert!(
        seen[0]["id"].is_string() && seen[0]["sub"].is_null(),
        "{seen:?}"
    );
    let a_id = seen[0]["id"].clone();

    say(&mut b, id, json!({ "window": 2, "typing": false })).await;
    let both = presence_until(&mut a, id, CROSS_GATEWAY, |m| m.len() == 2).await;
    let ids: Vec<&str> = both.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ordered by id: {ids:?}"
    );

    say(&mut a, id, json!({ "window": 1, "typing": true })).await;
    presence_until(&mut b, id, CROSS_GATEWAY, |m| {
        m.iter()
            .any(|x| x["id"] == a_id && x["meta"]["typing"] == true)
    })
    .await;
    say(&mut a, id, Value::Null).await;
    presence_until(&mut b, id, CROSS_GATEWAY, |m| {
        m.len() == 1 && m[0]["id"] != a_id
    })
    .await;

    // A clean close leaves at once.
    say(&mut a, id, json!({ "window": 1 })).await;
    presence_until(&mut b, id, CROSS_GATEWAY, |m| m.len() == 2).await;
    drop(a);
    let left = Instant::now();
    presence_until(&mut b, id, CROSS_GATEWAY, |m| m.len() == 1).await;
    let clean = left.elapsed();

    // A gateway that dies says nothing: its members go once it is silent.
    let mut c = Socket::connect(two.addr, &query).await;
    let mut d = Socket::connect(one.addr, &query).await;
    d.frame().await;
    say(&mut d, id, json!({ "window": 3 })).await;
    presence_until(&mut c, id, CROSS_GATEWAY, |m| m.len() == 2).await;
    drop(d);
    let mut one = one;
    presence_until(&mut b, id, CROSS_GATEWAY, |m| m.len() == 1).await;
    let mut e = Socket::connect(one.addr, &query).await;
    e.frame().await;
    say(&mut e, id, json!({ "window": 4 })).await;
    presence_until(&mut b, id, CROSS_GATEWAY, |m| m.len() == 2).await;
    one.kill().await;
    let killed = Instant::now();
    presence_until(&mut b, id, Duration::from_secs(30), |m| m.len() == 1).await;
    let gone = killed.elapsed();
    assert!(gone < Duration::from_secs(30), "{gone:?}");
    eprintln!(
        "[presence] across gateways: a clean close left in {clean:?}; a SIGKILLed gateway's member went in {gone:?}"
    );
    two.kill().await;
}

#[tokio::test]
async fn without_redis_presence_works_within_one_gateway_and_keeps_its_rules() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &e2e::unthrottled()).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    let other = http.create("Grace", "Hopper").await["id"].as_i64().unwrap();
    let query = format!("users={id}");
    let mut a = Socket::connect(gateway.addr, &query).await;
    let mut b = Socket::connect(gateway.addr, &query).await;
    say(&mut a, id, json!({ "window": 1 })).await;
    let seen = presence_until(&mut b, id, Duration::from_secs(2), |m| m.len() == 1).await;
    assert_eq!(metas(&seen), [json!({ "window": 1 })]);

    let mut unfiltered = Socket::connect(gateway.addr, "").await;
    say(&mut unfiltered, id, json!({})).await;
    assert!(error(&mut unfiltered).await.contains("?users="));
    say(&mut a, other, json!({})).await;
    assert!(
        error(&mut a)
            .await
            .contains(&format!("subscribe to {other}"))
    );
    for bad in [json!(7), json!("typing"), json!({ "x": "y".repeat(600) })] {
        say(&mut a, id, bad.clone()).await;
        assert!(!error(&mut a).await.is_empty(), "{bad}");
    }

    // A fresh socket: ten messages in a second pass, the eleventh is refused
    // and does not apply.
    let mut c = Socket::connect(gateway.addr, &query).await;
    for i in 0..10 {
        say(&mut c, id, json!({ "window": 3, "n": i })).await;
    }
    say(&mut c, id, json!({ "window": 3, "n": "eleventh" })).await;
    assert!(error(&mut c).await.contains("presence messages a second"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = presence_until(&mut b, id, Duration::from_secs(2), |m| {
        m.iter().any(|x| x["meta"]["n"] == 9)
    })
    .await;
    assert!(
        !now.iter().any(|x| x["meta"]["n"] == "eleventh"),
        "the refused message changed nothing: {now:?}"
    );
}
