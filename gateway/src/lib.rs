//! The gateway: the Django POC's REST API (DRF 3.14 compatible JSON) translated
//! into gRPC calls to the user-service, and `/ws/user-updates/` streaming every
//! change to browser sockets. It holds no state of its own but its sockets and a
//! window of recent events.
//!
//! The tree, from the bottom up (each layer uses only those before it):
//! - [`error`]: the one error type and its DRF-shaped answers;
//! - [`security`]: tokens, rate limits and socket caps, allowed hosts and
//!   origins, security headers, TLS;
//! - [`observe`] (metrics, request ids), [`upstream`] (the user-service client),
//!   [`query`], [`user_json`] (a user as clients see it);
//! - [`events`]: the hub every socket reads from and the sources that feed it
//!   (a Redis stream or WatchUsers);
//! - [`state`]: what requests share, and callers from credentials;
//! - [`server`]: accepting connections under the caps and deadlines;
//! - [`ws`]: the socket handshake, its admission and the socket task;
//! - [`http`]: the routes, the REST API, probes, the page;
//! - [`config`] and [`app`]: flags, and wiring it all together.

pub mod app;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod observe;
pub mod presence;
pub mod query;
pub mod security;
pub mod server;
pub mod state;
pub mod upstream;
pub mod user_json;
pub mod ws;

pub use app::Application;
pub use config::Config;
