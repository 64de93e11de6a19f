//! The read cache of small objects: hits, exact invalidation by every kind of change, the
//! byte bound, the off switch, and readers racing a writer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use kura_store::{
    Applied, Capacity, Config, Digest, Hlc, Learned, ManualClock, MemBackend, NodeId, ObjectId,
    ReplicatedRecord, Stats, Store, Version,
};

const T0: u64 = 1_700_000_000_000;

fn config(clock: &Arc<ManualClock>, cache: usize) -> Config {
    let mut c = Config::default();
    c.node = NodeId(1);
    c.clock = clock.clone();
    c.read_cache_bytes = cache;
    // No background access flush between the reads the tests count.
    c.access_flush_interval = Duration::from_secs(3600);
    c
}

async fn open(cache: usize) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(MemBackend::default(), config(&clock, cache))
        .await
        .unwrap();
    (store, clock)
}

/// Reads `id` twice, checking bytes and version both times; the second read must come
/// from the cache (so an invalidation that was missed would show here as a stale hit).
async fn expect(store: &Store, id: &ObjectId, want: Option<(&[u8], Version)>) {
    for round in 0..2 {
        let before = store.stats();
        let got = store.get(id).await.unwrap();
        let after = store.stats();
        match (got, want) {
            (None, None) => {}
            (Some(o), Some((bytes, version))) => {
                assert_eq!(o.meta().version, version, "version of {id} (round {round})");
                assert_eq!(o.meta().len, bytes.len() as u64);
                assert_eq!(o.meta().digest, Digest::of(bytes));
                assert_eq!(o.verified_bytes().as_deref(), Some(bytes), "verified bytes");
                assert_eq!(o.read_all().await.unwrap(), bytes, "reader bytes");
                if round == 1 {
                    assert_eq!(after.read_cache_hits, before.read_cache_hits + 1, "a hit");
                }
            }
            (got, want) => panic!(
                "{id}: got {:?}, want {:?}",
                got.map(|o| o.meta().version),
                want.map(|w| w.1)
            ),
        }
    }
}

#[tokio::test]
async fn cached_object_is_served_after_put() {
    let (store, _) = open(32 << 20).await;
    let id = oid("c", "small");
    let data = pattern(1, 4096);
    let meta = store.put_bytes(id.clone(), data.clone()).await.unwrap();
    let s0 = store.stats();
    let first = store.get(&id).await.unwrap().unwrap();
    assert_eq!(first.verified_bytes().as_deref(), Some(data.as_slice()));
    let s1 = store.stats();
    assert_eq!(s1.read_cache_misses, s0.read_cache_misses + 1);
    assert_eq!(s1.read_cache_objects, 1);
    assert!(s1.read_cache_bytes >= 4096);
    for _ in 0..10 {
        let o = store.get(&id).await.unwrap().unwrap();
        assert_eq!(o.meta().version, meta.version);
        assert_eq!(o.verified_bytes().as_deref(), Some(data.as_slice()));
        assert_eq!(o.read_all().await.unwrap(), data);
        assert_eq!(
            o.range_reader(10..20)
                .unwrap()
                .next_chunk()
                .await
                .unwrap()
                .unwrap(),
            data[10..20]
        );
    }
    assert_eq!(store.stats().read_cache_hits, s1.read_cache_hits + 10);
    // File-backed objects are not cached and have no verified bytes.
    let big = oid("c", "big");
    let bdata = pattern(2, 100_000);
    store.put_bytes(big.clone(), bdata.clone()).await.unwrap();
    for _ in 0..2 {
        let o = store.get(&big).await.unwrap().unwrap();
        assert!(o.verified_bytes().is_none());
        assert_eq!(o.read_all().await.unwrap(), bdata);
    }
    assert_eq!(store.stats().read_cache_objects, 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn no_change_lets_a_stale_body_be_served() {
    let (store, clock) = open(32 << 20).await;
    let id = oid("c", "k");
    let other = oid("c", "other");
    let v = |n: u64| pattern(n, 100 + n as usize);

    // Local overwrite.
    let m1 = store.put_bytes(id.clone(), v(1)).await.unwrap();
    expect(&store, &id, Some((&v(1), m1.version))).await;
    let m2 = store.put_bytes(id.clone(), v(2)).await.unwrap();
    expect(&store, &id, Some((&v(2), m2.version))).await;
    // Same bytes again: a new version all the same.
    let m2b = store.put_bytes(id.clone(), v(2)).await.unwrap();
    assert_ne!(m2b.version, m2.version);
    expect(&store, &id, Some((&v(2), m2b.version))).await;

    // Delete.
    assert!(store.delete(&id).await.unwrap());
    expect(&store, &id, None).await;
    let m3 = store.put_bytes(id.clone(), v(3)).await.unwrap();
    expect(&store, &id, Some((&v(3), m3.version))).await;

    // Namespace delete.
    let mo = store.put_bytes(other.clone(), v(9)).await.unwrap();
    expect(&store, &other, Some((&v(9), mo.version))).await;
    assert_eq!(store.delete_namespace(&nsid("c")).await.unwrap(), 2);
    expect(&store, &id, None).await;
    expect(&store, &other, None).await;
    clock.advance(10);
    let m4 = store.put_bytes(id.clone(), v(4)).await.unwrap();
    expect(&store, &id, Some((&v(4), m4.version))).await;

    // Eviction.
    store.evict_to(0).await.unwrap();
    expect(&store, &id, None).await;
    store.gc_ghosts(u64::MAX).await.unwrap();
    let m5 = store.put_bytes(id.clone(), v(5)).await.unwrap();
    expect(&store, &id, Some((&v(5), m5.version))).await;

    // Replicated put that wins, replicated delete, a losing one changes nothing.
    clock.advance(10);
    let rec = put_record(&id, Hlc::new(clock_now(&clock) + 5, 0), 2, &v(6));
    let rv = rec.version();
    assert_eq!(
        store.apply_replicated(rec, body(&v(6))).await.unwrap(),
        Applied::Applied
    );
    expect(&store, &id, Some((&v(6), rv))).await;
    let old = put_record(&id, Hlc::new(T0, 0), 2, &v(7));
    assert_eq!(
        store.apply_replicated(old, body(&v(7))).await.unwrap(),
        Applied::Ignored
    );
    expect(&store, &id, Some((&v(6), rv))).await;
    let del = ReplicatedRecord::Delete {
        id: id.clone(),
        version: Version::new(Hlc::new(clock_now(&clock) + 6, 0), NodeId(2)),
    };
    assert_eq!(
        store.apply_replicated(del, None).await.unwrap(),
        Applied::Applied
    );
    expect(&store, &id, None).await;

    // Learn: same digest bumps the version in place; another digest makes a ghost.
    clock.advance(100);
    let m8 = store.put_bytes(id.clone(), v(8)).await.unwrap();
    expect(&store, &id, Some((&v(8), m8.version))).await;
    let bumped = Version::new(Hlc::new(clock_now(&clock) + 10, 0), NodeId(3));
    assert_eq!(
        store
            .learn(&id, bumped, Digest::of(&v(8)), None)
            .await
            .unwrap(),
        Learned::Bumped
    );
    expect(&store, &id, Some((&v(8), bumped))).await;
    let ghost = Version::new(Hlc::new(clock_now(&clock) + 20, 0), NodeId(3));
    assert_eq!(
        store
            .learn(&id, ghost, Digest::of(&v(10)), None)
            .await
            .unwrap(),
        Learned::Ghost
    );
    expect(&store, &id, None).await;

    // A put after a ghost (ghost transition back to held).
    clock.advance(100);
    let m11 = store.put_bytes(id.clone(), v(11)).await.unwrap();
    expect(&store, &id, Some((&v(11), m11.version))).await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn access_time_flush_refreshes_the_cached_metadata() {
    let (store, clock) = open(32 << 20).await;
    let id = oid("c", "k");
    let m = store.put_bytes(id.clone(), "abc").await.unwrap();
    assert_eq!(m.last_access_ms, T0);
    expect(&store, &id, Some((b"abc", m.version))).await;
    clock.advance(5000);
    store.get(&id).await.unwrap().unwrap();
    store.flush_access().await.unwrap();
    let hits = store.stats().read_cache_hits;
    let o = store.get(&id).await.unwrap().unwrap();
    assert_eq!(store.stats().read_cache_hits, hits + 1, "still cached");
    assert_eq!(o.meta().last_access_ms, T0 + 5000);
    assert_eq!(store.head(&id).unwrap().unwrap(), *o.meta());
    store.close().await.unwrap();
}

#[tokio::test]
async fn cache_stays_within_its_byte_bound() {
    let bound = 64 * 1024;
    let (store, _) = open(bound).await;
    let mut metas = Vec::new();
    for k in 0..300u64 {
        let id = oid("b", &format!("k{k}"));
        metas.push((
            id.clone(),
            store.put_bytes(id, pattern(k, 1024)).await.unwrap(),
        ));
    }
    for round in 0..3 {
        for (k, (id, m)) in metas.iter().enumerate() {
            // The second read of a key just read is a hit; the scan as a whole is larger
            // than the cache, so the shards keep evicting.
            for again in 0..2 {
                let hits = store.stats().read_cache_hits;
                let o = store.get(id).await.unwrap().unwrap();
                assert_eq!(o.meta().version, m.version);
                let bytes = o.read_all().await.unwrap();
                assert_eq!(bytes, pattern(k as u64, 1024), "round {round}");
                let s = store.stats();
                let within = s.read_cache_bytes <= bound as u64;
                assert!(within, "{} > {bound}", s.read_cache_bytes);
                if again == 1 {
                    assert_eq!(s.read_cache_hits, hits + 1, "{id} was just read");
                }
            }
        }
    }
    let s = store.stats();
    assert!(
        s.read_cache_objects > 0 && s.read_cache_objects < 300,
        "{s:?}"
    );
    assert!(s.read_cache_hits >= 900);
    store.close().await.unwrap();
}

#[tokio::test]
async fn capacity_eviction_drops_cached_copies() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut c = config(&clock, 32 << 20);
    c.capacity = Capacity::Bytes(20_000);
    let store = Store::open(MemBackend::default(), c).await.unwrap();
    let ids: Vec<ObjectId> = (0..12).map(|k| oid("e", &format!("k{k}"))).collect();
    let mut evicted_while_cached = 0;
    for (k, id) in ids.iter().enumerate() {
        clock.advance(10);
        store
            .put_bytes(id.clone(), pattern(k as u64, 3000))
            .await
            .unwrap();
        // Every key: what `get` returns (from the cache or not) is what redb holds.
        for (j, other) in ids.iter().enumerate().take(k + 1) {
            let cached_before = store.stats().read_cache_objects;
            let head = store.head(other).unwrap();
            match (store.get(other).await.unwrap(), head) {
                (None, None) => evicted_while_cached += usize::from(cached_before > 0),
                (Some(o), Some(h)) => {
                    assert_eq!(*o.meta(), h);
                    assert_eq!(o.read_all().await.unwrap(), pattern(j as u64, 3000));
                }
                (g, h) => panic!("{other}: get {:?}, head {h:?}", g.map(|o| o.meta().clone())),
            }
        }
    }
    assert!(store.stats().evictions > 0, "background eviction ran");
    assert!(evicted_while_cached > 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn zero_disables_the_cache() {
    let (store, _) = open(0).await;
    let id = oid("z", "k");
    let m = store.put_bytes(id.clone(), pattern(3, 4096)).await.unwrap();
    for _ in 0..5 {
        let o = store.get(&id).await.unwrap().unwrap();
        assert_eq!(o.meta().version, m.version);
        // Still verified once when opened.
        assert_eq!(o.verified_bytes().unwrap(), pattern(3, 4096));
    }
    let m2 = store.put_bytes(id.clone(), pattern(4, 4096)).await.unwrap();
    let o = store.get(&id).await.unwrap().unwrap();
    assert_eq!(o.meta().version, m2.version);
    assert_eq!(o.read_all().await.unwrap(), pattern(4, 4096));
    let s: Stats = store.stats();
    assert_eq!(
        (
            s.read_cache_hits,
            s.read_cache_misses,
            s.read_cache_bytes,
            s.read_cache_objects
        ),
        (0, 0, 0, 0)
    );
    store.close().await.unwrap();
}

/// Value `i`: an 8-byte index followed by a pattern derived from it.
fn value(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend(pattern(i, 2000 + (i % 7) as usize * 300));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_racing_a_writer_never_see_an_older_acknowledged_value() {
    let store = Store::open(MemBackend::default(), Config::default())
        .await
        .unwrap();
    let id = oid("race", "k");
    store.put_bytes(id.clone(), value(0)).await.unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (store, id, acked, done) = (store.clone(), id.clone(), acked.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(Ordering::SeqCst) {
                let floor = acked.load(Ordering::SeqCst);
                let o = store.get(&id).await.unwrap().expect("never absent");
                let bytes = o.read_all().await.unwrap();
                let i = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                assert_eq!(bytes, value(i), "a written value, whole");
                assert_eq!(o.meta().digest, Digest::of(&bytes));
                assert!(i >= floor, "read {i} after {floor} was acknowledged");
                reads += 1;
                if reads % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            reads
        }));
    }
    let writer = {
        let (store, id, acked) = (store.clone(), id.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 1..=300u64 {
                store.put_bytes(id.clone(), value(i)).await.unwrap();
                acked.store(i, Ordering::SeqCst);
                // Let readers fill the cache with this value before the next write.
                let deadline = std::time::Instant::now() + Duration::from_millis(50);
                let hits = store.stats().read_cache_hits;
                while store.stats().read_cache_hits < hits + 4
                    && std::time::Instant::now() < deadline
                {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    writer.await.unwrap();
    done.store(true, Ordering::SeqCst);
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap();
    }
    let s = store.stats();
    assert!(total > 300, "readers ran ({total})");
    assert!(s.read_cache_hits > 0, "the cache was used: {s:?}");
    let o = store.get(&id).await.unwrap().unwrap();
    assert_eq!(o.read_all().await.unwrap(), value(300));
    store.close().await.unwrap();
}

fn clock_now(c: &ManualClock) -> u64 {
    use kura_store::Clock;
    c.now_ms()
}
