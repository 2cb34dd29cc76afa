//! The single writer: one task owns the only write connection and applies queued
//! writes in batches, one `BEGIN IMMEDIATE` transaction (so one fsync) per batch.
//! This is group commit: under load many changes share a commit, and a change is
//! still durable before it is answered.
//!
//! A batch runs on a blocking thread through rusqlite, start to end: SQLite is
//! called in place, statement after statement, and the callers are answered from
//! there. The writer does not use sqlx, as the reads do: sqlx sends every
//! statement to its connection's own thread and back, two thread switches per
//! statement and four statements per change, and under write load those
//! switches would cost more than the writes.
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

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    apply::{Rows, Write, Written, apply, probe_write},
    cache::UserCache,
    connection::{BUSY_TIMEOUT, Durability, pragmas},
};
use crate::{
    domain::{Event, User},
    error::Error,
    store::{change::UserWrite, feed::Feed, spans},
};

/// Most writes committed together; bounds the time one batch holds the database.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// How often a writer that cannot write tries again when no write comes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, Error>>,
    /// The caller's span (its `rpc`), which the batch's span joins.
    span: tracing::Span,
}

/// The way to the writer task; cheap to share.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    writable: watch::Receiver<bool>,
}

impl Writer {
    /// Opens the write connection to the database file at `path` (which must
    /// exist, migrated) and starts the writer task; it ends when every `Writer`
    /// is dropped.
    pub fn spawn(
        path: PathBuf,
        durability: Durability,
        feed: Arc<Feed>,
        cache: UserCache,
    ) -> Result<Writer, Error> {
        let mut link = Link {
            conn: None,
            path,
            durability,
        };
        link.get()?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (writable_tx, writable) = watch::channel(true);
        let committer = Committer {
            link,
            feed,
            cache,
            writable: writable_tx,
        };
        tokio::spawn(run(committer, queue));
        Ok(Writer { jobs, writable })
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
            .send(Job {
                write,
                reply,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| Error::Unavailable("the database writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the database writer dropped a write".into()))?
    }
}

/// The write connection. It is reopened after any failed transaction, so a
/// connection SQLite left in an unknown state (a COMMIT that failed on a full
/// disk, an I/O error) is never used again.
struct Link {
    conn: Option<Connection>,
    path: PathBuf,
    durability: Durability,
}

impl Link {
    /// The connection, reopened first if the last transaction failed.
    fn get(&mut self) -> Result<&mut Connection, Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.open()?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Opens the connection with the settings every write relies on. Never
    /// creates the file: a database that went missing must not come back empty.
    fn open(&self) -> Result<Connection, Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        for (name, value) in pragmas(self.durability) {
            conn.pragma_update(None, name, value)?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Internal(format!(
                "the database stays in journal mode {mode:?}, not WAL"
            )));
        }
        Ok(conn)
    }

    /// Drops the connection after a failed transaction; the next use reopens it.
    fn reset(&mut self) {
        // Dropping it rolls back whatever SQLite still holds open.
        self.conn = None;
    }
}

/// Everything a batch needs on its blocking thread: the connection, and where
/// its outcome goes (the cache, the feed, whether the disk takes writes).
struct Committer {
    link: Link,
    feed: Arc<Feed>,
    cache: UserCache,
    writable: watch::Sender<bool>,
}

async fn run(mut committer: Committer, mut queue: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let failing = !*committer.writable.borrow();
        tokio::select! {
            received = queue.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    return;
                }
                let jobs = std::mem::take(&mut batch);
                committer = match blocking(committer, move |c| c.commit(jobs)).await {
                    Some((committer, storage_failed)) => {
                        if storage_failed {
                            probe.reset();
                        }
                        committer
                    }
                    None => return,
                };
            }
            _ = probe.tick(), if failing => {
                committer = match blocking(committer, |c| c.probe()).await {
                    Some((committer, ())) => committer,
                    None => return,
                };
            }
        }
    }
}

/// Runs `work` on a blocking thread (SQLite blocks on the disk) and hands the
/// committer back; `None` if `work` panicked, which stops the writer: callers
/// then get UNAVAILABLE instead of a writer in an unknown state.
async fn blocking<T: Send + 'static>(
    mut committer: Committer,
    work: impl FnOnce(&mut Committer) -> T + Send + 'static,
) -> Option<(Committer, T)> {
    let done = tokio::task::spawn_blocking(move || {
        let out = work(&mut committer);
        (committer, out)
    })
    .await;
    match done {
        Ok(done) => Some(done),
        Err(error) => {
            tracing::error!(%error, "the database writer failed; writes are refused from now on");
            None
        }
    }
}

impl Committer {
    /// Commits `jobs` as one batch and answers each; `true` when the storage
    /// refused the batch (the writer is then not writable).
    fn commit(&mut self, jobs: Vec<Job>) -> bool {
        let cache = &self.cache;
        // What the cache knows is what is committed (the writer keeps it so):
        // those users need not be read again before they are changed.
        let mut rows = Rows::new();
        for id in jobs.iter().filter_map(|job| job.write.user_id()) {
            if let Some(user) = cache.get(id) {
                rows.insert(id, Some(User::clone(&user)));
            }
        }
        cache.begin_writes(jobs.iter().filter_map(|job| job.write.user_id()));
        let batch = spans::batch(jobs.iter().map(|job| &job.span));
        let _in_batch = batch.enter();
        let committed = self
            .link
            .get()
            .and_then(|conn| commit_batch(conn, &jobs, rows));
        match committed {
            Ok((results, events)) => {
                set_writable(&self.writable, true, None);
                // Before anyone hears of the change: a reader told of it reads it.
                for (job, result) in jobs.iter().zip(&results) {
                    if let Some(id) = job.write.user_id() {
                        let kept = match (&job.write, result) {
                            (Write::User(UserWrite::Update { .. }), Ok(Written::User(user, _))) => {
                                Some(user)
                            }
                            _ => None,
                        };
                        cache.end_write(id, kept);
                    }
                }
                for event in events {
                    self.feed.announce(event);
                }
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
                false
            }
            Err(error) => {
                tracing::warn!(%error, writes = jobs.len(), "a write batch failed; nothing of it was stored");
                self.link.reset();
                let storage_failed = error.is_storage_failure();
                if storage_failed {
                    set_writable(&self.writable, false, Some(&error));
                }
                for job in jobs {
                    if let Some(id) = job.write.user_id() {
                        cache.end_write(id, None);
                    }
                    let _ = job.reply.send(Err(copy_error(&error)));
                }
                storage_failed
            }
        }
    }

    /// Tries a tiny real write; the writer is writable again once one commits.
    fn probe(&mut self) {
        match self.link.get().and_then(probe_write) {
            Ok(()) => set_writable(&self.writable, true, None),
            Err(error) => {
                tracing::debug!(%error, "the database still cannot be written");
                self.link.reset();
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

/// What a committed batch answers: each job's result, in order, and the events
/// it recorded.
type Committed = (Vec<Result<Written, Error>>, Vec<Event>);

/// Applies every job in one transaction. A job's own failure is its result; a
/// failure of the transaction itself, or of the storage under any job, fails the
/// whole batch (SQLite may already have rolled the transaction back).
fn commit_batch(conn: &mut Connection, jobs: &[Job], mut rows: Rows) -> Result<Committed, Error> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for job in jobs {
        match apply(&tx, &job.write, &rows) {
            Ok((written, event)) => {
                if let Written::User(user, _) = &written {
                    let now = !matches!(job.write, Write::User(UserWrite::Delete { .. }));
                    rows.insert(user.id, now.then(|| user.clone()));
                }
                results.push(Ok(written));
                events.extend(event);
            }
            // `apply` refuses before a job's first change, so a refused job left
            // nothing to undo: no savepoint per job (two statements fewer each).
            Err(error) if error.is_refusal() => results.push(Err(error)),
            // Anything else may have left the job half-applied: the batch goes
            // (dropping the transaction rolls it back).
            Err(error) => return Err(error),
        }
    }
    spans::commit().in_scope(|| tx.commit())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_connection_gets_every_setting_writes_rely_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        Connection::open(&path).unwrap();
        for (durability, synchronous) in [(Durability::Full, 2), (Durability::Normal, 1)] {
            let link = Link {
                conn: None,
                path: path.clone(),
                durability,
            };
            let conn = link.open().unwrap();
            let read = |pragma: &str| -> String {
                conn.query_row(&format!("PRAGMA {pragma}"), [], |row| {
                    row.get::<_, rusqlite::types::Value>(0)
                })
                .map(|value| match value {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(text) => text,
                    other => format!("{other:?}"),
                })
                .unwrap()
            };
            assert_eq!(read("journal_mode"), "wal");
            assert_eq!(read("synchronous"), synchronous.to_string());
            assert_eq!(read("foreign_keys"), "1");
            assert_eq!(read("wal_autocheckpoint"), "0");
            assert_eq!(read("busy_timeout"), "5000");
        }
    }
}
