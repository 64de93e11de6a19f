//! Identity newtypes: accounts, namespaces, keys, object ids, digests and node ids.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// Longest accepted [`Account`] handle, in bytes.
pub const MAX_ACCOUNT_LEN: usize = 64;
/// Longest accepted [`Namespace`], in bytes.
pub const MAX_NAMESPACE_LEN: usize = 128;
/// Longest accepted [`Key`], in bytes.
pub const MAX_KEY_LEN: usize = 1024;

fn check_name(kind: &'static str, s: &str, max: usize) -> Result<(), Error> {
    let invalid = |reason: &'static str| Error::InvalidKey { kind, reason };
    if s.is_empty() {
        return Err(invalid("empty"));
    }
    if s.len() > max {
        return Err(invalid("too long"));
    }
    if s.starts_with('.') {
        return Err(invalid("starts with '.'"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` against the grammar and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, Error> {
                let s = s.into();
                check_name($kind, &s, $max)?;
                Ok(Self(s))
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// An account handle: 1–64 bytes of ASCII letters, digits, `.`, `_`, `-`, not starting with `.`.
    Account,
    "account",
    MAX_ACCOUNT_LEN
);
name_type!(
    /// A namespace inside an account (e.g. `cas`, `ac`, `gradle`): same grammar as [`Account`],
    /// up to 128 bytes.
    Namespace,
    "namespace",
    MAX_NAMESPACE_LEN
);

/// An object key inside a namespace.
///
/// Grammar: 1–1024 bytes of UTF-8 without NUL or other ASCII control characters; it must not
/// start with `/`, and no `/`-separated segment may be `.` or `..` (keys may become paths in
/// front-ends, so traversal is refused at the root).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// Validates `s` against the key grammar and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, Error> {
        let s = s.into();
        let invalid = |reason: &'static str| Error::InvalidKey {
            kind: "key",
            reason,
        };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > MAX_KEY_LEN {
            return Err(invalid("too long"));
        }
        if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(invalid("contains NUL or a control character"));
        }
        if s.starts_with('/') {
            return Err(invalid("starts with '/'"));
        }
        if s.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(invalid("contains a '.' or '..' segment"));
        }
        Ok(Self(s))
    }

    /// The validated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.0)
    }
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// The full address of an object: `(account, namespace, key)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// Owning account.
    pub account: Account,
    /// Namespace inside the account.
    pub namespace: Namespace,
    /// Key inside the namespace.
    pub key: Key,
}

impl ObjectId {
    /// Builds an id from already validated parts.
    pub fn new(account: Account, namespace: Namespace, key: Key) -> Self {
        Self {
            account,
            namespace,
            key,
        }
    }

    /// Parses and validates the three parts.
    pub fn parse(account: &str, namespace: &str, key: &str) -> Result<Self, Error> {
        Ok(Self::new(
            Account::new(account)?,
            Namespace::new(namespace)?,
            Key::new(key)?,
        ))
    }

    /// The `(account, namespace)` pair this object lives in.
    pub fn namespace_id(&self) -> NamespaceId {
        NamespaceId {
            account: self.account.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// Encoded form used as the metadata key: `account NUL namespace NUL key`. Unambiguous
    /// because no part may contain NUL; sorts by account, then namespace, then key.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            self.account.0.len() + self.namespace.0.len() + self.key.0.len() + 2,
        );
        v.extend_from_slice(self.account.0.as_bytes());
        v.push(0);
        v.extend_from_slice(self.namespace.0.as_bytes());
        v.push(0);
        v.extend_from_slice(self.key.0.as_bytes());
        v
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = || Error::Corrupt {
            object: None,
            reason: "undecodable object key in metadata".into(),
        };
        let mut parts = bytes.splitn(3, |b| *b == 0);
        let a = parts.next().ok_or_else(corrupt)?;
        let n = parts.next().ok_or_else(corrupt)?;
        let k = parts.next().ok_or_else(corrupt)?;
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt());
        Ok(Self::new(
            Account::new(s(a)?)?,
            Namespace::new(s(n)?)?,
            Key::new(s(k)?)?,
        ))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.account, self.namespace, self.key)
    }
}

/// An `(account, namespace)` pair: the unit of namespace tombstones and digest summaries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespaceId {
    /// Owning account.
    pub account: Account,
    /// Namespace inside the account.
    pub namespace: Namespace,
}

impl NamespaceId {
    /// Builds a namespace id.
    pub fn new(account: Account, namespace: Namespace) -> Self {
        Self { account, namespace }
    }

    /// Encoded prefix shared by every object key of this namespace: `account NUL namespace NUL`.
    pub(crate) fn encode_prefix(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.account.0.len() + self.namespace.0.len() + 2);
        v.extend_from_slice(self.account.0.as_bytes());
        v.push(0);
        v.extend_from_slice(self.namespace.0.as_bytes());
        v.push(0);
        v
    }

    pub(crate) fn decode_prefix(bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = || Error::Corrupt {
            object: None,
            reason: "undecodable namespace key in metadata".into(),
        };
        let mut parts = bytes.split(|b| *b == 0);
        let a = parts.next().ok_or_else(corrupt)?;
        let n = parts.next().ok_or_else(corrupt)?;
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt());
        Ok(Self::new(Account::new(s(a)?)?, Namespace::new(s(n)?)?))
    }
}

impl fmt::Display for NamespaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.namespace)
    }
}

/// A reference from one object to another object of the same account (e.g. a Bazel
/// action-cache entry referencing the CAS blobs of its outputs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Namespace of the referenced object.
    pub namespace: Namespace,
    /// Key of the referenced object.
    pub key: Key,
}

impl ObjectRef {
    /// Builds a reference.
    pub fn new(namespace: Namespace, key: Key) -> Self {
        Self { namespace, key }
    }

    /// The referenced object's id, inside `account`.
    pub fn resolve(&self, account: &Account) -> ObjectId {
        ObjectId::new(account.clone(), self.namespace.clone(), self.key.clone())
    }
}

/// A SHA-256 content digest (the hash Bazel CAS keys use).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Parses 64 lowercase or uppercase hex characters.
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(Error::InvalidDigest {
                reason: "expected 64 hex characters",
            });
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]);
            let lo = hex_val(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h << 4) | l,
                _ => {
                    return Err(Error::InvalidDigest {
                        reason: "non-hex character",
                    });
                }
            }
        }
        Ok(Self(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_hex(s)
    }
}

/// Identity of a store replica, the tie-break of last-writer-wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node-{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_grammar() {
        assert!(Key::new("a/b/c.txt").is_ok());
        assert!(Key::new("sha256:abc").is_ok());
        assert!(Key::new("..foo").is_ok());
        for bad in ["", "/abs", "a/../b", "..", "a/.", "a\0b", "a\nb"] {
            assert!(
                matches!(Key::new(bad), Err(Error::InvalidKey { kind: "key", .. })),
                "{bad:?} accepted"
            );
        }
        assert!(Key::new("x".repeat(MAX_KEY_LEN)).is_ok());
        assert!(Key::new("x".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn names_grammar() {
        assert!(Account::new("tuist-1_a.b").is_ok());
        assert!(Account::new(".hidden").is_err());
        assert!(Namespace::new("a/b").is_err());
        assert!(Namespace::new("").is_err());
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::from_hex(&d.to_hex()).ok(), Some(d));
        assert!(Digest::from_hex("zz").is_err());
        assert!(Digest::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn object_id_encoding_round_trips() {
        let id = ObjectId::parse("acc", "ns", "k/ey").unwrap();
        assert_eq!(ObjectId::decode(&id.encode()).unwrap(), id);
        assert!(id.encode().starts_with(&id.namespace_id().encode_prefix()));
    }
}
