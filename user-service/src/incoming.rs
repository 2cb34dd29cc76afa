//! The gRPC port's connections, bounded as the gateway's are: a connection must
//! send its first bytes within a deadline (a silent one is closed), and at most
//! so many are open at once, below the process's open-file limit; beyond, a new
//! connection is closed at once, counted, and logged at most every 10 s.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use service_runtime::log_limit::LogLimit;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tonic::transport::server::{Connected, TcpIncoming};

/// Connections refused over the cap, logged at most once per 10 s.
static REFUSALS: LogLimit = LogLimit::new(Duration::from_secs(10));

/// A connection with its place under the cap, and the deadline for its first
/// bytes until they arrive.
pub struct Bounded<IO> {
    io: IO,
    first_bytes: Option<Pin<Box<Sleep>>>,
    _place: OwnedSemaphorePermit,
}

/// Accepted connections, at most `cap` open at once, each closed unless it sends
/// something within `first_bytes`.
pub fn bounded(
    incoming: TcpIncoming,
    cap: usize,
    first_bytes: Duration,
) -> impl Stream<Item = io::Result<Bounded<TcpStream>>> {
    let places = Arc::new(Semaphore::new(cap));
    incoming.filter_map(move |accepted| {
        let admitted = match accepted {
            Err(error) => Some(Err(error)),
            Ok(stream) => match places.clone().try_acquire_owned() {
                Ok(place) => Some(Ok(Bounded {
                    io: stream,
                    first_bytes: Some(Box::pin(tokio::time::sleep(first_bytes))),
                    _place: place,
                })),
                Err(_) => {
                    drop(stream);
                    ::metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
                    if let Some(refused) = REFUSALS.hit() {
                        tracing::warn!(
                            refused,
                            cap,
                            "connections refused: as many are open as --max-connections allows"
                        );
                    }
                    None
                }
            },
        };
        std::future::ready(admitted)
    })
}

impl<IO: AsyncRead + Unpin> AsyncRead for Bounded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(deadline) = self.first_bytes.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no bytes within the first-request deadline",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.first_bytes = None;
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Bounded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Bounded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
