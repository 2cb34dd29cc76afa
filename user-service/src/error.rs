//! The one error type of the user-service and the one place that turns it into a
//! gRPC status. Internal causes are logged here and never sent to the caller.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::FieldViolation;

/// The `domain` of every google.rpc.ErrorInfo this service returns.
pub const ERROR_DOMAIN: &str = "users.v1";
/// ErrorInfo reason: `expected_version` is not the user's version.
pub const REASON_VERSION_MISMATCH: &str = "VERSION_MISMATCH";
/// ErrorInfo reason: the watcher's epoch is not this database's.
pub const REASON_EPOCH_MISMATCH: &str = "EPOCH_MISMATCH";
/// ErrorInfo reason: events after `since_seq` were pruned.
pub const REASON_SEQ_EXPIRED: &str = "SEQ_EXPIRED";
/// ErrorInfo reason: `since_seq` is newer than the log.
pub const REASON_SEQ_AHEAD: &str = "SEQ_AHEAD";

/// Everything that can go wrong in a call. Each variant's doc names its status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// INVALID_ARGUMENT with a google.rpc.BadRequest, one violation per message.
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    /// NOT_FOUND.
    #[error("user not found")]
    NotFound,
    /// FAILED_PRECONDITION, ErrorInfo reason VERSION_MISMATCH.
    #[error("expected version {expected}, but the user is at version {current}")]
    VersionMismatch { expected: i64, current: i64 },
    /// FAILED_PRECONDITION, ErrorInfo reason EPOCH_MISMATCH.
    #[error("epoch {given:?} is not this database's epoch {current:?}")]
    EpochMismatch { given: String, current: String },
    /// OUT_OF_RANGE, ErrorInfo reason SEQ_EXPIRED.
    #[error("events after seq {since} are no longer kept (oldest kept is {oldest})")]
    SeqExpired { since: u64, oldest: u64 },
    /// OUT_OF_RANGE, ErrorInfo reason SEQ_AHEAD.
    #[error("seq {since} is newer than the newest event {head}")]
    SeqAhead { since: u64, head: u64 },
    /// UNAVAILABLE: the server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// UNAVAILABLE: the database is busy or cannot be reached; worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// INTERNAL with a generic message; the cause is only logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single violation on `field`.
    pub fn invalid(field: &str, description: impl Into<String>) -> Error {
        Error::Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Error::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db) if is_transient_sqlite_error(db.code().as_deref()) => {
                Error::Unavailable(error.to_string())
            }
            _ => Error::Internal(error.to_string()),
        }
    }
}

/// SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_FULL (13) and SQLITE_READONLY (8) go
/// away by themselves or by an operator's hand: retrying later is right.
fn is_transient_sqlite_error(code: Option<&str>) -> bool {
    let Some(primary) = code.and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff) else {
        return false;
    };
    matches!(primary, 5 | 6 | 8 | 13)
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                let summary = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                Status::with_error_details(Code::InvalidArgument, summary, details)
            }
            Error::NotFound => Status::not_found("Not found."),
            Error::VersionMismatch { expected, current } => with_reason(
                Code::FailedPrecondition,
                error_message(&error),
                REASON_VERSION_MISMATCH,
                [
                    ("expected_version", expected.to_string()),
                    ("current_version", current.to_string()),
                ],
            ),
            Error::EpochMismatch { ref current, .. } => with_reason(
                Code::FailedPrecondition,
                error_message(&error),
                REASON_EPOCH_MISMATCH,
                [("epoch", current.clone())],
            ),
            Error::SeqExpired { oldest, .. } => with_reason(
                Code::OutOfRange,
                error_message(&error),
                REASON_SEQ_EXPIRED,
                [("oldest_seq", oldest.to_string())],
            ),
            Error::SeqAhead { head, .. } => with_reason(
                Code::OutOfRange,
                error_message(&error),
                REASON_SEQ_AHEAD,
                [("head_seq", head.to_string())],
            ),
            Error::ShuttingDown => Status::unavailable("the server is shutting down"),
            Error::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                Status::unavailable("the database is unavailable; retry later")
            }
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn error_message(error: &Error) -> String {
    error.to_string()
}

fn with_reason<const N: usize>(
    code: Code,
    message: String,
    reason: &str,
    metadata: [(&str, String); N],
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_violation_becomes_a_bad_request_field_violation() {
        let status = Status::from(Error::Invalid(vec![
            FieldViolation::new("first_name", "This field may not be blank."),
            FieldViolation::new("last_name", "This field is required."),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("BadRequest details");
        let pairs: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("first_name", "This field may not be blank."),
                ("last_name", "This field is required.")
            ]
        );
    }

    #[test]
    fn internal_causes_never_reach_the_caller() {
        let status = Status::from(Error::Internal("disk /secret/path broke".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn a_version_mismatch_names_the_current_version() {
        let status = Status::from(Error::VersionMismatch {
            expected: 1,
            current: 3,
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, REASON_VERSION_MISMATCH);
        assert_eq!(info.metadata["current_version"], "3");
    }

    #[test]
    fn busy_locked_readonly_and_full_are_transient() {
        for code in ["5", "6", "8", "13", "517", "1032"] {
            assert!(is_transient_sqlite_error(Some(code)), "{code}");
        }
        assert!(!is_transient_sqlite_error(Some("19")));
        assert!(!is_transient_sqlite_error(None));
    }
}
