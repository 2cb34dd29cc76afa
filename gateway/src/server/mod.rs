//! The HTTP server loop (in place of `warp::serve`, which has no TLS and no
//! limits to set): accepts connections, wraps them in TLS when configured, bounds
//! request heads, holds every connection to [`ConnectionLimits`], tells the
//! filters the client's address, and on shutdown stops accepting and closes open
//! connections gracefully.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use service_runtime::{held::Held, log_limit::LogLimit};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use warp::{Filter, filters::BoxedFilter, reply::Response};

pub mod bare_answers;
pub mod connections;
pub mod upgrade_slot;

use crate::{
    observe,
    security::limits::{MAX_HEAD, MAX_HEADERS},
};
use bare_answers::SecureBareAnswers;
use connections::{Activity, ConnectionLimits, Registry, Verdict};
use upgrade_slot::UpgradeSlot;

/// How long a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection waits for an evicted one to give its place back.
const EVICTION_WAIT: Duration = Duration::from_millis(200);
/// At most one log line this often about connections refused over the cap.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The client's address, put in every request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Marks a request whose head (target and headers) is over [`MAX_HEAD`]: hyper's
/// own bound is approximate (it depends on how the bytes arrived).
#[derive(Clone, Copy, Debug)]
pub struct HeadTooLarge;

/// Whether the request line's target and the headers together exceed
/// [`MAX_HEAD`] bytes, or there are more than [`MAX_HEADERS`] headers: the same
/// test for HTTP/1.1 and HTTP/2, whose header lists hyper bounds differently.
fn head_too_large<B>(request: &http::Request<B>) -> bool {
    if request.headers().len() > MAX_HEADERS {
        return true;
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    headers + request.uri().to_string().len() > MAX_HEAD
}

/// The client's address, when the request came through [`run`].
pub fn client_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|addr: Option<ClientAddr>| addr.map(|a| a.0))
}

/// Serves `filter` on `listener` (over TLS with `tls`) under `limits` until
/// `shutdown`, then closes every connection gracefully and waits for them
/// (sockets close themselves on the same signal).
pub async fn run(
    listener: TcpListener,
    filter: BoxedFilter<(Response,)>,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = LogLimit::new(REFUSAL_LOG_EVERY);
    let registry = Registry::new();
    let connections = TaskTracker::new();
    loop {
        let (stream, addr) = tokio::select! {
            accepted = service_runtime::accept(&listener) => accepted,
            () = shutdown.cancelled() => break,
        };
        let Some(place) = make_room(&places, &registry).await else {
            // Closed at once, before anything is read: the connections already
            // open keep being served, and descriptors never run out.
            drop(stream);
            observe::connection_shed("over_cap");
            if let Some(count) = refusals.hit() {
                tracing::warn!(
                    refused = count,
                    max_connections = limits.max_connections,
                    "connections refused: every one of --max-connections is busy"
                );
            }
            continue;
        };
        let activity = Activity::new();
        let evict = registry.add(activity.clone(), limits.max_connections);
        // Nagle off: socket frames and replies leave at once rather than waiting
        // for the client's delayed ACK of the previous one.
        let _ = stream.set_nodelay(true);
        let stream = Held::new(stream, place);
        let filter = filter.clone();
        let tls = tls.clone();
        let stop = shutdown.clone();
        let connection = Connection {
            addr,
            filter,
            limits,
            activity,
            stop,
            evict,
        };
        connections.spawn(async move {
            let activity = connection.activity.clone();
            let evict = connection.evict.clone();
            tokio::select! {
                () = connect(stream, tls, connection) => {}
                () = evict.cancelled() => {}
            }
            activity.end();
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A place under the cap: free, or made by evicting the oldest connection with
/// nothing in flight; `None` when every connection is busy.
async fn make_room(places: &Arc<Semaphore>, registry: &Registry) -> Option<OwnedSemaphorePermit> {
    if let Ok(place) = places.clone().try_acquire_owned() {
        return Some(place);
    }
    if !registry.evict_one() {
        return None;
    }
    observe::connection_shed("evicted");
    // The evicted connection's task drops it at its next poll.
    tokio::time::timeout(EVICTION_WAIT, places.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Counts a connection's requests in flight (from the head's arrival to the
/// answer's head), for [`Activity`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> tower::Service<R> for Tracked<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let in_flight = self.activity.enter();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        })
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    addr: SocketAddr,
    filter: BoxedFilter<(Response,)>,
    limits: ConnectionLimits,
    activity: Arc<Activity>,
    /// Cancelled at shutdown: close gracefully.
    stop: CancellationToken,
    /// Cancelled to make room for a new connection: drop at once.
    evict: CancellationToken,
}

/// Completes the TLS handshake when configured, then serves.
async fn connect(stream: Held<TcpStream>, tls: Option<TlsAcceptor>, connection: Connection) {
    let addr = connection.addr;
    match tls {
        None => serve(SecureBareAnswers::new(stream, false), connection).await,
        Some(tls) => {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await;
            match handshake {
                Ok(Ok(stream)) => serve(SecureBareAnswers::new(stream, true), connection).await,
                Ok(Err(error)) => tracing::debug!(%error, %addr, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve<IO>(io: SecureBareAnswers<IO>, connection: Connection)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let Connection {
        addr,
        filter,
        limits,
        activity,
        stop,
        ..
    } = connection;
    let service = tower::util::MapRequest::new(
        warp::service(filter),
        move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ClientAddr(addr));
            UpgradeSlot::stash(&mut request);
            if head_too_large(&request) {
                request.extensions_mut().insert(HeadTooLarge);
            }
            request
        },
    );
    let service = Tracked {
        inner: service,
        activity: activity.clone(),
    };
    let service = TowerToHyperService::new(crate::observe::Observed::new(service));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.first_request)
        // Both above our own caps, so that [`head_too_large`] answers 431 as
        // every other answer; hyper's own 431 (given the security headers by
        // [`SecureBareAnswers`]) is only the backstop, for heads four times over.
        .max_buf_size(MAX_HEAD * 4)
        .max_headers(MAX_HEADERS * 4);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keep_alive)
        .keep_alive_timeout(limits.keep_alive)
        // As for HTTP/1.1: over this, h2 itself answers a bare 431.
        .max_header_list_size((MAX_HEAD * 4) as u32)
        .max_concurrent_streams(128);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let mut check = tokio::time::interval(limits.check_every());
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%error, %addr, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = check.tick(), if !closing => match activity.verdict(&limits) {
                Verdict::Keep => {}
                Verdict::NoRequest => {
                    observe::connection_shed("no_request");
                    return;
                }
                Verdict::Idle => {
                    observe::connection_shed("idle");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            },
        }
    }
}
