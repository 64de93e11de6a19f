//! Errors of the operator library.

/// A `KuraInstance` whose spec cannot be rendered. The reconciler reports it as
/// `phase: Pending` with [`SpecError`]'s message and an Event, and does not retry
/// until the object changes (or the periodic requeue).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The object has no name or namespace.
    #[error("the KuraInstance has no {0}")]
    MissingMetadata(&'static str),
    /// A name (instance, namespace, account, region, host) is not valid where it is used.
    #[error("spec.{field}: {message}")]
    InvalidName {
        /// The offending field (or `metadata.name`).
        field: &'static str,
        /// Why.
        message: String,
    },
    /// `clientCIDRs` has an invalid or unsafe entry.
    #[error("spec.clientCIDRs[{index}] {value:?}: {source}")]
    InvalidCidr {
        /// Position in the list.
        index: usize,
        /// The entry.
        value: String,
        /// What is wrong.
        #[source]
        source: kura_netpol::Error,
    },
    /// `clientCIDRs` as a whole violates the client-range rules (too broad, any address).
    #[error("spec.clientCIDRs: {0}")]
    UnsafeCidrs(#[source] kura_netpol::Error),
    /// `storageSize` is not a valid positive quantity.
    #[error("spec.storageSize {value:?}: {message}")]
    InvalidQuantity {
        /// The value.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// A numeric field is out of range.
    #[error("spec.{field} = {value}: {message}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: i64,
        /// The accepted range.
        message: &'static str,
    },
    /// A pod annotation the cache relies on is malformed (e.g. a bandwidth).
    #[error("spec.podAnnotations: {0}")]
    InvalidAnnotation(#[source] kura_netpol::Error),
}

/// Errors of rendering and reconciling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec cannot be rendered (reported on the object, not retried hot).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Issuing or loading certificates failed.
    #[error("peer certificates: {0}")]
    Pki(#[from] kura_ca::Error),
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Serialising an object failed.
    #[error("serialising {what}: {message}")]
    Serialize {
        /// The object.
        what: String,
        /// The serializer's message.
        message: String,
    },
    /// A live object could not be read (dry-run input).
    #[error("live object {path}: {message}")]
    Live {
        /// Where it came from.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    #[allow(dead_code)]
    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }
}
