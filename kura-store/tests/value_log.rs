//! The value log: small objects' bodies stay in the record of the batch that wrote them
//! (`Always` mode), segments rotate, compaction relocates what is still live out of mostly
//! dead segments, and segments nothing needs are removed. Crashes are simulated with
//! [`MemBackend::snapshot`] (everything written so far, none of the store's memory) at many
//! points, and with a real directory for the file backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{oid, pattern, read};
use kura_store::{Backend, Config, FsBackend, MemBackend, Store};

fn cfg(segment: u64) -> Config {
    let mut c = Config::default();
    c.log_segment_bytes = segment;
    c
}

type Model = BTreeMap<String, Vec<u8>>;

/// Every object of `model` reads back byte-exact, nothing else exists, and the live bytes
/// the log accounts for are exactly the model's (every object here is small).
async fn check(store: &Store, model: &Model, ctx: &str) {
    for (k, v) in model {
        assert_eq!(
            read(store, &oid("ns", k)).await.as_deref(),
            Some(&v[..]),
            "{ctx}: object {k}"
        );
    }
    let listed = store
        .list(&oid("ns", "x").namespace_id(), None, 10_000)
        .unwrap();
    assert_eq!(listed.len(), model.len(), "{ctx}: listing");
    let s = store.stats();
    assert_eq!(s.objects, model.len() as u64, "{ctx}: {s:?}");
    assert_eq!(
        s.log_live_bytes,
        model.values().map(|v| v.len() as u64).sum::<u64>(),
        "{ctx}: live bytes {s:?}"
    );
    assert!(s.log_live_bytes <= s.log_bytes, "{ctx}: {s:?}");
}

/// Puts `data` under `key` in namespace `ns` and records it in the model.
async fn put(store: &Store, model: &mut Model, key: String, data: Vec<u8>) {
    store
        .put_bytes(oid("ns", &key), data.clone())
        .await
        .unwrap();
    model.insert(key, data);
}

/// Runs checkpoints (each one lets the committer run a compaction step first) until `done`
/// holds or the deadline passes.
async fn settle(store: &Store, done: impl Fn(&kura_store::Stats) -> bool) -> kura_store::Stats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        store.checkpoint().await.unwrap();
        let s = store.stats();
        if done(&s) || Instant::now() > deadline {
            return s;
        }
    }
}

#[tokio::test]
async fn small_bodies_live_in_the_log_and_survive_crashes() {
    let mem = MemBackend::default();
    let store = Store::open(mem.clone(), cfg(256 << 10)).await.unwrap();
    let mut model = Model::new();
    let mut replayed = 0;
    for i in 0..360u64 {
        let k = format!("k{}", i % 120);
        let data = pattern(i, ((i * 997) % 20_000) as usize);
        put(&store, &mut model, k, data).await;
        if i % 7 == 3 {
            let k = format!("k{}", (i * 3) % 120);
            let existed = store.delete(&oid("ns", &k)).await.unwrap();
            assert_eq!(existed, model.remove(&k).is_some());
        }
        if i % 45 == 44 {
            // Crash here: reopen a copy of everything written so far.
            let crashed = Store::open(mem.snapshot(), cfg(256 << 10)).await.unwrap();
            replayed += crashed.stats().recovered_batches;
            check(&crashed, &model, &format!("crash after op {i}")).await;
            crashed.close().await.unwrap();
        }
    }
    assert!(replayed > 0, "no crash image needed the log");
    check(&store, &model, "running store").await;
    let s = store.stats();
    assert!(s.log_segments > 1, "segments never rotated: {s:?}");
    assert_eq!(
        mem.log_segments().unwrap().len() as u64,
        s.log_segments,
        "{s:?}"
    );
    store.close().await.unwrap();
    // A clean reopen has nothing to replay and the same contents.
    let store = Store::open(mem.clone(), cfg(256 << 10)).await.unwrap();
    assert_eq!(store.stats().recovered_batches, 0);
    check(&store, &model, "after clean reopen").await;
}

#[tokio::test]
async fn compaction_gives_space_back_and_is_crash_safe() {
    let mem = MemBackend::default();
    let store = Store::open(mem.clone(), cfg(256 << 10)).await.unwrap();
    let mut model = Model::new();
    let mut written = 0u64;
    for round in 0..4u64 {
        for k in 0..40u64 {
            let data = pattern(round * 1000 + k, 16 << 10);
            written += data.len() as u64;
            let key = format!("a{k}");
            put(&store, &mut model, key, data).await;
        }
    }
    let first = mem.log_segments().unwrap()[0].0;
    // Three of every four bodies written are dead: compaction moves the live ones out of
    // the old segments, and checkpoints remove the emptied segments.
    let s = settle(&store, |s| s.log_bytes < written / 2).await;
    assert!(s.log_bytes < written / 2, "log not compacted: {s:?}");
    assert!(
        mem.log_segments()
            .unwrap()
            .iter()
            .all(|(seg, _)| *seg != first),
        "first segment still there: {s:?}"
    );
    check(&store, &model, "after compaction").await;
    // More garbage, then a crash before the checkpoint that would make the relocations
    // durable in the database: recovery replays them from the log.
    for k in 0..30u64 {
        let data = pattern(9000 + k, 16 << 10);
        let key = format!("a{k}");
        put(&store, &mut model, key, data).await;
    }
    for _ in 0..20 {
        let crashed = Store::open(mem.snapshot(), cfg(256 << 10)).await.unwrap();
        check(&crashed, &model, "crash during compaction").await;
        crashed.close().await.unwrap();
        store.flush_access().await.unwrap();
    }
    let s = settle(&store, |s| s.log_bytes < 3 * s.log_live_bytes).await;
    check(&store, &model, "after second compaction").await;
    assert!(s.log_bytes < 3 * s.log_live_bytes, "{s:?}");
    store.close().await.unwrap();
    let store = Store::open(mem, cfg(256 << 10)).await.unwrap();
    check(&store, &model, "after reopen").await;
}

#[tokio::test]
async fn file_backend_keeps_segments_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    {
        let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg(128 << 10))
            .await
            .unwrap();
        for i in 0..200u64 {
            let k = format!("f{}", i % 50);
            let data = pattern(i, 3000 + (i as usize * 131) % 9000);
            put(&store, &mut model, k, data).await;
        }
        let s = settle(&store, |s| s.log_bytes < 3 * s.log_live_bytes).await;
        check(&store, &model, "fs store").await;
        let files = std::fs::read_dir(dir.path().join("log")).unwrap().count() as u64;
        assert_eq!(files, s.log_segments, "{s:?}");
        store.close().await.unwrap();
    }
    let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg(128 << 10))
        .await
        .unwrap();
    assert_eq!(store.stats().recovered_batches, 0);
    check(&store, &model, "fs reopen").await;
    store.close().await.unwrap();
    // A segment that lost its bytes is reported as corruption, not served.
    let (seg, _) = FsBackend::open(dir.path())
        .unwrap()
        .log_segments()
        .unwrap()
        .into_iter()
        .find(|(_, len)| *len > 0)
        .unwrap();
    let path = dir.path().join("log").join(format!("{seg:016x}.seg"));
    std::fs::write(&path, b"").unwrap();
    let store = Store::open(FsBackend::open(dir.path()).unwrap(), cfg(128 << 10))
        .await
        .unwrap();
    let mut corrupt = 0;
    for k in model.keys() {
        match store.get(&oid("ns", k)).await {
            Ok(Some(obj)) => {
                if obj.read_all().await.is_err() {
                    corrupt += 1;
                }
            }
            Err(kura_store::Error::Corrupt { .. }) => corrupt += 1,
            other => panic!("{k}: {other:?}"),
        }
    }
    assert!(corrupt > 0, "emptied segment went unnoticed");
}
