//! Per-namespace digest summaries: a fixed fan-out tree of hashes over key-hash ranges.
//!
//! Every key (object or key tombstone) of a namespace falls in one of [`LEAVES`] leaf buckets,
//! chosen by the first 12 bits of SHA-256 of the key. Each entry contributes
//! `SHA-256(key, version, payload)`; a node's hash is the XOR of the contributions of every
//! entry below it, so the tree is updated incrementally in O([`DEPTH`]) per write. The tree
//! has fan-out [`FANOUT`] and depth [`DEPTH`] (root at level 0, leaves at level 3).
//!
//! Two replicas find their differences by comparing roots, then the children of differing
//! nodes ([`differing_children`]), then the entries of differing leaves
//! ([`diff_bucket_entries`]): work and transfer are proportional to the number of differing
//! leaves, not to the data set.

use sha2::{Digest as _, Sha256};

use crate::hlc::Version;
use crate::merge::{Entry, Payload};
use crate::types::Key;

/// Children per node.
pub const FANOUT: usize = 16;
/// Levels below the root.
pub const DEPTH: u8 = 3;
/// Number of leaf buckets (`FANOUT ^ DEPTH`).
pub const LEAVES: u32 = 4096;

/// A node hash (XOR of entry hashes; all zeros for an empty range).
pub type NodeHash = [u8; 32];

/// One entry of a leaf bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketEntry {
    /// The key.
    pub key: Key,
    /// Its version.
    pub version: Version,
    /// Whether it is present (with digest) or a tombstone.
    pub payload: Payload,
    /// Whether this replica holds the object's bytes. `false` for a *ghost*: an evicted
    /// object whose entry stays so the summary records knowledge, not possession. Not part
    /// of the entry's hash (a ghost and the held copy agree), nor of [`diff_bucket_entries`].
    /// Always `true` for tombstones.
    pub held: bool,
    /// For a ghost: when it was evicted (or learned), ms since the Unix epoch; `0` when held.
    /// Ghost GC goes by this time (see [`crate::Store::gc_ghosts`]).
    pub evicted_ms: u64,
}

impl BucketEntry {
    /// The merge entry (version and payload).
    pub fn entry(&self) -> Entry {
        Entry {
            version: self.version,
            payload: self.payload,
        }
    }
}

/// The leaf bucket of a key.
pub fn leaf_of(key: &Key) -> u32 {
    let h = Sha256::digest(key.as_str().as_bytes());
    (u32::from(h[0]) << 4) | (u32::from(h[1]) >> 4)
}

/// Index of the ancestor at `level` (0 = root) of leaf `leaf`.
pub fn ancestor(leaf: u32, level: u8) -> u32 {
    let shift = 4 * u32::from(DEPTH.saturating_sub(level));
    leaf >> shift
}

pub(crate) fn entry_hash(key: &Key, e: &Entry) -> NodeHash {
    let mut h = Sha256::new();
    h.update((key.as_str().len() as u64).to_be_bytes());
    h.update(key.as_str().as_bytes());
    h.update(e.version.hlc.0.to_be_bytes());
    h.update(e.version.node.0.to_be_bytes());
    match e.payload {
        Payload::Deleted => h.update([0u8]),
        Payload::Present(d) => {
            h.update([1u8]);
            h.update(d.0);
        }
    }
    h.finalize().into()
}

pub(crate) fn xor_into(acc: &mut NodeHash, h: &NodeHash) {
    for (a, b) in acc.iter_mut().zip(h) {
        *a ^= b;
    }
}

/// Indices (0..16) of the children that differ between two nodes' child lists.
pub fn differing_children(a: &[NodeHash], b: &[NodeHash]) -> Vec<u32> {
    (0..FANOUT)
        .filter(|&i| a.get(i) != b.get(i))
        .map(|i| i as u32)
        .collect()
}

/// Keys whose entries differ between two copies of the same leaf bucket (present on one side
/// only, or with different versions/payloads; whether an entry is held does not count).
/// Sorted by key.
pub fn diff_bucket_entries(a: &[BucketEntry], b: &[BucketEntry]) -> Vec<Key> {
    use std::collections::BTreeMap;
    let mut m: BTreeMap<&Key, (Option<&BucketEntry>, Option<&BucketEntry>)> = BTreeMap::new();
    for e in a {
        m.entry(&e.key).or_default().0 = Some(e);
    }
    for e in b {
        m.entry(&e.key).or_default().1 = Some(e);
    }
    m.into_iter()
        .filter(|(_, (x, y))| x.map(BucketEntry::entry) != y.map(BucketEntry::entry))
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_nest() {
        let leaf = 0xabc;
        assert_eq!(ancestor(leaf, 3), 0xabc);
        assert_eq!(ancestor(leaf, 2), 0xab);
        assert_eq!(ancestor(leaf, 1), 0xa);
        assert_eq!(ancestor(leaf, 0), 0);
        assert!(leaf_of(&Key::new("x").unwrap()) < LEAVES);
    }
}
