//! Command-line flags, each with an environment-variable twin (`--help` lists both).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
pub use service_runtime::LogFormat;
use service_runtime::secret::FileSecret;

use crate::{
    security::{
        auth::AuthConfig,
        limits::{LimitSettings, RateSetting},
    },
    server::connections::ConnectionLimits,
    upstream::replicas::parse_targets,
};

/// `--user-service-url` as given, once every entry reads as a user-service URL.
fn user_service_urls(text: &str) -> Result<String, String> {
    parse_targets(text).map(|_| text.to_owned())
}

/// The gateway: the POC's REST API and WebSocket feed in front of the user-service.
#[derive(Clone, Debug, Parser)]
#[command(name = "gateway", version, about, long_about = None, after_help = service_runtime::telemetry::HELP)]
pub struct Config {
    /// Address to serve HTTP and WebSocket on. Port 0 binds a free port; the bound
    /// address is logged.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP, nothing else) on
    /// this address instead of on `--listen`, whose `/metrics` then answers 404:
    /// no route to the public port can expose them. Port 0 binds a free port;
    /// the bound address is logged. Unset: `/metrics` on `--listen`.
    #[arg(long, env = "METRICS_LISTEN_ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// The user-services' gRPC URLs, comma-separated (`http://HOST:PORT` or
    /// `https://HOST:PORT`, one scheme for all). Every address each name
    /// resolves to is balanced over while it answers its health check SERVING;
    /// names are resolved again every `--user-service-resolve-interval`, so a
    /// Kubernetes headless Service's pods come and go.
    #[arg(
        long,
        env = "USER_SERVICE_URL",
        default_value = "http://127.0.0.1:50051",
        value_parser = user_service_urls
    )]
    pub user_service_url: String,

    /// How often the user-service names are resolved again (e.g. 5s).
    #[arg(long, env = "USER_SERVICE_RESOLVE_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub user_service_resolve_interval: Duration,

    /// Redis URL (e.g. redis://127.0.0.1:6379, or redis://USER:PASSWORD@HOST:PORT
    /// for an ACL user). When set, events are read from the Redis stream and
    /// presence crosses gateways through it; unset, events come from the
    /// user-service's WatchUsers stream.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// A file whose first line is the Redis password (a mounted Secret), put
    /// into `--redis-url` for its user (e.g. `redis://relay@redis:6379`) or
    /// Redis's default user; the URL must then hold no password itself.
    #[arg(long, env = "REDIS_PASSWORD_FILE", requires = "redis_url")]
    pub redis_password_file: Option<PathBuf>,

    /// Key of the Redis stream the user-service's relay writes events to.
    #[arg(long, env = "REDIS_STREAM_KEY", default_value = users_proto::stream::DEFAULT_KEY)]
    pub redis_stream_key: String,

    /// Serve the page's files (web/) from this folder, read at each request, instead
    /// of the copies built into the binary.
    #[arg(long, env = "WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// How long to wait for a TCP connection to the user-service (e.g. 2s).
    #[arg(long, env = "CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// How long a REST request may wait for the user-service's answer before it gets
    /// 503 (e.g. 5s).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// How long a write (POST, PUT, PATCH, DELETE) is held, at most, until its
    /// event is on this gateway's feed: sockets open before the answer then have
    /// it, and sockets opened after it never get it live. Past the bound the
    /// answer goes out anyway (counted in `gateway_write_feed_waits_total`); 0
    /// answers at once.
    #[arg(long, env = "WRITE_FEED_WAIT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub write_feed_wait: Duration,

    /// How long a new connection may take to send its first request head, whatever
    /// its protocol (HTTP/1.1, h2c, h2); also how long any later HTTP/1.1 head
    /// may take. Silent connections are closed.
    #[arg(long, env = "FIRST_REQUEST_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub first_request_timeout: Duration,

    /// A connection with no request in flight for this long is closed gracefully
    /// (open sockets are not connections in this sense: they have their pings).
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// HTTP/2 connections get a PING this often, and are closed when the peer
    /// does not answer within the same time.
    #[arg(long, env = "HTTP2_KEEP_ALIVE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub http2_keep_alive: Duration,

    /// How long a request body may take to arrive once the request is allowed
    /// (it is read only after authentication and permission checks); 408 beyond.
    #[arg(long, env = "BODY_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,

    /// Open connections at most, sockets included; beyond, new connections are
    /// closed at once and counted. Unset: the open-file limit (raised to its
    /// hard value at start) less a tenth, at least 256, kept for the
    /// user-service, Redis and files.
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most recent events kept in memory, so reconnecting sockets can resume with
    /// `?since=`.
    #[arg(long, env = "REPLAY_WINDOW", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub replay_window: u64,

    /// Frames queued towards one socket; a socket whose queue overflows is closed
    /// with 1013 and resumes.
    #[arg(long, env = "WS_QUEUE", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_queue: u64,

    /// Threads that run the WebSocket tasks, at a lower priority than the request
    /// path (`socket_threads`). Unset: one per core; 0: on the request path's own
    /// threads.
    #[arg(long, env = "WS_THREADS")]
    pub ws_threads: Option<usize>,

    /// Nice value of the socket threads (0-19): how far the fan-out yields to
    /// requests and event intake when both want a core.
    #[arg(long, env = "WS_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub ws_nice: i32,

    /// How often the server pings each socket.
    #[arg(long, env = "WS_PING_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ws_ping_interval: Duration,

    /// A socket that sends nothing (not even a pong) for this long after a ping is
    /// dropped as dead.
    #[arg(long, env = "WS_PING_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ws_ping_timeout: Duration,

    /// Kernel send buffer of each accepted connection, in bytes (SO_SNDBUF). Unset,
    /// the OS sizes it; a small one makes a socket that stops reading overflow its
    /// queue (and be closed) sooner.
    #[arg(long, env = "TCP_SEND_BUFFER")]
    pub tcp_send_buffer: Option<u32>,

    /// On SIGTERM/SIGINT, how long sockets and in-flight requests get to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Authentication: `--auth`, the JWT algorithm, key, audience, issuer, leeway.
    #[command(flatten)]
    pub auth: AuthConfig,

    /// Token the user-service requires of its callers (sent as `authorization:
    /// Bearer …` on every RPC): at least 32 bytes of printable ASCII, not a
    /// placeholder, as the user-service demands. Unset: none sent.
    #[arg(long, env = "SERVICE_TOKEN", hide_env_values = true,
          value_parser = service_runtime::secret::strong)]
    pub service_token: Option<String>,

    /// `--service-token` read from this file (its first line): a mounted
    /// Kubernetes Secret, kept out of the environment. Held to the same rule.
    #[arg(long, env = "SERVICE_TOKEN_FILE", value_name = "PATH",
          value_parser = service_runtime::secret::strong_file, conflicts_with = "service_token")]
    pub service_token_file: Option<FileSecret>,

    /// PEM CA certificate to trust for an `https://` user-service URL (unset: the
    /// system's roots).
    #[arg(long, env = "USER_SERVICE_CA")]
    pub user_service_ca: Option<PathBuf>,

    /// PEM certificate chain: serve HTTPS and WSS instead of HTTP (with
    /// `--tls-key`).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Origins (scheme://host[:port], comma-separated) whose pages may call the API
    /// and open sockets cross-origin. Empty: none; the gateway's own origin always
    /// may open sockets.
    #[arg(long, env = "CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,

    /// Host names (comma-separated) the API answers to, as Django's
    /// `ALLOWED_HOSTS`: `example.com`, `.example.com` (and its subdomains) or `*`.
    /// Loopback names and the listen address are always allowed; any other
    /// `Host` gets 400 (it would be written into pagination links).
    #[arg(long, env = "ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Reads (GET, HEAD, OPTIONS) allowed per identity (token `sub`, or client IP
    /// when anonymous), as `<count>/<s|m|h|d>`, or `off`. 429 beyond.
    #[arg(long, env = "RATE_LIMIT_READS", default_value = "1200/min")]
    pub rate_limit_reads: RateSetting,

    /// Writes (POST, PUT, PATCH, DELETE) allowed per identity, as for reads.
    #[arg(long, env = "RATE_LIMIT_WRITES", default_value = "600/min")]
    pub rate_limit_writes: RateSetting,

    /// Socket handshakes allowed per identity, as for reads.
    #[arg(long, env = "RATE_LIMIT_CONNECTS", default_value = "60/min")]
    pub rate_limit_connects: RateSetting,

    /// Open sockets per identity (0: no cap); 503 on the handshake beyond.
    #[arg(long, env = "WS_MAX_PER_IDENTITY", default_value_t = 64)]
    pub ws_max_per_identity: usize,

    /// Open sockets in total (0: no cap); 503 on the handshake beyond. Unset:
    /// 10,000, or nine tenths of the connection cap when that is lower.
    #[arg(long, env = "WS_MAX_TOTAL")]
    pub ws_max_total: Option<usize>,

    /// `gateway token …` mints a token instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of serving.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Prints an HS256 token signed with the configured secret (JWT_SECRET), for
    /// local use: `gateway token --sub alice --fields first_name --ttl 1h`.
    Token {
        /// The caller's identity (`sub`).
        #[arg(long)]
        sub: String,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Only the fields writes may change (comma-separated); unset: both.
        #[arg(long, value_delimiter = ',', conflicts_with = "read_only")]
        fields: Vec<String>,
        /// Only `users:read`: no writes at all.
        #[arg(long)]
        read_only: bool,
    },
}

/// Sockets allowed in total when `--ws-max-total` is unset and the connection
/// cap allows as many.
const DEFAULT_WS_MAX_TOTAL: usize = 10_000;

impl Config {
    /// The token sent to the user-service, from `--service-token` or its file.
    pub fn token(&self) -> Option<&str> {
        service_runtime::secret::given(
            self.service_token.as_deref(),
            self.service_token_file.as_ref(),
        )
    }

    /// The rate limits and socket caps, under a connection cap of
    /// `max_connections`.
    pub fn limits(&self, max_connections: usize) -> LimitSettings {
        LimitSettings {
            reads: self.rate_limit_reads,
            writes: self.rate_limit_writes,
            connects: self.rate_limit_connects,
            sockets_per_identity: self.ws_max_per_identity,
            sockets_total: self
                .ws_max_total
                .unwrap_or(DEFAULT_WS_MAX_TOTAL.min(max_connections / 10 * 9)),
        }
    }

    /// The bounds on every connection ([`ConnectionLimits`]).
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            first_request: self.first_request_timeout,
            idle: self.idle_timeout,
            keep_alive: self.http2_keep_alive,
            max_connections: self
                .max_connections
                .unwrap_or_else(service_runtime::open_files::default_connection_cap),
        }
    }
}

impl Config {
    /// The defaults, but on a free port and a given user-service: what tests start
    /// from.
    pub fn for_tests(user_service_url: impl Into<String>) -> Config {
        let mut config = Config::try_parse_from(["gateway"]).expect("the defaults parse");
        config.listen = "127.0.0.1:0".parse().expect("a valid address");
        config.user_service_url = user_service_url.into();
        config.auth.auth = crate::security::auth::AuthMode::None;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::try_parse_from(["gateway"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.user_service_url, "http://127.0.0.1:50051");
        assert_eq!(config.redis_url, None);
        assert_eq!(config.redis_stream_key, "users:events");
    }
}
