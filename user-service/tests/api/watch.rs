use std::time::Duration;

use tonic::{Code, Streaming};
use users_proto::{errors, v1 as pb};

use crate::helpers::{expect_code, rename_first, spawn_app, spawn_app_with};

/// Reads `n` events, failing if they take longer than 10 s.
async fn take(stream: &mut Streaming<pb::UserEvent>, n: usize) -> Vec<pb::UserEvent> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events arrive within 10 s")
            .expect("the stream does not fail")
            .expect("the stream does not end");
        events.push(next);
    }
    events
}

fn seqs(events: &[pb::UserEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

async fn watch(
    client: &mut users_proto::v1::user_service_client::UserServiceClient<tonic::transport::Channel>,
    since_seq: u64,
    epoch: &str,
) -> Result<tonic::Response<Streaming<pb::UserEvent>>, tonic::Status> {
    client
        .watch_users(pb::WatchUsersRequest {
            since_seq,
            epoch: epoch.into(),
            replay_tail: None,
        })
        .await
}

#[tokio::test]
async fn a_watch_replays_the_log_then_streams_live_events() {
    let app = spawn_app().await;
    let ada = app.create("Ada", "Lovelace").await;
    app.rename(ada.id, "Augusta").await;
    let mut client = app.new_client().await;

    let response = watch(&mut client, 0, "").await.unwrap();
    let epoch = response
        .metadata()
        .get("x-users-epoch")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let head = response
        .metadata()
        .get("x-users-head-seq")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut stream = response.into_inner();
    let replayed = take(&mut stream, 2).await;
    app.client
        .clone()
        .delete_user(pb::DeleteUserRequest {
            id: ada.id,
            expected_version: None,
        })
        .await
        .unwrap();
    let live = take(&mut stream, 1).await;

    assert_eq!(epoch, app.store.epoch());
    assert_eq!(head, "2");
    assert_eq!(seqs(&replayed), [1, 2]);
    assert_eq!(replayed[0].action(), pb::Action::Create);
    assert_eq!(replayed[0].changed_fields, ["first_name", "last_name"]);
    assert_eq!(replayed[1].action(), pb::Action::Update);
    assert_eq!(replayed[1].changed_fields, ["first_name"]);
    assert_eq!(replayed[1].user.as_ref().unwrap().version, 2);
    assert_eq!(live[0].seq, 3);
    assert_eq!(live[0].action(), pb::Action::Delete);
    let deleted = live[0].user.as_ref().unwrap();
    assert_eq!(
        (deleted.id, deleted.first_name.as_deref(), deleted.version),
        (ada.id, Some("Augusta"), 2)
    );
    assert!(replayed.iter().chain(&live).all(|e| e.epoch == epoch));
}

#[tokio::test]
async fn a_watch_from_a_seq_gets_only_what_came_after_it() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create(&format!("U{i}"), "X").await;
    }
    let mut client = app.new_client().await;

    let mut stream = watch(&mut client, 3, app.store.epoch())
        .await
        .unwrap()
        .into_inner();

    assert_eq!(seqs(&take(&mut stream, 2).await), [4, 5]);
}

#[tokio::test]
async fn replay_and_live_meet_with_no_gap_and_no_duplicate_under_concurrent_writes() {
    let app = spawn_app().await;
    let user = app.create("Ada", "Lovelace").await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    client
                        .update_user(rename_first(user.id, &format!("w{w}-{i}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // Open watches while the writers run, from different points of the log.
    let mut watches = Vec::new();
    for since in [0, 1] {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut client = app.new_client().await;
        watches.push((
            since,
            watch(&mut client, since, "").await.unwrap().into_inner(),
        ));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let head = app.store.head();
    assert_eq!(head, 601);

    for (since, mut stream) in watches {
        let events = take(&mut stream, (head - since) as usize).await;
        let expected: Vec<u64> = (since + 1..=head).collect();
        assert_eq!(seqs(&events), expected, "watch since {since}");
    }
}

#[tokio::test]
async fn a_watcher_that_never_reads_holds_back_no_writer_and_loses_nothing() {
    let app = spawn_app().await;
    let user = app.create("Ada", "Lovelace").await;
    let mut client = app.new_client().await;
    let mut stream = watch(&mut client, 0, "").await.unwrap().into_inner();
    let mut writer = app.client.clone();

    // More than the live buffer (4096) and the client queue (1024) together.
    let started = std::time::Instant::now();
    for i in 0..5_200 {
        writer
            .update_user(rename_first(user.id, &format!("n{i}")))
            .await
            .unwrap();
    }
    let writes_took = started.elapsed();

    let events = take(&mut stream, 5_201).await;
    assert_eq!(seqs(&events), (1..=5_201).collect::<Vec<_>>());
    assert_eq!(
        events
            .last()
            .unwrap()
            .user
            .as_ref()
            .unwrap()
            .first_name
            .as_deref(),
        Some("n5199")
    );
    // Not a timing assertion: just proof the writes finished while nobody read.
    assert!(writes_took < Duration::from_secs(120));
}

#[tokio::test]
async fn a_wrong_epoch_is_refused_with_the_current_one() {
    let app = spawn_app().await;
    app.create("Ada", "Lovelace").await;
    let mut client = app.new_client().await;

    let status = expect_code(
        watch(&mut client, 1, "not-this-database").await,
        Code::FailedPrecondition,
    );

    assert_eq!(
        errors::reason(&status).as_deref(),
        Some(errors::EPOCH_MISMATCH)
    );
    assert_eq!(
        errors::metadata(&status, errors::EPOCH_KEY).as_deref(),
        Some(app.store.epoch())
    );
}

#[tokio::test]
async fn a_seq_ahead_of_the_log_is_out_of_range() {
    let app = spawn_app().await;
    app.create("Ada", "Lovelace").await;
    let mut client = app.new_client().await;

    let status = expect_code(watch(&mut client, 5, "").await, Code::OutOfRange);

    assert_eq!(errors::reason(&status).as_deref(), Some(errors::SEQ_AHEAD));
}

#[tokio::test]
async fn a_seq_whose_successors_were_pruned_is_expired_but_zero_replays_what_is_kept() {
    let app = spawn_app_with(|c| c.event_retention = 3).await;
    for i in 0..6 {
        app.create(&format!("U{i}"), "X").await;
    }
    let pruned = user_service::retention::prune(&app.store, 3, false)
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    let mut client = app.new_client().await;

    let status = expect_code(watch(&mut client, 1, "").await, Code::OutOfRange);
    assert_eq!(
        errors::reason(&status).as_deref(),
        Some(errors::SEQ_EXPIRED)
    );
    let mut from_three = watch(&mut client, 3, "").await.unwrap().into_inner();
    assert_eq!(seqs(&take(&mut from_three, 3).await), [4, 5, 6]);
    let mut from_zero = watch(&mut client, 0, "").await.unwrap().into_inner();
    assert_eq!(seqs(&take(&mut from_zero, 3).await), [4, 5, 6]);
}

#[tokio::test]
async fn shutting_down_ends_open_watches_with_unavailable() {
    let app = spawn_app().await;
    let mut client = app.new_client().await;
    let mut stream = watch(&mut client, 0, "").await.unwrap().into_inner();

    let stopping = tokio::spawn(app.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch ends promptly");

    let status = end.expect_err("the watch ends with a status");
    assert_eq!(status.code(), Code::Unavailable);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_tail_watch_replays_only_the_newest_events_and_zero_means_live_only() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create(&format!("U{i}"), "X").await;
    }
    let mut client = app.new_client().await;
    let tail = |n| pb::WatchUsersRequest {
        since_seq: 0,
        epoch: String::new(),
        replay_tail: Some(n),
    };

    let mut last_two = client.watch_users(tail(2)).await.unwrap().into_inner();
    let live_only = client.watch_users(tail(0)).await.unwrap();
    let head = live_only
        .metadata()
        .get("x-users-head-seq")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mut live_only = live_only.into_inner();
    let mut more_than_kept = client.watch_users(tail(50)).await.unwrap().into_inner();
    app.create("U5", "X").await;

    assert_eq!(seqs(&take(&mut last_two, 3).await), [4, 5, 6]);
    assert_eq!(head, "5");
    assert_eq!(seqs(&take(&mut live_only, 1).await), [6]);
    assert_eq!(
        seqs(&take(&mut more_than_kept, 6).await),
        [1, 2, 3, 4, 5, 6]
    );
}
