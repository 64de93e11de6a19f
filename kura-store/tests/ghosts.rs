//! Ghosts: evicted objects keep their digest-summary entry, so the summary records what a
//! replica knows, not what it holds (see `docs/store.md`, "Ghosts").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kura_store::{
    Applied, Config, Digest, Error, Hlc, Learned, ManualClock, MemBackend, NodeId, ObjectId,
    ObjectRef, PutRequest, ReplicatedRecord, Store, Version, body_from_bytes,
};

const T0: u64 = 1_700_000_000_000;

fn config(clock: &Arc<ManualClock>, node: u64) -> Config {
    let mut c = Config::default();
    c.node = NodeId(node);
    c.clock = clock.clone();
    c.max_drift = Duration::from_secs(60);
    c
}

async fn store_at(node: u64) -> (Store, MemBackend, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let b = MemBackend::default();
    let s = Store::open(b.clone(), config(&clock, node)).await.unwrap();
    (s, b, clock)
}

fn root(store: &Store, ns: &str) -> [u8; 32] {
    store.summary_node(&nsid(ns), 0, 0).unwrap()
}

fn put_record(id: &ObjectId, version: Version, data: &[u8]) -> ReplicatedRecord {
    ReplicatedRecord::Put {
        id: id.clone(),
        version,
        content_type: "x".into(),
        len: data.len() as u64,
        digest: Digest::of(data),
        refs: vec![],
    }
}

fn body(data: &[u8]) -> Option<kura_store::BodyStream> {
    Some(Box::pin(body_from_bytes(data.to_vec())))
}

/// Puts `n` objects (half inline, half file-backed) into `ns`.
async fn fill(store: &Store, ns: &str, n: u64) -> Vec<ObjectId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = oid(ns, &format!("k{i}"));
        let len = if i % 2 == 0 { 100 } else { 70_000 };
        store
            .put_bytes(id.clone(), pattern(i, len as usize))
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn eviction_leaves_the_summary_root_unchanged() {
    let (store, _, _) = store_at(1).await;
    let ids = fill(&store, "cas", 20).await;
    let before = root(&store, "cas");
    let evicted = store.evict_to(0).await.unwrap();
    assert_eq!(evicted, 20);
    assert_eq!(root(&store, "cas"), before, "eviction changed the summary");
    let st = store.stats();
    assert_eq!((st.objects, st.bytes, st.ghosts), (0, 0, 20));
    for id in &ids {
        assert!(store.head(id).unwrap().is_none(), "a ghost is a miss");
        assert!(store.get(id).await.unwrap().is_none(), "a ghost is a miss");
    }
    // Bucket entries say the objects are not held.
    let mut seen = 0;
    for leaf in 0..kura_store::summary::LEAVES {
        for e in store.summary_bucket(&nsid("cas"), leaf).unwrap() {
            assert!(!e.held, "{} still reported held", e.key);
            seen += 1;
        }
    }
    assert_eq!(seen, 20);
    store.verify_summary().unwrap();
    assert!(store.list(&nsid("cas"), None, 100).unwrap().is_empty());
}

#[tokio::test]
async fn without_ghosts_eviction_leaves_nothing_behind() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = config(&clock, 1);
    cfg.ghosts = false;
    let store = Store::open(MemBackend::default(), cfg).await.unwrap();
    fill(&store, "cas", 10).await;
    assert_eq!(store.evict_to(0).await.unwrap(), 10);
    let st = store.stats();
    assert_eq!((st.objects, st.ghosts), (0, 0));
    assert_eq!(
        root(&store, "cas"),
        [0u8; 32],
        "no entries left in the summary"
    );
    store.verify_summary().unwrap();
}

#[tokio::test]
async fn partial_eviction_marks_only_the_evicted() {
    let (store, _, _) = store_at(1).await;
    fill(&store, "cas", 10).await;
    let before = root(&store, "cas");
    let total = store.stats().bytes;
    store.evict_to(total / 2).await.unwrap();
    let st = store.stats();
    assert!(st.ghosts > 0 && st.objects > 0);
    assert_eq!(st.ghosts + st.objects, 10);
    assert_eq!(root(&store, "cas"), before);
    store.verify_summary().unwrap();
}

#[tokio::test]
async fn writes_over_a_ghost_keep_the_summary_consistent() {
    let (store, _, clock) = store_at(1).await;
    let ids = fill(&store, "cas", 6).await;
    store.evict_to(0).await.unwrap();
    clock.advance(10);
    // Local put over a ghost: fresh version, replaces it.
    store.put_bytes(ids[0].clone(), "new").await.unwrap();
    assert_eq!(read(&store, &ids[0]).await.unwrap(), b"new");
    store.verify_summary().unwrap();
    // Local delete over a ghost: a miss, but the tombstone replaces the ghost.
    assert!(!store.delete(&ids[1]).await.unwrap());
    store.verify_summary().unwrap();
    // Newer replicated put over a ghost.
    let v = Version::new(Hlc::new(T0 + 20, 0), NodeId(2));
    let got = store
        .apply_replicated(put_record(&ids[2], v, b"remote"), body(b"remote"))
        .await
        .unwrap();
    assert_eq!(got, Applied::Applied);
    assert_eq!(read(&store, &ids[2]).await.unwrap(), b"remote");
    // Newer replicated delete over a ghost.
    let got = store
        .apply_replicated(
            ReplicatedRecord::Delete {
                id: ids[3].clone(),
                version: Version::new(Hlc::new(T0 + 20, 0), NodeId(2)),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(got, Applied::Applied);
    assert_eq!(store.stats().ghosts, 2);
    store.verify_summary().unwrap();
    // Reopening keeps ghosts and their counters.
    let b = MemBackend::default();
    let s2 = Store::open(b.clone(), config(&clock, 1)).await.unwrap();
    fill(&s2, "cas", 4).await;
    s2.evict_to(0).await.unwrap();
    let r = root(&s2, "cas");
    s2.close().await.unwrap();
    let s2 = Store::open(b, config(&clock, 1)).await.unwrap();
    assert_eq!(s2.stats().ghosts, 4);
    assert_eq!(root(&s2, "cas"), r);
    s2.verify_summary().unwrap();
}

#[tokio::test]
async fn a_ghost_blocks_older_and_equal_replicated_puts() {
    let (store, _, _) = store_at(1).await;
    let id = oid("cas", "x");
    let v = Version::new(Hlc::new(T0 - 100, 0), NodeId(2));
    store
        .apply_replicated(put_record(&id, v, b"data"), body(b"data"))
        .await
        .unwrap();
    store.evict_to(0).await.unwrap();
    assert_eq!(store.stats().ghosts, 1);
    // The same record again (a retried push): not applied, the object stays evicted.
    let rec = put_record(&id, v, b"data");
    assert!(!store.wants(&rec).unwrap());
    assert_eq!(
        store.apply_replicated(rec, body(b"data")).await.unwrap(),
        Applied::Ignored
    );
    // An older one neither.
    let older = Version::new(Hlc::new(T0 - 200, 0), NodeId(3));
    assert_eq!(
        store
            .apply_replicated(put_record(&id, older, b"old"), body(b"old"))
            .await
            .unwrap(),
        Applied::Ignored
    );
    assert!(store.head(&id).unwrap().is_none());
    assert_eq!(store.stats().ghosts, 1);
    store.verify_summary().unwrap();
}

#[tokio::test]
async fn namespace_delete_removes_ghosts() {
    let (store, _, clock) = store_at(1).await;
    fill(&store, "cas", 8).await;
    fill(&store, "other", 3).await;
    store.evict_to(0).await.unwrap();
    let other = root(&store, "other");
    clock.advance(5);
    store.delete_namespace(&nsid("cas")).await.unwrap();
    assert_eq!(root(&store, "cas"), [0; 32]);
    assert_eq!(root(&store, "other"), other);
    assert_eq!(store.stats().ghosts, 3);
    store.verify_summary().unwrap();
}

/// Regression: deleting a namespace must drop the entries of the objects it removes, not
/// turn them into ghosts (only eviction does that).
#[tokio::test]
async fn namespace_delete_of_held_objects_leaves_no_ghosts() {
    let (store, _, clock) = store_at(1).await;
    fill(&store, "cas", 4).await;
    clock.advance(5);
    assert_eq!(store.delete_namespace(&nsid("cas")).await.unwrap(), 4);
    assert_eq!(store.stats().ghosts, 0);
    assert_eq!(root(&store, "cas"), [0; 32]);
    store.verify_summary().unwrap();
}

#[tokio::test]
async fn cascade_evicted_referrers_become_ghosts() {
    let (store, _, clock) = store_at(1).await;
    let blob = oid("cas", "blob");
    store.put_bytes(blob.clone(), "output").await.unwrap();
    let ac = oid("ac", "action");
    store
        .put(
            PutRequest::new(ac.clone()).with_refs(vec![ObjectRef::new(
                blob.namespace.clone(),
                blob.key.clone(),
            )]),
            body_from_bytes("result"),
        )
        .await
        .unwrap();
    clock.advance(10);
    read(&store, &ac).await.unwrap();
    store.flush_access().await.unwrap();
    let (cas_root, ac_root) = (root(&store, "cas"), root(&store, "ac"));
    let total = store.stats().bytes;
    store.evict_to(total - 1).await.unwrap();
    assert!(store.head(&blob).unwrap().is_none());
    assert!(store.head(&ac).unwrap().is_none());
    assert_eq!(store.stats().ghosts, 2);
    assert_eq!(
        (root(&store, "cas"), root(&store, "ac")),
        (cas_root, ac_root)
    );
    store.verify_summary().unwrap();
}

#[tokio::test]
async fn a_corrupt_blob_leaves_no_ghost() {
    let (store, b, _) = store_at(1).await;
    let id = oid("cas", "big");
    store
        .put_bytes(id.clone(), pattern(3, 300_000))
        .await
        .unwrap();
    b.corrupt_blob(b.blob_ids()[0], 10);
    let rep = store.scrub(0).await.unwrap();
    assert_eq!(rep.corrupt, 1);
    store.checkpoint().await.unwrap();
    // The entry is gone, so a peer's good copy looks new and repair fetches it.
    assert_eq!(store.stats().ghosts, 0);
    assert_eq!(root(&store, "cas"), [0; 32]);
    store.verify_summary().unwrap();
}

#[tokio::test]
async fn ghosts_are_bounded_by_gc_on_eviction_time() {
    let (store, _, clock) = store_at(1).await;
    fill(&store, "cas", 5).await;
    let full = root(&store, "cas");
    clock.advance(1_000);
    store.evict_to(0).await.unwrap();
    let evicted_at = T0 + 1_000;
    // Tombstone GC leaves ghosts alone (their version is the write time, not eviction).
    assert_eq!(
        store.gc_tombstones(Hlc::new(T0 + 5_000, 0)).await.unwrap(),
        0
    );
    assert_eq!(store.stats().ghosts, 5);
    assert_eq!(store.gc_ghosts(evicted_at).await.unwrap(), 0);
    assert_eq!(store.gc_ghosts(evicted_at + 1).await.unwrap(), 5);
    assert_eq!(store.stats().ghosts, 0);
    assert_ne!(root(&store, "cas"), full);
    assert_eq!(root(&store, "cas"), [0; 32]);
    store.verify_summary().unwrap();
}

#[tokio::test]
async fn learn_bumps_same_digest_and_records_ghosts_otherwise() {
    let (a, _, a_clock) = store_at(1).await;
    let (b, _, _) = store_at(2).await;
    let same = oid("cas", "same");
    let diff = oid("cas", "diff");
    let fresh = oid("cas", "fresh");
    let tomb = oid("cas", "tomb");
    // b writes first, a later (same bytes for `same`): a's versions win.
    b.put_bytes(same.clone(), "same").await.unwrap();
    b.put_bytes(diff.clone(), "old").await.unwrap();
    b.put_bytes(tomb.clone(), "x").await.unwrap();
    b.delete(&tomb).await.unwrap();
    a_clock.advance(10);
    let s = a.put_bytes(same.clone(), "same").await.unwrap();
    let d = a.put_bytes(diff.clone(), "new").await.unwrap();
    let f = a.put_bytes(fresh.clone(), "fresh").await.unwrap();
    let t = a.put_bytes(tomb.clone(), "t").await.unwrap();
    assert_ne!(root(&a, "cas"), root(&b, "cas"));

    assert_eq!(
        b.learn(&same, s.version, s.digest, None).await.unwrap(),
        Learned::Bumped
    );
    let held = b.head(&same).unwrap().unwrap();
    assert_eq!(held.version, s.version);
    assert_eq!(read(&b, &same).await.unwrap(), b"same");
    assert_eq!(
        b.learn(&diff, d.version, d.digest, None).await.unwrap(),
        Learned::Ghost
    );
    assert!(
        b.head(&diff).unwrap().is_none(),
        "the older copy was dropped"
    );
    assert_eq!(
        b.learn(&fresh, f.version, f.digest, None).await.unwrap(),
        Learned::Ghost
    );
    assert_eq!(
        b.learn(&tomb, t.version, t.digest, None).await.unwrap(),
        Learned::Ghost
    );
    // Learning is idempotent, and older knowledge is ignored.
    assert_eq!(
        b.learn(&fresh, f.version, f.digest, None).await.unwrap(),
        Learned::Ignored
    );
    let older = Version::new(Hlc(f.version.hlc.0 - 1), NodeId(9));
    assert_eq!(
        b.learn(&fresh, older, f.digest, None).await.unwrap(),
        Learned::Ignored
    );
    assert_eq!(root(&a, "cas"), root(&b, "cas"), "summaries converge");
    assert_eq!(b.stats().ghosts, 3);
    b.verify_summary().unwrap();
    // A ghost learned this way still yields to a newer write.
    let v = Version::new(Hlc(f.version.hlc.0 + 1), NodeId(1));
    assert_eq!(
        b.apply_replicated(put_record(&fresh, v, b"newer"), body(b"newer"))
            .await
            .unwrap(),
        Applied::Applied
    );
    b.verify_summary().unwrap();
    // Clock skew is refused like any replicated timestamp.
    let far = Version::new(Hlc::new(T0 + 3_600_000, 0), NodeId(1));
    assert!(matches!(
        b.learn(&fresh, far, f.digest, None).await,
        Err(Error::ClockSkew { .. })
    ));
}

#[tokio::test]
async fn learning_drops_referrers_of_the_replaced_copy() {
    let (b, _, _) = store_at(2).await;
    let blob = oid("cas", "blob");
    b.put_bytes(blob.clone(), "v1").await.unwrap();
    let ac = oid("ac", "a");
    b.put(
        PutRequest::new(ac.clone()).with_refs(vec![ObjectRef::new(
            blob.namespace.clone(),
            blob.key.clone(),
        )]),
        body_from_bytes("r"),
    )
    .await
    .unwrap();
    let ac_root = root(&b, "ac");
    let v = Version::new(Hlc::new(T0 + 10, 0), NodeId(1));
    assert_eq!(
        b.learn(&blob, v, Digest::of(b"v2"), None).await.unwrap(),
        Learned::Ghost
    );
    assert!(b.head(&ac).unwrap().is_none());
    assert_eq!(root(&b, "ac"), ac_root, "the referrer is a ghost");
    assert_eq!(b.stats().ghosts, 2);
    b.verify_summary().unwrap();
}

/// A learned ghost keeps the peer's eviction time, so two replicas cannot keep re-teaching
/// each other a ghost that ghost GC already dropped on one side.
#[tokio::test]
async fn learned_ghosts_keep_the_peers_eviction_time() {
    let (a, _, a_clock) = store_at(1).await;
    let (b, _, b_clock) = store_at(2).await;
    b_clock.advance(100);
    let id = oid("cas", "k");
    a_clock.advance(10);
    let m = a.put_bytes(id.clone(), "bytes").await.unwrap();
    a_clock.advance(10);
    a.evict_to(0).await.unwrap();
    let entry = (0..kura_store::summary::LEAVES)
        .flat_map(|l| a.summary_bucket(&nsid("cas"), l).unwrap())
        .next()
        .unwrap();
    assert!(!entry.held);
    assert_eq!(entry.evicted_ms, T0 + 20);
    assert_eq!(
        b.learn(&id, m.version, m.digest, Some(entry.evicted_ms))
            .await
            .unwrap(),
        Learned::Ghost
    );
    assert_eq!(root(&a, "cas"), root(&b, "cas"));
    // Same deadline on both sides.
    assert_eq!(b.gc_ghosts(T0 + 20).await.unwrap(), 0);
    assert_eq!(b.gc_ghosts(T0 + 21).await.unwrap(), 1);
    // An eviction time in the future is capped at the learner's clock.
    let other = oid("cas", "other");
    let v = Version::new(Hlc::new(T0 - 5, 0), NodeId(1));
    b.learn(&other, v, Digest::of(b"o"), Some(u64::MAX))
        .await
        .unwrap();
    assert_eq!(b.gc_ghosts(T0 + 100).await.unwrap(), 0);
    assert_eq!(b.gc_ghosts(T0 + 101).await.unwrap(), 1);
    b.verify_summary().unwrap();
}
