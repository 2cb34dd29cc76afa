//! Moves WAL checkpoints off the write path. SQLite's automatic checkpoint makes
//! the commit that crosses 1,000 WAL pages copy them into the database file and
//! fsync it before it returns, so every thousandth-odd write would wait tens of
//! milliseconds. Instead the writer never checkpoints (`wal_autocheckpoint=0`)
//! and this task runs a PASSIVE checkpoint on its own connection shortly after
//! writes: it takes no write lock, so commits carry on while it copies.

use std::time::Duration;

use sqlx::{Connection, SqliteConnection, sqlite::SqliteConnectOptions};
use tokio::sync::watch;

/// How long after a write the checkpoint waits, so a burst shares one.
const DELAY: Duration = Duration::from_millis(250);

/// Checkpoints after writes until the head's sender (the store) is gone.
pub async fn run(options: SqliteConnectOptions, mut head: watch::Receiver<u64>) {
    let mut conn: Option<SqliteConnection> = None;
    let mut failing = false;
    while head.changed().await.is_ok() {
        tokio::time::sleep(DELAY).await;
        head.mark_unchanged();
        match checkpoint(&mut conn, &options).await {
            Ok(()) => failing = false,
            Err(error) => {
                // Closed and reopened next time; the WAL only grows meanwhile.
                conn = None;
                if !failing {
                    tracing::warn!(%error, "WAL checkpoint failed; retrying after the next write");
                }
                failing = true;
            }
        }
    }
}

async fn checkpoint(
    conn: &mut Option<SqliteConnection>,
    options: &SqliteConnectOptions,
) -> Result<(), sqlx::Error> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(SqliteConnection::connect_with(options).await?),
    };
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(conn)
        .await?;
    Ok(())
}
