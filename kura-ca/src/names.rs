//! Kubernetes-compatible names for accounts, namespaces and instances, and the
//! names derived from them (account peer Service, CA Secret, leaf SANs).
//!
//! Every constructor validates its input against the DNS-1123 grammar and returns a
//! typed [`NameError`] pointing at the offending character; nothing here panics on
//! input.
//!
//! Account-scoped object names (`kura-<account>-peers`, `kura-<account>-peer-ca`)
//! are capped at 63 characters: when the full name is longer, it is cut to
//! `63 - 9` characters, trailing `-` are trimmed, and `-<hex FNV-32a(account)>`
//! (8 lowercase hex digits) is appended. The suffix depends only on the account
//! handle, so the same account always maps to the same name.

use std::fmt;

/// Maximum length of a Kubernetes object name that must also be a DNS label
/// (Services, label values).
pub const MAX_LABEL_LEN: usize = 63;

/// Maximum length of an account handle. Handles longer than what fits into a
/// 63-character object name are allowed: derived names are capped with a hash
/// suffix (see [`account_scoped_name`]).
pub const MAX_ACCOUNT_LEN: usize = 253;

/// Maximum length of an instance name.
///
/// The instance name is used as a StatefulSet name; Kubernetes adds the label
/// `controller-revision-hash: <name>-<10 chars>` to its pods, which must stay a
/// valid 63-character label value, so the name itself can have at most 52.
pub const MAX_INSTANCE_LEN: usize = 52;

/// The default Kubernetes cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// What kind of name failed validation (used in [`NameError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameKind {
    /// An account handle.
    Account,
    /// A Kubernetes namespace.
    Namespace,
    /// A KuraInstance name.
    Instance,
    /// An extra DNS host name for a leaf certificate.
    HostName,
    /// A cluster domain such as `cluster.local`.
    ClusterDomain,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Account => "account handle",
            Self::Namespace => "namespace",
            Self::Instance => "instance name",
            Self::HostName => "host name",
            Self::ClusterDomain => "cluster domain",
        })
    }
}

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which name.
        kind: NameKind,
    },
    /// The name (or one of its dot-separated labels) is too long.
    #[error("{kind} {value:?} is {len} characters long; the maximum is {max}")]
    TooLong {
        /// Which name.
        kind: NameKind,
        /// The rejected input.
        value: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside `[a-z0-9-]` (and `.` where allowed).
    #[error(
        "{kind} {value:?} has invalid character {ch:?} at position {position}: \
         only lowercase letters, digits and '-' are allowed"
    )]
    InvalidChar {
        /// Which name.
        kind: NameKind,
        /// The rejected input.
        value: String,
        /// Zero-based byte position of the offending character.
        position: usize,
        /// The offending character.
        ch: char,
    },
    /// A label starts or ends with `-`, or is empty (`a..b`).
    #[error(
        "{kind} {value:?} has a label that is empty or starts or ends with '-' \
         at position {position}"
    )]
    BadLabelEdge {
        /// Which name.
        kind: NameKind,
        /// The rejected input.
        value: String,
        /// Zero-based byte position of the offending label.
        position: usize,
    },
}

/// Validates a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?` of at most `max`
/// bytes (the label grammar, with the caller's length limit).
fn check_label(kind: NameKind, value: &str, offset: usize, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::BadLabelEdge {
            kind,
            value: value.to_owned(),
            position: offset,
        });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            kind,
            value: value.to_owned(),
            len: value.len(),
            max,
        });
    }
    for (i, ch) in value.char_indices() {
        if !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-') {
            return Err(NameError::InvalidChar {
                kind,
                value: value.to_owned(),
                position: offset + i,
                ch,
            });
        }
    }
    if value.starts_with('-') || value.ends_with('-') {
        let position = if value.starts_with('-') {
            offset
        } else {
            offset + value.len() - 1
        };
        return Err(NameError::BadLabelEdge {
            kind,
            value: value.to_owned(),
            position,
        });
    }
    Ok(())
}

fn check_single_label(kind: NameKind, value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { kind });
    }
    check_label(kind, value, 0, max).map_err(|e| with_full_value(e, value))
}

/// Validates a DNS-1123 subdomain (dot-separated labels, at most 253 bytes).
fn check_subdomain(kind: NameKind, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if value.len() > 253 {
        return Err(NameError::TooLong {
            kind,
            value: value.to_owned(),
            len: value.len(),
            max: 253,
        });
    }
    let mut offset = 0;
    for label in value.split('.') {
        check_label(kind, label, offset, MAX_LABEL_LEN).map_err(|e| with_full_value(e, value))?;
        offset += label.len() + 1;
    }
    Ok(())
}

/// Error positions refer to the whole input; make the reported value the whole
/// input too, so the message shows what the user typed.
fn with_full_value(err: NameError, full: &str) -> NameError {
    match err {
        NameError::InvalidChar {
            kind, position, ch, ..
        } => NameError::InvalidChar {
            kind,
            value: full.to_owned(),
            position,
            ch,
        },
        NameError::BadLabelEdge { kind, position, .. } => NameError::BadLabelEdge {
            kind,
            value: full.to_owned(),
            position,
        },
        other => other,
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(&value)?;
                Ok(Self(value))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A customer account handle: DNS-1123 label characters
    /// (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`), at most [`MAX_ACCOUNT_LEN`] bytes.
    ///
    /// ```
    /// use kura_ca::AccountHandle;
    /// assert!(AccountHandle::new("acme").is_ok());
    /// assert!(AccountHandle::new("Acme").is_err());
    /// ```
    AccountHandle,
    NameKind::Account,
    |v| check_single_label(NameKind::Account, v, MAX_ACCOUNT_LEN)
);

name_type!(
    /// A Kubernetes namespace: a DNS-1123 label of at most 63 bytes.
    Namespace,
    NameKind::Namespace,
    |v| check_single_label(NameKind::Namespace, v, MAX_LABEL_LEN)
);

name_type!(
    /// A KuraInstance name: a DNS-1123 label of at most [`MAX_INSTANCE_LEN`] bytes
    /// (it names a StatefulSet and its `<instance>-headless` Service).
    InstanceName,
    NameKind::Instance,
    |v| check_single_label(NameKind::Instance, v, MAX_INSTANCE_LEN)
);

name_type!(
    /// An extra DNS host name for a leaf certificate (for example a public mesh
    /// peer host): a DNS-1123 subdomain of at most 253 bytes.
    HostName,
    NameKind::HostName,
    |v| check_subdomain(NameKind::HostName, v)
);

name_type!(
    /// A Kubernetes cluster domain, [`DEFAULT_CLUSTER_DOMAIN`] unless the cluster
    /// was configured otherwise.
    ClusterDomain,
    NameKind::ClusterDomain,
    |v| check_subdomain(NameKind::ClusterDomain, v)
);

impl Default for ClusterDomain {
    fn default() -> Self {
        Self(DEFAULT_CLUSTER_DOMAIN.to_owned())
    }
}

/// 32-bit FNV-1a hash, as used by the name capping rule.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in data {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Builds `kura-<account>-<suffix>`, capped at 63 characters.
///
/// When the full name is longer than 63 characters, it is cut to
/// `63 - 9` characters, trailing `-` are trimmed, and `-` followed by the FNV-32a
/// hash of the account handle as 8 lowercase hex digits is appended. The result is
/// always a valid DNS-1123 label, and stable for a given account.
///
/// ```
/// use kura_ca::{names::account_scoped_name, AccountHandle};
/// let acct = AccountHandle::new("acme")?;
/// assert_eq!(account_scoped_name(&acct, "peers"), "kura-acme-peers");
/// let long = AccountHandle::new("a".repeat(80))?;
/// let name = account_scoped_name(&long, "peers");
/// assert_eq!(name.len(), 63);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn account_scoped_name(account: &AccountHandle, suffix: &str) -> String {
    let full = format!("kura-{}-{}", account.as_str(), suffix);
    if full.len() <= MAX_LABEL_LEN {
        return full;
    }
    let hash = format!("-{:08x}", fnv32a(account.as_str().as_bytes()));
    // Account handles and suffixes are ASCII, so any byte index is a char boundary.
    let keep = MAX_LABEL_LEN - hash.len();
    let cut = full.get(..keep).unwrap_or(&full).trim_end_matches('-');
    format!("{cut}{hash}")
}

/// The account peer Service name, `kura-<account>-peers` (capped).
pub fn peer_service_name(account: &AccountHandle) -> String {
    account_scoped_name(account, "peers")
}

/// The account CA Secret name, `kura-<account>-peer-ca` (capped).
pub fn ca_secret_name(account: &AccountHandle) -> String {
    account_scoped_name(account, "peer-ca")
}

/// The per-instance leaf Secret name, `<instance>-peer-tls`.
pub fn leaf_secret_name(instance: &InstanceName) -> String {
    format!("{}-peer-tls", instance.as_str())
}

/// The fully qualified DNS name of the account peer Service,
/// `kura-<account>-peers.<ns>.svc.<cluster domain>`: the name every peer
/// presents and every client verifies (SNI).
pub fn peer_service_dns_name(
    account: &AccountHandle,
    namespace: &Namespace,
    domain: &ClusterDomain,
) -> String {
    format!(
        "{}.{}.svc.{}",
        peer_service_name(account),
        namespace.as_str(),
        domain.as_str()
    )
}

/// The subject alternative names of an instance's peer leaf, in the order of the
/// system we replace:
///
/// 1. `*.<i>-headless.<ns>.svc.<domain>`, `*.<i>-headless.<ns>.svc`, `*.<i>-headless.<ns>`
/// 2. `<i>-headless`, `<i>-headless.<ns>`, `<i>-headless.<ns>.svc`, `<i>-headless.<ns>.svc.<domain>`
/// 3. `kura-<a>-peers`, `kura-<a>-peers.<ns>`, `kura-<a>-peers.<ns>.svc`,
///    `kura-<a>-peers.<ns>.svc.<domain>`, `*.kura-<a>-peers.<ns>.svc.<domain>`
/// 4. the extra host names, in the order given (duplicates dropped).
pub fn leaf_sans(
    instance: &InstanceName,
    namespace: &Namespace,
    account: &AccountHandle,
    domain: &ClusterDomain,
    extra: &[HostName],
) -> Vec<String> {
    let i = instance.as_str();
    let ns = namespace.as_str();
    let d = domain.as_str();
    let peers = peer_service_name(account);
    let mut sans = vec![
        format!("*.{i}-headless.{ns}.svc.{d}"),
        format!("*.{i}-headless.{ns}.svc"),
        format!("*.{i}-headless.{ns}"),
        format!("{i}-headless"),
        format!("{i}-headless.{ns}"),
        format!("{i}-headless.{ns}.svc"),
        format!("{i}-headless.{ns}.svc.{d}"),
        peers.clone(),
        format!("{peers}.{ns}"),
        format!("{peers}.{ns}.svc"),
        format!("{peers}.{ns}.svc.{d}"),
        format!("*.{peers}.{ns}.svc.{d}"),
    ];
    for host in extra {
        if !sans.iter().any(|s| s == host.as_str()) {
            sans.push(host.as_str().to_owned());
        }
    }
    sans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv32a_known_vectors() {
        // Reference values of 32-bit FNV-1a.
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn short_names_are_not_capped() {
        let a = AccountHandle::new("tuist").unwrap();
        assert_eq!(peer_service_name(&a), "kura-tuist-peers");
        assert_eq!(ca_secret_name(&a), "kura-tuist-peer-ca");
    }

    #[test]
    fn long_names_are_capped_with_hash() {
        let handle = format!("{}-x", "a".repeat(60));
        let a = AccountHandle::new(handle.clone()).unwrap();
        let name = peer_service_name(&a);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with(&format!("-{:08x}", fnv32a(handle.as_bytes()))));
    }

    #[test]
    fn trailing_dash_trimmed_before_suffix() {
        // "kura-" (5) + 48 chars + "-" lands a '-' right at the cut (index 53).
        let handle = format!("{}-{}", "b".repeat(48), "c".repeat(20));
        let a = AccountHandle::new(handle).unwrap();
        let name = peer_service_name(&a);
        assert!(!name.contains("--"), "{name}");
        assert!(name.len() <= 63);
    }

    #[test]
    fn name_errors_are_precise() {
        assert_eq!(
            AccountHandle::new(""),
            Err(NameError::Empty {
                kind: NameKind::Account
            })
        );
        match AccountHandle::new("ab_c") {
            Err(NameError::InvalidChar { position, ch, .. }) => {
                assert_eq!((position, ch), (2, '_'));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            Namespace::new("-ns"),
            Err(NameError::BadLabelEdge { position: 0, .. })
        ));
        assert!(matches!(
            InstanceName::new("x".repeat(53)),
            Err(NameError::TooLong { max: 52, .. })
        ));
        assert!(matches!(
            HostName::new("a..b"),
            Err(NameError::BadLabelEdge { position: 2, .. })
        ));
        assert!(HostName::new("cache.example.com").is_ok());
        // Multi-byte input never panics and reports the right character.
        assert!(matches!(
            Namespace::new("né"),
            Err(NameError::InvalidChar { ch: 'é', .. })
        ));
    }

    #[test]
    fn sans_in_reference_order() {
        let sans = leaf_sans(
            &InstanceName::new("cache-eu").unwrap(),
            &Namespace::new("kura").unwrap(),
            &AccountHandle::new("acme").unwrap(),
            &ClusterDomain::default(),
            &[HostName::new("peer.acme.example").unwrap()],
        );
        assert_eq!(
            sans,
            vec![
                "*.cache-eu-headless.kura.svc.cluster.local",
                "*.cache-eu-headless.kura.svc",
                "*.cache-eu-headless.kura",
                "cache-eu-headless",
                "cache-eu-headless.kura",
                "cache-eu-headless.kura.svc",
                "cache-eu-headless.kura.svc.cluster.local",
                "kura-acme-peers",
                "kura-acme-peers.kura",
                "kura-acme-peers.kura.svc",
                "kura-acme-peers.kura.svc.cluster.local",
                "*.kura-acme-peers.kura.svc.cluster.local",
                "peer.acme.example",
            ]
        );
    }
}
