//! The one error type of the gateway and the one place that turns it into an HTTP
//! status and a DRF-shaped JSON body. Internal causes are logged here and never
//! sent to the client.

use serde_json::{Map, Value, json};
use tonic::Code;
use tonic_types::StatusExt;
use warp::{
    http::{HeaderValue, StatusCode, header},
    reply::Response,
};

/// The generic detail of a 500; DRF's own words.
pub const MSG_SERVER_ERROR: &str = "A server error occurred.";
/// The detail of a 404, as DRF words it.
pub const MSG_NOT_FOUND: &str = "Not found.";

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
    /// 404 `{"detail": "Not found."}`.
    #[error("not found")]
    NotFound,
    /// 405 `{"detail": "Method \"…\" not allowed."}` with an `Allow` header.
    #[error("method {method} not allowed")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// 412 `{"detail": "…"}`: `If-Match` names a version the user is no longer at.
    #[error("{0}")]
    PreconditionFailed(String),
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
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
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
            Error::MethodNotAllowed { method, .. } => {
                json!({ "detail": format!("Method \"{method}\" not allowed.") })
            }
            Error::PreconditionFailed(message) => json!({ "detail": message }),
            Error::PayloadTooLarge(limit) => json!({
                "detail": format!("Request body is too large: the limit is {limit} bytes.")
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
            _ => {}
        }
        let mut response = json_response(self.status(), &self.body());
        if let Error::MethodNotAllowed { allow, .. } = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
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

/// The gRPC status → HTTP table of DESIGN.md.
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
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
                let current = status
                    .get_details_error_info()
                    .and_then(|info| info.metadata.get("current_version").cloned());
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
    fn internal_causes_never_reach_the_client() {
        let error = Error::from(tonic::Status::internal("disk /secret/path broke"));
        let body = error.body().to_string();
        assert!(!body.contains("secret"), "{body}");
        assert_eq!(body, r#"{"detail":"A server error occurred."}"#);
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
