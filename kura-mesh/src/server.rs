//! The peer API server: HTTP/2 over mTLS, `/_internal/*` only.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kura_store::summary::{DEPTH, FANOUT, LEAVES};
use kura_store::{Account, Key, NamespaceId, ObjectId, ReplicatedRecord, Store};
use tokio::net::TcpListener;

use crate::error::WireError;
use crate::limiter::TokenBucket;
use crate::tls::TlsState;
use crate::transfer::{PeerBody, Progress, full, incoming_stream, object_body, read_limited};
use crate::wire::{
    self, BucketRequest, BucketResponse, ErrorBody, ListResponse, ListedObject, NamespaceRoot,
    NamespaceTombstone, PUSH_HEARTBEAT, PushFailure, PushOutcome, PushReply, RECORD_HEADER, Status,
    SummaryRequest, SummaryResponse, WireEntry,
};

/// How long a peer may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the receiving side.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Records applied from pushes.
    pub pushes_applied: AtomicU64,
    /// Pushes answered "not wanted" without reading the body.
    pub pushes_stale: AtomicU64,
    /// Pushes refused (bad record, foreign account, too large, clock skew, …).
    pub pushes_refused: AtomicU64,
    /// Body bytes received by pushes.
    pub bytes_received: AtomicU64,
    /// Object bytes served to fetches.
    pub bytes_served: AtomicU64,
    /// TLS handshakes that failed (e.g. a certificate of another account).
    pub handshake_failures: AtomicU64,
}

/// The peer API over one store.
#[derive(Debug)]
pub struct PeerService {
    store: Store,
    account: Account,
    region: String,
    node_url: String,
    max_object_bytes: u64,
    stall: Duration,
    limiter: Arc<TokenBucket>,
    /// Counters.
    pub counters: ServerCounters,
    repair_requests: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// Peer addresses (`host:port`) announced by nodes that probed us, and when.
    announced: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// At most this many announced peers are remembered.
const MAX_ANNOUNCED: usize = 1024;

type Resp = Response<PeerBody>;

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    json(
        status,
        &ErrorBody {
            message: message.into(),
        },
    )
}

fn bad(e: WireError) -> Resp {
    error(StatusCode::BAD_REQUEST, e.to_string())
}

fn store_error(e: &kura_store::Error) -> Resp {
    error(store_status(e), e.to_string())
}

fn store_status(e: &kura_store::Error) -> StatusCode {
    use kura_store::Error as E;
    match e {
        E::InvalidKey { .. } | E::InvalidDigest { .. } => StatusCode::BAD_REQUEST,
        E::LengthMismatch { .. } | E::DigestMismatch { .. } | E::Body { .. } => {
            StatusCode::BAD_REQUEST
        }
        E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
        E::ClockSkew { .. } => StatusCode::CONFLICT,
        E::MissingReference { .. } => StatusCode::FAILED_DEPENDENCY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl PeerService {
    /// A service for `store`, answering for `account`. Pushed objects above
    /// `max_object_bytes` are refused with 413 before any byte is read; a push or
    /// fetch body idle for `stall` is cut; `limiter` caps bytes served and received.
    pub fn new(
        store: Store,
        account: Account,
        region: impl Into<String>,
        node_url: impl Into<String>,
        max_object_bytes: u64,
        stall: Duration,
        limiter: Arc<TokenBucket>,
    ) -> Self {
        Self {
            store,
            account,
            region: region.into(),
            node_url: node_url.into(),
            max_object_bytes,
            stall,
            limiter,
            counters: ServerCounters::default(),
            repair_requests: Default::default(),
            announced: Default::default(),
        }
    }

    /// This node's status (also what `GET /_internal/status` answers).
    pub fn status(&self) -> Result<Status, kura_store::Error> {
        let mut namespaces = Vec::new();
        for ns in self.store.summarized_namespaces()? {
            if ns.account != self.account {
                continue;
            }
            namespaces.push(NamespaceRoot {
                namespace: ns.namespace.as_str().to_owned(),
                root: wire::hash_hex(&self.store.summary_node(&ns, 0, 0)?),
            });
        }
        let tombstones = self
            .store
            .namespace_tombstones()?
            .into_iter()
            .filter(|(ns, _)| ns.account == self.account)
            .map(|(ns, v)| NamespaceTombstone {
                namespace: ns.namespace.as_str().to_owned(),
                version: v.into(),
            })
            .collect();
        Ok(Status {
            node_id: self.store.node().0,
            account: self.account.as_str().to_owned(),
            region: self.region.clone(),
            node_url: self.node_url.clone(),
            hlc: self.store.now().0,
            last_seq: self.store.stats().last_seq,
            namespaces,
            tombstones,
        })
    }

    /// Node ids of peers that asked us to pull from them (they dropped a backlog
    /// for us), drained.
    pub fn take_repair_requests(&self) -> Vec<u64> {
        std::mem::take(
            &mut *self
                .repair_requests
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
        .into_iter()
        .collect()
    }

    /// Records the prober's announced peer URL, if any; always true.
    fn announce(&self, req: &Request<Incoming>) -> bool {
        let Some(url) = req
            .headers()
            .get(wire::NODE_URL_HEADER)
            .and_then(|v| v.to_str().ok())
        else {
            return true;
        };
        match crate::mesh::PeerUrl::parse(url) {
            Ok(u) => {
                let mut m = self.announced.lock().unwrap_or_else(|e| e.into_inner());
                if m.len() >= MAX_ANNOUNCED && !m.contains_key(&u.addr()) {
                    if let Some(oldest) = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
                    {
                        m.remove(&oldest);
                    }
                }
                m.insert(u.addr(), std::time::Instant::now());
            }
            Err(e) => tracing::debug!(url, error = %e, "ignoring an invalid announced peer URL"),
        }
        true
    }

    /// Peer addresses (`host:port`) announced by nodes that probed us within
    /// `within` (older ones are forgotten).
    pub fn announced_peers(&self, within: Duration) -> Vec<String> {
        let mut m = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, t| t.elapsed() <= within);
        m.keys().cloned().collect()
    }

    /// Handles one request. Paths outside `/_internal/` are 404.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::GET, "/_internal/status") => match self.status() {
                // Only a client with a leaf of our account gets here (mTLS).
                Ok(s) if self.announce(&req) => json(StatusCode::OK, &s),
                Ok(s) => json(StatusCode::OK, &s),
                Err(e) => store_error(&e),
            },
            (Method::POST, "/_internal/replicate") => self.replicate(req).await,
            (Method::POST, "/_internal/summary") => self.summary(req).await,
            (Method::POST, "/_internal/buckets") => self.buckets(req).await,
            (Method::GET, "/_internal/object") => self.object(&req).await,
            (Method::GET, "/_internal/list") => self.list(&req),
            (Method::POST, "/_internal/repair") => {
                match wire::query_param(req.uri().query(), "node").map(str::parse::<u64>) {
                    Some(Ok(node)) => {
                        let mut q = self
                            .repair_requests
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        if q.len() < 4096 {
                            q.insert(node);
                        }
                        json(StatusCode::ACCEPTED, &PushOutcome { applied: true })
                    }
                    _ => bad(WireError::Missing("node")),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn ns(&self, name: &str) -> Result<NamespaceId, WireError> {
        Ok(NamespaceId::new(
            self.account.clone(),
            wire::parse_namespace(name)?,
        ))
    }

    async fn replicate(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let refuse = |r: Resp| {
            self.counters.pushes_refused.fetch_add(1, Ordering::Relaxed);
            r
        };
        let record = match req.headers().get(RECORD_HEADER) {
            None => return refuse(bad(WireError::Missing(RECORD_HEADER))),
            Some(v) => match wire::decode_record(v.as_bytes()) {
                Ok(r) => r,
                Err(e) => return refuse(bad(e)),
            },
        };
        let account = match &record {
            ReplicatedRecord::Put { id, .. } | ReplicatedRecord::Delete { id, .. } => &id.account,
            ReplicatedRecord::DeleteNamespace { namespace, .. } => &namespace.account,
        };
        if *account != self.account {
            return refuse(error(
                StatusCode::FORBIDDEN,
                format!(
                    "record of account {account} pushed to account {}",
                    self.account
                ),
            ));
        }
        if let ReplicatedRecord::Put { len, .. } = &record {
            if *len > self.max_object_bytes {
                return refuse(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "object of {len} bytes exceeds the limit of {}",
                        self.max_object_bytes
                    ),
                ));
            }
        }
        // Stale pushes are answered before a byte of the body is read.
        match self.store.wants(&record) {
            Ok(true) => {}
            Ok(false) => {
                self.counters.pushes_stale.fetch_add(1, Ordering::Relaxed);
                return json(StatusCode::OK, &PushOutcome { applied: false });
            }
            Err(e) => return refuse(store_error(&e)),
        }
        let ReplicatedRecord::Put { len, .. } = &record else {
            return match self.store.apply_replicated(record, None).await {
                Ok(applied) => json(StatusCode::OK, &self.applied(applied, 0)),
                Err(e) => refuse(store_error(&e)),
            };
        };
        let len = *len;
        let body = incoming_stream(
            req.into_body(),
            self.stall,
            vec![self.limiter.clone()],
            Arc::new(Progress::default()),
        );
        // Answer 200 now and stream heartbeats while the body is received and made
        // durable, then the outcome: the sender's stall watchdog must not mistake our
        // fsync of a large object for a dead link (see `PushReply`).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        let beat = (self.stall / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let this = self.clone();
        tokio::spawn(async move {
            let apply = this.store.apply_replicated(record, Some(body));
            tokio::pin!(apply);
            let mut tick = tokio::time::interval(beat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let result = loop {
                tokio::select! {
                    r = &mut apply => break r,
                    _ = tick.tick() => {
                        // Never block the store on a slow reader: a full channel
                        // already holds heartbeats.
                        let _ = tx.try_send(bytes::Bytes::from_static(PUSH_HEARTBEAT));
                    }
                }
            };
            let reply = match result {
                Ok(applied) => PushReply::Outcome(this.applied(applied, len)),
                Err(e) => {
                    this.counters.pushes_refused.fetch_add(1, Ordering::Relaxed);
                    PushReply::Failure(PushFailure {
                        status: store_status(&e).as_u16(),
                        message: e.to_string(),
                    })
                }
            };
            let _ = tx
                .send(bytes::Bytes::from(
                    serde_json::to_vec(&reply).unwrap_or_default(),
                ))
                .await;
        });
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|b| b.map(|b| Ok::<_, std::io::Error>(hyper::body::Frame::data(b))))
        });
        let mut r = Response::new(http_body_util::BodyExt::boxed_unsync(
            http_body_util::StreamBody::new(stream),
        ));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }

    /// Counts an applied (or stale) push of `len` body bytes.
    fn applied(&self, applied: kura_store::Applied, len: u64) -> PushOutcome {
        let applied = applied == kura_store::Applied::Applied;
        if applied {
            self.counters.pushes_applied.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes_received
                .fetch_add(len, Ordering::Relaxed);
        } else {
            self.counters.pushes_stale.fetch_add(1, Ordering::Relaxed);
        }
        PushOutcome { applied }
    }

    async fn summary(&self, req: Request<Incoming>) -> Resp {
        let body = match read_limited(req.into_body(), wire::MAX_JSON_REQUEST, self.stall).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let r: SummaryRequest = match wire::parse_json("summary request", &body) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        if r.nodes.len() > wire::MAX_SUMMARY_NODES {
            return bad(WireError::TooLarge {
                what: "summary request",
                limit: wire::MAX_SUMMARY_NODES as u64,
            });
        }
        let ns = match self.ns(&r.namespace) {
            Ok(n) => n,
            Err(e) => return bad(e),
        };
        let mut children = Vec::with_capacity(r.nodes.len());
        for (level, index) in r.nodes {
            if level >= DEPTH || u64::from(index) >= (FANOUT as u64).pow(u32::from(level)) {
                return bad(WireError::Invalid {
                    what: "summary node",
                    reason: format!("({level}, {index}) is not an inner node"),
                });
            }
            match self.store.summary_children(&ns, level, index) {
                Ok(c) => children.push(c.iter().map(wire::hash_hex).collect()),
                Err(e) => return store_error(&e),
            }
        }
        json(StatusCode::OK, &SummaryResponse { children })
    }

    async fn buckets(&self, req: Request<Incoming>) -> Resp {
        let body = match read_limited(req.into_body(), wire::MAX_JSON_REQUEST, self.stall).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let r: BucketRequest = match wire::parse_json("bucket request", &body) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        if r.leaves.len() > wire::MAX_BUCKET_LEAVES {
            return bad(WireError::TooLarge {
                what: "bucket request",
                limit: wire::MAX_BUCKET_LEAVES as u64,
            });
        }
        let ns = match self.ns(&r.namespace) {
            Ok(n) => n,
            Err(e) => return bad(e),
        };
        let mut buckets = Vec::with_capacity(r.leaves.len());
        for leaf in r.leaves {
            if leaf >= LEAVES {
                return bad(WireError::Invalid {
                    what: "leaf",
                    reason: format!("{leaf} ≥ {LEAVES}"),
                });
            }
            match self.store.summary_bucket(&ns, leaf) {
                Ok(es) => buckets.push(es.iter().map(WireEntry::from_entry).collect()),
                Err(e) => return store_error(&e),
            }
        }
        json(StatusCode::OK, &BucketResponse { buckets })
    }

    fn id_from_query(&self, req: &Request<Incoming>) -> Result<ObjectId, WireError> {
        let q = req.uri().query();
        let ns =
            self.ns(wire::query_param(q, "namespace").ok_or(WireError::Missing("namespace"))?)?;
        let key = wire::decode_key(wire::query_param(q, "key").ok_or(WireError::Missing("key"))?)?;
        Ok(ObjectId::new(ns.account, ns.namespace, key))
    }

    async fn object(&self, req: &Request<Incoming>) -> Resp {
        let id = match self.id_from_query(req) {
            Ok(i) => i,
            Err(e) => return bad(e),
        };
        let obj = match self.store.get(&id).await {
            Ok(Some(o)) => o,
            Ok(None) => return error(StatusCode::NOT_FOUND, "not found"),
            Err(e) => return store_error(&e),
        };
        let m = obj.meta();
        let record = m.put_record();
        self.counters
            .bytes_served
            .fetch_add(m.len, Ordering::Relaxed);
        let hv = match http::HeaderValue::from_str(&wire::encode_record(&record)) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let body = object_body(
            obj.reader(),
            vec![self.limiter.clone()],
            Arc::new(Progress::default()),
        );
        let mut r = Response::new(body);
        r.headers_mut().insert(RECORD_HEADER, hv);
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(m.len));
        r
    }

    fn list(&self, req: &Request<Incoming>) -> Resp {
        let q = req.uri().query();
        let ns = match wire::query_param(q, "namespace")
            .ok_or(WireError::Missing("namespace"))
            .and_then(|n| self.ns(n))
        {
            Ok(n) => n,
            Err(e) => return bad(e),
        };
        let after: Option<Key> = match wire::query_param(q, "after").map(wire::decode_key) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => return bad(e),
        };
        let limit = match wire::query_param(q, "limit").map(str::parse::<usize>) {
            None => 256,
            Some(Ok(l)) => l.clamp(1, wire::MAX_LIST_LIMIT),
            Some(Err(_)) => {
                return bad(WireError::Invalid {
                    what: "limit",
                    reason: "not a number".into(),
                });
            }
        };
        match self.store.list(&ns, after.as_ref(), limit) {
            Ok(metas) => {
                let next_after = if metas.len() == limit {
                    metas.last().map(|m| wire::encode_key(&m.id.key))
                } else {
                    None
                };
                let objects = metas
                    .iter()
                    .map(|m| ListedObject {
                        key: m.id.key.as_str().to_owned(),
                        len: m.len,
                        digest: m.digest.to_hex(),
                        version: m.version.into(),
                    })
                    .collect();
                json(
                    StatusCode::OK,
                    &ListResponse {
                        objects,
                        next_after,
                    },
                )
            }
            Err(e) => store_error(&e),
        }
    }
}

/// Serves the peer API on `listener` (TLS with the current server config of `tls`,
/// client certificates required) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<TlsState>,
    service: Arc<PeerService>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
        let service = service.clone();
        conns.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    service
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%remote, error = %e, "peer TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%remote, "peer TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| {
                let s = service.clone();
                async move { Ok::<_, Infallible>(s.handle(req).await) }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "peer connection ended");
            }
        });
    }
    conns.shutdown().await;
}
