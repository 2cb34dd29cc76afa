//! `Postgres` through a real client (sqlx, as the user-service will use it):
//! what a test of the service relies on it for. A row committed before a
//! SIGKILL is there after the next start, a killed or stopped server refuses
//! connections, and servers of two tests run side by side without meeting.

use std::time::Duration;

use sqlx::{Connection, PgConnection, Row};
use test_support::{Postgres, PostgresOptions};

/// Connects to `url`, failing instead of waiting when nothing answers.
async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// Creates table `notes` and commits one row with `text` in it.
async fn write_note(url: &str, text: &str) {
    let mut db = connect(url).await.expect("a connection");
    sqlx::query("CREATE TABLE IF NOT EXISTS notes (text TEXT NOT NULL)")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes (text) VALUES ($1)")
        .bind(text)
        .execute(&mut db)
        .await
        .unwrap();
}

/// Every note in the database at `url`, in the order written.
async fn notes(url: &str) -> Vec<String> {
    let mut db = connect(url).await.expect("a connection");
    sqlx::query("SELECT text FROM notes ORDER BY ctid")
        .fetch_all(&mut db)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn a_committed_row_survives_a_kill_and_a_restart() {
    let mut postgres = Postgres::start().await.unwrap();
    let port = postgres.port();
    let url = postgres.create_database("survives_kill").await.unwrap();
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{port}/survives_kill")
    );
    write_note(&url, "committed").await;
    let mut open = connect(&url).await.unwrap();

    postgres.kill().await.unwrap();
    assert_eq!(postgres.pid(), None);
    let error = sqlx::query("SELECT 1").execute(&mut open).await;
    assert!(error.is_err(), "a session of the killed server answered");
    assert!(
        connect(&url).await.is_err(),
        "a killed server accepted a connection"
    );

    postgres.start_again().await.unwrap();
    assert_eq!(postgres.port(), port);
    assert!(
        postgres
            .logs()
            .iter()
            .any(|line| line.contains("not properly shut down")),
        "the start after a kill recovers from a crash: {:#?}",
        postgres.logs()
    );
    assert_eq!(notes(&url).await, ["committed"]);
}

#[tokio::test]
async fn a_stopped_server_refuses_connections_and_starts_again_with_its_data() {
    let mut postgres = Postgres::start().await.unwrap();
    let url = postgres.create_database("survives_stop").await.unwrap();
    write_note(&url, "before the stop").await;

    postgres.stop().await.unwrap();
    assert!(
        connect(&url).await.is_err(),
        "a stopped server accepted a connection"
    );
    assert!(
        postgres
            .logs()
            .iter()
            .any(|line| line.contains("received fast shutdown request")),
        "{:#?}",
        postgres.logs()
    );
    assert!(postgres.stop().await.is_err(), "it is not running");

    postgres.start_again().await.unwrap();
    assert!(postgres.start_again().await.is_err(), "it already runs");
    write_note(&url, "after the start").await;
    postgres.restart().await.unwrap();
    assert_eq!(notes(&url).await, ["before the stop", "after the start"]);
}

#[tokio::test]
async fn two_servers_run_side_by_side_apart() {
    let (first, second) = tokio::join!(
        Postgres::start(),
        Postgres::start_with(PostgresOptions::default().fsync(false))
    );
    let (first, mut second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.port(), second.port());
    let (one, two) = (
        first.create_database("shared_name").await.unwrap(),
        second.create_database("shared_name").await.unwrap(),
    );
    write_note(&one, "first's").await;
    write_note(&two, "second's").await;
    assert_eq!(notes(&one).await, ["first's"]);
    assert_eq!(notes(&two).await, ["second's"]);

    let mut db = connect(&two).await.unwrap();
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(fsync, "off");

    second.kill().await.unwrap();
    assert_eq!(notes(&one).await, ["first's"], "the other one runs on");
}

#[tokio::test]
async fn a_database_name_that_would_need_quoting_is_refused() {
    let postgres = Postgres::start().await.unwrap();
    for name in ["", "a-b", "x; DROP", "1st", &"n".repeat(64)] {
        assert!(postgres.create_database(name).await.is_err(), "{name:?}");
    }
    assert!(postgres.create_database("Mixed_Case_9").await.is_ok());
}
