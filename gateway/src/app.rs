//! Wiring: binds the listener, builds the user-service clients, the hub and its
//! event source, and serves until a shutdown signal; then every socket is closed
//! with 1001, in-flight requests finish, and the process exits.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::{Channel, Endpoint};

use crate::{
    config::Config,
    events::{self, Hub},
    http::routes::{self, Routes},
    presence::{self, Presence},
    security::{
        auth::{AuthMode, Authenticator},
        cors::Cors,
        hosts::AllowedHosts,
        limits::Limits,
        tls,
    },
    server::{self, connections::ConnectionLimits},
    state::AppState,
    upstream::{
        Credentials, UsersClient,
        replicas::{self, Keeper, Replicas, Target},
    },
    ws::{self, socket::SocketConfig, threads::SocketThreads},
};

/// How long the event source gets to stop after the sockets have.
const SOURCE_STOP_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive on the WatchUsers connection, so a vanished user-service is
/// noticed even when no event flows.
const WATCH_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A gateway that is bound and ready to run.
pub struct Application {
    config: Config,
    listener: TcpListener,
    state: AppState,
    watch_client: UsersClient,
    redis: Option<deadpool_redis::redis::Client>,
    tls: Option<TlsAcceptor>,
    socket_threads: SocketThreads,
    connection_limits: ConnectionLimits,
    /// Keeps the channels to the healthy user-services, once running.
    replicas: Keeper,
    /// `--metrics-listen`, bound.
    metrics_listener: Option<TcpListener>,
}

impl Application {
    /// Binds the listen address and prepares the clients (connections are made
    /// lazily, so a user-service that is not up yet is not an error here).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        // Before anything records: values recorded earlier would be lost.
        crate::observe::install();
        let auth = Arc::new(Authenticator::new(&config.auth)?);
        let credentials = Credentials::new(config.token())?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => None,
        };
        let listener = bind(&config).with_context(|| format!("binding {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics address {addr}"))?,
            ),
            None => None,
        };
        let (rest_channel, watch_channel, replicas) = replicas(&config).await?;
        let (redis, pool) = match &config.redis_url {
            Some(url) => {
                let url = service_runtime::redis_url::with_password_file(
                    url,
                    config.redis_password_file.as_deref(),
                )
                .map_err(anyhow::Error::msg)?;
                let client =
                    deadpool_redis::redis::Client::open(url.as_str()).context("the Redis URL")?;
                let pool = deadpool_redis::Config::from_url(url)
                    .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                    .context("the Redis URL")?;
                (Some(client), Some(pool))
            }
            None => (None, None),
        };
        let connection_limits = config.connection_limits();
        let hub = Arc::new(Hub::new(
            usize::try_from(config.replay_window).unwrap_or(usize::MAX),
            usize::try_from(config.ws_queue).unwrap_or(usize::MAX),
        ));
        let state = AppState {
            channel: rest_channel.clone(),
            credentials: credentials.clone(),
            auth,
            limits: Arc::new(Limits::new(
                config.limits(connection_limits.max_connections),
            )),
            health: tonic_health::pb::health_client::HealthClient::new(rest_channel),
            redis: pool,
            hub,
            write_feed_wait: config.write_feed_wait,
            body_read_timeout: config.body_read_timeout,
            hosts: Arc::new(AllowedHosts::new(
                &config.allowed_hosts,
                listener.local_addr().context("the listener's address")?,
            )),
        };
        let socket_threads = SocketThreads::start(
            config.ws_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            }),
            config.ws_nice,
        )
        .context("starting the socket threads")?;
        Ok(Application {
            connection_limits,
            socket_threads,
            config,
            listener,
            state,
            watch_client: credentials.client(watch_channel),
            redis,
            tls,
            replicas,
            metrics_listener,
        })
    }

    /// The address actually bound (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            config,
            listener,
            state,
            watch_client,
            redis,
            tls,
            socket_threads,
            connection_limits,
            replicas,
            metrics_listener,
        } = self;
        let hub = state.hub.clone();
        let stop_source = CancellationToken::new();
        tokio::spawn(replicas.run(stop_source.clone()));
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        if let Some(metrics_listener) = metrics_listener {
            tokio::spawn(service_runtime::metrics::serve(
                metrics_listener,
                service_runtime::metrics::render,
                stop_source.clone().cancelled_owned(),
            ));
        }
        let stop_serving = CancellationToken::new();
        let tracker = TaskTracker::new();

        // Presence crosses gateways through Redis when events come from there.
        let (presence, presence_task) = match &redis {
            Some(client) => {
                let (outbox, deltas) = tokio::sync::mpsc::channel(presence::bus::OUTBOX);
                let presence = Arc::new(Presence::new(hub.clone(), Some(outbox)));
                let bus = tokio::spawn(presence::bus::run(
                    client.clone(),
                    presence::bus::channel(&config.redis_stream_key),
                    presence.clone(),
                    deltas,
                    stop_source.clone(),
                ));
                (presence, Some(bus))
            }
            None => (Arc::new(Presence::new(hub.clone(), None)), None),
        };
        tokio::spawn(presence.clone().run(stop_source.clone()));
        let source = match redis {
            Some(client) => {
                let source = events::redis::RedisSource {
                    client,
                    stream_key: config.redis_stream_key.clone(),
                };
                tokio::spawn(events::redis::run(
                    source,
                    watch_client,
                    hub.clone(),
                    stop_source.clone(),
                ))
            }
            None => tokio::spawn(events::watch::run(
                watch_client,
                hub.clone(),
                stop_source.clone(),
            )),
        };

        let cors = Cors::new(&config.cors_allow_origins);
        let filter = routes::build(Routes {
            sockets: ws::Endpoint {
                state: state.clone(),
                cors: cors.clone(),
                hub: hub.clone(),
                presence: presence.clone(),
                sockets: SocketConfig {
                    ping_interval: config.ws_ping_interval,
                    ping_timeout: config.ws_ping_timeout,
                },
                shutdown: stop_serving.clone(),
                tracker: tracker.clone(),
                runtime: socket_threads.handle().clone(),
            },
            state,
            web_dir: config.web_dir.clone(),
            ready_timeout: config.connect_timeout,
            cors,
            https: tls.is_some(),
            metrics_here: metrics_addr.is_none(),
        });
        let listen = listener.local_addr()?;
        if config.auth.auth == AuthMode::None {
            tracing::warn!(
                "AUTHENTICATION IS OFF (--auth none): anyone who can reach {listen} may read \
                 and change every user. For local development only."
            );
        }
        tracing::info!(
            listen = %listen,
            metrics_listen = metrics_addr.map(tracing::field::display),
            user_service = %config.user_service_url,
            events = if config.redis_url.is_some() { "redis" } else { "watch" },
            auth = ?config.auth.auth,
            tls = tls.is_some(),
            "gateway listening"
        );
        let server = tokio::spawn(server::run(
            listener,
            filter,
            tls,
            connection_limits,
            stop_serving.clone(),
        ));

        shutdown.await;
        tracing::info!(
            sockets = hub.socket_count(),
            grace = ?config.shutdown_grace,
            "shutting down: closing sockets with 1001, draining requests"
        );
        stop_serving.cancel();
        hub.close_sockets();
        tracker.close();
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            tracker.wait().await;
            let _ = server.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("grace period over; stopping with connections still open");
        }
        stop_source.cancel();
        if tokio::time::timeout(SOURCE_STOP_GRACE, source)
            .await
            .is_err()
        {
            tracing::warn!("the event source did not stop in time");
        }
        // Its goodbye lets the other gateways drop this one's members at once.
        if let Some(bus) = presence_task {
            let _ = tokio::time::timeout(SOURCE_STOP_GRACE, bus).await;
        }
        drop(socket_threads);
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// The balanced channels to the user-services (REST, WatchUsers) over every
/// address of `--user-service-url`, resolved once before this returns, and
/// the keeper that follows their health and names from then on.
async fn replicas(config: &Config) -> anyhow::Result<(Channel, Channel, Keeper)> {
    let targets = replicas::parse_targets(&config.user_service_url).map_err(anyhow::Error::msg)?;
    let tls = match targets.first() {
        Some(target) if target.https => Some(tls::grpc_client(config.user_service_ca.as_deref())?),
        _ => None,
    };
    let connect_timeout = config.connect_timeout;
    let base = Arc::new(
        move |target: &Target, addr: SocketAddr| -> anyhow::Result<Endpoint> {
            let mut endpoint = Endpoint::from_shared(replicas::address_url(target, addr))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true);
            if let Some(tls) = &tls {
                // The certificate names the host, not the address it resolved to.
                endpoint = endpoint
                    .tls_config(tls.clone().domain_name(target.host.clone()))
                    .context("TLS to the user-service")?;
            }
            Ok(endpoint)
        },
    );
    let request_timeout = config.request_timeout;
    let rest_base = base.clone();
    let rest: replicas::MakeEndpoint =
        Box::new(move |target, addr| Ok(rest_base(target, addr)?.timeout(request_timeout)));
    let watch: replicas::MakeEndpoint = Box::new(move |target, addr| {
        Ok(base(target, addr)?
            .http2_keep_alive_interval(WATCH_KEEP_ALIVE)
            .keep_alive_timeout(WATCH_KEEP_ALIVE)
            .keep_alive_while_idle(true))
    });
    Ok(
        Replicas::new(targets, rest, watch, config.user_service_resolve_interval)
            .start()
            .await,
    )
}

/// Binds the listener; with `--tcp-send-buffer`, accepted connections inherit that
/// SO_SNDBUF from it.
fn bind(config: &Config) -> std::io::Result<TcpListener> {
    let socket = if config.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if let Some(size) = config.tcp_send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(config.listen)?;
    socket.listen(1024)
}
