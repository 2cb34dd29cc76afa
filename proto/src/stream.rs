//! The Redis stream of events: the user-service's relay appends one entry per
//! committed event, in seq order, and every gateway reads the stream to feed its
//! sockets. Neither side sees the other's code, so the key, the entry ids and the
//! fields are defined here, with the encoder and the decoder side by side.
//!
//! An entry's id is `<seq>-0`: Redis keeps a stream ordered by id and refuses
//! an id at or below the newest, so the id alone puts events in seq order, tells
//! a reader where to resume (`XREAD … <seq>-0`) and lets the relay see what is
//! already there. Its fields are [`EPOCH_FIELD`] (the database's epoch, readable
//! without decoding the event, so the relay's append script can tell another
//! database's stream) and [`EVENT_FIELD`] (the protobuf-encoded
//! `users.v1.UserEvent`).

use prost::Message;

use crate::v1::UserEvent;

/// The stream's key when none is configured: both services default to it, so
/// a deployment that sets neither still has them meet.
pub const DEFAULT_KEY: &str = "users:events";
/// The field holding the database's epoch (UTF-8), beside the event so the
/// relay's append script can compare epochs without decoding protobuf.
pub const EPOCH_FIELD: &str = "epoch";
/// The field holding the protobuf-encoded `users.v1.UserEvent`: the message
/// WatchUsers streams, so a gateway handles events alike from either source.
pub const EVENT_FIELD: &str = "event";

/// The id of the entry of event `seq`: the writing side of [`entry_seq`].
pub fn entry_id(seq: u64) -> String {
    format!("{seq}-0")
}

/// The seq of the entry `id` (`<seq>-<n>`); `None` when the id does not start
/// with one, which no entry the relay wrote does.
pub fn entry_seq(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// One event as the relay appends it: the writing side of [`decode`]. The epoch
/// is borrowed from the event, as one batch of entries all carry the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// [`entry_id`] of the event's seq.
    pub id: String,
    /// The value of [`EPOCH_FIELD`].
    pub epoch: &'a str,
    /// The value of [`EVENT_FIELD`].
    pub event: Vec<u8>,
}

impl Entry<'_> {
    /// The fields, name then value, in the order `XADD` takes them, for writers
    /// that append one entry at a time.
    pub fn fields(&self) -> [(&'static str, &[u8]); 2] {
        [
            (EPOCH_FIELD, self.epoch.as_bytes()),
            (EVENT_FIELD, &self.event),
        ]
    }
}

/// The entry that carries `event`, its id made of the event's seq so the
/// stream is ordered as the log is.
pub fn encode(event: &UserEvent) -> Entry<'_> {
    Entry {
        id: entry_id(event.seq),
        epoch: &event.epoch,
        event: event.encode_to_vec(),
    }
}

/// Why an entry could not be read; the reader skips it (no entry the relay
/// wrote is one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedEntry(&'static str);

impl std::fmt::Display for MalformedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for MalformedEntry {}

/// The seq and event of the entry `id` whose fields `field` looks up by name
/// (however the Redis client holds them). The id and [`EPOCH_FIELD`] are what
/// the stream is ordered and checked by, so they are the event's seq and epoch
/// whatever the encoded event says (the relay writes them the same).
pub fn decode<'a>(
    id: &str,
    field: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<(u64, UserEvent), MalformedEntry> {
    let seq = entry_seq(id).ok_or(MalformedEntry("the entry id does not start with a seq"))?;
    let epoch = field(EPOCH_FIELD).ok_or(MalformedEntry("the entry has no epoch field"))?;
    let epoch =
        std::str::from_utf8(epoch).map_err(|_| MalformedEntry("the entry's epoch is not UTF-8"))?;
    let event = field(EVENT_FIELD).ok_or(MalformedEntry("the entry has no event field"))?;
    let mut event = UserEvent::decode(event)
        .map_err(|_| MalformedEntry("the entry's event is not a users.v1.UserEvent"))?;
    event.seq = seq;
    epoch.clone_into(&mut event.epoch);
    Ok((seq, event))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::v1::{Action, User};

    /// The fields of `entry` as a reader gets them back from Redis.
    fn stored(entry: &Entry<'_>) -> HashMap<String, Vec<u8>> {
        entry
            .fields()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_vec()))
            .collect()
    }

    fn read(
        id: &str,
        fields: &HashMap<String, Vec<u8>>,
    ) -> Result<(u64, UserEvent), MalformedEntry> {
        decode(id, |name| fields.get(name).map(Vec::as_slice))
    }

    #[test]
    fn what_the_relay_writes_a_reader_reads() {
        let event = UserEvent {
            seq: 42,
            epoch: "0f6c2b1e".into(),
            action: Action::Update as i32,
            user: Some(User {
                id: 7,
                first_name: Some("Ada".into()),
                version: 2,
                ..Default::default()
            }),
            changed_fields: vec!["first_name".into()],
            ..Default::default()
        };
        let entry = encode(&event);
        assert_eq!(entry.id, "42-0");
        assert_eq!(read(&entry.id, &stored(&entry)), Ok((42, event)));
    }

    #[test]
    fn entry_ids_round_trip_their_seq() {
        for seq in [0, 1, 42, u64::MAX] {
            assert_eq!(entry_seq(&entry_id(seq)), Some(seq));
        }
        assert_eq!(entry_seq("7-3"), Some(7));
        assert_eq!(entry_seq("x-0"), None);
        assert_eq!(entry_seq(""), None);
    }

    #[test]
    fn the_id_and_epoch_field_win_over_the_encoded_event() {
        let event = UserEvent {
            seq: 1,
            ..Default::default()
        };
        let mut fields = stored(&encode(&event));
        fields.insert(EPOCH_FIELD.into(), b"e2".to_vec());
        let (seq, read) = read("5-0", &fields).unwrap();
        assert_eq!((seq, read.seq, read.epoch.as_str()), (5, 5, "e2"));
    }

    #[test]
    fn malformed_entries_are_refused() {
        let event = UserEvent {
            seq: 3,
            epoch: "e1".into(),
            ..Default::default()
        };
        let good = stored(&encode(&event));
        assert!(read("x-0", &good).is_err());
        for name in [EPOCH_FIELD, EVENT_FIELD] {
            let mut missing = good.clone();
            missing.remove(name);
            assert!(read("3-0", &missing).is_err(), "without {name}");
        }
        let mut garbled = good.clone();
        garbled.insert(EVENT_FIELD.into(), vec![0xff, 0xff]);
        assert!(read("3-0", &garbled).is_err());
        let mut not_text = good;
        not_text.insert(EPOCH_FIELD.into(), vec![0xff]);
        assert!(read("3-0", &not_text).is_err());
    }

    /// Entries already on a stream outlive a release: a reader of the next one
    /// must still find them where they are.
    #[test]
    fn the_names_on_the_wire_stay_as_they_are() {
        assert_eq!(
            [DEFAULT_KEY, EPOCH_FIELD, EVENT_FIELD],
            ["users:events", "epoch", "event"]
        );
    }
}
