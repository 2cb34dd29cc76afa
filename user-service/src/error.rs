//! The one error type of the user-service and the one place that turns it into a
//! gRPC status. Internal causes are logged here and never sent to the caller.
//! The ErrorInfo reasons and keys a caller acts on are `users_proto::errors`'.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use users_proto::errors;

use crate::domain::FieldViolation;

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
    VersionMismatch {
        /// The caller's `expected_version`.
        expected: i64,
        /// The user's version, sent back so the caller need not read it.
        current: i64,
    },
    /// FAILED_PRECONDITION, ErrorInfo reason EPOCH_MISMATCH.
    #[error("epoch {given:?} is not this database's epoch {current:?}")]
    EpochMismatch {
        /// The caller's epoch.
        given: String,
        /// This database's, sent back to resync against.
        current: String,
    },
    /// OUT_OF_RANGE, ErrorInfo reason SEQ_EXPIRED.
    #[error("events after seq {since} are no longer kept (oldest kept is {oldest})")]
    SeqExpired {
        /// The caller's `since_seq`.
        since: u64,
        /// The oldest seq still kept.
        oldest: u64,
    },
    /// OUT_OF_RANGE, ErrorInfo reason SEQ_AHEAD.
    #[error("seq {since} is newer than the newest event {head}")]
    SeqAhead {
        /// The caller's `since_seq`.
        since: u64,
        /// The newest seq recorded.
        head: u64,
    },
    /// UNAVAILABLE: the server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// UNAVAILABLE: the database is busy or cannot be reached; worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// UNAVAILABLE: the database file cannot be written (disk full, read-only, I/O
    /// error, cannot be opened). The writer reports NOT_SERVING until a write
    /// succeeds again, so this is also worth a retry, later.
    #[error("database cannot be written: {0}")]
    Storage(String),
    /// INTERNAL with a generic message; the cause is only logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single violation on `field`: the common case, without building a
    /// list.
    pub fn invalid(field: &str, description: impl Into<String>) -> Error {
        Error::Invalid(vec![FieldViolation::new(field, description)])
    }

    /// Whether the storage itself refused a write: the writer then turns health
    /// NOT_SERVING and probes until the disk takes writes again.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, Error::Storage(_))
    }

    /// A write refused for what the caller asked (missing user, stale version,
    /// invalid value), decided before anything was changed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Invalid(_) | Error::NotFound | Error::VersionMismatch { .. }
        )
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Error::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                postgres_error(db.code().as_deref().unwrap_or(""), error.to_string())
            }
            sqlx::Error::Database(db) => {
                let code = db.code().and_then(|c| c.parse::<i32>().ok());
                sqlite_error(code, error.to_string())
            }
            _ => Error::Internal(error.to_string()),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        let code = error.sqlite_error().map(|e| e.extended_code);
        sqlite_error(code, error.to_string())
    }
}

/// The error for SQLite's (extended) result `code`, with `text` as its cause.
fn sqlite_error(code: Option<i32>, text: String) -> Error {
    match code.map(|c| c & 0xff) {
        Some(SQLITE_BUSY | SQLITE_LOCKED) => Error::Unavailable(text),
        Some(SQLITE_READONLY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN) => {
            Error::Storage(text)
        }
        _ => Error::Internal(text),
    }
}

/// The error for PostgreSQL's SQLSTATE `code`, with `text` as its cause: what
/// passes by itself (a lost connection, a server shutting down or starting, a
/// conflict with another transaction, too many connections) is UNAVAILABLE;
/// what needs an operator (a full disk, a read-only server, an I/O error) is a
/// storage failure; the rest is internal.
fn postgres_error(code: &str, text: String) -> Error {
    match code {
        // disk_full, read_only_sql_transaction, io_error, system_error.
        "53100" | "25006" | "58030" | "58000" => Error::Storage(text),
        // serialization_failure, deadlock_detected; the shutdowns and
        // cannot_connect_now; insufficient_resources, out_of_memory,
        // too_many_connections.
        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53000" | "53200" | "53300" => {
            Error::Unavailable(text)
        }
        // connection_exception and its subclasses.
        _ if code.starts_with("08") => Error::Unavailable(text),
        _ => Error::Internal(text),
    }
}

// SQLite's primary result codes (the low byte of an extended code). BUSY and
// LOCKED pass by themselves; the storage ones pass by an operator's hand (space
// freed, permissions or a mount fixed); retrying later is right for all of them.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

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
            Error::VersionMismatch { expected, current } => errors::status(
                Code::FailedPrecondition,
                error.to_string(),
                errors::VERSION_MISMATCH,
                [
                    (errors::EXPECTED_VERSION_KEY, expected.to_string()),
                    (errors::CURRENT_VERSION_KEY, current.to_string()),
                ],
            ),
            Error::EpochMismatch { ref current, .. } => errors::status(
                Code::FailedPrecondition,
                error.to_string(),
                errors::EPOCH_MISMATCH,
                [(errors::EPOCH_KEY, current.clone())],
            ),
            Error::SeqExpired { oldest, .. } => errors::status(
                Code::OutOfRange,
                error.to_string(),
                errors::SEQ_EXPIRED,
                [(errors::OLDEST_SEQ_KEY, oldest.to_string())],
            ),
            Error::SeqAhead { head, .. } => errors::status(
                Code::OutOfRange,
                error.to_string(),
                errors::SEQ_AHEAD,
                [(errors::HEAD_SEQ_KEY, head.to_string())],
            ),
            Error::ShuttingDown => Status::unavailable("the server is shutting down"),
            Error::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                Status::unavailable("the database is unavailable; retry later")
            }
            Error::Storage(cause) => {
                tracing::warn!(%cause, "database cannot be written");
                Status::unavailable("the database cannot be written right now; retry later")
            }
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Status::internal("internal error")
            }
        }
    }
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
        assert_eq!(
            errors::reason(&status).as_deref(),
            Some(errors::VERSION_MISMATCH)
        );
        assert_eq!(
            errors::metadata(&status, errors::CURRENT_VERSION_KEY).as_deref(),
            Some("3")
        );
    }

    #[test]
    fn extended_codes_reduce_to_their_primary_code() {
        let from_code = |code| {
            Error::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        // SQLITE_BUSY_SNAPSHOT, SQLITE_READONLY_DBMOVED, SQLITE_IOERR_WRITE,
        // SQLITE_FULL, SQLITE_CONSTRAINT_UNIQUE.
        assert!(matches!(from_code(517), Error::Unavailable(_)));
        assert!(matches!(from_code(1032), Error::Storage(_)));
        assert!(matches!(from_code(778), Error::Storage(_)));
        assert!(matches!(from_code(13), Error::Storage(_)));
        assert!(matches!(from_code(2067), Error::Internal(_)));
        assert!(matches!(
            Error::from(rusqlite::Error::QueryReturnedNoRows),
            Error::Internal(_)
        ));
    }

    #[test]
    fn a_storage_failure_is_unavailable_with_a_plain_message() {
        let status = Status::from(Error::Storage("disk I/O error in /secret/users.db".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "the database cannot be written right now; retry later"
        );
        assert!(Error::Storage(String::new()).is_storage_failure());
        assert!(!Error::Unavailable(String::new()).is_storage_failure());
    }
}
