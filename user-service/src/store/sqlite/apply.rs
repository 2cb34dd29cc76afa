//! What each write does to the database: the statements of a create, an update,
//! a delete, the relay's cursor and a prune, run by the writer inside its batch's
//! transaction. A write is refused (missing user, stale version, invalid value)
//! before its first statement, so a refused write leaves nothing to undo and the
//! rest of its batch can commit.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::{
    domain::{Action, Event, Field, User, now_micros},
    error::Error,
    store::change::{Step, UserWrite, changed_text, decide},
};

/// The one query that reads a user by id: the read pool's `GetUser` and the
/// writer read rows the same way, so both build a [`User`] from the same
/// columns.
pub(super) const SELECT_USER_BY_ID: &str =
    "SELECT id, first_name, last_name, create_time, update_time, version FROM users WHERE id = ?";

/// One change the writer can apply: queued as a value, so a batch is a list
/// of them applied in one transaction.
pub enum Write {
    /// A create, update or delete of a user.
    User(UserWrite),
    /// Records the relay's cursor.
    SetPublished { seq: u64 },
    /// Deletes events with a seq at most this; answers how many went.
    Prune { upto: u64 },
    /// Gives the database a new random epoch; answers it.
    NewEpoch,
}

impl Write {
    /// The existing user this write may change (creates make a new one).
    pub(super) fn user_id(&self) -> Option<i64> {
        match self {
            Write::User(write) => write.user_id(),
            _ => None,
        }
    }
}

/// What a write answers.
pub enum Written {
    /// The user as written, and the seq of the event the write recorded (`None`
    /// when it changed nothing, so recorded none).
    User(User, Option<u64>),
    /// How many rows a maintenance write changed (a prune: events deleted).
    Count(u64),
    /// The database's new epoch.
    Epoch(String),
}

/// A tiny real write that must reach the disk: one meta row rewritten with a new
/// value in its own committed (and, with full durability, fsynced) transaction.
pub(super) fn probe_write(conn: &mut Connection) -> Result<(), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('write_probe', ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![now_micros().to_string()])?;
    tx.commit()?;
    Ok(())
}

/// Users as this batch has them so far, by id (`None`: deleted in this batch);
/// an id missing here is read from the database.
pub(super) type Rows = HashMap<i64, Option<User>>;

/// The user as committed or as changed earlier in this batch (`None`: there
/// is none).
fn current_user(conn: &Connection, rows: &Rows, id: i64) -> Result<Option<User>, Error> {
    match rows.get(&id) {
        Some(user) => Ok(user.clone()),
        None => fetch_user(conn, id),
    }
}

/// Runs `write` in the batch's open transaction, refusing it before its first
/// statement when it cannot apply; returns its answer and the event it
/// recorded, which is announced only once the batch commits.
pub(super) fn apply(
    conn: &Connection,
    write: &Write,
    rows: &Rows,
) -> Result<(Written, Option<Event>), Error> {
    match write {
        Write::User(UserWrite::Create {
            first_name,
            last_name,
        }) => {
            let now = now_micros();
            let user = conn
                .prepare_cached(
                    "INSERT INTO users (first_name, last_name, create_time, update_time, version)
                     VALUES (?, ?, ?, ?, 1)
                     RETURNING id, first_name, last_name, create_time, update_time, version",
                )?
                .query_row(params![first_name, last_name, now, now], user_from_row)?;
            let event = insert_event(conn, Action::Create, &user, Field::ALL.to_vec(), now)?;
            Ok((Written::User(user, Some(event.seq)), Some(event)))
        }
        Write::User(write) => {
            let id = write.user_id().unwrap_or_default();
            let now = now_micros();
            match decide(write, current_user(conn, rows, id)?, now)? {
                Step::Unchanged(user) => Ok((Written::User(user, None), None)),
                Step::Update(user, changed) => {
                    conn.prepare_cached(
                        "UPDATE users SET first_name = ?, last_name = ?, update_time = ?, version = ?
                         WHERE id = ?",
                    )?
                    .execute(params![
                        user.first_name,
                        user.last_name,
                        user.update_time,
                        user.version,
                        user.id
                    ])?;
                    let event = insert_event(conn, Action::Update, &user, changed, now)?;
                    Ok((Written::User(user, Some(event.seq)), Some(event)))
                }
                Step::Delete(user) => {
                    conn.prepare_cached("DELETE FROM users WHERE id = ?")?
                        .execute(params![id])?;
                    let event =
                        insert_event(conn, Action::Delete, &user, Field::ALL.to_vec(), now)?;
                    Ok((Written::User(user, Some(event.seq)), Some(event)))
                }
            }
        }
        Write::SetPublished { seq } => {
            conn.prepare_cached("UPDATE meta SET value = ? WHERE key = 'published_seq'")?
                .execute(params![seq.to_string()])?;
            Ok((Written::Count(0), None))
        }
        Write::Prune { upto } => {
            let deleted = conn
                .prepare_cached("DELETE FROM events WHERE seq <= ?")?
                .execute(params![*upto as i64])?;
            Ok((Written::Count(deleted as u64), None))
        }
        Write::NewEpoch => {
            let epoch = conn
                .prepare_cached(
                    "UPDATE meta SET value = lower(hex(randomblob(16))) WHERE key = 'epoch'
                     RETURNING value",
                )?
                .query_row([], |row| row.get(0))?;
            Ok((Written::Epoch(epoch), None))
        }
    }
}

fn fetch_user(conn: &Connection, id: i64) -> Result<Option<User>, Error> {
    Ok(conn
        .prepare_cached(SELECT_USER_BY_ID)?
        .query_row(params![id], user_from_row)
        .optional()?)
}

/// A user from a row of `id, first_name, last_name, create_time, update_time,
/// version`.
fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        first_name: row.get(1)?,
        last_name: row.get(2)?,
        create_time: row.get(3)?,
        update_time: row.get(4)?,
        version: row.get(5)?,
    })
}

fn insert_event(
    conn: &Connection,
    action: Action,
    user: &User,
    changed: Vec<Field>,
    commit_time: i64,
) -> Result<Event, Error> {
    let changed_text = changed_text(&changed);
    let seq: i64 = conn
        .prepare_cached(
            "INSERT INTO events (action, user_id, first_name, last_name, create_time, update_time,
                                 version, changed, commit_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        )?
        .query_row(
            params![
                action as i64,
                user.id,
                user.first_name,
                user.last_name,
                user.create_time,
                user.update_time,
                user.version,
                changed_text,
                commit_time
            ],
            |row| row.get(0),
        )?;
    Ok(Event {
        seq: seq as u64,
        action,
        user: user.clone(),
        changed,
        commit_time,
    })
}
