//! The fault suite's instruments (`tests/tests/faults.rs`), in three parts:
//!
//! - the load ([`Writer`], [`Follower`]): a writer that keeps PATCHing unique
//!   names through the gateways and records how each write ended, and followers
//!   that keep a socket open across closes and crashes, resuming with
//!   `since`/`epoch`, and record every frame;
//! - the checker ([`finish`]): holds what the load recorded to the
//!   user-service's own event log ([`event_log`], the ground truth): every
//!   acknowledged write in the log exactly once, no value applied twice, every
//!   socket with every event exactly once and in order, and each socket's final
//!   view equal to what the database holds. A failure names the missing,
//!   duplicated or misplaced events;
//! - the levers the cases pull and the gauges they read: a file-size limit that
//!   makes the database's disk refuse writes ([`limit_file_size`]), process
//!   memory ([`rss_kib`]), the user-service's gRPC health ([`health`]). Killing,
//!   stopping and freezing the processes themselves are
//!   [`Process`](crate::Process)'s and [`Redis`]'s.

mod checker;
mod levers;
mod load;

pub use checker::{EventLog, Report, event_log, finish};
pub use levers::{health, ignore_sigxfsz, limit_file_size, rss_kib, wait_health};
pub use load::{Follower, Outcome, Seen, Update, Write, Writer};
use test_support::Redis;

/// Gateway flags for the fault suite: authentication and rate limits off (one
/// writer at 50 writes/s from one address would be throttled), events from
/// `redis` when given.
pub fn gateway_flags(redis: Option<&Redis>) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--rate-limit-reads",
        "off",
        "--rate-limit-writes",
        "off",
        "--rate-limit-connects",
        "off",
    ]
    .map(String::from)
    .to_vec();
    if let Some(redis) = redis {
        flags.extend(redis.flags());
    }
    flags
}
