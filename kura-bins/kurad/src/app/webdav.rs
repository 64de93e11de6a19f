//! sccache's WebDAV backend (Apache OpenDAL's `webdav` service): the minimal
//! WebDAV subset it uses, over one store namespace.
//!
//! What sccache 0.16 sends (observed against a logging server): `GET
//! {root}/.sccache_check`, `PROPFIND` with `Depth: 0` on the root collection,
//! `MKCOL` when that answers 404, `PUT {root}/.sccache_check`, then per
//! compilation `GET {root}/a/b/c/<hash>` and on a miss `PROPFIND Depth: 0` on
//! the parent collections followed by `MKCOL` and `PUT`.
//!
//! Collections are implicit: objects are stored under their full path, and
//! every collection path (one ending in `/`) exists. `PROPFIND Depth: 0` on a
//! collection is always a 207, `MKCOL` is a 201 (405 when an object already
//! has that path), `PROPFIND Depth: 1` lists the objects and sub-collections
//! found under the path, `Depth: infinity` is refused with 403
//! (`propfind-finite-depth`), and `DELETE` of a collection deletes every object
//! under it.

use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kura_store::{Key, ObjectMeta};

use super::{
    Kind, OCTET, Params, Shared, Target, authorize, body, not_found, ns_param, read_object,
    replace_object, respond,
};
use crate::error::{ApiError, Style};
use crate::keys::MAX_CLIENT_KEY;

/// Methods answered on the WebDAV mount (the `Allow` header).
const ALLOW: &str = "OPTIONS, GET, HEAD, PUT, DELETE, MKCOL, PROPFIND";

/// Largest PROPFIND/MKCOL request body accepted (the body is not interpreted:
/// every PROPFIND is answered with the same live properties).
const MAX_DAV_BODY: u64 = 64 << 10;

/// Most objects a `Depth: 1` listing or a collection `DELETE` walks.
pub(crate) const MAX_LISTING: usize = 100_000;

/// A parsed path below the mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DavPath {
    /// The path without leading or trailing `/` (empty for the root).
    pub(crate) path: String,
    /// Whether the request named a collection (trailing `/`, or the root).
    pub(crate) collection: bool,
}

/// Parses the path below the mount point. Segments are 1–255 bytes of
/// `[A-Za-z0-9._-]` other than `.` and `..`; empty segments (repeated
/// slashes) are skipped; the whole path is at most [`MAX_CLIENT_KEY`] bytes.
pub(crate) fn dav_path(raw: &str) -> Result<DavPath, ApiError> {
    let collection = raw.is_empty() || raw.ends_with('/');
    let mut path = String::with_capacity(raw.len());
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        let ok = seg.len() <= 255
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(ApiError::bad_request(format!(
                "invalid WebDAV path segment {:?}: expected 1-255 characters of [A-Za-z0-9._-], not . or ..",
                seg.chars().take(80).collect::<String>()
            )));
        }
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(seg);
    }
    if path.len() > MAX_CLIENT_KEY {
        return Err(ApiError::bad_request(format!(
            "WebDAV path longer than {MAX_CLIENT_KEY} bytes"
        )));
    }
    Ok(DavPath {
        collection: collection || path.is_empty(),
        path,
    })
}

/// The mount's URL path for this request (`/sccache` or `/ns/{ns}/sccache`).
fn mount_href(p: &Params) -> String {
    match p.get("namespace") {
        Some(ns) => format!("/ns/{ns}/sccache"),
        None => "/sccache".to_owned(),
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for milliseconds since the Unix epoch.
pub(crate) fn http_date(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        .get((days % 7) as usize)
        .copied()
        .unwrap_or("Thu");
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .get((month - 1) as usize)
    .copied()
    .unwrap_or("Jan");
    format!("{weekday}, {d:02} {mon} {year} {h:02}:{m:02}:{s:02} GMT")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One `<D:response>` element. Hrefs are built from validated segments
/// (`[A-Za-z0-9._/-]`), so they need neither URL nor XML escaping.
fn response_xml(out: &mut String, href: &str, meta: Option<&ObjectMeta>) {
    out.push_str("<D:response><D:href>");
    out.push_str(href);
    out.push_str("</D:href><D:propstat><D:prop>");
    match meta {
        Some(m) => {
            let _ = write!(
                out,
                "<D:resourcetype/><D:getcontentlength>{}</D:getcontentlength>\
                 <D:getetag>\"{}\"</D:getetag><D:getcontenttype>{OCTET}</D:getcontenttype>\
                 <D:getlastmodified>{}</D:getlastmodified>",
                m.len,
                m.digest.to_hex(),
                http_date(m.created_ms)
            );
        }
        None => {
            let _ = write!(
                out,
                "<D:resourcetype><D:collection/></D:resourcetype>\
                 <D:getlastmodified>{}</D:getlastmodified>",
                http_date(now_ms())
            );
        }
    }
    out.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>");
}

fn multistatus(body: String) -> Response {
    let mut xml = String::with_capacity(body.len() + 128);
    xml.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?><D:multistatus xmlns:D=\"DAV:\">");
    xml.push_str(&body);
    xml.push_str("</D:multistatus>");
    (
        StatusCode::MULTI_STATUS,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}

/// The objects whose key starts with `prefix` (a store key ending in `/`), in
/// key order, at most [`MAX_LISTING`]; the flag says the walk was cut short.
fn objects_under(
    s: &Shared,
    t: &Target,
    prefix: &str,
    limit: usize,
) -> Result<(Vec<ObjectMeta>, bool), ApiError> {
    let ns = t.id.namespace_id();
    // Keys sort bytewise; the first key with this prefix comes after the
    // prefix without its trailing '/' (followed by the store's 0 separator).
    let start = Key::new(prefix.trim_end_matches('/')).map_err(ApiError::from)?;
    let mut after = Some(start);
    let mut out = Vec::new();
    loop {
        let page = s.store.list(&ns, after.as_ref(), 1000)?;
        let full = page.len() == 1000;
        let mut past = false;
        for m in page {
            let k = m.id.key.as_str();
            if k.starts_with(prefix) {
                after = Some(m.id.key.clone());
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(m);
            } else if k > prefix {
                past = true;
                break;
            } else {
                // Between `start` and `prefix` in byte order (e.g. `a/b-c` for
                // prefix `a/b/`): skip.
                after = Some(m.id.key.clone());
            }
        }
        if past || !full {
            return Ok((out, false));
        }
    }
}

/// Every method on the sccache mount.
pub(super) async fn dav_any(
    State(s): State<Shared>,
    Path(p): Path<Params>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let dp = dav_path(p.get("path").map_or("", String::as_str))?;
        // The root collection maps to the bare prefix key, which never holds
        // an object (objects need a non-empty path below the mount).
        let t = if dp.path.is_empty() {
            let ns = crate::keys::namespace(ns_param(&p))?;
            let key = Key::new(Kind::Sccache.prefix()).map_err(ApiError::from)?;
            Target {
                kind: Kind::Sccache,
                id: kura_store::ObjectId::new(s.config.account.clone(), ns.clone(), key),
                ns,
            }
        } else {
            Target::new(&s, Kind::Sccache, ns_param(&p), &dp.path)?
        };
        let prefix = if dp.path.is_empty() {
            format!("{}/", Kind::Sccache.prefix())
        } else {
            format!("{}/{}/", Kind::Sccache.prefix(), dp.path)
        };
        let href = if dp.path.is_empty() {
            format!("{}/", mount_href(&p))
        } else {
            format!("{}/{}", mount_href(&p), dp.path)
        };
        match method.as_str() {
            "OPTIONS" => Ok((
                StatusCode::OK,
                [
                    (header::ALLOW, HeaderValue::from_static(ALLOW)),
                    (
                        header::HeaderName::from_static("dav"),
                        HeaderValue::from_static("1"),
                    ),
                ],
            )
                .into_response()),
            "GET" | "HEAD" if !dp.collection => {
                read_object(&s, &t, &headers, method == Method::HEAD, OCTET).await
            }
            "PUT" if !dp.collection => replace_object(&s, &t, &headers, body).await,
            "DELETE" => {
                authorize(&s, &headers, &t.ns, true, Style::Json)?;
                if !dp.collection {
                    return if s.store.delete(&t.id).await? {
                        Ok(StatusCode::NO_CONTENT.into_response())
                    } else {
                        Err(not_found(Kind::Sccache))
                    };
                }
                let (objects, _) = objects_under(&s, &t, &prefix, MAX_LISTING)?;
                for m in objects {
                    s.store.delete(&m.id).await?;
                }
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            "MKCOL" => {
                authorize(&s, &headers, &t.ns, true, Style::Json)?;
                if body::declared_length(&headers)?.is_some_and(|n| n > 0)
                    || headers.contains_key(header::TRANSFER_ENCODING)
                {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "MKCOL with a request body is not supported",
                    ));
                }
                if !dp.path.is_empty() && s.store.head(&t.id)?.is_some() {
                    return Err(ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "an object already has this path",
                    ));
                }
                Ok(StatusCode::CREATED.into_response())
            }
            "PROPFIND" => {
                authorize(&s, &headers, &t.ns, false, Style::Json)?;
                body::check_declared(body::declared_length(&headers)?, MAX_DAV_BODY)?;
                let depth = match headers.get("depth").map(HeaderValue::as_bytes) {
                    Some(b"0") => 0,
                    Some(b"1") => 1,
                    Some(d) if d.eq_ignore_ascii_case(b"infinity") => u8::MAX,
                    None => u8::MAX,
                    Some(_) => return Err(ApiError::bad_request("invalid Depth header")),
                };
                if depth == u8::MAX {
                    return Ok((
                        StatusCode::FORBIDDEN,
                        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
                         <D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>",
                    )
                        .into_response());
                }
                let mut xml = String::new();
                if !dp.collection {
                    if let Some(meta) = s.store.head(&t.id)? {
                        response_xml(&mut xml, &href, Some(&meta));
                        return Ok(multistatus(xml));
                    }
                    // Not an object: a collection when something lives below it.
                    if objects_under(&s, &t, &prefix, 1)?.0.is_empty() {
                        return Err(not_found(Kind::Sccache));
                    }
                }
                let dir_href = if href.ends_with('/') {
                    href.clone()
                } else {
                    format!("{href}/")
                };
                response_xml(&mut xml, &dir_href, None);
                if depth == 1 {
                    let (objects, _) = objects_under(&s, &t, &prefix, MAX_LISTING)?;
                    let mut last_dir: Option<String> = None;
                    for m in &objects {
                        let rest = m.id.key.as_str().get(prefix.len()..).unwrap_or("");
                        match rest.split_once('/') {
                            None => response_xml(&mut xml, &format!("{dir_href}{rest}"), Some(m)),
                            Some((dir, _)) => {
                                if last_dir.as_deref() != Some(dir) {
                                    response_xml(&mut xml, &format!("{dir_href}{dir}/"), None);
                                    last_dir = Some(dir.to_owned());
                                }
                            }
                        }
                    }
                }
                Ok(multistatus(xml))
            }
            "GET" | "HEAD" | "PUT" => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "collections have no content",
            )),
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            )),
        }
    };
    let mut resp = respond(r.await);
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn paths() {
        let p = dav_path("").unwrap();
        assert!(p.collection && p.path.is_empty());
        let p = dav_path("/.sccache_check").unwrap();
        assert_eq!(p.path, ".sccache_check");
        assert!(!p.collection);
        let p = dav_path("2/f/f/").unwrap();
        assert_eq!(p.path, "2/f/f");
        assert!(p.collection);
        assert!(dav_path("a/../b").is_err());
        assert!(dav_path("a/./b").is_err());
        assert!(dav_path("a/b\0").is_err());
        assert!(dav_path("a b").is_err());
        assert!(dav_path(&"a/".repeat(300)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn accepted_paths_are_clean(raw in "[a-z./_\\-\\x00 %]{0,40}") {
            if let Ok(p) = dav_path(&raw) {
                proptest::prop_assert!(!p.path.starts_with('/') && !p.path.ends_with('/'));
                for seg in p.path.split('/').filter(|_| !p.path.is_empty()) {
                    proptest::prop_assert!(!seg.is_empty() && seg != "." && seg != "..");
                    proptest::prop_assert!(seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
                }
                // Parsing the canonical form again is the identity.
                let again = dav_path(&p.path).unwrap();
                proptest::prop_assert_eq!(again.path, p.path.clone());
                proptest::prop_assert_eq!(p.collection, p.path.is_empty() || raw.ends_with('/'));
            }
        }
    }
}
