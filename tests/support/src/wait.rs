//! Bounded waits. A test that waits for something the system does in its own
//! time (a process to listen, an event to reach Redis, a gauge to settle) polls
//! it here, so that every such wait ends, and a broken build fails with what the
//! last look saw instead of hanging.

use std::{fmt::Display, time::Duration};

use tokio::time::Instant;

/// How long a wait may last and how often it looks. Polling has a cost the
/// thing polled pays (an HTTP poll spends a rate limit, a socket poll opens a
/// connection), so a caller can look less often than the default.
#[derive(Clone, Copy, Debug)]
pub struct Poll {
    /// The wait gives up once this much time has passed since it began.
    pub limit: Duration,
    /// The pause between two looks.
    pub every: Duration,
}

impl Poll {
    /// Short enough that a wait ends soon after its condition holds, long
    /// enough that a cheap check does not keep a core busy.
    pub const DEFAULT_EVERY: Duration = Duration::from_millis(20);

    /// Looks every [`Poll::DEFAULT_EVERY`] for at most `limit`.
    pub fn within(limit: Duration) -> Poll {
        Poll {
            limit,
            every: Self::DEFAULT_EVERY,
        }
    }

    /// The same limit, looking every `every`.
    pub fn every(self, every: Duration) -> Poll {
        Poll { every, ..self }
    }
}

impl From<Duration> for Poll {
    /// A bare limit is the common case: `eventually(STEP_TIMEOUT, …)`.
    fn from(limit: Duration) -> Poll {
        Poll::within(limit)
    }
}

/// What one look of [`eventually`] came to: `Option` for a condition that
/// either holds or does not, `Result` when a look has something to say about
/// why not (the last one's words go into the failure message).
pub trait Attempt {
    /// What the wait returns once the condition holds.
    type Value;

    /// The value, or what this look saw instead ("" when there is nothing to say).
    fn into_result(self) -> Result<Self::Value, String>;
}

impl<T> Attempt for Option<T> {
    type Value = T;

    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Attempt for Result<T, E> {
    type Value = T;

    fn into_result(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Calls `check` until it returns `Ok` or `poll.limit` has passed; the value,
/// or the last `Err` once time is up. For waits whose caller decides what a
/// timeout means (asserts on the last answer itself, or lets a later check
/// report what is missing); [`eventually`] is the one that fails the test.
pub async fn poll_until<T, E>(
    poll: impl Into<Poll>,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let poll = poll.into();
    let deadline = Instant::now() + poll.limit;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(poll.every).await,
        }
    }
}

/// Calls `check` until it yields a value, which it returns; panics naming
/// `what` it waited for, and what the last look saw, once `poll.limit` has
/// passed. The one way a test waits for something to become true.
pub async fn eventually<A: Attempt>(
    poll: impl Into<Poll>,
    what: &str,
    mut check: impl AsyncFnMut() -> A,
) -> A::Value {
    let poll = poll.into();
    match poll_until(poll, async || check().await.into_result()).await {
        Ok(value) => value,
        Err(seen) if seen.is_empty() => {
            panic!("timed out after {:?} waiting for {what}", poll.limit)
        }
        Err(seen) => panic!(
            "timed out after {:?} waiting for {what}: {seen}",
            poll.limit
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_condition_that_comes_true_returns_its_value() {
        let mut looks = 0;
        let value = eventually(Duration::from_secs(5), "the third look", async || {
            looks += 1;
            (looks == 3).then_some(looks)
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible: still 7")]
    async fn a_condition_that_never_holds_fails_with_the_last_look() {
        eventually(Duration::from_millis(50), "the impossible", async || {
            Err::<(), _>("still 7")
        })
        .await;
    }

    #[tokio::test]
    async fn poll_until_hands_back_the_last_failure() {
        let mut looks = 0;
        let last = poll_until(
            Poll::within(Duration::from_millis(50)).every(Duration::from_millis(5)),
            async || {
                looks += 1;
                Err::<(), _>(looks)
            },
        )
        .await;
        assert_eq!(last, Err(looks));
        assert!(looks > 1);
    }
}
