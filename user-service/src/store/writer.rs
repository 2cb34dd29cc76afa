//! The single writer: one task owns the only write connection and applies queued
//! writes in batches, one `BEGIN IMMEDIATE` transaction (so one fsync) per batch.
//! This is group commit: under load many changes share a commit, and a change is
//! still durable before it is answered.
//!
//! A write refused for what it asks (a missing user, a stale version, an invalid
//! value) is refused before it changes anything, so it fails alone and the rest
//! of its batch commits; any other failure fails the whole batch. Events are
//! announced to watchers in seq order, only after their batch has committed.
//!
//! When the disk refuses a write (full, read-only, I/O error), the whole batch is
//! rolled back and failed, the writer says it is not writable (health turns
//! NOT_SERVING), reopens its connection, and tries a tiny real write every
//! [`PROBE_INTERVAL`] until one commits; queued writes are still attempted, so the
//! first one after the disk recovers succeeds too.

use std::{collections::HashMap, sync::Arc, time::Duration};

use sqlx::{Connection, SqliteConnection, sqlite::SqliteConnectOptions};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{SELECT_USER_BY_ID, cache::UserCache, now_micros};
use crate::{
    domain::{Action, Changes, Event, Field, FieldViolation, User},
    error::Error,
};

/// Most writes committed together; bounds the time one batch holds the database.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// How often a writer that cannot write tries again when no write comes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

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

impl Write {
    /// The existing user this write may change (creates make a new one).
    fn user_id(&self) -> Option<i64> {
        match self {
            Write::Update { id, .. } | Write::Delete { id, .. } => Some(*id),
            _ => None,
        }
    }
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
    writable: watch::Receiver<bool>,
}

impl Writer {
    /// Starts the writer task on `conn`, which it reopens with `options` after a
    /// failed transaction; it ends when every `Writer` is dropped.
    pub fn spawn(
        conn: SqliteConnection,
        options: SqliteConnectOptions,
        feed: Arc<Feed>,
        cache: UserCache,
    ) -> Writer {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (writable_tx, writable) = watch::channel(true);
        let link = Link {
            conn: Some(conn),
            // Reopening must never make an empty database where ours went missing.
            options: options.create_if_missing(false),
        };
        tokio::spawn(run(link, queue, feed, cache, writable_tx));
        Writer { jobs, writable }
    }

    /// Follows whether the last write (or probe) reached the disk: `false` from a
    /// storage failure until a write commits again.
    pub fn watch_writable(&self) -> watch::Receiver<bool> {
        self.writable.clone()
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

/// The write connection. It is reopened after any failed transaction: when a
/// COMMIT fails (a full disk, an I/O error) SQLite has already rolled back, but
/// sqlx still counts the transaction as open, its ROLLBACK fails, and every later
/// `BEGIN IMMEDIATE` on that connection would be refused.
struct Link {
    conn: Option<SqliteConnection>,
    options: SqliteConnectOptions,
}

impl Link {
    /// The connection, reopened first if the last transaction failed.
    async fn get(&mut self) -> Result<&mut SqliteConnection, Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => SqliteConnection::connect_with(&self.options).await?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Drops the connection after a failed transaction; the next use reopens it.
    async fn reset(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing runs the rollback sqlx queued; its failure changes nothing.
            let _ = conn.close().await;
        }
    }
}

async fn run(
    mut link: Link,
    mut queue: mpsc::Receiver<Job>,
    feed: Arc<Feed>,
    cache: UserCache,
    writable: watch::Sender<bool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let failing = !*writable.borrow();
        tokio::select! {
            received = queue.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    return;
                }
            }
            _ = probe.tick(), if failing => {
                let probed = match link.get().await {
                    Ok(conn) => probe_write(conn).await,
                    Err(error) => Err(error),
                };
                match probed {
                    Ok(()) => set_writable(&writable, true, None),
                    Err(error) => {
                        tracing::debug!(%error, "the database still cannot be written");
                        link.reset().await;
                    }
                }
                continue;
            }
        }
        let jobs = std::mem::take(&mut batch);
        // What the cache knows is what is committed (the writer keeps it so):
        // those users need not be read again before they are changed.
        let mut rows = Rows::new();
        for id in jobs.iter().filter_map(|job| job.write.user_id()) {
            if let Some(user) = cache.get(id) {
                rows.insert(id, Some(User::clone(&user)));
            }
        }
        cache.begin_writes(jobs.iter().filter_map(|job| job.write.user_id()));
        let committed = match link.get().await {
            Ok(conn) => commit_batch(conn, &jobs, rows).await,
            Err(error) => Err(error),
        };
        match committed {
            Ok((results, events)) => {
                set_writable(&writable, true, None);
                // Before anyone hears of the change: a reader told of it reads it.
                for (job, result) in jobs.iter().zip(&results) {
                    if let Some(id) = job.write.user_id() {
                        let kept = match (&job.write, result) {
                            (Write::Update { .. }, Ok(Written::User(user))) => Some(user),
                            _ => None,
                        };
                        cache.end_write(id, kept);
                    }
                }
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
                link.reset().await;
                if error.is_storage_failure() {
                    set_writable(&writable, false, Some(&error));
                    probe.reset();
                }
                for job in jobs {
                    if let Some(id) = job.write.user_id() {
                        cache.end_write(id, None);
                    }
                    let _ = job.reply.send(Err(copy_error(&error)));
                }
            }
        }
    }
}

/// Records whether the disk takes writes, logging only the changes.
fn set_writable(writable: &watch::Sender<bool>, now: bool, cause: Option<&Error>) {
    let changed = writable.send_if_modified(|was| std::mem::replace(was, now) != now);
    match (changed, now) {
        (true, true) => tracing::info!("the database takes writes again; health SERVING"),
        (true, false) => tracing::error!(
            error = %cause.map(ToString::to_string).unwrap_or_default(),
            "the database cannot be written; health NOT_SERVING, writes fail with UNAVAILABLE until a write succeeds (retried every second)"
        ),
        _ => {}
    }
}

/// A tiny real write that must reach the disk: one meta row rewritten with a new
/// value in its own committed (and, with full durability, fsynced) transaction.
async fn probe_write(conn: &mut SqliteConnection) -> Result<(), Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('write_probe', ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(now_micros().to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Applies every job in one transaction. A job's own failure is its result; a
/// failure of the transaction itself, or of the storage under any job, fails the
/// whole batch (SQLite may already have rolled the transaction back).
async fn commit_batch(
    conn: &mut SqliteConnection,
    jobs: &[Job],
    mut rows: Rows,
) -> Result<(Vec<Result<Written, Error>>, Vec<Event>), Error> {
    let started = std::time::Instant::now();
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for job in jobs {
        match apply(&mut tx, &job.write, &rows).await {
            Ok((written, event)) => {
                if let Written::User(user) = &written {
                    let now = !matches!(job.write, Write::Delete { .. });
                    rows.insert(user.id, now.then(|| user.clone()));
                }
                results.push(Ok(written));
                events.extend(event);
            }
            // `apply` refuses before a job's first change, so a refused job left
            // nothing to undo: no savepoint per job (two statements fewer each).
            Err(error) if error.is_refusal() => results.push(Err(error)),
            // Anything else may have left the job half-applied: the batch goes.
            Err(error) => return Err(error),
        }
    }
    tx.commit().await?;
    crate::metrics::write_batch(jobs.len(), started);
    Ok((results, events))
}

/// The error every job of a failed batch gets: the same kind, for each caller.
fn copy_error(error: &Error) -> Error {
    match error {
        Error::Unavailable(cause) => Error::Unavailable(cause.clone()),
        Error::Storage(cause) => Error::Storage(cause.clone()),
        other => Error::Internal(other.to_string()),
    }
}

/// Users as this batch has them so far, by id (`None`: deleted in this batch);
/// an id missing here is read from the database.
type Rows = HashMap<i64, Option<User>>;

/// The user as committed or as changed earlier in this batch.
async fn current_user(conn: &mut SqliteConnection, rows: &Rows, id: i64) -> Result<User, Error> {
    match rows.get(&id) {
        Some(Some(user)) => Ok(user.clone()),
        Some(None) => Err(Error::NotFound),
        None => fetch_user(conn, id).await,
    }
}

async fn apply(
    conn: &mut SqliteConnection,
    write: &Write,
    rows: &Rows,
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
            let mut user = current_user(conn, rows, *id).await?;
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
            let user = current_user(conn, rows, *id).await?;
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
