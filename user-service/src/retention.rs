//! Keeps the event log bounded: events older than the newest `keep` are deleted,
//! but never one the relay has not yet published to Redis.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::store::Store;

const INTERVAL: Duration = Duration::from_secs(1);
/// Rows deleted per statement. Each delete shares a commit with users' writes,
/// which wait for it, so it is kept to what SQLite deletes in a few
/// milliseconds (BENCHMARKS.md has the measurements).
const PRUNE_BATCH: u64 = 500;

/// Prunes the log once a second until `shutdown`. `relayed` says whether a relay
/// publishes events, whose unpublished ones must stay.
pub async fn run(store: Arc<Store>, keep: u64, relayed: bool, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(error) = prune(&store, keep, relayed).await {
            tracing::warn!(%error, "retention: pruning the event log failed; will retry");
        }
    }
}

/// Deletes every event that may go now; returns how many went.
pub async fn prune(store: &Store, keep: u64, relayed: bool) -> Result<u64, crate::error::Error> {
    let mut upto = store.head().saturating_sub(keep);
    if relayed {
        upto = upto.min(store.published_seq().await?);
    }
    let mut total = 0;
    loop {
        let deleted = store.prune_events(upto, PRUNE_BATCH).await?;
        total += deleted;
        if deleted == 0 {
            return Ok(total);
        }
    }
}
