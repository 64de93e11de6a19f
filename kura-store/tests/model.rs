//! Model-based test: random sequences of put / get / delete / delete-namespace /
//! apply-replicated / learn / evict / ghost GC / reopen against a `BTreeMap` model. Evicted
//! objects stay in the model as ghosts (known, not held); after every step the store's
//! digest summary must equal the XOR of its entries (`Store::verify_summary`), and every
//! key read through `Store::get` (twice, so the second read comes from the read cache when
//! the object is cached) must give the model's bytes and version. Runs with the read cache
//! off, tiny (most entries do not fit, shards evict) and at its default size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kura_store::{
    Applied, Config, Digest, Hlc, Learned, ManualClock, MemBackend, NodeId, ObjectId,
    ReplicatedRecord, Store, Version, body_from_bytes,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put {
        ns: u8,
        key: u8,
        len: usize,
        seed: u8,
    },
    Get {
        ns: u8,
        key: u8,
    },
    Delete {
        ns: u8,
        key: u8,
    },
    DeleteNamespace {
        ns: u8,
    },
    Replicate {
        ns: u8,
        key: u8,
        offset_ms: u64,
        node: u64,
        value: Option<u8>,
    },
    Learn {
        ns: u8,
        key: u8,
        offset_ms: u64,
        node: u64,
        value: u8,
    },
    Evict,
    EvictHalf,
    GcGhosts,
    Advance {
        ms: u64,
    },
    Reopen,
    /// Reopen a copy of what was written so far (a crash), without closing.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..2, 0u8..4, prop_oneof![0usize..64, Just(70_000usize)], any::<u8>())
            .prop_map(|(ns, key, len, seed)| Op::Put { ns, key, len, seed }),
        2 => (0u8..2, 0u8..4).prop_map(|(ns, key)| Op::Get { ns, key }),
        2 => (0u8..2, 0u8..4).prop_map(|(ns, key)| Op::Delete { ns, key }),
        1 => (0u8..2).prop_map(|ns| Op::DeleteNamespace { ns }),
        4 => (0u8..2, 0u8..4, 0u64..4000, 2u64..4, proptest::option::of(any::<u8>()))
            .prop_map(|(ns, key, offset_ms, node, value)| Op::Replicate { ns, key, offset_ms, node, value }),
        2 => (0u8..2, 0u8..4, 0u64..4000, 2u64..4, any::<u8>())
            .prop_map(|(ns, key, offset_ms, node, value)| Op::Learn { ns, key, offset_ms, node, value }),
        1 => Just(Op::Evict),
        1 => Just(Op::EvictHalf),
        1 => Just(Op::GcGhosts),
        1 => (1u64..3000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

/// What the model says a key holds: a version and a value (`None` = key tombstone).
#[derive(Clone, Debug)]
struct Cell {
    version: Version,
    value: Option<Vec<u8>>,
    /// `false` for a ghost (known, not held; `value` still gives its digest).
    held: bool,
}

impl Cell {
    /// LWW order: version, then payload (tombstone < present, present by digest).
    fn rank(&self) -> (Version, Option<Digest>) {
        (self.version, self.value.as_deref().map(Digest::of))
    }
}

#[derive(Default, Debug)]
struct Model {
    cells: BTreeMap<(u8, u8), Cell>,
    ns_tombs: BTreeMap<u8, Version>,
}

impl Model {
    fn apply(&mut self, ns: u8, key: u8, cell: Cell) -> bool {
        if self.ns_tombs.get(&ns).is_some_and(|t| cell.version < *t) {
            return false;
        }
        if let Some(old) = self.cells.get(&(ns, key)) {
            if cell.rank() <= old.rank() {
                return false;
            }
        }
        self.cells.insert((ns, key), cell);
        true
    }

    fn delete_ns(&mut self, ns: u8, v: Version) {
        self.ns_tombs.insert(ns, v);
        self.cells.retain(|(n, _), c| *n != ns || c.version >= v);
    }
}

fn id(ns: u8, key: u8) -> ObjectId {
    oid(&format!("ns{ns}"), &format!("key{key}"))
}

const T0: u64 = 1_700_000_000_000;

fn config(clock: &Arc<ManualClock>, cache: usize) -> Config {
    let mut c = Config::default();
    c.read_cache_bytes = cache;
    c.node = NodeId(1);
    c.clock = clock.clone();
    c.max_drift = Duration::from_secs(60);
    c
}

async fn last_version(store: &Store) -> Version {
    let seq = store.stats().last_seq;
    store.changes_since(seq - 1, 1).unwrap()[0].record.version()
}

/// Reads `id` twice through `get` (the read cache) and compares with the model's cell.
async fn check_get(store: &Store, id: &ObjectId, cell: Option<&Cell>) {
    let want = cell.filter(|c| c.held && c.value.is_some());
    for round in 0..2 {
        match (store.get(id).await.unwrap(), want) {
            (None, None) => {}
            (Some(o), Some(c)) => {
                let v = c.value.as_deref().unwrap();
                assert_eq!(
                    o.meta().version,
                    c.version,
                    "version of {id} (read {round})"
                );
                assert_eq!(
                    o.read_all().await.unwrap(),
                    v,
                    "bytes of {id} (read {round})"
                );
                if let Some(b) = o.verified_bytes() {
                    assert_eq!(b, v, "verified bytes of {id} (read {round})");
                }
            }
            (got, want) => panic!(
                "{id} (read {round}): store has {:?}, model {:?}",
                got.map(|o| o.meta().version),
                want.map(|c| c.version)
            ),
        }
    }
}

async fn run(ops: Vec<Op>, cache: usize) {
    let mut backend = MemBackend::default();
    let clock = Arc::new(ManualClock::new(T0));
    let mut store = Store::open(backend.clone(), config(&clock, cache))
        .await
        .unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Put { ns, key, len, seed } => {
                let data = pattern(u64::from(seed), len);
                let meta = store.put_bytes(id(ns, key), data.clone()).await.unwrap();
                assert!(
                    model.apply(
                        ns,
                        key,
                        Cell {
                            version: meta.version,
                            value: Some(data),
                            held: true,
                        }
                    ),
                    "local write lost"
                );
            }
            Op::Get { ns, key } => {
                let expect = model
                    .cells
                    .get(&(ns, key))
                    .filter(|c| c.held)
                    .and_then(|c| c.value.clone());
                assert_eq!(read(&store, &id(ns, key)).await, expect);
                check_get(&store, &id(ns, key), model.cells.get(&(ns, key))).await;
            }
            Op::Delete { ns, key } => {
                let existed = store.delete(&id(ns, key)).await.unwrap();
                let was = model
                    .cells
                    .get(&(ns, key))
                    .is_some_and(|c| c.value.is_some() && c.held);
                assert_eq!(existed, was);
                let v = last_version(&store).await;
                assert!(model.apply(
                    ns,
                    key,
                    Cell {
                        version: v,
                        value: None,
                        held: true,
                    }
                ));
            }
            Op::DeleteNamespace { ns } => {
                store
                    .delete_namespace(&id(ns, 0).namespace_id())
                    .await
                    .unwrap();
                let v = last_version(&store).await;
                model.delete_ns(ns, v);
            }
            Op::Replicate {
                ns,
                key,
                offset_ms,
                node,
                value,
            } => {
                let version = Version::new(
                    Hlc::new(clock_now(&clock) - 2000 + offset_ms, 0),
                    NodeId(node),
                );
                let data = value.map(|s| pattern(u64::from(s), usize::from(s) * 3));
                let (rec, body) = match &data {
                    Some(d) => (
                        ReplicatedRecord::Put {
                            id: id(ns, key),
                            version,
                            content_type: "m".into(),
                            len: d.len() as u64,
                            digest: Digest::of(d),
                            refs: vec![],
                        },
                        Some(Box::pin(body_from_bytes(d.clone())) as kura_store::BodyStream),
                    ),
                    None => (
                        ReplicatedRecord::Delete {
                            id: id(ns, key),
                            version,
                        },
                        None,
                    ),
                };
                let got = store.apply_replicated(rec, body).await.unwrap();
                let want = model.apply(
                    ns,
                    key,
                    Cell {
                        version,
                        value: data,
                        held: true,
                    },
                );
                assert_eq!(
                    got == Applied::Applied,
                    want,
                    "LWW disagreement at {version:?}"
                );
            }
            Op::Learn {
                ns,
                key,
                offset_ms,
                node,
                value,
            } => {
                let version = Version::new(
                    Hlc::new(clock_now(&clock) - 2000 + offset_ms, 0),
                    NodeId(node),
                );
                let data = pattern(u64::from(value), usize::from(value) * 3);
                let got = store
                    .learn(&id(ns, key), version, Digest::of(&data), None)
                    .await
                    .unwrap();
                let old = model.cells.get(&(ns, key)).cloned();
                let want = model.apply(
                    ns,
                    key,
                    Cell {
                        version,
                        value: Some(data.clone()),
                        held: false,
                    },
                );
                let bumped = want
                    && old.is_some_and(|o| o.held && o.value.as_deref() == Some(data.as_slice()));
                if bumped {
                    model.cells.get_mut(&(ns, key)).unwrap().held = true;
                }
                let expect = match (want, bumped) {
                    (false, _) => Learned::Ignored,
                    (true, true) => Learned::Bumped,
                    (true, false) => Learned::Ghost,
                };
                assert_eq!(got, expect, "learn disagreement at {version:?}");
            }
            Op::Evict => {
                store.evict_to(0).await.unwrap();
                for c in model.cells.values_mut() {
                    if c.value.is_some() {
                        c.held = false;
                    }
                }
            }
            Op::EvictHalf => {
                // Which objects go depends on access order: take the store's word for it,
                // then check that it only turned held objects into ghosts.
                store.evict_to(store.stats().bytes / 2).await.unwrap();
                for ((ns, key), c) in model.cells.iter_mut() {
                    if c.value.is_some() && c.held && store.head(&id(*ns, *key)).unwrap().is_none()
                    {
                        c.held = false;
                    }
                }
            }
            Op::GcGhosts => {
                store.gc_ghosts(u64::MAX).await.unwrap();
                model.cells.retain(|_, c| c.held);
            }
            Op::Advance { ms } => clock.advance(ms),
            Op::Reopen => {
                store.close().await.unwrap();
                store = Store::open(backend.clone(), config(&clock, cache))
                    .await
                    .unwrap();
            }
            Op::Crash => {
                // Every acknowledged operation survives; the abandoned handle's last
                // checkpoint goes to the old backend, not to the copy.
                let copy = backend.snapshot();
                store.close().await.unwrap();
                backend = copy;
                store = Store::open(backend.clone(), config(&clock, cache))
                    .await
                    .unwrap();
            }
        }
        // Invariants after every step. Reading every key also fills the read cache, so the
        // next step's change must invalidate what it holds.
        for ns in 0..2 {
            for key in 0..4 {
                check_get(&store, &id(ns, key), model.cells.get(&(ns, key))).await;
            }
        }
        let live: Vec<_> = model
            .cells
            .iter()
            .filter(|(_, c)| c.value.is_some() && c.held)
            .collect();
        let ghosts = model
            .cells
            .values()
            .filter(|c| c.value.is_some() && !c.held)
            .count();
        let s = store.stats();
        assert_eq!(s.objects, live.len() as u64, "object count");
        assert_eq!(s.ghosts, ghosts as u64, "ghost count");
        store.verify_summary().unwrap();
        assert_eq!(
            s.bytes,
            live.iter()
                .map(|(_, c)| c.value.as_ref().map_or(0, Vec::len) as u64)
                .sum::<u64>(),
            "byte count"
        );
    }
    for ((ns, key), c) in &model.cells {
        assert_eq!(
            read(&store, &id(*ns, *key)).await,
            c.value.clone().filter(|_| c.held),
            "final state of {ns}/{key}"
        );
    }
    // The summary's entries are exactly the model's cells (held flag included).
    for ((ns, key), c) in &model.cells {
        let k = id(*ns, *key).key;
        let leaf = kura_store::summary::leaf_of(&k);
        let bucket = store
            .summary_bucket(&id(*ns, 0).namespace_id(), leaf)
            .unwrap();
        let e = bucket
            .iter()
            .find(|e| e.key == k)
            .expect("entry in summary");
        assert_eq!(e.version, c.version, "version of {ns}/{key}");
        assert_eq!(
            e.held,
            c.held || c.value.is_none(),
            "held flag of {ns}/{key}"
        );
    }
    for ns in 0..2 {
        assert_eq!(
            store
                .namespace_tombstone(&id(ns, 0).namespace_id())
                .unwrap(),
            model.ns_tombs.get(&ns).copied()
        );
    }
    store.close().await.unwrap();
}

fn clock_now(c: &ManualClock) -> u64 {
    use kura_store::Clock;
    c.now_ms()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(
        ops in proptest::collection::vec(op(), 1..40),
        cache in prop_oneof![Just(0usize), Just(16 * 900), Just(32usize << 20)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, cache));
    }
}
