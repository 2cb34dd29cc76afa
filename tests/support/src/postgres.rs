//! A real PostgreSQL server per test, because what the user-service does when
//! its database stops, crashes or comes back after a crash (with what it had
//! committed, and nothing else) is what these tests are about: a shared server
//! could not be killed by one test without failing the others, and a fake would
//! only answer the way we expect.
//!
//! Each [`Postgres`] is a cluster of its own: `initdb` into a fresh temporary
//! folder, a postmaster on a port of its own, and levers to stop it cleanly,
//! kill it with SIGKILL and start it again on the same port and data. The
//! machine may run a PostgreSQL of its own (Debian's `main` cluster on port
//! 5432); these tests neither use nor disturb it.
//!
//! How the programs are found and run:
//! - The binaries come from `POSTGRES_BIN_DIR` when set, else from the newest
//!   `/usr/lib/postgresql/<major>/bin` (where Debian's packages put them, off
//!   the PATH), else from the folder of an `initdb` on the PATH.
//! - `postgres` refuses to run as root: as root it runs as the `postgres` OS
//!   user (`runuser -u postgres --`) in a folder chowned to that user; as
//!   anyone else it runs as that user.
//! - `runuser` forks the postmaster rather than becoming it, so signalling the
//!   child we spawned would not reach the database. The levers signal the
//!   postmaster itself (its process id from the first line of
//!   `postmaster.pid`), and every wait for "gone" looks for the server's
//!   processes by their working directory, which PostgreSQL sets to the data
//!   folder in the postmaster and every process it forks.

use std::{
    ffi::OsString,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use tokio::process::Command;

use crate::{Poll, Process, free_port, poll_until, send_signal};

/// How long a server may take to accept connections after it starts,
/// including the crash recovery that follows a kill.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown, or the end of the processes of a killed server,
/// may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one of the client programs (`pg_isready`, `createdb`) may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports [`Postgres::start`] tries when the one it got was taken
/// meanwhile.
const PORT_TRIES: usize = 5;
/// The OS user, and the database superuser, the server runs as.
const SUPERUSER: &str = "postgres";
/// What a machine without PostgreSQL is told.
const NOT_INSTALLED: &str =
    "PostgreSQL is not installed: apt-get install postgresql (scripts/test does it)";
/// Start failures worth another try: the port taken between our check and the
/// server's bind, or the processes of a killed server not yet all gone.
const RETRYABLE: [&str; 3] = [
    "Address already in use",
    "could not create any TCP/IP sockets",
    "is still in use",
];

/// How a [`Postgres`] runs, for the tests that need something else than a
/// server as durable as production's.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Whether commits are flushed to disk before they are acknowledged
    /// (PostgreSQL's `fsync`). On by default because tests check durability;
    /// a test that only needs speed may turn it off. (A SIGKILL loses nothing
    /// either way: the kernel keeps what was written. Only the machine
    /// crashing would.)
    pub fsync: bool,
    /// More server settings, each passed as `-c name=value` (e.g.
    /// `max_connections` for a test of pool exhaustion).
    pub settings: Vec<(String, String)>,
}

impl Default for PostgresOptions {
    /// Production's durability, no other setting.
    fn default() -> PostgresOptions {
        PostgresOptions {
            fsync: true,
            settings: Vec::new(),
        }
    }
}

impl PostgresOptions {
    /// The same options with `fsync` set to `on`.
    pub fn fsync(self, on: bool) -> PostgresOptions {
        PostgresOptions { fsync: on, ..self }
    }

    /// The same options with one more server setting.
    pub fn setting(mut self, name: &str, value: &str) -> PostgresOptions {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A PostgreSQL server of one test's own on a port of its own, with its data in
/// a temporary folder that outlives stops, kills and restarts (so a test can
/// see what survives a crash) and goes when it is dropped. Dropping it kills
/// the server's processes and removes the folder.
pub struct Postgres {
    bin: PathBuf,
    /// Whether the server runs as the `postgres` OS user (we are root).
    as_postgres: bool,
    options: PostgresOptions,
    /// Owned by the server's user: the data folder and the Unix socket live here.
    root: tempfile::TempDir,
    /// `root/data`, its path resolved, as the server's processes see it.
    data: PathBuf,
    port: u16,
    /// The program we spawned last (`runuser`, or `postgres` itself), kept
    /// after it ends for [`Postgres::logs`].
    process: Option<Process>,
    /// The postmaster's process id, while it runs.
    postmaster: Option<u32>,
}

impl Postgres {
    /// A new cluster with production's durability, started on a free port;
    /// returns once it accepts connections. It has only the `postgres`
    /// database and superuser (trust authentication on 127.0.0.1): a test
    /// creates what it needs with [`Postgres::create_database`].
    pub async fn start() -> anyhow::Result<Postgres> {
        Postgres::start_with(PostgresOptions::default()).await
    }

    /// [`Postgres::start`] with other [`PostgresOptions`].
    ///
    /// It is ready when two things hold: its `postmaster.pid` says `ready` with
    /// our port (so the server on that port is ours, not someone else's that
    /// took it), and `pg_isready` on 127.0.0.1 says it accepts connections.
    /// `pg_isready` rather than a bare TCP connect or a hand-written startup
    /// message: during start-up and crash recovery the port already accepts
    /// TCP connections yet refuses sessions ("the database system is starting
    /// up"), and `pg_isready` is the installed server's own client (libpq),
    /// which tells that apart in the protocol of that very version.
    pub async fn start_with(options: PostgresOptions) -> anyhow::Result<Postgres> {
        let bin = bin_dir(
            std::env::var_os("POSTGRES_BIN_DIR"),
            Path::new("/usr/lib/postgresql"),
            std::env::var_os("PATH"),
        )?;
        let mut postgres = Postgres::init(bin, options).await?;
        let mut tries = 1;
        loop {
            postgres.port = free_port();
            match postgres.spawn().await {
                Ok(()) => return Ok(postgres),
                Err(error) if retryable(&error) && tries < PORT_TRIES => tries += 1,
                Err(error) => bail!(error),
            }
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`: what the
    /// user-service takes as `--database-url`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name` and returns its URL. Each test names its own
    /// (tests that share a server must not share a database); the name must be
    /// a plain identifier (ASCII letters, digits and `_`, at most 63 bytes) so
    /// that it needs no quoting in SQL nor escaping in the URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        ensure!(
            !name.is_empty()
                && name.len() <= 63
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?}: letters, digits and _ only, not first a digit, at most 63 bytes"
        );
        let mut command = Command::new(self.bin.join("createdb"));
        command
            .args(self.client_flags())
            .arg("--no-password")
            .arg(name);
        run(command)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("creating database {name} on port {}", self.port))?;
        Ok(self.url(name))
    }

    /// Its port on 127.0.0.1; it keeps it across stops and restarts, as a
    /// database host keeps its address.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id, while it runs: for a test's own signals
    /// (SIGSTOP freezes only the postmaster, not the sessions it forked).
    pub fn pid(&self) -> Option<u32> {
        self.postmaster
    }

    /// What the server has logged since it last started (until it next starts,
    /// when stopped): for a failing test's message, or to see that a start
    /// after a kill recovered from a crash.
    pub fn logs(&self) -> Vec<String> {
        self.process.as_ref().map(Process::logs).unwrap_or_default()
    }

    /// Stops it cleanly (SIGINT: PostgreSQL's fast shutdown, which rolls back
    /// open transactions, closes sessions and writes a checkpoint) and waits
    /// until it has exited: a planned shutdown, as in a rolling upgrade.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let postmaster = self.postmaster.context("PostgreSQL is not running")?;
        send_signal(postmaster, libc::SIGINT)?;
        self.wait_until_gone("stop").await
    }

    /// Kills the postmaster (SIGKILL) and waits until its port is free and
    /// every process of the server is gone: a crash. The sessions it forked end
    /// on their own when they see their postmaster die, as they would in
    /// production; the next start runs crash recovery.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let postmaster = self.postmaster.context("PostgreSQL is not running")?;
        send_signal(postmaster, libc::SIGKILL)?;
        self.wait_until_gone("die").await
    }

    /// Starts it again after [`Postgres::stop`] or [`Postgres::kill`], on the
    /// same port and data (what was committed is there), and waits until it
    /// accepts connections. The port is its clients' address, so a port still
    /// held a moment is waited out rather than changed.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        ensure!(self.postmaster.is_none(), "PostgreSQL is already running");
        // Ok ends the wait, with the start's outcome; Err is worth another try.
        let outcome = poll_until(
            Poll::within(START_TIMEOUT).every(Duration::from_millis(200)),
            async || match self.spawn().await {
                Err(error) if retryable(&error) => Err(error),
                outcome => Ok(outcome),
            },
        )
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) | Err(error) => bail!(error),
        }
    }

    /// Stops it cleanly and starts it again on the same port and data: a
    /// planned restart. (A crash and a restart is [`Postgres::kill`] then
    /// [`Postgres::start_again`].)
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// A fresh cluster in a temporary folder the server's user owns; not
    /// started.
    async fn init(bin: PathBuf, options: PostgresOptions) -> anyhow::Result<Postgres> {
        // SAFETY: geteuid(2) takes nothing and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        // As root the folder must be one the postgres user can reach: /tmp,
        // whatever TMPDIR says (it may lie under root's home).
        let root = if as_postgres {
            tempfile::Builder::new()
                .prefix("postgres-")
                .tempdir_in("/tmp")
        } else {
            tempfile::Builder::new().prefix("postgres-").tempdir()
        }
        .context("a temporary folder for PostgreSQL")?;
        let data = root
            .path()
            .canonicalize()
            .context("the temporary folder's path")?
            .join("data");
        let postgres = Postgres {
            bin,
            as_postgres,
            options,
            root,
            data,
            port: 0,
            process: None,
            postmaster: None,
        };
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.arg(format!("{SUPERUSER}:")).arg(postgres.root.path());
            run(chown)
                .await
                .map_err(anyhow::Error::msg)
                .context("giving the data folder to the postgres user")?;
        }
        let mut initdb = postgres.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&postgres.data)
            .args(["-A", "trust", "-U", SUPERUSER])
            // Nothing is worth flushing before the server starts; the server's
            // own fsync is what tests of durability depend on.
            .args(["--no-sync", "-E", "UTF8", "--locale=C"]);
        run(initdb).await.map_err(anyhow::Error::msg)?;
        Ok(postgres)
    }

    /// Starts the server on `self.port` and waits until it is ready (see
    /// [`Postgres::start_with`]); or why not, with its output. Leaves nothing
    /// running when it fails.
    async fn spawn(&mut self) -> Result<(), String> {
        let mut command = self.server_command("postgres");
        command
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.root.path())
            .args(["-c", "listen_addresses=127.0.0.1"]);
        if !self.options.fsync {
            command.args(["-c", "fsync=off"]);
        }
        for (name, value) in &self.options.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let mut process = Process::spawn(command).map_err(|error| format!("{error:#}"))?;
        let port = self.port;
        let ready = tokio::select! {
            ready = poll_until(
                Poll::within(START_TIMEOUT).every(Duration::from_millis(50)),
                async || self.ready().await,
            ) => ready.map_err(|seen| {
                format!("did not accept connections within {START_TIMEOUT:?} ({seen})")
            }),
            status = process.exited() => Err(format!("exited ({status:?})")),
        };
        match ready {
            Ok(postmaster) => {
                self.process = Some(process);
                self.postmaster = Some(postmaster);
                Ok(())
            }
            Err(why) => {
                kill_server_processes(&self.data);
                process.kill().await;
                Err(format!(
                    "PostgreSQL on port {port} {why}; its output:\n{}",
                    process.logs().join("\n")
                ))
            }
        }
    }

    /// The postmaster's id once the server is ready, or what it is instead.
    async fn ready(&self) -> Result<u32, String> {
        let before = self.pid_file_ready()?;
        let mut isready = Command::new(self.bin.join("pg_isready"));
        isready.args(self.client_flags()).args(["-t", "1"]);
        run(isready).await?;
        // After a kill the file of the killed server says `ready` until the new
        // postmaster replaces it: the same postmaster, alive, before and after
        // the client's look is the one that answered.
        let after = self.pid_file_ready()?;
        if before != after || !server_processes(&self.data).contains(&after) {
            return Err(format!("postmaster {before} gave way to {after}"));
        }
        Ok(after)
    }

    /// The postmaster's id if `postmaster.pid` says it is ready on our port.
    fn pid_file_ready(&self) -> Result<u32, String> {
        let status = PidFile::read(&self.data).ok_or("no postmaster.pid yet")?;
        if status.port != self.port || status.status != "ready" {
            return Err(format!(
                "postmaster.pid says {:?} on port {}",
                status.status, status.port
            ));
        }
        Ok(status.pid)
    }

    /// Waits until the program we spawned has exited, the port is free and no
    /// process of the server is left, after a signal that ends it.
    async fn wait_until_gone(&mut self, what: &str) -> anyhow::Result<()> {
        self.postmaster = None;
        let process = self.process.as_mut().context("PostgreSQL is not running")?;
        let port = self.port;
        tokio::time::timeout(STOP_TIMEOUT, process.exited())
            .await
            .with_context(|| format!("PostgreSQL did not {what} within {STOP_TIMEOUT:?}"))??;
        poll_until(Poll::within(STOP_TIMEOUT), async || {
            let left = server_processes(&self.data);
            if !left.is_empty() {
                Err(format!("processes {left:?} are left"))
            } else if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
                Err(format!("port {port} is still taken"))
            } else {
                Ok(())
            }
        })
        .await
        .map_err(|seen| {
            anyhow::anyhow!("PostgreSQL did not {what} within {STOP_TIMEOUT:?}: {seen}")
        })?;
        Ok(())
    }

    /// A server program from the bin folder, run as the server's user, in the
    /// server's folder (the postgres user may not enter ours).
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", SUPERUSER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(self.root.path());
        command
    }

    /// Where the client programs connect: this server, over TCP, as the
    /// superuser, whatever `PG*` variables the environment has.
    fn client_flags(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            SUPERUSER.into(),
        ]
    }
}

impl Drop for Postgres {
    /// Kills every process of the server, waits (bounded) until they are gone,
    /// and frees the shared memory a killed postmaster leaves behind (the
    /// kernel keeps it, and a machine has only so many segments); the folder
    /// goes with the `TempDir`.
    fn drop(&mut self) {
        kill_server_processes(&self.data);
        if let Some(status) = PidFile::read(&self.data) {
            remove_unattached_segment(status.shared_memory);
        }
    }
}

/// What the first lines of `postmaster.pid` say: a running (or killed)
/// server's process id, port, shared memory and status.
struct PidFile {
    pid: u32,
    port: u16,
    /// The id of its System V shared memory segment (the line's second number).
    shared_memory: Option<i32>,
    /// `starting`, `ready`, `stopping` or `standby`.
    status: String,
}

impl PidFile {
    fn read(data: &Path) -> Option<PidFile> {
        let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        Some(PidFile {
            pid: lines.first()?.trim().parse().ok()?,
            port: lines.get(3)?.trim().parse().ok()?,
            shared_memory: lines
                .get(6)
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok()),
            status: lines
                .get(7)
                .map(|line| line.trim().to_owned())
                .unwrap_or_default(),
        })
    }
}

/// The processes of the server whose data folder is `data`: those working in
/// it, which are the postmaster and everything it forked (PostgreSQL changes
/// into its data folder first thing). Exited processes not yet reaped have no
/// working directory and are not counted.
fn server_processes(data: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data))
        .collect()
}

/// SIGKILLs every process of the server and waits, blocking, until they are
/// gone (at most [`STOP_TIMEOUT`]): for `Drop`, and for a start that failed.
fn kill_server_processes(data: &Path) {
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    loop {
        let left = server_processes(data);
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for pid in left {
            let _ = send_signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes System V shared memory segment `id` if nothing is attached to it.
fn remove_unattached_segment(id: Option<i32>) {
    let Some(id) = id else { return };
    // SAFETY: shmid_ds is plain integers, for which zero is a valid value.
    let mut state: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: shmctl writes at most one shmid_ds into `state`, which is one.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut state) } == 0 && state.shm_nattch == 0 {
        // SAFETY: IPC_RMID reads no buffer.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// Whether a failed start is worth another try (see [`RETRYABLE`]).
fn retryable(error: &str) -> bool {
    RETRYABLE.iter().any(|cause| error.contains(cause))
}

/// Runs a short program to its end (bounded); what it said when it fails.
async fn run(mut command: Command) -> Result<(), String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let name = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("{name} did not finish within {CLIENT_TIMEOUT:?}"))?
        .map_err(|error| format!("starting {name}: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{name} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The folder of PostgreSQL's server programs: `explicit` (the
/// `POSTGRES_BIN_DIR` variable) when given, else the newest major version
/// under `debian` (`/usr/lib/postgresql/<major>/bin`), else the folder of an
/// `initdb` on `path`.
fn bin_dir(
    explicit: Option<OsString>,
    debian: &Path,
    path: Option<OsString>,
) -> anyhow::Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb"]
            .iter()
            .all(|program| dir.join(program).is_file())
    };
    if let Some(dir) = explicit {
        let dir = PathBuf::from(dir);
        ensure!(
            complete(&dir),
            "POSTGRES_BIN_DIR={} lacks initdb, postgres, pg_isready or createdb",
            dir.display()
        );
        return Ok(dir);
    }
    let newest = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            // "15", or "9.6" before version 10.
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let dir = entry.path().join("bin");
            complete(&dir).then_some((version, dir))
        })
        .max();
    if let Some((_, dir)) = newest {
        return Ok(dir);
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .find(|dir| complete(dir))
        .context(NOT_INSTALLED)
}

/// The server [`shared_database`] creates databases on, started once per test
/// process; `Err` says why it could not start.
static SHARED: std::sync::OnceLock<Result<Postgres, String>> = std::sync::OnceLock::new();

/// A fresh, empty database named `<prefix>_<n>` on a server shared by every
/// test of this test process, and its URL: for the many tests that need a
/// database of their own but never stop, kill or restart the server (those
/// start a [`Postgres`] of their own).
///
/// The server is started on first use (without fsync: nothing of it outlives
/// the process), runs on a thread of its own whose runtime keeps its processes
/// watched, and is killed, its folder removed, when the test process exits.
pub async fn shared_database(prefix: &str) -> anyhow::Result<String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = SHARED
        .get_or_init(start_shared)
        .as_ref()
        .map_err(|error| anyhow::anyhow!("the shared PostgreSQL did not start: {error}"))?;
    let name = format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    server.create_database(&name).await
}

/// Starts the shared server on a thread that then keeps its runtime alive, and
/// arranges for it to be killed at exit.
fn start_shared() -> Result<Postgres, String> {
    let (started, result) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("shared-postgres".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = started.send(Err(format!("a runtime for it: {error}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let options = PostgresOptions::default()
                    .fsync(false)
                    // Every test's user-service opens a pool of its own.
                    .setting("max_connections", "1000");
                let server = Postgres::start_with(options)
                    .await
                    .map_err(|error| format!("{error:#}"));
                let _ = started.send(server);
                std::future::pending::<()>().await;
            });
        })
        .map_err(|error| format!("a thread for it: {error}"))?;
    let server = result
        .recv()
        .map_err(|_| "its thread ended before it started".to_owned())??;
    extern "C" fn stop_shared() {
        if let Some(Ok(server)) = SHARED.get() {
            kill_server_processes(&server.data);
            if let Some(status) = PidFile::read(&server.data) {
                remove_unattached_segment(status.shared_memory);
            }
            let _ = std::fs::remove_dir_all(server.root.path());
        }
    }
    // SAFETY: `stop_shared` is a plain function that lives as long as the
    // process, as atexit(3) requires.
    unsafe { libc::atexit(stop_shared) };
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_debian_major_is_found_and_none_is_a_clear_error() {
        let folder = tempfile::tempdir().unwrap();
        let debian = folder.path().join("postgresql");
        for major in ["9.6", "13", "15", "16"] {
            let bin = debian.join(major).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            // 16 is half installed (only the client): it does not count.
            let programs: &[&str] = if major == "16" {
                &["pg_isready", "createdb"]
            } else {
                &["initdb", "postgres", "pg_isready", "createdb"]
            };
            for program in programs {
                std::fs::write(bin.join(program), "").unwrap();
            }
        }
        assert_eq!(
            bin_dir(None, &debian, None).unwrap(),
            debian.join("15").join("bin")
        );

        let nowhere = folder.path().join("nothing");
        let error = bin_dir(None, &nowhere, Some("/nonexistent".into())).unwrap_err();
        assert_eq!(error.to_string(), NOT_INSTALLED);
        let error = bin_dir(Some(nowhere.into()), &debian, None).unwrap_err();
        assert!(error.to_string().contains("POSTGRES_BIN_DIR"), "{error}");
    }

    #[tokio::test]
    async fn a_taken_port_is_not_mistaken_for_ours() {
        let first = Postgres::start().await.unwrap();
        let bin = first.bin.clone();
        let mut second = Postgres::init(bin, PostgresOptions::default())
            .await
            .unwrap();
        second.port = first.port;
        let error = second.spawn().await.expect_err("the port is taken");
        assert!(retryable(&error), "{error}");
        assert!(second.postmaster.is_none());
        assert!(server_processes(&second.data).is_empty());
    }

    #[tokio::test]
    async fn dropping_it_kills_the_server_and_removes_its_folder() {
        let postgres = Postgres::start().await.unwrap();
        let (root, data, port) = (
            postgres.root.path().to_owned(),
            postgres.data.clone(),
            postgres.port,
        );
        assert!(!server_processes(&data).is_empty());
        drop(postgres);
        assert!(server_processes(&data).is_empty());
        assert!(!root.exists());
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
    }
}
