//! The SQLite engine: one process owns the database file.
//!
//! Every write goes to one writer task (`writer`), which owns the only write
//! connection and commits queued writes in batches inside `BEGIN IMMEDIATE`: writers
//! queue in order instead of failing with "database is locked", a change and its
//! event commit together, and many changes share one fsync. Reads use a separate
//! pool and, in WAL mode, never wait for the writer. Committed events reach
//! in-process watchers in seq order, announced by the writer.

mod apply;
mod cache;
mod checkpoint;
mod connection;
mod writer;

use std::{future::Future, path::Path, str::FromStr, sync::Arc, time::Instant};

use apply::{SELECT_USER_BY_ID, Write, Written};
use cache::UserCache;
use connection::{BUSY_TIMEOUT, pragmas};
use sqlx::{
    Connection, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use tokio::sync::watch;
use writer::Writer;

pub use connection::{Checkpoints, Durability, SqliteSettings};

use super::{
    Saved, UserPage, UserWrite,
    feed::Feed,
    rows::{EventRow, into_events},
};
use crate::{domain::User, error::Error, metrics};

/// Read connections; SQLite readers in WAL mode run in parallel.
const READ_POOL_SIZE: u32 = 8;

/// A SQLite database file, its read pool, its writer and its cache.
pub struct SqliteStore {
    reads: SqlitePool,
    /// Users by id, kept exact by the writer: most `GetUser` calls end here.
    cache: UserCache,
    writer: Writer,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`, applies the migrations,
    /// reads the epoch and the newest seq, and starts the writer and (unless
    /// another process owns checkpoints) the checkpointer; answers the store,
    /// its epoch and its feed.
    pub async fn open(
        url: &str,
        settings: SqliteSettings,
    ) -> Result<(SqliteStore, String, Arc<Feed>), Error> {
        let durability = settings.durability;
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
        let feed = Feed::new(head as u64);
        if settings.checkpoints == Checkpoints::Service {
            tokio::spawn(checkpoint::run(
                options.clone().create_if_missing(false),
                feed.head.subscribe(),
            ));
        }
        let cache = UserCache::default();
        let writer = Writer::spawn(
            options.get_filename().to_owned(),
            durability,
            feed.clone(),
            cache.clone(),
        )?;
        let store = SqliteStore {
            reads,
            writer,
            cache,
        };
        Ok((store, epoch, feed))
    }

    /// See [`super::Store::watch_writable`].
    pub fn watch_writable(&self) -> watch::Receiver<bool> {
        self.writer.watch_writable()
    }

    /// See [`super::Store::list_users`].
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

    /// Queues `write` for the writer and waits until its batch committed.
    pub async fn write_user(&self, write: UserWrite) -> Result<Saved, Error> {
        match self.writer.submit(Write::User(write)).await? {
            Written::User(user, seq) => Ok(Saved { user, seq }),
            _ => Err(Error::Internal("a user write answered no user".into())),
        }
    }

    /// See [`super::Store::events_after`].
    pub async fn events_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<crate::domain::Event>, Error> {
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
        into_events(rows)
    }

    /// See [`super::Store::oldest_seq`].
    pub async fn oldest_seq(&self) -> Result<Option<u64>, Error> {
        let started = Instant::now();
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM events")
            .fetch_one(&self.reads)
            .await?;
        metrics::db_query("oldest_seq", started);
        Ok(oldest.map(|s| s as u64))
    }

    /// The relay's cursor as stored (text in `meta`).
    pub async fn published_seq(&self) -> Result<String, Error> {
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'published_seq'")
                .fetch_one(&self.reads)
                .await?,
        )
    }

    /// See [`super::Store::set_published_seq`].
    pub async fn set_published_seq(&self, seq: u64) -> Result<(), Error> {
        self.writer.submit(Write::SetPublished { seq }).await?;
        Ok(())
    }

    /// Deletes the events with a seq at most `upto`; returns how many went.
    pub async fn prune_events(&self, upto: u64) -> Result<u64, Error> {
        match self.writer.submit(Write::Prune { upto }).await? {
            Written::Count(deleted) => Ok(deleted),
            _ => Err(Error::Internal("a prune answered no count".into())),
        }
    }

    /// See [`super::Store::start_new_epoch`].
    pub async fn new_epoch(&self) -> Result<String, Error> {
        match self.writer.submit(Write::NewEpoch).await? {
            Written::Epoch(epoch) => Ok(epoch),
            _ => Err(Error::Internal("a new epoch answered no epoch".into())),
        }
    }

    /// The newest seq the database holds.
    pub async fn newest_seq(&self) -> Result<u64, Error> {
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.reads)
            .await?;
        Ok(newest as u64)
    }

    /// Runs `create` when the database never held a user. The writer is the
    /// only one, so nothing can slip in between the check and the create.
    pub async fn seed_demo_user<F, Fut>(&self, create: F) -> Result<Option<User>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Saved, Error>>,
    {
        let any: Option<i64> = sqlx::query_scalar("SELECT id FROM users LIMIT 1")
            .fetch_optional(&self.reads)
            .await?;
        let ever: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.reads)
            .await?;
        if any.is_some() || ever > 0 {
            return Ok(None);
        }
        Ok(Some(create().await?.user))
    }
}

fn create_parent_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))
}
