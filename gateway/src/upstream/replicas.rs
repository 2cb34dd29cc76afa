//! The user-services the gateway calls: one or more URLs (`--user-service-url
//! a,b,…`), each name resolved again every `--user-service-resolve-interval` so
//! a Kubernetes headless Service's pods come and go, every address checked with
//! grpc.health.v1 every [`HEALTH_INTERVAL`]. The addresses that answer SERVING
//! are in two balanced channels (tonic's, power of two choices): one for REST
//! calls, one for the WatchUsers stream, whose reconnect then lands on another
//! healthy replica (it resumes from its last seq, as after any reconnect).
//!
//! An address is balanced over from the moment it is found (so a gateway can
//! serve before its first check), leaves as soon as a check fails (unreachable,
//! or NOT_SERVING: its database is down, or it drains) and comes back at the
//! next check that passes. When no address passes, all of them are balanced
//! over: a call then fails at once (connection refused, UNAVAILABLE: a fast
//! 503) rather than waiting out its deadline for an address to appear.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, channel::Change};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::observe;

/// How often each address's health is checked.
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// How long one health check may take before it counts as a failure.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// Changes queued to a balanced channel.
const CHANGES: usize = 1024;

/// One `--user-service-url` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `https` or `http`.
    pub https: bool,
    /// The name (or address) to resolve, without brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    /// The URL of one of this target's addresses.
    fn url(&self, addr: SocketAddr) -> String {
        format!("{}://{addr}", if self.https { "https" } else { "http" })
    }
}

/// Reads `--user-service-url`: comma-separated `http://host:port` or
/// `https://host:port` URLs (the port defaults to 80 or 443), at least one, all
/// of one scheme.
pub fn parse_targets(text: &str) -> Result<Vec<Target>, String> {
    let targets = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(parse_target)
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err("give at least one user-service URL, e.g. http://127.0.0.1:50051".into());
    }
    if targets.iter().any(|t| t.https != targets[0].https) {
        return Err("the user-service URLs mix http:// and https://; use one scheme".into());
    }
    Ok(targets)
}

fn parse_target(text: &str) -> Result<Target, String> {
    let bad = || {
        format!(
            "{text:?} is not a user-service URL: expected http://HOST:PORT or https://HOST:PORT"
        )
    };
    let (https, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(bad());
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad());
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]:50051`, or `host:port`; a bare IPv6 address needs brackets.
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            (host, port.parse::<u16>().map_err(|_| bad())?)
        }
        Some(_) => return Err(bad()),
        None => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Target {
        https,
        host: host.to_owned(),
        port,
    })
}

/// How a channel's endpoints are made from an address's URL (timeouts, TLS,
/// keep-alive), one per balanced channel.
pub type MakeEndpoint = Box<dyn Fn(&Target, SocketAddr) -> anyhow::Result<Endpoint> + Send + Sync>;

/// The balanced channels and the task that keeps them to the healthy
/// addresses.
pub struct Replicas {
    /// For REST calls and `/readyz`.
    pub rest: Channel,
    /// For the WatchUsers stream.
    pub watch: Channel,
    keeper: Keeper,
}

impl Replicas {
    /// Channels over `targets`, empty until [`Replicas::run`] finds addresses.
    pub fn new(
        targets: Vec<Target>,
        rest: MakeEndpoint,
        watch: MakeEndpoint,
        resolve_every: Duration,
    ) -> Replicas {
        let (rest_channel, rest_changes) = Channel::balance_channel(CHANGES);
        let (watch_channel, watch_changes) = Channel::balance_channel(CHANGES);
        Replicas {
            rest: rest_channel,
            watch: watch_channel,
            keeper: Keeper {
                targets,
                makers: [rest, watch],
                changes: [rest_changes, watch_changes],
                resolve_every,
                known: HashMap::new(),
            },
        }
    }

    /// Resolves the targets and inserts what it finds before returning, so the
    /// first calls have somewhere to go; the [`Keeper`] then keeps the channels
    /// to the healthy addresses once it runs.
    pub async fn start(self) -> (Channel, Channel, Keeper) {
        let Replicas {
            rest,
            watch,
            mut keeper,
        } = self;
        keeper.resolve().await;
        (rest, watch, keeper)
    }
}

/// An address found by resolving a target.
struct Known {
    target: Target,
    /// What its last health check said (true until the first one).
    healthy: bool,
    /// Whether it is in the balanced channels now.
    balanced: bool,
    /// Its own channel for health checks (not balanced).
    health: HealthClient<Channel>,
}

/// Keeps the balanced channels to the healthy addresses: resolves, checks,
/// inserts and removes.
pub struct Keeper {
    targets: Vec<Target>,
    makers: [MakeEndpoint; 2],
    changes: [mpsc::Sender<Change<SocketAddr, Endpoint>>; 2],
    resolve_every: Duration,
    known: HashMap<SocketAddr, Known>,
}

impl Keeper {
    /// Checks health every [`HEALTH_INTERVAL`] and resolves the names every
    /// `--user-service-resolve-interval`, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        let mut resolve = tokio::time::interval(self.resolve_every);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resolve.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resolve.reset();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = health.tick() => self.check_health().await,
                _ = resolve.tick() => self.resolve().await,
            }
        }
    }

    /// Looks every target up; new addresses join (healthy until a check says
    /// otherwise), vanished ones leave. A name that does not resolve keeps its
    /// last addresses: a DNS blip must not empty the balance.
    async fn resolve(&mut self) {
        let mut found: Vec<(SocketAddr, Target)> = Vec::new();
        for target in &self.targets {
            match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(addrs) => found.extend(addrs.map(|addr| (addr, target.clone()))),
                Err(error) => {
                    tracing::warn!(host = %target.host, %error, "cannot resolve a user-service name; keeping its last addresses");
                    found.extend(
                        self.known
                            .iter()
                            .filter(|(_, known)| &known.target == target)
                            .map(|(addr, known)| (*addr, known.target.clone())),
                    );
                }
            }
        }
        let now: BTreeSet<SocketAddr> = found.iter().map(|(addr, _)| *addr).collect();
        let gone: Vec<SocketAddr> = self
            .known
            .keys()
            .filter(|addr| !now.contains(addr))
            .copied()
            .collect();
        for addr in gone {
            tracing::info!(%addr, "a user-service address is gone");
            self.known.remove(&addr);
            self.send_all(Change::Remove(addr)).await;
        }
        for (addr, target) in found {
            if self.known.contains_key(&addr) {
                continue;
            }
            let health = match (self.makers[0])(&target, addr) {
                Ok(endpoint) => HealthClient::new(endpoint.connect_lazy()),
                Err(error) => {
                    tracing::warn!(%addr, %error, "cannot make an endpoint for a user-service address");
                    continue;
                }
            };
            tracing::info!(%addr, host = %target.host, "a user-service address joins the balance");
            self.known.insert(
                addr,
                Known {
                    target,
                    healthy: true,
                    balanced: false,
                    health,
                },
            );
        }
        self.rebalance().await;
    }

    /// Checks every known address; moves those whose answer changed in or out.
    async fn check_health(&mut self) {
        let checks = self.known.iter().map(|(addr, known)| {
            let mut client = known.health.clone();
            async move {
                let request = HealthCheckRequest {
                    service: users_proto::v1::user_service_server::SERVICE_NAME.to_owned(),
                };
                let answer = tokio::time::timeout(HEALTH_TIMEOUT, client.check(request)).await;
                let serving = matches!(&answer, Ok(Ok(reply))
                    if reply.get_ref().status == ServingStatus::Serving as i32);
                (*addr, serving)
            }
        });
        let results = futures::future::join_all(checks).await;
        for (addr, serving) in results {
            let Some(known) = self.known.get_mut(&addr) else {
                continue;
            };
            if known.healthy != serving {
                if serving {
                    tracing::info!(%addr, "a user-service is SERVING again");
                } else {
                    tracing::warn!(%addr, "a user-service failed its health check");
                }
                known.healthy = serving;
            }
        }
        self.rebalance().await;
    }

    /// Puts the healthy addresses in the balance and takes the others out; when
    /// none is healthy, every known address is in (see the module's doc).
    async fn rebalance(&mut self) {
        let any_healthy = self.known.values().any(|k| k.healthy);
        let moves: Vec<(SocketAddr, bool)> = self
            .known
            .iter()
            .map(|(addr, known)| (*addr, known.healthy || !any_healthy, known.balanced))
            .filter(|(_, wanted, balanced)| wanted != balanced)
            .map(|(addr, wanted, _)| (addr, wanted))
            .collect();
        for (addr, wanted) in moves {
            if wanted {
                self.insert(addr).await;
            } else {
                self.send_all(Change::Remove(addr)).await;
            }
            if let Some(known) = self.known.get_mut(&addr) {
                known.balanced = wanted;
            }
        }
        self.count();
    }

    async fn insert(&self, addr: SocketAddr) {
        let Some(known) = self.known.get(&addr) else {
            return;
        };
        for (make, changes) in self.makers.iter().zip(&self.changes) {
            match make(&known.target, addr) {
                Ok(endpoint) => {
                    let _ = changes.send(Change::Insert(addr, endpoint)).await;
                }
                Err(error) => tracing::warn!(%addr, %error, "cannot make an endpoint"),
            }
        }
    }

    async fn send_all(&self, change: Change<SocketAddr, Endpoint>) {
        for changes in &self.changes {
            let _ = changes.send(change.clone()).await;
        }
    }

    fn count(&self) {
        let healthy = self.known.values().filter(|k| k.healthy).count();
        metrics::gauge!(observe::UPSTREAM_ENDPOINTS, "state" => "healthy").set(healthy as f64);
        metrics::gauge!(observe::UPSTREAM_ENDPOINTS, "state" => "unhealthy")
            .set((self.known.len() - healthy) as f64);
    }
}

/// The URL of `target`'s address `addr`, as an endpoint would be made from it.
pub fn address_url(target: &Target, addr: SocketAddr) -> String {
    target.url(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_urls_is_read_with_default_ports_and_one_scheme() {
        let targets =
            parse_targets("http://a:50051, http://b.svc:7 ,http://[::1]:9,http://c").unwrap();
        let hosts: Vec<(&str, u16)> = targets.iter().map(|t| (t.host.as_str(), t.port)).collect();
        assert_eq!(hosts, [("a", 50051), ("b.svc", 7), ("::1", 9), ("c", 80)]);
        assert!(parse_targets("https://x").unwrap()[0].https);
        assert_eq!(parse_targets("https://x").unwrap()[0].port, 443);
        for bad in [
            "",
            " , ",
            "a:50051",
            "grpc://a:1",
            "http://a:0",
            "http://a:x",
            "http://a/path",
            "http://u@a:1",
            "http://::1:9",
            "http://a:1,https://b:2",
        ] {
            assert!(parse_targets(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_address_url_keeps_the_scheme_and_brackets_ipv6() {
        let target = parse_targets("https://name:8443").unwrap().remove(0);
        assert_eq!(
            address_url(&target, "[::1]:8443".parse().unwrap()),
            "https://[::1]:8443"
        );
    }
}
