use std::time::Duration;

use deadpool_redis::redis;
use users_proto::v1 as pb;

use test_support::{Redis, eventually};

use crate::{
    helpers::{rename_first, spawn_app_with},
    stream::{KEY, read_stream},
};

/// Waits until the stream's newest entry is `seq`, then returns the whole stream.
async fn stream_up_to(url: &str, seq: u64) -> Vec<(String, String, pb::UserEvent)> {
    eventually(
        Duration::from_secs(15),
        &format!("seq {seq} on the stream"),
        || async {
            let entries = read_stream(url).await;
            (entries.last().map(|e| e.2.seq) == Some(seq)).then_some(entries)
        },
    )
    .await
}

#[tokio::test]
async fn every_event_reaches_the_stream_in_order_with_its_seq_as_id() {
    let redis = Redis::start().await;
    let app = spawn_app_with(|c| c.redis_url = Some(redis.url())).await;
    let ada = app.create("Ada", "Lovelace").await;
    for i in 0..4 {
        app.rename(ada.id, &format!("A{i}")).await;
    }

    let entries = stream_up_to(&redis.url(), 5).await;

    let ids: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0", "5-0"]);
    assert!(
        entries
            .iter()
            .all(|e| e.1 == app.store.epoch() && e.2.epoch == app.store.epoch())
    );
    assert_eq!(
        entries[4].2.user.as_ref().unwrap().first_name.as_deref(),
        Some("A3")
    );
    assert_eq!(entries[4].2.changed_fields, ["first_name"]);
    let published = eventually(
        Duration::from_secs(5),
        "the cursor to be recorded",
        || async {
            let seq = app.store.published_seq().await.unwrap();
            (seq == 5).then_some(seq)
        },
    )
    .await;
    assert_eq!(published, 5);
}

#[tokio::test]
async fn with_redis_down_writes_succeed_and_after_it_returns_empty_every_event_arrives_once_in_order()
 {
    let mut redis = Redis::start().await;
    let app = spawn_app_with(|c| c.redis_url = Some(redis.url())).await;
    let ada = app.create("Ada", "Lovelace").await;
    stream_up_to(&redis.url(), 1).await;

    redis.stop().await;
    for i in 0..10 {
        app.client
            .clone()
            .update_user(rename_first(ada.id, &format!("offline {i}")))
            .await
            .expect("writes succeed while Redis is down");
    }
    redis.restart().await;
    for i in 0..5 {
        app.rename(ada.id, &format!("back {i}")).await;
    }

    let entries = stream_up_to(&redis.url(), 16).await;
    let seqs: Vec<u64> = entries.iter().map(|e| e.2.seq).collect();
    assert_eq!(
        seqs,
        (1..=16).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

#[tokio::test]
async fn a_redis_restart_with_no_new_writes_is_refilled_by_the_idle_check() {
    let mut redis = Redis::start().await;
    let app = spawn_app_with(|c| c.redis_url = Some(redis.url())).await;
    for i in 0..3 {
        app.create(&format!("U{i}"), "X").await;
    }
    stream_up_to(&redis.url(), 3).await;

    redis.restart().await;

    let entries = stream_up_to(&redis.url(), 3).await;
    assert_eq!(
        entries.iter().map(|e| e.2.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[tokio::test]
async fn entries_already_on_the_stream_are_not_published_twice() {
    let redis = Redis::start().await;
    let app = spawn_app_with(|c| c.redis_url = Some(redis.url())).await;
    for i in 0..3 {
        app.create(&format!("U{i}"), "X").await;
    }
    stream_up_to(&redis.url(), 3).await;
    // As if the relay crashed after appending but before recording its cursor.
    app.store.set_published_seq(1).await.unwrap();

    app.create("U3", "X").await;

    let entries = stream_up_to(&redis.url(), 4).await;
    assert_eq!(
        entries.iter().map(|e| e.2.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}

#[tokio::test]
async fn a_stream_of_another_database_is_replaced() {
    let redis = Redis::start().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(KEY)
        .arg("900-0")
        .arg("epoch")
        .arg("another-database")
        .arg("event")
        .arg(b"x".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    let app = spawn_app_with(|c| c.redis_url = Some(redis.url())).await;

    app.create("Ada", "Lovelace").await;

    let entries = stream_up_to(&redis.url(), 1).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1, app.store.epoch());
}
