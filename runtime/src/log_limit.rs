//! Log lines an outsider can cause, written at most once per period with how
//! many times the thing happened since: refused connections, refused RPCs. A
//! flood of bad requests then costs one line per period, not one per request.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// One kind of event, logged at most once per `every`.
pub struct LogLimit {
    every: Duration,
    /// When the last line was due, and the events since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// `const`, so a limit is a `static` beside the line it limits and needs
    /// no setting up.
    pub const fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one event; returns how many to report when a line is due (the
    /// first event always is).
    pub fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let due = state.0.is_none_or(|at| at.elapsed() >= self.every);
        due.then(|| {
            let count = state.1;
            *state = (Some(Instant::now()), 0);
            count
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_logged_at_most_once_per_period_with_their_count() {
        let limit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.hit(), Some(1));
        assert_eq!(limit.hit(), None);
        assert_eq!(limit.hit(), None);
        let every_time = LogLimit::new(Duration::ZERO);
        assert_eq!(every_time.hit(), Some(1));
        assert_eq!(every_time.hit(), Some(1));
    }
}
