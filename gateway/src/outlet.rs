//! A socket's outlet: the one way bytes leave a WebSocket, shared by the hub and
//! the socket's own task.
//!
//! The hub writes each event's frame, encoded once with its WebSocket header, into
//! every socket's kernel buffer itself, from the task that publishes: a socket
//! whose kernel takes the frame (the usual case) costs one `write` and no wake-up
//! of its task. Only what the kernel does not take waits here, in order, for the
//! socket's task, which the outlet wakes to push it out once the socket is
//! writable. Frames the task sends itself (`hello`, replays, pongs, pings, the
//! close frame) go through the same queue, so nothing ever interleaves inside a
//! frame and frames leave in the order they were given.
//!
//! A socket with more than its limit of frames waiting is cut loose: further
//! events are refused and its task closes it with 1013.

use std::{
    collections::VecDeque,
    future::poll_fn,
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
};
use tokio_util::sync::CancellationToken;

/// Why an outlet takes no more events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The gateway is shutting down: flush, then close with 1001.
    Shutdown,
    /// The socket fell more than its limit of frames behind: close with 1013.
    Overflow,
    /// The socket's task is closing it (nothing may follow its close frame).
    Closing,
}

/// What became of an event offered to an outlet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Written, or queued behind what is waiting.
    Taken,
    /// Its seq is not after the socket's position (a resumed socket skips it).
    Skipped,
    /// The outlet ended (or just overflowed): it takes no more events.
    Refused,
}

type Writer = Pin<Box<dyn AsyncWrite + Send>>;

struct Inner {
    writer: Writer,
    /// Bytes the kernel has not taken yet, whole frames in order (the front one
    /// may be partly written).
    waiting: VecDeque<Bytes>,
    /// The newest event seq given to this socket.
    after: u64,
    ending: Option<Ending>,
    /// A write failed: the peer is gone.
    broken: bool,
}

/// See the module documentation.
pub struct Outlet {
    inner: Mutex<Inner>,
    /// Wakes the socket's task: bytes wait for it to write.
    wake: Notify,
    /// Cancelled when the outlet ends.
    ended: CancellationToken,
}

impl Outlet {
    /// An outlet over the write half of a socket.
    pub fn new(writer: impl AsyncWrite + Send + 'static) -> Arc<Outlet> {
        Arc::new(Outlet {
            inner: Mutex::new(Inner {
                writer: Box::pin(writer),
                waiting: VecDeque::new(),
                after: 0,
                ending: None,
                broken: false,
            }),
            wake: Notify::new(),
            ended: CancellationToken::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers event `seq`'s `frame` (header included): skipped unless it is after
    /// the socket's position, refused once the outlet ended or when `limit` frames
    /// already wait (the outlet then ends with [`Ending::Overflow`]).
    pub fn offer(&self, seq: u64, frame: &Bytes, limit: usize) -> Offered {
        self.give(seq, frame, limit, true)
    }

    /// Queues `frame` and moves the socket's position to `seq` whatever it was:
    /// a `resync` frame, after which the socket follows the new numbering. Counts
    /// against `limit` like an event.
    pub fn reposition(&self, seq: u64, frame: &Bytes, limit: usize) -> Offered {
        self.give(seq, frame, limit, false)
    }

    fn give(&self, seq: u64, frame: &Bytes, limit: usize, only_newer: bool) -> Offered {
        let mut inner = self.lock();
        if inner.ending.is_some() || inner.broken {
            return Offered::Refused;
        }
        if only_newer && seq <= inner.after {
            return Offered::Skipped;
        }
        if inner.waiting.len() >= limit {
            inner.ending = Some(Ending::Overflow);
            drop(inner);
            self.ended.cancel();
            return Offered::Refused;
        }
        inner.after = seq;
        self.enqueue(inner, [frame.clone()]);
        Offered::Taken
    }

    /// Queues the frames a socket starts with and sets its position; events after
    /// `after` follow them.
    pub fn start(&self, frames: impl IntoIterator<Item = Bytes>, after: u64) {
        let mut inner = self.lock();
        inner.after = after;
        self.enqueue(inner, frames);
    }

    /// Takes no more events; the socket's task learns why from [`Outlet::ending`].
    /// The first reason given stays.
    pub fn end(&self, ending: Ending) {
        let mut inner = self.lock();
        inner.ending.get_or_insert(ending);
        drop(inner);
        self.ended.cancel();
    }

    /// Why the outlet takes no more events, if it does not.
    pub fn ending(&self) -> Option<Ending> {
        self.lock().ending
    }

    /// Waits until bytes wait for the socket's task to write them (a wake-up
    /// given while nobody waited is kept for the next call).
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Waits until the outlet ends; [`Outlet::ending`] says why.
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }

    /// Writes what waits until the kernel has taken all of it (or the write fails).
    pub async fn drain(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_drain(cx)).await
    }

    /// Appends `frames` and writes what the kernel takes now. When bytes remain,
    /// the socket's task is woken to write them once the socket is writable.
    fn enqueue(&self, mut inner: MutexGuard<'_, Inner>, frames: impl IntoIterator<Item = Bytes>) {
        let was_empty = inner.waiting.is_empty();
        inner.waiting.extend(frames);
        // When bytes already waited, the task is writing them: it owns the
        // socket's write readiness, and polling here would steal its wake-up.
        if was_empty {
            self.push_out(inner);
        }
    }

    fn push_out(&self, mut inner: MutexGuard<'_, Inner>) {
        // Polled without a waker of ours: if the kernel takes less than all, the
        // socket's task polls again with its own and is woken when it can go on.
        let mut cx = Context::from_waker(Waker::noop());
        let _ = write_waiting(&mut inner, &mut cx);
        let left = !inner.waiting.is_empty() || inner.broken;
        drop(inner);
        if left {
            self.wake.notify_one();
        }
    }

    /// Writes what waits, registering `cx` when the socket cannot take more.
    pub fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        match write_waiting(&mut inner, cx) {
            Poll::Ready(Ok(())) => inner.writer.as_mut().poll_flush(cx),
            other => other,
        }
    }

    /// Queues bytes the socket's task wrote itself (frames tungstenite encoded)
    /// and writes what the kernel takes now, registering `cx` for the rest.
    fn write_own(&self, cx: &mut Context<'_>, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        inner.waiting.push_back(Bytes::copy_from_slice(bytes));
        match write_waiting(&mut inner, cx) {
            Poll::Ready(Err(error)) => Err(error),
            _ => Ok(()),
        }
    }

    fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        match write_waiting(&mut inner, cx) {
            Poll::Ready(Ok(())) => inner.writer.as_mut().poll_shutdown(cx),
            other => other,
        }
    }

    /// How many frames (or pieces of them) wait for the kernel.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

/// Writes waiting bytes, front first, until none wait or the socket would block.
fn write_waiting(inner: &mut Inner, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    if inner.broken {
        return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
    }
    while let Some(front) = inner.waiting.front_mut() {
        match inner.writer.as_mut().poll_write(cx, front) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                inner.broken = true;
                inner.waiting.clear();
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            Poll::Ready(Ok(written)) => {
                front.advance(written);
                if front.is_empty() {
                    inner.waiting.pop_front();
                }
            }
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
}

/// The byte stream tungstenite runs a socket on: it reads the socket's read half
/// and writes through the [`Outlet`], so the frames it sends queue behind the
/// hub's.
pub struct SocketIo<R> {
    read: R,
    outlet: Arc<Outlet>,
}

impl<R> SocketIo<R> {
    pub fn new(read: R, outlet: Arc<Outlet>) -> SocketIo<R> {
        SocketIo { read, outlet }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SocketIo<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for SocketIo<R> {
    /// Always takes every byte (they queue in the outlet); flushing waits for them.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.outlet.write_own(cx, buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outlet.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outlet.poll_shutdown(cx)
    }
}

/// A server's unmasked, final text frame of `payload` (RFC 6455 section 5.2),
/// encoded once and written as is to every socket.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut frame = BytesMut::with_capacity(len + 10);
    frame.extend_from_slice(&[0x81]);
    match len {
        0..=125 => frame.extend_from_slice(&[len as u8]),
        126..=0xFFFF => {
            frame.extend_from_slice(&[126]);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.extend_from_slice(&[127]);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame.freeze()
}

/// Outlets over in-memory pipes, and a client's view of what they wrote.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use futures::StreamExt;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::{
        WebSocketStream,
        tungstenite::{Message, protocol::Role},
    };

    /// An outlet writing into a pipe of `capacity` bytes, and the pipe's client end.
    pub fn pair(capacity: usize) -> (Arc<Outlet>, DuplexStream) {
        let (server, client) = tokio::io::duplex(capacity);
        let (_read, write) = tokio::io::split(server);
        (Outlet::new(write), client)
    }

    /// Reads `frames` text messages from the client end of `wire`.
    pub async fn read_texts(wire: DuplexStream, frames: usize) -> Vec<String> {
        let mut client = WebSocketStream::from_raw_socket(wire, Role::Client, None).await;
        let mut texts = Vec::new();
        while texts.len() < frames {
            match client.next().await {
                Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
        texts
    }

    /// The text of one whole frame from [`text_frame`].
    pub fn payload(frame: &[u8]) -> &str {
        let header = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        std::str::from_utf8(&frame[header..]).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{pair, payload, read_texts};
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn frames_of_every_length_class_are_read_back_by_a_client() {
        let (outlet, client) = pair(1 << 20);
        let payloads = [
            "x".repeat(3),
            "y".repeat(125),
            "z".repeat(126),
            "w".repeat(70_000),
        ];
        for (seq, payload) in payloads.iter().enumerate() {
            let frame = text_frame(payload.as_bytes());
            assert_eq!(outlet.offer(seq as u64 + 1, &frame, 8), Offered::Taken);
        }
        assert_eq!(read_texts(client, 4).await, payloads);
    }

    #[tokio::test]
    async fn what_the_kernel_does_not_take_waits_in_order_for_the_task() {
        // A 64-byte pipe: most of each frame waits in the outlet.
        let (outlet, mut client) = pair(64);
        for seq in 1..=3 {
            let frame = text_frame(format!("{seq}{}", "-".repeat(100)).as_bytes());
            assert_eq!(outlet.offer(seq, &frame, 8), Offered::Taken);
        }
        assert!(outlet.waiting() > 0, "the pipe could not take it all");
        // The task is told, and drains as the peer reads.
        tokio::time::timeout(Duration::from_secs(1), outlet.woken())
            .await
            .expect("the task was woken");
        let drained = tokio::spawn({
            let outlet = outlet.clone();
            async move { outlet.drain().await }
        });
        let mut bytes = vec![0; 3 * 103];
        client.read_exact(&mut bytes).await.unwrap();
        drained.await.unwrap().unwrap();
        let texts: Vec<_> = bytes.chunks(103).map(|f| payload(f).to_owned()).collect();
        assert!(
            texts[0].starts_with('1') && texts[1].starts_with('2') && texts[2].starts_with('3')
        );
    }

    #[tokio::test]
    async fn a_socket_over_its_limit_is_refused_and_told_once() {
        let (outlet, _client) = pair(8);
        let frame = text_frame(&[b'a'; 50]);
        assert_eq!(outlet.offer(1, &frame, 2), Offered::Taken);
        assert_eq!(outlet.offer(2, &frame, 2), Offered::Taken);
        assert_eq!(outlet.offer(3, &frame, 2), Offered::Refused);
        assert_eq!(outlet.ending(), Some(Ending::Overflow));
        tokio::time::timeout(Duration::from_secs(1), outlet.ended())
            .await
            .expect("the task is told");
        assert_eq!(outlet.offer(4, &frame, 2), Offered::Refused);
        outlet.end(Ending::Shutdown);
        assert_eq!(
            outlet.ending(),
            Some(Ending::Overflow),
            "the first reason stays"
        );
    }

    #[tokio::test]
    async fn events_at_or_before_the_position_are_skipped() {
        let (outlet, client) = pair(1 << 16);
        outlet.start([text_frame(b"hello")], 5);
        let frame = |seq: u64| text_frame(seq.to_string().as_bytes());
        assert_eq!(outlet.offer(5, &frame(5), 8), Offered::Skipped);
        assert_eq!(outlet.offer(6, &frame(6), 8), Offered::Taken);
        assert_eq!(outlet.reposition(2, &frame(100), 8), Offered::Taken);
        assert_eq!(outlet.offer(3, &frame(3), 8), Offered::Taken);
        assert_eq!(read_texts(client, 4).await, ["hello", "6", "100", "3"]);
    }

    #[tokio::test]
    async fn a_peer_that_left_breaks_the_outlet() {
        let (outlet, client) = pair(64);
        drop(client);
        assert_eq!(outlet.offer(1, &text_frame(b"x"), 8), Offered::Taken);
        assert!(outlet.drain().await.is_err());
        assert_eq!(outlet.offer(2, &text_frame(b"y"), 8), Offered::Refused);
    }
}
