//! Announces every process's events to this one's watchers and relay, in seq
//! order: the table is the record, read after the last seq announced; what wakes
//! the reading is only a hint.
//!
//! Three things wake it: a `NOTIFY` from any process's commit (the `events`
//! table's trigger sends one), this process's own commits (at once, without the
//! round trip through the server), and a poll every [`POLL_INTERVAL`], so a
//! notification lost with a dropped `LISTEN` connection only delays an event.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::Notify;

use crate::store::feed::Feed;

/// The channel the `events` trigger notifies (see the migrations).
pub const CHANNEL: &str = "users_events";
/// Longest an event waits to be announced when no notification came.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Events read per query.
const BATCH: u32 = 1024;

/// Reads and announces new events until the feed is dropped (the store is
/// gone).
pub async fn run(pool: PgPool, feed: Weak<Feed>, committed: Arc<Notify>) {
    let mut listener: Option<PgListener> = None;
    let mut failing = false;
    loop {
        let Some(live) = feed.upgrade() else {
            return;
        };
        if listener.is_none() {
            listener = listen(&pool).await;
        }
        match announce_new(&pool, &live).await {
            Ok(()) if failing => {
                tracing::info!("reading the event log again");
                failing = false;
            }
            Ok(()) => {}
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot read new events; retrying");
                }
                failing = true;
            }
        }
        drop(live);
        tokio::select! {
            notified = recv(&mut listener) => {
                if !notified {
                    // Lost with its connection; reconnected on the next round,
                    // and the table read then catches up what it missed.
                    listener = None;
                }
            }
            () = committed.notified() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// A listener on [`CHANNEL`], or `None` (to be tried again) when the database
/// cannot be reached.
async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(CHANNEL).await.ok()?;
    // Notifications come only as hints; on a lost connection the next round
    // makes a new listener rather than have this one reconnect by itself.
    listener.ignore_pool_close_event(true);
    Some(listener)
}

/// Waits for a notification; `false` when the listener is gone or failed. With
/// no listener, waits forever (the poll wakes the task).
async fn recv(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(listener) => matches!(listener.try_recv().await, Ok(Some(_))),
        None => std::future::pending().await,
    }
}

/// Announces every event after the feed's head.
async fn announce_new(pool: &PgPool, feed: &Feed) -> Result<(), crate::error::Error> {
    loop {
        let after = *feed.head.borrow();
        let events = super::events_after(pool, after, BATCH).await?;
        let full = events.len() == BATCH as usize;
        for event in events {
            feed.announce_from_table(event);
        }
        if !full {
            return Ok(());
        }
    }
}
