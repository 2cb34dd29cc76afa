//! Command-line flags, each with an environment-variable twin (`--help` lists both).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
pub use service_runtime::LogFormat;
use service_runtime::secret::FileSecret;

use crate::store::{Checkpoints, Durability, backend};

/// `--database-url` as given, once its scheme names a backend this build has.
fn database_url(text: &str) -> Result<String, String> {
    backend(text).map(|_| text.to_owned())
}

/// `--database-url-file`: the URL in the file, checked as `--database-url` is.
fn database_url_file(path: &str) -> Result<FileSecret, String> {
    let url = service_runtime::secret::read_file(std::path::Path::new(path), "database URL")?;
    database_url(&url).map(FileSecret::new)
}

/// The user-service: owns the users database, serves users.v1 over gRPC and
/// gRPC-Web, and publishes every change as an ordered event.
#[derive(Clone, Debug, Parser)]
#[command(name = "user-service", version, about, long_about = None, after_help = service_runtime::telemetry::HELP)]
pub struct Config {
    /// Address to serve gRPC, gRPC-Web, reflection and health on. Port 0 binds a free
    /// port; the bound address is logged.
    #[arg(
        long = "listen",
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// gRPC connections open at once at most; beyond, new ones are closed at
    /// accept. Unset: the open-file limit (raised to its hard value at start) less
    /// a tenth, at least 256 kept for the database, Redis and files.
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// How long a new gRPC connection may stay silent; then it is closed.
    #[arg(long, env = "FIRST_REQUEST_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub first_request_timeout: Duration,

    /// Address to serve Prometheus metrics on (plain HTTP, `GET /metrics`), apart
    /// from the gRPC port so it is never exposed with it. Port 0 binds a free
    /// port; the bound address is logged. Unset: no metrics listener.
    #[arg(long, env = "METRICS_LISTEN_ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Database URL: `sqlite://PATH` (one user-service owns the file; it and its
    /// folder are created if missing) or `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// (also `postgresql://`; several user-services may share it). Any other
    /// scheme is refused at start.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/users.db",
        value_parser = database_url
    )]
    pub database_url: String,

    /// `--database-url` read from this file (its first line): a mounted Secret,
    /// such as the `uri` key CloudNativePG writes, so the database password stays
    /// out of the environment. Not with `--database-url`.
    #[arg(long, env = "DATABASE_URL_FILE", value_name = "PATH",
          value_parser = database_url_file, conflicts_with = "database_url")]
    pub database_url_file: Option<FileSecret>,

    /// What an answered write survives: `full` fsyncs every commit (survives a power
    /// loss; concurrent writes share commits), `normal` only survives a crash of the
    /// process.
    #[arg(long, env = "DURABILITY", value_enum, default_value_t = Durability::Full)]
    pub durability: Durability,

    /// Who checkpoints SQLite's WAL into the database file: `service` (this
    /// process, shortly after writes) or `external`: another process that must own
    /// checkpointing, such as Litestream replicating the file, so the service never
    /// checkpoints (and without that process the WAL only grows). PostgreSQL: no effect.
    #[arg(long, env = "WAL_CHECKPOINTS", value_enum, default_value_t = Checkpoints::Service)]
    pub wal_checkpoints: Checkpoints,

    /// Redis URL (e.g. redis://127.0.0.1:6379, or redis://USER:PASSWORD@HOST:PORT
    /// for an ACL user). When set, a relay publishes every event to a Redis
    /// stream; unset, events are served only by WatchUsers.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// A file whose first line is the Redis password (a mounted Secret), put
    /// into `--redis-url` for its user (e.g. `redis://relay@redis:6379`) or
    /// Redis's default user; the URL must then hold no password itself.
    #[arg(long, env = "REDIS_PASSWORD_FILE", requires = "redis_url")]
    pub redis_password_file: Option<PathBuf>,

    /// Key of the Redis stream the relay appends events to.
    #[arg(long, env = "REDIS_STREAM_KEY", default_value = users_proto::stream::DEFAULT_KEY)]
    pub redis_stream_key: String,

    /// Approximate most entries the Redis stream keeps (XADD MAXLEN ~).
    #[arg(long, env = "REDIS_STREAM_MAX_LEN", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_stream_max_len: u64,

    /// Newest events kept in the database for replay (WatchUsers since_seq);
    /// unpublished events are kept whatever this says.
    #[arg(long, env = "EVENT_RETENTION", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub event_retention: u64,

    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish before the
    /// server stops anyway (e.g. 10s, 500ms).
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Origins allowed to call gRPC-Web from a browser (comma-separated; `*` for
    /// any). Empty: no cross-origin browser calls.
    #[arg(long, env = "CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,

    /// Create a demo user (id 1, "John Doe") when the database has never held a
    /// user, so a fresh demo has someone to edit.
    #[arg(long, env = "SEED_DEMO_USER")]
    pub seed_demo_user: bool,

    /// Log format: `text` for a terminal, `json` for a log collector.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Token every users.v1 RPC must carry as `authorization: Bearer <token>`
    /// (health and reflection stay open): at least 32 bytes of printable ASCII,
    /// not a placeholder (refused at start otherwise). Unset: no token is asked
    /// for.
    #[arg(long, env = "SERVICE_TOKEN", hide_env_values = true,
          value_parser = service_runtime::secret::strong)]
    pub service_token: Option<String>,

    /// `--service-token` read from this file (its first line): a mounted
    /// Kubernetes Secret, kept out of the environment. Held to the same rule.
    #[arg(long, env = "SERVICE_TOKEN_FILE", value_name = "PATH",
          value_parser = service_runtime::secret::strong_file, conflicts_with = "service_token")]
    pub service_token_file: Option<FileSecret>,

    /// PEM certificate chain: serve gRPC over TLS (with `--tls-key`).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Config {
    /// The database's URL, from `--database-url` or its file.
    pub fn database(&self) -> &str {
        self.database_url_file
            .as_ref()
            .map_or(&self.database_url, FileSecret::expose)
    }

    /// The token callers must carry, from `--service-token` or its file.
    pub fn token(&self) -> Option<&str> {
        service_runtime::secret::given(
            self.service_token.as_deref(),
            self.service_token_file.as_ref(),
        )
    }

    /// The defaults, as a run with no flags and no environment would have them,
    /// but on a given database and a free port: what tests start from.
    pub fn for_tests(database_url: impl Into<String>) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            max_connections: None,
            first_request_timeout: Duration::from_secs(20),
            metrics_listen: None,
            database_url: database_url.into(),
            database_url_file: None,
            durability: Durability::Full,
            wal_checkpoints: Checkpoints::Service,
            redis_url: None,
            redis_password_file: None,
            redis_stream_key: users_proto::stream::DEFAULT_KEY.into(),
            redis_stream_max_len: 100_000,
            event_retention: 100_000,
            shutdown_grace: Duration::from_secs(10),
            cors_allow_origins: Vec::new(),
            seed_demo_user: false,
            log_format: LogFormat::Text,
            service_token: None,
            service_token_file: None,
            tls_cert: None,
            tls_key: None,
        }
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
        let config = Config::try_parse_from(["user-service"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.database_url, "sqlite://data/users.db");
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.redis_stream_key, users_proto::stream::DEFAULT_KEY);
    }

    #[test]
    fn metrics_listen_takes_an_address() {
        let config =
            Config::try_parse_from(["user-service", "--metrics-listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(config.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert!(Config::try_parse_from(["user-service", "--metrics-listen", "nope"]).is_err());
    }

    #[test]
    fn database_urls_are_told_by_their_scheme() {
        let parse = |url: &str| Config::try_parse_from(["user-service", "--database-url", url]);
        for url in [
            "sqlite://a/b.db",
            "sqlite:b.db",
            "sqlite::memory:",
            "data/users.db",
            "SQLite://x.db",
        ] {
            assert!(parse(url).is_ok(), "{url}");
        }
        for url in ["postgres://h/app", "postgresql://u:p@h:5432/app"] {
            assert!(parse(url).is_ok(), "{url}");
        }
        for url in ["mysql://root@h/app", "sqlit://x.db", "file:x.db"] {
            let error = parse(url).unwrap_err().to_string();
            assert!(
                error.contains("sqlite://PATH") && error.contains("postgres://"),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn a_weak_service_token_is_refused_at_start() {
        let parse =
            |token: &str| Config::try_parse_from(["user-service", "--service-token", token]);
        for weak in ["secret", "CHANGE-ME-not-a-real-service-token"] {
            let error = parse(weak).unwrap_err().to_string();
            assert!(error.contains("--service-token"), "{error}");
        }
        assert!(parse("k3J9xQ2mVb7RtL0pZs8WcY4nHf6DgA1e").is_ok());
    }

    #[test]
    fn the_database_url_may_come_from_a_file_checked_as_the_flag_is() {
        let dir = std::env::temp_dir().join(format!("us-db-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("uri");
        let path = file.to_str().unwrap();
        let parse = |args: &[&str]| {
            Config::try_parse_from(["user-service", "--database-url-file"].iter().chain(args))
        };
        std::fs::write(&file, "postgresql://app:pw@users-db-rw:5432/app\n").unwrap();
        let config = parse(&[path]).unwrap();
        assert_eq!(
            config.database(),
            "postgresql://app:pw@users-db-rw:5432/app"
        );
        assert!(!format!("{config:?}").contains(":pw@"));
        let both = parse(&[path, "--database-url", "sqlite://x.db"]);
        assert!(
            both.unwrap_err()
                .to_string()
                .contains("cannot be used with")
        );
        std::fs::write(&file, "mysql://root@h/app\n").unwrap();
        let error = parse(&[path]).unwrap_err().to_string();
        assert!(error.contains("postgres://"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            Config::try_parse_from(["user-service"]).unwrap().database(),
            "sqlite://data/users.db"
        );
    }

    #[test]
    fn the_service_token_may_come_from_a_file_held_to_the_same_rule() {
        let dir = std::env::temp_dir().join(format!("us-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("service-token");
        let parse = |args: &[&str]| {
            Config::try_parse_from(["user-service", "--service-token-file"].iter().chain(args))
        };
        let path = file.to_str().unwrap();
        std::fs::write(&file, "k3J9xQ2mVb7RtL0pZs8WcY4nHf6DgA1e\n").unwrap();
        let config = parse(&[path]).unwrap();
        assert_eq!(config.token(), Some("k3J9xQ2mVb7RtL0pZs8WcY4nHf6DgA1e"));
        let both = parse(&[path, "--service-token", "k3J9xQ2mVb7RtL0pZs8WcY4nHf6DgA1e"]);
        assert!(
            both.unwrap_err()
                .to_string()
                .contains("cannot be used with")
        );
        std::fs::write(&file, "CHANGE-ME-not-a-real-service-token\n").unwrap();
        let error = parse(&[path]).unwrap_err().to_string();
        assert!(
            error.contains("--service-token-file") && error.contains("placeholder"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(parse(&[path]).unwrap_err().to_string().contains("reading"));
    }

    #[test]
    fn a_zero_retention_is_refused() {
        assert!(Config::try_parse_from(["user-service", "--event-retention", "0"]).is_err());
    }
}
