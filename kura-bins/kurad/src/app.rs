//! The router: every client protocol over one store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use bytes::Bytes;
use kura_store::{Digest, Key, Namespace, ObjectId, ObjectRef, PutRequest, Store, body_from_bytes};

use crate::ac;
use crate::auth::{Denied, Tokens};
use crate::body::{self, LimitedBody, Serve};
use crate::config::Config;
use crate::error::{ApiError, Style};
use crate::keys::{self, DEFAULT_NAMESPACE};
use crate::metrics::{ArtifactLabels, Metrics, TokenLabels};

mod webdav;

/// Everything a request handler needs.
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Validated configuration.
    pub config: Config,
    /// Tokens, when authentication is on.
    pub tokens: Option<Tokens>,
    /// Metrics.
    pub metrics: Metrics,
    /// Module multipart uploads in progress.
    pub uploads: crate::module::Uploads,
    /// The replication mesh, once started (`/up`, `/status/rollout`, metrics).
    pub mesh: std::sync::OnceLock<kura_mesh::Mesh>,
    in_flight: AtomicUsize,
    id_prefix: u64,
    next_id: AtomicU64,
}

/// Header carrying the request id (echoed when the client sends a sane one).
pub const REQUEST_ID: &str = "x-request-id";

impl AppState {
    /// Wires the state.
    pub fn new(store: Store, config: Config, tokens: Option<Tokens>) -> Arc<Self> {
        let tenant = if config.tenant_configured {
            config.account.as_str().to_owned()
        } else {
            String::new()
        };
        let metrics = Metrics::new(&config.region, &tenant);
        Arc::new(Self {
            store,
            config,
            tokens,
            metrics,
            uploads: crate::module::Uploads::default(),
            mesh: std::sync::OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            // Distinguishes ids across restarts without a random number generator.
            id_prefix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() & 0xffff_ffff),
            next_id: AtomicU64::new(1),
        })
    }
}

type Shared = Arc<AppState>;
type Params = HashMap<String, String>;

/// The protocol an object belongs to: its key prefix in the store, metrics
/// label, body limit, content type and error style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gradle,
    BazelAc,
    BazelCas,
    Ccache,
    Turbo,
    Nx,
    XcodeCas,
    KeyValue,
    Metro,
    Sccache,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Gradle => "gradle",
            Self::BazelAc => "ac",
            Self::BazelCas => "cas",
            Self::Ccache => "ccache",
            Self::Turbo => "turbo",
            Self::Nx => "nx",
            Self::XcodeCas => "xcode",
            Self::KeyValue => "kv",
            Self::Metro => "metro",
            Self::Sccache => "sccache",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Gradle => "gradle",
            Self::BazelAc => "bazel_ac",
            Self::BazelCas => "bazel_cas",
            Self::Ccache => "ccache",
            Self::Turbo => "turbo",
            Self::Nx => "nx",
            Self::XcodeCas => "xcode_cas",
            Self::KeyValue => "keyvalue",
            Self::Metro => "metro",
            Self::Sccache => "sccache",
        }
    }

    fn style(self) -> Style {
        match self {
            Self::Nx => Style::Text,
            Self::Turbo => Style::Turbo,
            _ => Style::Json,
        }
    }

    fn limit(self, c: &Config) -> u64 {
        match self {
            Self::Gradle => c.limits.gradle,
            Self::XcodeCas => c.limits.xcode_cas,
            Self::KeyValue => c.limits.keyvalue,
            _ => c.limits.object,
        }
    }
}

/// An object addressed by a request.
struct Target {
    kind: Kind,
    ns: Namespace,
    id: ObjectId,
}

impl Target {
    fn new(state: &AppState, kind: Kind, ns: &str, key: &str) -> Result<Self, ApiError> {
        let ns = keys::namespace(ns).map_err(|e| e.styled(kind.style()))?;
        let key: Key = keys::store_key(kind.prefix(), key).map_err(|e| e.styled(kind.style()))?;
        let id = ObjectId::new(state.config.account.clone(), ns.clone(), key);
        Ok(Self { kind, ns, id })
    }
}

fn ns_param(p: &Params) -> &str {
    p.get("namespace").map_or(DEFAULT_NAMESPACE, String::as_str)
}

fn param<'a>(p: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    p.get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("missing path parameter {name}")))
}

/// Checks the token for `ns`, counting the request per token.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    ns: &Namespace,
    write: bool,
    style: Style,
) -> Result<(), ApiError> {
    let Some(tokens) = &state.tokens else {
        return Ok(());
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match tokens.check(auth, ns.as_str(), write) {
        Ok(grant) => {
            state
                .metrics
                .token_requests
                .get_or_create(&TokenLabels {
                    token: grant.label.clone(),
                    op: if write { "write" } else { "read" },
                })
                .inc();
            Ok(())
        }
        Err(Denied::Unauthenticated) => {
            let mut e =
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or unknown token").styled(style);
            if style == Style::Text {
                e.message = "Unauthorized".into();
            }
            Err(e)
        }
        Err(Denied::Forbidden) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            if write {
                "this token may not write to this namespace"
            } else {
                "this token may not read this namespace"
            },
        )
        .styled(style)),
    }
}

fn with_www_authenticate(mut resp: Response) -> Response {
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"kura\", Bearer realm=\"kura\""),
        );
    }
    resp
}

fn count(state: &AppState, kind: Kind, read: bool, result: &'static str, bytes: u64) {
    let labels = ArtifactLabels {
        kind: kind.label(),
        result,
    };
    let m = &state.metrics;
    if read {
        m.reads.get_or_create(&labels).inc();
        m.read_bytes.get_or_create(&labels).inc_by(bytes);
    } else {
        m.writes.get_or_create(&labels).inc();
        m.write_bytes.get_or_create(&labels).inc_by(bytes);
    }
}

/// GET/HEAD of one object.
async fn read_object(
    state: &AppState,
    t: &Target,
    headers: &HeaderMap,
    head: bool,
    content_type: &str,
) -> Result<Response, ApiError> {
    read_object_decorated(state, t, headers, head, content_type, |_, _| {}).await
}

/// [`read_object`], letting the caller add headers derived from the metadata of
/// the very object being served (not from a second lookup that could see a
/// newer write).
async fn read_object_decorated(
    state: &AppState,
    t: &Target,
    headers: &HeaderMap,
    head: bool,
    content_type: &str,
    decorate: impl FnOnce(&kura_store::ObjectMeta, &mut HeaderMap),
) -> Result<Response, ApiError> {
    authorize(state, headers, &t.ns, false, t.kind.style())?;
    let style = t.kind.style();
    let Some(object) = state
        .store
        .get(&t.id)
        .await
        .map_err(|e| ApiError::from(e).styled(style))?
    else {
        count(state, t.kind, true, "miss", 0);
        return Err(not_found(t.kind));
    };
    count(state, t.kind, true, "hit", object.meta().len);
    // Headers derived from this very object's metadata, taken before the
    // object moves into the response body.
    let mut extra = HeaderMap::new();
    decorate(object.meta(), &mut extra);
    let mut resp = body::serve_object(
        object,
        headers,
        content_type,
        Serve {
            head,
            verify_max: state.config.verify_reads_max,
        },
    )
    .await
    .map_err(|e| e.styled(style))?;
    resp.headers_mut().extend(extra);
    Ok(resp)
}

fn not_found(kind: Kind) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found").styled(kind.style())
}

/// How a PUT treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Keep it and answer success without reading the body (content-addressed
    /// or write-once keys: a cheap idempotent re-PUT).
    Keep,
    /// Replace it (last writer wins).
    Replace,
    /// Refuse with 409 (Nx).
    Conflict,
}

/// The result of a PUT.
enum Written {
    Created,
    Replaced,
    AlreadyThere,
}

struct PutOptions<'a> {
    existing: Existing,
    content_type: &'a str,
    expected_digest: Option<Digest>,
}

impl<'a> PutOptions<'a> {
    fn new(existing: Existing, content_type: &'a str) -> Self {
        Self {
            existing,
            content_type,
            expected_digest: None,
        }
    }
}

/// A PUT that replaces any existing object (ccache, sccache): 201 when the
/// key was new, 204 when it replaced one.
async fn replace_object(
    state: &AppState,
    t: &Target,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let w = write_object(
        state,
        t,
        headers,
        body,
        PutOptions::new(Existing::Replace, OCTET),
    )
    .await?;
    Ok(match w {
        Written::Created => StatusCode::CREATED,
        _ => StatusCode::NO_CONTENT,
    }
    .into_response())
}

/// PUT of one object: auth, 413 before reading when the declared length is
/// over the limit, streaming into the store (which rejects short, long and
/// mismatching bodies without a trace).
async fn write_object(
    state: &AppState,
    t: &Target,
    headers: &HeaderMap,
    body: Body,
    opts: PutOptions<'_>,
) -> Result<Written, ApiError> {
    let style = t.kind.style();
    authorize(state, headers, &t.ns, true, style)?;
    let limit = t.kind.limit(&state.config);
    let len = body::declared_length(headers).map_err(|e| e.styled(style))?;
    body::check_declared(len, limit).map_err(|e| e.styled(style))?;
    let existed = state
        .store
        .head(&t.id)
        .map_err(|e| ApiError::from(e).styled(style))?
        .is_some();
    if existed {
        match opts.existing {
            Existing::Keep => {
                count(state, t.kind, false, "exists", 0);
                return Ok(Written::AlreadyThere);
            }
            Existing::Conflict => {
                count(state, t.kind, false, "exists", 0);
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Cannot override an existing record",
                )
                .styled(style));
            }
            Existing::Replace => {}
        }
    }
    let mut req = PutRequest::new(t.id.clone()).with_content_type(opts.content_type);
    if let Some(n) = len {
        req = req.with_len(n);
    }
    if let Some(d) = opts.expected_digest {
        req = req.with_digest(d);
    }
    let stream = LimitedBody::new(body, limit, state.config.body_timeout);
    match state.store.put(req, stream).await {
        Ok(meta) => {
            count(state, t.kind, false, "ok", meta.len);
            Ok(if existed {
                Written::Replaced
            } else {
                Written::Created
            })
        }
        Err(e) => {
            count(state, t.kind, false, "error", 0);
            Err(body::write_error(e).styled(style))
        }
    }
}

/// Reads a whole (small, limited) body into memory.
async fn collect(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    style: Style,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let len = body::declared_length(headers).map_err(|e| e.styled(style))?;
    body::check_declared(len, limit).map_err(|e| e.styled(style))?;
    let mut stream = LimitedBody::new(body, limit, state.config.body_timeout);
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let status = if e.get_ref().is_some_and(|s| s.is::<body::OverLimit>()) {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, e.to_string()).styled(style)
        })?;
        buf.extend_from_slice(&chunk);
    }
    if let Some(n) = len {
        if n != buf.len() as u64 {
            return Err(ApiError::bad_request("body shorter than Content-Length").styled(style));
        }
    }
    Ok(Bytes::from(buf))
}

const OCTET: &str = "application/octet-stream";

// ---------------------------------------------------------------- Gradle

async fn gradle_get(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let key = p.get("key").map_or("", String::as_str);
    gradle_read(&s, ns_param(&p), key, method == Method::HEAD, &headers).await
}

/// GET/HEAD of a Gradle entry (shared by the router and the fast path).
pub(crate) async fn gradle_read(
    s: &AppState,
    ns: &str,
    key: &str,
    head: bool,
    headers: &HeaderMap,
) -> Response {
    let r = async {
        let t = Target::new(s, Kind::Gradle, ns, keys::segment(key)?)?;
        read_object(s, &t, headers, head, OCTET).await
    };
    respond(r.await)
}

async fn gradle_put(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = p.get("key").map_or("", String::as_str);
    gradle_write(&s, ns_param(&p), key, &headers, body).await
}

/// PUT of a Gradle entry (shared by the router and the fast path).
pub(crate) async fn gradle_write(
    s: &AppState,
    ns: &str,
    key: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let t = Target::new(s, Kind::Gradle, ns, keys::segment(key)?)?;
        let ct = content_type(headers);
        write_object(s, &t, headers, body, PutOptions::new(Existing::Keep, &ct)).await?;
        Ok(StatusCode::CREATED.into_response())
    };
    respond(r.await)
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 256)
        .unwrap_or(OCTET)
        .to_owned()
}

fn respond(r: Result<Response, ApiError>) -> Response {
    with_www_authenticate(r.unwrap_or_else(IntoResponse::into_response))
}

/// [`respond`] for sibling modules.
pub(crate) fn respond_public(r: Result<Response, ApiError>) -> Response {
    respond(r)
}

/// Token check with JSON error bodies, for sibling modules.
pub(crate) fn authorize_public(
    state: &AppState,
    headers: &HeaderMap,
    ns: &Namespace,
    write: bool,
) -> Result<(), ApiError> {
    authorize(state, headers, ns, write, Style::Json)
}

// ---------------------------------------------------------------- Bazel

/// SHA-256 of the empty blob: always present (Bazel never uploads it).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn bazel_kind(kind: &str) -> Result<Kind, ApiError> {
    match kind {
        "ac" => Ok(Kind::BazelAc),
        "cas" => Ok(Kind::BazelCas),
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown Bazel cache kind {other:?}: expected ac or cas"),
        )),
    }
}

async fn bazel_get(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let kind = p.get("kind").map_or("", String::as_str);
    let hash = p.get("hash").map_or("", String::as_str);
    bazel_read(
        &s,
        ns_param(&p),
        kind,
        hash,
        method == Method::HEAD,
        &headers,
    )
    .await
}

/// GET/HEAD of a Bazel AC or CAS entry (shared by the router and the fast path).
pub(crate) async fn bazel_read(
    s: &AppState,
    ns: &str,
    kind: &str,
    hash: &str,
    head: bool,
    headers: &HeaderMap,
) -> Response {
    let r = async {
        let kind = bazel_kind(kind)?;
        let hash = keys::sha256_hex(hash)?;
        let t = Target::new(s, kind, ns, hash)?;
        if kind == Kind::BazelCas && hash == EMPTY_SHA256 {
            authorize(s, headers, &t.ns, false, Style::Json)?;
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, OCTET)], "").into_response());
        }
        if kind == Kind::BazelAc {
            // Never hand out an action result whose outputs are gone.
            if let Some(meta) = s.store.head(&t.id)? {
                for r in &meta.refs {
                    if s.store.head(&r.resolve(&s.config.account))?.is_none() {
                        count(s, kind, true, "miss", 0);
                        return Err(not_found(kind));
                    }
                }
            }
        }
        read_object(s, &t, headers, head, OCTET).await
    };
    respond(r.await)
}

async fn bazel_put(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let kind = p.get("kind").map_or("", String::as_str);
    let hash = p.get("hash").map_or("", String::as_str);
    bazel_write(&s, ns_param(&p), kind, hash, &headers, body).await
}

/// PUT of a Bazel AC or CAS entry (shared by the router and the fast path).
pub(crate) async fn bazel_write(
    s: &AppState,
    ns: &str,
    kind: &str,
    hash: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let kind = bazel_kind(kind)?;
        let hash = keys::sha256_hex(hash)?;
        let t = Target::new(s, kind, ns, hash)?;
        match kind {
            Kind::BazelCas => {
                let digest = Digest::from_hex(hash).map_err(ApiError::from)?;
                write_object(
                    s,
                    &t,
                    headers,
                    body,
                    PutOptions {
                        expected_digest: Some(digest),
                        ..PutOptions::new(Existing::Keep, OCTET)
                    },
                )
                .await?;
            }
            _ => {
                authorize(s, headers, &t.ns, true, Style::Json)?;
                let limit = Kind::BazelAc.limit(&s.config).min(64 << 20);
                let data = collect(s, headers, body, limit, Style::Json).await?;
                let digests = ac::action_result_digests(&data)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                let mut refs = Vec::new();
                for d in digests {
                    if d.size == 0 || d.hash == EMPTY_SHA256 {
                        continue;
                    }
                    let hex = keys::sha256_hex(&d.hash)?;
                    let key = keys::store_key(Kind::BazelCas.prefix(), hex)?;
                    let r = ObjectRef::new(t.ns.clone(), key);
                    if !refs.contains(&r) {
                        refs.push(r);
                    }
                }
                let req = PutRequest::new(t.id.clone())
                    .with_content_type(OCTET)
                    .with_len(data.len() as u64)
                    .with_refs(refs);
                let len = data.len() as u64;
                match s.store.put(req, body_from_bytes(data)).await {
                    Ok(_) => count(s, kind, false, "ok", len),
                    Err(e) => {
                        count(s, kind, false, "error", 0);
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(StatusCode::OK.into_response())
    };
    respond(r.await)
}

// ---------------------------------------------------------------- ccache

async fn ccache_any(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        if matches!(method, Method::GET | Method::HEAD) {
            let path = param(&p, "path")?;
            return Ok(ccache_read(&s, ns_param(&p), path, method == Method::HEAD, &headers).await);
        }
        let key = keys::ccache_key(param(&p, "path")?)?;
        let t = Target::new(&s, Kind::Ccache, ns_param(&p), &key)?;
        match method {
            Method::PUT => Ok(ccache_write(&s, ns_param(&p), &key, &headers, body).await),
            Method::DELETE => {
                authorize(&s, &headers, &t.ns, true, Style::Json)?;
                if s.store.delete(&t.id).await? {
                    Ok(StatusCode::NO_CONTENT.into_response())
                } else {
                    Err(not_found(Kind::Ccache))
                }
            }
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            )),
        }
    };
    respond(r.await)
}

/// GET/HEAD of a ccache entry, any layout (shared by the router and the fast
/// path).
pub(crate) async fn ccache_read(
    s: &AppState,
    ns: &str,
    path: &str,
    head: bool,
    headers: &HeaderMap,
) -> Response {
    let r = async {
        let key = keys::ccache_key(path)?;
        let t = Target::new(s, Kind::Ccache, ns, &key)?;
        read_object(s, &t, headers, head, OCTET).await
    };
    respond(r.await)
}

/// PUT of a ccache entry whose key was already joined from its path
/// (shared by the router and the fast path).
pub(crate) async fn ccache_write(
    s: &AppState,
    ns: &str,
    key: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let t = Target::new(s, Kind::Ccache, ns, key)?;
        replace_object(s, &t, headers, body).await
    };
    respond(r.await)
}

/// PUT of a ccache entry by request path, any layout (the fast path's entry).
pub(crate) async fn ccache_put(
    s: &AppState,
    ns: &str,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match keys::ccache_key(path) {
        Ok(key) => ccache_write(s, ns, &key, headers, body).await,
        Err(e) => respond(Err(e)),
    }
}

/// The body limit of PUTs on the fast path's routes: the smallest of the
/// limits that apply to them.
pub(crate) fn fast_put_limit(c: &Config) -> u64 {
    Kind::Gradle
        .limit(c)
        .min(Kind::Ccache.limit(c))
        .min(Kind::BazelCas.limit(c))
        .min(Kind::Nx.limit(c))
}

// ---------------------------------------------------------------- Turborepo

/// Turbo metadata is stored as parameters of the object's content type, so it
/// is written atomically with the object and replicates with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TurboMeta {
    /// `x-artifact-duration` (ms).
    pub duration: Option<u64>,
    /// `x-artifact-tag`, exactly as sent.
    pub tag: Option<String>,
    /// The team (`teamId` or `slug`).
    pub team: Option<String>,
}

fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'.' | b':')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'%') => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            Some(b) => {
                out.push(*b);
                i += 1;
            }
            None => break,
        }
    }
    String::from_utf8(out).ok()
}

impl TurboMeta {
    /// Encodes as `application/octet-stream; duration=…; tag=…; team=…`.
    pub fn to_content_type(&self) -> String {
        let mut ct = OCTET.to_owned();
        if let Some(d) = self.duration {
            ct.push_str(&format!("; duration={d}"));
        }
        if let Some(t) = &self.tag {
            ct.push_str(&format!("; tag={}", pct_encode(t)));
        }
        if let Some(t) = &self.team {
            ct.push_str(&format!("; team={}", pct_encode(t)));
        }
        ct
    }

    /// Decodes [`to_content_type`](Self::to_content_type)'s output; unknown or
    /// malformed parameters are ignored.
    pub fn from_content_type(ct: &str) -> Self {
        let mut m = Self::default();
        for part in ct.split(';').skip(1) {
            let Some((k, v)) = part.trim().split_once('=') else {
                continue;
            };
            match k {
                "duration" => m.duration = v.parse().ok(),
                "tag" => m.tag = pct_decode(v),
                "team" => m.team = pct_decode(v),
                _ => {}
            }
        }
        m
    }
}

fn turbo_team(q: &Params) -> Result<String, ApiError> {
    q.get("teamId")
        .or_else(|| q.get("slug"))
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .cloned()
        .ok_or_else(|| ApiError::bad_request("teamId or slug is required").styled(Style::Turbo))
}

async fn turbo_get(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let hash = keys::segment(param(&p, "hash")?).map_err(|e| e.styled(Style::Turbo))?;
        let t = Target::new(&s, Kind::Turbo, ns_param(&p), hash)?;
        let resp = read_object_decorated(
            &s,
            &t,
            &headers,
            method == Method::HEAD,
            OCTET,
            |meta, h| {
                let tm = TurboMeta::from_content_type(&meta.content_type);
                if let Some(d) = tm.duration {
                    h.insert("x-artifact-duration", HeaderValue::from(d));
                }
                if let Some(tag) = tm.tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
                    h.insert("x-artifact-tag", tag);
                }
            },
        )
        .await?;
        Ok(resp)
    };
    respond(r.await)
}

async fn turbo_put(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let hash = keys::segment(param(&p, "hash")?).map_err(|e| e.styled(Style::Turbo))?;
        let t = Target::new(&s, Kind::Turbo, ns_param(&p), hash)?;
        let team = turbo_team(&q)?;
        let header_str = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let meta = TurboMeta {
            duration: header_str("x-artifact-duration").and_then(|d| d.trim().parse().ok()),
            tag: header_str("x-artifact-tag").filter(|t| t.len() <= 1024),
            team: Some(team),
        };
        let ct = meta.to_content_type();
        write_object(
            &s,
            &t,
            &headers,
            body,
            PutOptions::new(Existing::Replace, &ct),
        )
        .await?;
        let url = format!("/v8/artifacts/{hash}");
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "urls": [url] })),
        )
            .into_response())
    };
    respond(r.await)
}

async fn turbo_query(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let ns = keys::namespace(ns_param(&p)).map_err(|e| e.styled(Style::Turbo))?;
        authorize(&s, &headers, &ns, false, Style::Turbo)?;
        let data = collect(&s, &headers, body, 1 << 20, Style::Turbo).await?;
        #[derive(serde::Deserialize)]
        struct Q {
            hashes: Vec<String>,
        }
        let q: Q = serde_json::from_slice(&data).map_err(|e| {
            ApiError::bad_request(format!("invalid body: {e}")).styled(Style::Turbo)
        })?;
        let mut out = serde_json::Map::new();
        for h in q.hashes.iter().take(10_000) {
            let found = match keys::segment(h) {
                Ok(_) => {
                    let t = Target::new(&s, Kind::Turbo, ns.as_str(), h)?;
                    s.store.head(&t.id)?
                }
                Err(_) => None,
            };
            let v = match found {
                Some(m) => {
                    let tm = TurboMeta::from_content_type(&m.content_type);
                    serde_json::json!({ "size": m.len, "taskDurationMs": tm.duration.unwrap_or(0), "tag": tm.tag })
                }
                None => serde_json::Value::Null,
            };
            out.insert(h.clone(), v);
        }
        Ok(axum::Json(serde_json::Value::Object(out)).into_response())
    };
    respond(r.await)
}

async fn turbo_events(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let data = collect(&s, &headers, body, 1 << 20, Style::Turbo).await?;
        serde_json::from_slice::<serde_json::Value>(&data).map_err(|e| {
            ApiError::bad_request(format!("invalid events: {e}")).styled(Style::Turbo)
        })?;
        Ok(axum::Json(serde_json::json!({})).into_response())
    };
    respond(r.await)
}

async fn turbo_status() -> Response {
    axum::Json(serde_json::json!({ "status": "enabled" })).into_response()
}

// ---------------------------------------------------------------- Nx

async fn nx_get(State(s): State<Shared>, Path(p): Path<Params>, headers: HeaderMap) -> Response {
    let hash = p.get("hash").map_or("", String::as_str);
    nx_read(&s, ns_param(&p), hash, &headers).await
}

/// GET of an Nx entry (shared by the router and the fast path).
pub(crate) async fn nx_read(s: &AppState, ns: &str, hash: &str, headers: &HeaderMap) -> Response {
    let r = async {
        let hash = keys::segment(hash).map_err(|e| e.styled(Style::Text))?;
        let t = Target::new(s, Kind::Nx, ns, hash)?;
        read_object(s, &t, headers, false, OCTET).await
    };
    respond(r.await)
}

async fn nx_put(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let hash = p.get("hash").map_or("", String::as_str);
    nx_write(&s, ns_param(&p), hash, &headers, body).await
}

/// PUT of an Nx entry (shared by the router and the fast path).
pub(crate) async fn nx_write(
    s: &AppState,
    ns: &str,
    hash: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let hash = keys::segment(hash).map_err(|e| e.styled(Style::Text))?;
        let t = Target::new(s, Kind::Nx, ns, hash)?;
        if !headers.contains_key(header::CONTENT_LENGTH) {
            authorize(s, headers, &t.ns, true, Style::Text)?;
            return Err(
                ApiError::new(StatusCode::LENGTH_REQUIRED, "Content-Length is required")
                    .styled(Style::Text),
            );
        }
        write_object(
            s,
            &t,
            headers,
            body,
            PutOptions::new(Existing::Conflict, OCTET),
        )
        .await?;
        Ok(StatusCode::OK.into_response())
    };
    respond(r.await)
}

// ---------------------------------------------------------------- Kura node API (compatibility)

/// `tenant_id` + `namespace_id` (or the legacy `account_handle` + `project_handle`).
pub(crate) fn compat_ns(s: &AppState, q: &Params) -> Result<Namespace, ApiError> {
    let tenant = q
        .get("tenant_id")
        .or_else(|| q.get("account_handle"))
        .ok_or_else(|| ApiError::bad_request("Missing tenant_id"))?;
    let ns = q
        .get("namespace_id")
        .or_else(|| q.get("project_handle"))
        .ok_or_else(|| ApiError::bad_request("Missing namespace_id"))?;
    if s.config.tenant_configured && tenant != s.config.account.as_str() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("tenant {tenant:?} is not served by this node"),
        ));
    }
    keys::namespace(ns)
}

async fn xcode_get(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        let t = Target::new(
            &s,
            Kind::XcodeCas,
            ns.as_str(),
            keys::segment(param(&p, "id")?)?,
        )?;
        read_object(&s, &t, &headers, method == Method::HEAD, OCTET).await
    };
    match r.await {
        // The reference answers a miss with an empty body.
        Err(e) if e.status == StatusCode::NOT_FOUND => StatusCode::NOT_FOUND.into_response(),
        other => respond(other),
    }
}

async fn xcode_post(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        let t = Target::new(
            &s,
            Kind::XcodeCas,
            ns.as_str(),
            keys::segment(param(&p, "id")?)?,
        )?;
        write_object(
            &s,
            &t,
            &headers,
            body,
            PutOptions::new(Existing::Keep, OCTET),
        )
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    respond(r.await)
}

async fn legacy_gradle_get(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        let t = Target::new(
            &s,
            Kind::Gradle,
            ns.as_str(),
            keys::segment(param(&p, "key")?)?,
        )?;
        read_object(&s, &t, &headers, method == Method::HEAD, OCTET).await
    };
    respond(r.await)
}

async fn legacy_gradle_put(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        let t = Target::new(
            &s,
            Kind::Gradle,
            ns.as_str(),
            keys::segment(param(&p, "key")?)?,
        )?;
        let ct = content_type(&headers);
        write_object(&s, &t, &headers, body, PutOptions::new(Existing::Keep, &ct)).await?;
        Ok(StatusCode::CREATED.into_response())
    };
    respond(r.await)
}

#[derive(serde::Deserialize, serde::Serialize)]
struct KeyValuePayload {
    cas_id: String,
    entries: Vec<KeyValueEntry>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct KeyValueEntry {
    value: String,
}

async fn keyvalue_put(
    State(s): State<Shared>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        authorize(&s, &headers, &ns, true, Style::Json)?;
        let data = collect(&s, &headers, body, s.config.limits.keyvalue, Style::Json).await?;
        let payload: KeyValuePayload = serde_json::from_slice(&data)
            .map_err(|_| ApiError::bad_request("Invalid key-value payload"))?;
        let key = keys::segment(&payload.cas_id)
            .map_err(|_| ApiError::bad_request("Invalid key-value payload"))?;
        let t = Target::new(&s, Kind::KeyValue, ns.as_str(), key)?;
        let stored = serde_json::to_vec(&payload)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let len = stored.len() as u64;
        let req = PutRequest::new(t.id.clone())
            .with_content_type("application/json")
            .with_len(len);
        s.store.put(req, body_from_bytes(stored)).await?;
        count(&s, Kind::KeyValue, false, "ok", len);
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    respond(r.await)
}

async fn keyvalue_get(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        let t = Target::new(
            &s,
            Kind::KeyValue,
            ns.as_str(),
            keys::segment(param(&p, "cas_id")?)?,
        )?;
        read_object(&s, &t, &headers, false, "application/json").await
    };
    respond(r.await)
}

async fn metro_get(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let t = Target::new(
            &s,
            Kind::Metro,
            DEFAULT_NAMESPACE,
            keys::segment(param(&p, "key")?)?,
        )?;
        read_object(&s, &t, &headers, method == Method::HEAD, OCTET).await
    };
    respond(r.await)
}

async fn metro_put(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let t = Target::new(
            &s,
            Kind::Metro,
            DEFAULT_NAMESPACE,
            keys::segment(param(&p, "key")?)?,
        )?;
        write_object(
            &s,
            &t,
            &headers,
            body,
            PutOptions::new(Existing::Keep, OCTET),
        )
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    respond(r.await)
}

async fn clean(State(s): State<Shared>, Query(q): Query<Params>, headers: HeaderMap) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        authorize(&s, &headers, &ns, true, Style::Json)?;
        let nsid = kura_store::NamespaceId::new(s.config.account.clone(), ns);
        s.store.delete_namespace(&nsid).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    respond(r.await)
}

// ---------------------------------------------------------------- health and metrics

async fn up(State(s): State<Shared>) -> Response {
    let c = &s.config;
    let mut v = serde_json::json!({
        "status": "ok",
        "tenant_id": if c.tenant_configured { c.account.as_str() } else { "" },
        "region": c.region,
        "node_url": c.node_url.clone().unwrap_or_default(),
    });
    let snap = s.mesh.get().map(kura_mesh::Mesh::snapshot);
    if let (Some(o), serde_json::Value::Object(m)) =
        (v.as_object_mut(), crate::mesh::up_fields(snap.as_ref()))
    {
        o.extend(m);
    }
    axum::Json(v).into_response()
}

async fn ready() -> Response {
    axum::Json(serde_json::json!({ "status": "ready" })).into_response()
}

async fn rollout(State(s): State<Shared>) -> Response {
    // A single node is always serving; a mesh node is `joining` until it has
    // caught up with every member once.
    let snap = s.mesh.get().map(kura_mesh::Mesh::snapshot);
    axum::Json(serde_json::json!({
        "ready": true,
        "state": crate::mesh::rollout_state(snap.as_ref()),
        "ring_members": snap.as_ref().map_or(1, |m| m.ring_members),
        "writer_lock_owned": true,
    }))
    .into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    if let Some(m) = s.mesh.get() {
        s.metrics.mesh.observe(&m.snapshot());
    }
    let text = s.metrics.render(&s.store.stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn internal_not_here() -> Response {
    // The peer API is served only on the peer listener, never here.
    ApiError::not_found().into_response()
}

// ---------------------------------------------------------------- middleware

async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let (_guard, admitted) = s.enter();
    let observed = s.observe(req.headers(), &method, &route);
    let resp = if !admitted {
        overloaded()
    } else {
        tracing::Instrument::instrument(next.run(req), observed.span.clone()).await
    };
    observed.finish(&s, resp, &method, &route)
}

/// One request being served (by the router or the fast path): its id,
/// tracing span and start time.
pub(crate) struct Observed {
    start: Instant,
    request_id: String,
    /// The `request` span the handler runs in.
    pub(crate) span: tracing::Span,
}

impl Observed {
    /// Adds `x-request-id`, logs the outcome at debug level and records the
    /// request metrics.
    pub(crate) fn finish(
        self,
        s: &AppState,
        mut resp: Response,
        method: &Method,
        route: &str,
    ) -> Response {
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        let status = resp.status().as_u16();
        let elapsed = self.start.elapsed();
        self.span.in_scope(|| {
            let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            tracing::debug!(status, elapsed_us, "request done");
        });
        s.metrics
            .record_request(route, method, status, elapsed.as_secs_f64());
        resp
    }
}

/// The 503 of a request over `KURA_MAX_IN_FLIGHT`.
pub(crate) fn overloaded() -> Response {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in flight; retry later",
    );
    e.retry_after = Some(1);
    e.into_response()
}

impl AppState {
    /// Starts the bookkeeping of one request: its id and span.
    pub(crate) fn observe(&self, headers: &HeaderMap, method: &Method, route: &str) -> Observed {
        let request_id = self.request_id(headers);
        let span =
            tracing::info_span!("request", id = %request_id, method = %method, route = %route);
        Observed {
            start: Instant::now(),
            request_id,
            span,
        }
    }

    /// The id of a request: the client's `x-request-id` when it is a sane
    /// token (1–128 visible ASCII characters), else a fresh one.
    pub(crate) fn request_id(&self, headers: &HeaderMap) -> String {
        headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(
                || {
                    format!(
                        "{:x}-{:x}",
                        self.id_prefix,
                        self.next_id.fetch_add(1, Ordering::Relaxed)
                    )
                },
                str::to_owned,
            )
    }
}

/// An in-flight request slot (HTTP and gRPC share them); released on drop.
pub(crate) struct InFlight<'a>(&'a AppState);

impl AppState {
    /// Takes an in-flight slot for one request (HTTP route or gRPC call) and
    /// says whether it is admitted: over `KURA_MAX_IN_FLIGHT` the caller must
    /// answer "overloaded" (HTTP 503 / gRPC `UNAVAILABLE`); the rejection is
    /// counted here.
    pub(crate) fn enter(&self) -> (InFlight<'_>, bool) {
        let current = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = InFlight(self);
        self.metrics
            .in_flight
            .set(i64::try_from(current).unwrap_or(i64::MAX));
        let admitted = current <= self.config.max_in_flight;
        if !admitted {
            self.metrics.rejected.inc();
        }
        (guard, admitted)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now = self
            .0
            .in_flight
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        self.0
            .metrics
            .in_flight
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

/// Mount points that exist both at the root (namespace `default`) and under
/// `/ns/{namespace}`.
fn mounts(prefix: &str) -> Router<Shared> {
    let p = |path: &str| format!("{prefix}{path}");
    Router::new()
        .route(&p("/cache/{key}"), get(gradle_get).put(gradle_put))
        .route(&p("/bazel/{kind}/{hash}"), get(bazel_get).put(bazel_put))
        .route(&p("/ccache/{*path}"), any(ccache_any))
        .route(&p("/v8/artifacts/status"), get(turbo_status))
        .route(&p("/v8/artifacts/events"), post(turbo_events))
        .route(&p("/v8/artifacts"), post(turbo_query))
        .route(&p("/v8/artifacts/{hash}"), get(turbo_get).put(turbo_put))
        .route(&p("/v1/cache/{hash}"), get(nx_get).put(nx_put))
        .route(&p("/sccache"), any(webdav::dav_any))
        .route(&p("/sccache/"), any(webdav::dav_any))
        .route(&p("/sccache/{*path}"), any(webdav::dav_any))
}

/// The public router.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/up", get(up))
        .route("/ready", get(ready))
        .route("/status/rollout", get(rollout))
        .route("/metrics", get(metrics))
        .route("/api/cache/cas/{id}", get(xcode_get).post(xcode_post))
        .route(
            "/api/cache/gradle/{key}",
            get(legacy_gradle_get).put(legacy_gradle_put),
        )
        .route("/api/cache/keyvalue", put(keyvalue_put))
        .route("/api/cache/keyvalue/{cas_id}", get(keyvalue_get))
        .route("/api/metro/cache/{key}", get(metro_get).put(metro_put))
        .route("/api/cache/clean", axum::routing::delete(clean))
        .route("/api/cache/module/start", post(crate::module::start))
        .route("/api/cache/module/part", post(crate::module::part))
        .route("/api/cache/module/complete", post(crate::module::complete))
        .route("/api/cache/module/{id}", get(crate::module::fetch))
        .route("/_internal", any(internal_not_here))
        .route("/_internal/{*rest}", any(internal_not_here))
        .merge(mounts(""))
        .merge(mounts("/ns/{namespace}"))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Normalises request paths before routing: collapses repeated slashes (Nx
/// with a trailing slash in its server URL sends `//v1/cache/…`).
pub fn normalize_path(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.contains("//") {
        let mut clean = String::with_capacity(path.len());
        let mut prev_slash = false;
        for c in path.chars() {
            if c == '/' && prev_slash {
                continue;
            }
            prev_slash = c == '/';
            clean.push(c);
        }
        let pq = match req.uri().query() {
            Some(q) => format!("{clean}?{q}"),
            None => clean,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turbo_meta_round_trips() {
        let m = TurboMeta {
            duration: Some(1234),
            tag: Some("a+b/c==; x%".into()),
            team: Some("team_x y".into()),
        };
        assert_eq!(TurboMeta::from_content_type(&m.to_content_type()), m);
        assert_eq!(
            TurboMeta::from_content_type("application/octet-stream"),
            TurboMeta::default()
        );
        assert_eq!(
            TurboMeta::from_content_type("x; tag=%zz; duration=no").tag,
            None
        );
    }
}
