//! The SQLite database: users, the event log, and the database's identity.
//!
//! Every write goes through one connection behind a mutex, inside `BEGIN IMMEDIATE`,
//! so writers queue in order instead of failing with "database is locked", and a
//! change and its event commit together. Reads use a separate pool and, in WAL mode,
//! never wait for the writer. Committed events are handed to in-process watchers in
//! seq order while the write lock is still held.

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    Connection, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::{Mutex, broadcast, watch};

use crate::{
    domain::{Action, Changes, Event, Field, User},
    error::Error,
};

/// How long a connection waits for another process's lock before failing. Our own
/// writers never wait on each other here: they queue on the write mutex.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Committed events buffered for in-process watchers; a watcher further behind
/// catches up from the table instead.
const LIVE_EVENT_BUFFER: usize = 4096;
/// Read connections; SQLite readers in WAL mode run in parallel.
const READ_POOL_SIZE: u32 = 8;

const SELECT_USER_BY_ID: &str =
    "SELECT id, first_name, last_name, create_time, update_time, version FROM users WHERE id = ?";

/// The users database and the live feed of its committed events.
pub struct Store {
    reads: SqlitePool,
    writer: Mutex<SqliteConnection>,
    epoch: String,
    live: broadcast::Sender<Arc<Event>>,
    head: watch::Sender<u64>,
}

/// A page of users from [`Store::list_users`].
#[derive(Debug)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Whether more users follow the last one of this page.
    pub more: bool,
    pub total: i64,
}

impl Store {
    /// Opens (creating if missing) the database at `url`, applies the migrations, and
    /// reads the epoch and the newest seq.
    pub async fn open(url: &str) -> Result<Store, Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a crash of this process (every commit is in the
            // WAL); only a power loss may drop the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent() {
            create_parent_dir(dir)?;
        }

        let mut writer = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("../migrations")
            .run(&mut writer)
            .await
            .map_err(|e| Error::Internal(format!("migrating the database: {e}")))?;
        let reads = SqlitePoolOptions::new()
            .max_connections(READ_POOL_SIZE)
            .connect_with(options.read_only(true))
            .await?;

        let epoch: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'epoch'")
            .fetch_one(&reads)
            .await?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&reads)
            .await?;
        let (live, _) = broadcast::channel(LIVE_EVENT_BUFFER);
        Ok(Store {
            reads,
            writer: Mutex::new(writer),
            epoch,
            live,
            head: watch::Sender::new(head as u64),
        })
    }

    /// The random id this database got when it was created.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The newest committed seq (0 when no event was ever recorded).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Follows the newest committed seq, to wake tasks when events commit.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Every event committed from now on, in seq order. Subscribe before reading the
    /// table so that nothing falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Users ordered by id, after `after_id`, skipping `skip`, at most `limit`, with
    /// the total count from the same snapshot.
    pub async fn list_users(
        &self,
        after_id: i64,
        skip: i64,
        limit: i64,
    ) -> Result<UserPage, Error> {
        let mut tx = self.reads.begin().await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        let mut users: Vec<User> = sqlx::query_as(
            "SELECT id, first_name, last_name, create_time, update_time, version
             FROM users WHERE id > ? ORDER BY id LIMIT ? OFFSET ?",
        )
        .bind(after_id)
        .bind(limit + 1)
        .bind(skip)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let more = users.len() as i64 > limit;
        users.truncate(limit as usize);
        Ok(UserPage { users, more, total })
    }

    /// One user by id.
    pub async fn get_user(&self, id: i64) -> Result<User, Error> {
        sqlx::query_as(SELECT_USER_BY_ID)
            .bind(id)
            .fetch_optional(&self.reads)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Creates a user at version 1 and records its create event.
    pub async fn create_user(&self, first_name: String, last_name: String) -> Result<User, Error> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
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
        .fetch_one(&mut *tx)
        .await?;
        let event = insert_event(&mut tx, Action::Create, &user, Field::ALL.to_vec(), now).await?;
        tx.commit().await?;
        self.announce(event);
        Ok(user)
    }

    /// Applies `changes` to user `id`. A change that alters no value returns the user
    /// untouched: no new version, no event. `violations` found by the caller are
    /// reported only once the user is known to exist and the version matches, the
    /// order in which DRF and HTTP preconditions report them.
    pub async fn update_user(
        &self,
        id: i64,
        changes: Result<Changes, Error>,
        expected_version: Option<i64>,
    ) -> Result<User, Error> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut user = fetch_user(&mut tx, id).await?;
        check_version(&user, expected_version)?;
        let changes = changes?;

        let changed: Vec<Field> = Field::ALL
            .into_iter()
            .filter(|&f| changes.get(f).is_some_and(|v| v.as_str() != user.get(f)))
            .collect();
        if changed.is_empty() {
            return Ok(user);
        }
        for &field in &changed {
            let value = changes
                .get(field)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            user.set(field, value);
        }
        let now = now_micros();
        user.update_time = now;
        user.version += 1;
        sqlx::query(
            "UPDATE users SET first_name = ?, last_name = ?, update_time = ?, version = ? WHERE id = ?",
        )
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(user.update_time)
        .bind(user.version)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
        let event = insert_event(&mut tx, Action::Update, &user, changed, now).await?;
        tx.commit().await?;
        self.announce(event);
        Ok(user)
    }

    /// Deletes user `id` and records a delete event carrying the user as it was.
    pub async fn delete_user(&self, id: i64, expected_version: Option<i64>) -> Result<User, Error> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let user = fetch_user(&mut tx, id).await?;
        check_version(&user, expected_version)?;
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let event = insert_event(
            &mut tx,
            Action::Delete,
            &user,
            Field::ALL.to_vec(),
            now_micros(),
        )
        .await?;
        tx.commit().await?;
        self.announce(event);
        Ok(user)
    }

    /// Up to `limit` events with a seq greater than `after`, in seq order.
    pub async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, Error> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, action, user_id, first_name, last_name, create_time, update_time,
                    version, changed, commit_time
             FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after as i64)
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// The oldest seq still kept, or `None` when the log is empty.
    pub async fn oldest_seq(&self) -> Result<Option<u64>, Error> {
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM events")
            .fetch_one(&self.reads)
            .await?;
        Ok(oldest.map(|s| s as u64))
    }

    /// The newest seq the relay has published to Redis.
    pub async fn published_seq(&self) -> Result<u64, Error> {
        let value: String =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'published_seq'")
                .fetch_one(&self.reads)
                .await?;
        value
            .parse()
            .map_err(|_| Error::Internal(format!("meta.published_seq is not a number: {value:?}")))
    }

    /// Records that every event up to `seq` is on the Redis stream.
    pub async fn set_published_seq(&self, seq: u64) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        sqlx::query("UPDATE meta SET value = ? WHERE key = 'published_seq'")
            .bind(seq.to_string())
            .execute(&mut *writer)
            .await?;
        Ok(())
    }

    /// Deletes events with a seq at most `upto`, at most `batch` of them, oldest
    /// first; returns how many went. Small batches keep the write lock short.
    pub async fn prune_events(&self, upto: u64, batch: u64) -> Result<u64, Error> {
        let Some(oldest) = self.oldest_seq().await? else {
            return Ok(0);
        };
        let bound = upto.min(oldest.saturating_add(batch).saturating_sub(1));
        if bound < oldest {
            return Ok(0);
        }
        let mut writer = self.writer.lock().await;
        let done = sqlx::query("DELETE FROM events WHERE seq <= ?")
            .bind(bound as i64)
            .execute(&mut *writer)
            .await?;
        Ok(done.rows_affected())
    }

    /// Creates one demo user when the database holds none, so a fresh demo has a
    /// user 1 to edit. Returns it if it was made.
    pub async fn seed_demo_user(&self) -> Result<Option<User>, Error> {
        let any: Option<i64> = sqlx::query_scalar("SELECT id FROM users LIMIT 1")
            .fetch_optional(&self.reads)
            .await?;
        let ever: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.reads)
            .await?;
        if any.is_some() || ever > 0 {
            return Ok(None);
        }
        self.create_user("John".into(), "Doe".into())
            .await
            .map(Some)
    }

    /// Hands a committed event to in-process watchers. Called with the write lock
    /// held, so events go out in seq order.
    fn announce(&self, event: Event) {
        let seq = event.seq;
        // No receivers is fine: watchers read the table when they start.
        let _ = self.live.send(Arc::new(event));
        self.head.send_replace(seq);
    }
}

fn create_parent_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))
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

#[derive(sqlx::FromRow)]
struct EventRow {
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
    fn into_event(self) -> Result<Event, Error> {
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

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_micros() as i64
}
