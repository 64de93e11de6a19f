//! ByteStream resource names (REAPI v2, "Uploads"/"Downloads" sections of
//! `remote_execution.proto`).
//!
//! ```text
//! read:  [{instance}/]blobs/[{digest_function}/]{hash}/{size}
//!        [{instance}/]compressed-blobs/{compressor}/[{digest_function}/]{hash}/{size}
//! write: [{instance}/]uploads/{uuid}/blobs/[{digest_function}/]{hash}/{size}[/{metadata}]
//!        [{instance}/]uploads/{uuid}/compressed-blobs/{compressor}/[{digest_function}/]{hash}/{size}[/{metadata}]
//! ```
//!
//! Parsing is total: any string gives a value or a [`ResourceError`], never a
//! panic, and [`std::fmt::Display`] writes the canonical form back, so
//! `parse(x.to_string()) == x`; an accepted name is already canonical
//! (`parse(s)?.to_string() == s`). Property tests and the `reapi_resource`
//! fuzz target check both.
//!
//! ```
//! use kurad::reapi::resource::{parse_read, parse_write};
//!
//! let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
//! let read = parse_read(&format!("ci/blobs/{h}/0"))?;
//! assert_eq!((read.instance.as_str(), read.size), ("ci", 0));
//! let write = parse_write(&format!("uploads/u-1/blobs/{h}/0"))?;
//! assert_eq!(write.to_string(), format!("uploads/u-1/blobs/{h}/0"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

/// Digest function names that may appear between `blobs/` and the hash
/// (lowercase names of `DigestFunction.Value`).
pub const DIGEST_FUNCTIONS: &[&str] = &[
    "sha256",
    "sha1",
    "md5",
    "vso",
    "sha384",
    "sha512",
    "murmur3",
    "sha256tree",
    "blake3",
];

/// Why a resource name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource name: {reason}")]
pub struct ResourceError {
    /// What is wrong.
    pub reason: &'static str,
}

fn err(reason: &'static str) -> ResourceError {
    ResourceError { reason }
}

/// A blob named by a resource: `blobs/…` or `compressed-blobs/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobName {
    /// Instance name (may contain `/`; empty for the default instance).
    pub instance: String,
    /// The compressor of a `compressed-blobs` name (`zstd`, `deflate`, …).
    pub compressor: Option<String>,
    /// An explicit digest function segment (`sha256`, `blake3`, …).
    pub digest_function: Option<String>,
    /// The hash: lowercase hex.
    pub hash: String,
    /// The (uncompressed) size in bytes; at most `i64::MAX`.
    pub size: u64,
}

/// A write resource: `uploads/{uuid}/` followed by a [`BlobName`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteName {
    /// The blob.
    pub blob: BlobName,
    /// The client's upload id.
    pub uuid: String,
    /// Trailing metadata the server ignores (without the leading `/`).
    pub metadata: Option<String>,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_size(s: &str) -> Result<u64, ResourceError> {
    let canonical = !s.is_empty()
        && s.len() <= 19
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return Err(err("size is not a canonical decimal number"));
    }
    match s.parse::<u64>() {
        Ok(n) if i64::try_from(n).is_ok() => Ok(n),
        _ => Err(err("size is larger than 2^63-1")),
    }
}

fn check_instance(segments: &[&str]) -> Result<String, ResourceError> {
    if segments.iter().any(|s| s.is_empty()) {
        return Err(err("empty path segment in the instance name"));
    }
    Ok(segments.join("/"))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses the blob part (`blobs/…` or `compressed-blobs/…`, starting at
/// `rest[0]`). Returns the blob and the number of segments used.
fn parse_blob(instance: String, rest: &[&str]) -> Result<(BlobName, usize), ResourceError> {
    let mut i = 0;
    let compressor = match rest.first() {
        Some(&"blobs") => {
            i += 1;
            None
        }
        Some(&"compressed-blobs") => {
            let c = rest.get(1).ok_or_else(|| err("missing compressor"))?;
            if !is_name(c) {
                return Err(err("invalid compressor"));
            }
            i += 2;
            Some((*c).to_owned())
        }
        _ => return Err(err("expected blobs or compressed-blobs")),
    };
    let digest_function = match rest.get(i) {
        Some(s) if DIGEST_FUNCTIONS.contains(s) => {
            i += 1;
            Some((*s).to_owned())
        }
        _ => None,
    };
    let hash = rest.get(i).ok_or_else(|| err("missing hash"))?;
    if !is_hex(hash) || hash.len() > 128 {
        return Err(err("hash is not 1-128 lowercase hex digits"));
    }
    let size = parse_size(rest.get(i + 1).ok_or_else(|| err("missing size"))?)?;
    Ok((
        BlobName {
            instance,
            compressor,
            digest_function,
            hash: (*hash).to_owned(),
            size,
        },
        i + 2,
    ))
}

/// Parses a `Read` resource name.
pub fn parse_read(name: &str) -> Result<BlobName, ResourceError> {
    let segs: Vec<&str> = name.split('/').collect();
    let at = segs
        .iter()
        .position(|s| *s == "blobs" || *s == "compressed-blobs")
        .ok_or_else(|| err("expected blobs/ or compressed-blobs/"))?;
    let instance = check_instance(&segs[..at])?;
    let (blob, used) = parse_blob(instance, &segs[at..])?;
    if at + used != segs.len() {
        return Err(err("unexpected segments after the size"));
    }
    Ok(blob)
}

/// Parses a `Write` (or `QueryWriteStatus`) resource name.
pub fn parse_write(name: &str) -> Result<WriteName, ResourceError> {
    let segs: Vec<&str> = name.split('/').collect();
    let at = segs
        .iter()
        .position(|s| *s == "uploads")
        .ok_or_else(|| err("expected uploads/"))?;
    let instance = check_instance(&segs[..at])?;
    let uuid = segs.get(at + 1).ok_or_else(|| err("missing upload id"))?;
    if uuid.is_empty() || uuid.len() > 128 {
        return Err(err("upload id must be 1-128 bytes"));
    }
    let start = at + 2;
    let (blob, used) = parse_blob(instance, segs.get(start..).unwrap_or(&[]))?;
    let end = start + used;
    let metadata = if end < segs.len() {
        let m = segs[end..].join("/");
        if m.is_empty() {
            return Err(err("empty metadata after the size"));
        }
        Some(m)
    } else {
        None
    };
    Ok(WriteName {
        blob,
        uuid: (*uuid).to_owned(),
        metadata,
    })
}

impl fmt::Display for BlobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.instance.is_empty() {
            write!(f, "{}/", self.instance)?;
        }
        match &self.compressor {
            Some(c) => write!(f, "compressed-blobs/{c}/")?,
            None => f.write_str("blobs/")?,
        }
        if let Some(d) = &self.digest_function {
            write!(f, "{d}/")?;
        }
        write!(f, "{}/{}", self.hash, self.size)
    }
}

impl fmt::Display for WriteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.blob;
        if !b.instance.is_empty() {
            write!(f, "{}/", b.instance)?;
        }
        write!(f, "uploads/{}/", self.uuid)?;
        let inner = BlobName {
            instance: String::new(),
            ..b.clone()
        };
        write!(f, "{inner}")?;
        if let Some(m) = &self.metadata {
            write!(f, "/{m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const H: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn reads() {
        let b = parse_read(&format!("blobs/{H}/0")).unwrap();
        assert_eq!((b.instance.as_str(), b.hash.as_str(), b.size), ("", H, 0));
        let b = parse_read(&format!("main/ci/blobs/{H}/12")).unwrap();
        assert_eq!(b.instance, "main/ci");
        let b = parse_read(&format!("x/compressed-blobs/zstd/{H}/5")).unwrap();
        assert_eq!(b.compressor.as_deref(), Some("zstd"));
        let b = parse_read(&format!("blobs/blake3/{H}/5")).unwrap();
        assert_eq!(b.digest_function.as_deref(), Some("blake3"));
        for bad in [
            String::new(),
            "blobs".into(),
            format!("blobs/{H}"),
            format!("blobs/{H}/-1"),
            format!("blobs/{H}/01"),
            format!("blobs/{H}/9223372036854775808"),
            format!("blobs/{H}/1/extra"),
            format!("/blobs/{H}/1"),
            format!("a//blobs/{H}/1"),
            format!("blobs/{}/1", H.to_uppercase()),
            format!("compressed-blobs//{H}/1"),
        ] {
            assert!(parse_read(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes() {
        let w = parse_write(&format!("ci/uploads/u-1/blobs/{H}/3/meta/data")).unwrap();
        assert_eq!(w.blob.instance, "ci");
        assert_eq!(w.uuid, "u-1");
        assert_eq!(w.metadata.as_deref(), Some("meta/data"));
        let w = parse_write(&format!("uploads/u/compressed-blobs/zstd/sha256/{H}/3")).unwrap();
        assert_eq!(w.blob.digest_function.as_deref(), Some("sha256"));
        for bad in [
            format!("uploads/blobs/{H}/3"),
            format!("uploads//blobs/{H}/3"),
            format!("uploads/u/blobs/{H}/3/"),
            format!("blobs/{H}/3"),
            "uploads/u".into(),
        ] {
            assert!(parse_write(&bad).is_err(), "{bad:?}");
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,8}".prop_filter("reserved", |s| {
            !matches!(s.as_str(), "blobs" | "uploads") && !DIGEST_FUNCTIONS.contains(&s.as_str())
        })
    }

    fn blob() -> impl Strategy<Value = BlobName> {
        (
            proptest::collection::vec(segment(), 0..3),
            proptest::option::of("[a-z]{1,6}"),
            proptest::option::of(proptest::sample::select(DIGEST_FUNCTIONS)),
            "[0-9a-f]{1,64}",
            0..=i64::MAX as u64,
        )
            .prop_map(|(inst, compressor, df, hash, size)| BlobName {
                instance: inst.join("/"),
                compressor,
                digest_function: df.map(str::to_owned),
                hash,
                size,
            })
    }

    proptest! {
        #[test]
        fn read_names_round_trip(b in blob()) {
            prop_assert_eq!(parse_read(&b.to_string()), Ok(b));
        }

        #[test]
        fn write_names_round_trip(
            b in blob(),
            uuid in segment(),
            metadata in proptest::option::of("[a-z0-9/]{0,12}[a-z]"),
        ) {
            let w = WriteName { blob: b, uuid, metadata };
            prop_assert_eq!(parse_write(&w.to_string()), Ok(w));
        }

        #[test]
        fn parsing_is_total_and_canonical(s in "[a-z0-9/_-]{0,80}") {
            // An accepted name is already canonical.
            if let Ok(b) = parse_read(&s) {
                prop_assert_eq!(b.to_string(), s.clone());
                prop_assert_eq!(parse_read(&b.to_string()), Ok(b));
            }
            if let Ok(w) = parse_write(&s) {
                prop_assert_eq!(w.to_string(), s.clone());
                prop_assert_eq!(parse_write(&w.to_string()), Ok(w));
            }
        }
    }
}
