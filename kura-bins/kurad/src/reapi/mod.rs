//! Bazel Remote Execution API v2 cache over gRPC: `Capabilities`,
//! `ActionCache`, `ContentAddressableStorage` and `google.bytestream.ByteStream`
//! (messages and service stubs from the `bazel-remote-apis` crate).
//!
//! The services share the store and namespaces with the Bazel HTTP protocol:
//! instance name `""` is namespace `default`, any other instance name is the
//! namespace of that name (the `/ns/{namespace}/bazel` HTTP mount). CAS blobs
//! are the objects `cas/{sha256}` and action results `ac/{sha256}`, so a blob
//! written over HTTP is readable over gRPC and the other way round. Action
//! results reference every CAS blob they name (outputs, stdout/stderr, trees
//! and the files inside the trees), so eviction never keeps a result whose
//! outputs are gone, and `GetActionResult` answers `NOT_FOUND` when one is
//! missing.
//!
//! gRPC is served on the public listener (requests with a
//! `content-type: application/grpc…` header go to [`grpc_router`], see
//! [`Dispatch`]) and, with `KURA_GRPC_PORT`, on a gRPC-only listener too.
//! Tokens are the HTTP ones, sent as `authorization` metadata.
//!
//! `GetTree` and the blob-chunking RPCs (`SplitBlob`, `SpliceBlob`,
//! `GetChunkMapping`, `RegisterChunkMapping`) answer `UNIMPLEMENTED`; no compressors are advertised.

mod bytestream;
mod cache;
pub mod resource;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use futures_util::future::{BoxFuture, FutureExt};
use kura_store::{Namespace, ObjectId};
use tonic::Status;
use tower::ServiceExt;

use crate::app::AppState;
use crate::auth::Denied;
use crate::keys::{self, DEFAULT_NAMESPACE};
use crate::metrics::{ArtifactLabels, TokenLabels};

pub use bytestream::{UPLOAD_IDLE_TTL, UPLOADS_DIR};

/// Largest total of blob bytes in one `BatchUpdateBlobs` or `BatchReadBlobs`
/// request; advertised as `max_batch_total_size_bytes` and enforced.
pub const MAX_BATCH_TOTAL_SIZE: u64 = 4 << 20;

/// Largest gRPC message decoded or encoded. Leaves room for the per-blob
/// overhead of a batch at [`MAX_BATCH_TOTAL_SIZE`] and for `FindMissingBlobs`
/// requests of about 90,000 digests.
pub const MAX_MESSAGE_SIZE: usize = 8 << 20;

/// SHA-256 of the empty blob: always present.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Store key prefix of CAS blobs (shared with `/bazel/cas/`).
const CAS_PREFIX: &str = "cas";
/// Store key prefix of action results (shared with `/bazel/ac/`).
const AC_PREFIX: &str = "ac";

/// The gRPC services as an axum router (one per server, shared by every
/// listener: resumable uploads live here).
pub fn grpc_router(state: Arc<AppState>) -> axum::Router {
    let cache = cache::Cache::new(state.clone());
    let bs = bytestream::ByteStreamService::new(state.clone());
    let mut routes = tonic::service::Routes::default();
    routes = routes
        .add_service(
            re::capabilities_server::CapabilitiesServer::new(cache.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            re::action_cache_server::ActionCacheServer::new(cache.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            re::content_addressable_storage_server::ContentAddressableStorageServer::new(cache)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            bazel_remote_apis::google::bytestream::byte_stream_server::ByteStreamServer::new(bs)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        );
    routes
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(state, observe))
}

/// The gRPC services served (the metric label of a request is its method
/// path when it names one of them).
const SERVICES: &[&str] = &[
    "/build.bazel.remote.execution.v2.Capabilities/",
    "/build.bazel.remote.execution.v2.ActionCache/",
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/",
    "/google.bytestream.ByteStream/",
];

/// Counts gRPC calls in `kura_http_requests_total` and
/// `kura_http_request_duration_seconds` (time to the response headers), with
/// the method path as the route and the gRPC status (when it is known before
/// the body, as for every error) as `status`.
async fn observe(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let route = if SERVICES.iter().any(|p| path.starts_with(p)) && path.len() <= 128 {
        path.to_owned()
    } else {
        "grpc_unmatched".to_owned()
    };
    let start = std::time::Instant::now();
    // gRPC calls share the HTTP routes' in-flight limit.
    let (_slot, admitted) = state.enter();
    let resp = if admitted {
        next.run(req).await
    } else {
        overloaded()
    };
    let status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(0);
    state
        .metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            route: route.clone(),
            method: "GRPC".to_owned(),
            status,
        })
        .inc();
    state
        .metrics
        .durations
        .get_or_create(&crate::metrics::RouteLabels { route })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// How long an overloaded server asks gRPC clients to wait (`RetryInfo`).
pub const OVERLOAD_RETRY_SECS: i64 = 1;

/// `google.rpc.RetryInfo` (not among the generated REAPI types).
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<bazel_remote_apis::google::protobuf::Duration>,
}

/// The answer to a gRPC call over `KURA_MAX_IN_FLIGHT`: `UNAVAILABLE` with a
/// `google.rpc.RetryInfo` detail (retry after [`OVERLOAD_RETRY_SECS`]).
///
/// `UNAVAILABLE` rather than `RESOURCE_EXHAUSTED`: both are in Bazel's
/// `RemoteRetrier.RETRIABLE_GRPC_ERRORS` (retried with backoff in every
/// release, including the 4.2 that CI runs), but `UNAVAILABLE` is the code
/// gRPC defines for "transient, retry with backoff" and the one generic gRPC
/// clients and retry policies retry, while `RESOURCE_EXHAUSTED` reads as a
/// per-user quota and is often not retried.
fn overloaded() -> Response {
    use prost::Message as _;
    let message = "too many requests in flight; retry later";
    let retry = RetryInfo {
        retry_delay: Some(bazel_remote_apis::google::protobuf::Duration {
            seconds: OVERLOAD_RETRY_SECS,
            nanos: 0,
        }),
    };
    let details = bazel_remote_apis::google::rpc::Status {
        code: tonic::Code::Unavailable as i32,
        message: message.to_owned(),
        details: vec![bazel_remote_apis::google::protobuf::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".to_owned(),
            value: retry.encode_to_vec(),
        }],
    };
    Status::with_details(
        tonic::Code::Unavailable,
        message,
        bytes::Bytes::from(details.encode_to_vec()),
    )
    .into_http()
}

/// Whether a request is gRPC (`content-type: application/grpc`,
/// `application/grpc+proto`, …).
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

/// Routes gRPC requests to the REAPI services and everything else to the
/// HTTP router: one listener serves both.
#[derive(Clone)]
pub struct Dispatch {
    http: axum::Router,
    grpc: axum::Router,
}

impl Dispatch {
    /// Combines the HTTP router with the gRPC one.
    pub fn new(http: axum::Router, grpc: axum::Router) -> Self {
        Self { http, grpc }
    }
}

impl tower::Service<http::Request<Body>> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if is_grpc(&req) {
            self.grpc.clone().oneshot(req).boxed()
        } else {
            self.http.clone().oneshot(req).boxed()
        }
    }
}

// ------------------------------------------------------------ shared helpers

/// The namespace of an instance name (`""` → `default`).
fn namespace(instance: &str) -> Result<Namespace, Status> {
    let name = if instance.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        instance
    };
    keys::namespace(name)
        .map_err(|e| Status::invalid_argument(format!("instance name: {}", e.message)))
}

/// Checks the caller's token (`authorization` metadata) for `ns`.
fn authorize(
    state: &AppState,
    metadata: &tonic::metadata::MetadataMap,
    ns: &Namespace,
    write: bool,
) -> Result<(), Status> {
    let Some(tokens) = &state.tokens else {
        return Ok(());
    };
    let auth = metadata.get("authorization").and_then(|v| v.to_str().ok());
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
        Err(Denied::Unauthenticated) => Err(Status::unauthenticated("missing or unknown token")),
        Err(Denied::Forbidden) => Err(Status::permission_denied(if write {
            "this token may not write to this namespace"
        } else {
            "this token may not read this namespace"
        })),
    }
}

/// Accepts `UNKNOWN` (the client did not say) and `SHA256`.
fn check_digest_function(value: i32) -> Result<(), Status> {
    use re::digest_function::Value;
    if value == Value::Unknown as i32 || value == Value::Sha256 as i32 {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "digest function {value} is not supported: this server only supports SHA256"
        )))
    }
}

/// A validated SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlobDigest {
    hash: String,
    size: u64,
}

impl BlobDigest {
    fn new(hash: &str, size: i64) -> Result<Self, Status> {
        keys::sha256_hex(hash).map_err(|e| Status::invalid_argument(e.message))?;
        let size = u64::try_from(size)
            .map_err(|_| Status::invalid_argument(format!("negative size {size} in digest")))?;
        if hash == EMPTY_SHA256 && size != 0 {
            return Err(Status::invalid_argument(
                "the empty blob's digest must have size 0",
            ));
        }
        Ok(Self {
            hash: hash.to_owned(),
            size,
        })
    }

    fn from_proto(d: Option<&re::Digest>) -> Result<Self, Status> {
        let d = d.ok_or_else(|| Status::invalid_argument("missing digest"))?;
        Self::new(&d.hash, d.size_bytes)
    }

    fn is_empty_blob(&self) -> bool {
        self.hash == EMPTY_SHA256
    }

    fn to_proto(&self) -> re::Digest {
        re::Digest {
            hash: self.hash.clone(),
            size_bytes: i64::try_from(self.size).unwrap_or(i64::MAX),
        }
    }

    fn store_digest(&self) -> Result<kura_store::Digest, Status> {
        kura_store::Digest::from_hex(&self.hash).map_err(|e| store_status(&e))
    }
}

fn object_id(
    state: &AppState,
    ns: &Namespace,
    prefix: &str,
    hash: &str,
) -> Result<ObjectId, Status> {
    let key = keys::store_key(prefix, hash).map_err(|e| Status::invalid_argument(e.message))?;
    Ok(ObjectId::new(state.config.account.clone(), ns.clone(), key))
}

fn cas_id(state: &AppState, ns: &Namespace, hash: &str) -> Result<ObjectId, Status> {
    object_id(state, ns, CAS_PREFIX, hash)
}

fn ac_id(state: &AppState, ns: &Namespace, hash: &str) -> Result<ObjectId, Status> {
    object_id(state, ns, AC_PREFIX, hash)
}

/// The one place store errors become gRPC status codes.
fn store_status(err: &kura_store::Error) -> Status {
    use kura_store::Error as E;
    let msg = err.to_string();
    match err {
        E::InvalidKey { .. }
        | E::InvalidDigest { .. }
        | E::LengthMismatch { .. }
        | E::DigestMismatch { .. }
        | E::InvalidRange { .. }
        | E::Body { .. } => Status::invalid_argument(msg),
        E::TooLarge { .. } | E::Full { .. } => Status::resource_exhausted(msg),
        E::MissingReference { .. } => Status::failed_precondition(msg),
        E::Corrupt { .. } => Status::data_loss(msg),
        E::Closed => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

/// A `google.rpc.Status` for per-blob batch results.
fn rpc_status(status: &Status) -> bazel_remote_apis::google::rpc::Status {
    bazel_remote_apis::google::rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    }
}

fn rpc_ok() -> bazel_remote_apis::google::rpc::Status {
    bazel_remote_apis::google::rpc::Status {
        code: tonic::Code::Ok as i32,
        message: String::new(),
        details: Vec::new(),
    }
}

/// Counts an artifact read or write under the Bazel HTTP labels.
fn count(state: &AppState, kind: &'static str, read: bool, result: &'static str, bytes: u64) {
    let labels = ArtifactLabels { kind, result };
    let m = &state.metrics;
    if read {
        m.reads.get_or_create(&labels).inc();
        m.read_bytes.get_or_create(&labels).inc_by(bytes);
    } else {
        m.writes.get_or_create(&labels).inc();
        m.write_bytes.get_or_create(&labels).inc_by(bytes);
    }
}

const CAS_LABEL: &str = "bazel_cas";
const AC_LABEL: &str = "bazel_ac";
