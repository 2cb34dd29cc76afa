//! Duties that must run in one process at a time (publishing to Redis, pruning
//! the log), and the lease a process holds while it runs one.
//!
//! On SQLite the one process holds every lease for good. On PostgreSQL a lease
//! is a session advisory lock held on a connection of its own: it is released
//! when the holder lets go, or when its connection ends (the process died, the
//! network failed), and another process waiting for it takes over.

use std::{future::Future, sync::Arc};

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Store;

/// Something exactly one process runs at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duty {
    /// The outbox relay: two relays would race each other's cursor.
    Relay,
    /// Retention: two pruners would only contend for the same rows.
    Retention,
}

impl Duty {
    /// The name logs and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Duty::Relay => "relay",
            Duty::Retention => "retention",
        }
    }

    /// The advisory lock key of this duty, the same in every process: "users"
    /// in ASCII, then the duty's number.
    pub(super) fn lock_key(self) -> i64 {
        const BASE: i64 = 0x7573_6572_7300;
        match self {
            Duty::Relay => BASE + 1,
            Duty::Retention => BASE + 2,
        }
    }
}

/// Proof that this process holds a duty. Dropping it lets the duty go.
pub struct Lease {
    lost: CancellationToken,
    /// Keeps the lock's connection and watches it; aborted on drop, which
    /// closes the connection and so releases the lock.
    keeper: Option<JoinHandle<()>>,
}

impl Lease {
    /// A lease that is never lost: SQLite's one process holds every duty.
    pub(super) fn forever() -> Lease {
        Lease {
            lost: CancellationToken::new(),
            keeper: None,
        }
    }

    /// A lease whose `keeper` task cancels `lost` when it can no longer vouch
    /// for the lock.
    pub(super) fn kept_by(keeper: JoinHandle<()>, lost: CancellationToken) -> Lease {
        Lease {
            lost,
            keeper: Some(keeper),
        }
    }

    /// Completes when the lease is lost (its connection failed): the holder
    /// must stop, as another process may take the duty over.
    pub fn lost(&self) -> WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
    }
}

/// Runs a fresh `term(stop)` each time this process comes to hold `duty`,
/// until `shutdown`. A term ends when its lease is lost (its future is then
/// dropped, and the duty is sought again) or at shutdown (when `stop` is
/// cancelled and the term is awaited to its end).
pub async fn run_while_held<F, Fut>(
    store: Arc<Store>,
    duty: Duty,
    shutdown: CancellationToken,
    mut term: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let shared = store.backend() == super::Backend::Postgres;
    crate::metrics::duty_held(duty.name(), false);
    while let Some(lease) = store.acquire(duty, &shutdown).await {
        if shared {
            tracing::info!(duty = duty.name(), "this process now holds the duty");
        }
        crate::metrics::duty_held(duty.name(), true);
        let work = term(shutdown.clone());
        tokio::select! {
            () = work => {}
            () = lease.lost() => {
                tracing::warn!(duty = duty.name(),
                    "lost the database lock of this duty; another process may take it over");
            }
        }
        crate::metrics::duty_held(duty.name(), false);
        if shutdown.is_cancelled() {
            return;
        }
    }
}
