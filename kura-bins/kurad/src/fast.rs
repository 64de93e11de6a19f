//! The HTTP/1.1 fast path for object reads and writes.
//!
//! Most of a build cache's traffic is plain HTTP/1.1 `GET`s and `PUT`s of
//! objects on keep-alive connections. Going through hyper, axum's router and
//! its middleware costs about as much CPU as the store read itself, so a new
//! connection starts here instead: this module reads request heads itself
//! (with `httparse`), answers `GET`/`HEAD` and `PUT` with a declared length of
//! the Gradle, Bazel, ccache and Nx mount points by calling the **same**
//! handler functions as the router, and writes the response itself: head and
//! small body in one `writev`, large unverified objects with `sendfile`
//! straight from the blob file. Bodies up to [`MAX_FAST_BODY`] are read whole
//! first; larger ones (and `Expect: 100-continue`) stream into the handler.
//!
//! Anything else — another method or route, a chunked body, a body over the
//! smallest route limit, `Upgrade`, HTTP/1.0, the h2c preface, a query string, percent-encoded or
//! unusual paths, a malformed head — hands the connection over to the
//! general stack (hyper + axum) *before any side effect*, replaying the bytes
//! already read, and the connection stays there. So the fast path only ever
//! answers requests whose handling it shares with the router; the tests
//! compare both paths response by response.
//!
//! Behaviour the general stack has and this one keeps: the request id, the
//! in-flight limit (503 with `Retry-After`), request metrics and the tracing
//! span, the header read timeout (which also closes idle keep-alive
//! connections), `Connection: close`, the `date` header and graceful shutdown
//! (an idle connection closes when the server stops; a request being served
//! is finished first).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::app::{self, AppState};
use crate::body::ZeroCopyFile;
use crate::keys::DEFAULT_NAMESPACE;

/// Longest request head the fast path reads before handing the connection
/// over (hyper then applies its own limits and errors).
pub const MAX_HEAD: usize = 16 * 1024;

/// Most header lines the fast path parses (more: hand-over).
const MAX_HEADERS: usize = 48;

/// Largest request body the fast path reads whole into memory before the
/// handler runs (a larger one streams into the handler as it reads).
/// Bodies are read only while holding an in-flight slot, so the memory they
/// take is bounded by `KURA_MAX_IN_FLIGHT` × this.
pub const MAX_FAST_BODY: u64 = 256 << 10;

/// Bytes asked of one `sendfile` call.
const SENDFILE_CHUNK: usize = 8 << 20;

/// How a connection left the fast path.
pub enum End {
    /// Closed (client gone, timeout, shutdown or `Connection: close`).
    Closed,
    /// The general stack must serve the rest; the bytes already read are
    /// replayed first.
    HandOff(Prefixed),
}

/// A route the fast path serves: the router's template (the metrics label)
/// and the handler's path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/cache/{key}`.
    Gradle {
        /// `{key}`.
        key: &'a str,
    },
    /// `/bazel/{kind}/{hash}`.
    Bazel {
        /// `{kind}`.
        kind: &'a str,
        /// `{hash}`.
        hash: &'a str,
    },
    /// `/ccache/{*path}`.
    Ccache {
        /// `{*path}`.
        path: &'a str,
    },
    /// `/v1/cache/{hash}` (GET only).
    Nx {
        /// `{hash}`.
        hash: &'a str,
    },
}

impl Route<'_> {
    /// The router's template of this route (under `/ns/{namespace}` when
    /// `namespaced`), used as the metrics label like the router's
    /// `MatchedPath`.
    pub fn template(&self, namespaced: bool) -> &'static str {
        match (self, namespaced) {
            (Route::Gradle { .. }, false) => "/cache/{key}",
            (Route::Gradle { .. }, true) => "/ns/{namespace}/cache/{key}",
            (Route::Bazel { .. }, false) => "/bazel/{kind}/{hash}",
            (Route::Bazel { .. }, true) => "/ns/{namespace}/bazel/{kind}/{hash}",
            (Route::Ccache { .. }, false) => "/ccache/{*path}",
            (Route::Ccache { .. }, true) => "/ns/{namespace}/ccache/{*path}",
            (Route::Nx { .. }, false) => "/v1/cache/{hash}",
            (Route::Nx { .. }, true) => "/ns/{namespace}/v1/cache/{hash}",
        }
    }
}

/// Splits a request target into `(namespace, route)` when it is one the fast
/// path serves exactly as the router would; `None` means "hand over".
///
/// Conservative by design: a query, a fragment, `%`, `//`, an empty or
/// trailing segment, or any other route is `None`, even where the router
/// would also answer, so the two can never disagree on what a path means.
pub fn parse_target(target: &str) -> Option<(Option<&str>, Route<'_>)> {
    if !target.starts_with('/')
        || target.contains("//")
        || target
            .bytes()
            .any(|b| matches!(b, b'?' | b'#' | b'%') || !b.is_ascii_graphic())
    {
        return None;
    }
    let (ns, rest) = match target.strip_prefix("/ns/") {
        Some(after) => {
            let slash = after.find('/')?;
            let (ns, rest) = after.split_at(slash);
            (Some(ns), rest)
        }
        None => (None, target),
    };
    if ns.is_some_and(str::is_empty) {
        return None;
    }
    let single = |s: &'static str| {
        rest.strip_prefix(s)
            .filter(|k| !k.is_empty() && !k.contains('/'))
    };
    let route = if let Some(key) = single("/cache/") {
        Route::Gradle { key }
    } else if let Some(hash) = single("/v1/cache/") {
        Route::Nx { hash }
    } else if let Some(kh) = rest.strip_prefix("/bazel/") {
        let (kind, hash) = kh.split_once('/')?;
        if kind.is_empty() || hash.is_empty() || hash.contains('/') {
            return None;
        }
        Route::Bazel { kind, hash }
    } else if let Some(path) = rest.strip_prefix("/ccache/") {
        if path.is_empty() || path.ends_with('/') {
            return None;
        }
        Route::Ccache { path }
    } else {
        return None;
    };
    Some((ns, route))
}

/// The methods the fast path answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Head,
    /// With the body's declared length.
    Put(u64),
}

/// What the fast path decided about one parsed request head.
struct Accepted {
    head_len: usize,
    verb: Verb,
    close: bool,
    /// `Expect: 100-continue` (PUT only).
    expect: bool,
    target: (usize, usize),
    headers: HeaderMap,
}

/// What the fast path makes of the bytes at the start of a connection (or
/// after the previous request): for tests and fuzzing of the head parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inspect {
    /// More bytes are needed.
    Incomplete,
    /// The connection would go to the general stack.
    HandOff,
    /// The fast path would answer it.
    Serve {
        /// `GET`, `HEAD` or `PUT`.
        method: &'static str,
        /// Bytes of the request head.
        head_len: usize,
        /// Declared body length (`PUT`).
        body_len: u64,
        /// Whether the connection closes after the response.
        close: bool,
    },
}

/// Runs the fast path's request-head parser over `buf` (never panics).
pub fn inspect(buf: &[u8]) -> Inspect {
    match accept(buf) {
        Ok(None) => Inspect::Incomplete,
        Err(()) => Inspect::HandOff,
        Ok(Some(a)) => Inspect::Serve {
            method: match a.verb {
                Verb::Get => "GET",
                Verb::Head => "HEAD",
                Verb::Put(_) => "PUT",
            },
            head_len: a.head_len,
            body_len: match a.verb {
                Verb::Put(n) => n,
                Verb::Get | Verb::Head => 0,
            },
            close: a.close,
        },
    }
}

/// Parses the buffered bytes: `Ok(None)` when the head is incomplete,
/// `Err(())` when the connection must be handed over.
fn accept(buf: &[u8]) -> Result<Option<Accepted>, ()> {
    // The h2c preface (and anything that is not a request line we know)
    // goes to the general stack, which speaks every protocol on the port.
    if buf.starts_with(b"PRI ") || b"PRI ".starts_with(buf) {
        return Err(());
    }
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(())
            } else {
                Ok(None)
            };
        }
        Err(_) => return Err(()),
    };
    let method = req.method.ok_or(())?;
    if !matches!(method, "GET" | "HEAD" | "PUT") || req.version != Some(1) {
        return Err(());
    }
    let path = req.path.ok_or(())?;
    let Some((_, route)) = parse_target(path) else {
        return Err(());
    };
    if method == "HEAD" && matches!(route, Route::Nx { .. }) {
        // The router answers HEAD on GET-only routes by running the GET
        // handler and dropping the body: rare, left to it.
        return Err(());
    }
    let mut close = false;
    let mut expect = false;
    let mut length: Option<u64> = None;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ())?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| ())?;
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(())?;
            if length.replace(n).is_some() {
                return Err(());
            }
        } else if name == header::EXPECT {
            if !value.as_bytes().eq_ignore_ascii_case(b"100-continue") || expect {
                return Err(());
            }
            expect = true;
        } else if name == header::TRANSFER_ENCODING || name == header::UPGRADE {
            return Err(());
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    return Err(());
                }
            }
        }
        headers.append(name, value);
    }
    let verb = match (method, length) {
        ("GET", None | Some(0)) if !expect => Verb::Get,
        ("HEAD", None | Some(0)) if !expect => Verb::Head,
        // PUTs must declare their length (chunked ones go to the general
        // stack); limits are checked against the configuration by `serve`.
        ("PUT", Some(n)) => Verb::Put(n),
        _ => return Err(()),
    };
    // Where the target sits in the buffer, to borrow it again from the
    // frozen head after the parser's borrows end.
    let start = path.as_ptr() as usize - buf.as_ptr() as usize;
    Ok(Some(Accepted {
        head_len,
        verb,
        close,
        expect,
        target: (start, start + path.len()),
        headers,
    }))
}

/// A TCP connection whose first bytes were already read: they are replayed
/// before the socket's (for the hand-over to hyper).
pub struct Prefixed {
    prefix: Bytes,
    tcp: TcpStream,
}

impl Prefixed {
    /// A connection nothing was read from yet.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            prefix: Bytes::new(),
            tcp,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serves a fresh connection until it closes or must be handed over.
/// `stop` turns true when the server shuts down.
pub async fn serve(
    state: &Arc<AppState>,
    mut tcp: TcpStream,
    header_timeout: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> End {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // Read until one request head is complete.
        let deadline = tokio::time::Instant::now() + header_timeout;
        let accepted = loop {
            if !buf.is_empty() {
                match accept(&buf) {
                    Ok(Some(a)) => break a,
                    Ok(None) => {}
                    Err(()) => return hand_off(state, buf, tcp),
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            let idle = buf.is_empty();
            tokio::select! {
                read = tcp.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(_) => {}
                },
                () = tokio::time::sleep_until(deadline) => return End::Closed,
                _ = stop.wait_for(|s| *s), if idle => return End::Closed,
            }
        };
        if let Verb::Put(n) = accepted.verb {
            if n > app::fast_put_limit(&state.config) {
                // The general stack answers 413 before reading it.
                return hand_off(state, buf, tcp);
            }
        }
        // The in-flight slot is taken before a body is read, as on the
        // general stack: bodies in memory are bounded by the limit.
        let (guard, admitted) = state.enter();
        let mut accepted = accepted;
        let put_len = match accepted.verb {
            Verb::Put(n) => Some(n),
            Verb::Get | Verb::Head => None,
        };
        // Small bodies without `Expect` are read whole first; others stream
        // into the handler while it runs.
        let buffered = put_len.filter(|&n| admitted && n <= MAX_FAST_BODY && !accepted.expect);
        if let Some(n) = buffered {
            let want = accepted.head_len + usize::try_from(n).unwrap_or(usize::MAX);
            buf.reserve(want.saturating_sub(buf.len()));
            while buf.len() < want {
                // A body that stops arriving is cut like the general
                // stack's stall timeout; a short body is never stored.
                let read =
                    tokio::time::timeout(state.config.body_timeout, tcp.read_buf(&mut buf)).await;
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return End::Closed,
                }
            }
        }
        let head = buf.split_to(accepted.head_len).freeze();
        let target = head
            .get(accepted.target.0..accepted.target.1)
            .and_then(|t| std::str::from_utf8(t).ok());
        let Some((ns, route)) = target.and_then(parse_target) else {
            // Cannot happen (accept checked it); close rather than guess.
            return End::Closed;
        };
        let is_head = accepted.verb == Verb::Head;
        let (resp, unread, told_to_send, broken) = match (put_len, buffered) {
            (Some(_), Some(n)) => {
                let body = Body::from(buf.split_to(usize::try_from(n).unwrap_or(0)).freeze());
                (
                    answer(state, ns, route, &accepted, body, true).await,
                    0,
                    true,
                    false,
                )
            }
            (Some(n), None) if admitted => {
                let mut pump = Pump {
                    remaining: n,
                    told_to_send: !accepted.expect,
                    broken: false,
                };
                let resp = pump
                    .run(state, &mut tcp, &mut buf, |body| {
                        answer(state, ns, route, &accepted, body, true)
                    })
                    .await;
                (resp, pump.remaining, pump.told_to_send, pump.broken)
            }
            // Over the in-flight limit: 503, body left unread.
            (Some(n), None) => (
                answer(state, ns, route, &accepted, Body::empty(), false).await,
                n,
                !accepted.expect,
                false,
            ),
            (None, _) => (
                answer(state, ns, route, &accepted, Body::empty(), admitted).await,
                0,
                true,
                false,
            ),
        };
        // A body the handler did not read is drained after the response
        // (the client is sending it), unless the client is still waiting
        // for `100 Continue` or the stream broke: then the connection closes.
        accepted.close |= broken || (unread > 0 && (!told_to_send || !admitted));
        let close = accepted.close;
        let written = write_response(state, &mut tcp, resp, is_head, close).await;
        let drained = written.is_ok() && !close && drain(state, &mut tcp, &mut buf, unread).await;
        drop(guard);
        if close || !drained {
            let _ = tcp.shutdown().await;
            return End::Closed;
        }
    }
}

/// Feeds a request body from the socket to the handler while it runs.
struct Pump {
    /// Body bytes not yet taken from the connection.
    remaining: u64,
    /// Whether the client may send the body (no `Expect`, or `100
    /// Continue` was sent).
    told_to_send: bool,
    /// The body stream failed (client gone, stalled or sent less).
    broken: bool,
}

impl Pump {
    /// Runs `handler` with a body streamed from the connection: chunks are
    /// read only as the handler asks for them (one queued at most), and
    /// `100 Continue` goes out when it first asks, as hyper does. Bytes
    /// after the body stay in `buf` for the next request.
    async fn run<F, Fut>(
        &mut self,
        state: &AppState,
        tcp: &mut TcpStream,
        buf: &mut BytesMut,
        handler: F,
    ) -> Response
    where
        F: FnOnce(Body) -> Fut,
        Fut: std::future::Future<Output = Response>,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
        let asked = Arc::new(tokio::sync::Notify::new());
        let stream =
            futures_util::stream::unfold((rx, Some(asked.clone())), |(mut rx, first)| async move {
                if let Some(asked) = first {
                    asked.notify_one();
                }
                rx.recv().await.map(|item| (item, (rx, None)))
            });
        let handler = handler(Body::from_stream(stream));
        let timeout = state.config.body_timeout;
        let pump = async {
            // Owned by the pump: when the body is complete the channel
            // closes and the handler's stream ends.
            let tx = tx;
            if !self.told_to_send {
                asked.notified().await;
                tcp.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                self.told_to_send = true;
            }
            while self.remaining > 0 {
                if buf.is_empty() {
                    buf.reserve(64 << 10);
                    match tokio::time::timeout(timeout, tcp.read_buf(buf)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        other => {
                            tracing::debug!(?other, remaining = self.remaining, "request body cut");
                            self.broken = true;
                            let _ = tx
                                .send(Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "request body ended early or stalled",
                                )))
                                .await;
                            return Ok(());
                        }
                    }
                }
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let chunk = buf.split_to(take).freeze();
                self.remaining -= take as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    // The handler dropped the body: the rest is drained later.
                    return Ok(());
                }
            }
            Ok::<(), io::Error>(())
        };
        let mut failed = false;
        let resp = {
            tokio::pin!(handler);
            tokio::pin!(pump);
            let mut pumping = true;
            loop {
                tokio::select! {
                    resp = &mut handler => break resp,
                    done = &mut pump, if pumping => {
                        pumping = false;
                        failed = done.is_err();
                    }
                }
            }
        };
        // A write of `100 Continue` that failed: the connection is gone.
        self.broken |= failed;
        resp
    }
}

/// Reads and discards the `unread` rest of a request body the handler did
/// not need; `false` when the connection cannot be reused.
async fn drain(state: &AppState, tcp: &mut TcpStream, buf: &mut BytesMut, mut unread: u64) -> bool {
    while unread > 0 {
        if buf.is_empty() {
            buf.reserve(64 << 10);
            match tokio::time::timeout(state.config.body_timeout, tcp.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return false,
            }
        }
        let take = usize::try_from(unread).unwrap_or(usize::MAX).min(buf.len());
        let _ = buf.split_to(take);
        unread -= take as u64;
    }
    true
}

fn hand_off(state: &AppState, buf: BytesMut, tcp: TcpStream) -> End {
    state.metrics.fast_handoffs.inc();
    End::HandOff(Prefixed {
        prefix: buf.freeze(),
        tcp,
    })
}

/// Answers one accepted request, exactly as the router's middleware and
/// handlers would (request id, span, metrics).
async fn answer(
    state: &Arc<AppState>,
    ns: Option<&str>,
    route: Route<'_>,
    req: &Accepted,
    body: Body,
    admitted: bool,
) -> Response {
    let method = match req.verb {
        Verb::Get => Method::GET,
        Verb::Head => Method::HEAD,
        Verb::Put(_) => Method::PUT,
    };
    let head = req.verb == Verb::Head;
    let template = route.template(ns.is_some());
    let observed = state.observe(&req.headers, &method, template);
    let resp = if admitted {
        let ns = ns.unwrap_or(DEFAULT_NAMESPACE);
        let headers = &req.headers;
        let put = matches!(req.verb, Verb::Put(_));
        let work = async {
            match (route, put) {
                (Route::Gradle { key }, false) => {
                    app::gradle_read(state, ns, key, head, headers).await
                }
                (Route::Gradle { key }, true) => {
                    app::gradle_write(state, ns, key, headers, body).await
                }
                (Route::Bazel { kind, hash }, false) => {
                    app::bazel_read(state, ns, kind, hash, head, headers).await
                }
                (Route::Bazel { kind, hash }, true) => {
                    app::bazel_write(state, ns, kind, hash, headers, body).await
                }
                (Route::Ccache { path }, false) => {
                    app::ccache_read(state, ns, path, head, headers).await
                }
                (Route::Ccache { path }, true) => {
                    app::ccache_put(state, ns, path, headers, body).await
                }
                (Route::Nx { hash }, false) => app::nx_read(state, ns, hash, headers).await,
                (Route::Nx { hash }, true) => app::nx_write(state, ns, hash, headers, body).await,
            }
        };
        tracing::Instrument::instrument(work, observed.span.clone()).await
    } else {
        app::overloaded()
    };
    state.metrics.fast_requests.inc();
    observed.finish(state, resp, &method, template)
}

/// Serialises a response the way hyper does for HTTP/1.1: status line,
/// the headers, `content-length` from an exact body size when missing
/// (chunked otherwise), `connection: close` when the client asked, and
/// `date`; no body for `HEAD`, 1xx, 204 and 304.
async fn write_response(
    state: &AppState,
    tcp: &mut TcpStream,
    resp: Response,
    head_req: bool,
    close: bool,
) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let no_body_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let bodiless = head_req || no_body_status;
    let zero_copy = if bodiless {
        None
    } else {
        parts.extensions.get::<ZeroCopyFile>().cloned()
    };
    let exact = http_body::Body::size_hint(&body).exact();
    let has_length = parts.headers.contains_key(header::CONTENT_LENGTH);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // The router sets `content-length` from an exact body size (also for
    // HEAD, where it then drops the body); hyper frames the rest.
    let chunked = if has_length {
        false
    } else if head_req {
        if let Some(n) = exact {
            push_length(&mut out, n);
        }
        false
    } else if no_body_status {
        false
    } else if let Some(n) = exact {
        push_length(&mut out, n);
        false
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        true
    };
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        http_date(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");

    if bodiless {
        return tcp.write_all(&out).await;
    }
    if let Some(zc) = zero_copy {
        drop(body);
        tcp.write_all(&out).await?;
        return send_file(state, tcp, &zc).await;
    }
    let mut frames = body.into_data_stream();
    let mut pending = Some(out);
    while let Some(frame) = frames.next().await {
        let data = frame.map_err(io::Error::other)?;
        if data.is_empty() {
            continue;
        }
        let mut head = pending.take().unwrap_or_default();
        if chunked {
            head.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            write_all2(tcp, &head, &data).await?;
            tcp.write_all(b"\r\n").await?;
        } else {
            write_all2(tcp, &head, &data).await?;
        }
    }
    let mut tail = pending.take().unwrap_or_default();
    if chunked {
        tail.extend_from_slice(b"0\r\n\r\n");
    }
    if !tail.is_empty() {
        tcp.write_all(&tail).await?;
    }
    Ok(())
}

fn push_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes `a` then `b` with as few `writev` calls as the socket allows.
async fn write_all2(tcp: &mut TcpStream, a: &[u8], b: &[u8]) -> io::Result<()> {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = tcp
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = a.get(from_a..).unwrap_or_default();
        b = b.get(n - from_a..).unwrap_or_default();
    }
    tcp.write_all(b).await
}

/// Sends a blob file range with `sendfile(2)`: the bytes go from the page
/// cache to the socket without passing through this process.
async fn send_file(state: &AppState, tcp: &TcpStream, zc: &ZeroCopyFile) -> io::Result<()> {
    // Ask the kernel to start reading the range now (a hint; errors ignored).
    let _ = rustix::fs::fadvise(
        &*zc.file,
        zc.offset,
        std::num::NonZeroU64::new(zc.len),
        rustix::fs::Advice::WillNeed,
    );
    let mut offset = zc.offset;
    let end = zc.offset + zc.len;
    while offset < end {
        let want = usize::try_from(end - offset)
            .unwrap_or(SENDFILE_CHUNK)
            .min(SENDFILE_CHUNK);
        tcp.writable().await?;
        let sent = tcp.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(tcp, &*zc.file, Some(&mut offset), want).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob file ended before its recorded length",
                ));
            }
            Ok(n) => {
                state.metrics.sendfile_bytes.inc_by(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends the current time as an IMF-fixdate (`Thu, 26 Nov 2026 08:43:24
/// GMT`), formatted once per second per thread.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("/cache/abc"),
            Some((None, Route::Gradle { key: "abc" }))
        );
        assert_eq!(
            parse_target("/ns/android/cache/abc"),
            Some((Some("android"), Route::Gradle { key: "abc" }))
        );
        assert_eq!(
            parse_target("/bazel/cas/00ff"),
            Some((
                None,
                Route::Bazel {
                    kind: "cas",
                    hash: "00ff"
                }
            ))
        );
        assert_eq!(
            parse_target("/ccache/70/814"),
            Some((None, Route::Ccache { path: "70/814" }))
        );
        assert_eq!(
            parse_target("/v1/cache/h"),
            Some((None, Route::Nx { hash: "h" }))
        );
        for bad in [
            "/cache/",
            "/cache/a/b",
            "/cache/a?x=1",
            "/cache/a%2f",
            "//cache/a",
            "/ns//cache/a",
            "/ns/x",
            "/bazel/cas",
            "/bazel/cas/",
            "/bazel/cas/a/b",
            "/ccache/",
            "/ccache/a/",
            "/v8/artifacts/x",
            "/up",
            "cache/a",
            "/cache/a b",
        ] {
            assert_eq!(parse_target(bad), None, "{bad}");
        }
    }

    /// The route parts put back together give the target again.
    fn rebuild(ns: Option<&str>, route: Route<'_>) -> String {
        let prefix = ns.map(|n| format!("/ns/{n}")).unwrap_or_default();
        match route {
            Route::Gradle { key } => format!("{prefix}/cache/{key}"),
            Route::Bazel { kind, hash } => format!("{prefix}/bazel/{kind}/{hash}"),
            Route::Ccache { path } => format!("{prefix}/ccache/{path}"),
            Route::Nx { hash } => format!("{prefix}/v1/cache/{hash}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn targets_round_trip(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("ns".to_owned()),
                    proptest::strategy::Just("cache".to_owned()),
                    proptest::strategy::Just("bazel".to_owned()),
                    proptest::strategy::Just("ccache".to_owned()),
                    proptest::strategy::Just("v1".to_owned()),
                    "[a-z0-9.%?#!_-]{0,6}",
                ],
                0..7,
            ),
            lead in proptest::bool::ANY,
        ) {
            let target = format!("{}{}", if lead { "/" } else { "" }, parts.join("/"));
            if let Some((ns, route)) = parse_target(&target) {
                proptest::prop_assert_eq!(rebuild(ns, route), target.clone());
                proptest::prop_assert!(!target.contains("//"));
                proptest::prop_assert!(!target.contains(['?', '#', '%']));
            }
        }

        #[test]
        fn heads_never_panic_and_stay_in_bounds(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            prefix in proptest::prop_oneof![
                proptest::strategy::Just(&b"GET /cache/k HTTP/1.1\r\n"[..]),
                proptest::strategy::Just(&b"PUT /ccache/a/b HTTP/1.1\r\ncontent-length: 4\r\n"[..]),
                proptest::strategy::Just(&b""[..]),
            ],
        ) {
            let buf = [prefix, &bytes].concat();
            if let Inspect::Serve { head_len, method, body_len, .. } = inspect(&buf) {
                proptest::prop_assert!(head_len <= buf.len());
                proptest::prop_assert!(method == "PUT" || body_len == 0);
            }
        }
    }

    #[test]
    fn accept_rules() {
        let ok = accept(b"GET /cache/k HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(ok.verb == Verb::Get && !ok.close);
        let put = accept(b"PUT /cache/k HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(put.verb, Verb::Put(3));
        let big = accept(
            b"PUT /cache/k HTTP/1.1\r\nContent-Length: 2000000\r\nExpect: 100-Continue\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(big.verb == Verb::Put(2_000_000) && big.expect);
        assert!(
            accept(b"GET /cache/k HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
        let c = accept(b"HEAD /cache/k HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(c.verb == Verb::Head && c.close);
        for bad in [
            &b"PUT /cache/k HTTP/1.1\r\n\r\n"[..],
            b"PUT /cache/k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"PUT /cache/k HTTP/1.1\r\nContent-Length: 1\r\nExpect: 200-ok\r\n\r\n",
            b"GET /cache/k HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"PUT /cache/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /cache/k HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"DELETE /ccache/k HTTP/1.1\r\n\r\n",
            b"GET /cache/k HTTP/1.0\r\n\r\n",
            b"GET /cache/k HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /cache/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /cache/k HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /cache/k HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"HEAD /v1/cache/k HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"PR",
            b"GET /up HTTP/1.1\r\n\r\n",
            b"GET /cache/k HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(accept(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = [
            b"GET /cache/k HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_HEAD],
        ]
        .concat();
        assert!(accept(&long).is_err());
    }
}
