//! A real `redis-server` per test, because what the services do when Redis
//! dies, freezes or comes back empty is what these tests are about: a fake
//! would only answer the way we expect.

use std::time::Duration;

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Command,
};

use crate::{Poll, Process, free_port, poll_until};

/// How long a redis-server may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports [`Redis::start`] tries when the one it got was taken meanwhile.
const PORT_TRIES: usize = 5;

/// A redis-server of one test's own on a port of its own, keeping nothing on
/// disk, so that a kill is a crash and a restart starts empty. Killed when
/// dropped.
pub struct Redis {
    process: Option<Process>,
    /// Its port on 127.0.0.1; it keeps it across restarts, as a Service would.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free port and waits until it answers. The program is
    /// `redis-server` from the PATH, or `REDIS_SERVER_BIN`.
    pub async fn start() -> Redis {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut redis = Redis {
            process: None,
            port: 0,
            dir,
        };
        let mut tries = 1;
        loop {
            redis.port = free_port();
            match redis.spawn().await {
                Ok(process) => {
                    redis.process = Some(process);
                    return redis;
                }
                // Another process took the port between our check and its bind.
                Err(error) if error.contains("Address already in use") && tries < PORT_TRIES => {
                    tries += 1;
                }
                Err(error) => panic!("{error}"),
            }
        }
    }

    /// `redis://127.0.0.1:<port>`, what both services take.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The flags that point either service's binary at this Redis.
    pub fn flags(&self) -> Vec<String> {
        vec!["--redis-url".to_owned(), self.url()]
    }

    /// Sends `commands` (each a list of arguments, in RESP) over one connection
    /// and answers the first line of each reply: enough for status and error
    /// replies (`+OK`, `-NOPERM …`), and for an `AUTH` first to speak as a user.
    pub async fn say(&self, commands: &[&[&str]]) -> Vec<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connecting to Redis");
        let mut replies = Vec::new();
        for command in commands {
            let mut wire = format!("*{}\r\n", command.len());
            for arg in *command {
                wire.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
            stream
                .write_all(wire.as_bytes())
                .await
                .expect("writing to Redis");
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("Redis answers")
                .expect("reading from Redis");
            replies.push(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        replies
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, as in
    /// a network stall.
    pub fn pause(&self) {
        self.running().signal(libc::SIGSTOP).expect("SIGSTOP");
    }

    /// Thaws it after [`Redis::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.running().signal(libc::SIGCONT).expect("SIGCONT");
    }

    /// Kills it (SIGKILL) and waits until it is gone, so the port is free:
    /// a crash, and it keeps nothing.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await;
        }
    }

    /// Starts it again, empty, on the same port after [`Redis::stop`], and
    /// waits until it answers.
    pub async fn start_again(&mut self) {
        // The port is this Redis's address: its clients reconnect to it, so a
        // port held a moment longer by the killed server is waited out.
        let process = poll_until(
            Poll::within(START_TIMEOUT).every(Duration::from_millis(200)),
            async || self.spawn().await,
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
        self.process = Some(process);
    }

    /// Kills it and starts it again empty on the same port: a crash and a
    /// restart in one.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    fn running(&self) -> &Process {
        self.process.as_ref().expect("redis-server runs")
    }

    /// Starts a redis-server on `self.port` and waits until that port answers
    /// with its process id (so a server of someone else's that holds the port
    /// is not mistaken for ours); or why not, with its output.
    async fn spawn(&self) -> Result<Process, String> {
        let program = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let mut command = Command::new(program);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let mut process = Process::spawn(command)
            .map_err(|error| format!("{error:#} (apt-get install redis-server)"))?;
        let pid = process.pid().expect("it just started");
        let port = self.port;
        let answered = tokio::select! {
            answered = poll_until(
                Poll::within(START_TIMEOUT).every(Duration::from_millis(50)),
                async || if answering_pid(port).await == Some(pid) { Ok(()) } else { Err(()) },
            ) => answered.map_err(|()| format!("did not answer within {START_TIMEOUT:?}")),
            status = process.exited() => Err(format!("exited ({status:?})")),
        };
        match answered {
            Ok(()) => Ok(process),
            Err(why) => Err(format!(
                "redis-server on port {port} {why}; its output:\n{}",
                process.logs().join("\n")
            )),
        }
    }
}

/// The process id of the Redis answering on `port` (from `INFO server`), if one
/// answers within a second.
async fn answering_pid(port: u16) -> Option<u32> {
    let ask = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"INFO server\r\n").await.ok()?;
        // A bulk string: `$<length>\r\n<text>\r\n`.
        let mut reply = BufReader::new(stream);
        let mut head = String::new();
        reply.read_line(&mut head).await.ok()?;
        let length: usize = head.strip_prefix('$')?.trim().parse().ok()?;
        let mut text = vec![0; length];
        reply.read_exact(&mut text).await.ok()?;
        String::from_utf8_lossy(&text)
            .lines()
            .find_map(|line| line.strip_prefix("process_id:")?.trim().parse().ok())
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_starts_stops_freezes_and_restarts_on_its_port() {
        let mut redis = Redis::start().await;
        let port = redis.port;
        assert_eq!(answering_pid(port).await, redis.pid());

        redis.pause();
        assert_eq!(
            answering_pid(port).await,
            None,
            "a frozen Redis answers nothing"
        );
        redis.resume();
        assert_eq!(answering_pid(port).await, redis.pid());

        redis.stop().await;
        assert_eq!(redis.pid(), None);
        assert_eq!(answering_pid(port).await, None);
        redis.restart().await;
        assert_eq!(redis.port, port);
        assert_eq!(answering_pid(port).await, redis.pid());
    }

    #[tokio::test]
    async fn a_taken_port_is_not_mistaken_for_ours() {
        let first = Redis::start().await;
        let second = Redis {
            process: None,
            port: first.port,
            dir: tempfile::tempdir().unwrap(),
        };
        let error = second.spawn().await.err().expect("the port is taken");
        assert!(error.contains("Address already in use"), "{error}");
    }
}
