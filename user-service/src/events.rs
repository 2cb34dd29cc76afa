//! Turns stored users and events into their wire form, the same for gRPC watchers
//! and for the Redis stream, so both carry identical events.

use prost_types::Timestamp;
use users_proto::v1 as pb;

use crate::domain::{Action, Event, User};

/// A stored timestamp (microseconds since the Unix epoch) as a protobuf Timestamp.
pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A stored user in its wire form.
pub fn user_to_proto(user: &User) -> pb::User {
    pb::User {
        id: user.id,
        first_name: Some(user.first_name.clone()),
        last_name: Some(user.last_name.clone()),
        create_time: Some(timestamp(user.create_time)),
        update_time: Some(timestamp(user.update_time)),
        version: user.version,
    }
}

/// A committed event in its wire form, stamped with the database's epoch.
pub fn event_to_proto(event: &Event, epoch: &str) -> pb::UserEvent {
    let action = match event.action {
        Action::Create => pb::Action::Create,
        Action::Update => pb::Action::Update,
        Action::Delete => pb::Action::Delete,
    };
    pb::UserEvent {
        seq: event.seq,
        epoch: epoch.to_owned(),
        action: action as i32,
        user: Some(user_to_proto(&event.user)),
        changed_fields: event
            .changed
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect(),
        commit_time: Some(timestamp(event.commit_time)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_become_seconds_and_nanos() {
        assert_eq!(
            timestamp(1_768_298_400_123_456),
            Timestamp {
                seconds: 1_768_298_400,
                nanos: 123_456_000
            }
        );
    }

    #[test]
    fn times_before_1970_keep_nanos_positive() {
        assert_eq!(
            timestamp(-1),
            Timestamp {
                seconds: -1,
                nanos: 999_999_000
            }
        );
    }
}
