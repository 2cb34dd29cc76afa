//! A database URL is told by its scheme, so a typo or another engine's URL is
//! refused at start with the accepted schemes named, never taken for a file path
//! (where an operator's data would silently go to a local file).

use std::time::Duration;

use sqlx::Connection;
use tokio::process::Command;

/// Runs the user-service with `url` in an empty folder; its exit code and stderr.
async fn start_with(url: &str, dir: &tempfile::TempDir) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_user-service"));
    command
        .args(["--listen", "127.0.0.1:0", "--database-url", url])
        .current_dir(dir.path())
        .env_clear()
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the user-service exits in time")
        .expect("the user-service runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn other_schemes_and_typos_are_refused_naming_the_accepted_ones() {
    for url in [
        "mysql://root@127.0.0.1/app",
        "sqlit://data/users.db",
        "postgress://postgres@127.0.0.1:5432/app",
    ] {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (code, stderr) = start_with(url, &dir).await;
        assert_eq!(code, Some(2), "{url}: a usage error; stderr: {stderr}");
        assert!(stderr.contains("--database-url"), "{url}: {stderr}");
        assert!(
            stderr.contains("sqlite://") && stderr.contains("postgres://"),
            "{url}: names the accepted schemes: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{url}: nothing created, found {left:?}");
    }
}

/// A PostgreSQL that cannot be used stops the start at once (well within the
/// connect timeout), exit 1, with one line that says why in the server's own
/// words and never shows the password.
#[tokio::test]
async fn an_unusable_postgresql_is_one_clear_line_and_exit_1() {
    let server = test_support::shared_database("refusals").await.unwrap();
    let port = server
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap()
        .to_owned();
    let closed = test_support::free_port();
    let cases = [
        (
            format!("postgres://postgres:s3cret@127.0.0.1:{closed}/app"),
            "Connection refused",
        ),
        (
            format!("postgresql://postgres@127.0.0.1:{port}/no_such_database"),
            "database \"no_such_database\" does not exist",
        ),
        (
            format!("postgres://nobody:s3cret@127.0.0.1:{port}/postgres"),
            "role \"nobody\" does not exist",
        ),
    ];
    for (url, reason) in cases {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let started = std::time::Instant::now();
        let (code, stderr) = start_with(&url, &dir).await;
        assert_eq!(code, Some(1), "{url}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url}: took {:?}",
            started.elapsed()
        );
        let line = stderr
            .lines()
            .find(|line| line.starts_with("error: "))
            .unwrap_or_else(|| panic!("{url}: no error line in {stderr}"));
        assert!(line.contains("cannot connect to PostgreSQL"), "{line}");
        assert!(line.contains(reason), "{url}: {line}");
        assert!(!stderr.contains("s3cret"), "the password shows: {stderr}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{url}: nothing created, found {left:?}");
    }
}

/// A standby (or a server set read-only) would accept the connection and
/// refuse every write later: it is refused at start instead.
#[tokio::test]
async fn a_read_only_postgresql_is_refused_at_start() {
    let url = test_support::shared_database("read_only").await.unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} SET default_transaction_read_only = on"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (code, stderr) = start_with(&url, &dir).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the database takes no writes: default_transaction_read_only is on"),
        "{stderr}"
    );
}
