//! The peer client: one HTTP/2 connection per peer address, TLS with the account
//! client config (SNI and verification under the peer Service name, whatever
//! address is dialled), every call guarded by a stall watchdog.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kura_store::{BodyStream, Key, Namespace, ObjectReader, ReplicatedRecord};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::error::{Error, Result, WireError};
use crate::limiter::TokenBucket;
use crate::tls::TlsState;
use crate::transfer::{
    PeerBody, Progress, empty, full, incoming_stream, object_body, read_limited, with_watchdog,
};
use crate::wire::{
    self, BucketRequest, BucketResponse, ErrorBody, ListResponse, PushOutcome, PushReply,
    RECORD_HEADER, Status, SummaryRequest, SummaryResponse,
};

/// Client-side timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Bound on TCP connect plus TLS and HTTP/2 handshakes.
    pub connect_timeout: Duration,
    /// A call fails once no byte has moved for this long (no total timeout).
    pub stall_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// A client for one peer address (`host:port`).
#[derive(Debug)]
pub struct PeerClient {
    addr: String,
    tls: Arc<TlsState>,
    options: ClientOptions,
    /// The cached connection and its generation (dial number, from 1).
    conn: tokio::sync::Mutex<Option<(u64, SendRequest<PeerBody>)>>,
    dials: AtomicU64,
    announce: Option<http::HeaderValue>,
}

impl PeerClient {
    /// A client dialling `addr` (`host:port` or `ip:port`).
    pub fn new(addr: impl Into<String>, tls: Arc<TlsState>, options: ClientOptions) -> Self {
        Self {
            addr: addr.into(),
            tls,
            options,
            conn: tokio::sync::Mutex::new(None),
            dials: AtomicU64::new(0),
            announce: None,
        }
    }

    /// Sends `node_url` (our own peer URL) with every status probe, so the peer
    /// learns about us and dials us back. An empty or invalid value is ignored.
    pub fn with_announce(mut self, node_url: &str) -> Self {
        self.announce = (!node_url.is_empty())
            .then(|| http::HeaderValue::from_str(node_url).ok())
            .flatten();
        self
    }

    /// The dialled address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Connects now (TCP, TLS, HTTP/2), replacing any cached connection.
    pub async fn connect(&self) -> Result<()> {
        let s = self.dial().await?;
        let generation = self.dials.fetch_add(1, Ordering::Relaxed) + 1;
        *self.conn.lock().await = Some((generation, s));
        Ok(())
    }

    async fn dial(&self) -> Result<SendRequest<PeerBody>> {
        let addr = self.addr.clone();
        let cfg = self.tls.client();
        let fut = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|source| Error::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let connector = tokio_rustls::TlsConnector::from(cfg.config.clone());
            let tls = connector
                .connect(cfg.server_name.clone(), tcp)
                .await
                .map_err(|source| Error::Handshake {
                    addr: addr.clone(),
                    source,
                })?;
            let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|source| Error::Http {
                    addr: addr.clone(),
                    source,
                })?;
            let a = addr.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(peer = %a, error = %e, "peer connection closed");
                }
            });
            Ok(send)
        };
        match tokio::time::timeout(self.options.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::ConnectTimeout {
                addr: self.addr.clone(),
                after: self.options.connect_timeout,
            }),
        }
    }

    async fn sender(&self) -> Result<(u64, SendRequest<PeerBody>)> {
        let mut guard = self.conn.lock().await;
        if let Some((generation, s)) = guard.as_ref() {
            if !s.is_closed() {
                return Ok((*generation, s.clone()));
            }
        }
        let s = self.dial().await?;
        let generation = self.dials.fetch_add(1, Ordering::Relaxed) + 1;
        *guard = Some((generation, s.clone()));
        Ok((generation, s))
    }

    /// Sends on the cached connection (dialling if needed), recording its
    /// generation in `used` for [`Self::watched`].
    async fn send(
        &self,
        req: Request<PeerBody>,
        used: &AtomicU64,
    ) -> Result<http::Response<Incoming>> {
        let (generation, mut s) = self.sender().await?;
        used.store(generation, Ordering::Relaxed);
        s.ready().await.map_err(|source| Error::Http {
            addr: self.addr.clone(),
            source,
        })?;
        let r = s.send_request(req).await;
        if r.is_err() {
            self.forget(generation).await;
        }
        r.map_err(|source| Error::Http {
            addr: self.addr.clone(),
            source,
        })
    }

    /// Drops the cached connection if it is still generation `generation`.
    async fn forget(&self, generation: u64) {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|(g, _)| *g == generation) {
            *guard = None;
        }
    }

    /// Runs `fut` under the stall watchdog. A stalled call abandons the connection
    /// it used: a black-holed connection (a peer whose host vanished, lost NAT or
    /// conntrack state) never recovers, and reusing it would stall every later
    /// call until HTTP/2 keep-alive gives up.
    async fn watched<T>(
        &self,
        progress: &Progress,
        used: &AtomicU64,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let r = with_watchdog(progress, self.options.stall_timeout, fut).await;
        if matches!(r, Err(Error::Stalled(_))) {
            let generation = used.load(Ordering::Relaxed);
            if generation != 0 {
                tracing::debug!(peer = %self.addr, "call stalled; dropping its connection");
                self.forget(generation).await;
            }
        }
        r
    }

    fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: PeerBody,
    ) -> Result<Request<PeerBody>> {
        let name = match &self.tls.client().server_name {
            rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
            other => format!("{other:?}"),
        };
        Request::builder()
            .method(method)
            .uri(format!("https://{name}{path_and_query}"))
            .body(body)
            .map_err(|e| {
                Error::Wire(WireError::Invalid {
                    what: "request",
                    reason: e.to_string(),
                })
            })
    }

    async fn error_of(&self, resp: http::Response<Incoming>) -> Error {
        let status = resp.status().as_u16();
        let message =
            match read_limited(resp.into_body(), 64 * 1024, self.options.stall_timeout).await {
                Ok(b) => wire::parse_json::<ErrorBody>("error", &b)
                    .map(|e| e.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&b).into_owned()),
                Err(e) => e.to_string(),
            };
        Error::Status {
            addr: self.addr.clone(),
            status,
            message,
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        what: &'static str,
        req: Request<PeerBody>,
    ) -> Result<T> {
        let progress = Progress::default();
        let used = AtomicU64::new(0);
        self.watched(&progress, &used, async {
            let resp = self.send(req, &used).await?;
            if resp.status() != StatusCode::OK {
                return Err(self.error_of(resp).await);
            }
            let b = read_limited(
                resp.into_body(),
                wire::MAX_JSON_RESPONSE,
                self.options.stall_timeout,
            )
            .await
            .map_err(|e| Error::io(format!("reading {what} from {}", self.addr), e))?;
            Ok(wire::parse_json::<T>(what, &b)?)
        })
        .await
    }

    /// `GET /_internal/status`.
    pub async fn status(&self) -> Result<Status> {
        let mut req = self.request(Method::GET, "/_internal/status", empty())?;
        if let Some(v) = &self.announce {
            req.headers_mut().insert(wire::NODE_URL_HEADER, v.clone());
        }
        self.json("status", req).await
    }

    /// Pushes a record; for a put, `body` streams the object through `limiters`.
    /// The stall watchdog aborts the push if no byte moves for the stall timeout.
    pub async fn push(
        &self,
        record: &ReplicatedRecord,
        body: Option<ObjectReader>,
        limiters: Vec<Arc<TokenBucket>>,
        progress: Arc<Progress>,
    ) -> Result<PushOutcome> {
        let len = match record {
            ReplicatedRecord::Put { len, .. } => Some(*len),
            _ => None,
        };
        let has_body = body.is_some();
        let b = match body {
            Some(r) => object_body(r, limiters, progress.clone()),
            None => empty(),
        };
        let mut req = self.request(Method::POST, "/_internal/replicate", b)?;
        let hv = http::HeaderValue::from_str(&wire::encode_record(record)).map_err(|e| {
            Error::Wire(WireError::Invalid {
                what: "record header",
                reason: e.to_string(),
            })
        })?;
        req.headers_mut().insert(RECORD_HEADER, hv);
        if let (Some(len), true) = (len, has_body) {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        }
        // The receiver answers at once and sends heartbeats until the outcome: every
        // frame of either direction is progress, so a long fsync on the receiver is
        // not a stall, and a dead link still is.
        let used = AtomicU64::new(0);
        self.watched(&progress, &used, async {
            let resp = self.send(req, &used).await?;
            if resp.status() != StatusCode::OK {
                return Err(self.error_of(resp).await);
            }
            let mut body = resp.into_body();
            let mut b = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|source| Error::Http {
                    addr: self.addr.clone(),
                    source,
                })?;
                progress.touch();
                if let Ok(d) = frame.into_data() {
                    if b.len() + d.len() > 64 * 1024 {
                        return Err(Error::Wire(WireError::TooLarge {
                            what: "push outcome",
                            limit: 64 * 1024,
                        }));
                    }
                    b.extend_from_slice(&d);
                }
            }
            match wire::parse_push_reply(&b)? {
                PushReply::Outcome(o) => Ok(o),
                PushReply::Failure(f) => Err(Error::Status {
                    addr: self.addr.clone(),
                    status: f.status,
                    message: f.message,
                }),
            }
        })
        .await
    }

    /// `POST /_internal/repair?node=N`: asks the peer to pull from us (node `N`) soon.
    pub async fn request_repair(&self, node: u64) -> Result<()> {
        let r = self.request(
            Method::POST,
            &format!("/_internal/repair?node={node}"),
            empty(),
        )?;
        let progress = Progress::default();
        let used = AtomicU64::new(0);
        self.watched(&progress, &used, async {
            let resp = self.send(r, &used).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(self.error_of(resp).await);
            }
            Ok(())
        })
        .await
    }

    /// `POST /_internal/summary`.
    pub async fn summary(&self, req: &SummaryRequest) -> Result<SummaryResponse> {
        let body = serde_json::to_vec(req).unwrap_or_default();
        let r = self.request(Method::POST, "/_internal/summary", full(body))?;
        self.json("summary", r).await
    }

    /// `POST /_internal/buckets`.
    pub async fn buckets(&self, req: &BucketRequest) -> Result<BucketResponse> {
        let body = serde_json::to_vec(req).unwrap_or_default();
        let r = self.request(Method::POST, "/_internal/buckets", full(body))?;
        self.json("buckets", r).await
    }

    /// `GET /_internal/list`.
    pub async fn list(
        &self,
        ns: &Namespace,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<ListResponse> {
        let mut q = format!("/_internal/list?namespace={ns}&limit={limit}");
        if let Some(a) = after {
            q.push_str("&after=");
            q.push_str(&wire::encode_key(a));
        }
        let r = self.request(Method::GET, &q, empty())?;
        self.json("list", r).await
    }

    /// `GET /_internal/object`: the record and a byte stream (each frame within the
    /// stall timeout, through `limiters`), or `None` when the peer no longer has it.
    pub async fn fetch(
        &self,
        ns: &Namespace,
        key: &Key,
        limiters: Vec<Arc<TokenBucket>>,
        progress: Arc<Progress>,
    ) -> Result<Option<(ReplicatedRecord, BodyStream)>> {
        let q = format!(
            "/_internal/object?namespace={ns}&key={}",
            wire::encode_key(key)
        );
        let req = self.request(Method::GET, &q, empty())?;
        let used = AtomicU64::new(0);
        let resp = self
            .watched(&progress, &used, async { self.send(req, &used).await })
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.error_of(resp).await),
        }
        let record = match resp.headers().get(RECORD_HEADER) {
            Some(v) => wire::decode_record(v.as_bytes())?,
            None => return Err(Error::Wire(WireError::Missing(RECORD_HEADER))),
        };
        let stream = incoming_stream(
            resp.into_body(),
            self.options.stall_timeout,
            limiters,
            progress,
        );
        Ok(Some((record, stream)))
    }
}
