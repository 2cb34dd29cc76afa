//! The users database, on one of two engines, and the live feed of its events.
//!
//! [`Store`] is what the rest of the service uses; beneath it each engine keeps
//! the same promises its own way:
//! - `sqlite`: one process owns a file. One writer task commits queued writes in
//!   batches and announces their events itself.
//! - `postgres`: several processes share one database. Each commits its own
//!   batches; a follower task reads every process's events from the table (woken
//!   by `LISTEN/NOTIFY`) and announces them, and duties that must run once at a
//!   time (the relay, retention) are held through advisory locks.
//!
//! On both, a change and its event commit in one transaction, and the event log's
//! seq increases in commit order with no gap a reader can see.

mod backend;
mod change;
mod feed;
mod lease;
mod postgres;
mod rows;
mod spans;
mod sqlite;

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

pub use backend::{Backend, backend, redact};
pub use change::UserWrite;
pub use lease::{Duty, Lease, run_while_held};
pub use sqlite::{Checkpoints, Durability, SqliteSettings};

use crate::{
    domain::{Changes, Event, FieldViolation, User},
    error::Error,
};
use feed::Feed;
use postgres::PgStore;
use sqlite::SqliteStore;

/// The users database and the live feed of its committed events.
pub struct Store {
    engine: Engine,
    epoch: String,
    feed: Arc<Feed>,
}

/// The engine behind a [`Store`]: two small implementations of the same
/// methods rather than one over sqlx's `Any` driver, which would hide the
/// locks, `RETURNING` and types each relies on.
enum Engine {
    Sqlite(SqliteStore),
    /// Boxed: its connect options are large, and there is one store.
    Postgres(Box<PgStore>),
}

/// Calls the same method on whichever engine the store runs on.
macro_rules! on_engine {
    ($store:expr, $engine:ident => $call:expr) => {
        match &$store.engine {
            Engine::Sqlite($engine) => $call,
            Engine::Postgres($engine) => $call,
        }
    };
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
    /// Opens the database `url` names (see [`backend`]), applies its migrations,
    /// reads the epoch and the newest seq, and starts the engine's tasks.
    /// `sqlite` applies to SQLite; PostgreSQL's durability and checkpoints are
    /// its own configuration.
    pub async fn open(url: &str, sqlite: SqliteSettings) -> Result<Store, Error> {
        let backend = backend(url).map_err(Error::Internal)?;
        let (engine, epoch, feed) = match backend {
            Backend::Sqlite => {
                let (engine, epoch, feed) = SqliteStore::open(url, sqlite).await?;
                (Engine::Sqlite(engine), epoch, feed)
            }
            Backend::Postgres => {
                let (engine, epoch, feed) = PgStore::open(url).await?;
                (Engine::Postgres(Box::new(engine)), epoch, feed)
            }
        };
        Ok(Store {
            engine,
            epoch,
            feed,
        })
    }

    /// Which engine this store runs on.
    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Sqlite(_) => Backend::Sqlite,
            Engine::Postgres(_) => Backend::Postgres,
        }
    }

    /// The random id this database got when it was created.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Gives the database a new epoch, before anything is served: its events
    /// are then a new sequence to every reader, who resyncs instead of
    /// resuming. For a database that lost events others saw (a restore from a
    /// backup older than the stream it published).
    pub async fn start_new_epoch(&mut self) -> Result<&str, Error> {
        self.epoch = on_engine!(self, engine => engine.new_epoch().await)?;
        Ok(&self.epoch)
    }

    /// The newest seq the database holds, read now (other processes' commits
    /// included).
    pub async fn newest_seq(&self) -> Result<u64, Error> {
        on_engine!(self, engine => engine.newest_seq().await)
    }

    /// The newest seq this process has announced (0 when no event was ever
    /// recorded).
    pub fn head(&self) -> u64 {
        *self.feed.head.borrow()
    }

    /// Follows whether the database takes writes: `false` from a storage failure
    /// (disk full, read-only, I/O error, a lost database connection) until a
    /// write commits again. Health follows it.
    pub fn watch_writable(&self) -> watch::Receiver<bool> {
        on_engine!(self, engine => engine.watch_writable())
    }

    /// Follows the newest announced seq, to wake tasks when events commit.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.feed.head.subscribe()
    }

    /// Every event announced from now on, in seq order. Subscribe before reading
    /// the table so that nothing falls between the two.
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
        on_engine!(self, engine => engine.list_users(after_id, skip, limit).await)
    }

    /// One user by id.
    pub async fn get_user(&self, id: i64) -> Result<User, Error> {
        on_engine!(self, engine => engine.get_user(id).await)
    }

    /// Creates a user at version 1 and records its create event.
    pub async fn create_user(&self, first_name: String, last_name: String) -> Result<Saved, Error> {
        let write = UserWrite::Create {
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
        let write = UserWrite::Update {
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
        change::check_version(&user, expected_version)?;
        changes.map_err(Error::Invalid)?.apply_to(&mut user);
        Ok(user)
    }

    /// Deletes user `id` and records a delete event carrying the user as it was.
    pub async fn delete_user(
        &self,
        id: i64,
        expected_version: Option<i64>,
    ) -> Result<Saved, Error> {
        self.write_user(UserWrite::Delete {
            id,
            expected_version,
        })
        .await
    }

    async fn write_user(&self, write: UserWrite) -> Result<Saved, Error> {
        on_engine!(self, engine => engine.write_user(write).await)
    }

    /// Up to `limit` events with a seq greater than `after`, in seq order: how
    /// watchers and the relay catch up from the table.
    pub async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, Error> {
        on_engine!(self, engine => engine.events_after(after, limit).await)
    }

    /// The oldest seq still kept, or `None` when the log is empty: where a
    /// replay can start at the earliest.
    pub async fn oldest_seq(&self) -> Result<Option<u64>, Error> {
        on_engine!(self, engine => engine.oldest_seq().await)
    }

    /// The newest seq the relay has recorded as published to Redis: where a
    /// restarted relay resumes, and how far retention may prune.
    pub async fn published_seq(&self) -> Result<u64, Error> {
        let value: String = on_engine!(self, engine => engine.published_seq().await)?;
        value
            .parse()
            .map_err(|_| Error::Internal(format!("meta.published_seq is not a number: {value:?}")))
    }

    /// Records that every event up to `seq` is on the Redis stream.
    pub async fn set_published_seq(&self, seq: u64) -> Result<(), Error> {
        on_engine!(self, engine => engine.set_published_seq(seq).await)
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
        on_engine!(self, engine => engine.prune_events(bound).await)
    }

    /// Waits until this process holds `duty` (at once on SQLite, whose one
    /// process holds everything; on PostgreSQL, once no other process holds it),
    /// or until `stop` is cancelled (`None`).
    pub async fn acquire(
        &self,
        duty: Duty,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<Lease> {
        match &self.engine {
            Engine::Sqlite(_) => Some(Lease::forever()),
            Engine::Postgres(engine) => engine.acquire(duty, stop).await,
        }
    }

    /// Creates one demo user when the database never held one, so a fresh demo
    /// has a user 1 to edit. Returns it if it was made. Several processes may
    /// ask at once; only one makes it.
    pub async fn seed_demo_user(&self) -> Result<Option<User>, Error> {
        let create = || self.create_user("John".into(), "Doe".into());
        on_engine!(self, engine => engine.seed_demo_user(create).await)
    }
}
