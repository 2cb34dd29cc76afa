//! The user-service: the only writer of the users database. Every create, update
//! and delete commits together with its event in the `events` table; watchers and
//! the Redis relay read that table, so an event is never lost and never reordered.

pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod incoming;
pub mod metrics;
pub mod relay;
pub mod retention;
pub mod store;
pub mod watch;

pub use app::Application;
pub use config::Config;
