//! Command-line flags, each with an environment-variable twin (`--help` lists both).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
pub use service_runtime::LogFormat;

/// The gateway: the POC's REST API and WebSocket feed in front of the user-service.
#[derive(Clone, Debug, Parser)]
#[command(name = "gateway", version, about, long_about = None)]
pub struct Config {
    /// Address to serve HTTP and WebSocket on. Port 0 binds a free port; the bound
    /// address is logged.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The user-service's gRPC URL.
    #[arg(
        long,
        env = "USER_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub user_service_url: String,

    /// Redis URL (e.g. redis://127.0.0.1:6379). When set, events are read from the
    /// Redis stream; unset, from the user-service's WatchUsers stream.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Key of the Redis stream the user-service's relay writes events to.
    #[arg(long, env = "REDIS_STREAM_KEY", default_value = "users:events")]
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
}

impl Config {
    /// The defaults, but on a free port and a given user-service: what tests start
    /// from.
    pub fn for_tests(user_service_url: impl Into<String>) -> Config {
        let mut config = Config::try_parse_from(["gateway"]).expect("the defaults parse");
        config.listen = "127.0.0.1:0".parse().expect("a valid address");
        config.user_service_url = user_service_url.into();
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
