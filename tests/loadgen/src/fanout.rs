//! `fanout`: N sockets listen while a writer PATCHes at a fixed rate; every
//! socket times each update from PATCH sent to frame received and checks loss,
//! duplicates and order. The same code runs against the floor and the real stack.
//! One module though past 400 lines: the listeners, the writer and the tally are
//! one measurement, and each change to one is a change to how the others count.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
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
    http::{Conn, ensure_user},
    report::{self, ClientCpu, Latency},
    sys,
    target::{Target, TargetArgs, parse_duration},
    track::{Clock, Seen, SendLog, Tally, ValueTag, run_id},
    ws,
};

/// Options of `fanout`.
#[derive(clap::Args, Clone, Debug)]
pub struct FanoutArgs {
    /// Where the deployment is.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Sockets listening to /ws/user-updates/.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub sockets: usize,
    /// PATCHes per second (open loop: sent on schedule whatever the answers).
    #[arg(long, short = 'r', default_value_t = 10.0)]
    pub rate: f64,
    /// How long the writer runs (seconds, or with a unit: 500ms, 1m).
    #[arg(long, short = 'd', default_value = "10", value_parser = parse_duration)]
    pub duration: Duration,
    /// The user to PATCH (created if missing).
    #[arg(long, default_value_t = 1)]
    pub user_id: i64,
    /// Keep-alive connections the writer spreads its PATCHes over, so a slow
    /// answer does not delay the next scheduled PATCH.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Sockets being opened at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Longest wait for one socket's hello.
    #[arg(long, default_value = "30", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Longest wait after the last PATCH for outstanding frames (the run ends
    /// earlier once every socket has every acknowledged update).
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    pub drain: Duration,
    /// A server process whose CPU time over the run is reported (repeatable).
    #[arg(long = "watch-pid")]
    pub watch_pids: Vec<u32>,
    /// A free-form label copied into the summary (e.g. "floor" or "stack").
    #[arg(long)]
    pub label: Option<String>,
}

/// What every socket task shares.
struct Shared {
    tag: ValueTag,
    log: SendLog,
    clock: Clock,
    /// Run updates delivered over all sockets, for ending the drain early.
    delivered: AtomicU64,
}

/// One socket's state, read by the run once the socket task has been stopped.
#[derive(Default)]
struct Slot {
    tally: Option<Tally>,
    /// Why the socket ended before the run stopped it.
    ended: Option<String>,
}

/// The outcome of a `fanout` run.
#[derive(Debug)]
pub struct FanoutReport {
    /// Options of the run.
    pub params: Value,
    /// The target's URL.
    pub target: String,
    /// Sockets that got their hello.
    pub sockets_ready: usize,
    /// Why the others failed (error → count).
    pub connect_errors: BTreeMap<String, u64>,
    /// Time until every socket had its hello (or failed).
    pub connect_time: Duration,
    /// Updates the writer planned.
    pub planned: u64,
    /// Updates the server acknowledged (200).
    pub acked: u64,
    /// Failed PATCHes by status or error.
    pub write_errors: BTreeMap<String, u64>,
    /// PATCH round-trip times.
    pub patch_latency: Latency,
    /// Acknowledged updates × ready sockets.
    pub expected: u64,
    /// Run updates received (first time per socket).
    pub delivered: u64,
    /// Deliveries per second from the first PATCH to the last delivery.
    pub deliveries_per_s: f64,
    /// PATCH sent → frame received, over every delivery.
    pub latency: Latency,
    /// Acknowledged updates a socket never received, summed over sockets.
    pub lost: u64,
    /// Updates a socket received twice or more.
    pub duplicates: u64,
    /// Updates whose seq did not increase on their socket.
    pub out_of_order: u64,
    /// Updates from other writers.
    pub foreign: u64,
    /// Frames that could not be read.
    pub unparsed: u64,
    /// Sockets that ended before the run stopped them (reason → count).
    pub closed_early: BTreeMap<String, u64>,
    /// The client's CPU over the write and drain phase.
    pub client_cpu: ClientCpu,
    /// `--watch-pid` processes' CPU over the same phase.
    pub watched_cpu: Vec<(u32, Option<Duration>)>,
}

impl FanoutReport {
    /// Whether every socket got every acknowledged update once, in order.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.closed_early.is_empty()
            && self.connect_errors.is_empty()
    }

    /// The human-readable report.
    pub fn human(&self) -> String {
        let p = &self.params;
        let mut out = format!(
            "fanout {}  {} sockets × {}/s for {} s ({} updates, {} writers){}\n",
            self.target,
            p["sockets"],
            p["rate"],
            p["duration_s"],
            self.planned,
            p["writers"],
            p["label"]
                .as_str()
                .map(|l| format!("  [{l}]"))
                .unwrap_or_default(),
        );
        out += &format!(
            "  connect     {} ready in {:.3} s{}\n",
            self.sockets_ready,
            self.connect_time.as_secs_f64(),
            errors_suffix(&self.connect_errors)
        );
        out += &format!(
            "  writes      {} acked of {}{}; PATCH {}\n",
            self.acked,
            self.planned,
            errors_suffix(&self.write_errors),
            self.patch_latency.human()
        );
        out += &format!(
            "  deliveries  {} of {} expected, {:.0}/s\n",
            self.delivered, self.expected, self.deliveries_per_s
        );
        out += &format!("  latency     {}\n", self.latency.human());
        out += &format!(
            "  checks      lost {}  duplicates {}  out-of-order {}  foreign {}  unparsed {}  closed early {}{}\n",
            self.lost,
            self.duplicates,
            self.out_of_order,
            self.foreign,
            self.unparsed,
            self.closed_early.values().sum::<u64>(),
            errors_suffix(&self.closed_early)
        );
        out += &format!("  {}\n", self.client_cpu.human());
        for (pid, cpu) in &self.watched_cpu {
            match cpu {
                Some(cpu) => out += &format!("  pid {pid} CPU {:.2} s\n", cpu.as_secs_f64()),
                None => out += &format!("  pid {pid} CPU unknown (gone?)\n"),
            }
        }
        out
    }

    /// The machine-readable summary line.
    pub fn summary(&self) -> String {
        let results = json!({
            "clean": self.is_clean(),
            "sockets_ready": self.sockets_ready,
            "connect_errors": report::counts_json(&self.connect_errors),
            "connect_s": report::round3(self.connect_time.as_secs_f64()),
            "planned": self.planned,
            "acked": self.acked,
            "write_errors": report::counts_json(&self.write_errors),
            "patch_latency": self.patch_latency.to_json(),
            "expected_deliveries": self.expected,
            "delivered": self.delivered,
            "deliveries_per_s": report::round3(self.deliveries_per_s),
            "latency": self.latency.to_json(),
            "lost": self.lost,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "foreign": self.foreign,
            "unparsed": self.unparsed,
            "closed_early": report::counts_json(&self.closed_early),
            "client_cpu": self.client_cpu.to_json(),
            "server_cpu_s": report::watched_cpu_json(&self.watched_cpu),
        });
        report::summary_line("fanout", &self.target, self.params.clone(), results)
    }
}

/// ` (errors: a×2, b×1)` or nothing.
fn errors_suffix(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    format!(" ({})", list.join(", "))
}

/// Runs the scenario.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<FanoutReport> {
    if args.sockets == 0 || args.rate <= 0.0 || args.writers == 0 {
        bail!("--sockets, --rate and --writers must be positive");
    }
    let target = Arc::new(Target::from_args(&args.target).await?);
    let user_id = ensure_user(&target, args.user_id).await?;
    let planned = ((args.rate * args.duration.as_secs_f64()).round() as u64).max(1);
    let shared = Arc::new(Shared {
        tag: ValueTag::new(&run_id()),
        log: SendLog::new(planned),
        clock: Clock::start(),
        delivered: AtomicU64::new(0),
    });

    // Open every socket (bounded concurrency) and wait for each hello.
    let connect_start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut sockets = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets {
        let permit = permits.clone().acquire_owned().await?;
        let slot = Arc::new(Mutex::new(Slot::default()));
        let (target, shared, ready, slot2) = (
            target.clone(),
            shared.clone(),
            ready_tx.clone(),
            slot.clone(),
        );
        let timeout = args.connect_timeout;
        let task = tokio::spawn(async move {
            let opened = ws::open(&target, timeout).await;
            drop(permit);
            match opened {
                Ok((socket, hello_seq)) => {
                    slot2.lock().expect("slot").tally =
                        Some(Tally::new(hello_seq, shared.log.len()));
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    let ended = listen(socket, &shared, &slot2).await;
                    slot2.lock().expect("slot").ended = Some(ended);
                }
                Err(error) => {
                    let _ = ready.send(Err(format!("{error:#}")));
                }
            }
        });
        sockets.push((task, slot));
    }
    drop(ready_tx);
    let mut connect_errors = BTreeMap::new();
    let mut ready = 0;
    // Each task reports once (and keeps running), so count the reports.
    for _ in 0..args.sockets {
        let Some(result) = ready_rx.recv().await else {
            break;
        };
        match result {
            Ok(()) => ready += 1,
            Err(error) => *connect_errors.entry(error).or_insert(0) += 1,
        }
    }
    let connect_time = connect_start.elapsed();
    if ready == 0 {
        bail!("no socket connected: {connect_errors:?}");
    }

    // Write on schedule, then wait for the frames still on their way.
    let cpu_before = sys::own_cpu_time();
    let watched_before: Vec<_> = args
        .watch_pids
        .iter()
        .map(|&pid| sys::process_cpu_time(pid).ok())
        .collect();
    let phase_start = Instant::now();
    let start_ns = shared.clock.now_ns() + 1_000_000;
    let next = Arc::new(AtomicU64::new(0));
    let path = target.user_path(user_id);
    let writers: Vec<_> = (0..args.writers.min(planned as usize))
        .map(|_| {
            let (target, shared, next, path) =
                (target.clone(), shared.clone(), next.clone(), path.clone());
            let rate = args.rate;
            tokio::spawn(async move { write(&target, &shared, &next, &path, rate, start_ns).await })
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
    let expected = acked * ready as u64;
    let drain_end = Instant::now() + args.drain;
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (task, _) in &sockets {
        task.abort();
    }
    let wall = phase_start.elapsed();
    let client_cpu = ClientCpu {
        cpu: sys::own_cpu_time().saturating_sub(cpu_before),
        wall,
    };
    let watched_cpu = args
        .watch_pids
        .iter()
        .zip(watched_before)
        .map(|(&pid, before)| {
            let after = sys::process_cpu_time(pid).ok();
            (pid, after.zip(before).map(|(a, b)| a.saturating_sub(b)))
        })
        .collect();

    // Tally.
    let mut latency = report::histogram();
    let mut report = FanoutReport {
        params: json!({
            "sockets": args.sockets,
            "rate": args.rate,
            "duration_s": args.duration.as_secs_f64(),
            "writers": args.writers,
            "user_id": user_id,
            "label": args.label,
        }),
        target: target.url.clone(),
        sockets_ready: ready,
        connect_errors,
        connect_time,
        planned,
        acked,
        write_errors,
        patch_latency: Latency::of(&patch_histogram),
        expected,
        delivered: 0,
        deliveries_per_s: 0.0,
        latency: Latency::default(),
        lost: 0,
        duplicates: 0,
        out_of_order: 0,
        foreign: 0,
        unparsed: 0,
        closed_early: BTreeMap::new(),
        client_cpu,
        watched_cpu,
    };
    let mut last_ns = 0;
    for (task, slot) in sockets {
        let _ = task.await;
        let slot = std::mem::take(&mut *slot.lock().expect("slot"));
        let Some(tally) = slot.tally else { continue };
        if let Some(reason) = slot.ended {
            *report.closed_early.entry(reason).or_insert(0) += 1;
        }
        for &micros in &tally.latencies_us {
            latency.saturating_record(u64::from(micros).max(1));
        }
        report.delivered += tally.delivered;
        report.lost += tally.lost(&shared.log);
        report.duplicates += tally.duplicates;
        report.out_of_order += tally.out_of_order;
        report.foreign += tally.foreign;
        report.unparsed += tally.unparsed;
        last_ns = last_ns.max(tally.last_ns);
    }
    report.latency = Latency::of(&latency);
    let window = Duration::from_nanos(last_ns.saturating_sub(start_ns));
    if !window.is_zero() {
        report.deliveries_per_s = report.delivered as f64 / window.as_secs_f64();
    }
    Ok(report)
}

/// Reads one socket until it ends (the run aborts the task to stop it); returns
/// why it ended.
async fn listen(mut socket: ws::Socket, shared: &Shared, slot: &Mutex<Slot>) -> String {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let now = shared.clock.now_ns();
                let mut slot = slot.lock().expect("slot");
                let tally = slot.tally.as_mut().expect("tally set before listening");
                if tally.on_text(&text, now, &shared.tag, &shared.log) == Seen::Delivered {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(Message::Close(close))) => {
                return match close {
                    Some(frame) => format!("close {}", u16::from(frame.code)),
                    None => "close".into(),
                };
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return format!("error: {error}"),
            None => return "eof".into(),
        }
    }
}

/// One writer connection: takes the next update index, waits for its scheduled
/// instant, sends it. Returns PATCH latencies and failures.
async fn write(
    target: &Target,
    shared: &Shared,
    next: &AtomicU64,
    path: &str,
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
        let sent = Instant::now();
        shared.log.mark_sent(k, shared.clock.now_ns());
        let answer = conn
            .as_mut()
            .expect("connected above")
            .send(Method::PATCH, path, Some(body))
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
