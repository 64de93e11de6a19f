//! Pure request building: an [`ApiRequest`] describes one call and turns into
//! an [`http::Request`] without any I/O.

use bytes::Bytes;
use http::{HeaderValue, Method};
use serde::Serialize;

use crate::Error;

/// The default API endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.scaleway.com";

/// A Scaleway secret key. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a secret key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    /// The key, for the `X-Auth-Token` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The body of an [`ApiRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// `application/json`.
    Json(Bytes),
    /// `text/plain` (Instance user data).
    Text(Bytes),
}

/// One API call, independent of any transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path, already percent-encoded, starting with `/`.
    pub path: String,
    /// Query parameters in order (keys may repeat).
    pub query: Vec<(String, String)>,
    /// Body.
    pub body: RequestBody,
    /// Whether sending it twice has the same effect as once; only idempotent
    /// requests are retried after a 5xx or a transport failure.
    pub idempotent: bool,
}

/// Percent-encodes one path segment or query component (RFC 3986 unreserved
/// characters stay as they are).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded component (`+` is a space). Invalid escapes are
/// kept literally.
pub fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds a path from segments, encoding each one.
pub(crate) fn path(segments: &[&str]) -> String {
    let mut p = String::new();
    for s in segments {
        p.push('/');
        p.push_str(&encode_component(s));
    }
    p
}

impl ApiRequest {
    fn new(method: Method, path: String, idempotent: bool) -> Self {
        Self {
            method,
            path,
            query: Vec::new(),
            body: RequestBody::Empty,
            idempotent,
        }
    }
    /// A `GET` (idempotent).
    pub fn get(path: String) -> Self {
        Self::new(Method::GET, path, true)
    }
    /// A `POST` (not idempotent unless marked with [`ApiRequest::idempotent`]).
    pub fn post(path: String) -> Self {
        Self::new(Method::POST, path, false)
    }
    /// A `PATCH` (idempotent: it sets fields to given values).
    pub fn patch(path: String) -> Self {
        Self::new(Method::PATCH, path, true)
    }
    /// A `PUT` (idempotent).
    pub fn put(path: String) -> Self {
        Self::new(Method::PUT, path, true)
    }
    /// A `DELETE` (idempotent: a second one answers 404, which callers treat as done).
    pub fn delete(path: String) -> Self {
        Self::new(Method::DELETE, path, true)
    }
    /// Overrides idempotency.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
    /// Adds a query parameter.
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_owned(), value.to_string()));
        self
    }
    /// Adds a query parameter when `value` is `Some`.
    pub fn query_opt(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.query(key, v),
            None => self,
        }
    }
    /// Repeats `key` for each value (standard APIs: `tags=a&tags=b`).
    pub fn query_repeat<S: ToString>(
        mut self,
        key: &str,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        for v in values {
            self.query.push((key.to_owned(), v.to_string()));
        }
        self
    }
    /// Comma-joins values under `key` (Instance lists: `tags=a,b`); nothing
    /// when there are none.
    pub fn query_comma<S: AsRef<str>>(self, key: &str, values: &[S]) -> Self {
        if values.is_empty() {
            return self;
        }
        let joined = values
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",");
        self.query(key, joined)
    }
    /// Sets a JSON body.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::InvalidInput {
            message: format!("cannot encode request body: {e}"),
        })?;
        self.body = RequestBody::Json(Bytes::from(bytes));
        Ok(self)
    }
    /// Sets a `text/plain` body.
    pub fn text(mut self, body: impl Into<Bytes>) -> Self {
        self.body = RequestBody::Text(body.into());
        self
    }
    /// The path and query string.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q = self
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
            .collect::<Vec<_>>()
            .join("&");
        format!("{}?{}", self.path, q)
    }
    /// Builds the HTTP request for `base_url` authenticated with `key`.
    pub fn to_http(&self, base_url: &str, key: &SecretKey) -> Result<http::Request<Bytes>, Error> {
        let uri = format!(
            "{}{}",
            base_url.trim_end_matches('/'),
            self.path_and_query()
        );
        let token = HeaderValue::from_str(key.expose()).map_err(|_| Error::InvalidInput {
            message: "secret key is not a valid header value".into(),
        })?;
        let mut builder = http::Request::builder()
            .method(self.method.clone())
            .uri(&uri)
            .header("x-auth-token", token)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("kura-scaleway/", env!("CARGO_PKG_VERSION")),
            );
        let body = match &self.body {
            RequestBody::Empty => Bytes::new(),
            RequestBody::Json(b) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                b.clone()
            }
            RequestBody::Text(b) => {
                builder = builder.header(http::header::CONTENT_TYPE, "text/plain");
                b.clone()
            }
        };
        builder.body(body).map_err(|e| Error::InvalidInput {
            message: format!("invalid request {uri}: {e}"),
        })
    }
}

/// Parses a query string into decoded pairs.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode_component(k), decode_component(v)),
            None => (decode_component(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_encoded_request_with_token() {
        let req = ApiRequest::get(path(&["instance", "v1", "zones", "fr-par-1", "servers"]))
            .query("name", "a b&c")
            .query_comma("tags", &["x", "y"])
            .query_repeat("ids", ["1", "2"]);
        let http = req
            .to_http("https://api.example/", &SecretKey::new("tok"))
            .unwrap();
        assert_eq!(
            http.uri().to_string(),
            "https://api.example/instance/v1/zones/fr-par-1/servers?name=a%20b%26c&tags=x%2Cy&ids=1&ids=2"
        );
        assert_eq!(http.headers()["x-auth-token"], "tok");
        assert_eq!(
            format!("{:?}", SecretKey::new("tok")),
            "SecretKey(<redacted>)"
        );
    }

    proptest::proptest! {
        #[test]
        fn component_encoding_round_trips(s in ".{0,40}") {
            proptest::prop_assert_eq!(decode_component(&encode_component(&s)), s.clone());
            let q = ApiRequest::get("/x".into()).query(&s, &s).path_and_query();
            let pairs = parse_query(q.split_once('?').map_or("", |(_, q)| q));
            proptest::prop_assert_eq!(pairs, vec![(s.clone(), s)]);
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(s in "[%+a-f0-9&=]{0,40}|.{0,40}") {
            let _ = parse_query(&s);
            let _ = decode_component(&s);
        }
    }

    #[test]
    fn query_round_trip() {
        let pairs = parse_query("a=1&b=x%2Cy&c=%E2%9C%93&d&e=%zz&f=%4");
        assert_eq!(pairs[1], ("b".into(), "x,y".into()));
        assert_eq!(pairs[2].1, "✓");
        assert_eq!(pairs[3], ("d".into(), String::new()));
        assert_eq!(pairs[4].1, "%zz");
        assert_eq!(pairs[5].1, "%4");
    }
}
