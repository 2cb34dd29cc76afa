//! The Redis event source: reads the relay's stream with `XREAD BLOCK` on a
//! dedicated connection (no response timeout, which would poison a pooled one),
//! from the last id it saw. On any Redis failure it reconnects (see [`super::source`])
//! and continues from that id, so nothing is skipped; a seq gap is backfilled from
//! WatchUsers, and an epoch change (another database) resyncs every socket.

use std::{sync::Arc, time::Duration};

use crate::upstream::UsersClient;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Value, aio::MultiplexedConnection, streams::StreamReadReply,
};
use tokio_util::sync::CancellationToken;
use users_proto::{stream, v1 as pb};

use super::{
    Hub,
    source::{self, Source, Stopped},
    watch,
};

/// How long one `XREAD` blocks; an idle stream is re-checked this often.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries per `XREAD`.
const COUNT: usize = 512;
/// A Redis call that takes longer than this (beyond `BLOCK`) counts as a dead
/// connection.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a backfill from WatchUsers may take before we resync instead.
const BACKFILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the stream is and who else to ask.
#[derive(Clone, Debug)]
pub struct RedisSource {
    pub client: redis::Client,
    pub stream_key: String,
}

/// One stream entry, decoded.
#[derive(Debug)]
struct Entry {
    seq: u64,
    epoch: String,
    event: pb::UserEvent,
}

/// Follows the stream until `shutdown`.
pub async fn run(
    source: RedisSource,
    users: UsersClient,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let follower = Follower {
        source,
        users,
        hub: hub.clone(),
        position: None,
        connected: false,
        connected_before: false,
    };
    source::run(follower, hub, shutdown).await;
}

struct Follower {
    source: RedisSource,
    users: UsersClient,
    hub: Arc<Hub>,
    /// `(epoch, last seq)`; `None` until the window is filled (again).
    position: Option<(String, u64)>,
    /// This attempt got connected and live.
    connected: bool,
    /// A connection was made before: the next one is a reconnection.
    connected_before: bool,
}

impl Source for Follower {
    const NAME: &'static str = "redis";

    async fn follow(&mut self) -> Stopped {
        self.connected = false;
        let error = match self.try_follow().await {
            Ok(never) => match never {},
            Err(error) => error,
        };
        Stopped {
            error,
            connected: self.connected,
        }
    }
}

impl Follower {
    async fn try_follow(&mut self) -> anyhow::Result<std::convert::Infallible> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(None);
        let mut conn = self
            .source
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        if self.connected_before {
            metrics::counter!(crate::observe::REDIS_RECONNECTS).increment(1);
        }
        self.connected_before = true;
        if self.position.is_none() {
            self.fill_window(&mut conn).await?;
        }
        self.hub.set_live(true);
        self.connected = true;
        loop {
            let (epoch, last) = self.position.clone().expect("filled above");
            let entries = self.read(&mut conn, last).await?;
            if entries.is_empty() {
                // Idle: make sure the stream was not replaced by another
                // database's, whose seqs may all be below ours.
                if let Some(top) = self.top(&mut conn).await?
                    && !epoch.is_empty()
                    && top.epoch != epoch
                {
                    self.restart(&mut conn, "the stream now holds another database's events")
                        .await?;
                }
                continue;
            }
            for entry in entries {
                self.apply(entry).await;
                if self.position.is_none() {
                    self.restart(&mut conn, "the stream now holds another database's events")
                        .await?;
                    break;
                }
            }
        }
    }

    /// Starts over from the stream's current tail and tells every socket to resync.
    async fn restart(&mut self, conn: &mut MultiplexedConnection, why: &str) -> anyhow::Result<()> {
        tracing::warn!(why, "events: resyncing every socket");
        self.position = None;
        self.hub.set_live(false);
        self.fill_window(conn).await?;
        self.hub.set_live(true);
        Ok(())
    }

    /// Handles one entry: skips what we have, backfills a gap, follows an epoch.
    async fn apply(&mut self, entry: Entry) {
        let Some((epoch, last)) = self.position.as_mut() else {
            return;
        };
        if epoch.is_empty() {
            *epoch = entry.epoch.clone();
        } else if *epoch != entry.epoch {
            self.position = None;
            return;
        }
        if entry.seq <= *last {
            return;
        }
        if entry.seq > *last + 1 {
            let (epoch, from) = (epoch.clone(), *last);
            match watch::backfill(
                &self.users,
                &self.hub,
                &epoch,
                from,
                entry.seq - 1,
                BACKFILL_TIMEOUT,
            )
            .await
            {
                Ok(_) => tracing::info!(
                    from,
                    to = entry.seq,
                    "events: backfilled a gap in the stream"
                ),
                Err(error) => {
                    tracing::warn!(%error, from, to = entry.seq,
                        "events: cannot backfill a gap in the stream; resyncing every socket");
                    self.hub.reposition(&epoch, entry.seq - 1);
                }
            }
        }
        self.hub.publish(&entry.event);
        self.position = Some((entry.epoch, entry.seq));
    }

    /// Fills the window from the stream's newest entries (or, for an empty stream,
    /// learns the position from the user-service) and sets our position.
    async fn fill_window(&mut self, conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
        let count = self.hub.window_cap();
        let reply: redis::streams::StreamRangeReply = call(
            redis::cmd("XREVRANGE")
                .arg(&self.source.stream_key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(count)
                .query_async(conn),
        )
        .await?;
        let mut entries: Vec<Entry> = reply.ids.into_iter().filter_map(decode).collect();
        let Some(newest) = entries.first() else {
            // Nothing published yet: the user-service knows the epoch; events up
            // to its head will come (late) from the relay and are old news.
            let (epoch, head) = match watch::probe(&self.users).await {
                Ok(position) => position,
                Err(error) => {
                    tracing::warn!(%error, "events: the stream is empty and the user-service cannot say its epoch");
                    (String::new(), 0)
                }
            };
            self.hub.reposition(&epoch, head);
            self.position = Some((epoch, head));
            return Ok(());
        };
        let (epoch, head) = (newest.epoch.clone(), newest.seq);
        entries.retain(|e| e.epoch == epoch);
        self.hub.reposition(&epoch, head);
        for entry in entries.iter().rev() {
            self.hub.remember(&entry.event);
        }
        self.position = Some((epoch, head));
        Ok(())
    }

    /// The entries after `last`, waiting up to `BLOCK` for some.
    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        last: u64,
    ) -> anyhow::Result<Vec<Entry>> {
        let reply: Option<StreamReadReply> = call(
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(COUNT)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.source.stream_key)
                .arg(stream::entry_id(last))
                .query_async(conn),
        )
        .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter_map(decode)
            .collect())
    }

    /// The stream's newest entry.
    async fn top(&self, conn: &mut MultiplexedConnection) -> anyhow::Result<Option<Entry>> {
        let reply: redis::streams::StreamRangeReply = call(
            redis::cmd("XREVRANGE")
                .arg(&self.source.stream_key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(conn),
        )
        .await?;
        Ok(reply.ids.into_iter().find_map(decode))
    }
}

/// A Redis call bounded by `BLOCK + CALL_TIMEOUT`, so a dead server is noticed.
async fn call<T>(future: impl Future<Output = redis::RedisResult<T>>) -> anyhow::Result<T> {
    Ok(tokio::time::timeout(BLOCK + CALL_TIMEOUT, future)
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer in time"))??)
}

/// An entry as the relay writes it ([`stream::decode`]); anything else is logged
/// and skipped.
fn decode(entry: redis::streams::StreamId) -> Option<Entry> {
    let field = |name: &str| match entry.map.get(name) {
        Some(Value::BulkString(bytes)) => Some(bytes.as_slice()),
        Some(Value::SimpleString(text)) => Some(text.as_bytes()),
        _ => None,
    };
    match stream::decode(&entry.id, field) {
        Ok((seq, event)) => Some(Entry {
            seq,
            epoch: event.epoch.clone(),
            event,
        }),
        Err(error) => {
            tracing::warn!(id = %entry.id, %error, "events: skipping a malformed stream entry");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use std::collections::HashMap;

    fn entry(id: &str, epoch: &str, event: &pb::UserEvent) -> redis::streams::StreamId {
        let mut map = HashMap::new();
        map.insert(
            stream::EPOCH_FIELD.to_owned(),
            Value::BulkString(epoch.as_bytes().to_vec()),
        );
        map.insert(
            stream::EVENT_FIELD.to_owned(),
            Value::BulkString(event.encode_to_vec()),
        );
        redis::streams::StreamId {
            id: id.to_owned(),
            map,
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    #[test]
    fn entries_decode_to_their_seq_epoch_and_event() {
        let event = pb::UserEvent {
            seq: 12,
            epoch: "e1".into(),
            action: pb::Action::Create as i32,
            ..Default::default()
        };
        let decoded = decode(entry("12-0", "e1", &event)).unwrap();
        assert_eq!(decoded.seq, 12);
        assert_eq!(decoded.epoch, "e1");
        assert_eq!(decoded.event, event);
    }

    #[test]
    fn malformed_entries_are_skipped() {
        let mut bad = entry("x-0", "e1", &pb::UserEvent::default());
        assert!(decode(bad.clone()).is_none());
        bad.id = "3-0".into();
        bad.map.insert(
            stream::EVENT_FIELD.into(),
            Value::BulkString(vec![0xff, 0xff]),
        );
        assert!(decode(bad).is_none());
    }
}
