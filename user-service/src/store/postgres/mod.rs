//! The PostgreSQL engine: several user-services share one database.
//!
//! - Writes: each process batches its own writes into one transaction (group
//!   commit, as on SQLite), taking its events' seqs from the one row of
//!   `event_head` last, just before it commits. That row's lock makes every
//!   transaction that records events commit after the one before it, so seqs
//!   appear in commit order with no gap (`writer`).
//! - Events: a follower task reads every process's new events from the table
//!   and announces them in seq order, woken by `LISTEN/NOTIFY` and by this
//!   process's own commits, and polling besides, so a lost notification only
//!   delays an event (`follower`).
//! - Duties: the relay and retention run in one process at a time, each held by
//!   a session advisory lock (`lease`).

mod follower;
mod lease;
mod writer;

use std::{future::Future, str::FromStr, sync::Arc, time::Duration, time::Instant};

use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{
    Saved, UserPage, UserWrite,
    backend::redact,
    feed::Feed,
    lease::{Duty, Lease},
    rows::{EventRow, into_events},
};
use crate::{
    domain::{Event, User},
    error::Error,
    metrics,
};
use writer::PgWriter;

/// Connections for reads (and the relay's and retention's statements).
const POOL_SIZE: u32 = 10;
/// Longest wait for a connection, at start and for each call: a database that
/// cannot be reached fails calls with UNAVAILABLE after this, not after the
/// call's own deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a write's answer waits for its event to be announced.
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);
/// Lock key that makes seeding the demo user one process's job.
const SEED_LOCK_KEY: i64 = 0x7573_6572_7300;

/// Columns of a user, in the order [`User`] is read from.
const USER_COLUMNS: &str = "id, first_name, last_name, create_time, update_time, version";

/// A PostgreSQL database, its pool, this process's writer and follower.
pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
    writer: PgWriter,
    /// The feed's head, to wait until a write's event is announced.
    head: watch::Receiver<u64>,
}

impl PgStore {
    /// Connects to `url` (failing within [`CONNECT_TIMEOUT`] with the server's own
    /// reason: refused, wrong password, no such database, read-only), applies the
    /// migrations (sqlx serialises concurrent migrators with an advisory lock),
    /// reads the epoch and the newest seq, and starts the writer and the
    /// follower.
    pub async fn open(url: &str) -> Result<(PgStore, String, Arc<Feed>), Error> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("user-service")
            .log_statements(tracing::log::LevelFilter::Trace);
        let cannot = |reason: String| {
            Error::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {reason}",
                redact(url)
            ))
        };
        let mut first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| cannot(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| match error.as_database_error() {
                // The server's own words ("password authentication failed for
                // user …", "database … does not exist").
                Some(db) => cannot(db.message().to_owned()),
                None => cannot(error.to_string()),
            })?;
        refuse_read_only(&mut first).await?;
        sqlx::migrate!("../migrations/postgres")
            .run(&mut first)
            .await
            .map_err(|e| Error::Internal(format!("migrating the database: {e}")))?;
        let epoch: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'epoch'")
            .fetch_one(&mut first)
            .await?;
        let head: i64 = sqlx::query_scalar("SELECT seq FROM event_head")
            .fetch_one(&mut first)
            .await?;
        first.close().await?;

        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(CONNECT_TIMEOUT)
            // A broken connection fails one statement and is dropped; pinging
            // before every use would cost each call a round trip.
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        let feed = Feed::new(head as u64);
        let committed = Arc::new(Notify::new());
        tokio::spawn(follower::run(
            pool.clone(),
            Arc::downgrade(&feed),
            committed.clone(),
        ));
        let writer = PgWriter::spawn(options.clone(), feed.clone(), committed);
        let store = PgStore {
            pool,
            options,
            writer,
            head: feed.head.subscribe(),
        };
        Ok((store, epoch, feed))
    }

    /// See [`super::Store::watch_writable`].
    pub fn watch_writable(&self) -> watch::Receiver<bool> {
        self.writer.watch_writable()
    }

    /// See [`super::Store::list_users`]: the count and the page come from one
    /// REPEATABLE READ snapshot.
    pub async fn list_users(
        &self,
        after_id: i64,
        skip: i64,
        limit: i64,
    ) -> Result<UserPage, Error> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        let mut users: Vec<User> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2 OFFSET $3"
        )))
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

    /// See [`super::Store::get_user`]. No cache: other processes write too.
    pub async fn get_user(&self, id: i64) -> Result<User, Error> {
        let started = Instant::now();
        let user: Option<User> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        metrics::db_query("get_user", started);
        user.ok_or(Error::NotFound)
    }

    /// Queues `write` for this process's writer and waits until its batch
    /// committed and its event is announced here, as on SQLite: whoever hears
    /// of the write from the answer finds it in the feed (a WatchUsers opened
    /// next starts after it). The announcement waits for every earlier event,
    /// other processes' too; if that takes longer than [`ANNOUNCE_WAIT`], the
    /// answer goes anyway (the write is committed) and the event follows.
    pub async fn write_user(&self, write: UserWrite) -> Result<Saved, Error> {
        let saved = self.writer.submit(write).await?;
        if let Some(seq) = saved.seq {
            let mut head = self.head.clone();
            let _ = tokio::time::timeout(ANNOUNCE_WAIT, head.wait_for(|&head| head >= seq)).await;
        }
        Ok(saved)
    }

    /// See [`super::Store::events_after`].
    pub async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<Event>, Error> {
        events_after(&self.pool, after, limit).await
    }

    /// See [`super::Store::oldest_seq`].
    pub async fn oldest_seq(&self) -> Result<Option<u64>, Error> {
        let started = Instant::now();
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM events")
            .fetch_one(&self.pool)
            .await?;
        metrics::db_query("oldest_seq", started);
        Ok(oldest.map(|s| s as u64))
    }

    /// The relay's cursor as stored (text in `meta`).
    pub async fn published_seq(&self) -> Result<String, Error> {
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'published_seq'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// See [`super::Store::set_published_seq`]; only the relay's lease holder
    /// calls it.
    pub async fn set_published_seq(&self, seq: u64) -> Result<(), Error> {
        sqlx::query("UPDATE meta SET value = $1 WHERE key = 'published_seq'")
            .bind(seq.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// See [`super::Store::start_new_epoch`].
    pub async fn new_epoch(&self) -> Result<String, Error> {
        Ok(sqlx::query_scalar(
            "UPDATE meta SET value = md5(random()::text || clock_timestamp()::text)
             WHERE key = 'epoch' RETURNING value",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The newest seq the database holds (every process's commits).
    pub async fn newest_seq(&self) -> Result<u64, Error> {
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(newest as u64)
    }

    /// Deletes the events with a seq at most `upto`; returns how many went.
    /// Only retention's lease holder calls it.
    pub async fn prune_events(&self, upto: u64) -> Result<u64, Error> {
        let started = Instant::now();
        let deleted = sqlx::query("DELETE FROM events WHERE seq <= $1")
            .bind(upto as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
        metrics::db_query("prune_events", started);
        Ok(deleted)
    }

    /// See [`super::Store::acquire`].
    pub async fn acquire(&self, duty: Duty, stop: &CancellationToken) -> Option<Lease> {
        lease::acquire(&self.options, duty, stop).await
    }

    /// Runs `create` when the database never held a user, under an advisory
    /// lock so that of several processes starting at once only one creates it.
    pub async fn seed_demo_user<F, Fut>(&self, create: F) -> Result<Option<User>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Saved, Error>>,
    {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SEED_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
        let seeded = async {
            let ever: i64 = sqlx::query_scalar(
                "SELECT (SELECT seq FROM event_head) + (SELECT COUNT(*) FROM users)",
            )
            .fetch_one(&mut *conn)
            .await?;
            if ever > 0 {
                return Ok(None);
            }
            Ok(Some(create().await?.user))
        }
        .await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SEED_LOCK_KEY)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // Closing the session releases the lock.
            conn.close_on_drop();
        }
        seeded
    }
}

/// Up to `limit` events after `after`, in seq order.
async fn events_after(pool: &PgPool, after: u64, limit: u32) -> Result<Vec<Event>, Error> {
    let started = Instant::now();
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, action::BIGINT AS action, user_id, first_name, last_name, create_time,
                update_time, version, changed, commit_time
         FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after as i64)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    metrics::db_query("events_after", started);
    into_events(rows)
}

/// Refuses a database that takes no writes (a standby, or one set read-only),
/// which a URL pointing at a replica instead of the primary would give.
async fn refuse_read_only(conn: &mut PgConnection) -> Result<(), Error> {
    let (standby, read_only): (bool, String) = sqlx::query_as(
        "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if standby || read_only == "on" {
        let why = if standby {
            "it is a standby (pg_is_in_recovery)"
        } else {
            "default_transaction_read_only is on"
        };
        return Err(Error::Storage(format!(
            "the database takes no writes: {why}; point --database-url at the primary"
        )));
    }
    Ok(())
}
