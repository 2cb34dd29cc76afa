//! The two services started the way most tests want them: a user-service on a
//! fresh database, a gateway in front of it.

use std::{net::SocketAddr, time::Duration};

use test_support::{Poll, eventually};
use tokio::process::Command;

use crate::{
    binaries::{Process, binary},
    timeouts::START_TIMEOUT,
};

/// A user-service on a fresh SQLite database in its own temporary folder, so
/// tests share no data and can run in parallel; or on a database URL a test
/// gives (PostgreSQL, which several user-services may share).
pub struct UserService {
    /// The running binary, to kill, signal or read the logs of.
    pub process: Process,
    /// Holds the SQLite database; a restart on it finds the same users and
    /// events.
    pub dir: tempfile::TempDir,
    /// The database it runs on when not the SQLite file in `dir`.
    pub database_url: Option<String>,
}

impl UserService {
    /// Starts one on a free port; `extra` are more flags (e.g. `--redis-url`).
    pub async fn start(extra: &[String]) -> UserService {
        Self::start_with(extra, |_| {}).await
    }

    /// [`UserService::start`], with `configure` applied to the command.
    pub async fn start_with(extra: &[String], configure: impl FnOnce(&mut Command)) -> UserService {
        let dir = tempfile::tempdir().expect("a temporary folder");
        Self::start_on(None, dir, extra, configure).await
    }

    /// One on `database_url` (e.g. a PostgreSQL database other user-services
    /// share), on a free port.
    pub async fn start_on_database(database_url: &str, extra: &[String]) -> UserService {
        let dir = tempfile::tempdir().expect("a temporary folder");
        Self::start_on(Some(database_url.to_owned()), dir, extra, |_| {}).await
    }

    async fn start_on(
        database_url: Option<String>,
        dir: tempfile::TempDir,
        extra: &[String],
        configure: impl FnOnce(&mut Command),
    ) -> UserService {
        let process = Process::start_with(
            &binary("user-service"),
            &args(&database_url_of(&dir, &database_url), extra, "127.0.0.1:0"),
            configure,
        )
        .await
        .expect("the user-service starts");
        UserService {
            process,
            dir,
            database_url,
        }
    }

    /// Its gRPC URL, as a gateway's `--user-service-url` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.process.addr)
    }

    /// Kills it and starts it again on the same port and database: a crash the
    /// gateway must ride out.
    pub async fn restart(&mut self, extra: &[String]) {
        let addr = self.process.addr;
        self.process.kill().await;
        self.start_again(extra, addr).await;
    }

    /// Starts it again on `addr` after it was stopped: the address the
    /// gateway knows it by, so the gateway has to find it again by itself.
    pub async fn start_again(&mut self, extra: &[String], addr: SocketAddr) {
        let database_url = database_url_of(&self.dir, &self.database_url);
        let args = args(&database_url, extra, &addr.to_string());
        // The port may linger for a moment after the old process.
        self.process = eventually(
            Poll::within(START_TIMEOUT).every(Duration::from_millis(200)),
            &format!("the user-service to start again on {addr}"),
            async || Process::start(&binary("user-service"), &args).await,
        )
        .await;
    }
}

/// `database_url`, or the SQLite file in `dir`.
fn database_url_of(dir: &tempfile::TempDir, database_url: &Option<String>) -> String {
    database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("users.db").display()))
}

/// The user-service's flags for `database_url`, listening on `listen`.
fn args(database_url: &str, extra: &[String], listen: &str) -> Vec<String> {
    let mut args = vec![
        "--listen".to_owned(),
        listen.to_owned(),
        "--database-url".to_owned(),
        database_url.to_owned(),
    ];
    args.extend(extra.iter().cloned());
    args
}

/// Flags that lift the gateway's rate limits, for tests that write and connect
/// faster than any one client should.
pub fn unthrottled() -> Vec<String> {
    ["--rate-limit-writes", "off", "--rate-limit-connects", "off"]
        .map(str::to_owned)
        .to_vec()
}

/// Starts a gateway in front of `user_service_url`, with more flags in `extra`.
/// Unless `extra` says otherwise, it runs with `--auth none` (the security suite
/// tests authentication; the others test everything else).
pub async fn start_gateway(user_service_url: &str, extra: &[String]) -> Process {
    start_gateway_with(user_service_url, extra, |_| {}).await
}

/// [`start_gateway`], with `configure` applied to the command (an environment
/// variable, say).
pub async fn start_gateway_with(
    user_service_url: &str,
    extra: &[String],
    configure: impl FnOnce(&mut Command),
) -> Process {
    let mut args = vec![
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--user-service-url".to_owned(),
        user_service_url.to_owned(),
    ];
    if !extra.iter().any(|arg| arg == "--auth") {
        args.extend(["--auth".to_owned(), "none".to_owned()]);
    }
    args.extend(extra.iter().cloned());
    Process::start_with(&binary("gateway"), &args, configure)
        .await
        .expect("the gateway starts")
}
