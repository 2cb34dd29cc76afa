//! `/ws/user-updates/` with the WatchUsers source (no Redis): the exact frame
//! format, resume, resync, ping/pong and error frames, the slow-socket cut-off,
//! shutdown with 1001, and resume across a gateway restart.

use std::time::Duration;

use e2e::{
    Ended, Http, STEP_TIMEOUT, Socket, UserService,
    feed_order::check_writes_reach_the_feed_before_their_answers, start_gateway, unthrottled,
};
use serde_json::{Value, json};

/// The `user_update` frame docs/websocket.md specifies for `user` after `action`.
fn expected_frame(seq: u64, epoch: &str, action: &str, user: &Value, changed: &[&str]) -> Value {
    json!({"type": "user_update", "seq": seq, "epoch": epoch,
           "data": {"action": action, "user": user, "changed": changed}})
}

async fn hello(socket: &mut Socket) -> (u64, String) {
    let hello = socket.frame().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (
        hello["seq"].as_u64().unwrap(),
        hello["epoch"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn two_sockets_get_create_update_delete_in_order_in_the_exact_format() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut a = Socket::connect(gateway.addr, "").await;
    let mut b = Socket::connect(gateway.addr, "").await;
    let (seq0, epoch) = hello(&mut a).await;
    assert_eq!(hello(&mut b).await, (seq0, epoch.clone()));
    assert!(!epoch.is_empty());

    let created = http.create("John", "Doe").await;
    let updated = http.rename(created["id"].as_i64().unwrap(), "Johnny").await;
    let path = format!("/api/users/{}/", created["id"]);
    assert_eq!(
        http.send("DELETE", &path, None, None, &[]).await.status,
        204
    );

    let expected = [
        expected_frame(
            seq0 + 1,
            &epoch,
            "create",
            &created,
            &["first_name", "last_name"],
        ),
        expected_frame(seq0 + 2, &epoch, "update", &updated, &["first_name"]),
        expected_frame(
            seq0 + 3,
            &epoch,
            "delete",
            &updated,
            &["first_name", "last_name"],
        ),
    ];
    for socket in [&mut a, &mut b] {
        for frame in &expected {
            assert_eq!(&socket.frame().await, frame);
        }
    }
}

#[tokio::test]
async fn a_resumed_socket_gets_exactly_the_50_missed_updates_then_live_ones() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut socket = Socket::connect(gateway.addr, "").await;
    let (_, epoch) = hello(&mut socket).await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    let since = socket.frame().await["seq"].as_u64().unwrap();
    drop(socket);

    for i in 0..50 {
        http.rename(id, &format!("Ada {i}")).await;
    }
    let mut socket = Socket::connect(gateway.addr, &format!("since={since}&epoch={epoch}")).await;
    let (head, _) = hello(&mut socket).await;
    assert_eq!(head, since + 50);
    for i in 0..50u64 {
        let frame = socket.frame().await;
        assert_eq!(frame["seq"], since + 1 + i, "{frame}");
        assert_eq!(frame["data"]["user"]["first_name"], format!("Ada {i}"));
    }
    http.rename(id, "Live").await;
    let live = socket.frame().await;
    assert_eq!(live["seq"], since + 51);
    assert_eq!(live["data"]["user"]["first_name"], "Live");
    // Exactly once: nothing else is pending.
    assert_eq!(
        socket.next(Duration::from_millis(300)).await,
        Err(Ended::TimedOut)
    );
}

#[tokio::test]
async fn every_kind_of_write_is_on_the_feed_before_it_is_answered() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &unthrottled()).await;
    Http::new(gateway.addr).wait_ready().await;
    check_writes_reach_the_feed_before_their_answers(gateway.addr, 25).await;
}

#[tokio::test]
async fn a_wrong_epoch_or_a_too_old_since_gets_resync() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &["--replay-window".into(), "5".into()]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut probe = Socket::connect(gateway.addr, "").await;
    let (_, epoch) = hello(&mut probe).await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    for i in 0..10 {
        http.rename(id, &format!("Ada {i}")).await;
    }
    let mut head = 0;
    for _ in 0..11 {
        head = probe.frame().await["seq"].as_u64().unwrap();
    }
    assert_eq!(head, 11);

    let mut wrong_epoch =
        Socket::connect(gateway.addr, &format!("since={head}&epoch=not-{epoch}")).await;
    hello(&mut wrong_epoch).await;
    assert_eq!(wrong_epoch.frame().await["type"], "resync");

    let mut too_old = Socket::connect(gateway.addr, &format!("since=1&epoch={epoch}")).await;
    hello(&mut too_old).await;
    assert_eq!(too_old.frame().await["type"], "resync");

    // Just inside the window still replays.
    let mut inside =
        Socket::connect(gateway.addr, &format!("since={}&epoch={epoch}", head - 5)).await;
    hello(&mut inside).await;
    assert_eq!(inside.frame().await["seq"], head - 4);

    // After resync the socket stays open and gets live events.
    http.rename(id, "After").await;
    assert_eq!(too_old.frame().await["data"]["user"]["first_name"], "After");
}

#[tokio::test]
async fn pings_get_pongs_and_anything_else_an_error_frame() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    Http::new(gateway.addr).wait_ready().await;
    let mut socket = Socket::connect(gateway.addr, "").await;
    hello(&mut socket).await;

    socket.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(socket.frame().await, json!({"type": "pong"}));
    for bad in ["not json", r#"{"type":"subscribe"}"#, "[1]"] {
        socket.send_text(bad).await;
        let frame = socket.frame().await;
        assert_eq!(frame["type"], "error", "{bad}");
        assert!(frame["detail"].is_string());
    }
    socket.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(socket.frame().await, json!({"type": "pong"}), "still open");

    // Over the 64 KiB inbound cap: the socket is closed.
    socket.send_text(&"x".repeat(65 * 1024)).await;
    assert!(matches!(
        socket.next(STEP_TIMEOUT).await,
        Err(Ended::Closed(_) | Ended::Error(_))
    ));
}

#[tokio::test]
async fn a_socket_that_never_reads_is_closed_with_1013_while_a_fast_one_keeps_up() {
    let users = UserService::start(&[]).await;
    let gateway = start_gateway(
        &users.url(),
        &[
            "--ws-queue".into(),
            "16".into(),
            "--tcp-send-buffer".into(),
            "4096".into(),
        ],
    )
    .await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let id = http.create("Fast", "Slow").await["id"].as_i64().unwrap();
    let mut slow = Socket::connect_small_buffer(gateway.addr, 4096).await;
    let mut fast = Socket::connect(gateway.addr, "").await;
    let (head, _) = hello(&mut fast).await;

    // Long names make each frame big, so the slow socket's buffers fill soon.
    let long = "x".repeat(95);
    let updates = 400u64;
    let writer = {
        let http = http.clone();
        let long = long.clone();
        tokio::spawn(async move {
            for i in 0..updates {
                http.rename(id, &format!("{long}{i:04}")).await;
            }
        })
    };
    for i in 0..updates {
        let frame = fast.frame().await;
        assert_eq!(
            frame["seq"],
            head + 1 + i,
            "the fast socket gets every event in order"
        );
    }
    writer.await.unwrap();

    // The slow socket now reads: what was buffered, then the 1013 close.
    let mut seen = 0u64;
    let ended = loop {
        match slow.next(STEP_TIMEOUT).await {
            Ok(frame) => {
                if frame["type"] == "user_update" {
                    seen += 1;
                }
            }
            Err(ended) => break ended,
        }
    };
    assert_eq!(ended, Ended::Closed(Some(1013)));
    assert!(
        seen < updates,
        "the slow socket was cut off ({seen} of {updates})"
    );
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1001_and_the_gateway_exits() {
    let users = UserService::start(&[]).await;
    let mut gateway = start_gateway(&users.url(), &[]).await;
    Http::new(gateway.addr).wait_ready().await;
    let mut a = Socket::connect(gateway.addr, "").await;
    let mut b = Socket::connect(gateway.addr, "").await;
    hello(&mut a).await;
    hello(&mut b).await;

    let exit = gateway.terminate(Duration::from_secs(15)).await.unwrap();
    assert_eq!(exit, 0);
    for socket in [&mut a, &mut b] {
        assert_eq!(
            socket.next(STEP_TIMEOUT).await,
            Err(Ended::Closed(Some(1001)))
        );
    }
}

#[tokio::test]
async fn a_client_resumes_across_a_gateway_restart() {
    let users = UserService::start(&[]).await;
    let mut gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut socket = Socket::connect(gateway.addr, "").await;
    let (_, epoch) = hello(&mut socket).await;
    let id = http.create("Ada", "Lovelace").await["id"].as_i64().unwrap();
    // The client's position: the last event it saw.
    let since = socket.frame().await["seq"].as_u64().unwrap();
    gateway.terminate(Duration::from_secs(15)).await.unwrap();
    drop(socket);

    // Changes while no gateway runs, made straight through a second gateway.
    let other = start_gateway(&users.url(), &[]).await;
    let other_http = Http::new(other.addr);
    other_http.wait_ready().await;
    for i in 0..3 {
        other_http.rename(id, &format!("Missed {i}")).await;
    }
    drop(other);

    let restarted = start_gateway(&users.url(), &[]).await;
    Http::new(restarted.addr).wait_ready().await;
    let mut socket = Socket::connect(restarted.addr, &format!("since={since}&epoch={epoch}")).await;
    hello(&mut socket).await;
    for i in 0..3u64 {
        let frame = socket.frame().await;
        assert_eq!(frame["seq"], since + 1 + i);
        assert_eq!(frame["data"]["user"]["first_name"], format!("Missed {i}"));
    }
}
