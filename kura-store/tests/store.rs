//! Behaviour of the store through its public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kura_store::{
    Applied, Capacity, Config, Digest, Durability, Error, FaultKind, FaultPoint, FaultyBackend,
    FsBackend, Hlc, ManualClock, MemBackend, NodeId, ObjectRef, PutRequest, ReplicatedRecord,
    Store, Version, body_from_bytes,
};

fn cfg() -> Config {
    Config::default()
}

async fn mem_store() -> (Store, MemBackend) {
    let b = MemBackend::default();
    (Store::open(b.clone(), cfg()).await.unwrap(), b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_round_trip_inline_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg())
        .await
        .unwrap();
    for (i, len) in [0usize, 1, 4096, 64 * 1024, 64 * 1024 + 1, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let id = oid("cas", &format!("k{i}"));
        let data = pattern(i as u64, len);
        let meta = store
            .put(
                PutRequest::new(id.clone()).with_content_type("text/plain"),
                chunks(&data, 10_000),
            )
            .await
            .unwrap();
        assert_eq!(meta.len, len as u64);
        assert_eq!(meta.digest, Digest::of(&data));
        assert_eq!(meta.is_file_backed(), len > 64 * 1024);
        let obj = store.get(&id).await.unwrap().unwrap();
        assert_eq!(obj.meta().content_type, "text/plain");
        assert_eq!(obj.file_slice().is_some(), len > 64 * 1024);
        assert_eq!(obj.read_all().await.unwrap().as_ref(), &data[..]);
    }
    let id = oid("cas", "k5");
    // Overwrite with a small object, then delete.
    store.put_bytes(id.clone(), "small").await.unwrap();
    assert_eq!(read(&store, &id).await.unwrap(), b"small");
    assert!(store.delete(&id).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(!store.delete(&id).await.unwrap());
    let s = store.stats();
    assert_eq!(s.objects, 5);
    assert_eq!(s.bytes, (1 + 4096 + 64 * 1024 + 64 * 1024 + 1) as u64);
    store.close().await.unwrap();
    // The overwritten/deleted 3 MiB blob file is gone; the live large one remains.
    let blob_files = walk(&dir.path().join("blobs"));
    assert_eq!(blob_files, 1, "exactly one file-backed object is live");
}

fn walk(p: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walk(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn reopen_keeps_data_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg())
            .await
            .unwrap();
        store
            .put_bytes(oid("a", "1"), vec![7u8; 100_000])
            .await
            .unwrap();
        store.put_bytes(oid("a", "2"), "two").await.unwrap();
        store.close().await.unwrap();
    }
    let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg())
        .await
        .unwrap();
    assert_eq!(
        read(&store, &oid("a", "1")).await.unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(read(&store, &oid("a", "2")).await.unwrap(), b"two");
    let s = store.stats();
    assert_eq!((s.objects, s.bytes), (2, 100_003));
    assert_eq!(s.last_seq, 2);
}

#[tokio::test]
async fn length_and_digest_mismatches_leave_no_trace() {
    let (store, b) = mem_store().await;
    let data = pattern(1, 200_000);
    let id = oid("cas", "x");
    let short = store
        .put(
            PutRequest::new(id.clone()).with_len(200_001),
            chunks(&data, 4096),
        )
        .await;
    assert!(matches!(
        short,
        Err(Error::LengthMismatch {
            declared: 200_001,
            actual: 200_000
        })
    ));
    let long = store
        .put(
            PutRequest::new(id.clone()).with_len(10),
            chunks(&data, 4096),
        )
        .await;
    assert!(matches!(
        long,
        Err(Error::LengthMismatch { declared: 10, .. })
    ));
    let bad = store
        .put(
            PutRequest::new(id.clone()).with_digest(Digest::of(b"other")),
            chunks(&data, 4096),
        )
        .await;
    assert!(matches!(bad, Err(Error::DigestMismatch { .. })));
    let small_bad = store
        .put(
            PutRequest::new(id.clone()).with_digest(Digest::of(b"other")),
            body_from_bytes("x"),
        )
        .await;
    assert!(matches!(small_bad, Err(Error::DigestMismatch { .. })));
    let body_err = store
        .put(
            PutRequest::new(id.clone()),
            Chunks(VecDeque::from([
                Ok(Bytes::from(vec![1u8; 100_000])),
                Err(io::Error::other("client went away")),
            ])),
        )
        .await;
    assert!(matches!(body_err, Err(Error::Body { .. })));
    assert!(store.head(&id).unwrap().is_none());
    assert_eq!((b.temp_count(), b.blob_count()), (0, 0));
    let s = store.stats();
    assert_eq!((s.objects, s.bytes, s.reserved_bytes), (0, 0, 0));
    // Correct digest is accepted.
    store
        .put(
            PutRequest::new(id.clone()).with_digest(Digest::of(&data)),
            chunks(&data, 999),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn corrupt_blob_is_detected_quarantined_and_counted() {
    let (store, b) = mem_store().await;
    let id = oid("cas", "big");
    let data = pattern(3, 300_000);
    store.put_bytes(id.clone(), data.clone()).await.unwrap();
    let blob = b.blob_ids()[0];
    assert!(b.corrupt_blob(blob, 299_999));
    let obj = store.get(&id).await.unwrap().unwrap();
    let mut r = obj.reader();
    let mut got = 0;
    let err = loop {
        match r.next_chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("corrupt object streamed to the end"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(got < data.len() + 1);
    // The quarantine is queued before this checkpoint, so it has been applied after it.
    store.checkpoint().await.unwrap();
    assert!(store.head(&id).unwrap().is_none());
    assert_eq!(b.quarantine_count(), 1);
    assert_eq!(store.stats().corrupt_objects, 1);
}

#[tokio::test]
async fn scrub_finds_corruption_at_bounded_rate() {
    let (store, b) = mem_store().await;
    for i in 0..5 {
        store
            .put_bytes(oid("cas", &format!("{i}")), pattern(i, 70_000))
            .await
            .unwrap();
    }
    store.put_bytes(oid("cas", "inline"), "tiny").await.unwrap();
    let victim = b.blob_ids()[0];
    b.corrupt_blob(victim, 5);
    let rep = store.scrub(0).await.unwrap();
    assert_eq!(rep.objects, 6);
    assert_eq!(rep.corrupt, 1);
    store.checkpoint().await.unwrap();
    assert_eq!(store.stats().objects, 5);
    let rep = store.scrub(10_000_000).await.unwrap();
    assert_eq!((rep.objects, rep.corrupt), (5, 0));
}

#[tokio::test]
async fn byte_ranges() {
    let (store, _) = mem_store().await;
    for (name, len) in [("small", 1000usize), ("large", 700_000)] {
        let data = pattern(9, len);
        let id = oid("cas", name);
        store.put_bytes(id.clone(), data.clone()).await.unwrap();
        let obj = store.get(&id).await.unwrap().unwrap();
        for (s, e) in [(0, len), (0, 1), (10, 500), (len - 1, len), (len, len)] {
            let mut r = obj.range_reader(s as u64..e as u64).unwrap();
            let mut out = Vec::new();
            while let Some(c) = r.next_chunk().await.unwrap() {
                out.extend_from_slice(&c);
            }
            assert_eq!(out, &data[s..e]);
        }
        assert!(matches!(
            obj.range_reader(0..len as u64 + 1),
            Err(Error::InvalidRange { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..4 {
                s.put_bytes(oid("cas", &format!("{w}-{i}")), pattern(w * 10 + i, 4096))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = store.stats();
    assert_eq!(s.objects, 256);
    assert_eq!(s.committed_ops, 256);
    assert!(s.commits < 256, "no batching: {s:?}");
    assert!(s.max_batch > 1);
    for w in 0..64 {
        assert_eq!(
            read(&store, &oid("cas", &format!("{w}-3"))).await.unwrap(),
            pattern(w * 10 + 3, 4096)
        );
    }
}

#[tokio::test]
async fn recovery_removes_temp_files_and_orphans() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg())
            .await
            .unwrap();
        store
            .put_bytes(oid("a", "keep"), vec![1u8; 100_000])
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    // Simulate a crash: a half-written temp file, and a published blob whose commit never
    // happened (its id is in the intent log).
    std::fs::write(dir.path().join("tmp/00000000000000ff"), b"partial").unwrap();
    let orphan_dir = dir.path().join("blobs/0");
    std::fs::create_dir_all(&orphan_dir).unwrap();
    let orphan = orphan_dir.join(format!("{:016x}", 0xfe));
    std::fs::write(&orphan, b"orphan").unwrap();
    std::fs::write(dir.path().join("intent.log"), 0xfeu64.to_le_bytes()).unwrap();
    let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg())
        .await
        .unwrap();
    let s = store.stats();
    assert_eq!((s.recovered_temp_files, s.recovered_orphans), (1, 1));
    assert!(!orphan.exists());
    assert_eq!(walk(&dir.path().join("tmp")), 0);
    assert_eq!(
        read(&store, &oid("a", "keep")).await.unwrap(),
        vec![1u8; 100_000]
    );
    store
        .put_bytes(oid("a", "new"), vec![2u8; 100_000])
        .await
        .unwrap();
}

#[tokio::test]
async fn fault_at_every_put_step_leaves_no_trace() {
    // Record the steps of a successful large put.
    let (backend, faults) = FaultyBackend::new(MemBackend::default());
    let store = Store::open(backend.clone(), cfg()).await.unwrap();
    faults.take_hits();
    let data = pattern(5, 300_000);
    store
        .put_bytes(oid("cas", "probe"), data.clone())
        .await
        .unwrap();
    let steps = faults.take_hits();
    for p in [
        FaultPoint::CreateTemp,
        FaultPoint::Reserve,
        FaultPoint::Write,
        FaultPoint::SyncBlob,
        FaultPoint::IntentAppend,
        FaultPoint::Publish,
        FaultPoint::SyncPublished,
        // `Durability::Always` on a backend with a redo log: the log append (with its
        // fdatasync) is the durability point; the database syncs at checkpoints.
        FaultPoint::RedoAppend,
    ] {
        assert!(steps.contains(&p), "step {p:?} not exercised: {steps:?}");
    }
    store.close().await.unwrap();
    let mut cases = Vec::new();
    for (i, p) in steps.iter().enumerate() {
        let nth = steps[..i].iter().filter(|q| *q == p).count() as u64;
        let hits = steps.iter().filter(|q| *q == p).count() as u64;
        // redb writes many pages per commit; its first two and last two writes stand for
        // the rest (every other step is tested at every hit).
        if *p == FaultPoint::MetadataWrite && nth >= 2 && nth + 2 < hits {
            continue;
        }
        cases.push((*p, nth, FaultKind::Error));
        cases.push((*p, nth, FaultKind::NoSpace));
        if *p == FaultPoint::Write {
            cases.push((*p, nth, FaultKind::ShortWrite));
        }
    }
    cases.dedup();
    for (point, nth, kind) in cases {
        let mem = MemBackend::default();
        let (backend, faults) = FaultyBackend::new(mem.clone());
        let store = Store::open(backend.clone(), cfg()).await.unwrap();
        store.put_bytes(oid("cas", "before"), "kept").await.unwrap();
        faults.take_hits();
        faults.arm(point, nth, kind, 1);
        let id = oid("cas", "victim");
        let r = store.put_bytes(id.clone(), data.clone()).await;
        let ctx = format!("{point:?}#{nth} {kind:?}: {r:?}");
        match (&r, kind, point) {
            // A short write is continued, so the put succeeds with the right bytes.
            (Ok(_), FaultKind::ShortWrite, FaultPoint::Write) => {}
            (Err(Error::Full { .. }), FaultKind::NoSpace, _) => {}
            (Err(Error::Io { .. }) | Err(Error::Metadata { .. }), _, _) => {}
            // redb may retry or tolerate some write failures internally; that includes the
            // sync it issues when a non-durable batch grows the file (the value log, not the
            // database, makes that batch durable).
            (Ok(_), _, FaultPoint::MetadataWrite | FaultPoint::MetadataSync) => {}
            _ => panic!("unexpected outcome {ctx}"),
        }
        // A failed metadata commit may poison the handle; close it either way.
        let _ = store.close().await;
        // Reopen on the same bytes, without faults: the object is either complete or absent,
        // and nothing leaks.
        faults.clear();
        let store = Store::open(backend, cfg()).await.unwrap();
        match read(&store, &id).await {
            Some(got) => {
                assert!(r.is_ok(), "failed put became visible: {ctx}");
                assert_eq!(got, data, "{ctx}");
            }
            None => assert!(r.is_err(), "acknowledged put lost: {ctx}"),
        }
        assert_eq!(read(&store, &id.clone()).await.is_some(), r.is_ok());
        assert_eq!(
            read(&store, &oid("cas", "before")).await.unwrap(),
            b"kept",
            "{ctx}"
        );
        assert_eq!(mem.temp_count(), 0, "temp leaked: {ctx}");
        assert_eq!(
            mem.blob_count(),
            usize::from(r.is_ok()),
            "blob leaked: {ctx}"
        );
        store
            .put_bytes(oid("cas", "after"), data.clone())
            .await
            .unwrap();
    }
}

/// In `Durability::Always` mode a put is durable once its redo-log record is synced; the
/// database itself is synced at checkpoints. A checkpoint that fails (at any metadata write
/// or sync) must not lose acknowledged puts: reopening replays them from the log.
#[tokio::test]
async fn failed_checkpoint_loses_no_acknowledged_put() {
    for point in [FaultPoint::MetadataWrite, FaultPoint::MetadataSync] {
        for nth in 0..3 {
            let mem = MemBackend::default();
            let (backend, faults) = FaultyBackend::new(mem.clone());
            let store = Store::open(backend.clone(), cfg()).await.unwrap();
            let big = pattern(9, 200_000);
            store.put_bytes(oid("cas", "small"), "tiny").await.unwrap();
            store
                .put_bytes(oid("cas", "big"), big.clone())
                .await
                .unwrap();
            store.delete(&oid("cas", "small")).await.unwrap();
            store.put_bytes(oid("cas", "again"), "x").await.unwrap();
            faults.arm(point, nth, FaultKind::Error, u64::MAX);
            let r = store.checkpoint().await;
            let _ = store.close().await;
            faults.clear();
            let store = Store::open(backend, cfg()).await.unwrap();
            let ctx = format!("{point:?}#{nth}: checkpoint {r:?}");
            assert_eq!(
                read(&store, &oid("cas", "big")).await.unwrap(),
                big,
                "{ctx}"
            );
            assert_eq!(
                read(&store, &oid("cas", "again")).await.unwrap(),
                b"x",
                "{ctx}"
            );
            assert!(read(&store, &oid("cas", "small")).await.is_none(), "{ctx}");
            assert_eq!(store.stats().objects, 2, "{ctx}");
            assert_eq!(mem.blob_count(), 1, "{ctx}");
            // The store keeps working and a clean reopen has nothing left to replay.
            store.put_bytes(oid("cas", "after"), "y").await.unwrap();
            store.close().await.unwrap();
            let store = Store::open(mem.clone(), cfg()).await.unwrap();
            assert_eq!(store.stats().recovered_batches, 0, "{ctx}");
            assert_eq!(
                read(&store, &oid("cas", "after")).await.unwrap(),
                b"y",
                "{ctx}"
            );
        }
    }
}

#[tokio::test]
async fn disk_full_is_a_typed_error() {
    let (backend, faults) = FaultyBackend::new(MemBackend::default());
    let store = Store::open(backend, cfg()).await.unwrap();
    faults.arm(FaultPoint::Write, 0, FaultKind::NoSpace, 1);
    let r = store.put_bytes(oid("a", "b"), vec![0u8; 500_000]).await;
    assert!(
        matches!(
            r,
            Err(Error::Full {
                source: Some(_),
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn capacity_is_enforced_with_lru_eviction() {
    let mut c = cfg();
    c.capacity = Capacity::Bytes(1_000_000);
    c.high_watermark_pct = 90;
    c.low_watermark_pct = 50;
    let store = Store::open(MemBackend::default(), c).await.unwrap();
    assert!(matches!(
        store
            .put_bytes(oid("a", "huge"), vec![0u8; 1_000_001])
            .await,
        Err(Error::TooLarge {
            len: 1_000_001,
            capacity: 1_000_000
        })
    ));
    for i in 0..10u64 {
        store
            .put_bytes(oid("a", &format!("{i}")), pattern(i, 90_000))
            .await
            .unwrap();
    }
    // Touch the oldest object so it becomes most recently used.
    assert!(read(&store, &oid("a", "0")).await.is_some());
    store.flush_access().await.unwrap();
    for i in 10..30u64 {
        store
            .put_bytes(oid("a", &format!("{i}")), pattern(i, 90_000))
            .await
            .unwrap();
        let s = store.stats();
        assert!(s.bytes <= 1_000_000, "capacity exceeded: {s:?}");
        // Background eviction runs right after the commit; a checkpoint is queued behind it.
        store.checkpoint().await.unwrap();
        if i == 10 {
            // "0" survived the first eviction round, "1" did not.
            assert!(store.head(&oid("a", "0")).unwrap().is_some());
            assert!(store.head(&oid("a", "1")).unwrap().is_none());
        }
    }
    let s = store.stats();
    assert!(s.evictions > 0);
    assert_eq!(s.reserved_bytes, 0);
    assert!(store.head(&oid("a", "29")).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_holds_under_concurrent_writers() {
    let mut c = cfg();
    c.capacity = Capacity::Bytes(2_000_000);
    let store = Store::open(MemBackend::default(), c).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                // Unknown length: reservation grows as the body streams.
                let data = pattern(w * 100 + i, 70_000 + (i as usize * 1000));
                s.put(
                    PutRequest::new(oid("a", &format!("{w}-{i}"))),
                    chunks(&data, 8192),
                )
                .await
                .unwrap();
                let st = s.stats();
                assert!(st.bytes <= 2_000_000, "{st:?}");
                assert!(st.bytes + st.reserved_bytes <= 2_000_000, "{st:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(store.stats().evictions > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_in_progress_survive_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.chunk_size = 64 * 1024;
    let store = Store::open(FsBackend::open(dir.path()).unwrap(), c)
        .await
        .unwrap();
    let mut objs = Vec::new();
    for i in 0..8u64 {
        let data = pattern(i, 1_000_000);
        let id = oid("a", &format!("{i}"));
        store.put_bytes(id.clone(), data.clone()).await.unwrap();
        objs.push((store.get(&id).await.unwrap().unwrap(), data));
    }
    let mut readers = Vec::new();
    for (obj, data) in objs {
        readers.push(tokio::spawn(async move {
            let mut r = obj.reader();
            let mut out = Vec::new();
            let first = r.next_chunk().await.unwrap().unwrap();
            out.extend_from_slice(&first);
            // Signal that reading has started, then keep going.
            (r, out, data)
        }));
    }
    let mut started = Vec::new();
    for r in readers {
        started.push(r.await.unwrap());
    }
    assert_eq!(store.evict_to(0).await.unwrap(), 8);
    assert_eq!(store.stats().objects, 0);
    assert_eq!(walk(&dir.path().join("blobs")), 0);
    let mut finishing = Vec::new();
    for (mut r, mut out, data) in started {
        finishing.push(tokio::spawn(async move {
            while let Some(c) = r.next_chunk().await.unwrap() {
                out.extend_from_slice(&c);
            }
            assert_eq!(out, data);
        }));
    }
    for f in finishing {
        f.await.unwrap();
    }
}

#[tokio::test]
async fn evicting_a_referenced_blob_evicts_its_referrers() {
    let (store, _) = mem_store().await;
    let blob = oid("cas", "blob1");
    let other = oid("cas", "blob2");
    store.put_bytes(blob.clone(), "output bytes").await.unwrap();
    store
        .put_bytes(other.clone(), "other output")
        .await
        .unwrap();
    let refs = vec![
        ObjectRef::new(blob.namespace.clone(), blob.key.clone()),
        ObjectRef::new(other.namespace.clone(), other.key.clone()),
    ];
    let ac = oid("ac", "action1");
    store
        .put(
            PutRequest::new(ac.clone()).with_refs(refs.clone()),
            body_from_bytes("result"),
        )
        .await
        .unwrap();
    // A reference to a missing object is refused.
    let bad = store
        .put(
            PutRequest::new(oid("ac", "action2")).with_refs(vec![ObjectRef::new(
                blob.namespace.clone(),
                "missing".parse().unwrap(),
            )]),
            body_from_bytes("r"),
        )
        .await;
    assert!(
        matches!(bad, Err(Error::MissingReference { .. })),
        "{bad:?}"
    );
    assert!(store.head(&oid("ac", "action2")).unwrap().is_none());
    // Touch the AC entry and blob2 so that blob1 is the LRU victim.
    read(&store, &ac).await.unwrap();
    read(&store, &other).await.unwrap();
    store.flush_access().await.unwrap();
    let total = store.stats().bytes;
    store.evict_to(total - 1).await.unwrap();
    assert!(store.head(&blob).unwrap().is_none());
    assert!(
        store.head(&ac).unwrap().is_none(),
        "AC entry outlived its CAS blob"
    );
    assert!(store.head(&other).unwrap().is_some());
    // Deleting works the same way.
    store.put_bytes(blob.clone(), "output bytes").await.unwrap();
    store
        .put(
            PutRequest::new(ac.clone()).with_refs(refs),
            body_from_bytes("result"),
        )
        .await
        .unwrap();
    store.delete(&other).await.unwrap();
    assert!(store.head(&ac).unwrap().is_none());
    assert!(store.head(&blob).unwrap().is_some());
}

fn skew_cfg(clock: Arc<ManualClock>, node: u64) -> Config {
    let mut c = cfg();
    c.clock = clock;
    c.node = NodeId(node);
    c.max_drift = Duration::from_secs(60);
    c
}

#[tokio::test]
async fn clock_skew_is_bounded() {
    let now = 1_700_000_000_000u64;
    let clock = Arc::new(ManualClock::new(now));
    let store = Store::open(MemBackend::default(), skew_cfg(clock.clone(), 1))
        .await
        .unwrap();
    let id = oid("kv", "k");
    // A node an hour ahead is refused, and does not move our clock.
    let ahead = put_record(&id, Hlc::new(now + 3_600_000, 0), 2, b"from the future");
    assert!(matches!(
        store
            .apply_replicated(ahead.clone(), body(b"from the future"))
            .await,
        Err(Error::ClockSkew { .. })
    ));
    assert!(store.head(&id).unwrap().is_none());
    let local = store.put_bytes(id.clone(), "local").await.unwrap();
    assert!(local.version.hlc.physical_ms() <= now + 1);
    // Within the bound it is accepted, and our next write still wins over it.
    let near = put_record(&id, Hlc::new(now + 30_000, 0), 2, b"near");
    assert_eq!(
        store.apply_replicated(near, body(b"near")).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(read(&store, &id).await.unwrap(), b"near");
    let mine = store.put_bytes(id.clone(), "mine").await.unwrap();
    assert!(mine.version.hlc > Hlc::new(now + 30_000, 0));
    assert_eq!(read(&store, &id).await.unwrap(), b"mine");
    // Once real time catches up, the far-ahead write is accepted (LWW then picks it).
    clock.set(now + 3_600_000);
    assert_eq!(
        store
            .apply_replicated(ahead, body(b"from the future"))
            .await
            .unwrap(),
        Applied::Applied
    );
}

#[tokio::test]
async fn lww_and_namespace_tombstones() {
    let now = 1_700_000_000_000u64;
    let clock = Arc::new(ManualClock::new(now));
    let store = Store::open(MemBackend::default(), skew_cfg(clock.clone(), 1))
        .await
        .unwrap();
    let id = oid("kv", "k");
    let h = |ms| Hlc::new(now - 10_000 + ms, 0);
    let a = put_record(&id, h(5), 2, b"v5");
    let b = put_record(&id, h(3), 3, b"v3");
    assert_eq!(
        store
            .apply_replicated(a.clone(), body(b"v5"))
            .await
            .unwrap(),
        Applied::Applied
    );
    assert_eq!(
        store.apply_replicated(b, body(b"v3")).await.unwrap(),
        Applied::Ignored
    );
    assert_eq!(
        store.apply_replicated(a, body(b"v5")).await.unwrap(),
        Applied::Ignored
    );
    // Tie on hlc: higher node id wins.
    let tie = put_record(&id, h(5), 9, b"tie");
    assert_eq!(
        store.apply_replicated(tie, body(b"tie")).await.unwrap(),
        Applied::Applied
    );
    assert_eq!(read(&store, &id).await.unwrap(), b"tie");
    // Namespace tombstone at h(7) erases the key and blocks older writes.
    let ns = id.namespace_id();
    let tomb = ReplicatedRecord::DeleteNamespace {
        namespace: ns.clone(),
        version: Version::new(h(7), NodeId(2)),
    };
    assert_eq!(
        store.apply_replicated(tomb, None).await.unwrap(),
        Applied::Applied
    );
    assert!(store.head(&id).unwrap().is_none());
    let old = put_record(&oid("kv", "other"), h(6), 2, b"old");
    assert!(!store.wants(&old).unwrap());
    assert_eq!(
        store.apply_replicated(old, body(b"old")).await.unwrap(),
        Applied::Ignored
    );
    let newer = put_record(&oid("kv", "other"), h(8), 2, b"new");
    assert_eq!(
        store.apply_replicated(newer, body(b"new")).await.unwrap(),
        Applied::Applied
    );
    // Key tombstones replicate by LWW too.
    let del_old = ReplicatedRecord::Delete {
        id: oid("kv", "other"),
        version: Version::new(h(7), NodeId(5)),
    };
    assert_eq!(
        store.apply_replicated(del_old, None).await.unwrap(),
        Applied::Ignored
    );
    let del = ReplicatedRecord::Delete {
        id: oid("kv", "other"),
        version: Version::new(h(9), NodeId(5)),
    };
    assert_eq!(
        store.apply_replicated(del, None).await.unwrap(),
        Applied::Applied
    );
    assert!(store.head(&oid("kv", "other")).unwrap().is_none());
    let resurrect = put_record(&oid("kv", "other"), h(8), 3, b"zombie");
    assert_eq!(
        store
            .apply_replicated(resurrect, body(b"zombie"))
            .await
            .unwrap(),
        Applied::Ignored
    );
    // Tombstone GC by horizon.
    assert_eq!(
        store.namespace_tombstone(&ns).unwrap().map(|v| v.hlc),
        Some(h(7))
    );
    assert_eq!(store.gc_tombstones(h(8)).await.unwrap(), 1);
    assert_eq!(store.gc_tombstones(h(10)).await.unwrap(), 1);
    assert!(store.namespace_tombstone(&ns).unwrap().is_none());
}

#[tokio::test]
async fn change_feed_is_ordered_and_trimmable() {
    let (store, _) = mem_store().await;
    let a = oid("n", "a");
    store.put_bytes(a.clone(), "1").await.unwrap();
    store.put_bytes(oid("n", "b"), "2").await.unwrap();
    store.delete(&a).await.unwrap();
    store.delete_namespace(&nsid("n")).await.unwrap();
    let ch = store.changes_since(0, 100).unwrap();
    assert_eq!(
        ch.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(matches!(ch[0].record, ReplicatedRecord::Put { .. }));
    assert!(matches!(ch[2].record, ReplicatedRecord::Delete { .. }));
    assert!(matches!(
        ch[3].record,
        ReplicatedRecord::DeleteNamespace { .. }
    ));
    let versions: Vec<_> = ch.iter().map(|c| c.record.version()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.changes_since(2, 1).unwrap()[0].seq, 3);
    for c in &ch {
        assert_eq!(
            ReplicatedRecord::from_bytes(&c.record.to_bytes()).unwrap(),
            c.record
        );
    }
    assert_eq!(store.trim_changes(2).await.unwrap(), 2);
    assert_eq!(store.changes_since(0, 100).unwrap()[0].seq, 3);
}

#[tokio::test]
async fn replicas_converge_and_summaries_find_the_difference() {
    let now = 1_700_000_000_000u64;
    let clock = Arc::new(ManualClock::new(now));
    let a = Store::open(MemBackend::default(), skew_cfg(clock.clone(), 1))
        .await
        .unwrap();
    let b = Store::open(MemBackend::default(), skew_cfg(clock.clone(), 2))
        .await
        .unwrap();
    for i in 0..200 {
        a.put_bytes(oid("cas", &format!("k{i}")), format!("v{i}"))
            .await
            .unwrap();
    }
    a.delete(&oid("cas", "k7")).await.unwrap();
    // Ship a's change feed to b in reverse order: the result must not depend on order.
    let feed = a.changes_since(0, 10_000).unwrap();
    for c in feed.iter().rev() {
        let body = match &c.record {
            ReplicatedRecord::Put { id, .. } => {
                let data = match a.get(id).await.unwrap() {
                    Some(o) => o.read_all().await.unwrap(),
                    None => continue,
                };
                Some(Box::pin(body_from_bytes(data)) as kura_store::BodyStream)
            }
            _ => None,
        };
        b.apply_replicated(c.record.clone(), body).await.unwrap();
    }
    let ns = nsid("cas");
    assert_eq!(
        a.summary_node(&ns, 0, 0).unwrap(),
        b.summary_node(&ns, 0, 0).unwrap()
    );
    assert!(a.diff_namespace(&b, &ns).unwrap().is_empty());
    assert_ne!(a.summary_node(&ns, 0, 0).unwrap(), [0u8; 32]);
    // One write on b: exactly that key differs.
    b.put_bytes(oid("cas", "k42"), "changed").await.unwrap();
    b.put_bytes(oid("cas", "new"), "fresh").await.unwrap();
    let diff = a.diff_namespace(&b, &ns).unwrap();
    assert_eq!(diff, vec!["k42".parse().unwrap(), "new".parse().unwrap()]);
    // Removing the difference restores equality (XOR summary is exact, not approximate).
    b.delete(&oid("cas", "new")).await.unwrap();
    a.delete(&oid("cas", "new")).await.unwrap();
    let diff = a.diff_namespace(&b, &ns).unwrap();
    assert_eq!(diff.len(), 2, "{diff:?}");
}

#[tokio::test]
async fn batch_and_none_modes_round_trip_and_checkpoint() {
    for d in [
        Durability::Batch {
            max_delay: Duration::from_millis(5),
        },
        Durability::None {
            checkpoint: Duration::from_secs(3600),
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.durability = d;
        {
            let store = Store::open(FsBackend::open(dir.path()).unwrap(), c.clone())
                .await
                .unwrap();
            for i in 0..20u64 {
                store
                    .put_bytes(
                        oid("a", &format!("{i}")),
                        pattern(i, 1000 * i as usize * 10),
                    )
                    .await
                    .unwrap();
            }
            store.checkpoint().await.unwrap();
            store.close().await.unwrap();
        }
        let store = Store::open(FsBackend::open(dir.path()).unwrap(), c)
            .await
            .unwrap();
        for i in 0..20u64 {
            assert_eq!(
                read(&store, &oid("a", &format!("{i}"))).await.unwrap(),
                pattern(i, 1000 * i as usize * 10),
                "{d:?}"
            );
        }
    }
}

#[tokio::test]
async fn listing_and_namespaces() {
    let (store, _) = mem_store().await;
    for ns in ["b", "a", "c"] {
        for k in ["z", "y/1", "x"] {
            store.put_bytes(oid(ns, k), "v").await.unwrap();
        }
    }
    let names: Vec<String> = store
        .namespaces()
        .unwrap()
        .iter()
        .map(|n| n.namespace.to_string())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    let page = store.list(&nsid("b"), None, 2).unwrap();
    let keys: Vec<&str> = page.iter().map(|m| m.id.key.as_str()).collect();
    assert_eq!(keys, ["x", "y/1"]);
    let rest = store.list(&nsid("b"), Some(&page[1].id.key), 10).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id.key.as_str(), "z");
    assert_eq!(store.delete_namespace(&nsid("b")).await.unwrap(), 3);
    assert!(store.list(&nsid("b"), None, 10).unwrap().is_empty());
    assert_eq!(store.stats().objects, 6);
}

#[tokio::test]
async fn capacity_as_percent_of_filesystem_and_config_validation() {
    let mut c = cfg();
    c.capacity = Capacity::PercentOfFilesystem(10);
    let store = Store::open(MemBackend::new(10_000_000), c.clone())
        .await
        .unwrap();
    assert_eq!(store.stats().capacity_bytes, Some(1_000_000));
    assert!(matches!(
        store.put_bytes(oid("a", "b"), vec![0u8; 1_000_001]).await,
        Err(Error::TooLarge { .. })
    ));
    c.capacity = Capacity::PercentOfFilesystem(0);
    assert!(matches!(
        Store::open(MemBackend::default(), c.clone()).await,
        Err(Error::InvalidConfig { .. })
    ));
    c.capacity = Capacity::Unlimited;
    c.low_watermark_pct = 99;
    assert!(matches!(
        Store::open(MemBackend::default(), c).await,
        Err(Error::InvalidConfig { .. })
    ));
}

#[tokio::test]
async fn dropped_put_future_leaves_no_temp_file() {
    let (store, b) = mem_store().await;
    // A body that never ends: the put is cancelled mid-stream by a timeout.
    struct Endless;
    impl futures_core::Stream for Endless {
        type Item = io::Result<Bytes>;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(Some(Ok(Bytes::from(vec![1u8; 100_000]))))
        }
    }
    let put = store.put(
        PutRequest::new(oid("a", "endless")).with_len(50_000_000),
        Endless,
    );
    let mut put = Box::pin(put);
    // Drive it until its temporary file exists (deadline, not a sleep), then drop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.temp_count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "put never started writing"
        );
        assert!(futures_poll_once(put.as_mut()).await.is_none());
        tokio::task::yield_now().await;
    }
    drop(put);
    assert_eq!(b.temp_count(), 0);
    assert_eq!(store.stats().reserved_bytes, 0);
}

async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
    let mut f = f;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}
