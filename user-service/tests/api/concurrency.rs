use users_proto::v1 as pb;

use crate::helpers::{rename_first, spawn_app};

#[tokio::test]
async fn sixteen_concurrent_writers_never_see_a_lock_error_nor_lose_an_update() {
    let app = spawn_app().await;
    let user = app.create("Ada", "Lovelace").await;
    const WRITERS: usize = 16;
    const UPDATES: usize = 200;

    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                for i in 0..UPDATES {
                    // Every value differs, so every update is a real change.
                    client
                        .update_user(rename_first(user.id, &format!("w{w}-{i}")))
                        .await
                        .map_err(|s| format!("writer {w} update {i}: {s:?}"))?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let current = app
        .client
        .clone()
        .get_user(pb::GetUserRequest { id: user.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.version, 1 + (WRITERS * UPDATES) as i64);
    assert_eq!(app.store.head(), 1 + (WRITERS * UPDATES) as u64);
    let events = app.store.events_after(0, 10_000).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=1 + (WRITERS * UPDATES) as u64).collect::<Vec<_>>()
    );
    let versions: Vec<i64> = events.iter().map(|e| e.user.version).collect();
    assert_eq!(
        versions,
        (1..=1 + (WRITERS * UPDATES) as i64).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn concurrent_creates_get_distinct_ids() {
    let app = spawn_app().await;

    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    let request = pb::CreateUserRequest {
                        validate_only: false,
                        user: Some(crate::helpers::user(
                            Some(&format!("w{w}")),
                            Some(&format!("{i}")),
                        )),
                    };
                    ids.push(client.create_user(request).await.unwrap().into_inner().id);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }

    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

#[tokio::test]
async fn failing_writes_committed_in_the_same_batch_as_good_ones_undo_only_themselves() {
    let app = spawn_app().await;
    let user = app.create("Ada", "Lovelace").await;

    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..50 {
                    let mut request = rename_first(user.id, &format!("w{w}-{i}"));
                    if w % 2 == 1 {
                        request.expected_version = Some(-1);
                    }
                    outcomes.push(
                        client
                            .update_user(request)
                            .await
                            .map(|_| ())
                            .map_err(|s| s.code()),
                    );
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }

    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    let stale = outcomes
        .iter()
        .filter(|o| **o == Err(tonic::Code::FailedPrecondition))
        .count();
    assert_eq!((ok, stale), (400, 400));
    let current = app
        .client
        .clone()
        .get_user(pb::GetUserRequest { id: user.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.version, 401);
    let seqs: Vec<u64> = app
        .store
        .events_after(0, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=401).collect::<Vec<_>>());
}

/// The user cache never serves a row older than one already acknowledged or
/// read: readers racing 4 writers see versions that only grow, every read after
/// an acknowledged write sees at least that write, and a deleted user is gone.
#[tokio::test]
async fn reads_racing_writes_never_go_back_in_time() {
    let app = spawn_app().await;
    let user = app.create("Ada", "Lovelace").await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let written = client
                        .update_user(rename_first(user.id, &format!("w{w}-{i}")))
                        .await
                        .map_err(|s| format!("writer {w} update {i}: {s:?}"))?
                        .into_inner();
                    // Read-your-writes: the next read is at least this version.
                    let read = client
                        .get_user(pb::GetUserRequest { id: user.id })
                        .await
                        .map_err(|s| format!("writer {w} read {i}: {s:?}"))?
                        .into_inner();
                    if read.version < written.version {
                        return Err(format!(
                            "read version {} after writing version {}",
                            read.version, written.version
                        ));
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let mut client = app.client.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut last = 0;
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let read = client
                        .get_user(pb::GetUserRequest { id: user.id })
                        .await
                        .map_err(|s| format!("reader {r}: {s:?}"))?
                        .into_inner();
                    if read.version < last {
                        return Err(format!("reader {r}: version {} after {last}", read.version));
                    }
                    last = read.version;
                    reads += 1;
                }
                Ok::<_, String>(reads)
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap().unwrap() > 0, "every reader read");
    }

    let mut client = app.client.clone();
    let last = client
        .get_user(pb::GetUserRequest { id: user.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.version, 401, "1 create + 400 updates");
    client
        .delete_user(pb::DeleteUserRequest {
            id: user.id,
            ..Default::default()
        })
        .await
        .unwrap();
    let gone = client.get_user(pb::GetUserRequest { id: user.id }).await;
    assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
}

/// Commits do not checkpoint the WAL (a checkpoint in the commit path stalls the
/// write that runs it); the background checkpoint keeps it from growing with the
/// number of writes.
#[tokio::test]
async fn the_wal_stays_small_while_writes_go_on() {
    let app = crate::helpers::spawn_sqlite_app().await;
    let user = app.create("Ada", "Lovelace").await;
    let mut client = app.client.clone();
    let wal = app.dir.path().join("users.db-wal");
    let mut largest = 0;
    for i in 0..1500 {
        client
            .update_user(rename_first(user.id, &format!("n{i}")))
            .await
            .unwrap();
        if i % 100 == 0 {
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            // Room for the background checkpoint to run, as idle moments give it.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    // 1,500 commits of a few pages each, never checkpointed, make a WAL of
    // about 20 MiB; checkpointed every 100 writes it stays near 100 commits' worth.
    assert!(
        largest < 4 << 20,
        "the WAL grew to {largest} bytes over 1,500 writes"
    );
}
