//! A child process a test owns: killed when the test drops it (a failed test
//! leaves no server behind holding a port), its output kept line by line (a
//! test reads the logs, and a failure message shows them), and signals for
//! the faults a test stages.

use std::{
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::watch,
    task::JoinHandle,
};

/// How long the output of a process that exited may take to be read to its end.
const DRAIN: Duration = Duration::from_secs(2);

/// A running child process with its output collected, killed when dropped.
pub struct Process {
    child: Child,
    name: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// Counts lines as they arrive, so a waiter wakes on each; closed once both
    /// pipes ended.
    lines: watch::Receiver<usize>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Spawns `command` with stdout and stderr read into its logs, each line
    /// also echoed to the test's stderr when `E2E_ECHO` is set (for watching a
    /// test live).
    pub fn spawn(mut command: Command) -> anyhow::Result<Process> {
        let program = command.as_std().get_program().to_owned();
        let name = std::path::Path::new(&program)
            .file_name()
            .unwrap_or(&program)
            .to_string_lossy()
            .into_owned();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.to_string_lossy()))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (count, lines) = watch::channel(0);
        let count = Arc::new(count);
        let echo = std::env::var_os("E2E_ECHO").is_some();
        let pipes: [Box<dyn AsyncRead + Send + Unpin>; 2] = [
            Box::new(child.stdout.take().expect("stdout is piped")),
            Box::new(child.stderr.take().expect("stderr is piped")),
        ];
        let readers = pipes
            .into_iter()
            .map(|pipe| {
                let (logs, count, name) = (logs.clone(), count.clone(), name.clone());
                tokio::spawn(async move {
                    let mut lines = BufReader::new(pipe).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if echo {
                            eprintln!("[{name}] {line}");
                        }
                        logs.lock().unwrap().push(line);
                        count.send_modify(|n| *n += 1);
                    }
                })
            })
            .collect();
        Ok(Process {
            child,
            name,
            logs,
            lines,
            readers,
        })
    }

    /// The program's file name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every line it wrote so far, stdout's and stderr's interleaved as read.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for the first line of its output (past or future) that `find`
    /// picks a value from. Fails, with its output, when it exits first or
    /// `timeout` passes: a process that never gets ready says why.
    pub async fn wait_for_line<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut checked = 0;
        let ended = loop {
            let found = {
                let logs = self.logs.lock().unwrap();
                let found = logs[checked..].iter().find_map(|line| find(line));
                checked = logs.len();
                found
            };
            if let Some(found) = found {
                return Ok(found);
            }
            tokio::select! {
                more = self.lines.changed() => if more.is_err() {
                    break format!("closed its output before it logged {what}");
                },
                _ = self.child.wait() => break format!("exited before it logged {what}"),
                _ = tokio::time::sleep_until(deadline) => {
                    break format!("did not log {what} within {timeout:?}");
                }
            }
        };
        // Its last words may still be in the pipes: read them before judging.
        self.drain().await;
        if let Some(found) = self.logs()[checked..].iter().find_map(|line| find(line)) {
            return Ok(found);
        }
        bail!(
            "{} {ended}; its output:\n{}",
            self.name,
            self.logs().join("\n")
        )
    }

    /// Waits until it exits and its output is read to the end; its exit status.
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.drain().await;
        status
    }

    /// Reads what is left of its output, for a bounded time.
    async fn drain(&mut self) {
        let readers = std::mem::take(&mut self.readers);
        let _ = tokio::time::timeout(DRAIN, async {
            for reader in readers {
                let _ = reader.await;
            }
        })
        .await;
    }

    /// Sends SIGTERM and waits (bounded) for it to exit; its exit code (-1 when
    /// a signal ended it). How an orchestrator stops a service.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<i32> {
        self.signal(libc::SIGTERM)?;
        let exit = tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit in time", self.name))??;
        Ok(exit.code().unwrap_or(-1))
    }

    /// Kills it at once (SIGKILL) and waits for it: a crash, and a port free
    /// for the next start.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Its process id, while it runs: for signals and `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) without waiting for anything.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        send_signal(
            self.pid()
                .with_context(|| format!("{} already exited", self.name))?,
            signal,
        )
    }
}

/// Sends `signal` to process `pid`: the faults a test stages (SIGSTOP, SIGTERM,
/// SIGKILL) on processes it may not hold as a [`Process`].
pub fn send_signal(pid: u32, signal: i32) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid).context("a process id")?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    anyhow::ensure!(
        rc == 0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[tokio::test]
    async fn a_line_is_found_and_the_output_kept() {
        let mut process = Process::spawn(shell("echo one; echo port=42 >&2; sleep 30")).unwrap();
        let port = process
            .wait_for_line("its port", Duration::from_secs(10), |line| {
                line.strip_prefix("port=")?.parse::<u16>().ok()
            })
            .await
            .unwrap();
        assert_eq!(port, 42);
        assert!(process.logs().contains(&"one".to_owned()));
        assert_eq!(process.terminate(Duration::from_secs(5)).await.unwrap(), -1);
    }

    #[tokio::test]
    async fn a_process_that_exits_first_fails_the_wait_with_its_last_words() {
        let mut process = Process::spawn(shell("echo bad flag >&2; exit 2")).unwrap();
        let error = process
            .wait_for_line("its port", Duration::from_secs(10), |_| None::<()>)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("bad flag"), "{error}");
    }
}
