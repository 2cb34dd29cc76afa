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

/// Fails the test when a `$ref` of `doc` (an OpenAPI or AsyncAPI document)
/// points at nothing in it.
#[cfg(test)]
fn assert_references_resolve(doc: &serde_json::Value) {
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        let pointer = target.trim_start_matches('#');
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
    }
}
