//! The replication merge rule as a pure function, and its laws.
//!
//! State per key is the record with the greatest [`Version`] (`(hlc, node)` order; a put and a
//! key tombstone compare by version like any two records, with the record's payload as a final
//! deterministic tie-break so that even malformed equal-version inputs converge). State per
//! namespace is the greatest namespace tombstone. A record whose version is lower than its
//! namespace tombstone is dropped.
//!
//! [`State::join`] is the least upper bound of two states, so it is **commutative**,
//! **associative** and **idempotent** (tested by proptest in this module); applying a record
//! is joining with a singleton state. [`crate::Store::apply_replicated`] applies exactly
//! [`winner`] and [`shadowed_by_namespace`].

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::hlc::Version;
use crate::types::Digest;

/// What a key holds at a version, as far as merging is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Payload {
    /// A key tombstone (the key was deleted).
    Deleted,
    /// An object with this content digest.
    Present(Digest),
}

/// A versioned record for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The record's version.
    pub version: Version,
    /// The record's payload.
    pub payload: Payload,
}

impl Entry {
    fn order_key(&self) -> (Version, Payload) {
        (self.version, self.payload)
    }
}

/// Whether `incoming` replaces `existing` under last-writer-wins.
pub fn winner(existing: &Entry, incoming: &Entry) -> bool {
    incoming.order_key().cmp(&existing.order_key()) == Ordering::Greater
}

/// Whether a record at `version` is erased by a namespace tombstone at `tombstone`.
pub fn shadowed_by_namespace(version: Version, tombstone: Option<Version>) -> bool {
    tombstone.is_some_and(|t| version < t)
}

/// A replica's merge state: key → entry, namespace → tombstone version. Keys are generic so
/// the laws can be tested on small domains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State<N: Ord + Clone, K: Ord + Clone> {
    /// Live entries (puts and key tombstones) by `(namespace, key)`.
    pub entries: BTreeMap<(N, K), Entry>,
    /// Namespace tombstones.
    pub namespaces: BTreeMap<N, Version>,
}

impl<N: Ord + Clone, K: Ord + Clone> State<N, K> {
    /// Applies one record for `(ns, key)`. Returns whether it changed the state.
    pub fn apply(&mut self, ns: N, key: K, entry: Entry) -> bool {
        if shadowed_by_namespace(entry.version, self.namespaces.get(&ns).copied()) {
            return false;
        }
        match self.entries.get(&(ns.clone(), key.clone())) {
            Some(old) if !winner(old, &entry) => false,
            _ => {
                self.entries.insert((ns, key), entry);
                true
            }
        }
    }

    /// Applies a namespace tombstone. Returns whether it changed the state.
    pub fn delete_namespace(&mut self, ns: N, version: Version) -> bool {
        if self.namespaces.get(&ns).is_some_and(|t| *t >= version) {
            return false;
        }
        self.namespaces.insert(ns.clone(), version);
        self.entries
            .retain(|(n, _), e| *n != ns || !shadowed_by_namespace(e.version, Some(version)));
        true
    }

    /// The least upper bound of two states.
    pub fn join(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (ns, v) in &other.namespaces {
            out.delete_namespace(ns.clone(), *v);
        }
        for ((ns, key), e) in &other.entries {
            out.apply(ns.clone(), key.clone(), *e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::types::NodeId;
    use proptest::prelude::*;

    type S = State<u8, u8>;

    fn entry() -> impl Strategy<Value = Entry> {
        (0u64..6, 0u64..3, proptest::option::of(0u8..3)).prop_map(|(h, n, p)| Entry {
            version: Version::new(Hlc(h), NodeId(n)),
            payload: match p {
                None => Payload::Deleted,
                Some(b) => Payload::Present(Digest([b; 32])),
            },
        })
    }

    fn state() -> impl Strategy<Value = S> {
        let ops = proptest::collection::vec(
            prop_oneof![
                (0u8..2, 0u8..3, entry()).prop_map(|(n, k, e)| (n, Some(k), e)),
                (0u8..2, entry()).prop_map(|(n, e)| (n, None, e)),
            ],
            0..8,
        );
        ops.prop_map(|ops| {
            let mut s = S::default();
            for (n, k, e) in ops {
                match k {
                    Some(k) => {
                        s.apply(n, k, e);
                    }
                    None => {
                        s.delete_namespace(n, e.version);
                    }
                }
            }
            s
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn join_is_commutative(a in state(), b in state()) {
            prop_assert_eq!(a.join(&b), b.join(&a));
        }

        #[test]
        fn join_is_associative(a in state(), b in state(), c in state()) {
            prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
        }

        #[test]
        fn join_is_idempotent(a in state(), b in state()) {
            prop_assert_eq!(a.join(&a), a.clone());
            let ab = a.join(&b);
            prop_assert_eq!(ab.join(&b), ab);
        }

        #[test]
        fn apply_order_does_not_matter(ops in proptest::collection::vec((0u8..2, 0u8..3, entry()), 0..10)) {
            let mut fwd = S::default();
            for (n, k, e) in &ops { fwd.apply(*n, *k, *e); }
            let mut rev = S::default();
            for (n, k, e) in ops.iter().rev() { rev.apply(*n, *k, *e); }
            prop_assert_eq!(fwd, rev);
        }
    }

    #[test]
    fn record_older_than_namespace_tombstone_is_dropped() {
        let mut s = S::default();
        let v = |h| Version::new(Hlc(h), NodeId(1));
        s.delete_namespace(0, v(10));
        assert!(!s.apply(
            0,
            1,
            Entry {
                version: v(9),
                payload: Payload::Deleted
            }
        ));
        assert!(s.apply(
            0,
            1,
            Entry {
                version: v(11),
                payload: Payload::Deleted
            }
        ));
        assert!(s.apply(
            1,
            1,
            Entry {
                version: v(1),
                payload: Payload::Deleted
            }
        ));
    }
}
