//! The single writer: one task owns the only write connection and applies queued
//! writes in batches, one `BEGIN IMMEDIATE` transaction (so one fsync) per batch.
//! This is group commit: under load many changes share a commit, and a change is
//! still durable before it is answered.
//!
//! Each write runs inside its own savepoint, so one that fails (a missing user, a
//! stale version) is undone alone and the rest of its batch commits. Events are
//! announced to watchers in seq order, only after their batch has committed.

use std::sync::Arc;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{SELECT_USER_BY_ID, now_micros};
use crate::{
    domain::{Action, Changes, Event, Field, FieldViolation, User},
    error::Error,
};

/// Most writes committed together; bounds the time one batch holds the database.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

/// One change the writer can apply.
pub enum Write {
    Create {
        first_name: String,
        last_name: String,
    },
    /// `changes` carries the caller's validation result, reported only once the
    /// user is known to exist and its version matches (404, then 412, then 400).
    Update {
        id: i64,
        changes: Result<Changes, Vec<FieldViolation>>,
        expected_version: Option<i64>,
    },
    Delete {
        id: i64,
        expected_version: Option<i64>,
    },
    /// Records the relay's cursor.
    SetPublished { seq: u64 },
    /// Deletes events with a seq at most this; answers how many went.
    Prune { upto: u64 },
}

/// What a write answers.
pub enum Written {
    User(User),
    Count(u64),
}

/// Where committed events go: the live feed and the newest seq.
pub struct Feed {
    pub live: broadcast::Sender<Arc<Event>>,
    pub head: watch::Sender<u64>,
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, Error>>,
}

/// The way to the writer task; cheap to share.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on `conn`; it ends when every `Writer` is dropped.
    pub fn spawn(conn: SqliteConnection, feed: Arc<Feed>) -> Writer {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, queue, feed));
        Writer { jobs }
    }

    /// Queues `write` and waits until its batch has committed (or failed).
    pub async fn submit(&self, write: Write) -> Result<Written, Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| Error::Unavailable("the database writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the database writer dropped a write".into()))?
    }
}

async fn run(mut conn: SqliteConnection, mut queue: mpsc::Receiver<Job>, feed: Arc<Feed>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let jobs = std::mem::take(&mut batch);
        match commit_batch(&mut conn, &jobs).await {
            Ok((results, events)) => {
                for event in events {
                    let seq = event.seq;
                    // No receivers is fine: watchers read the table when they start.
                    let _ = feed.live.send(Arc::new(event));
                    feed.head.send_replace(seq);
                }
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, writes = jobs.len(), "a write batch failed; nothing of it was stored");
                for job in jobs {
                    let _ = job.reply.send(Err(copy_error(&error)));
                }
            }
        }
    }
}

/// Applies every job in one transaction. A job's own failure is its result; a
/// failure of the transaction itself fails the whole batch.
async fn commit_batch(
    conn: &mut SqliteConnection,
    jobs: &[Job],
) -> Result<(Vec<Result<Written, Error>>, Vec<Event>), Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for job in jobs {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        match apply(&mut tx, &job.write).await {
            Ok((written, event)) => {
                sqlx::query("RELEASE job").execute(&mut *tx).await?;
                results.push(Ok(written));
                events.extend(event);
            }
            Err(error) => {
                sqlx::query("ROLLBACK TO job").execute(&mut *tx).await?;
                sqlx::query("RELEASE job").execute(&mut *tx).await?;
                results.push(Err(error));
            }
        }
    }
    tx.commit().await?;
    Ok((results, events))
}

/// The error every job of a failed batch gets: the same kind, for each caller.
fn copy_error(error: &Error) -> Error {
    match error {
        Error::Unavailable(cause) => Error::Unavailable(cause.clone()),
        other => Error::Internal(other.to_string()),
    }
}

async fn apply(
    conn: &mut SqliteConnection,
    write: &Write,
) -> Result<(Written, Option<Event>), Error> {
    match write {
        Write::Create {
            first_name,
            last_name,
        } => {
            let now = now_micros();
            let user: User = sqlx::query_as(
                "INSERT INTO users (first_name, last_name, create_time, update_time, version)
                 VALUES (?, ?, ?, ?, 1)
                 RETURNING id, first_name, last_name, create_time, update_time, version",
            )
            .bind(first_name)
            .bind(last_name)
            .bind(now)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            let event = insert_event(conn, Action::Create, &user, Field::ALL.to_vec(), now).await?;
            Ok((Written::User(user), Some(event)))
        }
        Write::Update {
            id,
            changes,
            expected_version,
        } => {
            let mut user = fetch_user(conn, *id).await?;
            check_version(&user, *expected_version)?;
            let changes = changes
                .as_ref()
                .map_err(|violations| Error::Invalid(violations.clone()))?;
            let changed: Vec<Field> = Field::ALL
                .into_iter()
                .filter(|&f| changes.get(f).is_some_and(|v| v.as_str() != user.get(f)))
                .collect();
            if changed.is_empty() {
                return Ok((Written::User(user), None));
            }
            for &field in &changed {
                if let Some(value) = changes.get(field) {
                    user.set(field, value.as_str().to_owned());
                }
            }
            let now = now_micros();
            user.update_time = now;
            user.version += 1;
            sqlx::query(
                "UPDATE users SET first_name = ?, last_name = ?, update_time = ?, version = ?
                 WHERE id = ?",
            )
            .bind(&user.first_name)
            .bind(&user.last_name)
            .bind(user.update_time)
            .bind(user.version)
            .bind(user.id)
            .execute(&mut *conn)
            .await?;
            let event = insert_event(conn, Action::Update, &user, changed, now).await?;
            Ok((Written::User(user), Some(event)))
        }
        Write::Delete {
            id,
            expected_version,
        } => {
            let user = fetch_user(conn, *id).await?;
            check_version(&user, *expected_version)?;
            sqlx::query("DELETE FROM users WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let event = insert_event(
                conn,
                Action::Delete,
                &user,
                Field::ALL.to_vec(),
                now_micros(),
            )
            .await?;
            Ok((Written::User(user), Some(event)))
        }
        Write::SetPublished { seq } => {
            sqlx::query("UPDATE meta SET value = ? WHERE key = 'published_seq'")
                .bind(seq.to_string())
                .execute(&mut *conn)
                .await?;
            Ok((Written::Count(0), None))
        }
        Write::Prune { upto } => {
            let done = sqlx::query("DELETE FROM events WHERE seq <= ?")
                .bind(*upto as i64)
                .execute(&mut *conn)
                .await?;
            Ok((Written::Count(done.rows_affected()), None))
        }
    }
}

async fn fetch_user(conn: &mut SqliteConnection, id: i64) -> Result<User, Error> {
    sqlx::query_as(SELECT_USER_BY_ID)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound)
}

fn check_version(user: &User, expected: Option<i64>) -> Result<(), Error> {
    match expected {
        Some(expected) if expected != user.version => Err(Error::VersionMismatch {
            expected,
            current: user.version,
        }),
        _ => Ok(()),
    }
}

async fn insert_event(
    conn: &mut SqliteConnection,
    action: Action,
    user: &User,
    changed: Vec<Field>,
    commit_time: i64,
) -> Result<Event, Error> {
    let changed_text = changed
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO events (action, user_id, first_name, last_name, create_time, update_time,
                             version, changed, commit_time)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(action as i64)
    .bind(user.id)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(user.create_time)
    .bind(user.update_time)
    .bind(user.version)
    .bind(changed_text)
    .bind(commit_time)
    .fetch_one(conn)
    .await?;
    Ok(Event {
        seq: seq as u64,
        action,
        user: user.clone(),
        changed,
        commit_time,
    })
}
