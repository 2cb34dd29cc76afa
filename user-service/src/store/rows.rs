//! Rows as both engines read them back: the same columns, so one decoding.

use crate::{
    domain::{Action, Event, Field, User},
    error::Error,
};

/// A row of `events`, as `SELECT seq, action, user_id, first_name, last_name,
/// create_time, update_time, version, changed, commit_time` reads it.
#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    seq: i64,
    action: i64,
    user_id: i64,
    first_name: String,
    last_name: String,
    create_time: i64,
    update_time: i64,
    version: i64,
    changed: String,
    commit_time: i64,
}

impl EventRow {
    /// The event this row records; a row this service could not have written
    /// (an unknown action or field) is an internal error, not a guess.
    pub(super) fn into_event(self) -> Result<Event, Error> {
        let action = Action::from_code(self.action).ok_or_else(|| {
            Error::Internal(format!("event {} has action {}", self.seq, self.action))
        })?;
        let changed = self
            .changed
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|name| {
                Field::from_name(name).ok_or_else(|| {
                    Error::Internal(format!("event {} names field {name:?}", self.seq))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Event {
            seq: self.seq as u64,
            action,
            user: User {
                id: self.user_id,
                first_name: self.first_name,
                last_name: self.last_name,
                create_time: self.create_time,
                update_time: self.update_time,
                version: self.version,
            },
            changed,
            commit_time: self.commit_time,
        })
    }
}

/// Decodes `rows` in order.
pub(super) fn into_events(rows: Vec<EventRow>) -> Result<Vec<Event>, Error> {
    rows.into_iter().map(EventRow::into_event).collect()
}
