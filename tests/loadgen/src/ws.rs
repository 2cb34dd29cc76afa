//! Opening a client socket to the live feed and waiting for its `hello`, shared
//! by `fanout` and `connect`, with small buffers so 10,000 sockets stay cheap for
//! the client too.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    time::Duration,
};

use anyhow::{Context, bail};
use futures::StreamExt;
use http::{HeaderValue, header};
use tokio::net::{TcpSocket, TcpStream};
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
    let (socket, seq, _) = open_from(target, None, "", timeout).await?;
    Ok((socket, seq))
}

/// `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+, not in the libc crate): a bound
/// socket gets its port at `connect`, per destination, so one source address
/// is not limited to one ephemeral port range across every gateway.
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

/// Opens a TCP connection to `addr`, from `bind` (port chosen at connect) when
/// given.
pub async fn connect_tcp(addr: SocketAddr, bind: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind {
        if ip.is_ipv4() {
            let on: libc::c_int = 1;
            // SAFETY: a valid socket descriptor and a c_int option of its size.
            // Failure (an old kernel) only means ports are picked at bind time.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    IP_BIND_ADDRESS_NO_PORT,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let tcp = socket.connect(addr).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Connects to the feed with `query` appended to its URL (`users=1,2`; empty:
/// none), from the source address `bind` when given, and reads its `hello`
/// (skipping nothing else: `hello` is the first frame). Returns the socket, the
/// `hello`'s seq and its text. Everything is bounded by `timeout`.
pub async fn open_from(
    target: &Target,
    bind: Option<IpAddr>,
    query: &str,
    timeout: Duration,
) -> anyhow::Result<(Socket, u64, String)> {
    tokio::time::timeout(timeout, async {
        let tcp = connect_tcp(target.addr, bind).await?;
        let mut url = target.ws_url();
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let mut request = url.into_client_request()?;
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
                    Some(Frame::Hello { seq }) => return Ok((socket, seq, text.to_string())),
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
