//! `google.bytestream.ByteStream`: streaming reads with offsets and limits,
//! resumable streaming writes, `QueryWriteStatus`.
//!
//! A write that arrives whole in its first message goes straight into the
//! store. Any other write is appended to a temporary file under
//! `<tmp dir>/reapi-uploads/` (memory stays bounded whatever the blob size),
//! and the upload's committed size is kept per resource name, so a client whose
//! stream broke asks `QueryWriteStatus` and continues from there. When the
//! client sends `finish_write` with every byte, the file is streamed into the
//! store, which verifies length and SHA-256 before the blob becomes visible.
//! Idle partial uploads are dropped after [`UPLOAD_IDLE_TTL`].

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bazel_remote_apis::google::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse, byte_stream_server,
};
use bytes::Bytes;
use futures_util::Stream;
use kura_store::{Namespace, ObjectId, PutRequest, body_from_bytes};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tonic::{Request, Response, Status, Streaming};

use super::resource::{self, BlobName};
use super::{BlobDigest, CAS_LABEL, authorize, cas_id, count, namespace, store_status};
use crate::app::AppState;

/// Directory (under the temporary directory) of partial uploads.
pub const UPLOADS_DIR: &str = "reapi-uploads";

/// How long an untouched partial upload is kept for a resume.
pub const UPLOAD_IDLE_TTL: Duration = Duration::from_secs(3600);

const FILE_CHUNK: usize = 256 * 1024;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// One partial upload.
struct Upload {
    path: PathBuf,
    /// Bytes received so far (a resume continues here).
    committed: AtomicU64,
    /// The open file; locked by the stream writing to it.
    file: tokio::sync::Mutex<Option<BufWriter<tokio::fs::File>>>,
    touched: Mutex<Instant>,
}

impl Upload {
    fn touch(&self) {
        *self.touched.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle(&self) -> Duration {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Partial uploads by resource (namespace, upload id, hash, size).
struct Uploads {
    dir: PathBuf,
    map: Mutex<HashMap<String, Arc<Upload>>>,
    next: AtomicU64,
}

impl Uploads {
    fn new(dir: PathBuf) -> Self {
        // Partial uploads do not survive a restart: clear what a previous run left.
        let _ = std::fs::remove_dir_all(&dir);
        Self {
            dir,
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Upload>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Arc<Upload>> {
        self.lock().get(key).cloned()
    }

    fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    fn get_or_create(&self, key: &str) -> Result<Arc<Upload>, Status> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            Status::internal(format!(
                "cannot create the upload directory {}: {e}",
                self.dir.display()
            ))
        })?;
        let mut map = self.lock();
        // Drop idle uploads nobody is using.
        map.retain(|_, u| Arc::strong_count(u) > 1 || u.idle() < UPLOAD_IDLE_TTL);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let upload = map.entry(key.to_owned()).or_insert_with(|| {
            Arc::new(Upload {
                path: self.dir.join(format!("upload-{n}")),
                committed: AtomicU64::new(0),
                file: tokio::sync::Mutex::new(None),
                touched: Mutex::new(Instant::now()),
            })
        });
        Ok(upload.clone())
    }
}

/// The ByteStream service.
pub(super) struct ByteStreamService {
    state: Arc<AppState>,
    uploads: Uploads,
}

impl ByteStreamService {
    pub(super) fn new(state: Arc<AppState>) -> Self {
        let dir = state.config.tmp_dir.join(UPLOADS_DIR);
        Self {
            state,
            uploads: Uploads::new(dir),
        }
    }

    fn exists(&self, id: &ObjectId, size: u64) -> Result<bool, Status> {
        Ok(self
            .state
            .store
            .head(id)
            .map_err(|e| store_status(&e))?
            .is_some_and(|m| m.len == size))
    }
}

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// Checks the parts of a resource name this server does not support.
fn plain_sha256(blob: &BlobName) -> Result<BlobDigest, Status> {
    if let Some(c) = &blob.compressor {
        return Err(invalid(format!(
            "compressor {c:?} is not supported (no compressors are advertised)"
        )));
    }
    if let Some(f) = &blob.digest_function {
        if f != "sha256" {
            return Err(invalid(format!(
                "digest function {f:?} is not supported: this server only supports sha256"
            )));
        }
    }
    BlobDigest::new(&blob.hash, i64::try_from(blob.size).unwrap_or(i64::MAX))
}

fn upload_key(ns: &Namespace, uuid: &str, d: &BlobDigest) -> String {
    format!("{}/{uuid}/{}/{}", ns.as_str(), d.hash, d.size)
}

async fn next_message(
    stream: &mut Streaming<WriteRequest>,
    stall: Duration,
) -> Result<Option<WriteRequest>, Status> {
    match tokio::time::timeout(stall, stream.message()).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no data received for {stall:?}; resume with QueryWriteStatus"
        ))),
    }
}

fn io_status(what: &str, e: &std::io::Error) -> Status {
    if e.kind() == std::io::ErrorKind::StorageFull {
        Status::resource_exhausted(format!("{what}: disk full"))
    } else {
        Status::internal(format!("{what}: {e}"))
    }
}

/// A file read from the start as a body stream for the store.
fn file_body(file: tokio::fs::File) -> Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>> {
    Box::pin(futures_util::stream::unfold(
        Some(file),
        |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; FILE_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

#[tonic::async_trait]
impl byte_stream_server::ByteStream for ByteStreamService {
    type ReadStream = BoxStream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let s = &self.state;
        let r = request.get_ref();
        let name = resource::parse_read(&r.resource_name).map_err(|e| invalid(e.to_string()))?;
        let ns = namespace(&name.instance)?;
        authorize(s, request.metadata(), &ns, false)?;
        let d = plain_sha256(&name)?;
        let offset = u64::try_from(r.read_offset)
            .map_err(|_| Status::out_of_range(format!("negative read_offset {}", r.read_offset)))?;
        let limit = u64::try_from(r.read_limit)
            .map_err(|_| invalid(format!("negative read_limit {}", r.read_limit)))?;
        if offset > d.size {
            return Err(Status::out_of_range(format!(
                "read_offset {offset} is past the end of a {}-byte blob",
                d.size
            )));
        }
        let empty: Self::ReadStream = Box::pin(futures_util::stream::empty());
        if d.is_empty_blob() {
            return Ok(Response::new(empty));
        }
        let id = cas_id(s, &ns, &d.hash)?;
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
        let end = if limit == 0 {
            d.size
        } else {
            d.size.min(offset.saturating_add(limit))
        };
        count(s, CAS_LABEL, true, "hit", end - offset);
        if offset == end {
            return Ok(Response::new(empty));
        }
        let reader = if offset == 0 && end == d.size {
            obj.reader()
        } else {
            obj.range_reader(offset..end)
                .map_err(|e| store_status(&e))?
        };
        let stream = futures_util::stream::unfold(Some((obj, reader)), |st| async move {
            let (obj, mut reader) = st?;
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Some((
                    Ok(ReadResponse {
                        data: chunk.to_vec(),
                    }),
                    Some((obj, reader)),
                )),
                Ok(None) => None,
                Err(e) => Some((Err(store_status(&e)), None)),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let s = &self.state;
        let metadata = request.metadata().clone();
        let mut stream = request.into_inner();
        let stall = s.config.body_timeout;
        let first = next_message(&mut stream, stall)
            .await?
            .ok_or_else(|| invalid("empty Write stream"))?;
        let name =
            resource::parse_write(&first.resource_name).map_err(|e| invalid(e.to_string()))?;
        let ns = namespace(&name.blob.instance)?;
        authorize(s, &metadata, &ns, true)?;
        let d = plain_sha256(&name.blob)?;
        if d.size > s.config.limits.object {
            return Err(invalid(format!(
                "blob of {} bytes exceeds max_cas_blob_size_bytes {}",
                d.size, s.config.limits.object
            )));
        }
        let done = Response::new(WriteResponse {
            committed_size: i64::try_from(d.size).unwrap_or(i64::MAX),
        });
        if d.is_empty_blob() {
            return Ok(done);
        }
        let id = cas_id(s, &ns, &d.hash)?;
        let key = upload_key(&ns, &name.uuid, &d);
        if self.exists(&id, d.size)? {
            // Already stored (maybe by another client): finish early, as the spec allows.
            self.uploads.remove(&key);
            count(s, CAS_LABEL, false, "exists", 0);
            return Ok(done);
        }
        let put_request = PutRequest::new(id.clone())
            .with_len(d.size)
            .with_digest(d.store_digest()?);

        // The whole blob in one message: no temporary file.
        if first.write_offset == 0
            && first.finish_write
            && first.data.len() as u64 == d.size
            && self.uploads.get(&key).is_none()
        {
            return match s.store.put(put_request, body_from_bytes(first.data)).await {
                Ok(m) => {
                    count(s, CAS_LABEL, false, "ok", m.len);
                    Ok(done)
                }
                Err(e) => {
                    count(s, CAS_LABEL, false, "error", 0);
                    Err(store_status(&e))
                }
            };
        }

        let upload = self.uploads.get_or_create(&key)?;
        // One stream per upload at a time; a stream that died releases it.
        let mut guard = upload.file.lock().await;
        upload.touch();
        if self.exists(&id, d.size)? {
            drop(guard);
            self.uploads.remove(&key);
            return Ok(done);
        }
        let committed = upload.committed.load(Ordering::Acquire);
        let start = u64::try_from(first.write_offset).unwrap_or(u64::MAX);
        if start > committed {
            return Err(invalid(format!(
                "write_offset {} is past the committed size {committed}; ask QueryWriteStatus",
                first.write_offset
            )));
        }
        if guard.is_none() {
            let f = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&upload.path)
                .await
                .map_err(|e| io_status("opening the upload file", &e))?;
            *guard = Some(BufWriter::with_capacity(FILE_CHUNK, f));
        }
        let Some(file) = guard.as_mut() else {
            return Err(Status::internal("upload file not open"));
        };
        // Make the file exactly the bytes before `start`, whatever an
        // interrupted stream left in flight.
        let reposition = async {
            file.flush().await?;
            file.get_mut().set_len(start).await?;
            file.get_mut()
                .seek(SeekFrom::Start(start))
                .await
                .map(|_| ())
        };
        reposition
            .await
            .map_err(|e| io_status("positioning the upload file", &e))?;
        upload.committed.store(start, Ordering::Release);

        let first_name = first.resource_name.clone();
        let mut msg = first;
        let mut at = start;
        loop {
            if !msg.resource_name.is_empty() && msg.resource_name != first_name {
                return Err(invalid("resource_name changed within one Write stream"));
            }
            if msg.write_offset != i64::try_from(at).unwrap_or(i64::MAX) {
                return Err(invalid(format!(
                    "write_offset {} does not follow the {at} bytes sent",
                    msg.write_offset
                )));
            }
            let len = msg.data.len() as u64;
            if at + len > d.size {
                drop(guard);
                self.uploads.remove(&key);
                return Err(invalid(format!(
                    "more than the declared {} bytes were sent",
                    d.size
                )));
            }
            file.write_all(&msg.data)
                .await
                .map_err(|e| io_status("writing the upload file", &e))?;
            at += len;
            upload.committed.store(at, Ordering::Release);
            upload.touch();
            if msg.finish_write {
                break;
            }
            msg = match next_message(&mut stream, stall).await? {
                Some(m) => m,
                None => {
                    return Err(invalid(format!(
                        "the stream ended before finish_write; {at} bytes are committed, resume there"
                    )));
                }
            };
        }
        if at != d.size {
            drop(guard);
            self.uploads.remove(&key);
            return Err(invalid(format!(
                "finish_write after {at} of {} bytes",
                d.size
            )));
        }
        let result = async {
            file.flush().await?;
            let f = file.get_mut();
            f.seek(SeekFrom::Start(0)).await?;
            f.try_clone().await
        }
        .await;
        let f = match result {
            Ok(f) => f,
            Err(e) => return Err(io_status("reading back the upload file", &e)),
        };
        let put = s.store.put(put_request, file_body(f)).await;
        drop(guard);
        self.uploads.remove(&key);
        match put {
            Ok(m) => {
                count(s, CAS_LABEL, false, "ok", m.len);
                Ok(done)
            }
            Err(e) => {
                count(s, CAS_LABEL, false, "error", 0);
                Err(store_status(&e))
            }
        }
    }

    async fn query_write_status(
        &self,
        request: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        let s = &self.state;
        let name = resource::parse_write(&request.get_ref().resource_name)
            .map_err(|e| invalid(e.to_string()))?;
        let ns = namespace(&name.blob.instance)?;
        authorize(s, request.metadata(), &ns, true)?;
        let d = plain_sha256(&name.blob)?;
        let id = cas_id(s, &ns, &d.hash)?;
        if d.is_empty_blob() || self.exists(&id, d.size)? {
            return Ok(Response::new(QueryWriteStatusResponse {
                committed_size: i64::try_from(d.size).unwrap_or(i64::MAX),
                complete: true,
            }));
        }
        match self.uploads.get(&upload_key(&ns, &name.uuid, &d)) {
            Some(u) => Ok(Response::new(QueryWriteStatusResponse {
                committed_size: i64::try_from(u.committed.load(Ordering::Acquire))
                    .unwrap_or(i64::MAX),
                complete: false,
            })),
            None => Err(Status::not_found(format!(
                "no upload in progress for {}",
                name
            ))),
        }
    }
}
