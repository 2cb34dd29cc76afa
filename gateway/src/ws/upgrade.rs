//! The WebSocket handshake, done here rather than by `warp::ws()`: warp cannot set
//! tungstenite's read buffer, whose 128 KiB default is zero-filled on a socket's
//! first read, so every idle socket would hold about 140 KB. With our own
//! handshake the socket gets [`socket_config`] and costs a few KiB.
//!
//! [`crate::server`] moves hyper's upgrade handle out of each request into an
//! [`UpgradeSlot`] (warp's extension filters need `Clone`); [`handshake`] checks
//! the upgrade headers and [`Handshake::accept`] answers 101 and runs the socket.

use std::future::Future;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use warp::{
    Filter, Rejection,
    http::{HeaderValue, StatusCode, header},
    reply::Response,
};

use crate::server::upgrade_slot::UpgradeSlot;

/// A server-side WebSocket on an upgraded HTTP connection.
pub type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

/// Largest client frame or message accepted (bigger ones end the socket).
pub const MAX_INBOUND: usize = 64 * 1024;
/// Largest write buffer per socket, beyond the queue (tungstenite's default is
/// unbounded).
pub const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// Bytes read from a socket at a time; bigger client frames grow the buffer for
/// themselves (up to [`MAX_INBOUND`]), and clients send little.
const READ_BUFFER: usize = 4 * 1024;

/// The limits every socket runs with.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_INBOUND))
        .max_frame_size(Some(MAX_INBOUND))
        .max_write_buffer_size(MAX_WRITE_BUFFER)
}

/// A request that is not a WebSocket upgrade, on the socket's path (400).
#[derive(Debug)]
pub struct NotAnUpgrade;

impl warp::reject::Reject for NotAnUpgrade {}

/// A valid upgrade request, ready to be answered.
#[derive(Debug)]
pub struct Handshake {
    accept_key: String,
    slot: Option<UpgradeSlot>,
}

/// Accepts an RFC 6455 upgrade request (`Connection: upgrade`, `Upgrade:
/// websocket`, version 13, a key); anything else is rejected with
/// [`NotAnUpgrade`].
pub fn handshake() -> impl Filter<Extract = (Handshake,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::ext::optional::<UpgradeSlot>())
        .and_then(
            |headers: http::HeaderMap, slot: Option<UpgradeSlot>| async move {
                let has = |name: header::HeaderName, token: &str| {
                    headers.get_all(name).iter().any(|value| {
                        value.to_str().is_ok_and(|value| {
                            value
                                .split(',')
                                .any(|part| part.trim().eq_ignore_ascii_case(token))
                        })
                    })
                };
                let key = headers.get(header::SEC_WEBSOCKET_KEY);
                let version = headers.get(header::SEC_WEBSOCKET_VERSION);
                match key {
                    Some(key)
                        if has(header::CONNECTION, "upgrade")
                            && has(header::UPGRADE, "websocket")
                            && version.is_some_and(|v| v == "13") =>
                    {
                        Ok(Handshake {
                            accept_key: derive_accept_key(key.as_bytes()),
                            slot,
                        })
                    }
                    _ => Err(warp::reject::custom(NotAnUpgrade)),
                }
            },
        )
}

impl Handshake {
    /// Answers 101 and, once hyper hands over the connection, runs `serve` on the
    /// socket in its own task on `runtime`.
    pub fn accept<F, U>(self, runtime: &tokio::runtime::Handle, serve: F) -> Response
    where
        F: FnOnce(WebSocket) -> U + Send + 'static,
        U: Future<Output = ()> + Send + 'static,
    {
        match self.slot.as_ref().and_then(UpgradeSlot::take) {
            Some(on_upgrade) => {
                runtime.spawn(async move {
                    match on_upgrade.await {
                        Ok(upgraded) => {
                            let socket = WebSocketStream::from_raw_socket(
                                TokioIo::new(upgraded),
                                Role::Server,
                                Some(socket_config()),
                            )
                            .await;
                            serve(socket).await;
                        }
                        Err(error) => tracing::debug!(%error, "ws: upgrade failed"),
                    }
                });
            }
            None => tracing::debug!("ws: no upgrade handle on this connection"),
        }
        let mut response = Response::default();
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&self.accept_key) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(headers: &[(&str, &str)]) -> Result<Handshake, Rejection> {
        let mut request = warp::test::request().path("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.filter(&handshake()).await
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[tokio::test]
    async fn a_valid_upgrade_gets_the_rfc_6455_accept_key() {
        let handshake = check(&GOOD).await.expect("accepted");
        // The example from RFC 6455 section 1.3.
        assert_eq!(handshake.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let response = handshake.accept(&tokio::runtime::Handle::current(), |_socket| async {});
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn anything_short_of_an_upgrade_is_rejected() {
        for missing in 0..GOOD.len() {
            let headers: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, h)| *h)
                .collect();
            let rejection = check(&headers).await.expect_err("rejected");
            assert!(rejection.find::<NotAnUpgrade>().is_some(), "{headers:?}");
        }
        let mut old_version = GOOD;
        old_version[2] = ("sec-websocket-version", "8");
        assert!(check(&old_version).await.is_err());
    }
}
