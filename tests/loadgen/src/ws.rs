//! Opening a client socket to the live feed and waiting for its `hello`, shared
//! by `fanout` and `connect`, with small buffers so 10,000 sockets stay cheap for
//! the client too.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use http::{HeaderValue, header};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, protocol::WebSocketConfig},
};

use crate::{
    frame::{self, Frame},
    target::Target,
};

/// A client socket to the feed.
pub type Socket = WebSocketStream<TcpStream>;

/// Buffers sized for small frames: tungstenite's defaults (128 KiB each way per
/// socket) would cost the client gigabytes at 10,000 sockets, and tungstenite
/// zero-fills the read chunk before every read (a profiled 7 % of the client's
/// CPU at 8 KiB), so the chunk is a few frames long.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Connects to the feed and reads its `hello`; returns the socket and the
/// `hello`'s seq. Everything is bounded by `timeout`.
pub async fn open(target: &Target, timeout: Duration) -> anyhow::Result<(Socket, u64)> {
    tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect(target.addr)
            .await
            .context("TCP connect")?;
        tcp.set_nodelay(true)?;
        let mut request = target.ws_url().into_client_request()?;
        if let Some(token) = &target.token {
            let protocols = HeaderValue::from_str(&format!("bearer, {token}"))?;
            request
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, protocols);
        }
        let (mut socket, _) =
            tokio_tungstenite::client_async_with_config(request, tcp, Some(config()))
                .await
                .context("WebSocket handshake")?;
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => match frame::parse(&text) {
                    Some(Frame::Hello { seq }) => return Ok((socket, seq)),
                    _ => bail!("expected hello, got {text}"),
                },
                Some(Ok(Message::Close(close))) => bail!("closed before hello: {close:?}"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error).context("reading hello"),
                None => bail!("closed before hello"),
            }
        }
    })
    .await
    .context("timed out waiting for hello")?
}
