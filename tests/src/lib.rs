#![warn(missing_docs)]

//! Helpers for the end-to-end tests: start the real `user-service` and `gateway`
//! binaries (built by cargo on first use) on free ports with a fresh SQLite file,
//! a real `redis-server`, and talk to them with real HTTP and WebSocket clients.
//! Every wait is bounded, so a broken build fails instead of hanging.
//!
//! One module a concern, everything the tests use re-exported here:
//! [`binaries`](Process) (building and starting our binaries), services
//! ([`UserService`], [`start_gateway`]), [`Http`], [`Socket`], the fault suite's
//! instruments ([`faults`]), the deployment manifests ([`manifests`]), tokens
//! and certificates ([`credentials`]). Ports, Redis, child processes and bounded
//! waits come from `test_support`, which the user-service's integration tests
//! share.

mod binaries;
pub mod credentials;
pub mod faults;
pub mod feed_order;
mod http;
pub mod manifests;
mod services;
mod socket;
mod timeouts;

pub use binaries::{Process, binary, litestream, logged_addr};
pub use http::{Http, Reply};
pub use services::{UserService, start_gateway, start_gateway_with, unthrottled};
pub use socket::{Ended, Socket};
pub use test_support::{
    Poll, Postgres, Redis, eventually, free_port, metric_value, poll_until, send_signal,
};
pub use timeouts::{START_TIMEOUT, STEP_TIMEOUT};
