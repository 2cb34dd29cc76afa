//! The SQLite database: users, the event log, and the database's identity.
//!
//! Every write goes to one writer task (`writer`), which owns the only write
//! connection and commits queued writes in batches inside `BEGIN IMMEDIATE`: writers
//! queue in order instead of failing with "database is locked", a change and its
//! event commit together, and many changes share one fsync. Reads use a separate
//! pool and, in WAL mode, never wait for the writer. Committed events reach
//! in-process watchers in seq order.

mod apply;
mod cache;
mod checkpoint;
mod connection;
mod writer;

use std::{path::Path, str::FromStr, sync::Arc, time::Instant};

use apply::{SELECT_USER_BY_ID, Write, Written};
use cache::UserCache;
use connection::{BUSY_TIMEOUT, pragmas};
use sqlx::{
    Connection, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use tokio::sync::{broadcast, watch};
use writer::{Feed, Writer};

pub use connection::{Backend, Durability, backend};

use crate::{
    domain::{Action, Changes, Event, Field, FieldViolation, User},
    error::Error,
    metrics,
};

/// Committed events buffered for in-process watchers; a watcher further behind
/// catches up from the table instead.
const LIVE_EVENT_BUFFER: usize = 4096;
/// Read connections; SQLite readers in WAL mode run in parallel.
const READ_POOL_SIZE: u32 = 8;

/// The users database and the live feed of its committed events.
pub struct Store {
    reads: SqlitePool,
    /// Users by id, kept exact by the writer: most `GetUser` calls end here.
    cache: UserCache,
    writer: Writer,
    epoch: String,
    feed: Arc<Feed>,
}

/// What a user write answers: the user as written, and where its event is in
/// the log, so the caller can tell when a reader of the log has seen it.
#[derive(Debug)]
pub struct Saved {
    /// The user as the write left it (for a delete: as it was), to answer
    /// with.
    pub user: User,
    /// The seq of the event the write recorded; `None` when it changed nothing
    /// and so recorded none.
    pub seq: Option<u64>,
}

/// A page of users from [`Store::list_users`].
#[derive(Debug)]
pub struct UserPage {
    /// This page's users, ordered by id.
    pub users: Vec<User>,
    /// Whether more users follow the last one of this page.
    pub more: bool,
    /// How many users exist, counted in the page's snapshot so the two agree.
    pub total: i64,
}

impl Store {
    /// Opens (creating if missing) the database at `url`, applies the migrations,
    /// reads the epoch and the newest seq, and starts the writer task.
    pub async fn open(url: &str, durability: Durability) -> Result<Store, Error> {
        let mut options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT);
        for (name, value) in pragmas(durability) {
            options = options.pragma(name, value);
        }
        if let Some(dir) = options.get_filename().parent() {
            create_parent_dir(dir)?;
        }

        // sqlx migrates, on a connection of its own; the writer then opens the
        // migrated file itself (see `writer`).
        let mut migrator = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&mut migrator)
            .await
            .map_err(|e| Error::Internal(format!("migrating the database: {e}")))?;
        migrator.close().await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(READ_POOL_SIZE)
            .connect_with(options.clone().read_only(true))
            .await?;

        let epoch: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'epoch'")
            .fetch_one(&reads)
            .await?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&reads)
            .await?;
        let (live, _) = broadcast::channel(LIVE_EVENT_BUFFER);
        let feed = Arc::new(Feed {
            live,
            head: watch::Sender::new(head as u64),
        });
        tokio::spawn(checkpoint::run(
            options.clone().create_if_missing(false),
            feed.head.subscribe(),
        ));
        let cache = UserCache::default();
        Ok(Store {
            reads,
            writer: Writer::spawn(
                options.get_filename().to_owned(),
                durability,
                feed.clone(),
                cache.clone(),
            )?,
            cache,
            epoch,
            feed,
        })
    }

    /// The random id this database got when it was created.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The newest committed seq (0 when no event was ever recorded).
    pub fn head(&self) -> u64 {
        *self.feed.head.borrow()
    }

    /// Follows whether the database takes writes: `false` from a storage failure
    /// (disk full, read-only, I/O error) until a write commits again. Health
    /// follows it.
    pub fn watch_writable(&self) -> watch::Receiver<bool> {
        self.writer.watch_writable()
    }

    /// Follows the newest committed seq, to wake tasks when events commit.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.feed.head.subscribe()
    }

    /// Every event committed from now on, in seq order. Subscribe before reading the
    /// table so that nothing falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.feed.live.subscribe()
    }

    /// Users ordered by id, after `after_id`, skipping `skip`, at most `limit`, with
    /// the total count from the same snapshot.
    pub async fn list_users(
        &self,
        after_id: i64,
        skip: i64,
        limit: i64,
    ) -> Result<UserPage, Error> {
        let started = Instant::now();
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
        metrics::db_query("list_users", started);
        let more = users.len() as i64 > limit;
        users.truncate(limit as usize);
        Ok(UserPage { users, more, total })
    }

    /// One user by id: from the cache when the writer keeps it there (most
    /// calls), else from the read pool, which never waits for the writer.
    pub async fn get_user(&self, id: i64) -> Result<User, Error> {
        if let Some(user) = self.cache.get(id) {
            return Ok(User::clone(&user));
        }
        let generation = self.cache.generation();
        let started = Instant::now();
        let user: Option<User> = sqlx::query_as(SELECT_USER_BY_ID)
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        metrics::db_query("get_user", started);
        let user = user.ok_or(Error::NotFound)?;
        self.cache.insert_read(generation, user.clone());
        Ok(user)
    }

    /// Creates a user at version 1 and records its create event.
    pub async fn create_user(&self, first_name: String, last_name: String) -> Result<Saved, Error> {
        let write = Write::Create {
            first_name,
            last_name,
        };
        self.write_user(write).await
    }

    /// Applies `changes` to user `id`. A change that alters no value returns the user
    /// untouched: no new version, no event. Violations found by the caller are
    /// reported only once the user is known to exist and the version matches, the
    /// order in which DRF and HTTP preconditions report them.
    pub async fn update_user(
        &self,
        id: i64,
        changes: Result<Changes, Vec<FieldViolation>>,
        expected_version: Option<i64>,
    ) -> Result<Saved, Error> {
        let write = Write::Update {
            id,
            changes,
            expected_version,
        };
        self.write_user(write).await
    }

    /// Checks an update as [`Store::update_user`] does, in its order (404, then
    /// 412, then the violations), and writes nothing: the user as the update
    /// would leave it, version unchanged (a `validate_only` request).
    pub async fn preview_update(
        &self,
        id: i64,
        changes: Result<Changes, Vec<FieldViolation>>,
        expected_version: Option<i64>,
    ) -> Result<User, Error> {
        let mut user = self.get_user(id).await?;
        apply::check_version(&user, expected_version)?;
        changes.map_err(Error::Invalid)?.apply_to(&mut user);
        Ok(user)
    }

    /// Deletes user `id` and records a delete event carrying the user as it was.
    pub async fn delete_user(
        &self,
        id: i64,
        expected_version: Option<i64>,
    ) -> Result<Saved, Error> {
        self.write_user(Write::Delete {
            id,
            expected_version,
        })
        .await
    }

    async fn write_user(&self, write: Write) -> Result<Saved, Error> {
        match self.writer.submit(write).await? {
            Written::User(user, seq) => Ok(Saved { user, seq }),
            Written::Count(_) => Err(Error::Internal("a user write answered a count".into())),
        }
    }

    /// Up to `limit` events with a seq greater than `after`, in seq order: how
    /// watchers and the relay catch up from the table.
    pub async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, Error> {
        let started = Instant::now();
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, action, user_id, first_name, last_name, create_time, update_time,
                    version, changed, commit_time
             FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after as i64)
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        metrics::db_query("events_after", started);
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// The oldest seq still kept, or `None` when the log is empty: where a
    /// replay can start at the earliest.
    pub async fn oldest_seq(&self) -> Result<Option<u64>, Error> {
        let started = Instant::now();
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM events")
            .fetch_one(&self.reads)
            .await?;
        metrics::db_query("oldest_seq", started);
        Ok(oldest.map(|s| s as u64))
    }

    /// The newest seq the relay has recorded as published to Redis: where a
    /// restarted relay resumes, and how far retention may prune.
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
        self.writer.submit(Write::SetPublished { seq }).await?;
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
        match self.writer.submit(Write::Prune { upto: bound }).await? {
            Written::Count(deleted) => Ok(deleted),
            Written::User(..) => Err(Error::Internal("a prune answered a user".into())),
        }
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
        let saved = self.create_user("John".into(), "Doe".into()).await?;
        Ok(Some(saved.user))
    }
}

fn create_parent_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))
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
