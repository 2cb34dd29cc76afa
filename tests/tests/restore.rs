//! A database restored from a backup, with the real binaries and a real Redis.
//! A complete backup carries on as if nothing happened: same epoch, the next seq.
//! A backup that lacks the newest events (the ones after its last replicated
//! position) would reuse their seqs for other changes, which readers that saw
//! the lost ones would skip; the user-service notices at start that the event
//! stream runs ahead of its database and starts a new epoch, so every socket
//! gets `resync` and refetches, and no change goes missing unnoticed.

use std::path::{Path, PathBuf};

use e2e::{Http, Redis, STEP_TIMEOUT, Socket, UserService, start_gateway, unthrottled};
use serde_json::Value;

/// The database's files in `dir` (the file, its WAL and shared memory).
fn database_files(dir: &Path) -> Vec<PathBuf> {
    ["users.db", "users.db-wal", "users.db-shm"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.exists())
        .collect()
}

/// Copies the database's files (the process is stopped: a consistent copy)
/// into a new folder: the backup.
fn back_up(dir: &Path) -> tempfile::TempDir {
    let backup = tempfile::tempdir().unwrap();
    for file in database_files(dir) {
        std::fs::copy(&file, backup.path().join(file.file_name().unwrap())).unwrap();
    }
    backup
}

/// Replaces the database's files in `dir` with the backup's.
fn restore(backup: &Path, dir: &Path) {
    for file in database_files(dir) {
        std::fs::remove_file(file).unwrap();
    }
    for file in database_files(backup) {
        std::fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
    }
}

async fn hello(socket: &mut Socket) -> (u64, String) {
    let hello = socket.frame().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    (
        hello["seq"].as_u64().unwrap(),
        hello["epoch"].as_str().unwrap().to_owned(),
    )
}

/// Creates a user through the gateway, waiting for it to reach a user-service
/// that was just started again; answers the `X-Users-Seq` of the write.
async fn create(http: &Http, first: &str) -> u64 {
    let reply = e2e::eventually(STEP_TIMEOUT, "a create to be answered", async || {
        let body = format!(r#"{{"first_name":"{first}","last_name":"Restored"}}"#);
        let reply = http
            .send(
                "POST",
                "/api/users/",
                Some("application/json"),
                Some(body.into_bytes()),
                &[],
            )
            .await;
        if reply.status == 201 {
            Ok(reply)
        } else {
            Err(format!(": {}", reply.status))
        }
    })
    .await;
    reply.header("x-users-seq").unwrap().parse().unwrap()
}

/// The frames of `socket` until one of `kind` (bounded), skipping events.
async fn frame_of_kind(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = socket.frame().await;
        if frame["type"] == kind {
            return frame;
        }
        assert_eq!(frame["type"], "user_update", "{frame}");
    }
}

/// Writes three users, backs up, writes two more (which every reader sees),
/// stops the user-service: the state both tests restore into.
struct Scene {
    redis: Redis,
    flags: Vec<String>,
    users: UserService,
    http: Http,
    socket: Socket,
    epoch: String,
    backup_after_three: tempfile::TempDir,
    backup_after_five: tempfile::TempDir,
    _gateway: e2e::Process,
}

async fn scene() -> Scene {
    let redis = Redis::start().await;
    let flags = redis.flags();
    let mut users = UserService::start(&flags).await;
    let mut gateway_flags = flags.clone();
    gateway_flags.extend(unthrottled());
    let gateway = start_gateway(&users.url(), &gateway_flags).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let mut socket = Socket::connect(gateway.addr, "").await;
    let (_, epoch) = hello(&mut socket).await;
    for (expected, name) in [(1, "One"), (2, "Two"), (3, "Three")] {
        assert_eq!(create(&http, name).await, expected);
        assert_eq!(socket.frame().await["seq"], expected);
    }
    let addr = users.process.addr;
    users.process.kill().await;
    let backup_after_three = back_up(users.dir.path());
    users.start_again(&flags, addr).await;
    for (expected, name) in [(4, "Four"), (5, "Five")] {
        assert_eq!(create(&http, name).await, expected);
        // Through Redis: the stream holds it.
        let event = socket.frame().await;
        assert_eq!(
            (event["seq"].as_u64(), event["epoch"].as_str()),
            (Some(expected), Some(&*epoch))
        );
    }
    users.process.kill().await;
    let backup_after_five = back_up(users.dir.path());
    Scene {
        redis,
        flags,
        users,
        http,
        socket,
        epoch,
        backup_after_three,
        backup_after_five,
        _gateway: gateway,
    }
}

#[tokio::test]
async fn a_backup_missing_the_newest_events_starts_a_new_epoch_and_every_socket_resyncs() {
    let mut scene = scene().await;
    let addr = scene.users.process.addr;
    restore(scene.backup_after_three.path(), scene.users.dir.path());
    scene.users.start_again(&scene.flags, addr).await;

    let warned = scene
        .users
        .process
        .wait_for_line("the new-epoch warning", STEP_TIMEOUT, |line| {
            let line: Value = serde_json::from_str(line).ok()?;
            line["message"]
                .as_str()?
                .contains("starting a new epoch")
                .then_some(line)
        })
        .await
        .unwrap();
    assert_eq!(warned["stream_top"], 5);
    assert_eq!(warned["lost_after"], 3);
    assert_eq!(warned["old_epoch"], scene.epoch.as_str());
    let new_epoch = warned["new_epoch"].as_str().unwrap().to_owned();
    assert_ne!(new_epoch, scene.epoch);

    // The open socket is told to refetch rather than resumed past changes it
    // would never see.
    frame_of_kind(&mut scene.socket, "resync").await;
    // The next change takes seq 4 again, under the new epoch, and reaches
    // sockets through the refilled stream.
    assert_eq!(create(&scene.http, "Four again").await, 4);
    let event = frame_of_kind(&mut scene.socket, "user_update").await;
    assert_eq!(event["seq"], 4);
    assert_eq!(event["epoch"], new_epoch.as_str());
    assert_eq!(event["data"]["user"]["first_name"], "Four again");
    // A client resuming from the lost seq 5 of the old epoch resyncs too.
    let gateway = scene.http.addr;
    let mut resuming = Socket::connect(gateway, &format!("since=5&epoch={}", scene.epoch)).await;
    let (_, epoch) = hello(&mut resuming).await;
    assert_eq!(epoch, new_epoch);
    frame_of_kind(&mut resuming, "resync").await;
    drop(scene.redis);
}

#[tokio::test]
async fn a_complete_backup_keeps_the_epoch_and_the_next_seq() {
    let mut scene = scene().await;
    let addr = scene.users.process.addr;
    restore(scene.backup_after_five.path(), scene.users.dir.path());
    scene.users.start_again(&scene.flags, addr).await;

    assert_eq!(create(&scene.http, "Six").await, 6);
    let event = scene.socket.frame().await;
    assert_eq!(event["type"], "user_update", "no resync: {event}");
    assert_eq!(event["seq"], 6);
    assert_eq!(event["epoch"], scene.epoch.as_str());
    assert!(
        !scene
            .users
            .process
            .logs()
            .iter()
            .any(|line| line.contains("new epoch")),
        "the epoch stays"
    );
}
