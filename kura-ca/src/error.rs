//! The crate's error types.

use time::OffsetDateTime;

use crate::names::NameError;

/// Errors from issuing, loading and configuring peer PKI material.
///
/// Validation of an existing leaf has its own structured result,
/// [`LeafProblem`](crate::LeafProblem), because "invalid" is an expected outcome
/// there, not a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name did not pass DNS-1123 validation.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A required key is missing from Secret data.
    #[error("secret data has no {key:?} entry")]
    MissingKey {
        /// The missing key, e.g. `ca-key.pem`.
        key: &'static str,
    },
    /// A PEM entry could not be decoded.
    #[error("{key:?} is not valid PEM: {reason}")]
    Pem {
        /// The Secret data key (or file name) that held the PEM.
        key: &'static str,
        /// What was wrong with it.
        reason: PemProblem,
    },
    /// The CA material is not usable (see [`CaProblem`]).
    #[error("account CA is not usable: {0}")]
    InvalidCa(#[from] CaProblem),
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration (for example an unusable key).
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built from the trust bundle.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// An invalid option value (for example a zero validity period).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The rotation state stored in Secret data is inconsistent.
    #[error("inconsistent CA rotation state: {0}")]
    Rotation(String),
}

/// Why a PEM document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PemProblem {
    /// No PEM section of the expected kind was found.
    #[error("no {expected} section found")]
    NoSection {
        /// The expected section label, e.g. `CERTIFICATE`.
        expected: &'static str,
    },
    /// The PEM framing or base64 is broken.
    #[error("malformed PEM: {0}")]
    Malformed(String),
    /// The decoded DER is not a parsable certificate.
    #[error("certificate DER is invalid: {0}")]
    BadCertificate(String),
    /// The decoded key is not a supported PKCS#8 key.
    #[error(
        "private key is invalid or unsupported (PKCS#8 ECDSA P-256/P-384 or Ed25519 expected): {0}"
    )]
    BadKey(String),
    /// More than one section where exactly one is expected.
    #[error("expected exactly one {expected} section, found {found}")]
    TooMany {
        /// The expected section label.
        expected: &'static str,
        /// How many were found.
        found: usize,
    },
}

/// Why loaded CA material is not a usable account CA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaProblem {
    /// The certificate is not a CA (basic constraints missing or CA:false).
    #[error("certificate is not a CA (basicConstraints CA:true missing)")]
    NotACa,
    /// The CA may not sign certificates (keyUsage lacks keyCertSign).
    #[error("CA key usage does not allow certificate signing")]
    CannotSign,
    /// The private key does not belong to the certificate.
    #[error("private key does not match the CA certificate")]
    KeyMismatch,
    /// The CA certificate has expired.
    #[error("CA certificate expired at {not_after}")]
    Expired {
        /// Its NotAfter.
        not_after: OffsetDateTime,
    },
    /// The CA certificate is not valid yet.
    #[error("CA certificate is not valid before {not_before}")]
    NotYetValid {
        /// Its NotBefore.
        not_before: OffsetDateTime,
    },
}
