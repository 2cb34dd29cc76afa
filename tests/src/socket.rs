//! A WebSocket client for the gateway's event feed (`/ws/user-updates/`), each
//! read bounded, and how a socket ended told apart from a frame.

use std::{net::SocketAddr, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::CloseFrame},
};

use crate::timeouts::STEP_TIMEOUT;

/// A WebSocket client of the event feed, as the web page holds one.
pub struct Socket {
    /// The raw stream, for tests that send or close in ways the helpers do not.
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a socket read ended with, when it was not a text frame: tests assert on
/// how the gateway closes a socket (1001 on shutdown, 1013 for a slow reader, …).
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// A close frame with its code (`None`: none given, or the stream ended).
    Closed(Option<u16>),
    /// The connection broke without a close frame.
    Error(String),
    /// Nothing came within the read's timeout.
    TimedOut,
}

impl Socket {
    /// Connects to `/ws/user-updates/` with `query`, or says why it could not
    /// (for clients that expect the gateway to go away).
    pub async fn open(addr: SocketAddr, query: &str) -> Result<Socket, String> {
        let url = format!("ws://{addr}/ws/user-updates/?{query}");
        match tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
            Ok(Ok((stream, _))) => Ok(Socket { stream }),
            Ok(Err(error)) => Err(format!("connecting a socket to {addr}: {error}")),
            Err(_) => Err(format!("connecting a socket to {addr} timed out")),
        }
    }

    /// Connects to `/ws/user-updates/` with `query` (e.g. `since=3&epoch=…`);
    /// panics when it cannot, for tests where a refusal is a failure.
    pub async fn connect(addr: SocketAddr, query: &str) -> Socket {
        let url = format!("ws://{addr}/ws/user-updates/?{query}");
        let (stream, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connecting the socket timed out")
            .expect("the socket connects");
        Socket { stream }
    }

    /// Connects with extra handshake headers (e.g. `Origin`,
    /// `Sec-WebSocket-Protocol`); the socket and the 101's headers, or the HTTP
    /// status the handshake was refused with.
    pub async fn try_connect(
        addr: SocketAddr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Socket, http::HeaderMap), u16> {
        use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
        let mut request = format!("ws://{addr}/ws/user-updates/?{query}")
            .into_client_request()
            .expect("a valid socket URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        let connected =
            tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .expect("the handshake timed out");
        match connected {
            Ok((stream, response)) => Ok((Socket { stream }, response.headers().clone())),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(error) => panic!("the handshake failed: {error}"),
        }
    }

    /// Connects over a TCP socket with a small receive buffer: a slow reader,
    /// which the gateway must cut off rather than buffer for without bound.
    pub async fn connect_small_buffer(addr: SocketAddr, recv_buffer: u32) -> Socket {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(recv_buffer).unwrap();
        let tcp = socket.connect(addr).await.expect("TCP connects");
        let url = format!("ws://{addr}/ws/user-updates/");
        let (stream, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .expect("the socket connects");
        Socket { stream }
    }

    /// The next text frame as JSON, skipping pings and pongs (the gateway's
    /// keep-alive, not the feed); or how it ended.
    pub async fn next(&mut self, timeout: Duration) -> Result<Value, Ended> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| Ended::TimedOut)?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(Ended::Closed(frame.map(|f: CloseFrame| f.code.into())));
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(Ended::Error(error.to_string())),
                None => return Err(Ended::Closed(None)),
            }
        }
    }

    /// The next text frame as JSON, for tests where anything else is a failure;
    /// panics on anything else.
    pub async fn frame(&mut self) -> Value {
        match self.next(STEP_TIMEOUT).await {
            Ok(frame) => frame,
            Err(ended) => panic!("expected a frame, got {ended:?}"),
        }
    }

    /// Sends a text frame: the feed takes none, and tests check what the
    /// gateway does with one.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("sending a frame");
    }
}
