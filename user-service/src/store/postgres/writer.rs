//! This process's writer on PostgreSQL: one task, one connection, queued writes
//! committed in batches (group commit), each batch in a handful of statements
//! whatever its size:
//!
//! 1. `SELECT … WHERE id = ANY(…) ORDER BY id FOR UPDATE`: the users the batch
//!    changes, locked in id order (so two processes' batches cannot deadlock on
//!    them) and read as committed;
//! 2. every write decided in Rust, in queue order, by the rules SQLite's writer
//!    uses (`change::decide`); refused ones fail alone;
//! 3. one INSERT, UPDATE and DELETE each for the users' final rows;
//! 4. last, one statement that takes the batch's seqs from `event_head` (locking
//!    its one row until COMMIT) and inserts the events; the table's trigger
//!    NOTIFYs the other processes at commit.
//!
//! Taking `event_head` last keeps its lock, which every writing transaction of
//! every process waits for, down to that statement and the commit. Holding it to
//! the commit is what orders seqs by commit: the next transaction gets its seqs
//! only after this one is visible, so no reader ever sees seq N+1 before N.
//!
//! When a batch fails for the connection or the database (not for a write's own
//! refusal), the connection is dropped and a tiny real write probes the database;
//! while the probe fails the writer says it is not writable (health NOT_SERVING)
//! and probes again every [`PROBE_INTERVAL`].

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::{CONNECT_TIMEOUT, USER_COLUMNS};
use crate::{
    domain::{Action, Event, Field, User, now_micros},
    error::Error,
    store::{
        Saved,
        change::{Step, UserWrite, changed_text, decide},
        feed::Feed,
        spans,
    },
};
use tracing::Instrument;

/// Most writes committed together.
const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// How often a writer that cannot write tries again when no write comes.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Times a batch is tried again after PostgreSQL aborted it for a deadlock or
/// a serialization failure (another process's batch won).
const CONFLICT_RETRIES: usize = 3;

struct Job {
    write: UserWrite,
    reply: oneshot::Sender<Result<Saved, Error>>,
    /// The caller's span (its `rpc`), which the batch's span joins.
    span: tracing::Span,
}

/// The way to the writer task; cheap to share.
#[derive(Clone)]
pub struct PgWriter {
    jobs: mpsc::Sender<Job>,
    writable: watch::Receiver<bool>,
}

impl PgWriter {
    /// Starts the writer task, which connects with `options` when it first
    /// needs to, announces its events on `feed` when they follow its head, and
    /// else wakes `committed`'s waiter (the follower). It ends when every
    /// `PgWriter` is dropped.
    pub fn spawn(options: PgConnectOptions, feed: Arc<Feed>, committed: Arc<Notify>) -> PgWriter {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (writable_tx, writable) = watch::channel(true);
        let task = Task {
            options,
            conn: None,
            feed,
            committed,
            writable: writable_tx,
        };
        tokio::spawn(task.run(queue));
        PgWriter { jobs, writable }
    }

    /// Follows whether the database takes this writer's writes.
    pub fn watch_writable(&self) -> watch::Receiver<bool> {
        self.writable.clone()
    }

    /// Queues `write` and waits until its batch has committed (or failed).
    pub async fn submit(&self, write: UserWrite) -> Result<Saved, Error> {
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

struct Task {
    options: PgConnectOptions,
    /// The write connection; `None` after a failure, reopened on next use.
    conn: Option<PgConnection>,
    feed: Arc<Feed>,
    committed: Arc<Notify>,
    writable: watch::Sender<bool>,
}

impl Task {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let failing = !*self.writable.borrow();
            tokio::select! {
                received = queue.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    let jobs = std::mem::take(&mut batch);
                    if !self.commit(jobs).await {
                        probe.reset();
                    }
                }
                _ = probe.tick(), if failing => {
                    self.probe().await;
                }
            }
        }
    }

    /// Commits `jobs` as one batch and answers each; `false` when the batch
    /// failed and the database then refused a probe too.
    async fn commit(&mut self, jobs: Vec<Job>) -> bool {
        let writes: Vec<&UserWrite> = jobs.iter().map(|job| &job.write).collect();
        let batch = spans::batch(jobs.iter().map(|job| &job.span));
        let mut attempt = 0;
        let outcome = loop {
            let outcome = match self.connection().await {
                Ok(conn) => commit_batch(conn, &writes).instrument(batch.clone()).await,
                Err(error) => Err(error),
            };
            match outcome {
                Err(Failure::Conflict(_)) if attempt < CONFLICT_RETRIES => attempt += 1,
                outcome => break outcome,
            }
        };
        match outcome {
            Ok(Batch { results, events }) => {
                self.set_writable(true, None);
                // Announced here when they follow the head (no other process
                // committed in between); else the follower reads them, with
                // the others', from the table.
                let mut announced = true;
                for event in events {
                    announced = announced && self.feed.announce(event);
                }
                if !announced {
                    self.committed.notify_one();
                }
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
                true
            }
            Err(failure) => {
                let error = failure.into_error();
                tracing::warn!(%error, writes = jobs.len(), "a write batch failed; nothing of it was stored");
                self.conn = None;
                let writable = self.probe().await;
                for job in jobs {
                    let _ = job.reply.send(Err(copy_error(&error)));
                }
                writable
            }
        }
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, Failure> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options))
                    .await
                    .map_err(|_| {
                        Failure::Database(Error::Unavailable(
                            "no answer from PostgreSQL while connecting".into(),
                        ))
                    })?
                    .map_err(Failure::from)?
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// Tries a tiny real write; returns (and records) whether it committed.
    async fn probe(&mut self) -> bool {
        let probed = match self.connection().await {
            Ok(conn) => sqlx::query(
                "INSERT INTO meta (key, value) VALUES ('write_probe', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(now_micros().to_string())
            .execute(conn)
            .await
            .map(drop)
            .map_err(Error::from),
            Err(failure) => Err(failure.into_error()),
        };
        match probed {
            Ok(()) => {
                self.set_writable(true, None);
                true
            }
            Err(error) => {
                self.conn = None;
                self.set_writable(false, Some(&error));
                false
            }
        }
    }

    /// Records whether the database takes writes, logging only the changes.
    fn set_writable(&self, now: bool, cause: Option<&Error>) {
        let changed = self
            .writable
            .send_if_modified(|was| std::mem::replace(was, now) != now);
        match (changed, now) {
            (true, true) => tracing::info!("the database takes writes again; health SERVING"),
            (true, false) => tracing::error!(
                error = %cause.map(ToString::to_string).unwrap_or_default(),
                "the database cannot be written; health NOT_SERVING, calls fail with UNAVAILABLE until a write succeeds (retried every second)"
            ),
            _ => {}
        }
    }
}

/// Why a batch failed as a whole.
enum Failure {
    /// PostgreSQL aborted it for a deadlock or a serialization failure: worth
    /// trying again at once.
    Conflict(Error),
    /// Anything else: the connection, the database, or a bug.
    Database(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Conflict(error) | Failure::Database(error) => error,
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Failure {
        let conflict = error
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "40001" || code == "40P01");
        let error = Error::from(error);
        if conflict {
            Failure::Conflict(error)
        } else {
            Failure::Database(error)
        }
    }
}

/// The error every job of a failed batch gets: the same kind, for each caller.
fn copy_error(error: &Error) -> Error {
    match error {
        Error::Unavailable(cause) => Error::Unavailable(cause.clone()),
        Error::Storage(cause) => Error::Storage(cause.clone()),
        other => Error::Internal(other.to_string()),
    }
}

/// What one job answers before its event has a seq: the user, and the index of
/// its event among the batch's.
type Pending = Result<(User, Option<usize>), Error>;

/// Users as the batch leaves them: the rows read, plus the new ones.
#[derive(Default)]
struct Rows {
    /// By id; `None`: deleted (or never existed).
    now: HashMap<i64, Option<User>>,
    /// Ids that existed before the batch (read from the table).
    existing: HashSet<i64>,
    /// Existing ids whose row the batch changes.
    dirty: HashSet<i64>,
}

/// Applies `writes` in one transaction and answers each.
async fn commit_batch(conn: &mut PgConnection, writes: &[&UserWrite]) -> Result<Batch, Failure> {
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    let mut rows = lock_users(&mut tx, writes).await?;
    let creates = writes
        .iter()
        .filter(|w| matches!(w, UserWrite::Create { .. }))
        .count();
    let mut new_ids = new_user_ids(&mut tx, creates).await?.into_iter();

    let mut pending: Vec<Pending> = Vec::with_capacity(writes.len());
    let mut events: Vec<Event> = Vec::new();
    let now = now_micros();
    for write in writes {
        let (user, event) = match write {
            UserWrite::Create {
                first_name,
                last_name,
            } => {
                let id = new_ids
                    .next()
                    .ok_or_else(|| Failure::Database(Error::Internal("too few new ids".into())))?;
                let user = User {
                    id,
                    first_name: first_name.clone(),
                    last_name: last_name.clone(),
                    create_time: now,
                    update_time: now,
                    version: 1,
                };
                rows.now.insert(id, Some(user.clone()));
                (user, Some((Action::Create, Field::ALL.to_vec())))
            }
            write => {
                let id = write.user_id().unwrap_or_default();
                let current = rows.now.get(&id).cloned().flatten();
                match decide(write, current, now) {
                    Err(refused) => {
                        pending.push(Err(refused));
                        continue;
                    }
                    Ok(Step::Unchanged(user)) => (user, None),
                    Ok(Step::Update(user, changed)) => {
                        rows.set(id, Some(user.clone()));
                        (user, Some((Action::Update, changed)))
                    }
                    Ok(Step::Delete(user)) => {
                        rows.set(id, None);
                        (user, Some((Action::Delete, Field::ALL.to_vec())))
                    }
                }
            }
        };
        let index = event.map(|(action, changed)| {
            events.push(Event {
                seq: 0,
                action,
                user: user.clone(),
                changed,
                commit_time: now,
            });
            events.len() - 1
        });
        pending.push(Ok((user, index)));
    }

    write_users(&mut tx, &rows).await?;
    let first_seq = insert_events(&mut tx, &events).await?;
    tx.commit().instrument(spans::commit()).await?;
    crate::metrics::write_batch(writes.len(), started);
    for (i, event) in events.iter_mut().enumerate() {
        event.seq = first_seq + i as u64;
    }
    let batch = Batch {
        results: pending
            .into_iter()
            .map(|result| {
                result.map(|(user, index)| Saved {
                    user,
                    seq: index.map(|i| first_seq + i as u64),
                })
            })
            .collect(),
        events,
    };
    Ok(batch)
}

/// A committed batch: each write's answer, in order, and the events it
/// recorded, with their seqs.
struct Batch {
    results: Vec<Result<Saved, Error>>,
    events: Vec<Event>,
}

impl Rows {
    /// Records an existing user's row as the batch now leaves it.
    fn set(&mut self, id: i64, user: Option<User>) {
        if self.existing.contains(&id) {
            self.dirty.insert(id);
        }
        self.now.insert(id, user);
    }
}

/// Reads and locks, in id order, every existing user the batch names.
async fn lock_users(conn: &mut PgConnection, writes: &[&UserWrite]) -> Result<Rows, Failure> {
    let mut ids: Vec<i64> = writes.iter().filter_map(|w| w.user_id()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut rows = Rows::default();
    if ids.is_empty() {
        return Ok(rows);
    }
    let found: Vec<User> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    )))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for id in ids {
        rows.now.insert(id, None);
    }
    for user in found {
        rows.existing.insert(user.id);
        rows.now.insert(user.id, Some(user));
    }
    Ok(rows)
}

/// `count` new user ids from the identity column's sequence (gaps are fine:
/// ids only need to be unique and never reused).
async fn new_user_ids(conn: &mut PgConnection, count: usize) -> Result<Vec<i64>, Failure> {
    if count == 0 {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('users', 'id')) FROM generate_series(1, $1)",
    )
    .bind(count as i64)
    .fetch_all(conn)
    .await?)
}

/// The users' final rows: new ones inserted, changed ones updated, deleted ones
/// removed; one statement each, only where there is something to do.
async fn write_users(conn: &mut PgConnection, rows: &Rows) -> Result<(), Failure> {
    let mut inserted = UserColumns::default();
    let mut updated = UserColumns::default();
    let mut deleted = Vec::new();
    for (id, user) in &rows.now {
        match (rows.existing.contains(id), user) {
            (false, Some(user)) => inserted.push(user),
            (true, Some(user)) if rows.dirty.contains(id) => updated.push(user),
            (true, None) => deleted.push(*id),
            _ => {}
        }
    }
    if !inserted.id.is_empty() {
        sqlx::query(
            "INSERT INTO users (id, first_name, last_name, create_time, update_time, version)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[],
                                  $5::BIGINT[], $6::BIGINT[])",
        )
        .bind(&inserted.id)
        .bind(&inserted.first_name)
        .bind(&inserted.last_name)
        .bind(&inserted.create_time)
        .bind(&inserted.update_time)
        .bind(&inserted.version)
        .execute(&mut *conn)
        .await?;
    }
    if !updated.id.is_empty() {
        sqlx::query(
            "UPDATE users SET first_name = v.first_name, last_name = v.last_name,
                              update_time = v.update_time, version = v.version
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
                  AS v(id, first_name, last_name, update_time, version)
             WHERE users.id = v.id",
        )
        .bind(&updated.id)
        .bind(&updated.first_name)
        .bind(&updated.last_name)
        .bind(&updated.update_time)
        .bind(&updated.version)
        .execute(&mut *conn)
        .await?;
    }
    if !deleted.is_empty() {
        sqlx::query("DELETE FROM users WHERE id = ANY($1)")
            .bind(&deleted)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Takes `events.len()` seqs from `event_head` and inserts the events with
/// them, in their order (their own `seq` is ignored); returns the first (0 when
/// there are none, and then nothing is locked).
async fn insert_events(conn: &mut PgConnection, events: &[Event]) -> Result<u64, Failure> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut columns = UserColumns::default();
    let mut actions = Vec::with_capacity(events.len());
    let mut changed = Vec::with_capacity(events.len());
    let mut commit_times = Vec::with_capacity(events.len());
    for event in events {
        columns.push(&event.user);
        actions.push(event.action as i16);
        changed.push(changed_text(&event.changed));
        commit_times.push(event.commit_time);
    }
    let count = events.len() as i64;
    let last: i64 = sqlx::query_scalar(
        "WITH head AS (UPDATE event_head SET seq = seq + $1 RETURNING seq),
              inserted AS (
                INSERT INTO events (seq, action, user_id, first_name, last_name, create_time,
                                    update_time, version, changed, commit_time)
                SELECT head.seq - $1 + e.ord, e.action, e.user_id, e.first_name, e.last_name,
                       e.create_time, e.update_time, e.version, e.changed, e.commit_time
                FROM head,
                     UNNEST($2::SMALLINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                            $7::BIGINT[], $8::BIGINT[], $9::TEXT[], $10::BIGINT[])
                     WITH ORDINALITY
                     AS e(action, user_id, first_name, last_name, create_time, update_time,
                          version, changed, commit_time, ord)
                RETURNING seq)
         SELECT MAX(seq) FROM inserted",
    )
    .bind(count)
    .bind(&actions)
    .bind(&columns.id)
    .bind(&columns.first_name)
    .bind(&columns.last_name)
    .bind(&columns.create_time)
    .bind(&columns.update_time)
    .bind(&columns.version)
    .bind(&changed)
    .bind(&commit_times)
    .fetch_one(&mut *conn)
    .await?;
    Ok((last - count + 1) as u64)
}

/// Users as columns, to bind as arrays for `UNNEST`.
#[derive(Default)]
struct UserColumns {
    id: Vec<i64>,
    first_name: Vec<String>,
    last_name: Vec<String>,
    create_time: Vec<i64>,
    update_time: Vec<i64>,
    version: Vec<i64>,
}

impl UserColumns {
    fn push(&mut self, user: &User) {
        self.id.push(user.id);
        self.first_name.push(user.first_name.clone());
        self.last_name.push(user.last_name.clone());
        self.create_time.push(user.create_time);
        self.update_time.push(user.update_time);
        self.version.push(user.version);
    }
}
