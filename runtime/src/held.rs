//! An accepted connection tied to its place under a connection cap: the place
//! is given back when the connection (or whatever it became, such as an
//! upgraded WebSocket) is dropped. Optionally the connection must send its first
//! bytes within a deadline, or its reads fail and its server closes it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::OwnedSemaphorePermit,
    time::Sleep,
};

/// A connection with its place under the cap.
pub struct Held<IO> {
    io: IO,
    /// Until the first bytes arrive: when they must have.
    first_bytes: Option<Pin<Box<Sleep>>>,
    _place: OwnedSemaphorePermit,
}

impl<IO> Held<IO> {
    /// Ties `io` to `place`, a permit of the cap's semaphore, so the place is
    /// given back exactly when the connection is dropped, however it ends.
    pub fn new(io: IO, place: OwnedSemaphorePermit) -> Held<IO> {
        Held {
            io,
            first_bytes: None,
            _place: place,
        }
    }

    /// Reads fail with `TimedOut` unless the peer sends something within
    /// `deadline`: for servers that wait for a client's first bytes unbounded.
    pub fn with_first_bytes_within(mut self, deadline: Duration) -> Held<IO> {
        self.first_bytes = Some(Box::pin(tokio::time::sleep(deadline)));
        self
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Held<IO> {
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

impl<IO: AsyncWrite + Unpin> AsyncWrite for Held<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// tonic serves any connection that can say who is on the other end.
#[cfg(feature = "grpc")]
impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Held<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        sync::Semaphore,
    };

    use super::*;

    #[tokio::test]
    async fn a_silent_peer_fails_the_first_read_and_a_talking_one_does_not() {
        let places = Arc::new(Semaphore::new(2));
        let (silent_end, _peer) = tokio::io::duplex(64);
        let mut silent = Held::new(silent_end, places.clone().try_acquire_owned().unwrap())
            .with_first_bytes_within(Duration::from_millis(20));
        let error = silent.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        let (talking_end, mut peer) = tokio::io::duplex(64);
        let mut talking = Held::new(talking_end, places.clone().try_acquire_owned().unwrap())
            .with_first_bytes_within(Duration::from_millis(20));
        peer.write_all(b"hi").await.unwrap();
        assert_eq!(talking.read(&mut [0u8; 8]).await.unwrap(), 2);
        tokio::time::sleep(Duration::from_millis(40)).await;
        peer.write_all(b"later").await.unwrap();
        assert_eq!(
            talking.read(&mut [0u8; 8]).await.unwrap(),
            5,
            "no deadline after"
        );
        assert_eq!(places.available_permits(), 0);
        drop((silent, talking));
        assert_eq!(places.available_permits(), 2, "places given back");
    }
}
