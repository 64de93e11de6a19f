//! Object metadata and replication records, with their encodings.

use crate::codec::{Reader, Writer};
use crate::error::Error;
use crate::hlc::Version;
use crate::merge::{Entry, Payload};
use crate::types::{Digest, NamespaceId, ObjectId, ObjectRef};

/// Where an object's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlobLoc {
    /// In the metadata database (small objects).
    Inline(u64),
    /// In a blob file managed by the backend.
    File(u64),
    /// In the value log: `len` bytes at offset `off` of segment `seg` (inside the record of
    /// the batch that wrote or relocated it).
    Packed { seg: u64, off: u64 },
}

/// Everything the store knows about an object except its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's address.
    pub id: ObjectId,
    /// Content type given at write time (opaque to the store).
    pub content_type: String,
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the content.
    pub digest: Digest,
    /// Replication version (HLC + node id).
    pub version: Version,
    /// When this copy was stored locally, ms since the Unix epoch.
    pub created_ms: u64,
    /// Last recorded access, ms since the Unix epoch (flushed lazily; see `docs/store.md`).
    pub last_access_ms: u64,
    /// Objects of the same account this one references.
    pub refs: Vec<ObjectRef>,
    /// Local change-feed sequence number of the write that produced this copy.
    pub seq: u64,
    pub(crate) blob: BlobLoc,
}

impl ObjectMeta {
    /// Whether the bytes live in a blob file (and so can be sent with zero-copy).
    pub fn is_file_backed(&self) -> bool {
        matches!(self.blob, BlobLoc::File(_))
    }

    /// The replication record that recreates this copy on a peer: a put with this
    /// object's version, content type, length, digest and references.
    pub fn put_record(&self) -> ReplicatedRecord {
        ReplicatedRecord::Put {
            id: self.id.clone(),
            version: self.version,
            content_type: self.content_type.clone(),
            len: self.len,
            digest: self.digest,
            refs: self.refs.clone(),
        }
    }

    pub(crate) fn entry(&self) -> Entry {
        Entry {
            version: self.version,
            payload: Payload::Present(self.digest),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(1)
            .version(&self.version)
            .bytes(self.content_type.as_bytes())
            .u64(self.len)
            .digest(&self.digest)
            .u64(self.created_ms)
            .u64(self.last_access_ms)
            .u64(self.seq);
        match self.blob {
            BlobLoc::Inline(id) => w.u8(0).u64(id),
            BlobLoc::File(id) => w.u8(1).u64(id),
            BlobLoc::Packed { seg, off } => w.u8(2).u64(seg).u64(off),
        };
        w.u64(self.refs.len() as u64);
        for r in &self.refs {
            w.bytes(r.namespace.as_str().as_bytes())
                .bytes(r.key.as_str().as_bytes());
        }
        w.0
    }

    pub(crate) fn decode(id: ObjectId, buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf, "object metadata");
        let corrupt = |reason: &str| Error::Corrupt {
            object: None,
            reason: reason.to_string(),
        };
        if r.u8()? != 1 {
            return Err(corrupt("unknown metadata format version"));
        }
        let version = r.version()?;
        let content_type = r.string()?;
        let len = r.u64()?;
        let digest = r.digest()?;
        let created_ms = r.u64()?;
        let last_access_ms = r.u64()?;
        let seq = r.u64()?;
        let blob = match r.u8()? {
            0 => BlobLoc::Inline(r.u64()?),
            1 => BlobLoc::File(r.u64()?),
            2 => BlobLoc::Packed {
                seg: r.u64()?,
                off: r.u64()?,
            },
            _ => return Err(corrupt("unknown blob location")),
        };
        let n = r.u64()?;
        let mut refs = Vec::new();
        for _ in 0..n {
            refs.push(ObjectRef::new(r.namespace()?, r.key()?));
        }
        r.finish()?;
        Ok(Self {
            id,
            content_type,
            len,
            digest,
            version,
            created_ms,
            last_access_ms,
            refs,
            seq,
            blob,
        })
    }
}

pub(crate) fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut w = Writer::new();
    w.version(&e.version);
    match e.payload {
        Payload::Deleted => w.u8(0),
        Payload::Present(d) => w.u8(1).digest(&d),
    };
    w.0
}

pub(crate) fn decode_entry(buf: &[u8]) -> Result<Entry, Error> {
    let mut r = Reader::new(buf, "entry");
    let version = r.version()?;
    let payload = match r.u8()? {
        0 => Payload::Deleted,
        _ => Payload::Present(r.digest()?),
    };
    r.finish()?;
    Ok(Entry { version, payload })
}

/// Encodes a summary-bucket value: the entry and, for a *ghost* (a present entry whose
/// object is not held), when it was evicted (tag 2, ms since the Unix epoch).
pub(crate) fn encode_bucket(e: &Entry, ghost: Option<u64>) -> Vec<u8> {
    let mut w = Writer::new();
    w.version(&e.version);
    match (e.payload, ghost) {
        (Payload::Deleted, _) => w.u8(0),
        (Payload::Present(d), None) => w.u8(1).digest(&d),
        (Payload::Present(d), Some(ms)) => w.u8(2).digest(&d).u64(ms),
    };
    w.0
}

/// Decodes a summary-bucket value: the entry and, for a ghost, its eviction time. Values
/// written before ghosts existed decode as held.
pub(crate) fn decode_bucket(buf: &[u8]) -> Result<(Entry, Option<u64>), Error> {
    let mut r = Reader::new(buf, "bucket entry");
    let version = r.version()?;
    let (payload, ghost) = match r.u8()? {
        0 => (Payload::Deleted, None),
        1 => (Payload::Present(r.digest()?), None),
        2 => (Payload::Present(r.digest()?), Some(r.u64()?)),
        _ => {
            return Err(Error::Corrupt {
                object: None,
                reason: "unknown bucket entry kind".into(),
            });
        }
    };
    r.finish()?;
    Ok((Entry { version, payload }, ghost))
}

/// A record exchanged between replicas (what the change feed yields and
/// [`crate::Store::apply_replicated`] accepts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicatedRecord {
    /// An object write; the body travels separately.
    Put {
        /// Object address.
        id: ObjectId,
        /// Version assigned by the accepting node.
        version: Version,
        /// Content type.
        content_type: String,
        /// Body length.
        len: u64,
        /// Body SHA-256 (verified on apply).
        digest: Digest,
        /// References to other objects of the account.
        refs: Vec<ObjectRef>,
    },
    /// A key deletion (key tombstone).
    Delete {
        /// Object address.
        id: ObjectId,
        /// Version of the deletion.
        version: Version,
    },
    /// A whole-namespace deletion (namespace tombstone).
    DeleteNamespace {
        /// The namespace.
        namespace: NamespaceId,
        /// Version of the deletion.
        version: Version,
    },
}

impl ReplicatedRecord {
    /// The record's version.
    pub fn version(&self) -> Version {
        match self {
            ReplicatedRecord::Put { version, .. }
            | ReplicatedRecord::Delete { version, .. }
            | ReplicatedRecord::DeleteNamespace { version, .. } => *version,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            ReplicatedRecord::Put {
                id,
                version,
                content_type,
                len,
                digest,
                refs,
            } => {
                w.u8(0)
                    .bytes(&id.encode())
                    .version(version)
                    .bytes(content_type.as_bytes())
                    .u64(*len)
                    .digest(digest)
                    .u64(refs.len() as u64);
                for r in refs {
                    w.bytes(r.namespace.as_str().as_bytes())
                        .bytes(r.key.as_str().as_bytes());
                }
            }
            ReplicatedRecord::Delete { id, version } => {
                w.u8(1).bytes(&id.encode()).version(version);
            }
            ReplicatedRecord::DeleteNamespace { namespace, version } => {
                w.u8(2).bytes(&namespace.encode_prefix()).version(version);
            }
        }
        w.0
    }

    /// Decodes the compact binary form produced by [`ReplicatedRecord::to_bytes`]. Total:
    /// malformed input is an error, never a panic.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(buf, "replicated record");
        let rec = match r.u8()? {
            0 => {
                let id = ObjectId::decode(r.bytes()?)?;
                let version = r.version()?;
                let content_type = r.string()?;
                let len = r.u64()?;
                let digest = r.digest()?;
                let n = r.u64()?;
                let mut refs = Vec::new();
                for _ in 0..n {
                    refs.push(ObjectRef::new(r.namespace()?, r.key()?));
                }
                ReplicatedRecord::Put {
                    id,
                    version,
                    content_type,
                    len,
                    digest,
                    refs,
                }
            }
            1 => ReplicatedRecord::Delete {
                id: ObjectId::decode(r.bytes()?)?,
                version: r.version()?,
            },
            2 => {
                let p = r.bytes()?;
                let namespace = match p.split_last() {
                    Some((0, rest)) => NamespaceId::decode_prefix(rest)?,
                    _ => {
                        return Err(Error::Corrupt {
                            object: None,
                            reason: "malformed namespace".into(),
                        });
                    }
                };
                ReplicatedRecord::DeleteNamespace {
                    namespace,
                    version: r.version()?,
                }
            }
            _ => {
                return Err(Error::Corrupt {
                    object: None,
                    reason: "unknown record kind".into(),
                });
            }
        };
        r.finish()?;
        Ok(rec)
    }

    /// The compact binary form (used by the change feed; usable on the wire).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }
}

/// One entry of the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Local sequence number (strictly increasing).
    pub seq: u64,
    /// What changed.
    pub record: ReplicatedRecord,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::types::{Key, Namespace, NodeId};
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,10}"
    }

    fn record() -> impl Strategy<Value = ReplicatedRecord> {
        let id = (name(), name(), "[a-z0-9/._ -]{1,20}")
            .prop_filter_map("valid id", |(a, n, k)| ObjectId::parse(&a, &n, &k).ok())
            .boxed();
        let version = (any::<u64>(), any::<u64>())
            .prop_map(|(h, n)| Version::new(Hlc(h), NodeId(n)))
            .boxed();
        prop_oneof![
            (
                id.clone(),
                version.clone(),
                "[ -~]{0,30}",
                any::<u64>(),
                any::<[u8; 32]>(),
                proptest::collection::vec((name(), name()), 0..3)
            )
                .prop_map(|(id, version, content_type, len, d, refs)| {
                    ReplicatedRecord::Put {
                        id,
                        version,
                        content_type,
                        len,
                        digest: Digest(d),
                        refs: refs
                            .into_iter()
                            .filter_map(|(n, k)| {
                                Some(ObjectRef::new(Namespace::new(n).ok()?, Key::new(k).ok()?))
                            })
                            .collect(),
                    }
                }),
            (id.clone(), version.clone())
                .prop_map(|(id, version)| ReplicatedRecord::Delete { id, version }),
            (id, version).prop_map(|(id, version)| ReplicatedRecord::DeleteNamespace {
                namespace: id.namespace_id(),
                version
            }),
        ]
    }

    proptest! {
        #[test]
        fn record_round_trips(rec in record()) {
            prop_assert_eq!(ReplicatedRecord::from_bytes(&rec.to_bytes()).ok(), Some(rec));
        }

        #[test]
        fn object_meta_round_trips(
            rec in record(),
            loc in prop_oneof![
                any::<u64>().prop_map(BlobLoc::Inline),
                any::<u64>().prop_map(BlobLoc::File),
                (any::<u64>(), any::<u64>()).prop_map(|(seg, off)| BlobLoc::Packed { seg, off }),
            ],
            times in any::<(u64, u64, u64)>(),
        ) {
            let ReplicatedRecord::Put { id, version, content_type, len, digest, refs } = rec else {
                return Ok(());
            };
            let meta = ObjectMeta {
                id: id.clone(),
                content_type,
                len,
                digest,
                version,
                created_ms: times.0,
                last_access_ms: times.1,
                refs,
                seq: times.2,
                blob: loc,
            };
            prop_assert_eq!(ObjectMeta::decode(id.clone(), &meta.encode()).ok(), Some(meta.clone()));
            // Every truncation is an error, never a panic or a different value.
            let bytes = meta.encode();
            for cut in 0..bytes.len() {
                prop_assert!(ObjectMeta::decode(id.clone(), &bytes[..cut]).is_err());
            }
        }

        #[test]
        fn record_decoding_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(rec) = ReplicatedRecord::from_bytes(&bytes) {
                prop_assert_eq!(ReplicatedRecord::from_bytes(&rec.to_bytes()).ok(), Some(rec));
            }
        }
    }
}
