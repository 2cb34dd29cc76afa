//! Integration tests: the real server on port 0 over a real socket, a fresh SQLite
//! file per test, driven by the generated client (and raw HTTP/1.1 for gRPC-Web).
//! Redis tests start their own `redis-server` on a free port.

mod helpers;
#[path = "../common/stream.rs"]
mod stream;

mod checkpoints;
mod concurrency;
mod crud;
mod database_url;
mod first_scrape;
mod metrics;
mod redis_relay;
mod restart;
mod transport;
mod validate_only;
mod validation;
mod watch;
