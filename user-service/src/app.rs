//! Wiring: opens the store, binds the listener, assembles the gRPC server with its
//! background tasks, and runs it until a shutdown signal, draining gracefully.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use deadpool_redis::Pool;
use http::{HeaderName, HeaderValue, Method};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::ServingStatus;
use tower_http::cors::{AllowOrigin, CorsLayer};
use users_proto::v1::user_service_server::UserServiceServer;

use crate::{
    auth::ServiceAuthLayer,
    config::Config,
    grpc::UsersApi,
    metrics::GrpcMetricsLayer,
    relay::{CURSOR_UNKNOWN, Relay, RelayConfig, redis_pool, stream_runs_ahead},
    retention,
    store::{Duty, SqliteSettings, Store, redact, run_while_held},
};

/// The relay's Redis pool and stream settings, when `--redis-url` is set.
fn relay_redis(config: &Config) -> anyhow::Result<Option<(Pool, RelayConfig)>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let url =
        service_runtime::redis_url::with_password_file(url, config.redis_password_file.as_deref())
            .map_err(anyhow::Error::msg)?;
    let relay_config = RelayConfig {
        stream_key: config.redis_stream_key.clone(),
        stream_max_len: config.redis_stream_max_len,
    };
    let pool = redis_pool(&url).context("the Redis URL")?;
    Ok(Some((pool, relay_config)))
}

/// Starts a new epoch when the event stream holds events this database lacks
/// (see [`stream_runs_ahead`]). Redis out of reach is not fatal: the check is
/// skipped with a warning, since refusing to start would make Redis a hard
/// dependency of every restart.
async fn check_stream_not_ahead(
    store: &mut Store,
    pool: &Pool,
    config: &RelayConfig,
) -> anyhow::Result<()> {
    match stream_runs_ahead(pool, config, store).await {
        Ok(None) => Ok(()),
        Ok(Some(stream_top)) => {
            let lost_after = store.newest_seq().await?;
            let old = store.epoch().to_owned();
            let new = store.start_new_epoch().await?;
            tracing::warn!(
                stream_top,
                lost_after,
                old_epoch = %old,
                new_epoch = %new,
                "the event stream holds events this database lacks (restored from an older backup?): \
                 starting a new epoch, so every reader resyncs instead of missing the changes that reuse those seqs"
            );
            Ok(())
        }
        Err(error) => {
            tracing::warn!(%error, "could not compare the event stream with the database at start (Redis unreachable?); carrying on");
            Ok(())
        }
    }
}

/// How long background tasks (relay, retention) get to stop after the server has.
const TASK_STOP_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 PING interval on gRPC connections, and how long the answer may take.
const GRPC_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Longest a unary call (or a stream's opening) may take; callers' own
/// `grpc-timeout` may ask for less.
const GRPC_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls one connection may have running at once; more wait their turn. A
/// gateway multiplexes all its calls over one connection, so this is generous.
const GRPC_CONCURRENCY_PER_CONNECTION: usize = 1024;
/// HTTP/2 streams one connection may open at once.
const GRPC_STREAMS_PER_CONNECTION: u32 = 1024;
/// Largest header list of one call (16 KiB, as the gateway's).
const GRPC_MAX_HEADER_LIST: u32 = 16 * 1024;

/// A user-service that is bound and ready to run.
pub struct Application {
    config: Config,
    listener: TcpListener,
    /// `--metrics-listen`, bound.
    metrics_listener: Option<TcpListener>,
    store: Arc<Store>,
    /// The relay's Redis and stream, with `--redis-url`.
    relay: Option<(Pool, RelayConfig)>,
}

impl Application {
    /// Opens (and migrates) the database and binds the listen address, so callers
    /// know the real port before serving starts.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        // Before anything records: values recorded earlier would be lost.
        crate::metrics::install();
        let sqlite = SqliteSettings {
            durability: config.durability,
            checkpoints: config.wal_checkpoints,
        };
        let mut store = Store::open(config.database(), sqlite)
            .await
            .with_context(|| format!("opening the database {}", redact(config.database())))?;
        let relay = relay_redis(&config)?;
        if let Some((pool, relay_config)) = &relay {
            check_stream_not_ahead(&mut store, pool, relay_config).await?;
        }
        if config.seed_demo_user
            && let Some(user) = store.seed_demo_user().await?
        {
            tracing::info!(id = user.id, "seeded the demo user");
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics address {addr}"))?,
            ),
            None => None,
        };
        Ok(Application {
            config,
            listener,
            metrics_listener,
            store: Arc::new(store),
            relay,
        })
    }

    /// The metrics address actually bound, when `--metrics-listen` was given.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// The address actually bound (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The store the server uses, for tests that look beneath the API.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Serves until `shutdown` completes, then: health turns NOT_SERVING, watch
    /// streams end, in-flight calls get up to the grace period to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            config,
            listener,
            metrics_listener,
            store,
            relay,
        } = self;
        let stop_tasks = CancellationToken::new();
        let drain = CancellationToken::new();

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<UserServiceServer<UsersApi>>().await;
        // Health follows the disk until the drain takes it over (aborted there, so
        // it can never turn SERVING again after NOT_SERVING for shutdown).
        let mut health_follower =
            tokio::spawn(follow_writability(health.clone(), store.watch_writable()));
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(users_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let api = UsersApi::new(store.clone(), stop_tasks.clone());

        let mut tasks = JoinSet::new();
        let mut published = None;
        if let Some((pool, relay_config)) = relay {
            let cursor = Arc::new(AtomicU64::new(CURSOR_UNKNOWN));
            published = Some(cursor.clone());
            let relay_store = store.clone();
            tasks.spawn(run_while_held(
                store.clone(),
                Duty::Relay,
                stop_tasks.clone(),
                move |stop| {
                    let relay = Relay::new(
                        relay_store.clone(),
                        pool.clone(),
                        relay_config.clone(),
                        cursor.clone(),
                    );
                    relay.run(stop)
                },
            ));
        }
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        if let Some(metrics_listener) = metrics_listener {
            let render = metrics_renderer(store.clone(), published);
            tasks.spawn(service_runtime::metrics::serve(
                metrics_listener,
                render,
                stop_tasks.clone().cancelled_owned(),
            ));
        }
        let (retention_store, keep, relayed) = (
            store.clone(),
            config.event_retention,
            config.redis_url.is_some(),
        );
        tasks.spawn(run_while_held(
            store.clone(),
            Duty::Retention,
            stop_tasks.clone(),
            move |stop| retention::run(retention_store.clone(), keep, relayed, stop),
        ));

        tracing::info!(
            listen = %listener.local_addr()?,
            metrics_listen = metrics_addr.map(tracing::field::display),
            database = %redact(config.database()),
            backend = ?store.backend(),
            epoch = store.epoch(),
            head_seq = store.head(),
            redis = config.redis_url.is_some(),
            service_token = config.token().is_some(),
            tls = config.tls_cert.is_some(),
            "user-service listening"
        );
        if config.token().is_none() {
            tracing::warn!(
                "no --service-token: any client that reaches this port may call every RPC"
            );
        }
        let mut builder = Server::builder();
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            let cert = std::fs::read(cert)
                .with_context(|| format!("reading the TLS certificate {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("reading the TLS key {}", key.display()))?;
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .context("the TLS certificate and key")?;
        }
        let server = builder
            // Dead peers are noticed, no call runs unbounded, and one connection
            // cannot ask for unbounded work at once.
            .http2_keepalive_interval(Some(GRPC_KEEP_ALIVE))
            .http2_keepalive_timeout(Some(GRPC_KEEP_ALIVE))
            .timeout(GRPC_CALL_TIMEOUT)
            .concurrency_limit_per_connection(GRPC_CONCURRENCY_PER_CONNECTION)
            .max_concurrent_streams(GRPC_STREAMS_PER_CONNECTION)
            .http2_max_header_list_size(GRPC_MAX_HEADER_LIST)
            .accept_http1(true)
            .layer(cors_layer(&config.cors_allow_origins)?)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(GrpcMetricsLayer)
            .layer(ServiceAuthLayer::new(config.token()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(UserServiceServer::new(api))
            .serve_with_incoming_shutdown(
                // Nagle off: a watch stream's small frames and unary replies go out at
                // once instead of waiting for the peer's delayed ACK.
                crate::incoming::bounded(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    config
                        .max_connections
                        .unwrap_or_else(service_runtime::open_files::default_connection_cap),
                    config.first_request_timeout,
                ),
                drain.clone().cancelled_owned(),
            );
        tokio::pin!(server);

        let result = tokio::select! {
            result = &mut server => result.map_err(anyhow::Error::from),
            () = shutdown => {
                tracing::info!(grace = ?config.shutdown_grace, "shutting down: health NOT_SERVING, draining calls");
                health_follower.abort();
                let _ = (&mut health_follower).await;
                health.set_not_serving::<UserServiceServer<UsersApi>>().await;
                health.set_service_status("", ServingStatus::NotServing).await;
                stop_tasks.cancel();
                drain.cancel();
                match tokio::time::timeout(config.shutdown_grace, &mut server).await {
                    Ok(result) => result.map_err(anyhow::Error::from),
                    Err(_) => {
                        tracing::warn!("grace period over; stopping with calls still in flight");
                        Ok(())
                    }
                }
            }
        };
        stop_tasks.cancel();
        health_follower.abort();
        if tokio::time::timeout(TASK_STOP_GRACE, tasks.join_all())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time");
        }
        tracing::info!("user-service stopped");
        result
    }
}

/// Keeps grpc.health.v1 (the server, "", and users.v1.UserService) NOT_SERVING
/// while the database cannot be written, so probes and load balancers stop
/// sending writes that can only fail; SERVING again once a write commits.
async fn follow_writability(
    health: tonic_health::server::HealthReporter,
    mut writable: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let status = if *writable.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health
            .set_service_status(
                <UserServiceServer<UsersApi> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        if writable.changed().await.is_err() {
            return;
        }
    }
}

/// What the metrics port serves: the gauges read at scrape time from the store
/// and the relay's cursor, then every metric rendered.
fn metrics_renderer(
    store: Arc<Store>,
    published: Option<Arc<AtomicU64>>,
) -> impl Fn() -> String + Clone + Send + Sync + 'static {
    let handle = crate::metrics::install();
    move || {
        let published = published
            .as_ref()
            .map(|published| published.load(Ordering::Relaxed))
            .filter(|&published| published != CURSOR_UNKNOWN);
        crate::metrics::set_scraped_gauges(store.head(), published);
        handle.render()
    }
}

/// CORS for gRPC-Web from browsers on `origins` (`*` for any); none when empty.
fn cors_layer(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS origin {o:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    let header = HeaderName::from_static;
    Ok(CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("authorization"),
            header("x-request-id"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 60 * 60)))
}
