//! The gateway: the Django POC's REST API (DRF 3.14 compatible JSON) translated
//! into gRPC calls to the user-service, and `/ws/user-updates/` streaming every
//! change to browser sockets. It holds no state of its own but its sockets and a
//! window of recent events.

pub mod app;
pub mod auth;
pub mod bare_answers;
pub mod body;
pub mod config;
pub mod connections;
pub mod cors;
pub mod error;
pub mod events;
pub mod handlers;
pub mod headers;
pub mod hosts;
pub mod json;
pub mod limits;
pub mod observe;
pub mod openapi;
pub mod query;
pub mod readiness;
pub mod routes;
pub mod server;
pub mod socket_threads;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod web;
pub mod ws;

pub use app::Application;
pub use config::Config;
