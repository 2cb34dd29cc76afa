//! How much one caller may ask for: token-bucket rate limits per identity (the
//! token's `sub`, or the client's IP when anonymous), one bucket each for reads,
//! writes and socket connects; and caps on open sockets per identity and in total.
//! Also the fixed size limits of a request.

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

/// Longest query string accepted (414 beyond): room for `since`, `epoch` and a
/// token on the socket URL.
pub const MAX_QUERY: usize = 4 * 1024;
/// Largest request head (request line and headers) read; hyper answers 431
/// beyond. hyper cannot go below 8 KiB.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in one request (431 beyond).
pub const MAX_HEADERS: usize = 64;
/// Largest `?limit=` page; bigger ones are lowered to it (DRF's `max_limit`).
pub const MAX_LIMIT: u64 = 1000;
/// Buckets kept before idle (full) ones are dropped.
const PRUNE_AT: usize = 10_000;

/// A rate such as DRF writes it: `100/min` (`s`, `m`, `h`, `d` by their first
/// letter), or `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests allowed in a burst (the bucket's size).
    pub count: u32,
    /// The time over which `count` requests are allowed again.
    pub per: Duration,
}

/// A configured rate: `None` is no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSetting(pub Option<Rate>);

impl FromStr for RateSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<RateSetting, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") || text == "0" {
            return Ok(RateSetting(None));
        }
        let (count, period) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected <count>/<s|m|h|d> or off"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: the count must be a whole number"))?;
        let per = match period.trim().chars().next() {
            Some('s') => Duration::from_secs(1),
            Some('m') => Duration::from_secs(60),
            Some('h') => Duration::from_secs(3600),
            Some('d') => Duration::from_secs(86_400),
            _ => return Err(format!("{text:?}: the period must be s, m, h or d")),
        };
        Ok(RateSetting((count > 0).then_some(Rate { count, per })))
    }
}

impl fmt::Display for RateSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(rate) => write!(f, "{}/{}s", rate.count, rate.per.as_secs()),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One rate limit, with a bucket per identity.
#[derive(Debug)]
pub struct Throttle {
    rate: Option<Rate>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Throttle {
    /// A throttle allowing `rate` (`None`: everything).
    pub fn new(rate: RateSetting) -> Throttle {
        Throttle {
            rate: rate.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `identity`'s bucket; `Err(wait)` when it is empty,
    /// with how long until the next request would be allowed.
    pub fn check(&self, identity: &str) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let now = Instant::now();
        let per_sec = f64::from(rate.count) / rate.per.as_secs_f64();
        let capacity = f64::from(rate.count);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT {
            // A bucket idle for a whole period is full again: forget it.
            buckets.retain(|_, b| now.duration_since(b.last) < rate.per);
        }
        let bucket = buckets.entry(identity.to_owned()).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * per_sec;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

/// Which budget a request spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// GET, HEAD, OPTIONS.
    Read,
    /// POST, PUT, PATCH, DELETE.
    Write,
    /// A socket handshake.
    Connect,
}

/// Every limit of one gateway.
#[derive(Debug)]
pub struct Limits {
    reads: Throttle,
    writes: Throttle,
    connects: Throttle,
    sockets: Arc<SocketCounts>,
}

/// The limits' settings.
#[derive(Clone, Copy, Debug)]
pub struct LimitSettings {
    /// Reads per identity.
    pub reads: RateSetting,
    /// Writes per identity.
    pub writes: RateSetting,
    /// Socket handshakes per identity.
    pub connects: RateSetting,
    /// Open sockets per identity (0: no cap).
    pub sockets_per_identity: usize,
    /// Open sockets in total (0: no cap).
    pub sockets_total: usize,
}

impl LimitSettings {
    /// No limit at all (tests of other things).
    pub fn off() -> LimitSettings {
        LimitSettings {
            reads: RateSetting(None),
            writes: RateSetting(None),
            connects: RateSetting(None),
            sockets_per_identity: 0,
            sockets_total: 0,
        }
    }
}

impl Limits {
    /// Limits with `settings`.
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            reads: Throttle::new(settings.reads),
            writes: Throttle::new(settings.writes),
            connects: Throttle::new(settings.connects),
            sockets: Arc::new(SocketCounts {
                per_identity: settings.sockets_per_identity,
                total: settings.sockets_total,
                open: Mutex::new((0, HashMap::new())),
            }),
        }
    }

    /// Spends one request of `class` for `identity`; `Err(wait)` when throttled.
    pub fn check(&self, class: Class, identity: &str) -> Result<(), Duration> {
        match class {
            Class::Read => self.reads.check(identity),
            Class::Write => self.writes.check(identity),
            Class::Connect => self.connects.check(identity),
        }
    }

    /// Reserves a socket for `identity`, or `None` when a cap is reached. The slot
    /// is given back when dropped.
    pub fn open_socket(&self, identity: &str) -> Option<SocketSlot> {
        let counts = &self.sockets;
        let mut open = counts.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per) = &mut *open;
        let mine = per.get(identity).copied().unwrap_or(0);
        if (counts.total > 0 && *total >= counts.total)
            || (counts.per_identity > 0 && mine >= counts.per_identity)
        {
            return None;
        }
        *total += 1;
        per.insert(identity.to_owned(), mine + 1);
        Some(SocketSlot {
            counts: counts.clone(),
            identity: identity.to_owned(),
        })
    }
}

#[derive(Debug)]
struct SocketCounts {
    per_identity: usize,
    total: usize,
    /// Open sockets in total, and per identity.
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One open socket, counted against its identity's and the total cap until
/// dropped.
#[derive(Debug)]
pub struct SocketSlot {
    counts: Arc<SocketCounts>,
    identity: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per.get_mut(&self.identity) {
            *mine -= 1;
            if *mine == 0 {
                per.remove(&self.identity);
            }
        }
    }
}

/// Whose budget a request spends: the token's `sub`, or the client's IP when the
/// caller is anonymous.
pub fn identity(
    caller: &crate::security::auth::Caller,
    client: Option<std::net::SocketAddr>,
) -> String {
    match (&caller.sub, client) {
        (Some(sub), _) => format!("sub:{sub}"),
        (None, Some(addr)) => format!("ip:{}", addr.ip()),
        (None, None) => "ip:unknown".to_owned(),
    }
}

/// Whole seconds to wait, as DRF rounds them (up, and at least one).
pub fn wait_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Option<Rate> {
        text.parse::<RateSetting>().unwrap().0
    }

    #[test]
    fn rates_read_like_drf() {
        assert_eq!(
            rate("100/min"),
            Some(Rate {
                count: 100,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(rate("5/s").unwrap().per, Duration::from_secs(1));
        assert_eq!(rate("1/day").unwrap().per, Duration::from_secs(86_400));
        assert_eq!(rate("off"), None);
        assert_eq!(rate("0/s"), None);
        assert!("ten/s".parse::<RateSetting>().is_err());
        assert!("10/w".parse::<RateSetting>().is_err());
    }

    #[tokio::test]
    async fn a_bucket_empties_then_refills() {
        let throttle = Throttle::new("20/s".parse().unwrap());
        for _ in 0..20 {
            assert!(throttle.check("a").is_ok());
        }
        let wait = throttle.check("a").unwrap_err();
        assert!(wait <= Duration::from_millis(50), "{wait:?}");
        assert_eq!(wait_seconds(wait), 1);
        assert!(throttle.check("b").is_ok(), "identities are separate");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(throttle.check("a").is_ok());
    }

    #[test]
    fn socket_caps_count_per_identity_and_in_total() {
        let limits = Limits::new(LimitSettings {
            sockets_per_identity: 2,
            sockets_total: 3,
            ..LimitSettings::off()
        });
        let a1 = limits.open_socket("a").unwrap();
        let _a2 = limits.open_socket("a").unwrap();
        assert!(limits.open_socket("a").is_none());
        let _b1 = limits.open_socket("b").unwrap();
        assert!(limits.open_socket("c").is_none(), "total cap");
        drop(a1);
        assert!(limits.open_socket("a").is_some());
    }
}
