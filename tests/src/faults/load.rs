//! The load a fault strikes: a writer whose every write is recorded with how
//! it ended, and followers whose every frame is recorded, across reconnects.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use test_support::{Poll, eventually};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    http::Http,
    socket::{Ended, Socket},
    timeouts::STEP_TIMEOUT,
};

/// How long a follower waits before reconnecting, and a writer's pause after a
/// connection error.
const RETRY: Duration = Duration::from_millis(100);

/// How one write ended: what the checker may conclude about it differs (an
/// acknowledged write must be in the log, a refused one may not, an unanswered
/// one may or may not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200: the user at this version.
    Acked {
        /// The version the answer named, which the log's event must carry.
        version: i64,
    },
    /// Another status (503, …) with its body.
    Refused {
        /// The status, which a case checks is the one the API documents.
        status: u16,
        /// The body, which a case checks is DRF's `{"detail": …}`.
        body: String,
    },
    /// No answer (the connection failed or timed out): applied or not, unknown.
    NoAnswer(String),
}

/// One PATCH the writer sent: what the checker holds to the log, and what a
/// case's own assertions look at around its fault.
#[derive(Clone, Debug)]
pub struct Write {
    /// The unique first name it set.
    pub value: String,
    /// The gateway it went through.
    pub target: SocketAddr,
    /// When it left, to tell writes sent during a fault from the others.
    pub sent: Instant,
    /// How long its answer took: a refusal during a fault must come fast.
    pub took: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

impl Write {
    /// Whether it was answered 200.
    pub fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Acked { .. })
    }

    /// The status it was refused with, if it was.
    pub fn refused(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Refused { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// A task PATCHing one user's first name with a new unique value every `every`,
/// one request at a time, round-robin over the gateways, never retrying: each
/// value is sent once, so a value in the log twice was applied twice.
pub struct Writer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    log: Arc<Mutex<Vec<Write>>>,
}

impl Writer {
    /// Starts writing `<name>-<n>` to user `user_id` through `gateways`.
    pub fn start(name: &str, user_id: i64, gateways: &[SocketAddr], every: Duration) -> Writer {
        let (stop, stopped) = watch::channel(false);
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(write_loop(
            name.to_owned(),
            user_id,
            gateways.iter().map(|addr| Http::new(*addr)).collect(),
            every,
            log.clone(),
            stopped,
        ));
        Writer { stop, task, log }
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` more writes than now were acknowledged.
    pub async fn wait_acked(&self, n: usize, timeout: Duration) {
        let acked = || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .filter(|w| w.acked())
                .count()
        };
        let target = acked() + n;
        eventually(
            timeout,
            &format!("{n} more writes to be acknowledged"),
            async || {
                if acked() >= target {
                    Ok(())
                } else {
                    Err(format!(
                        "the last ones: {:?}",
                        self.writes().iter().rev().take(3).collect::<Vec<_>>()
                    ))
                }
            },
        )
        .await;
    }

    /// Lets the write in flight finish, stops, and returns every write.
    pub async fn stop(self) -> Vec<Write> {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(STEP_TIMEOUT * 2, self.task).await;
        self.log.lock().unwrap().clone()
    }
}

async fn write_loop(
    name: String,
    user_id: i64,
    gateways: Vec<Http>,
    every: Duration,
    log: Arc<Mutex<Vec<Write>>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let path = format!("/api/users/{user_id}/");
    for n in 0.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let value = format!("{name}-{n}");
        let http = &gateways[n % gateways.len()];
        let body = serde_json::to_vec(&json!({ "first_name": value })).unwrap();
        let sent = Instant::now();
        let reply = http
            .try_send("PATCH", &path, Some("application/json"), Some(body), &[])
            .await;
        let outcome = match reply {
            Ok(reply) if reply.status == 200 => Outcome::Acked {
                version: reply.json()["version"].as_i64().unwrap_or(-1),
            },
            Ok(reply) => Outcome::Refused {
                status: reply.status,
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            },
            Err(error) => Outcome::NoAnswer(error),
        };
        let failed_to_connect = matches!(outcome, Outcome::NoAnswer(_));
        log.lock().unwrap().push(Write {
            value,
            target: http.addr,
            sent,
            took: sent.elapsed(),
            outcome,
        });
        if failed_to_connect {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// One `user_update`, as a socket frame or the user-service's log has it: the
/// same shape for both, so the checker compares them field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The event's place in the log.
    pub seq: u64,
    /// `create`, `update` or `delete`.
    pub action: String,
    /// The user it is about.
    pub user_id: i64,
    /// The first name it carries: the writer's unique value, for updates.
    pub first_name: String,
    /// The user's version after it.
    pub version: i64,
}

impl Update {
    fn from_frame(frame: &Value) -> Option<Update> {
        let user = &frame["data"]["user"];
        Some(Update {
            seq: frame["seq"].as_u64()?,
            action: frame["data"]["action"].as_str()?.to_owned(),
            user_id: user["id"].as_i64()?,
            first_name: user["first_name"].as_str()?.to_owned(),
            version: user["version"].as_i64()?,
        })
    }
}

/// Everything one follower's sockets received.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The first `hello`'s seq: the socket owes every event after it.
    pub from: Option<u64>,
    /// The first `hello`'s epoch: every resume names it.
    pub epoch: String,
    /// Every `user_update`, in arrival order.
    pub updates: Vec<Update>,
    /// Where the next reconnect resumes: the newest seq received (or resynced to).
    pub resume: u64,
    /// The gateway of each socket opened, in order.
    pub gateways: Vec<SocketAddr>,
    /// Each socket's close code (`None`: closed without one), in order.
    pub closes: Vec<Option<u16>>,
    /// Failed connects and broken sockets.
    pub errors: Vec<String>,
    /// `resync` frames (none is expected: every gap here is in the window).
    pub resyncs: Vec<Value>,
    /// `hello` frames whose epoch was not the first one's.
    pub foreign_hellos: Vec<Value>,
}

/// A client that keeps one socket open: it starts live (no `since`) on the first
/// gateway; after a close 1001 it moves on to the next gateway, after anything else
/// it retries the same, and every reconnect resumes with `since` = the newest seq it
/// got and the epoch of its first `hello`.
pub struct Follower {
    /// Its name in the case's report and failure messages.
    pub name: String,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Starts one on `gateways` and waits (bounded) for its first `hello`.
    pub async fn start(name: &str, gateways: &[SocketAddr]) -> Follower {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(follow(gateways.to_vec(), seen.clone()));
        eventually(
            Poll::within(STEP_TIMEOUT).every(Duration::from_millis(10)),
            &format!("socket {name}'s hello"),
            async || {
                let seen = seen.lock().unwrap();
                if seen.from.is_some() {
                    Ok(())
                } else {
                    Err(format!("{:?}", *seen))
                }
            },
        )
        .await;
        Follower {
            name: name.to_owned(),
            seen,
            task,
        }
    }

    /// What it received so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Closes its socket and returns what it received.
    pub fn stop(self) -> (String, Seen) {
        self.task.abort();
        let seen = self.seen.lock().unwrap().clone();
        (self.name, seen)
    }
}

async fn follow(gateways: Vec<SocketAddr>, seen: Arc<Mutex<Seen>>) {
    let mut at = 0;
    loop {
        let query = {
            let seen = seen.lock().unwrap();
            match seen.from {
                None => String::new(),
                Some(_) => format!("since={}&epoch={}", seen.resume, seen.epoch),
            }
        };
        let addr = gateways[at % gateways.len()];
        let mut socket = match Socket::open(addr, &query).await {
            Ok(socket) => socket,
            Err(error) => {
                seen.lock().unwrap().errors.push(error);
                at += 1;
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        seen.lock().unwrap().gateways.push(addr);
        loop {
            // The gateway pings every 20 s; an hour of silence is a broken test.
            match socket.next(Duration::from_secs(3600)).await {
                Ok(frame) => record(&mut seen.lock().unwrap(), frame),
                Err(Ended::Closed(code)) => {
                    seen.lock().unwrap().closes.push(code);
                    if code == Some(1001) {
                        at += 1;
                    }
                    break;
                }
                Err(Ended::Error(error)) => {
                    seen.lock().unwrap().errors.push(error);
                    break;
                }
                Err(Ended::TimedOut) => break,
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

fn record(seen: &mut Seen, frame: Value) {
    match frame["type"].as_str() {
        Some("hello") => {
            let epoch = frame["epoch"].as_str().unwrap_or_default();
            if seen.from.is_none() {
                let seq = frame["seq"].as_u64().unwrap_or(0);
                seen.from = Some(seq);
                seen.resume = seq;
                seen.epoch = epoch.to_owned();
            } else if epoch != seen.epoch {
                seen.foreign_hellos.push(frame);
            }
        }
        Some("user_update") => match Update::from_frame(&frame) {
            Some(update) => {
                seen.resume = seen.resume.max(update.seq);
                seen.updates.push(update);
            }
            None => seen
                .errors
                .push(format!("a malformed user_update: {frame}")),
        },
        Some("resync") => {
            if let Some(seq) = frame["seq"].as_u64() {
                seen.resume = seq;
            }
            seen.resyncs.push(frame);
        }
        _ => seen.errors.push(format!("an unexpected frame: {frame}")),
    }
}
