//! `rest`: GET or PATCH one user (or, with `--users N`, N users, connection
//! *c* on user *c* mod N) over C keep-alive connections, either as fast
//! as answers come back (closed loop) or on a fixed schedule (open loop, where
//! latency is measured from the scheduled instant so queueing counts).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Method;
use serde_json::{Value, json};

use crate::{
    http::{Conn, ensure_user},
    report::{self, ClientCpu, Latency},
    sys,
    target::{Target, TargetArgs, parse_duration},
    track::run_id,
};

/// Which request `rest` sends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestMethod {
    /// GET /api/users/{id}/
    Get,
    /// PATCH /api/users/{id}/ with a new first_name each time.
    Patch,
}

impl RestMethod {
    fn name(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Patch => "PATCH",
        }
    }
}

/// Options of `rest`.
#[derive(clap::Args, Clone, Debug)]
pub struct RestArgs {
    /// Where the deployment is.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The request to send.
    #[arg(long, short = 'm', value_enum, default_value = "get")]
    pub method: RestMethod,
    /// Keep-alive connections, one worker each.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub connections: usize,
    /// How long to measure (seconds, or with a unit: 500ms, 1m).
    #[arg(long, short = 'd', default_value = "10", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests per second over all connections (open loop); without it, each
    /// connection sends its next request when the last is answered.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Load before measuring (not counted).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The user to load (created if missing).
    #[arg(long, default_value_t = 1)]
    pub user_id: i64,
    /// Spread the connections over this many users, from `--user-id` on
    /// (each created if missing): 1 is one hot row; more shows writes to
    /// distinct rows.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,
    /// A server process whose CPU time over the run is reported (repeatable).
    #[arg(long = "watch-pid")]
    pub watch_pids: Vec<u32>,
    /// A free-form label copied into the summary.
    #[arg(long)]
    pub label: Option<String>,
}

/// The outcome of a `rest` run.
#[derive(Debug)]
pub struct RestReport {
    /// Options of the run.
    pub params: Value,
    /// The target's URL.
    pub target: String,
    /// Requests answered (any status) within the measured window.
    pub completed: u64,
    /// Completed requests per second.
    pub requests_per_s: f64,
    /// Answer time (from the scheduled instant in an open loop).
    pub latency: Latency,
    /// Answers by status, and `io` for failed connections or requests.
    pub statuses: BTreeMap<String, u64>,
    /// Non-2xx answers plus I/O failures.
    pub errors: u64,
    /// The client's CPU over the measured window.
    pub client_cpu: ClientCpu,
    /// `--watch-pid` processes' CPU over the same window.
    pub watched_cpu: Vec<(u32, Option<Duration>)>,
}

impl RestReport {
    /// The human-readable report.
    pub fn human(&self) -> String {
        let p = &self.params;
        let mode = match p["rate"].as_f64() {
            Some(rate) => format!("open loop at {rate}/s"),
            None => "closed loop".into(),
        };
        let mut out = format!(
            "rest {} {}  {} connections, {mode}, {} s{}\n",
            p["method"].as_str().unwrap_or("?"),
            self.target,
            p["connections"],
            p["duration_s"],
            p["label"]
                .as_str()
                .map(|l| format!("  [{l}]"))
                .unwrap_or_default(),
        );
        out += &format!(
            "  requests    {} = {:.0}/s  errors {}  statuses {:?}\n",
            self.completed, self.requests_per_s, self.errors, self.statuses
        );
        out += &format!("  latency     {}\n", self.latency.human());
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
            "completed": self.completed,
            "requests_per_s": report::round3(self.requests_per_s),
            "errors": self.errors,
            "statuses": report::counts_json(&self.statuses),
            "latency": self.latency.to_json(),
            "client_cpu": self.client_cpu.to_json(),
            "server_cpu_s": report::watched_cpu_json(&self.watched_cpu),
        });
        report::summary_line("rest", &self.target, self.params.clone(), results)
    }
}

/// When the run's requests happen.
struct Plan {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    rate: Option<f64>,
    next: AtomicU64,
}

impl Plan {
    /// The instant the next request is due, or `None` when the run is over.
    async fn next_due(&self) -> Option<Instant> {
        let Some(rate) = self.rate else {
            let now = Instant::now();
            return (now < self.end).then_some(now);
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let due = self.start + Duration::from_secs_f64(i as f64 / rate);
        if due >= self.end {
            return None;
        }
        tokio::time::sleep_until(due.into()).await;
        Some(due)
    }
}

/// What one worker measured.
struct Tally {
    histogram: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
}

/// Runs the scenario.
pub async fn run(args: &RestArgs) -> anyhow::Result<RestReport> {
    if args.connections == 0 || args.rate.is_some_and(|r| r <= 0.0) {
        bail!("--connections and --rate must be positive");
    }
    let target = Arc::new(Target::from_args(&args.target).await?);
    let user_id = ensure_user(&target, args.user_id).await?;
    let mut paths = vec![Arc::new(target.user_path(user_id))];
    for next in 1..i64::from(args.users) {
        let id = ensure_user(&target, user_id + next).await?;
        paths.push(Arc::new(target.user_path(id)));
    }
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(Conn::open(&target).await?);
    }
    let start = Instant::now() + Duration::from_millis(10);
    let plan = Arc::new(Plan {
        start,
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
        rate: args.rate,
        next: AtomicU64::new(0),
    });
    let run_tag = format!("lg-{}", run_id());
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(worker, conn)| {
            let path = paths[worker % paths.len()].clone();
            let (target, plan) = (target.clone(), plan.clone());
            let prefix = format!("{run_tag}-{worker}-");
            let method = args.method;
            tokio::spawn(async move { work(conn, &target, &path, method, &prefix, &plan).await })
        })
        .collect();
    tokio::time::sleep_until(plan.measure_from.into()).await;
    let cpu_before = sys::own_cpu_time();
    let watched_before: Vec<_> = args
        .watch_pids
        .iter()
        .map(|&pid| sys::process_cpu_time(pid).ok())
        .collect();
    tokio::time::sleep_until(plan.end.into()).await;
    let client_cpu = ClientCpu {
        cpu: sys::own_cpu_time().saturating_sub(cpu_before),
        wall: args.duration,
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
    let mut histogram = report::histogram();
    let mut statuses = BTreeMap::new();
    for worker in workers {
        let tally = worker.await?;
        histogram.add(&tally.histogram)?;
        for (status, n) in tally.statuses {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    let errors = statuses
        .iter()
        .filter(|(status, _)| !status.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    let completed = histogram.len();
    Ok(RestReport {
        params: json!({
            "method": args.method.name(),
            "connections": args.connections,
            "duration_s": args.duration.as_secs_f64(),
            "rate": args.rate,
            "warmup_s": args.warmup.as_secs_f64(),
            "user_id": user_id,
            "users": args.users,
            "label": args.label,
        }),
        target: target.url.clone(),
        completed,
        requests_per_s: completed as f64 / args.duration.as_secs_f64().max(1e-9),
        latency: Latency::of(&histogram),
        statuses,
        errors,
        client_cpu,
        watched_cpu,
    })
}

/// One connection's loop: wait for the next due instant, send, time the answer.
async fn work(
    conn: Conn,
    target: &Target,
    path: &str,
    method: RestMethod,
    prefix: &str,
    plan: &Plan,
) -> Tally {
    let mut tally = Tally {
        histogram: report::histogram(),
        statuses: BTreeMap::new(),
    };
    let mut conn = Some(conn);
    let mut sent = 0u64;
    while let Some(due) = plan.next_due().await {
        let measured = due >= plan.measure_from;
        if conn.is_none() {
            match Conn::open(target).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    if measured {
                        *tally.statuses.entry("io".into()).or_insert(0) += 1;
                    }
                    // Do not spin against a server that is down.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let body = (method == RestMethod::Patch)
            .then(|| Bytes::from(format!(r#"{{"first_name":"{prefix}{sent}"}}"#)));
        sent += 1;
        let http_method = match method {
            RestMethod::Get => Method::GET,
            RestMethod::Patch => Method::PATCH,
        };
        let answer = conn
            .as_mut()
            .expect("connected above")
            .send(http_method, path, body)
            .await;
        let key = match answer {
            Ok((status, _)) => status.as_u16().to_string(),
            Err(_) => {
                conn = None;
                "io".into()
            }
        };
        if measured {
            if key != "io" {
                report::record(&mut tally.histogram, due.elapsed());
            }
            *tally.statuses.entry(key).or_insert(0) += 1;
        }
    }
    tally
}
