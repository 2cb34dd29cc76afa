//! The google.rpc.ErrorInfo of refused calls: the user-service names why it
//! refused (a `reason`, and facts under ErrorInfo metadata keys) and the gateway
//! acts on them (a lost WatchUsers position means a resync; a version mismatch
//! names the current version in its 412). The status code alone cannot tell
//! these apart, so the reasons and keys are part of the contract, written here
//! once; docs/grpc.md and users.proto document the same strings to other callers.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every ErrorInfo the user-service sends: ErrorInfo reasons
/// are unique only within a domain.
pub const DOMAIN: &str = "users.v1";

/// FAILED_PRECONDITION: `expected_version` is not the user's version, so the
/// caller's copy is stale; [`CURRENT_VERSION_KEY`] says what it is now.
pub const VERSION_MISMATCH: &str = "VERSION_MISMATCH";
/// FAILED_PRECONDITION on WatchUsers: the epoch given is not this database's,
/// so the caller's seqs mean nothing here and it must resync.
pub const EPOCH_MISMATCH: &str = "EPOCH_MISMATCH";
/// OUT_OF_RANGE on WatchUsers: events after `since_seq` were pruned, so the
/// caller cannot catch up by replay and must resync.
pub const SEQ_EXPIRED: &str = "SEQ_EXPIRED";
/// OUT_OF_RANGE on WatchUsers: `since_seq` is newer than any event recorded,
/// so the caller's position is in no log this database has written.
pub const SEQ_AHEAD: &str = "SEQ_AHEAD";

/// With [`VERSION_MISMATCH`]: the version the caller expected.
pub const EXPECTED_VERSION_KEY: &str = "expected_version";
/// With [`VERSION_MISMATCH`]: the user's version now, so a client can say what
/// it conflicted with without another read.
pub const CURRENT_VERSION_KEY: &str = "current_version";
/// With [`EPOCH_MISMATCH`]: this database's epoch, to resync against.
pub const EPOCH_KEY: &str = "epoch";
/// With [`SEQ_EXPIRED`]: the oldest seq still kept.
pub const OLDEST_SEQ_KEY: &str = "oldest_seq";
/// With [`SEQ_AHEAD`]: the newest seq recorded.
pub const HEAD_SEQ_KEY: &str = "head_seq";

/// A refusal with `code`, `message` and an ErrorInfo of this [`DOMAIN`] naming
/// `reason` (one of the constants above) and the facts in `metadata`: the
/// writing side of [`reason`] and [`metadata`].
pub fn status<const N: usize>(
    code: Code,
    message: impl Into<String>,
    reason: &'static str,
    metadata: [(&'static str, String); N],
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, metadata),
    )
}

/// The ErrorInfo reason of `status`; `None` when it carries no ErrorInfo (a
/// status made by the transport, or by a server that is not the user-service).
pub fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// The value of `key` in the ErrorInfo metadata of `status`, if both are there.
pub fn metadata(status: &Status, key: &str) -> Option<String> {
    status
        .get_details_error_info()
        .and_then(|mut info| info.metadata.remove(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_side_writes_the_other_reads() {
        let refused = status(
            Code::FailedPrecondition,
            "stale",
            VERSION_MISMATCH,
            [
                (EXPECTED_VERSION_KEY, "1".into()),
                (CURRENT_VERSION_KEY, "3".into()),
            ],
        );
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(refused.message(), "stale");
        assert_eq!(reason(&refused).as_deref(), Some(VERSION_MISMATCH));
        assert_eq!(
            metadata(&refused, CURRENT_VERSION_KEY).as_deref(),
            Some("3")
        );
        assert_eq!(
            metadata(&refused, EXPECTED_VERSION_KEY).as_deref(),
            Some("1")
        );
        assert_eq!(metadata(&refused, HEAD_SEQ_KEY), None);
        assert_eq!(refused.get_details_error_info().unwrap().domain, DOMAIN);
        for (reason_sent, key) in [
            (EPOCH_MISMATCH, EPOCH_KEY),
            (SEQ_EXPIRED, OLDEST_SEQ_KEY),
            (SEQ_AHEAD, HEAD_SEQ_KEY),
        ] {
            let refused = status(Code::OutOfRange, "x", reason_sent, [(key, "7".into())]);
            assert_eq!(reason(&refused).as_deref(), Some(reason_sent));
            assert_eq!(metadata(&refused, key).as_deref(), Some("7"));
        }
    }

    #[test]
    fn a_status_without_error_info_has_no_reason() {
        let plain = Status::unavailable("down");
        assert_eq!(reason(&plain), None);
        assert_eq!(metadata(&plain, CURRENT_VERSION_KEY), None);
    }

    /// Clients other than the gateway match the reasons (docs/grpc.md and
    /// users.proto name them), and a gateway of the previous release reads the
    /// keys during a rolling upgrade: changing one breaks the API.
    #[test]
    fn the_strings_on_the_wire_stay_as_documented() {
        assert_eq!(DOMAIN, "users.v1");
        assert_eq!(
            [VERSION_MISMATCH, EPOCH_MISMATCH, SEQ_EXPIRED, SEQ_AHEAD],
            [
                "VERSION_MISMATCH",
                "EPOCH_MISMATCH",
                "SEQ_EXPIRED",
                "SEQ_AHEAD"
            ]
        );
        assert_eq!(
            [
                EXPECTED_VERSION_KEY,
                CURRENT_VERSION_KEY,
                EPOCH_KEY,
                OLDEST_SEQ_KEY,
                HEAD_SEQ_KEY
            ],
            [
                "expected_version",
                "current_version",
                "epoch",
                "oldest_seq",
                "head_seq"
            ]
        );
    }
}
