//! The outbox relay: publishes committed events, in seq order, from the `events`
//! table to a Redis stream, and records how far it got.
//!
//! Entries are `users_proto::stream`'s, which gateways decode with the same
//! crate. Each batch is appended by one Lua script that first looks at the
//! stream's newest entry, so the check and the append are atomic: entries already
//! there are skipped (a relay that crashed after appending but before recording
//! its cursor publishes nothing twice), and a stream that is behind the cursor
//! (Redis restarted empty) or holds another database's events is noticed and
//! refilled from the table. While Redis is down, writes go on and events wait in
//! the table.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts, redis};
use service_runtime::backoff::Backoff;
use tokio_util::sync::CancellationToken;
use users_proto::stream;

use crate::{domain::now_micros, events::event_to_proto, metrics, store::Store};

/// What [`Relay::published`] holds until the relay has read its cursor, so a
/// scrape then shows no backlog rather than a wrong one.
pub const CURSOR_UNKNOWN: u64 = u64::MAX;

/// Events appended per script call.
const BATCH: u32 = 256;
/// How often an idle relay checks that the stream still holds what it published.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// The cursor is recorded in the database at least once this many events...
const RECORD_EVERY: u64 = 256;
/// ...or this long, whichever comes first (and whenever the relay is idle).
const RECORD_AFTER: Duration = Duration::from_millis(500);
/// Redis calls that take longer than this count as Redis being unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// KEYS[1] the stream; ARGV[1] MAXLEN (approximate); ARGV[2] and ARGV[3] the
/// names of the epoch and event fields; ARGV[4] our epoch; ARGV[5] the newest seq
/// we believe the stream holds; then (entry id, event) pairs in seq order.
/// Returns {status, newest entry id}: status is `ok`, `behind` or `epoch`.
/// Field names and ids come from `users_proto::stream`, so the script holds no
/// part of the entry format but this: an id starts with its entry's seq.
const APPEND_SCRIPT: &str = r#"
local function seq_of(id) return tonumber(string.match(id, '^(%d+)')) end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local top_id = '0-0'
local top_seq = 0
if #top > 0 then
  top_id = top[1][1]
  top_seq = seq_of(top_id)
  local fields = top[1][2]
  local epoch = nil
  for i = 1, #fields, 2 do
    if fields[i] == ARGV[2] then epoch = fields[i + 1] end
  end
  if epoch ~= ARGV[4] then return {'epoch', top_id} end
end
if top_seq < tonumber(ARGV[5]) then return {'behind', top_id} end
for i = 6, #ARGV, 2 do
  local seq = seq_of(ARGV[i])
  if seq > top_seq then
    top_id = ARGV[i]
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], top_id, ARGV[2], ARGV[4], ARGV[3], ARGV[i + 1])
    top_seq = seq
  end
end
return {'ok', top_id}
"#;

/// Where and how to publish.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The stream's key.
    pub stream_key: String,
    /// Approximate most entries the stream keeps (`XADD MAXLEN ~`).
    pub stream_max_len: u64,
}

/// Builds the connection pool; fails only on a malformed URL, never on an
/// unreachable Redis (that is retried for as long as the relay runs).
pub fn redis_pool(url: &str) -> anyhow::Result<Pool> {
    let mut config = deadpool_redis::Config::from_url(url);
    let mut pool = PoolConfig::new(2);
    pool.timeouts = Timeouts {
        wait: Some(REDIS_TIMEOUT),
        create: Some(REDIS_TIMEOUT),
        recycle: Some(REDIS_TIMEOUT),
    };
    config.pool = Some(pool);
    Ok(config.create_pool(Some(Runtime::Tokio1))?)
}

/// The seq of the stream's newest entry when it is of this database's epoch
/// but newer than any event the database holds: the database lost events that
/// readers already saw (restored from a backup taken before them). Its next
/// events would reuse those seqs for other changes, and readers that saw the
/// lost ones would skip them; the caller starts a new epoch instead, so every
/// reader resyncs. `None` when the stream is empty, another epoch's, or not
/// ahead. Read the stream first, then the database: whatever the stream holds
/// was committed before it was published, so a healthy database always has it.
pub async fn stream_runs_ahead(
    pool: &Pool,
    config: &RelayConfig,
    store: &Store,
) -> anyhow::Result<Option<u64>> {
    let mut conn = tokio::time::timeout(REDIS_TIMEOUT, pool.get()).await??;
    let newest: redis::streams::StreamRangeReply = tokio::time::timeout(
        REDIS_TIMEOUT,
        redis::cmd("XREVRANGE")
            .arg(&config.stream_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn),
    )
    .await??;
    let Some(top) = newest.ids.first() else {
        return Ok(None);
    };
    let seq = stream::entry_seq(&top.id)
        .ok_or_else(|| anyhow::anyhow!("stream entry id {:?} is not <seq>-0", top.id))?;
    let epoch: Option<String> = top.get(stream::EPOCH_FIELD);
    if epoch.as_deref() != Some(store.epoch()) {
        return Ok(None);
    }
    let held = store.newest_seq().await?;
    Ok((seq > held).then_some(seq))
}

/// What one append call found.
enum Outcome {
    /// Published up to this seq.
    Published { upto: u64, count: usize },
    /// The stream is behind our cursor, or holds another database's events.
    Refill { stream_top: u64, foreign: bool },
}

/// The relay task's state, owned by the one task that runs it, so none of it
/// is locked.
pub struct Relay {
    store: Arc<Store>,
    pool: Pool,
    config: RelayConfig,
    /// The newest seq known to be on the stream.
    cursor: u64,
    /// The cursor as last recorded in the database, and when.
    recorded: (u64, Instant),
    /// `cursor`, shared with the metrics endpoint (the outbox backlog).
    published: Arc<AtomicU64>,
}

impl Relay {
    /// A relay publishing `store`'s events through `pool` (see [`redis_pool`]);
    /// it reads its cursor from the database once [`Relay::run`] starts, so
    /// building one touches neither the database nor Redis. It keeps the newest
    /// seq on the stream in `published` as it goes ([`CURSOR_UNKNOWN`] before it
    /// starts and once it is dropped), so a scrape can compute the backlog at that
    /// moment even while the relay waits out a Redis outage.
    pub fn new(
        store: Arc<Store>,
        pool: Pool,
        config: RelayConfig,
        published: Arc<AtomicU64>,
    ) -> Relay {
        published.store(CURSOR_UNKNOWN, Ordering::Relaxed);
        Relay {
            store,
            pool,
            config,
            cursor: 0,
            recorded: (0, Instant::now()),
            published,
        }
    }

    fn set_cursor(&mut self, cursor: u64) {
        self.cursor = cursor;
        self.published.store(cursor, Ordering::Relaxed);
    }

    /// Publishes until `shutdown`, retrying with capped backoff while Redis is down.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let cursor = loop {
            match self.store.published_seq().await {
                Ok(cursor) => break cursor,
                Err(error) => tracing::warn!(%error, "relay: cannot read its cursor; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Backoff::CAP) => {}
            }
        };
        self.set_cursor(cursor);
        self.recorded = (cursor, Instant::now());
        let mut head = self.store.watch_head();
        let mut backoff = Backoff::new();
        let mut failing = false;
        loop {
            let wait = match self.step().await {
                Ok(more) => {
                    if failing {
                        tracing::info!(cursor = self.cursor, "relay: publishing to Redis again");
                        ::metrics::counter!(metrics::REDIS_RECONNECTS).increment(1);
                    }
                    failing = false;
                    backoff.reset();
                    if more { Duration::ZERO } else { IDLE_CHECK }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "relay: cannot publish to Redis; events wait in the outbox");
                    }
                    failing = true;
                    backoff.next_wait()
                }
            };
            let cursor = self.cursor;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = head.wait_for(|&h| h > cursor), if !failing => {}
            }
        }
    }

    /// One append call; returns whether more events may be waiting right away.
    async fn step(&mut self) -> anyhow::Result<bool> {
        match self.append().await? {
            Outcome::Published { upto, count } => {
                self.set_cursor(upto.max(self.cursor));
                let more = count == BATCH as usize;
                self.record_cursor(!more && count == 0).await?;
                Ok(more)
            }
            Outcome::Refill {
                stream_top,
                foreign,
            } => {
                let oldest = self.store.oldest_seq().await?.unwrap_or(1);
                let floor =
                    (oldest - 1).max(self.store.head().saturating_sub(self.config.stream_max_len));
                if foreign {
                    tracing::warn!(key = %self.config.stream_key,
                        "relay: the stream holds another database's events; replacing it");
                    let mut conn = self.pool.get().await?;
                    redis::cmd("DEL")
                        .arg(&self.config.stream_key)
                        .query_async::<()>(&mut conn)
                        .await?;
                    self.set_cursor(floor);
                } else {
                    tracing::warn!(
                        stream_top,
                        cursor = self.cursor,
                        "relay: the stream lost events (Redis restarted?); publishing them again"
                    );
                    self.set_cursor(stream_top.max(floor));
                }
                self.store.set_published_seq(self.cursor).await?;
                self.recorded = (self.cursor, Instant::now());
                Ok(true)
            }
        }
    }

    /// Records the cursor in the database, not after every append: a commit
    /// (an fsync) per append would put one in front of the next event's way to
    /// Redis. It is recorded once [`RECORD_EVERY`] events or [`RECORD_AFTER`]
    /// have gone by, and whenever the relay is `idle`. A cursor recorded late only
    /// costs a restarted relay a few entries it finds on the stream and skips, and
    /// retention a moment before it prunes.
    async fn record_cursor(&mut self, idle: bool) -> anyhow::Result<()> {
        let (recorded, at) = self.recorded;
        let behind = self.cursor.saturating_sub(recorded);
        if self.cursor == recorded
            || !(idle || behind >= RECORD_EVERY || at.elapsed() >= RECORD_AFTER)
        {
            return Ok(());
        }
        self.store.set_published_seq(self.cursor).await?;
        self.recorded = (self.cursor, Instant::now());
        Ok(())
    }

    async fn append(&self) -> anyhow::Result<Outcome> {
        let batch = self.store.events_after(self.cursor, BATCH).await?;
        let epoch = self.store.epoch();
        // Plain EVAL: the script is small next to a batch of events.
        let mut invocation = redis::cmd("EVAL");
        invocation
            .arg(APPEND_SCRIPT)
            .arg(1)
            .arg(&self.config.stream_key)
            .arg(self.config.stream_max_len)
            .arg(stream::EPOCH_FIELD)
            .arg(stream::EVENT_FIELD)
            .arg(epoch)
            .arg(self.cursor);
        for event in &batch {
            // Every event of the batch has `epoch`: the script adds it to each entry
            // from one argument rather than taking it once per event.
            let event = event_to_proto(event, epoch);
            let entry = stream::encode(&event);
            invocation.arg(entry.id).arg(entry.event);
        }
        let mut conn = self.pool.get().await?;
        let (status, top_id): (String, String) =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.query_async(&mut conn)).await??;
        let top = stream::entry_seq(&top_id)
            .ok_or_else(|| anyhow::anyhow!("stream entry id {top_id:?} is not <seq>-0"))?;
        if status == "ok" {
            record_appended(&batch, self.cursor, top);
        }
        Ok(match status.as_str() {
            "ok" => Outcome::Published {
                upto: top.max(self.cursor),
                count: batch.len(),
            },
            "behind" => Outcome::Refill {
                stream_top: top,
                foreign: false,
            },
            "epoch" => Outcome::Refill {
                stream_top: top,
                foreign: true,
            },
            other => anyhow::bail!("append script answered {other:?}"),
        })
    }
}

impl Drop for Relay {
    /// A relay that stopped (shutdown, or its lease lost to another process)
    /// no longer vouches for any cursor.
    fn drop(&mut self) {
        self.published.store(CURSOR_UNKNOWN, Ordering::Relaxed);
    }
}

/// Counts the events of `batch` the script appended (those after our cursor, up
/// to the stream's new top) and records their age. After a crash between an
/// append and the cursor update, the few already on the stream count again.
fn record_appended(batch: &[crate::domain::Event], cursor: u64, top: u64) {
    let now = now_micros();
    let mut appended = 0;
    for event in batch.iter().filter(|e| e.seq > cursor && e.seq <= top) {
        appended += 1;
        let age = (now - event.commit_time).max(0) as f64 / 1e6;
        ::metrics::histogram!(metrics::RELAY_LAG).record(age);
    }
    ::metrics::counter!(metrics::EVENTS_PUBLISHED).increment(appended);
}
