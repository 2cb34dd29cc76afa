//! The Redis event source: the same frames as WatchUsers, several gateways on one
//! Redis, and a Redis restart while updates go on.

use std::time::Duration;

use e2e::{
    Ended, Http, Redis, STEP_TIMEOUT, Socket, UserService,
    feed_order::check_writes_reach_the_feed_before_their_answers, metric_value, start_gateway,
    unthrottled,
};
use serde_json::{Value, json};

async fn hello(socket: &mut Socket) -> (u64, String) {
    let hello = socket.frame().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (
        hello["seq"].as_u64().unwrap(),
        hello["epoch"].as_str().unwrap().to_owned(),
    )
}

async fn stack(redis: &Redis) -> (UserService, Vec<String>) {
    let flags = redis.flags();
    (UserService::start(&flags).await, flags)
}

#[tokio::test]
async fn every_kind_of_write_is_on_the_feed_before_it_is_answered_through_redis() {
    let redis = Redis::start().await;
    let (users, mut flags) = stack(&redis).await;
    flags.extend(unthrottled());
    let gateway = start_gateway(&users.url(), &flags).await;
    Http::new(gateway.addr).wait_ready().await;
    check_writes_reach_the_feed_before_their_answers(gateway.addr, 25).await;
}

#[tokio::test]
async fn a_write_whose_event_is_held_up_is_answered_after_the_bound_and_counted() {
    let redis = Redis::start().await;
    let (users, mut flags) = stack(&redis).await;
    flags.extend(["--write-feed-wait".to_owned(), "300ms".to_owned()]);
    let gateway = start_gateway(&users.url(), &flags).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut socket = Socket::connect(gateway.addr, "").await;
    hello(&mut socket).await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    socket.frame().await;

    // A frozen Redis: the relay cannot append, the gateway's read hangs.
    redis.pause();
    let started = std::time::Instant::now();
    let reply = http
        .json(
            "PATCH",
            &format!("/api/users/{id}/"),
            &json!({"first_name": "Held"}),
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.header("x-users-seq").is_some());
    assert!(
        waited >= Duration::from_millis(300),
        "held for the bound: {waited:?}"
    );
    let metrics = String::from_utf8(http.get("/metrics").await.body.to_vec()).unwrap();
    let series = r#"gateway_write_feed_waits_total{outcome="timed_out"}"#;
    assert_eq!(metric_value(&metrics, series), Some(1.0), "{metrics}");

    // Nothing is lost: once Redis thaws, the socket gets the write.
    redis.resume();
    let frame = socket.next(STEP_TIMEOUT).await.expect("the held event");
    assert_eq!(frame["data"]["user"]["first_name"], "Held");
}

#[tokio::test]
async fn sockets_get_every_change_in_the_exact_format_through_redis() {
    let redis = Redis::start().await;
    let (users, flags) = stack(&redis).await;
    let gateway = start_gateway(&users.url(), &flags).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut a = Socket::connect(gateway.addr, "").await;
    let mut b = Socket::connect(gateway.addr, "").await;
    let (seq0, epoch) = hello(&mut a).await;
    hello(&mut b).await;

    let created = http.create("John", "Doe").await;
    let updated = http.rename(created["id"].as_i64().unwrap(), "Johnny").await;
    let path = format!("/api/users/{}/", created["id"]);
    assert_eq!(
        http.send("DELETE", &path, None, None, &[]).await.status,
        204
    );

    let expected = [
        ("create", &created, vec!["first_name", "last_name"]),
        ("update", &updated, vec!["first_name"]),
        ("delete", &updated, vec!["first_name", "last_name"]),
    ];
    for socket in [&mut a, &mut b] {
        for (i, (action, user, changed)) in expected.iter().enumerate() {
            let frame = socket.frame().await;
            assert_eq!(
                frame,
                json!({"type": "user_update", "seq": seq0 + 1 + i as u64, "epoch": epoch,
                       "data": {"action": action, "user": user, "changed": changed}})
            );
        }
    }
}

#[tokio::test]
async fn two_gateways_on_one_redis_both_deliver_a_change_made_through_either() {
    let redis = Redis::start().await;
    let (users, flags) = stack(&redis).await;
    let one = start_gateway(&users.url(), &flags).await;
    let two = start_gateway(&users.url(), &flags).await;
    let (http_one, http_two) = (Http::new(one.addr), Http::new(two.addr));
    http_one.wait_ready().await;
    http_two.wait_ready().await;
    let mut on_one = Socket::connect(one.addr, "").await;
    let mut on_two = Socket::connect(two.addr, "").await;
    hello(&mut on_one).await;
    hello(&mut on_two).await;

    let id = http_one.create("Via", "One").await["id"].as_i64().unwrap();
    http_two.rename(id, "Via two").await;
    for socket in [&mut on_one, &mut on_two] {
        let first: Value = socket.frame().await;
        assert_eq!(first["data"]["action"], "create");
        let second = socket.frame().await;
        assert_eq!(second["data"]["user"]["first_name"], "Via two");
    }
}

#[tokio::test]
async fn a_redis_restart_loses_no_event_and_duplicates_none() {
    let mut redis = Redis::start().await;
    let (users, flags) = stack(&redis).await;
    let gateway = start_gateway(&users.url(), &flags).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut socket = Socket::connect(gateway.addr, "").await;
        hello(&mut socket).await;
        sockets.push(socket);
    }
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    let mut first_seq = None;
    for socket in &mut sockets {
        let seq = socket.frame().await["seq"].as_u64().unwrap();
        first_seq.get_or_insert(seq);
    }
    let first_seq = first_seq.unwrap();

    let total = 30u64;
    for i in 0..total {
        if i == 10 {
            redis.stop().await;
        }
        if i == 20 {
            redis.start_again().await;
        }
        http.rename(id, &format!("Ada {i}")).await;
    }
    for socket in &mut sockets {
        for i in 0..total {
            let frame = match socket.next(Duration::from_secs(30)).await {
                Ok(frame) => frame,
                Err(ended) => panic!("event {i}: {ended:?}"),
            };
            assert_eq!(frame["seq"], first_seq + 1 + i, "{frame}");
            assert_eq!(frame["data"]["user"]["first_name"], format!("Ada {i}"));
        }
        assert_eq!(
            socket.next(Duration::from_millis(300)).await,
            Err(Ended::TimedOut)
        );
    }
}
