//! Where announced events go inside one process: watchers and the relay follow
//! this rather than the database, and read the table only to catch up.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::domain::Event;

/// Committed events buffered for in-process watchers; a watcher further behind
/// catches up from the table instead.
const LIVE_EVENT_BUFFER: usize = 4096;

/// The live feed: each committed event once, in seq order, and the newest seq.
pub struct Feed {
    /// Each committed event, for in-process watchers; one that lags reads the
    /// table instead.
    pub live: broadcast::Sender<Arc<Event>>,
    /// The newest announced seq: a watch, so waiters wake on a change and a
    /// late reader sees only the latest.
    pub head: watch::Sender<u64>,
}

impl Feed {
    /// A feed whose head starts at `head`, the newest seq already committed.
    pub fn new(head: u64) -> Arc<Feed> {
        let (live, _) = broadcast::channel(LIVE_EVENT_BUFFER);
        Arc::new(Feed {
            live,
            head: watch::Sender::new(head),
        })
    }

    /// Announces `event` if it is the next one (its seq follows the head):
    /// the check and the send are one step, so two tasks announcing the same
    /// events (a writer its own, a follower everyone's) send each once, in
    /// order. Returns whether the head is now at or past `event`; `false`
    /// means events before it are not announced yet.
    pub fn announce(&self, event: Event) -> bool {
        self.send_if(event, |seq, head| seq == head + 1)
    }

    /// Announces `event`, read from the table after the head, even when seqs
    /// before it are missing: the table no longer has them (pruned), and
    /// watchers that need them learn so from the table too.
    pub fn announce_from_table(&self, event: Event) {
        self.send_if(event, |seq, head| seq > head);
    }

    fn send_if(&self, event: Event, next: impl Fn(u64, u64) -> bool) -> bool {
        let seq = event.seq;
        let mut reached = false;
        self.head.send_if_modified(|head| {
            if !next(seq, *head) {
                reached = seq <= *head;
                return false;
            }
            // No receivers is fine: watchers read the table when they start.
            let _ = self.live.send(Arc::new(event));
            *head = seq;
            reached = true;
            true
        });
        reached
    }
}
