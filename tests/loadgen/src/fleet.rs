//! What `subscribers` and `presence` share: many sockets over several gateways
//! and several local source addresses, split between load-generator processes
//! (each is capped at its open-file limit), a file barrier so those processes
//! load the gateways at the same time, and each gateway's memory and CPU.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{
    report, sys,
    target::{Target, parse_duration},
};

/// Where the sockets go and where they come from, and how the processes meet.
#[derive(clap::Args, Clone, Debug)]
pub struct FleetArgs {
    /// Gateway base URLs (repeatable, or comma-separated): socket `g` (counted
    /// over every process) goes to URL `g mod <URLs>`.
    #[arg(
        long = "url",
        env = "LOADGEN_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub urls: Vec<String>,
    /// A JWT for gateways with authentication on (as `--token` elsewhere).
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Local source addresses (repeatable, or comma-separated; all of 127.0.0.0/8
    /// is local on Linux), rotated so every URL gets every address: socket `g`
    /// binds address `(g div <URLs>) mod <addresses>`. None: the kernel's choice.
    #[arg(long = "bind", value_delimiter = ',')]
    pub binds: Vec<IpAddr>,
    /// The gateway process behind each `--url`, in the same order, for its RSS
    /// and CPU (default: the process listening on the URL's port, if local).
    #[arg(long = "gateway-pid", value_delimiter = ',')]
    pub gateway_pids: Vec<u32>,
    /// Another process whose CPU time over the measured phase is reported
    /// (repeatable: the user-service, Redis).
    #[arg(long = "watch-pid")]
    pub watch_pids: Vec<u32>,
    /// Sockets being opened at once by this process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Longest wait for one socket's hello.
    #[arg(long, default_value = "30", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// A directory the processes of one run share: each waits there for the
    /// others (`--parties`) before connecting and again before the measured
    /// phase, so the gateways' RSS is read before any and after all sockets, and
    /// the phase starts at once everywhere.
    #[arg(long)]
    pub barrier: Option<PathBuf>,
    /// How many processes meet at `--barrier`.
    #[arg(long, default_value_t = 1)]
    pub parties: usize,
    /// This process's name at the barrier (default: its pid).
    #[arg(long)]
    pub party: Option<String>,
    /// Longest wait at a barrier.
    #[arg(long, default_value = "120", value_parser = parse_duration)]
    pub barrier_timeout: Duration,
    /// Idle time after every socket is connected before the gateways' RSS is
    /// read and the measured phase starts.
    #[arg(long, default_value = "2", value_parser = parse_duration)]
    pub settle: Duration,
    /// A free-form label copied into the summary.
    #[arg(long)]
    pub label: Option<String>,
}

/// Which gateway URL and which source address socket `g` (a global index,
/// counted over every process) uses: URLs round-robin, and the address moves on
/// after each full round of URLs so every (URL, address) pair gets its share.
pub fn placement(g: u64, urls: usize, binds: usize) -> (usize, Option<usize>) {
    let urls = urls.max(1) as u64;
    let url = (g % urls) as usize;
    let bind = (binds > 0).then(|| ((g / urls) % binds as u64) as usize);
    (url, bind)
}

/// One gateway as a run sees it.
pub struct Gateway {
    /// Its URL, resolved.
    pub target: Target,
    /// Its process, if known.
    pub pid: Option<u32>,
    /// Its RSS before any socket, and after every socket and the settle time.
    pub rss: (Option<u64>, Option<u64>),
    /// Its CPU time at the start of the measured phase.
    cpu_before: Option<Duration>,
    /// Its CPU time over the measured phase.
    pub cpu: Option<Duration>,
    /// Sockets of this process that got their hello there.
    pub sockets: u64,
}

/// The gateways and the other watched processes of a run.
pub struct Fleet {
    /// Every `--url`, in order.
    pub gateways: Vec<Gateway>,
    /// The source addresses to rotate.
    pub binds: Vec<IpAddr>,
    watched: Vec<(u32, Option<Duration>, Option<Duration>)>,
}

impl Fleet {
    /// Resolves the URLs and finds the gateways' processes.
    pub async fn resolve(args: &FleetArgs) -> anyhow::Result<Self> {
        if args.urls.is_empty() {
            bail!("give at least one --url");
        }
        if args.gateway_pids.len() > args.urls.len() {
            bail!("more --gateway-pid than --url");
        }
        let mut gateways = Vec::new();
        for (i, url) in args.urls.iter().enumerate() {
            let mut target = Target::resolve(url.trim()).await?;
            target.token = args.token.clone().filter(|t| !t.is_empty());
            let pid = args.gateway_pids.get(i).copied().or_else(|| {
                target
                    .addr
                    .ip()
                    .is_loopback()
                    .then(|| sys::pid_listening_on(target.addr.port()))
                    .flatten()
            });
            gateways.push(Gateway {
                target,
                pid,
                rss: (None, None),
                cpu_before: None,
                cpu: None,
                sockets: 0,
            });
        }
        Ok(Self {
            gateways,
            binds: args.binds.clone(),
            watched: args.watch_pids.iter().map(|&p| (p, None, None)).collect(),
        })
    }

    /// The gateway and the source address of socket `g`.
    pub fn place(&self, g: u64) -> (usize, Option<IpAddr>) {
        let (url, bind) = placement(g, self.gateways.len(), self.binds.len());
        (url, bind.map(|b| self.binds[b]))
    }

    /// Reads every gateway's RSS before (`after` false) or after the sockets.
    pub fn read_rss(&mut self, after: bool) {
        for gateway in &mut self.gateways {
            let rss = gateway.pid.and_then(|pid| sys::rss_bytes(pid).ok());
            if after {
                gateway.rss.1 = rss;
            } else {
                gateway.rss.0 = rss;
            }
        }
    }

    /// Notes every watched process's CPU time at the start of the phase.
    pub fn cpu_start(&mut self) {
        for gateway in &mut self.gateways {
            gateway.cpu_before = gateway.pid.and_then(|pid| sys::process_cpu_time(pid).ok());
        }
        for (pid, before, _) in &mut self.watched {
            *before = sys::process_cpu_time(*pid).ok();
        }
    }

    /// Takes every watched process's CPU time over the phase.
    pub fn cpu_end(&mut self) {
        let spent = |pid: Option<u32>, before: Option<Duration>| {
            let after = pid.and_then(|pid| sys::process_cpu_time(pid).ok());
            after.zip(before).map(|(a, b)| a.saturating_sub(b))
        };
        for gateway in &mut self.gateways {
            gateway.cpu = spent(gateway.pid, gateway.cpu_before);
        }
        for (pid, before, cpu) in &mut self.watched {
            *cpu = spent(Some(*pid), *before);
        }
    }

    /// `[{"url", "pid", "sockets", "rss_before", "rss_after", "bytes_per_socket",
    /// "cpu_s"}, …]` for the summary; `bytes_per_socket` counts only this
    /// process's sockets (the merge recomputes it over every process).
    pub fn gateways_json(&self) -> Value {
        Value::Array(
            self.gateways
                .iter()
                .map(|g| {
                    json!({
                        "url": g.target.url,
                        "pid": g.pid,
                        "sockets": g.sockets,
                        "rss_before": g.rss.0,
                        "rss_after": g.rss.1,
                        "bytes_per_socket": bytes_per_socket(g.rss.0, g.rss.1, g.sockets),
                        "cpu_s": g.cpu.map(|c| report::round3(c.as_secs_f64())),
                    })
                })
                .collect(),
        )
    }

    /// The `--watch-pid` processes' CPU over the phase, as `{pid: seconds}`.
    pub fn watched_json(&self) -> Value {
        let watched: Vec<_> = self.watched.iter().map(|&(p, _, c)| (p, c)).collect();
        report::watched_cpu_json(&watched)
    }

    /// The human lines about the gateways and watched processes.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for g in &self.gateways {
            let pid = g.pid.map_or("?".into(), |p| p.to_string());
            let memory = match (g.rss.0, g.rss.1) {
                (Some(before), Some(after)) => format!(
                    "RSS {:.1} → {:.1} MiB ({} B per socket of this process)",
                    before as f64 / 1048576.0,
                    after as f64 / 1048576.0,
                    bytes_per_socket(g.rss.0, g.rss.1, g.sockets)
                        .map_or("?".into(), |b| format!("{b:.0}"))
                ),
                _ => "RSS unknown".into(),
            };
            let cpu = g.cpu.map_or("CPU unknown".into(), |c| {
                format!("CPU {:.2} s", c.as_secs_f64())
            });
            out += &format!(
                "  gateway {} pid {pid}: {} sockets, {memory}, {cpu}\n",
                g.target.url, g.sockets
            );
        }
        for (pid, _, cpu) in &self.watched {
            match cpu {
                Some(cpu) => out += &format!("  pid {pid} CPU {:.2} s\n", cpu.as_secs_f64()),
                None => out += &format!("  pid {pid} CPU unknown (gone?)\n"),
            }
        }
        out
    }
}

/// `(after - before) / sockets` (negative if the server freed memory meanwhile).
pub fn bytes_per_socket(before: Option<u64>, after: Option<u64>, sockets: u64) -> Option<f64> {
    let (before, after) = before.zip(after)?;
    (sockets > 0).then(|| ((after as f64 - before as f64) / sockets as f64).round())
}

/// Milliseconds since the Unix epoch, so processes' instants can be compared.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits until `parties` processes have arrived at barrier `name` in `dir`
/// (each leaves a file `<name>.<party>`); returns at once without a directory.
pub async fn meet(args: &FleetArgs, name: &str) -> anyhow::Result<Duration> {
    let Some(dir) = &args.barrier else {
        return Ok(Duration::ZERO);
    };
    let party = args
        .party
        .clone()
        .unwrap_or_else(|| std::process::id().to_string());
    wait_at(dir, name, &party, args.parties, args.barrier_timeout).await
}

/// The barrier itself: leaves `<dir>/<name>.<party>` and polls every 2 ms
/// until `parties` such files exist.
pub async fn wait_at(
    dir: &Path,
    name: &str,
    party: &str,
    parties: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let prefix = format!("{name}.");
    std::fs::write(dir.join(format!("{prefix}{party}")), b"")
        .with_context(|| format!("writing to {}", dir.display()))?;
    let start = std::time::Instant::now();
    loop {
        let here = std::fs::read_dir(dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count();
        if here >= parties {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("barrier {name}: {here} of {parties} processes after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Adds one to `counts[key]`.
pub fn bump(counts: &std::sync::Mutex<BTreeMap<String, u64>>, key: String) {
    *counts.lock().expect("counts").entry(key).or_insert(0) += 1;
}

/// The users of a `hello` (`"users": […]`), `None` when it has none (an
/// unfiltered socket, or a gateway without subscriptions).
pub fn hello_users(hello: &str) -> Option<Vec<i64>> {
    let json: Value = serde_json::from_str(hello).ok()?;
    json.get("users")?
        .as_array()?
        .iter()
        .map(Value::as_i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_round_robin_and_addresses_cover_every_url() {
        // 3 URLs, 2 addresses: every (url, address) pair once in 6 sockets.
        let pairs: Vec<_> = (0..6).map(|g| placement(g, 3, 2)).collect();
        assert_eq!(
            pairs,
            [
                (0, Some(0)),
                (1, Some(0)),
                (2, Some(0)),
                (0, Some(1)),
                (1, Some(1)),
                (2, Some(1))
            ]
        );
        // 6 URLs and 8 addresses (a common factor): still all 48 pairs, evenly.
        let mut seen = BTreeMap::new();
        for g in 0..48 * 100 {
            *seen.entry(placement(g, 6, 8)).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 48);
        assert!(seen.values().all(|&n| n == 100));
        assert_eq!(placement(7, 1, 0), (0, None));
        assert_eq!(placement(7, 0, 3), (0, Some(1)));
    }

    #[test]
    fn bytes_per_socket_needs_both_readings_and_sockets() {
        assert_eq!(bytes_per_socket(Some(1000), Some(3000), 4), Some(500.0));
        assert_eq!(bytes_per_socket(Some(3000), Some(1000), 4), Some(-500.0));
        assert_eq!(bytes_per_socket(Some(1000), None, 4), None);
        assert_eq!(bytes_per_socket(Some(1000), Some(3000), 0), None);
    }

    #[test]
    fn hello_users_are_read_when_present() {
        assert_eq!(
            hello_users(r#"{"type":"hello","seq":1,"epoch":"e","users":[3,7]}"#),
            Some(vec![3, 7])
        );
        assert_eq!(
            hello_users(r#"{"type":"hello","seq":1,"users":[]}"#),
            Some(vec![])
        );
        assert_eq!(hello_users(r#"{"type":"hello","seq":1}"#), None);
        assert_eq!(hello_users(r#"{"type":"hello","users":["x"]}"#), None);
    }

    #[tokio::test]
    async fn the_barrier_opens_when_every_party_is_there() {
        let dir = std::env::temp_dir().join(format!("loadgen-barrier-{}", crate::track::run_id()));
        let timeout = Duration::from_secs(5);
        let (d1, d2) = (dir.clone(), dir.clone());
        let first = tokio::spawn(async move { wait_at(&d1, "go", "a", 2, timeout).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!first.is_finished());
        wait_at(&d2, "go", "b", 2, timeout).await.unwrap();
        first.await.unwrap().unwrap();
        // Another barrier in the same directory counts separately.
        let lonely = wait_at(&dir, "end", "a", 2, Duration::from_millis(20)).await;
        assert!(lonely.unwrap_err().to_string().contains("1 of 2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
