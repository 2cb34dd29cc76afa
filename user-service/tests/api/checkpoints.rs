//! Who checkpoints the WAL (`--wal-checkpoints`): by default the service copies
//! written pages back into the database file shortly after writes; with
//! `external` it never does, so a replicator such as Litestream that must own
//! checkpointing sees every WAL frame before the WAL restarts.

use std::{path::Path, sync::Arc, time::Duration};

use user_service::{Config, store::Checkpoints};

use crate::helpers::{TestApp, spawn_app_in};

/// Starts an app on a fresh SQLite file with `checkpoints`, writes 50 users,
/// and waits well past the service's checkpoint delay (250 ms).
async fn written(checkpoints: Checkpoints) -> (TestApp, u64, u64) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let file = dir.path().join("users.db");
    let mut config = Config::for_tests(format!("sqlite://{}", file.display()));
    config.wal_checkpoints = checkpoints;
    let app = spawn_app_in(dir, config).await;
    let before = size(&file);
    for i in 0..50 {
        app.create(&format!("User {i}"), &"x".repeat(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = size(&file);
    (app, before, after)
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn the_service_checkpoints_after_writes_by_default() {
    let (app, before, after) = written(Checkpoints::Service).await;
    assert!(
        after > before,
        "the written pages reached the database file: {before} → {after} bytes"
    );
    drop(app);
}

#[tokio::test]
async fn with_external_checkpoints_the_service_leaves_every_frame_in_the_wal() {
    let (app, before, after) = written(Checkpoints::External).await;
    assert_eq!(
        after, before,
        "nothing was copied into the database file: the WAL holds every write"
    );
    let wal = size(&app.dir.path().join("users.db-wal"));
    assert!(wal > 50 * 100, "the WAL holds the writes: {wal} bytes");
    // Reads still see every write (from the WAL).
    let listed = app
        .client
        .clone()
        .list_users(users_proto::v1::ListUsersRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.users.len(), 50);
}
