//! Request path pieces → store identities. Everything a client puts in a URL is
//! validated here; anything outside the grammar is a 400 with the reason.

use kura_store::{Key, Namespace};

use crate::error::ApiError;

/// The namespace served by the mount points without `/ns/{namespace}`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest accepted client key (one path segment).
pub const MAX_CLIENT_KEY: usize = 512;

/// Validates a namespace name from a URL or query.
pub fn namespace(s: &str) -> Result<Namespace, ApiError> {
    Namespace::new(s).map_err(|e| ApiError::bad_request(format!("invalid namespace {s:?}: {e}")))
}

/// Validates a single client key segment: 1–512 bytes of `[A-Za-z0-9._-]`, not
/// starting with `.` (so `.` and `..` are impossible).
pub fn segment(s: &str) -> Result<&str, ApiError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_CLIENT_KEY
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid key {:?}: expected 1-{MAX_CLIENT_KEY} characters of [A-Za-z0-9._-], not starting with '.'",
            s.chars().take(80).collect::<String>()
        )))
    }
}

/// A 64-character lowercase hex SHA-256 (Bazel keys).
pub fn sha256_hex(s: &str) -> Result<&str, ApiError> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(s)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid SHA-256 {:?}: expected 64 lowercase hex characters",
            s.chars().take(80).collect::<String>()
        )))
    }
}

/// The ccache key of a request path under the ccache mount, for every layout:
/// `subdirs` (`70/814jbpi…`), `flat` (`70814jbpi…`) and `bazel`
/// (`ac/<64 hex>`). Segments are validated and joined without separators, so
/// the `subdirs` and `flat` spellings of one key name the same object.
pub fn ccache_key(path: &str) -> Result<String, ApiError> {
    let mut key = String::new();
    for seg in path.split('/') {
        key.push_str(segment(seg)?);
    }
    if key.len() > MAX_CLIENT_KEY {
        return Err(ApiError::bad_request("ccache key too long"));
    }
    Ok(key)
}

/// The store key `<prefix>/<key>`.
pub fn store_key(prefix: &str, key: &str) -> Result<Key, ApiError> {
    Key::new(format!("{prefix}/{key}"))
        .map_err(|e| ApiError::bad_request(format!("invalid key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccache_layouts_share_keys() {
        assert_eq!(ccache_key("70/814jbpi").unwrap(), "70814jbpi");
        assert_eq!(ccache_key("70814jbpi").unwrap(), "70814jbpi");
        assert!(ccache_key("../etc").is_err());
        assert!(ccache_key("a//b").is_err());
        assert!(ccache_key("a/.b").is_err());
    }

    #[test]
    fn segments() {
        assert!(segment("0123abcd").is_ok());
        assert!(segment("..").is_err());
        assert!(segment("a/b").is_err());
        assert!(segment("a\0").is_err());
        assert!(segment(&"a".repeat(513)).is_err());
        assert!(sha256_hex(&"a".repeat(64)).is_ok());
        assert!(sha256_hex(&"A".repeat(64)).is_err());
    }
}
