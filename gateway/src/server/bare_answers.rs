//! The security headers on the answers hyper writes by itself. When an HTTP/1.1
//! request head does not parse, or is far over the caps (four times ours, see
//! `server.rs`), hyper answers 400, 414 or 431 without calling any service, so
//! [`crate::security::headers::secure`] never sees those answers and hyper has no hook for
//! them. [`SecureBareAnswers`] sits between hyper and the connection and adds the
//! same headers to any error head (status 400 and up) that lacks them.
//!
//! This is sound because a write that starts with `HTTP/1.` is always a response
//! head here: bodies are JSON, metrics text or the page's files, HTTP/2 frames
//! start with a length far over the frame size, and server WebSocket frames start
//! with 0x8_ or 0x0_. Our own answers always carry `x-content-type-options`, so
//! only hyper's are rewritten.

use std::{
    io,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use warp::reply::Response;

/// The header that marks a head as already carrying the security headers.
const MARKER: &[u8] = b"\r\nx-content-type-options:";

/// A connection whose bare error heads get the security headers on the way out.
pub struct SecureBareAnswers<IO> {
    inner: IO,
    https: bool,
    /// A rewritten head (and what followed it in the same write), and how much of
    /// it has gone out: drained before anything else is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<IO> SecureBareAnswers<IO> {
    /// Wraps `inner` (`https`: the gateway terminates TLS, so HSTS is added too).
    pub fn new(inner: IO, https: bool) -> Self {
        Self {
            inner,
            https,
            pending: None,
        }
    }
}

/// The security header lines (`name: value\r\n` each), as [`crate::security::headers::secure`]
/// sets them, rendered once per scheme.
fn header_lines(https: bool) -> &'static [u8] {
    static PLAIN: OnceLock<Vec<u8>> = OnceLock::new();
    static TLS: OnceLock<Vec<u8>> = OnceLock::new();
    let lines = if https { &TLS } else { &PLAIN };
    lines.get_or_init(|| {
        let secured = crate::security::headers::secure(Response::default(), https);
        let mut lines = Vec::new();
        for (name, value) in secured.headers() {
            lines.extend_from_slice(name.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        lines
    })
}

/// `bytes` with the security headers added to its head, when it starts with an
/// HTTP/1.x error head (status 400 and up) that has none; `None` otherwise.
fn secured(bytes: &[u8], https: bool) -> Option<Vec<u8>> {
    let status = bytes.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    if status[0] < b'4' || !status.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    // The head up to and including its last header line's CRLF.
    let head = &bytes[..end + 2];
    let marked = head
        .windows(MARKER.len())
        .any(|w| w.eq_ignore_ascii_case(MARKER));
    if marked {
        return None;
    }
    let lines = header_lines(https);
    let mut out = Vec::with_capacity(bytes.len() + lines.len());
    out.extend_from_slice(head);
    out.extend_from_slice(lines);
    out.extend_from_slice(&bytes[end + 2..]);
    Some(out)
}

impl<IO: AsyncWrite + Unpin> SecureBareAnswers<IO> {
    /// Writes out the rewritten head, if any, before anything else.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.pending {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += written;
            if *sent == bytes.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `rewritten` in place of the `len` bytes it was made from: they count
    /// as written, and what the socket cannot take now goes out on the next
    /// write, flush or shutdown.
    fn accept_rewritten(
        &mut self,
        cx: &mut Context<'_>,
        rewritten: Vec<u8>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        self.pending = Some((rewritten, 0));
        match self.poll_drain(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            _ => Poll::Ready(Ok(len)),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SecureBareAnswers<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SecureBareAnswers<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        match secured(buf, this.https) {
            Some(rewritten) => this.accept_rewritten(cx, rewritten, buf.len()),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        // A head is always the first slice hyper hands over.
        let first = bufs.iter().find(|b| !b.is_empty());
        match first.and_then(|first| Some((first.len(), secured(first, this.https)?))) {
            Some((len, rewritten)) => this.accept_rewritten(cx, rewritten, len),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    const BARE_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";

    async fn written(chunks: &[&[u8]], https: bool) -> Vec<u8> {
        let mut out = SecureBareAnswers::new(Vec::new(), https);
        for chunk in chunks {
            out.write_all(chunk).await.unwrap();
        }
        out.shutdown().await.unwrap();
        out.inner
    }

    async fn written_text(chunks: &[&[u8]], https: bool) -> String {
        String::from_utf8(written(chunks, https).await).unwrap()
    }

    #[tokio::test]
    async fn a_bare_error_head_gets_the_security_headers_before_its_end() {
        let out = written_text(&[BARE_431], false).await;
        let lines = String::from_utf8(header_lines(false).to_vec()).unwrap();
        assert_eq!(
            out,
            format!(
                "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n{lines}\r\n"
            )
        );
        for line in ["x-content-type-options: nosniff", "x-frame-options: DENY"] {
            assert!(lines.contains(&format!("{line}\r\n")), "{lines}");
        }
        assert!(!lines.contains("strict-transport-security"), "{lines}");
        let tls = written_text(&[BARE_431], true).await;
        assert!(tls.contains("\r\nstrict-transport-security: "), "{tls}");
    }

    #[tokio::test]
    async fn what_follows_the_head_is_kept() {
        let answer = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nok";
        let out = written_text(&[answer], false).await;
        let lines = String::from_utf8(header_lines(false).to_vec()).unwrap();
        assert_eq!(
            out,
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n{lines}\r\nok")
        );
    }

    #[tokio::test]
    async fn our_own_heads_and_other_bytes_pass_untouched() {
        let ours = b"HTTP/1.1 404 Not Found\r\nX-Content-Type-Options: nosniff\r\n\r\n";
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        let body = b"{\"detail\": \"HTTP/1.1 400 \\r\\n\\r\\n\"}";
        let frame = b"\x81\x05hello";
        for bytes in [&ours[..], ok, interim, body, frame] {
            assert_eq!(written(&[bytes], false).await, bytes);
        }
        // A head split over writes is left as it is (hyper writes heads whole).
        let (start, rest) = BARE_431.split_at(20);
        assert_eq!(written(&[start, rest], false).await, BARE_431);
    }
}
