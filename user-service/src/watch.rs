//! `WatchUsers`: every event after a seq, replayed from the table and then live,
//! with no gap and no duplicate at the seam.
//!
//! Each watcher is its own task with a bounded queue to its client. It follows the
//! store's live feed and, whenever it falls behind that feed (a slow client, a
//! lagged broadcast, a gap), reads the missing events from the table instead, so a
//! slow watcher holds back nobody but itself.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use users_proto::v1 as pb;

use crate::{domain::Event, error::Error, events::event_to_proto, store::Store};

/// Events read from the table per query while catching up.
const CATCH_UP_BATCH: u32 = 512;
/// Events queued towards one client before its task waits for it.
const CLIENT_QUEUE: usize = 1024;

/// The stream of one watcher, ready to be returned to tonic.
pub type EventStream = tokio_stream::wrappers::ReceiverStream<Result<pb::UserEvent, Status>>;

/// What a caller learns when its watch opens.
pub struct Opened {
    /// The newest seq when the watch opened.
    pub head: u64,
    /// The events, for tonic to stream to the caller.
    pub events: EventStream,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// After this seq; 0 replays every event kept.
    Seq(u64),
    /// The newest this many events kept (0: live events only).
    Tail(u64),
}

/// Checks the start and `epoch` against the log and starts the watcher's task.
pub async fn open(
    store: Arc<Store>,
    from: Start,
    epoch: &str,
    shutdown: CancellationToken,
) -> Result<Opened, Error> {
    if !epoch.is_empty() && epoch != store.epoch() {
        return Err(Error::EpochMismatch {
            given: epoch.to_owned(),
            current: store.epoch().to_owned(),
        });
    }
    // Subscribe before reading anything, so every event committed from here on is
    // either in the table when we read it or in this receiver.
    let live = store.subscribe();
    let head = store.head();
    let oldest = store.oldest_seq().await?;
    let last = match (from, oldest) {
        (Start::Seq(since), _) if since > head => return Err(Error::SeqAhead { since, head }),
        (Start::Seq(0), Some(oldest)) => oldest - 1,
        (Start::Seq(since), Some(oldest)) if since + 1 < oldest => {
            return Err(Error::SeqExpired { since, oldest });
        }
        (Start::Seq(since), _) => since,
        (Start::Tail(count), oldest) => head
            .saturating_sub(count)
            .max(oldest.map_or(head, |o| o - 1)),
    };

    let (client, events) = mpsc::channel(CLIENT_QUEUE);
    let watcher = Watcher {
        store,
        client,
        live,
        last,
        shutdown,
    };
    tokio::spawn(watcher.run());
    Ok(Opened {
        head,
        events: EventStream::new(events),
    })
}

/// Why a watcher stopped.
enum Stop {
    /// The client hung up; nothing more to say.
    ClientGone,
    /// Tell the client why, then end.
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Stop {
        Stop::Failed(error)
    }
}

struct Watcher {
    store: Arc<Store>,
    client: mpsc::Sender<Result<pb::UserEvent, Status>>,
    live: broadcast::Receiver<Arc<Event>>,
    /// The newest seq sent to the client.
    last: u64,
    shutdown: CancellationToken,
}

impl Watcher {
    async fn run(mut self) {
        let _counted = service_runtime::metrics::HeldGauge::open(crate::metrics::WATCHERS);
        if let Err(Stop::Failed(error)) = self.stream().await {
            let _ = self.client.send(Err(error.into())).await;
        }
    }

    async fn stream(&mut self) -> Result<(), Stop> {
        self.catch_up().await?;
        loop {
            let received = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Error::ShuttingDown.into()),
                _ = self.client.closed() => return Err(Stop::ClientGone),
                received = self.live.recv() => received,
            };
            match received {
                Ok(event) if event.seq <= self.last => {}
                Ok(event) if event.seq == self.last + 1 => self.send(&event).await?,
                // A gap between what was sent and the feed: the table has it.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await?,
                Err(broadcast::error::RecvError::Closed) => return Err(Error::ShuttingDown.into()),
            }
        }
    }

    /// Sends every event in the table after `last`. Seqs are contiguous (a rolled
    /// back transaction takes its seq with it), so a jump means pruned events.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let batch = self.store.events_after(self.last, CATCH_UP_BATCH).await?;
            if let Some(first) = batch.first()
                && first.seq != self.last + 1
            {
                return Err(Error::SeqExpired {
                    since: self.last,
                    oldest: first.seq,
                }
                .into());
            }
            let full = batch.len() == CATCH_UP_BATCH as usize;
            for event in &batch {
                self.send(event).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, event: &Event) -> Result<(), Stop> {
        let message = event_to_proto(event, self.store.epoch());
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Error::ShuttingDown.into()),
            sent = self.client.send(Ok(message)) => {
                sent.map_err(|_| Stop::ClientGone)?;
                self.last = event.seq;
                Ok(())
            }
        }
    }
}
