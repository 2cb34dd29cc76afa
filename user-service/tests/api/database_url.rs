//! A database URL is told by its scheme, so a typo or another engine's URL is
//! refused at start with the accepted schemes named, never taken for a file path
//! (where an operator's data would silently go to a local file).

use std::time::Duration;

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
        "postgres://postgres@127.0.0.1:5432/app",
        "postgresql://postgres@127.0.0.1:5432/app",
    ] {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (code, stderr) = start_with(url, &dir).await;
        assert_eq!(code, Some(2), "{url}: a usage error; stderr: {stderr}");
        assert!(stderr.contains("--database-url"), "{url}: {stderr}");
        assert!(
            stderr.contains("sqlite://"),
            "{url}: names the accepted scheme: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{url}: nothing created, found {left:?}");
    }
}
