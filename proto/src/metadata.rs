//! Response metadata both services agree on: the user-service writes it, the
//! gateway reads it. Each key's writer and reader sit side by side here, so the
//! two sides cannot drift apart.

use tonic::metadata::{MetadataMap, MetadataValue};

/// On WatchUsers: the database's epoch, so a watcher knows whose seqs it
/// follows before the first event (on a quiet stream, there may be none).
pub const EPOCH: &str = "x-users-epoch";
/// On WatchUsers: the newest seq when the stream opened, so a watcher that
/// asked for no replay still knows where the live events start.
pub const HEAD_SEQ: &str = "x-users-head-seq";
/// On CreateUser, UpdateUser and DeleteUser: the seq of the event the write
/// recorded, so a caller can wait until that event has reached it. Absent when
/// the write recorded none (an update that changed no value).
pub const SEQ: &str = "x-users-seq";

/// Sets `key` to a seq: the writing side of [`seq`].
pub fn set_seq(metadata: &mut MetadataMap, key: &'static str, seq: u64) {
    metadata.insert(key, MetadataValue::from(seq));
}

/// The seq under `key`; `None` when absent or not a number, which a reader
/// takes as "no position given" rather than as a failed call.
pub fn seq(metadata: &MetadataMap, key: &str) -> Option<u64> {
    metadata.get(key)?.to_str().ok()?.parse().ok()
}

/// Sets the epoch; an epoch that is no valid metadata value (never one the
/// user-service makes) is left out rather than sent mangled.
pub fn set_epoch(metadata: &mut MetadataMap, epoch: &str) {
    if let Ok(value) = MetadataValue::try_from(epoch) {
        metadata.insert(EPOCH, value);
    }
}

/// The epoch; empty when absent (the caller then has none to check).
pub fn epoch(metadata: &MetadataMap) -> String {
    metadata
        .get(EPOCH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_side_writes_the_other_reads() {
        let mut metadata = MetadataMap::new();
        set_seq(&mut metadata, SEQ, 42);
        set_seq(&mut metadata, HEAD_SEQ, u64::MAX);
        set_epoch(&mut metadata, "0f6c2b1e-epoch");
        assert_eq!(seq(&metadata, SEQ), Some(42));
        assert_eq!(seq(&metadata, HEAD_SEQ), Some(u64::MAX));
        assert_eq!(epoch(&metadata), "0f6c2b1e-epoch");
    }

    #[test]
    fn absent_or_garbled_values_read_as_none() {
        let mut metadata = MetadataMap::new();
        assert_eq!(seq(&metadata, SEQ), None);
        assert_eq!(epoch(&metadata), "");
        metadata.insert(SEQ, MetadataValue::from_static("12a"));
        assert_eq!(seq(&metadata, SEQ), None);
        set_epoch(&mut metadata, "bad\nvalue");
        assert_eq!(epoch(&metadata), "");
    }
}
