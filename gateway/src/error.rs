//! The one error type of the gateway and the one place that turns it into an HTTP
//! status and a DRF-shaped JSON body. Internal causes are logged here and never
//! sent to the client.

use serde_json::{Map, Value, json};
use tonic::Code;
use tonic_types::StatusExt;
use users_proto::errors;
use warp::{
    http::{HeaderValue, StatusCode, header},
    reply::Response,
};

/// The generic detail of a 500; DRF's own words.
pub const MSG_SERVER_ERROR: &str = "A server error occurred.";
/// The detail of a 404, as DRF words it.
pub const MSG_NOT_FOUND: &str = "Not found.";

/// DRF's detail when no credentials came with the request.
pub const MSG_NOT_PROVIDED: &str = "Authentication credentials were not provided.";
/// The detail for a token that is malformed, forged, expired, not yet valid, for
/// another audience or issuer (SimpleJWT's words; the reason is only logged).
pub const MSG_INVALID_TOKEN: &str = "Given token not valid for any token type";
/// DRF's detail for an authenticated caller without the permission.
pub const MSG_FORBIDDEN: &str = "You do not have permission to perform this action.";
/// The `WWW-Authenticate` of every 401, as SimpleJWT's `authenticate_header`.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"api\"";

/// Why a request is not authenticated (both are 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token at all.
    #[error("no credentials")]
    Missing,
    /// A token that does not verify; the reason is for the logs only.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Everything a request can fail with. Each variant's doc names its status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400, field-keyed lists: `{"first_name": ["…"], …}`, fields in the order
    /// their first message came.
    #[error("invalid fields")]
    Invalid(Vec<(String, String)>),
    /// 400 `{"non_field_errors": ["…"]}`: the body is JSON but not an object.
    #[error("invalid body: {0}")]
    NonField(String),
    /// 400 `{"detail": "JSON parse error - …"}`.
    #[error("JSON parse error - {0}")]
    Parse(String),
    /// 400 `{"detail": "…"}`: a malformed query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 401 `{"detail": "Authentication credentials were not provided."}` or
    /// `{"detail": "Given token not valid for any token type"}`, with
    /// `WWW-Authenticate: Bearer realm="api"`.
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// 403 `{"detail": "You do not have permission to perform this action."}`.
    #[error("forbidden")]
    Forbidden,
    /// 403 `{"detail": "…"}`: a browser socket from an origin not allowed.
    #[error("origin not allowed")]
    OriginRefused,
    /// 429 `{"detail": "Request was throttled. Expected available in N seconds."}`
    /// with `Retry-After: N`.
    #[error("throttled for {0} s")]
    Throttled(u64),
    /// 414 `{"detail": "…"}`: the query string is over the cap.
    #[error("query string over {0} bytes")]
    QueryTooLong(usize),
    /// 431 `{"detail": "…"}`: the request's head is over the cap.
    #[error("request head over {0} bytes")]
    HeadTooLarge(usize),
    /// 503 `{"detail": "…"}` with `Retry-After`: too many sockets are open.
    #[error("socket cap reached")]
    TooManySockets,
    /// 404 `{"detail": "Not found."}`.
    #[error("not found")]
    NotFound,
    /// 405 `{"detail": "Method \"…\" not allowed."}` with an `Allow` header.
    #[error("method {method} not allowed")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// 412 `{"detail": "…"}`: `If-Match` names a version the user is no longer at.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 408 `{"detail": "…"}`: the body did not arrive within its deadline.
    #[error("request body not read within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// 413 `{"detail": "…"}`: the body is over the cap.
    #[error("request body over {0} bytes")]
    PayloadTooLarge(usize),
    /// 415 `{"detail": "Unsupported media type \"…\" in request."}`.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// 503 `{"detail": "…"}`: the user-service cannot be reached or is too slow.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 500 with a generic detail; the cause is only logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Invalid(_) | Error::NonField(_) | Error::Parse(_) | Error::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden | Error::OriginRefused => StatusCode::FORBIDDEN,
            Error::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::QueryTooLong(_) => StatusCode::URI_TOO_LONG,
            Error::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::TooManySockets => StatusCode::SERVICE_UNAVAILABLE,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body, in DRF's shapes.
    pub fn body(&self) -> Value {
        match self {
            Error::Invalid(violations) => {
                let mut fields = Map::new();
                for (field, message) in violations {
                    let list = fields
                        .entry(field.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = list {
                        list.push(Value::String(message.clone()));
                    }
                }
                Value::Object(fields)
            }
            Error::NonField(message) => json!({ "non_field_errors": [message] }),
            Error::Parse(message) => json!({ "detail": format!("JSON parse error - {message}") }),
            Error::BadRequest(message) => json!({ "detail": message }),
            Error::NotFound => json!({ "detail": MSG_NOT_FOUND }),
            Error::Unauthenticated(AuthError::Missing) => {
                json!({ "detail": MSG_NOT_PROVIDED })
            }
            Error::Unauthenticated(AuthError::Invalid(_)) => {
                json!({ "detail": MSG_INVALID_TOKEN })
            }
            Error::Forbidden => json!({ "detail": MSG_FORBIDDEN }),
            Error::OriginRefused => {
                json!({ "detail": "This origin may not open a socket here." })
            }
            Error::Throttled(wait) => json!({
                "detail": format!(
                    "Request was throttled. Expected available in {wait} second{}.",
                    if *wait == 1 { "" } else { "s" }
                )
            }),
            Error::QueryTooLong(limit) => json!({
                "detail": format!("The query string is too long: the limit is {limit} bytes.")
            }),
            Error::HeadTooLarge(limit) => json!({
                "detail": format!("The request's headers are too large: the limit is {limit} bytes.")
            }),
            Error::TooManySockets => json!({
                "detail": "Too many sockets are open; try again later."
            }),
            Error::MethodNotAllowed { method, .. } => {
                json!({ "detail": format!("Method \"{method}\" not allowed.") })
            }
            Error::PreconditionFailed(message) => json!({ "detail": message }),
            Error::PayloadTooLarge(limit) => json!({
                "detail": format!("Request body is too large: the limit is {limit} bytes.")
            }),
            Error::BodyTimeout(limit) => json!({
                "detail": format!(
                    "The request body did not arrive in time: the limit is {} seconds.",
                    limit.as_secs_f64()
                )
            }),
            Error::UnsupportedMediaType(media_type) => json!({
                "detail": format!("Unsupported media type \"{media_type}\" in request.")
            }),
            Error::Unavailable(_) => json!({
                "detail": "The user service is unavailable; try again later."
            }),
            Error::Internal(_) => json!({ "detail": MSG_SERVER_ERROR }),
        }
    }

    /// The whole response: status, JSON body, and `Allow` on a 405.
    pub fn into_response(self) -> Response {
        match &self {
            Error::Internal(cause) => tracing::error!(%cause, "internal error"),
            Error::Unavailable(cause) => tracing::warn!(%cause, "user-service unavailable"),
            Error::Unauthenticated(AuthError::Invalid(reason)) => {
                tracing::debug!(%reason, "refused a token")
            }
            _ => {}
        }
        let mut response = json_response(self.status(), &self.body());
        let headers = response.headers_mut();
        match self {
            Error::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Error::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE),
                );
            }
            Error::Throttled(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
            }
            Error::TooManySockets => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// A JSON response with DRF's content type.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(bytes.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The gRPC status → HTTP table (docs/rest.md, "Errors").
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        if broke_in_transport(&status) {
            return Error::Unavailable(status.to_string());
        }
        match status.code() {
            Code::InvalidArgument => match status.get_details_bad_request() {
                Some(bad) if !bad.field_violations.is_empty() => Error::Invalid(
                    bad.field_violations
                        .into_iter()
                        .map(|v| (v.field, v.description))
                        .collect(),
                ),
                _ => Error::Internal(format!(
                    "INVALID_ARGUMENT without field violations: {status}"
                )),
            },
            Code::NotFound => Error::NotFound,
            Code::FailedPrecondition => {
                let current = errors::metadata(&status, errors::CURRENT_VERSION_KEY);
                Error::PreconditionFailed(match current {
                    Some(version) => format!(
                        "Precondition failed: the user has changed; it is now at version {version}."
                    ),
                    None => "Precondition failed: the user has changed.".to_owned(),
                })
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Error::Unavailable(status.to_string())
            }
            _ => Error::Internal(status.to_string()),
        }
    }
}

/// Whether the call failed on its way, not in the user-service: tonic reports a
/// connection that breaks mid-call (the user-service killed, a reset) as UNKNOWN
/// "transport error" with the I/O error as its source, where gRPC's own table says
/// UNAVAILABLE. A status the server sent never has a source.
fn broke_in_transport(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() || error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn violations_are_grouped_by_field_in_order() {
        let error = Error::Invalid(vec![
            ("last_name".into(), "a".into()),
            ("first_name".into(), "b".into()),
            ("last_name".into(), "c".into()),
        ]);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::to_string(&error.body()).unwrap(),
            r#"{"last_name":["a","c"],"first_name":["b"]}"#
        );
    }

    #[test]
    fn bad_request_details_become_field_lists() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("first_name", "This field may not be blank.");
        let status = tonic::Status::with_error_details(Code::InvalidArgument, "x", details);
        let error = Error::from(status);
        assert_eq!(
            error.body(),
            json!({"first_name": ["This field may not be blank."]})
        );
    }

    #[test]
    fn grpc_codes_map_as_the_design_says() {
        let cases = [
            (tonic::Status::not_found("x"), StatusCode::NOT_FOUND),
            (
                tonic::Status::failed_precondition("x"),
                StatusCode::PRECONDITION_FAILED,
            ),
            (
                tonic::Status::unavailable("x"),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                tonic::Status::deadline_exceeded("x"),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                tonic::Status::internal("x"),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                tonic::Status::permission_denied("x"),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(Error::from(status).status(), expected);
        }
    }

    #[test]
    fn a_call_broken_in_transport_is_503_whatever_its_code() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert_eq!(broken.code(), Code::Unknown);
        let error = Error::from(broken);
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            error.body(),
            json!({"detail": "The user service is unavailable; try again later."})
        );
        // The same code sent by the server stays a 500.
        assert_eq!(
            Error::from(tonic::Status::unknown("x")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn internal_causes_never_reach_the_client() {
        let error = Error::from(tonic::Status::internal("disk /secret/path broke"));
        let body = error.body().to_string();
        assert!(!body.contains("secret"), "{body}");
        assert_eq!(body, r#"{"detail":"A server error occurred."}"#);
    }

    #[test]
    fn auth_errors_answer_as_drf_does() {
        let missing = Error::Unauthenticated(AuthError::Missing).into_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\""
        );
        assert_eq!(
            Error::Throttled(1).body(),
            json!({"detail": "Request was throttled. Expected available in 1 second."})
        );
        let throttled = Error::Throttled(7).into_response();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(throttled.headers()[header::RETRY_AFTER], "7");
        assert_eq!(
            Error::Forbidden.body(),
            json!({"detail": "You do not have permission to perform this action."})
        );
    }

    #[test]
    fn a_405_carries_allow() {
        let response = Error::MethodNotAllowed {
            method: "PUT".into(),
            allow: "GET, POST, OPTIONS",
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, POST, OPTIONS");
    }
}
