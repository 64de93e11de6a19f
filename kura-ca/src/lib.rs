//! Per-account peer PKI for Kura cache meshes.
//!
//! Every customer account runs its own certificate authority. Each cache instance
//! of the account gets a leaf signed by that CA, naming the account's peer
//! Service. Replication connections are mutual TLS where both sides trust
//! **only** the account's CA bundle and the client verifies the server under the
//! account peer Service name — so another account's pod is rejected at the
//! handshake, and a node can dial any pod IP behind the Service.
//!
//! This crate issues and validates that material and builds the rustls configs.
//! It does no I/O of its own: Secret data goes in and out as a
//! [`SecretData`] map (`BTreeMap<String, Vec<u8>>`, the shape of a Kubernetes
//! Secret's `data`), and time is always passed in.
//!
//! # Tutorial
//!
//! ```
//! use kura_ca::*;
//! use time::OffsetDateTime;
//!
//! let now = OffsetDateTime::now_utc();
//! let account = AccountHandle::new("acme")?;
//! let namespace = Namespace::new("kura")?;
//!
//! // 1. The account CA, stored in the Secret `kura-acme-peer-ca`.
//! let pki = AccountPki::generate(&account, &CaOptions::default(), now)?;
//! assert_eq!(names::ca_secret_name(&account), "kura-acme-peer-ca");
//! let ca_secret = pki.to_secret_data(); // keys: ca.pem, ca-key.pem
//!
//! // 2. A leaf per instance, stored in the Secret `<instance>-peer-tls`.
//! let request = LeafRequest::new(InstanceName::new("eu-1")?, namespace.clone(), account.clone());
//! let leaf = pki.issue_leaf(&request, now)?;
//! let leaf_secret = leaf.to_secret_data(); // keys: ca.pem, tls.crt, tls.key
//!
//! // 3. A controller re-validates on every resync, and renews early.
//! let service = names::peer_service_dns_name(&account, &namespace, &ClusterDomain::default());
//! assert_eq!(service, "kura-acme-peers.kura.svc.cluster.local");
//! let pki = AccountPki::from_secret_data(&ca_secret, now)?;
//! let info = pki.validate_leaf(&leaf_secret, &[&service], now)?;
//! assert!(!info.needs_renewal(now));
//!
//! // 4. The node builds its rustls configs from the mounted leaf Secret.
//! let identity = PeerIdentity::from_secret_data(&leaf_secret)?;
//! let trust = TrustBundle::from_pem(&leaf_secret["ca.pem"])?;
//! let server = server_config(&identity, &trust, &ServerOptions::default())?;
//! let client = client_config(&identity, &trust, &service)?;
//! assert_eq!(server.alpn_protocols[0], b"h2");
//! // Dial any pod address; SNI and verification use `client.server_name`.
//! # let _ = client.config;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is checked
//!
//! - [`validate_leaf`] returns a [`LeafProblem`] naming the first failing check:
//!   missing key, bad PEM, CA mismatch, key/cert mismatch, expired, not yet valid,
//!   missing EKU, chain invalid, name not covered (and, through
//!   [`AccountPki::validate_leaf`], a leaf not signed by the current CA).
//! - [`LeafInfo::needs_renewal`] is true once less than a third of the lifetime
//!   remains (configurable with [`RenewalPolicy`]), long before expiry.
//! - [`AccountPki`] rotates the CA without downtime through explicit phases
//!   ([`RotationPhase`]).
//! - [`server_config`] requires client certificates; [`client_config`] never
//!   trusts anything but the bundle. [`ServerOptions::require_client_name`] adds
//!   a check that the client's leaf names the account peer Service.

mod ca;
mod error;
mod leaf;
pub mod names;
mod pem;
mod rotation;
mod tls;

pub use ca::{
    AccountCa, CA_CERT_KEY, CA_KEY_KEY, CaOptions, DEFAULT_BACKDATE, DEFAULT_CA_VALIDITY,
    KeyAlgorithm, ca_common_name,
};
pub use error::{CaProblem, Error, PemProblem};
pub use leaf::{
    DEFAULT_LEAF_VALIDITY, Eku, IssuedLeaf, LeafInfo, LeafProblem, LeafRequest, RenewalPolicy,
    TLS_CERT_KEY, TLS_KEY_KEY, TrustBundle, validate_leaf,
};
pub use names::{AccountHandle, ClusterDomain, HostName, InstanceName, NameError, Namespace};
pub use rotation::{
    AccountPki, NEXT_CA_CERT_KEY, NEXT_CA_KEY_KEY, PREVIOUS_CA_CERT_KEY, RotationPhase,
};
pub use tls::{
    PEER_ALPN, PeerClientConfig, PeerIdentity, ServerOptions, client_config, server_config,
};

/// Re-export of the `time` crate used in this API.
pub use time;

/// Kubernetes Secret `data`: key → bytes.
pub type SecretData = std::collections::BTreeMap<String, Vec<u8>>;
