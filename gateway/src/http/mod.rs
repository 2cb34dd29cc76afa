//! The HTTP surface: [`routes`] sends each path to its handler; the REST API
//! under `/api/users` ([`users`], with [`access`], [`fields`], [`body`] and
//! [`pagination`]), the probes ([`readiness`]), the OpenAPI document and the
//! page ([`web`]).

pub mod access;
pub mod asyncapi;
pub mod body;
pub mod fields;
pub mod openapi;
pub mod pagination;
pub mod readiness;
pub mod routes;
pub mod users;
pub mod web;
