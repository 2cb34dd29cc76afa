//! The users service's load generator: `rest` (GET/PATCH throughput and
//! latency), `fanout` (PATCH → WebSocket delivery latency, loss, duplicates,
//! order), `connect` (sockets per second and server memory per socket), and
//! `floor` (a minimal broadcast server measured beside the real stack). Every
//! run prints a human report and one `SUMMARY {json}` line for scripts.

#![warn(missing_docs)]

pub mod connect;
pub mod fanout;
pub mod faults;
pub mod floor;
pub mod frame;
pub mod http;
pub mod report;
pub mod rest;
pub mod sys;
pub mod target;
pub mod track;
pub mod ws;
