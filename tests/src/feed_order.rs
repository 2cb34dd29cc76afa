//! The order a write's answer keeps with its event, checked from outside on any
//! event source: every socket open before the answer gets the event, and a socket
//! opened right after the answer has a `hello` at or past it and never gets it
//! live (the POC's order: it broadcast before it answered).

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::{
    http::{Http, Reply},
    socket::Socket,
};

/// Sockets opened before each write, all of which must get its event.
const SOCKETS_BEFORE: usize = 3;

/// The kinds of write a REST client makes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Post,
    Patch,
    Put,
    Delete,
}

/// Runs `rounds` rounds of each kind of write through the gateway at `addr`; in
/// each, sockets opened before the write get its event as their next frame, and a
/// socket opened right after its answer gets the next write's event as its first
/// frame after `hello`, never this one's.
pub async fn check_writes_reach_the_feed_before_their_answers(addr: SocketAddr, rounds: usize) {
    let http = Http::new(addr);
    let marker = http.create("Marker", "User").await["id"].as_i64().unwrap();
    for round in 0..rounds {
        for kind in [Kind::Post, Kind::Patch, Kind::Put, Kind::Delete] {
            // Each round writes to a user of its own, made before the sockets open.
            let target = match kind {
                Kind::Post => None,
                _ => Some(http.create("Ada", "Lovelace").await["id"].as_i64().unwrap()),
            };
            let mut before = Vec::with_capacity(SOCKETS_BEFORE);
            for _ in 0..SOCKETS_BEFORE {
                let mut socket = Socket::connect(addr, "").await;
                hello_seq(&mut socket).await;
                before.push(socket);
            }

            let reply = write(&http, kind, target, round).await;
            let seq = answered_seq(&reply, kind);
            let mut after = Socket::connect(addr, "").await;
            let hello = hello_seq(&mut after).await;
            assert!(
                hello >= seq,
                "{kind:?} round {round}: a socket opened after the answer (seq {seq}) says hello at {hello}"
            );
            for socket in &mut before {
                let frame = socket.frame().await;
                assert_eq!(
                    frame["seq"], seq,
                    "{kind:?} round {round}: a socket open before the answer gets the write next: {frame}"
                );
            }

            // Frames come in seq order: had the write reached `after` live, it
            // would come before the marker's event.
            let marked = http
                .json(
                    "PATCH",
                    &format!("/api/users/{marker}/"),
                    &json!({"first_name": format!("Marker {round} {kind:?}")}),
                )
                .await;
            let marker_seq = answered_seq(&marked, Kind::Patch);
            let frame = after.frame().await;
            assert_eq!(
                frame["seq"], marker_seq,
                "{kind:?} round {round}: a socket opened after the answer (seq {seq}) gets only later writes: {frame}"
            );
        }
    }
}

async fn write(http: &Http, kind: Kind, target: Option<i64>, round: usize) -> Reply {
    let path = target.map(|id| format!("/api/users/{id}/"));
    let names = |first: &str| json!({"first_name": format!("{first} {round}"), "last_name": "L"});
    match (kind, path) {
        (Kind::Post, _) => http.json("POST", "/api/users/", &names("Created")).await,
        (Kind::Patch, Some(path)) => {
            let body = json!({"first_name": format!("Patched {round}")});
            http.json("PATCH", &path, &body).await
        }
        (Kind::Put, Some(path)) => http.json("PUT", &path, &names("Put")).await,
        (Kind::Delete, Some(path)) => http.send("DELETE", &path, None, None, &[]).await,
        (kind, None) => unreachable!("{kind:?} needs a user"),
    }
}

/// The seq a successful write's answer names in `X-Users-Seq`.
fn answered_seq(reply: &Reply, kind: Kind) -> u64 {
    let expected = match kind {
        Kind::Post => 201,
        Kind::Delete => 204,
        Kind::Patch | Kind::Put => 200,
    };
    assert_eq!(reply.status, expected, "{kind:?}: {:?}", reply.body);
    reply
        .header("x-users-seq")
        .and_then(|seq| seq.parse().ok())
        .unwrap_or_else(|| panic!("{kind:?}: no X-Users-Seq in {:?}", reply.headers))
}

async fn hello_seq(socket: &mut Socket) -> u64 {
    let hello: Value = socket.frame().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    hello["seq"].as_u64().expect("hello has a seq")
}
