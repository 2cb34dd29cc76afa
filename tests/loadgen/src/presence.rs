//! `presence`: U users with two windows each (two sockets, `?users=<id>`, on
//! two different gateways when two `--url`s are given). Each window sends
//! `{"type":"presence","user":id,"meta":{"window":w,"typing":b,"n":k}}` once a
//! period, toggling `typing`, the sends spread evenly over the period (and a
//! user's two windows half a period apart). Latency is from a window's message
//! sent to the other window's first `presence` frame whose members show that
//! window's meta with that `n` (or a newer one). `n` is an extra key of `meta`
//! (the page sends `window`, `field` and `typing`) so each change is told apart.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    fleet::{self, Fleet, FleetArgs},
    report::{self, ClientCpu, Latency},
    sys,
    target::parse_duration,
    track::Clock,
    ws,
};

/// Options of `presence`.
#[derive(clap::Args, Clone, Debug)]
pub struct PresenceArgs {
    /// Gateways, source addresses, barrier, watched processes.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Users this process opens two windows for.
    #[arg(long, short = 'u', default_value_t = 100)]
    pub users: u64,
    /// The global index of this process's first user.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// The user of global index 0: index `g` is user `first_user + g`.
    #[arg(long, default_value_t = 1)]
    pub first_user: i64,
    /// How long the windows send.
    #[arg(long, short = 'd', default_value = "10", value_parser = parse_duration)]
    pub duration: Duration,
    /// Each window sends one presence message per period.
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub period: Duration,
    /// Longest wait after the last message for the frames still on their way.
    #[arg(long, default_value = "2", value_parser = parse_duration)]
    pub drain: Duration,
}

/// Where window `w` (1 or 2) of global user index `g` goes: window 1 on URL
/// `g mod URLs`, window 2 on the next one, so with two URLs every user has one
/// window on each gateway. The socket's global index (for the source address)
/// is `2g + w - 1`.
pub fn window_socket(g: u64, w: u8) -> u64 {
    2 * g + u64::from(w - 1)
}

/// The instant (after the phase start) of window `w`'s of local user `j` of
/// `users` first message: the `2 × users` windows spread evenly over a period,
/// a user's second window half a period after its first.
pub fn first_send(j: u64, w: u8, users: u64, period: Duration) -> Duration {
    let slot = j as f64 / (2 * users.max(1)) as f64 + if w == 2 { 0.5 } else { 0.0 };
    period.mul_f64(slot)
}

/// The message window `w` of `user` sends for its `n`th change (from 1): typing
/// on odd `n`, off on even.
pub fn message(user: i64, w: u8, n: u64) -> String {
    json!({
        "type": "presence",
        "user": user,
        "meta": {"window": w, "typing": n % 2 == 1, "n": n},
    })
    .to_string()
}

/// What a receiving window reads from a `presence` frame: the other window's
/// newest `n` in the members, if it is there.
pub fn peer_n(text: &str, user: i64, peer: u8) -> Result<Option<u64>, PresenceError> {
    #[derive(Deserialize)]
    struct Frame {
        user: Option<i64>,
        #[serde(default)]
        members: Vec<Member>,
    }
    #[derive(Deserialize)]
    struct Member {
        meta: Option<Meta>,
    }
    #[derive(Deserialize)]
    struct Meta {
        window: Option<u8>,
        n: Option<u64>,
    }
    let frame: Frame = serde_json::from_str(text).map_err(|_| PresenceError::Unparsed)?;
    if frame.user != Some(user) {
        return Err(PresenceError::OtherUser);
    }
    Ok(frame
        .members
        .iter()
        .filter_map(|m| m.meta.as_ref())
        .filter(|m| m.window == Some(peer))
        .filter_map(|m| m.n)
        .max())
}

/// A `presence` frame that does not count.
#[derive(Debug, PartialEq, Eq)]
pub enum PresenceError {
    /// Not the expected JSON.
    Unparsed,
    /// About a user the socket does not follow.
    OtherUser,
}

/// One window's sends: when its `n`th message left (index `n - 1`; 0: not yet).
struct Window {
    sent_ns: Vec<AtomicU64>,
    /// The newest `n` sent.
    last: AtomicU64,
}

/// What a receiving window has seen of its peer, and its measurements.
#[derive(Default)]
struct Seen {
    /// The peer's newest `n` seen.
    peer_n: u64,
    /// Message sent → frame showing it, microseconds.
    latencies_us: Vec<u32>,
    /// The peer's changes never shown because a newer one came first.
    superseded: u64,
}

impl Seen {
    /// Accounts for the peer's `n` shown in a frame at `now_ns`.
    fn on_peer(&mut self, n: u64, now_ns: u64, peer: &Window) {
        if n <= self.peer_n {
            return;
        }
        self.superseded += n - self.peer_n - 1;
        self.peer_n = n;
        if let Some(sent) = peer
            .sent_ns
            .get((n - 1) as usize)
            .map(|s| s.load(Ordering::Acquire))
            .filter(|&s| s != 0)
        {
            let micros = now_ns.saturating_sub(sent) / 1_000;
            self.latencies_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    presence_frames: AtomicU64,
    presence_with_peer: AtomicU64,
    foreign: AtomicU64,
    unparsed: AtomicU64,
    update_frames: AtomicU64,
    other_frames: AtomicU64,
}

/// The outcome of a `presence` run.
#[derive(Debug)]
pub struct PresenceReport {
    /// Options of the run.
    pub params: Value,
    /// The first `--url`.
    pub target: String,
    /// Everything measured, as the summary's `results`.
    pub results: Value,
    /// The gateways' lines of the human report.
    pub gateways_human: String,
}

impl PresenceReport {
    /// The human-readable report.
    pub fn human(&self) -> String {
        human(&self.params, &self.results) + &self.gateways_human
    }

    /// The machine-readable summary line.
    pub fn summary(&self) -> String {
        report::summary_line(
            "presence",
            &self.target,
            self.params.clone(),
            self.results.clone(),
        )
    }
}

/// The human report of a `presence` summary (one process's or merged).
pub fn human(params: &Value, r: &Value) -> String {
    let l = &r["latency"];
    let mut out = format!(
        "presence  {} users × 2 windows (from {}), one message per {} s per window for {} s{}{}\n",
        params["users"],
        params["offset"],
        params["period_s"],
        params["duration_s"],
        params["parts"]
            .as_u64()
            .map(|p| format!(", {p} processes merged"))
            .unwrap_or_default(),
        params["label"]
            .as_str()
            .map(|l| format!("  [{l}]"))
            .unwrap_or_default(),
    );
    out += &format!(
        "  connect     {} of {} windows ready in {} s{}\n",
        r["sockets_ready"],
        r["sockets"],
        r["connect_s"],
        match r["connect_errors"].as_object() {
            Some(m) if !m.is_empty() => format!(" errors {}", r["connect_errors"]),
            _ => String::new(),
        }
    );
    out += &format!(
        "  sent        {} messages; peers saw {} of them, {} superseded, {} windows missing the peer's last\n",
        r["sent"], l["count"], r["superseded"], r["missing_last"]
    );
    out += &format!(
        "  latency     p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms\n",
        l["p50_ms"], l["p90_ms"], l["p99_ms"], l["p99_9_ms"], l["max_ms"]
    );
    out += &format!(
        "  frames      presence {} ({} showing the peer), other user {}, unparsed {}, user_update {}, other {}, errors {}\n",
        r["presence_frames"],
        r["presence_with_peer"],
        r["foreign"],
        r["unparsed"],
        r["update_frames"],
        r["other_frames"],
        r["error_frames"]
    );
    out += &format!(
        "  closed early {}\n  client CPU {} s over {} s = {} cores\n",
        r["closed_early"],
        r["client_cpu"]["cpu_s"],
        r["client_cpu"]["wall_s"],
        r["client_cpu"]["cores"]
    );
    out
}

/// Runs the scenario.
pub async fn run(args: &PresenceArgs) -> anyhow::Result<PresenceReport> {
    if args.users == 0 || args.period.is_zero() || args.first_user < 1 {
        bail!("--users, --period and --first-user must be positive");
    }
    let mut fleet = Fleet::resolve(&args.fleet).await?;
    let ticks = (args.duration.as_secs_f64() / args.period.as_secs_f64()).round() as u64;
    let sockets = 2 * args.users;
    let clock = Clock::start();
    let windows: Arc<Vec<Window>> = Arc::new(
        (0..sockets)
            .map(|_| Window {
                sent_ns: (0..ticks).map(|_| AtomicU64::new(0)).collect(),
                last: AtomicU64::new(0),
            })
            .collect(),
    );
    let counts = Arc::new(Counts::default());
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let closed_early = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let seen: Arc<Vec<Mutex<Seen>>> = Arc::new((0..sockets).map(|_| Mutex::default()).collect());
    // Set once every process is connected: the instant (on `clock`) the sends start.
    let go = Arc::new(tokio::sync::watch::channel(0u64).0);

    fleet.read_rss(false);
    fleet::meet(&args.fleet, "start").await?;
    let connect_start_unix_ms = fleet::unix_ms();
    let connect_start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.fleet.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(usize, bool), String>>();
    let mut tasks = Vec::with_capacity(sockets as usize);
    for j in 0..args.users {
        let user = args.first_user + (args.offset + j) as i64;
        for w in [1u8, 2] {
            let permit = permits.clone().acquire_owned().await?;
            let g = args.offset + j;
            let gateway = ((g + u64::from(w - 1)) % fleet.gateways.len() as u64) as usize;
            let (_, bind) = fleet.place(window_socket(g, w));
            let target = fleet.gateways[gateway].target.clone();
            let me = (2 * j + u64::from(w - 1)) as usize;
            let peer = me ^ 1;
            let offset = first_send(j, w, args.users, args.period);
            let (windows, seen, counts, errors, closed_early, ready) = (
                windows.clone(),
                seen.clone(),
                counts.clone(),
                errors.clone(),
                closed_early.clone(),
                ready_tx.clone(),
            );
            let mut go = go.subscribe();
            let (timeout, period) = (args.fleet.connect_timeout, args.period);
            tasks.push(tokio::spawn(async move {
                let opened =
                    ws::open_from(&target, bind, &format!("users={user}"), timeout).await;
                drop(permit);
                let (mut socket, hello) = match opened {
                    Ok((socket, _, hello)) => (socket, hello),
                    Err(error) => {
                        let _ = ready.send(Err(format!("{error:#}")));
                        return;
                    }
                };
                let matches = fleet::hello_users(&hello) == Some(vec![user]);
                let _ = ready.send(Ok((gateway, matches)));
                drop(ready);
                // Until the go, and then until the next send, read.
                let mut start_ns = 0;
                let mut n = 0u64;
                let mut due: Option<tokio::time::Instant> = None;
                let ended = loop {
                    let wake = async move {
                        match due {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        changed = go.changed(), if start_ns == 0 => {
                            if changed.is_err() {
                                break "run ended".into();
                            }
                            start_ns = *go.borrow();
                            if ticks > 0 {
                                due = Some(clock.at(start_ns + offset.as_nanos() as u64).into());
                            }
                        }
                        () = wake => {
                            n += 1;
                            let window = &windows[me];
                            window.sent_ns[(n - 1) as usize].store(clock.now_ns(), Ordering::Release);
                            window.last.store(n, Ordering::Release);
                            if let Err(error) = socket.send(Message::text(message(user, w, n))).await {
                                break format!("send: {error}");
                            }
                            counts.sent.fetch_add(1, Ordering::Relaxed);
                            due = (n < ticks).then(|| {
                                clock
                                    .at(start_ns + (offset + period * n as u32).as_nanos() as u64)
                                    .into()
                            });
                        }
                        received = socket.next() => match received {
                            Some(Ok(Message::Text(text))) => {
                                let now = clock.now_ns();
                                on_text(&text, now, user, w, &windows[peer], &seen[me], &counts, &errors);
                            }
                            Some(Ok(Message::Close(close))) => {
                                break close.map_or("close".into(), |f| format!("close {}", u16::from(f.code)));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(error)) => break format!("error: {error}"),
                            None => break "eof".into(),
                        },
                    }
                };
                fleet::bump(&closed_early, ended);
            }));
        }
    }
    drop(ready_tx);
    let mut connect_errors = BTreeMap::new();
    let (mut ready, mut hello_mismatch) = (0u64, 0u64);
    for _ in 0..sockets {
        let Some(result) = ready_rx.recv().await else {
            break;
        };
        match result {
            Ok((gateway, matches)) => {
                ready += 1;
                fleet.gateways[gateway].sockets += 1;
                hello_mismatch += u64::from(!matches);
            }
            Err(error) => *connect_errors.entry(error).or_insert(0) += 1,
        }
    }
    let connect_time = connect_start.elapsed();
    let connect_end_unix_ms = fleet::unix_ms();
    fleet::meet(&args.fleet, "connected").await?;
    tokio::time::sleep(args.fleet.settle).await;
    fleet.read_rss(true);
    fleet::meet(&args.fleet, "measure").await?;

    let cpu_before = sys::own_cpu_time();
    fleet.cpu_start();
    let phase_start = Instant::now();
    go.send_replace(clock.now_ns() + 1_000_000);
    tokio::time::sleep(args.period * ticks as u32).await;
    // Drain: until every window saw its peer's last message, or the time is up.
    let drain_end = Instant::now() + args.drain;
    let missing = || {
        (0..sockets as usize)
            .filter(|&me| {
                let last = windows[me ^ 1].last.load(Ordering::Acquire);
                seen[me].lock().expect("seen").peer_n < last
            })
            .count() as u64
    };
    while missing() > 0 && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = phase_start.elapsed();
    let client_cpu = ClientCpu {
        cpu: sys::own_cpu_time().saturating_sub(cpu_before),
        wall,
    };
    fleet.cpu_end();
    let missing_last = missing();
    let closed = std::mem::take(&mut *closed_early.lock().expect("closed"));
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }

    let mut latency = report::histogram();
    let mut superseded = 0;
    for slot in seen.iter() {
        let slot = slot.lock().expect("seen");
        superseded += slot.superseded;
        for &micros in &slot.latencies_us {
            latency.saturating_record(u64::from(micros).max(1));
        }
    }
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let error_frames = std::mem::take(&mut *errors.lock().expect("errors"));
    let results = json!({
        "clean": missing_last == 0 && connect_errors.is_empty() && closed.is_empty()
            && hello_mismatch == 0 && error_frames.is_empty() && get(&counts.foreign) == 0,
        "users": args.users,
        "sockets": sockets,
        "sockets_ready": ready,
        "connect_errors": report::counts_json(&connect_errors),
        "hello_mismatch": hello_mismatch,
        "connect_s": report::round3(connect_time.as_secs_f64()),
        "connect_start_unix_ms": connect_start_unix_ms,
        "connect_end_unix_ms": connect_end_unix_ms,
        "sent": get(&counts.sent),
        "superseded": superseded,
        "missing_last": missing_last,
        "latency": Latency::of(&latency).to_json(),
        "latency_hist": report::histogram_json(&latency),
        "presence_frames": get(&counts.presence_frames),
        "presence_with_peer": get(&counts.presence_with_peer),
        "foreign": get(&counts.foreign),
        "unparsed": get(&counts.unparsed),
        "update_frames": get(&counts.update_frames),
        "other_frames": get(&counts.other_frames),
        "error_frames": report::counts_json(&error_frames),
        "closed_early": report::counts_json(&closed),
        "phase_s": report::round3(wall.as_secs_f64()),
        "client_cpu": client_cpu.to_json(),
        "gateways": fleet.gateways_json(),
        "server_cpu_s": fleet.watched_json(),
    });
    Ok(PresenceReport {
        params: json!({
            "users": args.users,
            "offset": args.offset,
            "first_user": args.first_user,
            "duration_s": args.duration.as_secs_f64(),
            "period_s": args.period.as_secs_f64(),
            "urls": args.fleet.urls,
            "binds": args.fleet.binds,
            "label": args.fleet.label,
        }),
        target: fleet.gateways[0].target.url.clone(),
        results,
        gateways_human: fleet.human(),
    })
}

/// One text frame on window `w` of `user`.
#[allow(clippy::too_many_arguments)]
fn on_text(
    text: &str,
    now_ns: u64,
    user: i64,
    w: u8,
    peer: &Window,
    seen: &Mutex<Seen>,
    counts: &Counts,
    errors: &Mutex<BTreeMap<String, u64>>,
) {
    let add = |a: &AtomicU64| a.fetch_add(1, Ordering::Relaxed);
    if text.contains(r#""type":"presence""#) {
        add(&counts.presence_frames);
        match peer_n(text, user, 3 - w) {
            Ok(Some(n)) => {
                add(&counts.presence_with_peer);
                seen.lock().expect("seen").on_peer(n, now_ns, peer);
            }
            Ok(None) => {}
            Err(PresenceError::OtherUser) => {
                add(&counts.foreign);
            }
            Err(PresenceError::Unparsed) => {
                add(&counts.unparsed);
            }
        }
    } else if text.contains(r#""type":"user_update""#) {
        add(&counts.update_frames);
    } else if text.contains(r#""type":"error""#) {
        let detail = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(80).collect());
        fleet::bump(errors, detail);
    } else {
        add(&counts.other_frames);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_spread_over_the_period_and_windows_half_a_period_apart() {
        let p = Duration::from_secs(1);
        assert_eq!(first_send(0, 1, 4, p), Duration::ZERO);
        assert_eq!(first_send(0, 2, 4, p), Duration::from_millis(500));
        assert_eq!(first_send(1, 1, 4, p), Duration::from_millis(125));
        assert_eq!(first_send(3, 2, 4, p), Duration::from_millis(875));
        let mut all: Vec<_> = (0..4)
            .flat_map(|j| [1, 2].map(|w| first_send(j, w, 4, p)))
            .collect();
        all.sort();
        assert_eq!(
            all,
            (0..8)
                .map(|i| Duration::from_millis(125 * i))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            (
                window_socket(0, 1),
                window_socket(0, 2),
                window_socket(5, 2)
            ),
            (0, 1, 11)
        );
    }

    #[test]
    fn messages_toggle_typing_and_carry_n() {
        let m: Value = serde_json::from_str(&message(7, 2, 3)).unwrap();
        assert_eq!(
            m,
            json!({"type": "presence", "user": 7, "meta": {"window": 2, "typing": true, "n": 3}})
        );
        let m: Value = serde_json::from_str(&message(7, 1, 4)).unwrap();
        assert_eq!(m["meta"]["typing"], false);
        assert!(message(7, 1, u64::MAX).len() < 512);
    }

    #[test]
    fn reads_the_peers_n_from_the_members() {
        let frame = r#"{"type":"presence","user":7,"members":[{"id":"a","sub":null,"meta":{"window":1,"typing":true,"n":4}},{"id":"b","sub":null,"meta":{"window":2,"typing":false,"n":2}}]}"#;
        assert_eq!(peer_n(frame, 7, 2), Ok(Some(2)));
        assert_eq!(peer_n(frame, 7, 1), Ok(Some(4)));
        assert_eq!(peer_n(frame, 8, 1), Err(PresenceError::OtherUser));
        let empty = r#"{"type":"presence","user":7,"members":[]}"#;
        assert_eq!(peer_n(empty, 7, 1), Ok(None));
        let page = r#"{"type":"presence","user":7,"members":[{"id":"a","sub":"u","meta":{"window":1,"field":"first_name","typing":false}}]}"#;
        assert_eq!(peer_n(page, 7, 1), Ok(None));
        assert_eq!(peer_n("nope", 7, 1), Err(PresenceError::Unparsed));
    }

    #[test]
    fn latency_is_from_the_send_and_skipped_changes_are_superseded() {
        let peer = Window {
            sent_ns: (0..5).map(|_| AtomicU64::new(0)).collect(),
            last: AtomicU64::new(0),
        };
        for n in 1..=4u64 {
            peer.sent_ns[(n - 1) as usize].store(n * 1_000_000_000, Ordering::Relaxed);
        }
        let mut seen = Seen::default();
        seen.on_peer(1, 1_002_000_000, &peer);
        seen.on_peer(1, 1_500_000_000, &peer); // the same state again: nothing
        seen.on_peer(3, 3_004_000_000, &peer); // 2 never shown
        seen.on_peer(2, 3_100_000_000, &peer); // older: nothing
        seen.on_peer(5, 9_000_000_000, &peer); // not sent (by our log): no latency
        assert_eq!(seen.latencies_us, [2_000, 4_000]);
        assert_eq!((seen.superseded, seen.peer_n), (2, 5));
    }
}
