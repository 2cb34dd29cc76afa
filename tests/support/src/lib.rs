#![warn(missing_docs)]

//! What the user-service's integration tests (`user-service/tests/api`) and the
//! end-to-end tests (`tests/`, crate `e2e`) both need, kept in one place so the
//! two suites start Redis, pick ports and wait the same way.
//!
//! - [`free_port`]: ports for servers that must be told theirs.
//! - [`Redis`]: a real redis-server to stop, kill, freeze and restart.
//! - [`Postgres`]: a real PostgreSQL server of a test's own, to stop, kill
//!   and start again on the same data.
//! - [`Process`]: a child process killed with the test, its output kept.
//! - [`eventually`] and [`poll_until`]: every wait bounded, so a broken build
//!   fails with what it last saw instead of hanging.
//! - [`metric_value`]: a series of the Prometheus text both services expose.

mod ports;
mod postgres;
mod process;
mod prometheus;
mod redis;
mod wait;

pub use ports::free_port;
pub use postgres::{Postgres, PostgresOptions, shared_database};
pub use process::{Process, send_signal};
pub use prometheus::metric_value;
pub use redis::Redis;
pub use wait::{Attempt, Poll, eventually, poll_until};
