//! Streaming bodies with bandwidth limits and progress tracking, and the stall
//! watchdog that replaces total timeouts: a transfer may take hours as long as
//! bytes keep moving.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use kura_store::{BodyStream, ObjectReader};
use tokio::time::Instant;

use crate::error::Error;
use crate::limiter::TokenBucket;

/// The body type of every request and response of the peer protocol.
pub type PeerBody = UnsyncBoxBody<Bytes, io::Error>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> PeerBody {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> PeerBody {
    full(Bytes::new())
}

/// Progress of one transfer: bytes moved and when the last byte moved.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    last_ms: AtomicU64,
    bytes: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// Records that `n` bytes moved now.
    pub fn advance(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// Records activity without bytes (e.g. a bandwidth-limiter wait ended).
    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Bytes moved so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn idle(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Resolves once `progress` has seen no activity for `stall`.
pub async fn stalled(progress: &Progress, stall: Duration) {
    loop {
        let idle = progress.idle();
        if idle >= stall {
            return;
        }
        tokio::time::sleep(stall - idle).await;
    }
}

/// Runs `fut`, failing with [`Error::Stalled`] if `progress` stops moving for `stall`.
pub async fn with_watchdog<T>(
    progress: &Progress,
    stall: Duration,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    progress.touch();
    tokio::select! {
        r = fut => r,
        () = stalled(progress, stall) => Err(Error::Stalled(stall)),
    }
}

/// An outgoing body streaming an object through the limiters.
pub fn object_body(
    reader: ObjectReader,
    limiters: Vec<Arc<TokenBucket>>,
    progress: Arc<Progress>,
) -> PeerBody {
    let stream = futures_util::stream::unfold(
        (reader, limiters, progress),
        |(mut reader, limiters, progress)| async move {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => {
                    let n = chunk.len() as u64;
                    for l in &limiters {
                        l.acquire(n).await;
                    }
                    progress.advance(n);
                    Some((Ok(Frame::data(chunk)), (reader, limiters, progress)))
                }
                Ok(None) => None,
                Err(e) => Some((Err(io::Error::other(e)), (reader, limiters, progress))),
            }
        },
    );
    StreamBody::new(stream).boxed_unsync()
}

/// A byte stream over an incoming body: each frame must arrive within `stall`, and
/// every chunk passes the limiters and advances `progress`.
pub fn incoming_stream(
    body: Incoming,
    stall: Duration,
    limiters: Vec<Arc<TokenBucket>>,
    progress: Arc<Progress>,
) -> BodyStream {
    let stream = futures_util::stream::unfold(
        (body, limiters, progress, false),
        move |(mut body, limiters, progress, done)| async move {
            if done {
                return None;
            }
            loop {
                let frame = match tokio::time::timeout(stall, body.frame()).await {
                    Err(_) => {
                        return Some((
                            Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("body stalled for {stall:?}"),
                            )),
                            (body, limiters, progress, true),
                        ));
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => {
                        return Some((Err(io::Error::other(e)), (body, limiters, progress, true)));
                    }
                    Ok(Some(Ok(f))) => f,
                };
                if let Ok(data) = frame.into_data() {
                    let n = data.len() as u64;
                    for l in &limiters {
                        l.acquire(n).await;
                    }
                    progress.advance(n);
                    return Some((Ok(data), (body, limiters, progress, false)));
                }
            }
        },
    );
    Box::pin(stream)
}

/// Reads a whole body of at most `limit` bytes, each frame within `stall`.
pub async fn read_limited(
    body: Incoming,
    limit: usize,
    stall: Duration,
) -> Result<Bytes, io::Error> {
    let mut s: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>> =
        incoming_stream(body, stall, Vec::new(), Arc::new(Progress::default()));
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("body exceeds {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Maps a stream's items (helper for tests and callers building bodies).
pub fn stream_body(s: BodyStream) -> PeerBody {
    StreamBody::new(s.map_ok(Frame::data)).boxed_unsync()
}
