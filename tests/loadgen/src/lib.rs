//! The users service's load generator: `rest` (GET/PATCH throughput and
//! latency), `fanout` (PATCH → WebSocket delivery latency, loss, duplicates,
//! order), `connect` (sockets per second and server memory per socket), and
//! `floor` (a minimal broadcast server measured beside the real stack),
//! `subscribers` (sockets filtered to their own user over several gateways:
//! exact delivery and latency), `presence` (two windows per user: presence frame
//! latency), `create-users` (the users those follow) and `merge` (several
//! processes' summaries as one). Every run prints a human report and one
//! `SUMMARY {json}` line for scripts.

#![warn(missing_docs)]

pub mod connect;
pub mod fanout;
pub mod faults;
pub mod fleet;
pub mod floor;
pub mod frame;
pub mod http;
pub mod merge;
pub mod presence;
pub mod report;
pub mod rest;
pub mod subscribers;
pub mod sys;
pub mod target;
pub mod track;
pub mod users;
pub mod ws;
