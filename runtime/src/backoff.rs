//! Capped exponential backoff, the one used by everything that reconnects (the
//! gateway's event sources, the user-service's relay to Redis), so a dependency
//! that comes back is found again on the same schedule whichever process waits.

use std::time::Duration;

/// The wait before each retry: 100 ms, doubling up to 5 s, back to 100 ms after a
/// success, so a blip is retried at once and a long outage is not hammered.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first wait, and the one after a success: short, so a blip costs
    /// little.
    pub const START: Duration = Duration::from_millis(100);
    /// The longest wait: how late a recovered dependency may be noticed.
    pub const CAP: Duration = Duration::from_secs(5);

    /// Starts at the smallest wait.
    pub fn new() -> Backoff {
        Backoff { next: Self::START }
    }

    /// The wait before the next attempt; doubles up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        wait
    }

    /// After a success, start small again.
    pub fn reset(&mut self) {
        self.next = Self::START;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_its_cap_and_starts_again_after_a_success() {
        let mut backoff = Backoff::new();
        let waits: Vec<_> = (0..8).map(|_| backoff.next_wait()).collect();
        assert_eq!(waits[0], Duration::from_millis(100));
        assert_eq!(waits[1], Duration::from_millis(200));
        assert_eq!(waits[5], Duration::from_millis(3200));
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(5));
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
    }
}
