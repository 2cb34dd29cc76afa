//! Request bodies, read only once the caller may send one: a handler
//! authenticates and authorises from the head, and only then reads the body,
//! capped in size ([`MAX_BODY`], 413) and in time (408). A caller refused from
//! the head never makes the gateway wait for, or hold, its body.

use std::{pin::Pin, sync::Mutex, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::{
    Filter, Rejection,
    http::{HeaderMap, header},
};

use crate::error::Error;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 16 * 1024;

type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// A request's body, not read yet.
pub struct PendingBody {
    /// `Content-Length`, when sent.
    declared: Option<u64>,
    /// In a mutex only to be `Sync`, as handlers hold the request across awaits;
    /// it is taken once, by [`PendingBody::read`].
    chunks: Mutex<Chunks>,
}

impl PendingBody {
    /// A body made of `bytes` (tests).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> PendingBody {
        let bytes: Bytes = bytes.into();
        PendingBody {
            declared: Some(bytes.len() as u64),
            chunks: Mutex::new(Box::pin(futures::stream::iter([Ok(bytes)]))),
        }
    }

    /// Reads the whole body: 413 over [`MAX_BODY`] (at once when
    /// `Content-Length` says so), 408 when it takes longer than `deadline`.
    pub async fn read(self, deadline: Duration) -> Result<Bytes, Error> {
        if self.declared.is_some_and(|len| len > MAX_BODY as u64) {
            return Err(Error::PayloadTooLarge(MAX_BODY));
        }
        let chunks = self.chunks.into_inner().unwrap_or_else(|e| e.into_inner());
        tokio::time::timeout(deadline, collect_capped(chunks))
            .await
            .map_err(|_| Error::BodyTimeout(deadline))?
    }
}

/// The body of any request, unread.
pub fn pending() -> impl Filter<Extract = (PendingBody,), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::body::stream())
        .map(|headers: HeaderMap, body| {
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let chunks = StreamExt::map(body, chunk_bytes);
            PendingBody {
                declared,
                chunks: Mutex::new(Box::pin(chunks)),
            }
        })
}

fn chunk_bytes<B: Buf>(chunk: Result<B, warp::Error>) -> Result<Bytes, warp::Error> {
    chunk.map(|mut chunk| chunk.copy_to_bytes(chunk.remaining()))
}

async fn collect_capped(mut chunks: Chunks) -> Result<Bytes, Error> {
    let mut collected = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| Error::BadRequest(format!("Reading the body failed: {e}")))?;
        if collected.len() + chunk.len() > MAX_BODY {
            return Err(Error::PayloadTooLarge(MAX_BODY));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_is_read_whole_within_its_caps() {
        let body = PendingBody::from_bytes(&b"{\"first_name\": \"Ada\"}"[..]);
        let read = body.read(Duration::from_secs(1)).await.unwrap();
        assert_eq!(&read[..], b"{\"first_name\": \"Ada\"}");
        let big = PendingBody::from_bytes(vec![b'x'; MAX_BODY + 1]);
        assert!(matches!(
            big.read(Duration::from_secs(1)).await,
            Err(Error::PayloadTooLarge(_))
        ));
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_a_408() {
        let body = PendingBody {
            declared: Some(10),
            chunks: Mutex::new(Box::pin(futures::stream::pending())),
        };
        let read = body.read(Duration::from_millis(20)).await;
        assert!(matches!(read, Err(Error::BodyTimeout(_))));
        assert_eq!(read.unwrap_err().status(), 408);
    }
}
