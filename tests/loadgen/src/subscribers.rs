//! `subscribers`: N sockets, socket `g` filtered to its own user
//! (`?users=<first_user + g>`), spread over several gateways and source
//! addresses; then PATCHes at R/s to random users of this process's slice. Every
//! event must reach exactly its subscriber: a frame for another user is
//! misdelivered, an acknowledged event never received is lost, one received
//! twice is a duplicate; latency is PATCH sent → frame received. Several
//! processes split the sockets (`--offset`, `--sockets`); each drives the
//! PATCHes for its own users only, so every event it sends is measured by its
//! own sockets, and `loadgen merge` adds the processes' summaries up exactly.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use http::Method;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    fleet::{self, Fleet, FleetArgs},
    frame::{self, Frame},
    http::Conn,
    report::{self, ClientCpu, Latency},
    sys,
    target::{Target, parse_duration},
    track::{Clock, SendLog, ValueTag, run_id},
    ws,
};

/// What each socket subscribes to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscribe {
    /// `?users=<its own user>`: every event has exactly one subscriber.
    Own,
    /// `?users=` (filtered, empty): no event has a subscriber, so the gateways'
    /// CPU per event without subscribers can be read beside `own`.
    None,
}

/// Options of `subscribers`.
#[derive(clap::Args, Clone, Debug)]
pub struct SubscribersArgs {
    /// Gateways, source addresses, barrier, watched processes.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Sockets this process opens.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub sockets: u64,
    /// The global index of this process's first socket (its slice is
    /// `offset .. offset + sockets`).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// The user of global socket 0: socket `g` follows user `first_user + g`
    /// (`loadgen create-users` makes such a range).
    #[arg(long, default_value_t = 1)]
    pub first_user: i64,
    /// What each socket subscribes to.
    #[arg(long, value_enum, default_value = "own")]
    pub subscribe: Subscribe,
    /// This process's PATCHes per second (open loop), each to a random user of
    /// its slice; 0: connect only (time to connect, RSS per socket).
    #[arg(long, short = 'r', default_value_t = 100.0)]
    pub rate: f64,
    /// How long the PATCHes go on.
    #[arg(long, short = 'd', default_value = "10", value_parser = parse_duration)]
    pub duration: Duration,
    /// Keep-alive connections the PATCHes are spread over, round-robin over the
    /// `--url`s (so an event usually crosses gateways).
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Longest wait after the last PATCH for outstanding frames.
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    pub drain: Duration,
    /// Seed of the random choice of users (default: from the run id).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Everything the socket tasks and the writers share.
struct Shared {
    tag: ValueTag,
    log: SendLog,
    clock: Clock,
    /// The local socket index (the user) each event goes to.
    targets: Vec<u32>,
    /// When each event first reached its subscriber (0: not yet).
    received_ns: Vec<AtomicU64>,
    /// How many times each event reached its subscriber.
    deliveries: Vec<AtomicU32>,
    counts: Counts,
    closed_early: Mutex<BTreeMap<String, u64>>,
}

/// Counters every socket adds to.
#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    duplicates: AtomicU64,
    misdelivered: AtomicU64,
    out_of_order: AtomicU64,
    foreign: AtomicU64,
    unparsed: AtomicU64,
    presence: AtomicU64,
    other: AtomicU64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A small fast generator (xorshift64*), so event targets are reproducible with
/// `--seed`.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is moved off the fixed point).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % n
    }
}

/// What one socket's text frame was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Delivered,
    Duplicate,
    Misdelivered,
    Foreign,
    Presence,
    Other,
    Unparsed,
}

/// One socket: which local index and user it has, and the newest seq it saw.
struct Listener {
    index: u32,
    user: Option<i64>,
    max_seq: u64,
}

impl Listener {
    /// Accounts for one text frame received at `now_ns`.
    fn on_text(&mut self, text: &str, now_ns: u64, shared: &Shared) -> Seen {
        let c = &shared.counts;
        let (seq, first_name) = match frame::parse(text) {
            Some(Frame::Update { seq, first_name }) => (seq, first_name),
            Some(Frame::Hello { .. }) => {
                add(&c.other);
                return Seen::Other;
            }
            Some(Frame::Other) if text.contains(r#""type":"presence""#) => {
                add(&c.presence);
                return Seen::Presence;
            }
            Some(Frame::Other) => {
                add(&c.other);
                return Seen::Other;
            }
            None => {
                add(&c.unparsed);
                return Seen::Unparsed;
            }
        };
        if self.user.is_none() || frame::update_user_id(text) != self.user {
            add(&c.misdelivered);
            return Seen::Misdelivered;
        }
        let k = first_name
            .and_then(|name| shared.tag.index_of(&name))
            .filter(|&k| k < shared.log.len());
        // A frame seen before is a duplicate and nothing else (not out of order).
        if let Some(k) = k
            && shared.targets[k as usize] == self.index
            && shared.deliveries[k as usize].load(Ordering::Relaxed) > 0
        {
            shared.deliveries[k as usize].fetch_add(1, Ordering::Relaxed);
            add(&c.duplicates);
            return Seen::Duplicate;
        }
        if seq <= self.max_seq {
            add(&c.out_of_order);
        } else {
            self.max_seq = seq;
        }
        let Some(k) = k else {
            add(&c.foreign);
            return Seen::Foreign;
        };
        if shared.targets[k as usize] != self.index {
            // Our user's id on another user's event: the frame is wrong.
            add(&c.misdelivered);
            return Seen::Misdelivered;
        }
        if shared.deliveries[k as usize].fetch_add(1, Ordering::Relaxed) == 0 {
            shared.received_ns[k as usize].store(now_ns, Ordering::Relaxed);
            add(&c.delivered);
            Seen::Delivered
        } else {
            add(&c.duplicates);
            Seen::Duplicate
        }
    }
}

/// The outcome of a `subscribers` run.
#[derive(Debug)]
pub struct SubscribersReport {
    /// Options of the run.
    pub params: Value,
    /// The first `--url`.
    pub target: String,
    /// Everything measured, as the summary's `results`.
    pub results: Value,
    /// The gateways' lines of the human report.
    pub gateways_human: String,
}

impl SubscribersReport {
    /// Whether every event reached exactly its subscriber, once, and every
    /// socket connected and stayed.
    pub fn is_clean(&self) -> bool {
        self.results["clean"].as_bool() == Some(true)
    }

    /// The human-readable report.
    pub fn human(&self) -> String {
        human(&self.params, &self.results) + &self.gateways_human
    }

    /// The machine-readable summary line.
    pub fn summary(&self) -> String {
        report::summary_line(
            "subscribers",
            &self.target,
            self.params.clone(),
            self.results.clone(),
        )
    }
}

/// The human report of a `subscribers` summary (one process's or merged).
pub fn human(params: &Value, r: &Value) -> String {
    let ms = |key: &str| -> String {
        let l = &r[key];
        format!(
            "p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={})",
            l["p50_ms"], l["p90_ms"], l["p99_ms"], l["p99_9_ms"], l["max_ms"], l["count"]
        )
    };
    let mut out = format!(
        "subscribers  {} sockets (from {}), subscribe {}, {}/s for {} s{}{}\n",
        params["sockets"],
        params["offset"],
        params["subscribe"].as_str().unwrap_or("?"),
        params["rate"],
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
        "  connect     {} of {} ready in {} s{}{}\n",
        r["sockets_ready"],
        r["sockets"],
        r["connect_s"],
        nonempty(" errors ", &r["connect_errors"]),
        match r["hello_mismatch"].as_u64() {
            Some(0) | None => String::new(),
            Some(n) => format!("  HELLO WITHOUT THE SUBSCRIBED USERS ×{n} (?users= ignored?)"),
        }
    );
    out += &format!("  hello       {}\n", ms("hello_latency"));
    out += &format!(
        "  writes      {} acked of {}{}; PATCH {}\n",
        r["acked"],
        r["planned"],
        nonempty(" errors ", &r["write_errors"]),
        ms("patch_latency")
    );
    out += &format!(
        "  deliveries  {} of {} expected\n  latency     {}\n",
        r["delivered"],
        r["expected"],
        ms("latency")
    );
    out += &format!(
        "  checks      lost {}  misdelivered {}  duplicates {}  out-of-order {}  foreign {}  unparsed {}  closed early {}{}\n",
        r["lost"],
        r["misdelivered"],
        r["duplicates"],
        r["out_of_order"],
        r["foreign"],
        r["unparsed"],
        r["closed_early"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>()),
        nonempty(" ", &r["closed_early"]),
    );
    out += &format!(
        "  frames      presence {}  other {}\n",
        r["presence_frames"], r["other_frames"]
    );
    let cpu = &r["client_cpu"];
    out += &format!(
        "  client CPU {} s over {} s = {} cores{}\n",
        cpu["cpu_s"],
        cpu["wall_s"],
        cpu["cores"],
        if cpu["saturated"].as_bool() == Some(true) {
            "  (SATURATED: the client is the bottleneck)"
        } else {
            ""
        }
    );
    out
}

/// ` <label>{…}` when `map` is a non-empty object.
fn nonempty(label: &str, map: &Value) -> String {
    match map.as_object() {
        Some(m) if !m.is_empty() => format!("{label}{map}"),
        _ => String::new(),
    }
}

/// Runs the scenario.
pub async fn run(args: &SubscribersArgs) -> anyhow::Result<SubscribersReport> {
    if args.sockets == 0 || args.sockets > u64::from(u32::MAX) {
        bail!("--sockets must be positive");
    }
    if args.rate < 0.0 || !args.rate.is_finite() || args.writers == 0 {
        bail!("--rate must be 0 or more and --writers positive");
    }
    if args.first_user < 1 {
        bail!("--first-user must be positive");
    }
    let mut fleet = Fleet::resolve(&args.fleet).await?;
    let planned = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let run = run_id();
    let mut rng = Rng::new(args.seed.unwrap_or_else(|| {
        run.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }));
    let shared = Arc::new(Shared {
        tag: ValueTag::new(&run),
        log: SendLog::new(planned),
        clock: Clock::start(),
        targets: (0..planned)
            .map(|_| rng.below(args.sockets) as u32)
            .collect(),
        received_ns: (0..planned).map(|_| AtomicU64::new(0)).collect(),
        deliveries: (0..planned).map(|_| AtomicU32::new(0)).collect(),
        counts: Counts::default(),
        closed_early: Mutex::new(BTreeMap::new()),
    });
    let user_of = |j: u64| args.first_user + (args.offset + j) as i64;

    // Every process reads the gateways' RSS before any of them connects.
    fleet.read_rss(false);
    fleet::meet(&args.fleet, "start").await?;

    let connect_start_unix_ms = fleet::unix_ms();
    let connect_start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.fleet.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) =
        mpsc::unbounded_channel::<Result<(usize, Duration, bool), String>>();
    let mut tasks = Vec::with_capacity(args.sockets as usize);
    for j in 0..args.sockets {
        let permit = permits.clone().acquire_owned().await?;
        let (gateway, bind) = fleet.place(args.offset + j);
        let target = fleet.gateways[gateway].target.clone();
        let own = (args.subscribe == Subscribe::Own).then(|| user_of(j));
        let query = match own {
            Some(user) => format!("users={user}"),
            None => "users=".into(),
        };
        let (shared, ready) = (shared.clone(), ready_tx.clone());
        let timeout = args.fleet.connect_timeout;
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let opened = ws::open_from(&target, bind, &query, timeout).await;
            drop(permit);
            match opened {
                Ok((mut socket, seq, hello)) => {
                    let want: Vec<i64> = own.into_iter().collect();
                    let matches = fleet::hello_users(&hello).as_deref() == Some(&want[..]);
                    let _ = ready.send(Ok((gateway, began.elapsed(), matches)));
                    drop(ready);
                    let mut listener = Listener {
                        index: j as u32,
                        user: own,
                        max_seq: seq,
                    };
                    let ended = loop {
                        match socket.next().await {
                            Some(Ok(Message::Text(text))) => {
                                listener.on_text(&text, shared.clock.now_ns(), &shared);
                            }
                            Some(Ok(Message::Close(close))) => {
                                break close.map_or("close".into(), |f| {
                                    format!("close {}", u16::from(f.code))
                                });
                            }
                            Some(Ok(_)) => {}
                            Some(Err(error)) => break format!("error: {error}"),
                            None => break "eof".into(),
                        }
                    };
                    fleet::bump(&shared.closed_early, ended);
                }
                Err(error) => {
                    let _ = ready.send(Err(format!("{error:#}")));
                }
            }
        }));
    }
    drop(ready_tx);
    let mut connect_errors = BTreeMap::new();
    let mut hello_histogram = report::histogram();
    let (mut ready, mut hello_mismatch) = (0u64, 0u64);
    for _ in 0..args.sockets {
        let Some(result) = ready_rx.recv().await else {
            break;
        };
        match result {
            Ok((gateway, latency, matches)) => {
                ready += 1;
                fleet.gateways[gateway].sockets += 1;
                report::record(&mut hello_histogram, latency);
                hello_mismatch += u64::from(!matches);
            }
            Err(error) => *connect_errors.entry(error).or_insert(0) += 1,
        }
    }
    let connect_time = connect_start.elapsed();
    let connect_end_unix_ms = fleet::unix_ms();

    // Every process connected: settle, read the RSS, and start together.
    fleet::meet(&args.fleet, "connected").await?;
    tokio::time::sleep(args.fleet.settle).await;
    fleet.read_rss(true);
    fleet::meet(&args.fleet, "measure").await?;

    let cpu_before = sys::own_cpu_time();
    fleet.cpu_start();
    let phase_start = Instant::now();
    let start_ns = shared.clock.now_ns() + 1_000_000;
    let next = Arc::new(AtomicU64::new(0));
    let paths: Arc<Vec<String>> = Arc::new(
        (0..args.sockets)
            .map(|j| format!("/api/users/{}/", user_of(j)))
            .collect(),
    );
    let writers: Vec<_> = (0..args.writers.min(planned as usize))
        .map(|w| {
            let target = fleet.gateways[w % fleet.gateways.len()].target.clone();
            let (shared, next, paths) = (shared.clone(), next.clone(), paths.clone());
            let rate = args.rate;
            tokio::spawn(
                async move { write(&target, &shared, &next, &paths, rate, start_ns).await },
            )
        })
        .collect();
    let mut patch_histogram = report::histogram();
    let mut write_errors = BTreeMap::new();
    for writer in writers {
        let (histogram, errors) = writer.await?;
        patch_histogram.add(histogram)?;
        for (k, v) in errors {
            *write_errors.entry(k).or_insert(0) += v;
        }
    }
    let acked = shared.log.acked();
    let expected = if args.subscribe == Subscribe::Own {
        acked
    } else {
        0
    };
    let drain_end = Instant::now() + args.drain;
    while shared.counts.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Frames that are not owed (misdeliveries with `none`) still get a moment.
    if expected == 0 && planned > 0 {
        tokio::time::sleep(args.drain.min(Duration::from_millis(500))).await;
    }
    let wall = phase_start.elapsed();
    let client_cpu = ClientCpu {
        cpu: sys::own_cpu_time().saturating_sub(cpu_before),
        wall,
    };
    fleet.cpu_end();
    // What closed before this point closed early; stop the rest.
    let closed_early = std::mem::take(&mut *shared.closed_early.lock().expect("counts"));
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }

    // Tally.
    let mut latency = report::histogram();
    let mut lost = 0;
    for k in 0..planned {
        let received = shared.received_ns[k as usize].load(Ordering::Relaxed);
        if received == 0 {
            lost += u64::from(shared.log.is_acked(k) && args.subscribe == Subscribe::Own);
        } else if let Some(sent) = shared.log.sent_ns(k) {
            latency.saturating_record((received.saturating_sub(sent) / 1_000).max(1));
        }
    }
    let c = &shared.counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let clean = lost == 0
        && get(&c.duplicates) == 0
        && get(&c.misdelivered) == 0
        && get(&c.out_of_order) == 0
        && hello_mismatch == 0
        && connect_errors.is_empty()
        && closed_early.is_empty();
    let results = json!({
        "clean": clean,
        "sockets": args.sockets,
        "sockets_ready": ready,
        "connect_errors": report::counts_json(&connect_errors),
        "hello_mismatch": hello_mismatch,
        "connect_s": report::round3(connect_time.as_secs_f64()),
        "connect_start_unix_ms": connect_start_unix_ms,
        "connect_end_unix_ms": connect_end_unix_ms,
        "hello_latency": Latency::of(&hello_histogram).to_json(),
        "hello_latency_hist": report::histogram_json(&hello_histogram),
        "planned": planned,
        "acked": acked,
        "write_errors": report::counts_json(&write_errors),
        "patch_latency": Latency::of(&patch_histogram).to_json(),
        "patch_latency_hist": report::histogram_json(&patch_histogram),
        "expected": expected,
        "delivered": get(&c.delivered),
        "lost": lost,
        "duplicates": get(&c.duplicates),
        "misdelivered": get(&c.misdelivered),
        "out_of_order": get(&c.out_of_order),
        "foreign": get(&c.foreign),
        "unparsed": get(&c.unparsed),
        "presence_frames": get(&c.presence),
        "other_frames": get(&c.other),
        "closed_early": report::counts_json(&closed_early),
        "latency": Latency::of(&latency).to_json(),
        "latency_hist": report::histogram_json(&latency),
        "phase_s": report::round3(wall.as_secs_f64()),
        "client_cpu": client_cpu.to_json(),
        "gateways": fleet.gateways_json(),
        "server_cpu_s": fleet.watched_json(),
    });
    Ok(SubscribersReport {
        params: json!({
            "sockets": args.sockets,
            "offset": args.offset,
            "first_user": args.first_user,
            "subscribe": match args.subscribe { Subscribe::Own => "own", Subscribe::None => "none" },
            "rate": args.rate,
            "duration_s": args.duration.as_secs_f64(),
            "writers": args.writers,
            "urls": args.fleet.urls,
            "binds": args.fleet.binds,
            "label": args.fleet.label,
        }),
        target: fleet.gateways[0].target.url.clone(),
        results,
        gateways_human: fleet.human(),
    })
}

/// One writer connection: takes the next event, waits for its instant, PATCHes
/// its user. Returns PATCH latencies and failures.
async fn write(
    target: &Target,
    shared: &Shared,
    next: &AtomicU64,
    paths: &[String],
    rate: f64,
    start_ns: u64,
) -> (Histogram<u64>, BTreeMap<String, u64>) {
    let mut histogram = report::histogram();
    let mut errors = BTreeMap::new();
    let mut conn = None;
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= shared.log.len() {
            break;
        }
        let due_ns = start_ns + (k as f64 * 1e9 / rate) as u64;
        tokio::time::sleep_until(shared.clock.at(due_ns).into()).await;
        if conn.is_none() {
            match Conn::open(target).await {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    *errors.entry(format!("connect: {error}")).or_insert(0) += 1;
                    shared.log.mark_outcome(k, false);
                    continue;
                }
            }
        }
        let body = Bytes::from(format!(r#"{{"first_name":"{}"}}"#, shared.tag.value(k)));
        let path = format!(
            "{}{}",
            target.prefix, paths[shared.targets[k as usize] as usize]
        );
        let sent = Instant::now();
        shared.log.mark_sent(k, shared.clock.now_ns());
        let answer = conn
            .as_mut()
            .expect("connected above")
            .send(Method::PATCH, &path, Some(body))
            .await;
        report::record(&mut histogram, sent.elapsed());
        match answer {
            Ok((status, _)) if status.is_success() => shared.log.mark_outcome(k, true),
            Ok((status, _)) => {
                shared.log.mark_outcome(k, false);
                *errors.entry(status.as_u16().to_string()).or_insert(0) += 1;
            }
            Err(error) => {
                shared.log.mark_outcome(k, false);
                *errors.entry(format!("io: {error}")).or_insert(0) += 1;
                conn = None;
            }
        }
    }
    (histogram, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(targets: Vec<u32>) -> Shared {
        let n = targets.len() as u64;
        let log = SendLog::new(n);
        for k in 0..n {
            log.mark_sent(k, 1_000 * (k + 1));
            log.mark_outcome(k, true);
        }
        Shared {
            tag: ValueTag::new("r"),
            log,
            clock: Clock::start(),
            received_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            deliveries: (0..n).map(|_| AtomicU32::new(0)).collect(),
            targets,
            counts: Counts::default(),
            closed_early: Mutex::new(BTreeMap::new()),
        }
    }

    fn update(seq: u64, user: i64, name: &str) -> String {
        format!(
            r#"{{"type":"user_update","seq":{seq},"epoch":"e","data":{{"action":"update","user":{{"id":{user},"first_name":"{name}","last_name":"x","version":2}},"changed":["first_name"]}}}}"#
        )
    }

    #[test]
    fn each_event_counts_once_for_its_subscriber_only() {
        // Events 0 and 2 go to socket 0 (user 10), event 1 to socket 1 (user 11).
        let s = shared(vec![0, 1, 0]);
        let mut a = Listener {
            index: 0,
            user: Some(10),
            max_seq: 5,
        };
        let mut b = Listener {
            index: 1,
            user: Some(11),
            max_seq: 5,
        };
        assert_eq!(
            a.on_text(&update(6, 10, "lg-r-0"), 9_000, &s),
            Seen::Delivered
        );
        assert_eq!(
            a.on_text(&update(6, 10, "lg-r-0"), 9_500, &s),
            Seen::Duplicate
        );
        // Socket 0 gets user 11's event: misdelivered, and it does not count for b.
        assert_eq!(
            a.on_text(&update(7, 11, "lg-r-1"), 9_600, &s),
            Seen::Misdelivered
        );
        assert_eq!(
            b.on_text(&update(7, 11, "lg-r-1"), 9_700, &s),
            Seen::Delivered
        );
        // A frame naming a's user but carrying b's event is wrong too.
        assert_eq!(
            a.on_text(&update(8, 10, "lg-r-1"), 9_800, &s),
            Seen::Misdelivered
        );
        // Somebody else's write to a's user; then an older seq.
        assert_eq!(a.on_text(&update(9, 10, "Ada"), 9_900, &s), Seen::Foreign);
        assert_eq!(
            a.on_text(&update(8, 10, "lg-r-2"), 10_000, &s),
            Seen::Delivered
        );
        assert_eq!(
            a.on_text(r#"{"type":"presence","user":10,"members":[]}"#, 1, &s),
            Seen::Presence
        );
        assert_eq!(a.on_text(r#"{"type":"pong"}"#, 1, &s), Seen::Other);
        assert_eq!(a.on_text("garbage", 1, &s), Seen::Unparsed);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &s.counts;
        assert_eq!(get(&c.delivered), 3);
        assert_eq!(get(&c.duplicates), 1);
        assert_eq!(get(&c.misdelivered), 2);
        assert_eq!(get(&c.foreign), 1);
        assert_eq!(get(&c.out_of_order), 1);
        assert_eq!(
            (get(&c.presence), get(&c.other), get(&c.unparsed)),
            (1, 1, 1)
        );
        assert_eq!(s.received_ns[0].load(Ordering::Relaxed), 9_000);
        assert_eq!(s.deliveries[0].load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_unsubscribed_socket_gets_nothing_rightfully() {
        let s = shared(vec![0]);
        let mut none = Listener {
            index: 0,
            user: None,
            max_seq: 0,
        };
        assert_eq!(
            none.on_text(&update(1, 10, "lg-r-0"), 1, &s),
            Seen::Misdelivered
        );
        assert_eq!(s.deliveries[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_generator_is_reproducible_and_in_range() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..1000).map(|_| a.below(7)).collect();
        let ys: Vec<u64> = (0..1000).map(|_| b.below(7)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 7));
        // Every value turns up, roughly evenly.
        for v in 0..7 {
            let n = xs.iter().filter(|&&x| x == v).count();
            assert!((100..190).contains(&n), "{v}: {n}");
        }
        assert!(Rng::new(0).below(1) == 0);
    }
}
