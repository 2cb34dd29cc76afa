//! Duties held through session advisory locks, each on a connection of its
//! own: the lock lasts as long as that session, so a holder that dies (or whose
//! connection breaks) loses it and a waiting process takes over.

use std::time::Duration;

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio_util::sync::CancellationToken;

use super::CONNECT_TIMEOUT;
use crate::store::lease::{Duty, Lease};

/// How often a process waiting for a duty tries its lock, so a dead holder's
/// duty is taken over within about this much after PostgreSQL notices.
const RETRY: Duration = Duration::from_secs(1);
/// How often the holder checks that its lock's connection is alive.
const CHECK: Duration = Duration::from_secs(1);

/// Waits until this process holds `duty`'s lock (or `stop` is cancelled).
pub async fn acquire(
    options: &PgConnectOptions,
    duty: Duty,
    stop: &CancellationToken,
) -> Option<Lease> {
    let mut conn: Option<PgConnection> = None;
    let mut failing = false;
    loop {
        match try_lock(&mut conn, options, duty).await {
            Ok(true) => {
                let conn = conn.take()?;
                let lost = CancellationToken::new();
                let keeper = tokio::spawn(keep(conn, lost.clone()));
                return Some(Lease::kept_by(keeper, lost));
            }
            Ok(false) => failing = false,
            Err(error) => {
                conn = None;
                if !failing {
                    tracing::warn!(duty = duty.name(), %error, "cannot reach the database to take a duty; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Tries the lock once, on `conn` (connected first if needed).
async fn try_lock(
    conn: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    duty: Duty,
) -> Result<bool, sqlx::Error> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options))
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??,
        ),
    };
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(duty.lock_key())
        .fetch_one(conn)
        .await
}

/// Holds the lock's connection, checking it every [`CHECK`]; cancels `lost`
/// when a check fails or takes longer than the interval, then closes it.
async fn keep(mut conn: PgConnection, lost: CancellationToken) {
    loop {
        tokio::time::sleep(CHECK).await;
        let alive = tokio::time::timeout(CHECK, conn.ping()).await;
        if !matches!(alive, Ok(Ok(()))) {
            lost.cancel();
            return;
        }
    }
}
