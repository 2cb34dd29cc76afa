//! What no connection may do, whatever it speaks: stay open without sending a
//! request, stay open idle forever, or take a file descriptor the process does
//! not have to spare. [`ConnectionLimits`] holds the bounds (each connection
//! is `service_runtime::held::Held` to its place under the cap, which sockets
//! keep after the upgrade), [`Activity`] tells the accept loop whether a connection has earned its keep,
//! and [`Registry`] finds the connection to close when a new one needs room.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

/// The bounds every accepted connection lives under.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From accept to the first request's head (HTTP/1.1, h2c or h2 alike).
    pub first_request: Duration,
    /// A connection with no request in flight for this long is closed gracefully
    /// (sockets are not: they left the connection's keeping at the upgrade).
    pub idle: Duration,
    /// HTTP/2 keep-alive: a PING this often, and the peer must answer within it.
    pub keep_alive: Duration,
    /// Open connections (sockets included) at most; beyond, new ones are closed
    /// at once.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// How often a connection looks at its activity: often enough for short test
    /// settings, at most once a second.
    pub fn check_every(&self) -> Duration {
        (self.first_request.min(self.idle) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// What a connection has done: whether any request came, how many are in
/// flight, and when the last one started or ended.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// The connection's serving ended (closed, or upgraded to a socket).
    ended: AtomicBool,
    seen: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` of the last start or end of a request.
    last: AtomicU64,
}

/// What a connection's activity says should happen to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// No request head within `first_request`: drop it.
    NoRequest,
    /// Nothing in flight for `idle`: close it gracefully.
    Idle,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            ended: AtomicBool::new(false),
            seen: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        })
    }

    /// A request arrived; its end is when the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.seen.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// The connection is no longer served as HTTP (closed, or now a socket):
    /// nothing to evict.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// What should happen to the connection now.
    pub fn verdict(&self, limits: &ConnectionLimits) -> Verdict {
        let age = self.opened.elapsed();
        if !self.seen.load(Ordering::Relaxed) {
            return if age >= limits.first_request {
                Verdict::NoRequest
            } else {
                Verdict::Keep
            };
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        let quiet = age.saturating_sub(last);
        if self.in_flight.load(Ordering::Relaxed) == 0 && quiet >= limits.idle {
            Verdict::Idle
        } else {
            Verdict::Keep
        }
    }
}

/// The open HTTP connections, oldest first, so that at the cap a silent or idle
/// one can be closed to make room for a new one: silent connections cannot
/// crowd out clients that send requests.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<VecDeque<(Arc<Activity>, CancellationToken)>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a connection; the token is cancelled to evict it.
    pub fn add(&self, activity: Arc<Activity>, cap: usize) -> CancellationToken {
        let evict = CancellationToken::new();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= cap.saturating_mul(2).max(64) {
            entries.retain(|(activity, _)| !activity.ended.load(Ordering::Relaxed));
        }
        entries.push_back((activity, evict.clone()));
        evict
    }

    /// Evicts the oldest connection with no request in flight; `false` when
    /// every one is busy.
    pub fn evict_one(&self) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(activity, _)| !activity.ended.load(Ordering::Relaxed));
        let idle = entries
            .iter()
            .position(|(activity, _)| activity.in_flight.load(Ordering::Relaxed) == 0);
        let Some(victim) = idle.and_then(|at| entries.remove(at)) else {
            return false;
        };
        victim.0.end();
        victim.1.cancel();
        true
    }
}

/// One request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(first_request_ms: u64, idle_ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            first_request: Duration::from_millis(first_request_ms),
            idle: Duration::from_millis(idle_ms),
            keep_alive: Duration::from_secs(20),
            max_connections: 10,
        }
    }

    #[test]
    fn a_silent_connection_is_dropped_after_the_first_request_deadline() {
        let activity = Activity::new();
        assert_eq!(activity.verdict(&limits(10_000, 10)), Verdict::Keep);
        assert_eq!(activity.verdict(&limits(0, 10_000)), Verdict::NoRequest);
    }

    #[test]
    fn a_connection_is_idle_only_with_nothing_in_flight() {
        let activity = Activity::new();
        let request = activity.enter();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(activity.verdict(&limits(0, 1)), Verdict::Keep, "in flight");
        drop(request);
        assert_eq!(activity.verdict(&limits(0, 10_000)), Verdict::Keep);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(activity.verdict(&limits(0, 1)), Verdict::Idle);
    }

    #[test]
    fn eviction_takes_the_oldest_connection_with_nothing_in_flight() {
        let registry = Registry::new();
        let busy = Activity::new();
        let _request = busy.enter();
        let silent = Activity::new();
        let later = Activity::new();
        let busy_token = registry.add(busy, 10);
        let silent_token = registry.add(silent, 10);
        let later_token = registry.add(later, 10);
        assert!(registry.evict_one());
        assert!(!busy_token.is_cancelled() && silent_token.is_cancelled());
        assert!(registry.evict_one());
        assert!(later_token.is_cancelled());
        assert!(!registry.evict_one(), "only a busy one is left");
    }
}
