//! The fault suite's instruments (`tests/tests/faults.rs`): a [`Writer`] that keeps
//! PATCHing unique names through the gateways and records how each write ended; a
//! [`Follower`] that keeps a socket open across closes and crashes, resuming with
//! `since`/`epoch`, and records every frame; the user-service's own event log as
//! the ground truth ([`event_log`]); and [`finish`], which ties them together:
//! every acknowledged write in the log exactly once, no value applied twice, every
//! socket with every event exactly once and in order, and each socket's final view
//! equal to what the database holds. A failure names the missing, duplicated or
//! misplaced events.
//!
//! Plus the levers the cases pull: process memory ([`rss_kib`]), a file-size limit
//! that makes the database's disk refuse writes ([`limit_file_size`]), and the
//! user-service's gRPC health ([`health`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use users_proto::v1 as pb;

use test_support::Redis;

use crate::{
    http::Http,
    socket::{Ended, Socket},
    timeouts::STEP_TIMEOUT,
};

/// How long a follower waits before reconnecting, and a writer's pause after a
/// connection error.
const RETRY: Duration = Duration::from_millis(100);
/// How long sockets get to catch up with the log once the writes stop.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long a caught-up socket is still watched, so a late duplicate shows.
const SETTLE: Duration = Duration::from_millis(500);

/// Gateway flags for the fault suite: authentication and rate limits off (one
/// writer at 50 writes/s from one address would be throttled), events from
/// `redis` when given.
pub fn gateway_flags(redis: Option<&Redis>) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--rate-limit-reads",
        "off",
        "--rate-limit-writes",
        "off",
        "--rate-limit-connects",
        "off",
    ]
    .map(String::from)
    .to_vec();
    if let Some(redis) = redis {
        flags.extend(redis.flags());
    }
    flags
}

/// How one write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200: the user at this version.
    Acked { version: i64 },
    /// Another status (503, …) with its body.
    Refused { status: u16, body: String },
    /// No answer (the connection failed or timed out): applied or not, unknown.
    NoAnswer(String),
}

/// One PATCH the writer sent.
#[derive(Clone, Debug)]
pub struct Write {
    /// The unique first name it set.
    pub value: String,
    pub target: SocketAddr,
    pub sent: Instant,
    pub took: Duration,
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
        let count =
            |log: &Mutex<Vec<Write>>| log.lock().unwrap().iter().filter(|w| w.acked()).count();
        let target = count(&self.log) + n;
        let deadline = Instant::now() + timeout;
        while count(&self.log) < target {
            assert!(
                Instant::now() < deadline,
                "{n} more writes were not acknowledged within {timeout:?}; the last ones: {:?}",
                self.writes().iter().rev().take(3).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// One `user_update`, as a socket frame or the user-service's log has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub seq: u64,
    pub action: String,
    pub user_id: i64,
    pub first_name: String,
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
    pub name: String,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Starts one on `gateways` and waits (bounded) for its first `hello`.
    pub async fn start(name: &str, gateways: &[SocketAddr]) -> Follower {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(follow(gateways.to_vec(), seen.clone()));
        let deadline = Instant::now() + STEP_TIMEOUT;
        while seen.lock().unwrap().from.is_none() {
            assert!(
                Instant::now() < deadline,
                "socket {name} got no hello: {:?}",
                seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

/// The user-service's event log: the ground truth the sockets are held to.
#[derive(Clone, Debug)]
pub struct EventLog {
    pub epoch: String,
    /// The newest seq when it was read.
    pub head: u64,
    /// Every event after the seq it was read from, up to `head`.
    pub events: Vec<Update>,
}

/// Reads the user-service's log after `after` up to its head, with WatchUsers (the
/// same log the relay and the gateways read from).
pub async fn event_log(user_service_url: &str, after: u64) -> EventLog {
    let read = async {
        let mut client =
            pb::user_service_client::UserServiceClient::connect(user_service_url.to_owned())
                .await
                .expect("connecting to the user-service");
        let response = client
            .watch_users(pb::WatchUsersRequest {
                since_seq: after,
                epoch: String::new(),
                replay_tail: None,
            })
            .await
            .expect("WatchUsers");
        let header = |name| {
            response
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let epoch = header("x-users-epoch");
        let head: u64 = header("x-users-head-seq")
            .parse()
            .expect("x-users-head-seq");
        let mut stream = response.into_inner();
        let mut events = Vec::new();
        let mut last = after;
        while last < head {
            let event = stream
                .message()
                .await
                .expect("reading WatchUsers")
                .expect("WatchUsers ended before the head");
            last = event.seq;
            let user = event.user.unwrap_or_default();
            let action = match pb::Action::try_from(event.action) {
                Ok(pb::Action::Create) => "create",
                Ok(pb::Action::Update) => "update",
                Ok(pb::Action::Delete) => "delete",
                _ => "unspecified",
            };
            events.push(Update {
                seq: event.seq,
                action: action.to_owned(),
                user_id: user.id,
                first_name: user.first_name.unwrap_or_default(),
                version: user.version,
            });
        }
        EventLog {
            epoch,
            head,
            events,
        }
    };
    tokio::time::timeout(STEP_TIMEOUT * 3, read)
        .await
        .expect("reading the event log timed out")
}

/// What [`finish`] checked, for the case's printout.
#[derive(Debug)]
pub struct Report {
    pub summary: String,
    pub log: EventLog,
    pub sockets: Vec<(String, Seen)>,
}

/// Ends a case: reads the log from the user-service at `user_service_url`, waits
/// (bounded) for every follower to catch up with it, stops them, reads the users
/// through `http`, and checks everything against the log (see the module's doc).
/// `refusals_are_definitive`: whether a refused write is known not to have
/// applied (the user-service itself refused it) or might have (the gateway lost
/// the user-service mid-call). Panics listing every problem; else prints and
/// returns what was checked.
pub async fn finish(
    case: &str,
    user_service_url: &str,
    http: &Http,
    writes: &[Write],
    refusals_are_definitive: bool,
    followers: Vec<Follower>,
) -> Report {
    let from = followers
        .iter()
        .filter_map(|f| f.seen().from)
        .min()
        .expect("followers have a start");
    let log = event_log(user_service_url, from).await;
    let deadline = Instant::now() + CATCH_UP;
    while Instant::now() < deadline
        && followers
            .iter()
            .any(|f| f.seen().updates.iter().all(|u| u.seq < log.head) && log.head > from)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let sockets: Vec<(String, Seen)> = followers.into_iter().map(Follower::stop).collect();
    let ids: HashSet<i64> = log.events.iter().map(|e| e.user_id).collect();
    let mut users = HashMap::new();
    for id in ids {
        let reply = http
            .try_send("GET", &format!("/api/users/{id}/"), None, None, &[])
            .await
            .unwrap_or_else(|e| panic!("{case}: reading user {id}: {e}"));
        assert_eq!(
            reply.status, 200,
            "{case}: reading user {id}: {:?}",
            reply.body
        );
        users.insert(id, reply.json());
    }
    let problems = problems(writes, refusals_are_definitive, &log, &sockets, &users);
    let summary = summary(case, writes, &log, &sockets);
    assert!(
        problems.is_empty(),
        "{summary}\n{case} FAILED:\n  - {}",
        problems.join("\n  - ")
    );
    eprintln!("{summary}");
    Report {
        summary,
        log,
        sockets,
    }
}

/// Every way the writes, the log, the sockets and the database disagree.
fn problems(
    writes: &[Write],
    refusals_are_definitive: bool,
    log: &EventLog,
    sockets: &[(String, Seen)],
    users: &HashMap<i64, Value>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for pair in log.events.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            problems.push(format!(
                "the log jumps from seq {} to {}",
                pair[0].seq, pair[1].seq
            ));
        }
    }

    // The log against the writes: acknowledged ones there once, at their version;
    // refused ones absent; none applied twice; nothing nobody sent.
    let mut applied: HashMap<&str, Vec<&Update>> = HashMap::new();
    for event in log.events.iter().filter(|e| e.action == "update") {
        applied.entry(&event.first_name).or_default().push(event);
    }
    let sent: HashSet<&str> = writes.iter().map(|w| w.value.as_str()).collect();
    let mut twice: Vec<_> = applied.iter().filter(|(_, e)| e.len() > 1).collect();
    twice.sort_by_key(|(_, e)| e[0].seq);
    for (value, events) in twice {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        problems.push(format!(
            "{value:?} was applied {} times: seqs {seqs:?}",
            seqs.len()
        ));
    }
    for write in writes {
        let events = applied.get(write.value.as_str());
        match (&write.outcome, events) {
            (Outcome::Acked { version }, None) => problems.push(format!(
                "acknowledged write {:?} (version {version}) is not in the log: lost",
                write.value
            )),
            (Outcome::Acked { version }, Some(events)) if events[0].version != *version => {
                problems.push(format!(
                    "acknowledged write {:?} answered version {version}, the log has version {} (seq {})",
                    write.value, events[0].version, events[0].seq
                ))
            }
            (Outcome::Refused { status, .. }, Some(events)) if refusals_are_definitive => {
                problems.push(format!(
                    "write {:?} was refused with {status} yet applied (seq {})",
                    write.value, events[0].seq
                ))
            }
            _ => {}
        }
    }
    let mut unsent: Vec<_> = applied.keys().filter(|v| !sent.contains(**v)).collect();
    unsent.sort();
    for value in unsent {
        problems.push(format!("the log holds {value:?}, which no writer sent"));
    }

    // Each socket against the log: every event after its start exactly once, in
    // order, with the log's content.
    let truth: BTreeMap<u64, &Update> = log.events.iter().map(|e| (e.seq, e)).collect();
    for (name, seen) in sockets {
        let from = seen.from.unwrap_or(0);
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for update in &seen.updates {
            *counts.entry(update.seq).or_default() += 1;
        }
        let missing: Vec<u64> = truth
            .keys()
            .copied()
            .filter(|seq| *seq > from && !counts.contains_key(seq))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "socket {name} is missing {} events: seqs {}",
                missing.len(),
                ranges(&missing)
            ));
        }
        let duplicated: Vec<String> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(seq, n)| format!("{seq} ×{n}"))
            .collect();
        if !duplicated.is_empty() {
            problems.push(format!(
                "socket {name} got {} events more than once: {}",
                duplicated.len(),
                abbreviate(&duplicated)
            ));
        }
        let unexpected: Vec<u64> = counts
            .keys()
            .copied()
            .filter(|seq| *seq <= from || !truth.contains_key(seq))
            .collect();
        if !unexpected.is_empty() {
            problems.push(format!(
                "socket {name} got events outside (its start {from}, the head {}]: seqs {}",
                log.head,
                ranges(&unexpected)
            ));
        }
        let disorder: Vec<String> = seen
            .updates
            .windows(2)
            .filter(|pair| pair[1].seq <= pair[0].seq)
            .map(|pair| format!("{} after {}", pair[1].seq, pair[0].seq))
            .collect();
        if !disorder.is_empty() {
            problems.push(format!(
                "socket {name} got events out of order: {}",
                abbreviate(&disorder)
            ));
        }
        let wrong: Vec<String> = seen
            .updates
            .iter()
            .filter(|u| truth.get(&u.seq).is_some_and(|t| *t != *u))
            .map(|u| format!("seq {}: got {u:?}, the log has {:?}", u.seq, truth[&u.seq]))
            .collect();
        if !wrong.is_empty() {
            problems.push(format!(
                "socket {name} got {} events unlike the log's: {}",
                wrong.len(),
                abbreviate(&wrong)
            ));
        }
        if !seen.resyncs.is_empty() {
            problems.push(format!(
                "socket {name} was told to resync (every gap here is in the replay window): {:?}",
                seen.resyncs
            ));
        }
        if !seen.foreign_hellos.is_empty() {
            problems.push(format!(
                "socket {name} met another epoch: {:?}",
                seen.foreign_hellos
            ));
        }
    }

    // The final view: the log's last word and each socket's on a user are what
    // the database holds.
    for (id, user) in users {
        let held = (
            user["first_name"].as_str().unwrap_or_default(),
            user["version"].as_i64().unwrap_or(-1),
        );
        let view = |updates: &mut dyn Iterator<Item = &Update>| {
            updates
                .filter(|u| u.user_id == *id)
                .max_by_key(|u| u.seq)
                .map(|u| (u.first_name.clone(), u.version))
        };
        if let Some((first, version)) = view(&mut log.events.iter())
            && (first.as_str(), version) != held
        {
            problems.push(format!(
                "user {id}: the log ends at ({first:?}, version {version}), the database holds {held:?}"
            ));
        }
        for (name, seen) in sockets {
            if let Some((first, version)) = view(&mut seen.updates.iter())
                && (first.as_str(), version) != held
            {
                problems.push(format!(
                    "user {id}: socket {name} ends at ({first:?}, version {version}), the database holds {held:?}"
                ));
            }
        }
    }
    problems
}

/// One paragraph saying what was checked.
fn summary(case: &str, writes: &[Write], log: &EventLog, sockets: &[(String, Seen)]) -> String {
    let acked = writes.iter().filter(|w| w.acked()).count();
    let mut refused: BTreeMap<u16, usize> = BTreeMap::new();
    for status in writes.iter().filter_map(Write::refused) {
        *refused.entry(status).or_default() += 1;
    }
    let unanswered = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::NoAnswer(_)))
        .count();
    let first = log.events.first().map_or(log.head, |e| e.seq);
    let mut text = format!(
        "[{case}] writes: {} sent, {acked} acknowledged (all in the log once, at their version), \
         refused {refused:?}, {unanswered} unanswered; log: {} events, seq {first}..={}",
        writes.len(),
        log.events.len(),
        log.head
    );
    for (name, seen) in sockets {
        let owed = log
            .events
            .iter()
            .filter(|e| e.seq > seen.from.unwrap_or(0))
            .count();
        let _ = write!(
            text,
            "\n[{case}]   socket {name}: {} of {owed} events exactly once in order, {} sockets opened ({} reconnects), closes {:?}, {} connect errors",
            seen.updates.len(),
            seen.gateways.len(),
            seen.gateways.len().saturating_sub(1),
            seen.closes,
            seen.errors.len()
        );
    }
    text
}

/// `[1, 2, 3, 7]` → `1-3, 7`, cut short when long.
fn ranges(seqs: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        while i + 1 < seqs.len() && seqs[i + 1] == seqs[i] + 1 {
            i += 1;
        }
        parts.push(if seqs[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", seqs[i])
        });
        i += 1;
    }
    abbreviate(&parts)
}

/// The first 20 items, and how many more.
fn abbreviate(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 20 {
        let _ = write!(text, ", … ({} more)", items.len() - 20);
    }
    text
}

/// A process's resident set size in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    loadgen::sys::rss_bytes(pid).unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"))
        / 1024
}

/// Makes a child ignore SIGXFSZ, so a write beyond its file-size limit fails with
/// EFBIG (an I/O error, as a full disk gives) instead of killing it.
pub fn ignore_sigxfsz(command: &mut tokio::process::Command) {
    // SAFETY: signal(2) is async-signal-safe, the only kind of call allowed
    // between fork and exec; an ignored signal stays ignored across exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

/// Sets process `pid`'s soft file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets):
/// `Some(0)` makes every write to a regular file fail, whatever the file, the way a
/// full or read-only disk does and even for root (who ignores permissions); `None`
/// lifts it. It takes effect at once, with no restart and nothing to clean up.
pub fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit reads `limit` and writes nothing back (old is null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        rc,
        0,
        "prlimit({pid}, RLIMIT_FSIZE): {}",
        std::io::Error::last_os_error()
    );
}

/// The user-service's grpc.health.v1 status for `service` ("" for the server);
/// `None` when it does not answer.
pub async fn health(user_service_url: &str, service: &str) -> Option<ServingStatus> {
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(user_service_url.to_owned())
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut client = HealthClient::new(channel);
        let reply = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(reply.into_inner().status).ok()
    };
    tokio::time::timeout(STEP_TIMEOUT, check)
        .await
        .ok()
        .flatten()
}

/// Waits (bounded) until both the server ("") and users.v1.UserService report
/// `want`; how long that took.
pub async fn wait_health(
    user_service_url: &str,
    want: ServingStatus,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let server = health(user_service_url, "").await;
        let users = health(user_service_url, "users.v1.UserService").await;
        if server == Some(want) && users == Some(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "health did not turn {want:?} within {timeout:?}: server {server:?}, users.v1.UserService {users:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
