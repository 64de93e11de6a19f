//! The crate's error type.

use std::io;
use std::time::Duration;

/// A malformed message on the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A required header or parameter is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A header or parameter could not be decoded.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A request or response exceeded its size limit.
    #[error("{what} exceeds {limit} bytes")]
    TooLarge {
        /// Which message.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
}

/// Everything that can go wrong in the mesh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// TLS material could not be turned into a config.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] kura_ca::Error),
    /// A peer URL or address is not usable.
    #[error("invalid peer address {addr:?}: {reason}")]
    InvalidPeer {
        /// What was given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Dialled address.
        addr: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (for example: the peer's certificate does not chain
    /// to the account CA, or does not name the peer Service). See [`Error::tls_error`].
    #[error("TLS handshake with {addr}: {source}")]
    Handshake {
        /// Dialled address.
        addr: String,
        /// The handshake error (wraps a [`rustls::Error`]).
        #[source]
        source: io::Error,
    },
    /// HTTP/2 protocol error.
    #[error("HTTP/2 with {addr}: {source}")]
    Http {
        /// Peer address.
        addr: String,
        /// The hyper error.
        #[source]
        source: hyper::Error,
    },
    /// The peer answered with an error status.
    #[error("peer {addr} answered {status}: {message}")]
    Status {
        /// Peer address.
        addr: String,
        /// HTTP status.
        status: u16,
        /// The peer's message.
        message: String,
    },
    /// A message could not be parsed.
    #[error("peer protocol: {0}")]
    Wire(#[from] WireError),
    /// The local store failed.
    #[error("store: {0}")]
    Store(#[from] kura_store::Error),
    /// A transfer made no progress for the stall timeout.
    #[error("transfer stalled: no progress for {0:?}")]
    Stalled(Duration),
    /// Connecting (TCP + TLS) took longer than the connect timeout.
    #[error("connect to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// Dialled address.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// Local I/O (state files, listener).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The rustls error behind a failed handshake, if that is what this is.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            Error::Handshake { source, .. } => source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>()),
            _ => None,
        }
    }

    /// Whether retrying the same operation later may succeed (transport problems),
    /// as opposed to a peer refusing the message for good (4xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Status { status, .. } => *status >= 500 || *status == 429,
            Error::Wire(_) | Error::InvalidPeer { .. } | Error::TlsConfig(_) => false,
            _ => true,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
