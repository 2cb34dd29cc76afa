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
/// tests share no data and can run in parallel.
pub struct UserService {
    /// The running binary, to kill, signal or read the logs of.
    pub process: Process,
    /// Holds the database; a restart on it finds the same users and events.
    pub dir: tempfile::TempDir,
}

impl UserService {
    /// Starts one on a free port; `extra` are more flags (e.g. `--redis-url`).
    pub async fn start(extra: &[String]) -> UserService {
        Self::start_with(extra, |_| {}).await
    }

    /// [`UserService::start`], with `configure` applied to the command.
    pub async fn start_with(extra: &[String], configure: impl FnOnce(&mut Command)) -> UserService {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let process = Process::start_with(
            &binary("user-service"),
            &args(&dir, extra, "127.0.0.1:0"),
            configure,
        )
        .await
        .expect("the user-service starts");
        UserService { process, dir }
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
        let args = args(&self.dir, extra, &addr.to_string());
        // The port may linger for a moment after the old process.
        self.process = eventually(
            Poll::within(START_TIMEOUT).every(Duration::from_millis(200)),
            &format!("the user-service to start again on {addr}"),
            async || Process::start(&binary("user-service"), &args).await,
        )
        .await;
    }
}

/// The user-service's flags for a database in `dir`, listening on `listen`.
fn args(dir: &tempfile::TempDir, extra: &[String], listen: &str) -> Vec<String> {
    let mut args = vec![
        "--listen".to_owned(),
        listen.to_owned(),
        "--database-url".to_owned(),
        format!("sqlite://{}", dir.path().join("users.db").display()),
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
    Process::start(&binary("gateway"), &args)
        .await
        .expect("the gateway starts")
}
