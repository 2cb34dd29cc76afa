//! The one reconnect loop both event sources run under: follow the stream until
//! it fails, tell the hub the feed is down, wait on the shared backoff, and try
//! again, until shutdown.

use std::{future::Future, sync::Arc};

use service_runtime::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use super::Hub;

/// Why one attempt to follow the stream ended.
pub struct Stopped {
    /// What failed (logged).
    pub error: anyhow::Error,
    /// The attempt got connected and live first: the next wait starts small.
    pub connected: bool,
}

/// An event source: a Redis stream or the user-service's WatchUsers.
pub trait Source: Send {
    /// Names the source in log lines.
    const NAME: &'static str;

    /// Follows the stream into the hub until it fails: connects, fills the
    /// hub's window or resumes where it stopped, then publishes each event.
    fn follow(&mut self) -> impl Future<Output = Stopped> + Send;
}

/// Runs `source` until `shutdown`, reconnecting with [`Backoff`].
pub async fn run<S: Source>(mut source: S, hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let stopped = tokio::select! {
            _ = shutdown.cancelled() => return,
            stopped = source.follow() => stopped,
        };
        hub.set_live(false);
        if stopped.connected {
            backoff.reset();
        }
        tracing::warn!(source = S::NAME, error = %stopped.error, "events: the source failed; reconnecting");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}
