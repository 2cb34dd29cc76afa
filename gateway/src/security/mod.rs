//! What decides who may do what and what every answer carries: bearer tokens,
//! rate limits and socket caps, the `Host` names and origins allowed, the
//! security headers, TLS. Nothing here knows about routes or sockets.

pub mod auth;
pub mod cors;
pub mod headers;
pub mod hosts;
pub mod limits;
pub mod mint;
pub mod tls;
