//! The HTTP server loop (in place of `warp::serve`, which has no TLS and no
//! limits to set): accepts connections, wraps them in TLS when configured, bounds
//! request heads, tells the filters the client's address, and on shutdown stops
//! accepting and lets open connections finish.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warp::{Filter, filters::BoxedFilter, reply::Response};

use crate::limits::{MAX_HEAD, MAX_HEADERS};

/// How long a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client gets to send a request's head (slow-loris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// The client's address, put in every request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Marks a request whose head (target and headers) is over [`MAX_HEAD`]: hyper's
/// own bound is approximate (it depends on how the bytes arrived).
#[derive(Clone, Copy, Debug)]
pub struct HeadTooLarge;

/// Whether the request line's target and the headers together exceed
/// [`MAX_HEAD`] bytes.
fn head_too_large<B>(request: &http::Request<B>) -> bool {
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

/// Serves `filter` on `listener` (over TLS with `tls`) until `shutdown`, then
/// waits for open connections (sockets close themselves on the same signal).
pub async fn run(
    listener: TcpListener,
    filter: BoxedFilter<(Response,)>,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = service_runtime::accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        // Nagle off: socket frames and replies leave at once rather than waiting
        // for the client's delayed ACK of the previous one.
        let _ = stream.set_nodelay(true);
        let filter = filter.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => serve(TokioIo::new(stream), addr, filter, watcher).await,
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => serve(TokioIo::new(stream), addr, filter, watcher).await,
                        Ok(Err(error)) => tracing::debug!(%error, %addr, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn serve<IO>(
    io: TokioIo<IO>,
    addr: SocketAddr,
    filter: BoxedFilter<(Response,)>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = tower::util::MapRequest::new(
        warp::service(filter),
        move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ClientAddr(addr));
            crate::upgrade::UpgradeSlot::stash(&mut request);
            if head_too_large(&request) {
                request.extensions_mut().insert(HeadTooLarge);
            }
            request
        },
    );
    let service = TowerToHyperService::new(crate::observe::Observed::new(service));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32)
        .max_concurrent_streams(128);
    let connection = builder.serve_connection_with_upgrades(io, service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%error, %addr, "connection ended with an error");
    }
}
