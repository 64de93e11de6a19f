//! `Capabilities`, `ActionCache` and `ContentAddressableStorage`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::build::bazel::semver::SemVer;
use futures_util::{Stream, StreamExt};
use kura_store::{Namespace, ObjectRef, PutRequest, body_from_bytes};
use prost::Message;
use tonic::{Request, Response, Status};

use super::{
    AC_LABEL, BlobDigest, CAS_LABEL, CAS_PREFIX, MAX_BATCH_TOTAL_SIZE, ac_id, authorize, cas_id,
    check_digest_function, count, namespace, rpc_ok, rpc_status, store_status,
};
use crate::app::AppState;
use crate::keys;

/// Largest `Tree` blob read to collect the files an action result references.
const MAX_TREE_BYTES: u64 = 64 << 20;

/// How many blobs of one batch are read or written concurrently.
const BATCH_CONCURRENCY: usize = 32;

/// Capabilities, action cache and CAS over one store.
#[derive(Clone)]
pub(super) struct Cache {
    state: Arc<AppState>,
}

impl Cache {
    pub(super) fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn semver(major: i32, minor: i32) -> SemVer {
    SemVer {
        major,
        minor,
        patch: 0,
        prerelease: String::new(),
    }
}

#[tonic::async_trait]
impl re::capabilities_server::Capabilities for Cache {
    async fn get_capabilities(
        &self,
        request: Request<re::GetCapabilitiesRequest>,
    ) -> Result<Response<re::ServerCapabilities>, Status> {
        let s = &self.state;
        let ns = namespace(&request.get_ref().instance_name)?;
        authorize(s, request.metadata(), &ns, false)?;
        // A read-only token sees `update_enabled: false`.
        let update_enabled = authorize(s, request.metadata(), &ns, true).is_ok();
        Ok(Response::new(re::ServerCapabilities {
            cache_capabilities: Some(re::CacheCapabilities {
                digest_functions: vec![re::digest_function::Value::Sha256 as i32],
                action_cache_update_capabilities: Some(re::ActionCacheUpdateCapabilities {
                    update_enabled,
                }),
                cache_priority_capabilities: None,
                max_batch_total_size_bytes: MAX_BATCH_TOTAL_SIZE as i64,
                symlink_absolute_path_strategy: re::symlink_absolute_path_strategy::Value::Allowed
                    as i32,
                supported_compressors: Vec::new(),
                supported_batch_update_compressors: Vec::new(),
                max_cas_blob_size_bytes: i64::try_from(s.config.limits.object).unwrap_or(i64::MAX),
                ..Default::default()
            }),
            execution_capabilities: None,
            deprecated_api_version: None,
            low_api_version: Some(semver(2, 0)),
            high_api_version: Some(semver(2, 3)),
        }))
    }
}

impl Cache {
    /// Every CAS blob an action result names, including the files inside its
    /// output trees (read from the store when present; a missing tree is
    /// reported by the store as a missing reference).
    async fn referenced(
        &self,
        ns: &Namespace,
        result: &re::ActionResult,
    ) -> Result<Vec<ObjectRef>, Status> {
        let mut digests: Vec<Option<&re::Digest>> = Vec::new();
        digests.extend(result.output_files.iter().map(|f| f.digest.as_ref()));
        digests.extend(
            result
                .output_directories
                .iter()
                .map(|d| d.tree_digest.as_ref()),
        );
        digests.push(result.stdout_digest.as_ref());
        digests.push(result.stderr_digest.as_ref());
        let mut hashes: Vec<String> = Vec::new();
        for d in digests.into_iter().flatten() {
            let d = BlobDigest::new(&d.hash, d.size_bytes)?;
            if !d.is_empty_blob() {
                hashes.push(d.hash);
            }
        }
        for dir in &result.output_directories {
            let Some(td) = dir.tree_digest.as_ref() else {
                continue;
            };
            let td = BlobDigest::new(&td.hash, td.size_bytes)?;
            if td.is_empty_blob() || td.size > MAX_TREE_BYTES {
                continue;
            }
            let id = cas_id(&self.state, ns, &td.hash)?;
            let Some(obj) = self
                .state
                .store
                .get(&id)
                .await
                .map_err(|e| store_status(&e))?
            else {
                continue;
            };
            let data = obj.read_all().await.map_err(|e| store_status(&e))?;
            let tree = re::Tree::decode(data).map_err(|e| {
                Status::invalid_argument(format!(
                    "output directory tree {} is not a Tree: {e}",
                    td.hash
                ))
            })?;
            for d in tree.root.iter().chain(tree.children.iter()) {
                for f in &d.files {
                    let fd = BlobDigest::from_proto(f.digest.as_ref())?;
                    if !fd.is_empty_blob() {
                        hashes.push(fd.hash);
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        let mut refs = Vec::new();
        for h in hashes {
            if seen.insert(h.clone()) {
                let key = keys::store_key(CAS_PREFIX, &h)
                    .map_err(|e| Status::invalid_argument(e.message))?;
                refs.push(ObjectRef::new(ns.clone(), key));
            }
        }
        Ok(refs)
    }
}

#[tonic::async_trait]
impl re::action_cache_server::ActionCache for Cache {
    async fn get_action_result(
        &self,
        request: Request<re::GetActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        let s = &self.state;
        let r = request.get_ref();
        let ns = namespace(&r.instance_name)?;
        authorize(s, request.metadata(), &ns, false)?;
        check_digest_function(r.digest_function)?;
        let digest = BlobDigest::from_proto(r.action_digest.as_ref())?;
        let id = ac_id(s, &ns, &digest.hash)?;
        let miss = || {
            count(s, AC_LABEL, true, "miss", 0);
            Status::not_found(format!("no action result for {}", digest.hash))
        };
        let Some(obj) = s.store.get(&id).await.map_err(|e| store_status(&e))? else {
            return Err(miss());
        };
        // Never hand out a result whose outputs are gone; opening each one
        // also records an access, so a result in use keeps its outputs (which
        // `--remote_download_minimal` may never read) from ageing out of the LRU.
        for r in &obj.meta().refs {
            if s.store
                .get(&r.resolve(&s.config.account))
                .await
                .map_err(|e| store_status(&e))?
                .is_none()
            {
                return Err(miss());
            }
        }
        let data = obj.read_all().await.map_err(|e| store_status(&e))?;
        let len = data.len() as u64;
        let Ok(result) = re::ActionResult::decode(data) else {
            tracing::warn!(action = %digest.hash, "stored action result does not decode; reporting a miss");
            return Err(miss());
        };
        count(s, AC_LABEL, true, "hit", len);
        Ok(Response::new(result))
    }

    async fn update_action_result(
        &self,
        request: Request<re::UpdateActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        let s = &self.state;
        let ns = namespace(&request.get_ref().instance_name)?;
        authorize(s, request.metadata(), &ns, true)?;
        let r = request.into_inner();
        check_digest_function(r.digest_function)?;
        let digest = BlobDigest::from_proto(r.action_digest.as_ref())?;
        let result = r
            .action_result
            .ok_or_else(|| Status::invalid_argument("missing action_result"))?;
        let refs = self.referenced(&ns, &result).await?;
        let data = result.encode_to_vec();
        let len = data.len() as u64;
        let id = ac_id(s, &ns, &digest.hash)?;
        let req = PutRequest::new(id)
            .with_content_type("application/octet-stream")
            .with_len(len)
            .with_refs(refs);
        match s.store.put(req, body_from_bytes(data)).await {
            Ok(_) => count(s, AC_LABEL, false, "ok", len),
            Err(e) => {
                count(s, AC_LABEL, false, "error", 0);
                return Err(store_status(&e));
            }
        }
        Ok(Response::new(result))
    }
}

#[tonic::async_trait]
impl re::content_addressable_storage_server::ContentAddressableStorage for Cache {
    async fn find_missing_blobs(
        &self,
        request: Request<re::FindMissingBlobsRequest>,
    ) -> Result<Response<re::FindMissingBlobsResponse>, Status> {
        let s = self.state.clone();
        let ns = namespace(&request.get_ref().instance_name)?;
        authorize(&s, request.metadata(), &ns, false)?;
        let r = request.into_inner();
        check_digest_function(r.digest_function)?;
        let mut wanted = Vec::with_capacity(r.blob_digests.len());
        for d in &r.blob_digests {
            let d = BlobDigest::new(&d.hash, d.size_bytes)?;
            let id = cas_id(&s, &ns, &d.hash)?;
            wanted.push((d, id));
        }
        // Metadata lookups are synchronous reads of the index.
        let missing = tokio::task::spawn_blocking(move || {
            let mut missing = Vec::new();
            for (d, id) in wanted {
                if d.is_empty_blob() {
                    continue;
                }
                match s.store.head(&id) {
                    Ok(Some(meta)) if meta.len == d.size => {}
                    Ok(_) => missing.push(d.to_proto()),
                    Err(e) => return Err(store_status(&e)),
                }
            }
            Ok(missing)
        })
        .await
        .map_err(|e| Status::internal(format!("lookup task failed: {e}")))??;
        Ok(Response::new(re::FindMissingBlobsResponse {
            missing_blob_digests: missing,
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<re::BatchUpdateBlobsRequest>,
    ) -> Result<Response<re::BatchUpdateBlobsResponse>, Status> {
        let ns = namespace(&request.get_ref().instance_name)?;
        authorize(&self.state, request.metadata(), &ns, true)?;
        let r = request.into_inner();
        check_digest_function(r.digest_function)?;
        let total: u64 = r.requests.iter().map(|b| b.data.len() as u64).sum();
        if total > MAX_BATCH_TOTAL_SIZE {
            return Err(Status::invalid_argument(format!(
                "batch of {total} bytes exceeds max_batch_total_size_bytes {MAX_BATCH_TOTAL_SIZE}; use ByteStream.Write"
            )));
        }
        let responses = futures_util::stream::iter(r.requests)
            .map(|b| {
                let ns = ns.clone();
                async move {
                    let digest = b.digest.clone();
                    let status = match self.update_one(&ns, b).await {
                        Ok(()) => rpc_ok(),
                        Err(e) => rpc_status(&e),
                    };
                    re::batch_update_blobs_response::Response {
                        digest,
                        status: Some(status),
                    }
                }
            })
            .buffered(BATCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        Ok(Response::new(re::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<re::BatchReadBlobsRequest>,
    ) -> Result<Response<re::BatchReadBlobsResponse>, Status> {
        let ns = namespace(&request.get_ref().instance_name)?;
        authorize(&self.state, request.metadata(), &ns, false)?;
        let r = request.into_inner();
        check_digest_function(r.digest_function)?;
        let total: u64 = r
            .digests
            .iter()
            .map(|d| u64::try_from(d.size_bytes).unwrap_or(0))
            .sum();
        if total > MAX_BATCH_TOTAL_SIZE {
            return Err(Status::invalid_argument(format!(
                "batch of {total} bytes exceeds max_batch_total_size_bytes {MAX_BATCH_TOTAL_SIZE}; use ByteStream.Read"
            )));
        }
        let responses = futures_util::stream::iter(r.digests)
            .map(|d| {
                let ns = ns.clone();
                async move {
                    let (data, status) = match self.read_one(&ns, &d).await {
                        Ok(data) => (data, rpc_ok()),
                        Err(e) => (Vec::new(), rpc_status(&e)),
                    };
                    re::batch_read_blobs_response::Response {
                        digest: Some(d),
                        data,
                        compressor: re::compressor::Value::Identity as i32,
                        status: Some(status),
                    }
                }
            })
            .buffered(BATCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        Ok(Response::new(re::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = BoxStream<re::GetTreeResponse>;

    async fn get_tree(
        &self,
        _request: Request<re::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        Err(Status::unimplemented(
            "GetTree is not implemented by this cache (it is only needed for remote execution)",
        ))
    }

    async fn split_blob(
        &self,
        _request: Request<re::SplitBlobRequest>,
    ) -> Result<Response<re::SplitBlobResponse>, Status> {
        Err(Status::unimplemented("SplitBlob is not implemented"))
    }

    type GetChunkMappingStream = BoxStream<re::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _request: Request<re::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(Status::unimplemented("GetChunkMapping is not implemented"))
    }

    async fn splice_blob(
        &self,
        _request: Request<re::SpliceBlobRequest>,
    ) -> Result<Response<re::SpliceBlobResponse>, Status> {
        Err(Status::unimplemented("SpliceBlob is not implemented"))
    }

    async fn register_chunk_mapping(
        &self,
        _request: Request<tonic::Streaming<re::RegisterChunkMappingRequest>>,
    ) -> Result<Response<re::RegisterChunkMappingResponse>, Status> {
        Err(Status::unimplemented(
            "RegisterChunkMapping is not implemented",
        ))
    }
}

impl Cache {
    async fn update_one(
        &self,
        ns: &Namespace,
        b: re::batch_update_blobs_request::Request,
    ) -> Result<(), Status> {
        let s = &self.state;
        let d = BlobDigest::from_proto(b.digest.as_ref())?;
        if b.compressor != re::compressor::Value::Identity as i32 {
            return Err(Status::invalid_argument(
                "compressed uploads are not supported (no compressors are advertised)",
            ));
        }
        if b.data.len() as u64 != d.size {
            return Err(Status::invalid_argument(format!(
                "{} bytes sent for a digest of size {}",
                b.data.len(),
                d.size
            )));
        }
        if d.is_empty_blob() {
            return Ok(());
        }
        let id = cas_id(s, ns, &d.hash)?;
        if s.store
            .head(&id)
            .map_err(|e| store_status(&e))?
            .is_some_and(|m| m.len == d.size)
        {
            count(s, CAS_LABEL, false, "exists", 0);
            return Ok(());
        }
        let req = PutRequest::new(id)
            .with_len(d.size)
            .with_digest(d.store_digest()?);
        match s.store.put(req, body_from_bytes(b.data)).await {
            Ok(m) => {
                count(s, CAS_LABEL, false, "ok", m.len);
                Ok(())
            }
            Err(e) => {
                count(s, CAS_LABEL, false, "error", 0);
                Err(store_status(&e))
            }
        }
    }

    async fn read_one(&self, ns: &Namespace, d: &re::Digest) -> Result<Vec<u8>, Status> {
        let s = &self.state;
        let d = BlobDigest::new(&d.hash, d.size_bytes)?;
        if d.is_empty_blob() {
            return Ok(Vec::new());
        }
        let id = cas_id(s, ns, &d.hash)?;
        let obj = match s.store.get(&id).await.map_err(|e| store_status(&e))? {
            Some(o) if o.meta().len == d.size => o,
            _ => {
                count(s, CAS_LABEL, true, "miss", 0);
                return Err(Status::not_found(format!(
                    "blob {}/{} not found",
                    d.hash, d.size
                )));
            }
        };
        let data = obj.read_all().await.map_err(|e| store_status(&e))?;
        count(s, CAS_LABEL, true, "hit", data.len() as u64);
        Ok(data.to_vec())
    }
}
