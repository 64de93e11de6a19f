//! Request bodies into the store, objects out of it: limits, stall timeouts,
//! `Range`, `ETag` and `HEAD`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use kura_store::{Object, ObjectMeta};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

/// The declared `Content-Length`, if any (400 when unparsable).
pub fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("invalid Content-Length")),
    }
}

/// Rejects a declared length over `limit` with 413 before any byte is read.
pub fn check_declared(len: Option<u64>, limit: u64) -> Result<(), ApiError> {
    match len {
        Some(n) if n > limit => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body of {n} bytes exceeds the limit of {limit} bytes"),
        )),
        _ => Ok(()),
    }
}

/// Marker error inside the body stream: the body exceeded its limit.
#[derive(Debug)]
pub struct OverLimit(pub u64);

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "body exceeds the limit of {} bytes", self.0)
    }
}

impl std::error::Error for OverLimit {}

/// Marker error inside the body stream: the client stalled.
#[derive(Debug)]
pub struct Stalled(pub Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no body bytes received for {:?}", self.0)
    }
}

impl std::error::Error for Stalled {}

/// A request body as a byte stream for the store: at most `limit` bytes, and
/// cut when no bytes arrive for `stall`.
pub struct LimitedBody {
    inner: axum::body::BodyDataStream,
    limit: u64,
    seen: u64,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
}

impl LimitedBody {
    /// Wraps an axum request body.
    pub fn new(body: Body, limit: u64, stall: Duration) -> Self {
        Self {
            inner: body.into_data_stream(),
            limit,
            seen: 0,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
        }
    }
}

impl Stream for LimitedBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.limit {
                    return Poll::Ready(Some(Err(io::Error::other(OverLimit(this.limit)))));
                }
                let deadline = Instant::now() + this.stall;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    Stalled(this.stall),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Maps a failed store write whose cause was the body stream to the right status.
pub fn write_error(err: kura_store::Error) -> ApiError {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(s) = source {
        if let Some(o) = s.downcast_ref::<OverLimit>() {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, o.to_string());
        }
        if let Some(t) = s.downcast_ref::<Stalled>() {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, t.to_string());
        }
        source = s.source();
    }
    ApiError::from_store(&err)
}

/// The strong ETag of an object: its SHA-256 in lowercase hex, quoted (built
/// with a table rather than `fmt`: it is on every GET).
pub fn etag(meta: &ObjectMeta) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 66];
    for (i, b) in meta.digest.0.iter().enumerate() {
        let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
        let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
        if let Some(pair) = out.get_mut(1 + 2 * i..3 + 2 * i) {
            pair.copy_from_slice(&[hi, lo]);
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// A parsed single `Range: bytes=` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: serve the whole object.
    Full,
    /// Serve `start..end` (end exclusive).
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Parses a `Range` header against an object of `len` bytes. Multiple ranges
/// and unknown units are ignored (the whole object is served, as RFC 9110
/// allows).
pub fn parse_range(value: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => match parse(b) {
            // Suffix range: the last n bytes.
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(len.saturating_sub(n), len),
            None => RangeRequest::Full,
        },
        (false, _) => {
            let Some(start) = parse(a) else {
                return RangeRequest::Full;
            };
            let end = if b.is_empty() {
                Some(len.saturating_sub(1))
            } else {
                parse(b)
            };
            match end {
                None => RangeRequest::Full,
                Some(_) if start >= len => RangeRequest::Unsatisfiable,
                Some(end) if end < start => RangeRequest::Full,
                Some(end) => RangeRequest::Partial(start, end.min(len.saturating_sub(1)) + 1),
            }
        }
    }
}

/// Options for serving an object.
#[derive(Debug, Clone, Copy)]
pub struct Serve {
    /// `HEAD`: headers only.
    pub head: bool,
    /// Largest object verified while streaming (`KURA_VERIFY_READS_MAX_BYTES`);
    /// larger file-backed objects are read straight from their file.
    pub verify_max: u64,
}

impl Default for Serve {
    fn default() -> Self {
        Self {
            head: false,
            verify_max: u64::MAX,
        }
    }
}

/// Read size of unverified file streaming.
pub const FILE_CHUNK: usize = 1 << 20;

/// A byte range of a blob file that a connection which owns its socket may
/// send with `sendfile` instead of streaming the response body (which it then
/// drops unpolled). Attached to responses of objects over
/// `KURA_VERIFY_READS_MAX_BYTES`, whose bytes go out unhashed either way.
#[derive(Clone, Debug)]
pub struct ZeroCopyFile {
    /// A `dup` of the store's open descriptor: eviction or overwrite cannot
    /// pull the bytes away while they are sent.
    pub file: std::sync::Arc<std::fs::File>,
    /// First byte in the file.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

/// Streams `start..end` of a blob file in [`FILE_CHUNK`] positioned reads on
/// the blocking pool, read ahead of the socket like [`read_ahead`]. No
/// checksum: used for objects over `KURA_VERIFY_READS_MAX_BYTES`, which the
/// store's scrubber verifies at rest. Nothing is read (no task is spawned)
/// until the stream is first polled, so a connection that sends the range
/// with `sendfile` instead pays nothing for it.
fn file_stream(
    file: std::sync::Arc<std::fs::File>,
    start: u64,
    end: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    enum State {
        Idle(std::sync::Arc<std::fs::File>, u64, u64),
        Running(tokio::sync::mpsc::Receiver<io::Result<Bytes>>),
    }
    futures_util::stream::unfold(State::Idle(file, start, end), |state| async move {
        let mut rx = match state {
            State::Idle(file, start, end) => spawn_file_reader(file, start, end),
            State::Running(rx) => rx,
        };
        rx.recv().await.map(|item| (item, State::Running(rx)))
    })
}

fn spawn_file_reader(
    file: std::sync::Arc<std::fs::File>,
    start: u64,
    end: u64,
) -> tokio::sync::mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        let mut pos = start;
        while pos < end {
            let want = usize::try_from((end - pos).min(FILE_CHUNK as u64)).unwrap_or(FILE_CHUNK);
            let f = file.clone();
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; want];
                f.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            let failed = read.is_err();
            if tx.send(read).await.is_err() || failed {
                return;
            }
            pos += want as u64;
        }
    });
    rx
}

/// Chunks queued ahead of the socket per file-backed response (memory per
/// transfer is bounded by `(READ_AHEAD + 3) × chunk size`: the queue, the chunk
/// held back, the one being read and the one being written).
pub const READ_AHEAD: usize = 2;

/// Streams a file-backed object's chunks from a task that reads (and
/// verifies) ahead of the socket, so reading and hashing the next chunk on
/// the blocking pool overlaps with writing the previous one to the client.
/// The task ends when the reader is done or the response is dropped.
fn read_ahead(
    mut reader: kura_store::ObjectReader,
) -> impl Stream<Item = Result<Bytes, kura_store::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        // One chunk is held back until the reader has produced the next one
        // (or confirmed the end): the store verifies the whole-object
        // checksum only after the last chunk, so the last bytes go out only
        // once the object is known good. A corrupt object therefore always
        // ends in a truncated response, never in a complete wrong one (hyper
        // stops polling the body once Content-Length bytes were sent).
        let mut held: Option<Bytes> = None;
        loop {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => {
                    if let Some(prev) = held.replace(chunk) {
                        if tx.send(Ok(prev)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    if let Some(last) = held.take() {
                        let _ = tx.send(Ok(last)).await;
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "aborting response: object failed verification");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Builds the response for a stored object: `ETag`, `Content-Length`,
/// `Accept-Ranges`, `If-None-Match` → 304, `Range` → 206/416, and a body that
/// streams from the store verifying checksums (a mismatch aborts the stream, so
/// a client never receives bad bytes as a complete response).
pub async fn serve_object(
    object: Object,
    req_headers: &HeaderMap,
    content_type: &str,
    opts: Serve,
) -> Result<Response, ApiError> {
    let len = object.meta().len;
    let file_backed = object.meta().is_file_backed();
    let tag = etag(object.meta());
    if let Some(inm) = req_headers.get(header::IF_NONE_MATCH) {
        if inm.as_bytes() == tag.as_bytes() || inm.as_bytes() == b"*" {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            r.headers_mut().insert(header::ETAG, tag);
            return Ok(r);
        }
    }
    let range = parse_range(
        req_headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        RangeRequest::Unsatisfiable => {
            let mut r = ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable")
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", len)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let body = if opts.head {
        Body::empty()
    } else {
        let unverified = if len > opts.verify_max {
            match object.file_slice() {
                Some(slice) => {
                    let file = slice.file.try_clone().map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("open blob: {e}"))
                    })?;
                    let on_disk = file.metadata().map(|m| m.len()).unwrap_or(0);
                    if on_disk != slice.offset + slice.len {
                        return Err(ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "blob file has the wrong length",
                        ));
                    }
                    Some((file, slice.offset))
                }
                None => None,
            }
        } else {
            None
        };
        if let Some((file, base)) = unverified {
            let file = std::sync::Arc::new(file);
            let stream = file_stream(file.clone(), base + start, base + end);
            let mut resp = finish(
                Body::from_stream(stream),
                status,
                content_type,
                tag,
                start,
                end,
                len,
            )?;
            resp.extensions_mut().insert(ZeroCopyFile {
                file,
                offset: base + start,
                len: end - start,
            });
            return Ok(resp);
        }
        if let Some(bytes) = object.verified_bytes() {
            // A small object the store has already checked (from its read
            // cache, or verified when it was opened): no second hash, no copy.
            let part = bytes.slice(
                usize::try_from(start)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len())
                    ..usize::try_from(end).unwrap_or(usize::MAX).min(bytes.len()),
            );
            return finish(Body::from(part), status, content_type, tag, start, end, len);
        }
        let mut reader = if status == StatusCode::OK {
            object.reader()
        } else {
            object.range_reader(start..end)?
        };
        if file_backed {
            Body::from_stream(read_ahead(reader))
        } else {
            // Inline (small) objects: one verified chunk, sent as a full body
            // (no stream machinery; hyper writes headers and body together).
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Body::from(chunk),
                Ok(None) => Body::empty(),
                Err(e) => {
                    tracing::error!(error = %e, "refusing to serve: object failed verification");
                    return Err(ApiError::from_store(&e));
                }
            }
        }
    };
    finish(body, status, content_type, tag, start, end, len)
}

/// The response around `body` (`start..end` of an object of `len` bytes).
fn finish(
    body: Body,
    status: StatusCode,
    content_type: &str,
    tag: HeaderValue,
    start: u64,
    end: u64,
    len: u64,
) -> Result<Response, ApiError> {
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, tag)
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            start,
            end.saturating_sub(1),
            len
        )) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Partial(0, 5));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Partial(5, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Partial(7, 10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Partial(0, 10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Partial(8, 10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
    }
}
