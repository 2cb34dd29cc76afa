//! `connect`: opens N sockets as fast as the concurrency bound allows, times
//! how long until every one has its hello, then holds them idle and reads the
//! server's RSS to give its memory per socket.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::{
    report::{self, Latency},
    sys,
    target::{Target, TargetArgs, parse_duration},
    ws,
};

/// Options of `connect`.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Where the deployment is.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Sockets to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub sockets: usize,
    /// Sockets being opened at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Longest wait for one socket's hello.
    #[arg(long, default_value = "30", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// The server process whose RSS is read before and after (default: the
    /// process listening on the URL's port, if it is on this machine).
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Idle time after the last hello before the RSS is read, so the server
    /// settles.
    #[arg(long, default_value = "2", value_parser = parse_duration)]
    pub settle: Duration,
    /// A free-form label copied into the summary.
    #[arg(long)]
    pub label: Option<String>,
}

/// The outcome of a `connect` run.
#[derive(Debug)]
pub struct ConnectReport {
    /// Options of the run.
    pub params: Value,
    /// The target's URL.
    pub target: String,
    /// Sockets that got their hello.
    pub connected: usize,
    /// Why the others failed (error → count).
    pub errors: BTreeMap<String, u64>,
    /// Time until every socket had its hello (or failed).
    pub time_to_all: Duration,
    /// Per-socket time from starting to connect to hello.
    pub hello_latency: Latency,
    /// The server's pid, if known.
    pub gateway_pid: Option<u32>,
    /// The server's RSS before opening and after settling.
    pub gateway_rss: Option<(u64, u64)>,
    /// This client's RSS before and after, for comparison.
    pub client_rss: Option<(u64, u64)>,
}

impl ConnectReport {
    /// Server bytes per connected socket.
    pub fn gateway_bytes_per_socket(&self) -> Option<f64> {
        per_socket(self.gateway_rss, self.connected)
    }

    /// The human-readable report.
    pub fn human(&self) -> String {
        let mut out = format!(
            "connect {}  {} sockets, {} at once{}\n",
            self.target,
            self.params["sockets"],
            self.params["concurrency"],
            self.params["label"]
                .as_str()
                .map(|l| format!("  [{l}]"))
                .unwrap_or_default(),
        );
        out += &format!(
            "  connected   {} in {:.3} s ({:.0}/s){}\n",
            self.connected,
            self.time_to_all.as_secs_f64(),
            self.connected as f64 / self.time_to_all.as_secs_f64().max(1e-9),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!("  errors {:?}", self.errors)
            }
        );
        out += &format!("  hello       {}\n", self.hello_latency.human());
        match (self.gateway_pid, self.gateway_rss) {
            (Some(pid), Some((before, after))) => {
                out += &format!(
                    "  server pid {pid} RSS {:.1} MiB → {:.1} MiB = {:.0} bytes per socket\n",
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0,
                    self.gateway_bytes_per_socket().unwrap_or(0.0)
                );
            }
            _ => out += "  server RSS unknown (give --gateway-pid)\n",
        }
        if let Some((before, after)) = self.client_rss {
            out += &format!(
                "  client RSS {:.1} MiB → {:.1} MiB = {:.0} bytes per socket\n",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                per_socket(self.client_rss, self.connected).unwrap_or(0.0)
            );
        }
        out
    }

    /// The machine-readable summary line.
    pub fn summary(&self) -> String {
        let results = json!({
            "connected": self.connected,
            "errors": report::counts_json(&self.errors),
            "time_to_all_s": report::round3(self.time_to_all.as_secs_f64()),
            "hello_latency": self.hello_latency.to_json(),
            "gateway_pid": self.gateway_pid,
            "gateway_rss_before": self.gateway_rss.map(|r| r.0),
            "gateway_rss_after": self.gateway_rss.map(|r| r.1),
            "gateway_bytes_per_socket": self.gateway_bytes_per_socket().map(f64::round),
            "client_bytes_per_socket": per_socket(self.client_rss, self.connected).map(f64::round),
        });
        report::summary_line("connect", &self.target, self.params.clone(), results)
    }
}

/// `(after - before) / sockets`, which may be negative if the server freed
/// memory meanwhile.
fn per_socket(rss: Option<(u64, u64)>, sockets: usize) -> Option<f64> {
    let (before, after) = rss?;
    (sockets > 0).then(|| (after as f64 - before as f64) / sockets as f64)
}

/// Runs the scenario.
pub async fn run(args: &ConnectArgs) -> anyhow::Result<ConnectReport> {
    if args.sockets == 0 {
        bail!("--sockets must be positive");
    }
    let target = Arc::new(Target::from_args(&args.target).await?);
    let gateway_pid = args.gateway_pid.or_else(|| {
        (target.addr.ip().is_loopback())
            .then(|| sys::pid_listening_on(target.addr.port()))
            .flatten()
    });
    let own_pid = std::process::id();
    let gateway_before = gateway_pid.and_then(|pid| sys::rss_bytes(pid).ok());
    let client_before = sys::rss_bytes(own_pid).ok();

    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let mut tasks = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets {
        let permit = permits.clone().acquire_owned().await?;
        let (target, done) = (target.clone(), done_tx.clone());
        let timeout = args.connect_timeout;
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let opened = ws::open(&target, timeout).await;
            drop(permit);
            match opened {
                Ok((mut socket, _)) => {
                    let _ = done.send(Ok(began.elapsed()));
                    drop(done);
                    // Hold it idle, answering the server's pings, until aborted.
                    while let Some(Ok(_)) = socket.next().await {}
                }
                Err(error) => {
                    let _ = done.send(Err(format!("{error:#}")));
                }
            }
        }));
    }
    drop(done_tx);
    let mut histogram = report::histogram();
    let mut errors = BTreeMap::new();
    let mut connected = 0;
    // Each task reports once (and keeps running), so count the reports.
    for _ in 0..args.sockets {
        let Some(result) = done_rx.recv().await else {
            break;
        };
        match result {
            Ok(latency) => {
                connected += 1;
                report::record(&mut histogram, latency);
            }
            Err(error) => *errors.entry(error).or_insert(0) += 1,
        }
    }
    let time_to_all = start.elapsed();
    tokio::time::sleep(args.settle).await;
    let gateway_after = gateway_pid.and_then(|pid| sys::rss_bytes(pid).ok());
    let client_after = sys::rss_bytes(own_pid).ok();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(ConnectReport {
        params: json!({
            "sockets": args.sockets,
            "concurrency": args.concurrency,
            "settle_s": args.settle.as_secs_f64(),
            "label": args.label,
        }),
        target: target.url.clone(),
        connected,
        errors,
        time_to_all,
        hello_latency: Latency::of(&histogram),
        gateway_pid,
        gateway_rss: gateway_before.zip(gateway_after),
        client_rss: client_before.zip(client_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_socket_may_be_negative_and_needs_sockets() {
        assert_eq!(per_socket(Some((1000, 3000)), 4), Some(500.0));
        assert_eq!(per_socket(Some((3000, 1000)), 4), Some(-500.0));
        assert_eq!(per_socket(Some((1000, 3000)), 0), None);
        assert_eq!(per_socket(None, 4), None);
    }
}
