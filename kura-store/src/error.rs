//! The crate's single error type.

use std::io;

use crate::types::Digest;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An account, namespace or key does not follow its grammar.
    #[error("invalid {kind}: {reason}")]
    InvalidKey {
        /// Which part was invalid: `account`, `namespace` or `key`.
        kind: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A digest string could not be parsed.
    #[error("invalid digest: {reason}")]
    InvalidDigest {
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The body was shorter or longer than the declared length.
    #[error("body length {actual} does not match declared length {declared}")]
    LengthMismatch {
        /// Length the caller declared.
        declared: u64,
        /// Bytes actually received (up to the first byte past `declared`).
        actual: u64,
    },
    /// The body's digest differs from the expected one.
    #[error("body digest {actual} does not match expected {expected}")]
    DigestMismatch {
        /// Digest the caller expected.
        expected: Digest,
        /// Digest of the bytes received.
        actual: Digest,
    },
    /// The object is larger than the whole capacity of the store.
    #[error("object of {len} bytes exceeds the store capacity of {capacity} bytes")]
    TooLarge {
        /// Object length.
        len: u64,
        /// Configured capacity in bytes.
        capacity: u64,
    },
    /// No space: eviction could not make room, or the disk reported ENOSPC.
    #[error("store is full: {needed} bytes needed, {available} available")]
    Full {
        /// Bytes the operation needed.
        needed: u64,
        /// Bytes that were available (0 when the disk itself is full).
        available: u64,
        /// The ENOSPC error from the disk, if that was the cause.
        #[source]
        source: Option<io::Error>,
    },
    /// Stored bytes or metadata failed verification. The object has been quarantined.
    #[error("corrupt object {}: {reason}", object.as_deref().unwrap_or("<metadata>"))]
    Corrupt {
        /// The object concerned (display form), if known.
        object: Option<String>,
        /// What failed.
        reason: String,
    },
    /// An object references an object that is not in the store.
    #[error("referenced object {missing} is not in the store")]
    MissingReference {
        /// The missing object (display form).
        missing: String,
    },
    /// A replicated timestamp is further ahead of the local physical clock than allowed.
    #[error(
        "remote clock {remote_ms} ms is more than {max_drift_ms} ms ahead of local clock {local_ms} ms"
    )]
    ClockSkew {
        /// Physical part of the remote timestamp, in ms since the Unix epoch.
        remote_ms: u64,
        /// Local physical clock, in ms since the Unix epoch.
        local_ms: u64,
        /// Configured maximum drift.
        max_drift_ms: u64,
    },
    /// A byte range lies outside the object.
    #[error("range {start}..{end} is invalid for an object of {len} bytes")]
    InvalidRange {
        /// Range start.
        start: u64,
        /// Range end (exclusive).
        end: u64,
        /// Object length.
        len: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading the caller's body stream failed.
    #[error("reading the request body failed")]
    Body {
        /// The stream's error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("I/O error during {op}")]
    Io {
        /// The step that failed (e.g. `write`, `fsync`, `rename`).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The metadata engine failed.
    #[error("metadata error during {op}")]
    Metadata {
        /// The step that failed.
        op: &'static str,
        /// The underlying redb error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The store has been closed or its committer stopped after a fatal error; reopen it.
    #[error("store is closed")]
    Closed,
}

impl Error {
    /// Maps an I/O error, turning ENOSPC into [`Error::Full`].
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::StorageFull {
            Error::Full {
                needed: 0,
                available: 0,
                source: Some(source),
            }
        } else {
            Error::Io { op, source }
        }
    }

    pub(crate) fn meta(op: &'static str, source: impl Into<redb::Error>) -> Self {
        let source: redb::Error = source.into();
        // An ENOSPC inside redb is still a full disk.
        if let redb::Error::Io(e) = &source {
            if e.kind() == io::ErrorKind::StorageFull {
                return Error::Full {
                    needed: 0,
                    available: 0,
                    source: Some(io::Error::from(io::ErrorKind::StorageFull)),
                };
            }
        }
        Error::Metadata {
            op,
            source: Box::new(source),
        }
    }

    /// A copy good enough to hand to every writer of a failed batch.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Error::Full {
                needed,
                available,
                source,
            } => Error::Full {
                needed: *needed,
                available: *available,
                source: source
                    .as_ref()
                    .map(|e| io::Error::new(e.kind(), e.to_string())),
            },
            Error::Io { op, source } => Error::Io {
                op,
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Metadata { op, source } => Error::Io {
                op,
                source: io::Error::other(source.to_string()),
            },
            Error::Corrupt { object, reason } => Error::Corrupt {
                object: object.clone(),
                reason: reason.clone(),
            },
            Error::Closed => Error::Closed,
            other => Error::Io {
                op: "commit",
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
