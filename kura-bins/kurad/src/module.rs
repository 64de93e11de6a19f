//! Module multipart uploads (`/api/cache/module/*`), compatible with the Kura
//! node: start an upload, send numbered parts, complete with the list of
//! parts. Parts are spooled to files under `<tmp dir>/uploads/<id>/`; completion
//! streams them in order straight into the store, so the data is copied once
//! more, not twice. Uploads expire after [`UPLOAD_TTL`]; at most
//! [`MAX_UPLOADS`] run at once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use kura_store::{Key, Namespace, ObjectId, PutRequest};
use tokio::io::AsyncWriteExt;

use crate::app::{AppState, compat_ns, respond_public as respond};
use crate::body::{self, LimitedBody};
use crate::error::ApiError;
use crate::keys;

/// Largest part.
pub const MAX_PART_BYTES: u64 = 10 << 20;
/// Largest assembled artifact.
pub const MAX_TOTAL_BYTES: u64 = 2 << 30;
/// Uploads not completed within this time are discarded.
pub const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// Concurrent uploads.
pub const MAX_UPLOADS: usize = 256;

type Params = HashMap<String, String>;
type Shared = std::sync::Arc<AppState>;

/// One upload in progress.
#[derive(Debug)]
pub struct Upload {
    ns: Namespace,
    key: Key,
    dir: PathBuf,
    started: Instant,
    parts: BTreeMap<u32, u64>,
}

impl Upload {
    fn total(&self) -> u64 {
        self.parts.values().sum()
    }
}

/// The uploads table.
#[derive(Debug, Default)]
pub struct Uploads {
    inner: std::sync::Mutex<HashMap<String, Upload>>,
}

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops expired uploads and their files.
    fn sweep(&self) {
        let expired: Vec<Upload> = {
            let mut map = self.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, u)| u.started.elapsed() > UPLOAD_TTL)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for u in expired {
            let _ = std::fs::remove_dir_all(&u.dir);
        }
    }
}

fn new_upload_id() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("random: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// `{category}/{hash}/{name}` from the query.
fn module_key(q: &Params) -> Result<Key, ApiError> {
    let hash = q
        .get("hash")
        .ok_or_else(|| ApiError::bad_request("Missing hash"))?;
    let name = q
        .get("name")
        .ok_or_else(|| ApiError::bad_request("Missing name"))?;
    let category = q.get("cache_category").map_or("builds", String::as_str);
    let (c, h, n) = (
        keys::segment(category)?,
        keys::segment(hash)?,
        keys::segment(name)?,
    );
    keys::store_key("module", &format!("{c}/{h}/{n}"))
}

fn object_id(s: &AppState, ns: &Namespace, key: &Key) -> ObjectId {
    ObjectId::new(s.config.account.clone(), ns.clone(), key.clone())
}

fn upload_id(q: &Params) -> Result<&str, ApiError> {
    let id = q
        .get("upload_id")
        .ok_or_else(|| ApiError::bad_request("Missing upload_id"))?;
    // Only ids we could have issued (also keeps them safe as directory names).
    if id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        Ok(id)
    } else {
        Err(ApiError::not_found())
    }
}

/// `POST /api/cache/module/start`.
pub async fn start(
    State(s): State<Shared>,
    Query(q): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        crate::app::authorize_public(&s, &headers, &ns, true)?;
        let key = module_key(&q)?;
        if s.store.head(&object_id(&s, &ns, &key))?.is_some() {
            return Ok(axum::Json(serde_json::json!({ "upload_id": null })).into_response());
        }
        s.uploads.sweep();
        if s.uploads.lock().len() >= MAX_UPLOADS {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many uploads in progress",
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        let id = new_upload_id()?;
        let dir = s.config.tmp_dir.join("uploads").join(&id);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("upload dir: {e}"),
            )
        })?;
        s.uploads.lock().insert(
            id.clone(),
            Upload {
                ns,
                key,
                dir,
                started: Instant::now(),
                parts: BTreeMap::new(),
            },
        );
        Ok(axum::Json(serde_json::json!({ "upload_id": id })).into_response())
    };
    respond(r.await)
}

/// `POST /api/cache/module/part`.
pub async fn part(
    State(s): State<Shared>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let id = upload_id(&q)?.to_owned();
        let number: u32 = q
            .get("part_number")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 1 && *n <= 10_000)
            .ok_or_else(|| {
                ApiError::bad_request("part_number must be an integer from 1 to 10000")
            })?;
        let (ns, dir, total_before) = {
            let map = s.uploads.lock();
            let u = map.get(&id).ok_or_else(ApiError::not_found)?;
            (
                u.ns.clone(),
                u.dir.clone(),
                u.total() - u.parts.get(&number).copied().unwrap_or(0),
            )
        };
        crate::app::authorize_public(&s, &headers, &ns, true)?;
        let declared = body::declared_length(&headers)?;
        body::check_declared(declared, MAX_PART_BYTES)?;
        if total_before + declared.unwrap_or(0) > MAX_TOTAL_BYTES {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "upload exceeds 2 GiB",
            ));
        }
        let tmp = dir.join(format!("{number}.part.tmp"));
        let path = dir.join(format!("{number}.part"));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("part file: {e}"))
        })?;
        let mut stream = LimitedBody::new(body, MAX_PART_BYTES, s.config.body_timeout);
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    let over = e.get_ref().is_some_and(|x| x.is::<body::OverLimit>());
                    return Err(ApiError::new(
                        if over {
                            StatusCode::PAYLOAD_TOO_LARGE
                        } else {
                            StatusCode::BAD_REQUEST
                        },
                        e.to_string(),
                    ));
                }
            };
            len += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|e| {
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("spooling part: {e}"),
                )
            })?;
        }
        if declared.is_some_and(|d| d != len) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ApiError::bad_request("body shorter than Content-Length"));
        }
        file.flush().await.ok();
        drop(file);
        tokio::fs::rename(&tmp, &path).await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("part file: {e}"))
        })?;
        let mut map = s.uploads.lock();
        let u = map.get_mut(&id).ok_or_else(ApiError::not_found)?;
        if total_before + len > MAX_TOTAL_BYTES {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "upload exceeds 2 GiB",
            ));
        }
        u.parts.insert(number, len);
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    respond(r.await)
}

#[derive(serde::Deserialize)]
struct Complete {
    parts: Vec<u32>,
}

/// `POST /api/cache/module/complete`.
pub async fn complete(
    State(s): State<Shared>,
    Query(q): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let id = upload_id(&q)?.to_owned();
        let ns = {
            let map = s.uploads.lock();
            map.get(&id).ok_or_else(ApiError::not_found)?.ns.clone()
        };
        crate::app::authorize_public(&s, &headers, &ns, true)?;
        let mut data = Vec::new();
        let mut stream = LimitedBody::new(body, 1 << 20, s.config.body_timeout);
        while let Some(c) = stream.next().await {
            data.extend_from_slice(&c.map_err(|e| ApiError::bad_request(e.to_string()))?);
        }
        let req: Complete = serde_json::from_slice(&data)
            .map_err(|_| ApiError::bad_request("Invalid complete payload"))?;
        // Take the upload out: a second complete of the same id is a 404.
        let upload = {
            let mut map = s.uploads.lock();
            let u = map.get(&id).ok_or_else(ApiError::not_found)?;
            let uploaded: Vec<u32> = u.parts.keys().copied().collect();
            if req.parts != uploaded {
                return Err(ApiError::bad_request(format!(
                    "parts {:?} do not match the uploaded parts {:?}",
                    req.parts, uploaded
                )));
            }
            map.remove(&id).ok_or_else(ApiError::not_found)?
        };
        let result = assemble(&s, &upload).await;
        let _ = tokio::fs::remove_dir_all(&upload.dir).await;
        result?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    respond(r.await)
}

/// Streams the parts, in order, into the store as one object.
async fn assemble(s: &AppState, u: &Upload) -> Result<(), ApiError> {
    use tokio::io::AsyncReadExt;
    let files: Vec<PathBuf> = u
        .parts
        .keys()
        .map(|n| u.dir.join(format!("{n}.part")))
        .collect();
    let state = (files.into_iter(), None::<tokio::fs::File>);
    let stream = futures_util::stream::unfold(state, |(mut files, mut current)| async move {
        loop {
            let file = match current.as_mut() {
                Some(f) => f,
                None => match tokio::fs::File::open(files.next()?).await {
                    Ok(f) => current.insert(f),
                    Err(e) => return Some((Err(e), (files, None))),
                },
            };
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => current = None,
                Ok(n) => {
                    buf.truncate(n);
                    return Some((Ok(bytes::Bytes::from(buf)), (files, current)));
                }
                Err(e) => return Some((Err(e), (files, None))),
            }
        }
    });
    let req = PutRequest::new(object_id(s, &u.ns, &u.key))
        .with_content_type("application/octet-stream")
        .with_len(u.total());
    s.store
        .put(req, Box::pin(stream))
        .await
        .map_err(body::write_error)?;
    Ok(())
}

/// `GET`/`HEAD /api/cache/module/{id}`: 200/404, and 204/404 for HEAD.
pub async fn fetch(
    State(s): State<Shared>,
    Path(_p): Path<Params>,
    Query(q): Query<Params>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let ns = compat_ns(&s, &q)?;
        crate::app::authorize_public(&s, &headers, &ns, false)?;
        let id = object_id(&s, &ns, &module_key(&q)?);
        if method == Method::HEAD {
            return Ok(match s.store.head(&id)? {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            });
        }
        match s.store.get(&id).await? {
            Some(object) => {
                body::serve_object(
                    object,
                    &headers,
                    "application/octet-stream",
                    body::Serve::default(),
                )
                .await
            }
            None => Err(ApiError::not_found()),
        }
    };
    respond(r.await)
}
