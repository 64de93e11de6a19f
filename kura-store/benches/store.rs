//! kura-store benchmarks, each against a naive baseline measured in the same run.
//!
//! Baseline: every object is its own file, written to a temporary name, fsynced and renamed
//! (what a naive disk cache does). Results go to `docs/benchmarks.md`.
//!
//! Run: `cargo bench -p kura-store --bench store [-- --open-objects N --secs S --big-mib M
//! --phases put,get,big,open --writers 1,64 --meta-cache-mib M --writeback --no-quick-repair]`
//! (`KURA_BENCH_DIR` chooses the scratch directory; default: a temporary directory).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_store::{Config, Durability, FsBackend, ObjectId, PutRequest, Store, body_from_bytes};

struct Args {
    phases: String,
    no_quick_repair: bool,
    open_objects: u64,
    secs: f64,
    big_mib: u64,
    writers: Vec<usize>,
    meta_cache_mib: Option<usize>,
    writeback: bool,
}

fn args() -> Args {
    let mut a = Args {
        phases: "put,get,big,open".into(),
        no_quick_repair: false,
        open_objects: 100_000,
        secs: 3.0,
        big_mib: 1024,
        writers: vec![1, 64],
        meta_cache_mib: None,
        writeback: false,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--open-objects" => a.open_objects = next.parse().unwrap(),
            "--phases" => a.phases = next.clone(),
            "--secs" => a.secs = next.parse().unwrap(),
            "--big-mib" => a.big_mib = next.parse().unwrap(),
            "--meta-cache-mib" => a.meta_cache_mib = Some(next.parse().unwrap()),
            "--writers" => a.writers = next.split(',').map(|w| w.parse().unwrap()).collect(),
            "--writeback" => {
                a.writeback = true;
                i += 1;
                continue;
            }
            "--no-quick-repair" => {
                a.no_quick_repair = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn id(ns: &str, k: u64) -> ObjectId {
    ObjectId::parse("bench", ns, &format!("obj-{k:012}")).unwrap()
}

fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

fn scratch(root: &Path, name: &str) -> PathBuf {
    let p = root.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Runs `writers` tasks calling `op(counter)` until `secs` elapse; returns ops/s and the
/// sorted latencies of every operation.
async fn run_for<F, Fut>(writers: usize, secs: f64, op: F) -> (f64, Vec<Duration>)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let op = op.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                op(n).await;
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_unstable();
    (
        counter.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        lat,
    )
}

/// `p50 .. p99 .. max` of sorted latencies, in milliseconds.
fn lat_line(sorted: &[Duration]) -> String {
    if sorted.is_empty() {
        return "no ops".into();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        ms(pct(sorted, 0.5)),
        ms(pct(sorted, 0.99)),
        ms(sorted[sorted.len() - 1])
    )
}

fn naive_put(dir: &Path, k: u64, data: &[u8]) {
    use std::io::Write;
    let tmp = dir.join(format!("tmp-{k}"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, dir.join(format!("obj-{k}"))).unwrap();
}

fn vm(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn reset_peak_rss() {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var("KURA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        println!("kura-store bench (secs per phase {}, scratch {})", a.secs, root.display());
        // ---- 4 KiB puts, durability Always, vs naive write+fsync+rename
        let data = payload(4096, 7);
        let writer_counts: &[usize] = if a.phases.contains("put") { &a.writers } else { &[] };
        for &writers in writer_counts {
            let dir = scratch(&root, "naive-put");
            let d = data.clone();
            let (naive, naive_lat) = run_for(writers, a.secs, move |k| {
                let dir = dir.clone();
                let d = d.clone();
                async move {
                    tokio::task::spawn_blocking(move || naive_put(&dir, k, &d))
                        .await
                        .unwrap();
                }
            })
            .await;
            let dir = scratch(&root, "store-put");
            let mut cfg = Config::default();
            cfg.fast_crash_recovery = !a.no_quick_repair;
            if let Some(mib) = a.meta_cache_mib {
                cfg.metadata_cache_bytes = mib << 20;
            }
            cfg.background_writeback = a.writeback;
            let store = Store::open(FsBackend::open(&dir).unwrap(), cfg)
                .await
                .unwrap();
            let s = store.clone();
            let d = data.clone();
            let (ours, ours_lat) = run_for(writers, a.secs, move |k| {
                let s = s.clone();
                let d = d.clone();
                async move {
                    s.put_bytes(id("put", k), d).await.unwrap();
                }
            })
            .await;
            let st = store.stats();
            println!(
                "put 4KiB durable, {writers:>2} writers: kura-store {ours:>9.0} ops/s | naive {naive:>8.0} ops/s | ratio {:.1}x | avg batch {:.1}, max batch {}, avg commit {:.2} ms",
                ours / naive,
                st.committed_ops as f64 / st.commits.max(1) as f64,
                st.max_batch,
                st.commit_micros as f64 / 1000.0 / st.commits.max(1) as f64
            );
            println!(
                "  put latency, {writers:>2} writers: kura-store {} | naive {} | {} checkpoints, avg {:.1} ms, max {:.1} ms",
                lat_line(&ours_lat),
                lat_line(&naive_lat),
                st.checkpoints,
                st.checkpoint_micros as f64 / 1000.0 / st.checkpoints.max(1) as f64,
                st.max_checkpoint_micros as f64 / 1000.0
            );
            store.close().await.unwrap();
        }

        // ---- warm 4 KiB gets
        if a.phases.contains("get") {
        let n = 10_000u64;
        let dir = scratch(&root, "store-get");
        let mut cfg = Config::default();
        cfg.durability = Durability::None {
            checkpoint: Duration::from_secs(3600),
        };
        if let Some(mib) = a.meta_cache_mib {
            cfg.metadata_cache_bytes = mib << 20;
        }
        let store = Store::open(FsBackend::open(&dir).unwrap(), cfg).await.unwrap();
        let ndir = scratch(&root, "naive-get");
        for k in 0..n {
            store.put_bytes(id("get", k), data.clone()).await.unwrap();
            std::fs::write(ndir.join(format!("obj-{k}")), &data).unwrap();
        }
        for _ in 0..2 {
            let mut lat = Vec::with_capacity(n as usize);
            let start = Instant::now();
            for k in 0..n {
                let t = Instant::now();
                let o = store.get(&id("get", k * 7919 % n)).await.unwrap().unwrap();
                let b = o.read_all().await.unwrap();
                assert_eq!(b.len(), 4096);
                lat.push(t.elapsed());
            }
            let ours = n as f64 / start.elapsed().as_secs_f64();
            lat.sort();
            let mut nlat = Vec::with_capacity(n as usize);
            let start = Instant::now();
            for k in 0..n {
                let t = Instant::now();
                let p = ndir.join(format!("obj-{}", k * 7919 % n));
                let b = tokio::task::spawn_blocking(move || std::fs::read(p).unwrap())
                    .await
                    .unwrap();
                assert_eq!(b.len(), 4096);
                nlat.push(t.elapsed());
            }
            let naive = n as f64 / start.elapsed().as_secs_f64();
            nlat.sort();
            println!(
                "get 4KiB warm (1 reader, verified): kura-store {ours:>8.0} ops/s p50 {:?} p99 {:?} | naive read {naive:>8.0} ops/s p50 {:?} p99 {:?} | ratio {:.2}x",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                pct(&nlat, 0.5),
                pct(&nlat, 0.99),
                ours / naive
            );
        }
        // A hot working set (1000 objects, 4 MiB) read over and over, as a cache
        // daemon's popular keys are: after the first pass every read is served from the
        // read cache (see `Config::read_cache_bytes`), verified once.
        let hot = 1000u64;
        let iters = 20_000u64;
        for _ in 0..2 {
            let mut lat = Vec::with_capacity(iters as usize);
            let start = Instant::now();
            for i in 0..iters {
                let t = Instant::now();
                let o = store.get(&id("get", i * 7919 % hot)).await.unwrap().unwrap();
                let b = o.read_all().await.unwrap();
                assert_eq!(b.len(), 4096);
                lat.push(t.elapsed());
            }
            let ours = iters as f64 / start.elapsed().as_secs_f64();
            lat.sort();
            println!(
                "get 4KiB hot set of {hot} (1 reader, verified): kura-store {ours:>8.0} ops/s p50 {:?} p99 {:?}",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
            );
        }
        let st = store.stats();
        println!(
            "read cache: {} hits, {} misses, {} objects, {:.1} MiB",
            st.read_cache_hits,
            st.read_cache_misses,
            st.read_cache_objects,
            st.read_cache_bytes as f64 / 1048576.0
        );
        store.close().await.unwrap();
        }

        // ---- 1 GiB put / get
        if a.phases.contains("big") {
        let chunk = payload(1 << 20, 3);
        let total = a.big_mib << 20;
        let dir = scratch(&root, "store-big");
        let store = Store::open(FsBackend::open(&dir).unwrap(), Config::default())
            .await
            .unwrap();
        reset_peak_rss();
        let rss0 = vm("VmRSS:");
        let start = Instant::now();
        let chunks = (0..a.big_mib).map(|_| Ok::<Bytes, std::io::Error>(chunk.clone()));
        let body = ChunkIter(chunks);
        store
            .put(PutRequest::new(id("big", 0)).with_len(total), body)
            .await
            .unwrap();
        let put_s = start.elapsed().as_secs_f64();
        let put_peak = vm("VmHWM:").saturating_sub(rss0);
        reset_peak_rss();
        let rss1 = vm("VmRSS:");
        let start = Instant::now();
        let o = store.get(&id("big", 0)).await.unwrap().unwrap();
        let mut r = o.reader();
        let mut got = 0u64;
        while let Some(c) = r.next_chunk().await.unwrap() {
            got += c.len() as u64;
        }
        assert_eq!(got, total);
        let get_s = start.elapsed().as_secs_f64();
        let get_peak = vm("VmHWM:").saturating_sub(rss1);
        // Baseline: write+fsync+rename of the same bytes, then read back.
        let ndir = scratch(&root, "naive-big");
        let start = Instant::now();
        {
            use std::io::Write;
            let tmp = ndir.join("tmp");
            let mut f = std::fs::File::create(&tmp).unwrap();
            for _ in 0..a.big_mib {
                f.write_all(&chunk).unwrap();
            }
            f.sync_all().unwrap();
            std::fs::rename(&tmp, ndir.join("obj")).unwrap();
        }
        let nput_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        {
            use std::io::Read;
            let mut f = std::fs::File::open(ndir.join("obj")).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while f.read(&mut buf).unwrap() > 0 {}
        }
        let nget_s = start.elapsed().as_secs_f64();
        let gb = total as f64 / 1e9;
        println!(
            "put {} MiB: kura-store {:.2} GB/s (peak RSS growth {:.1} MiB) | naive {:.2} GB/s | ratio {:.2}x",
            a.big_mib,
            gb / put_s,
            put_peak as f64 / 1048576.0,
            gb / nput_s,
            nput_s / put_s
        );
        println!(
            "get {} MiB (verified, page cache warm): kura-store {:.2} GB/s (peak RSS growth {:.1} MiB) | naive read {:.2} GB/s | ratio {:.2}x",
            a.big_mib,
            gb / get_s,
            get_peak as f64 / 1048576.0,
            gb / nget_s,
            nget_s / get_s
        );
        store.close().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&ndir);
        }

        // ---- open time for N objects
        if a.phases.contains("open") {
        let dir = scratch(&root, "store-open");
        let mut cfg = Config::default();
        cfg.durability = Durability::None {
            checkpoint: Duration::from_secs(3600),
        };
        let store = Store::open(FsBackend::open(&dir).unwrap(), cfg).await.unwrap();
        let fill = Instant::now();
        let s = store.clone();
        let small = Bytes::from_static(b"0123456789abcdef0123456789abcdef");
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let s = s.clone();
            let next = next.clone();
            let small = small.clone();
            let target = a.open_objects;
            tasks.push(tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= target {
                        break;
                    }
                    s.put(
                        PutRequest::new(id("open", k)).with_len(small.len() as u64),
                        body_from_bytes(small.clone()),
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let fill_s = fill.elapsed().as_secs_f64();
        drop(s);
        store.close().await.unwrap();
        let start = Instant::now();
        let store = Store::open(FsBackend::open(&dir).unwrap(), Config::default())
            .await
            .unwrap();
        let open_s = start.elapsed().as_secs_f64();
        assert_eq!(store.stats().objects, a.open_objects);
        println!(
            "open with {} objects: {:.3} s (filled in {:.1} s, {:.0} puts/s with durability=none)",
            a.open_objects,
            open_s,
            fill_s,
            a.open_objects as f64 / fill_s
        );
        store.close().await.unwrap();
        }
    });
}

struct ChunkIter<I>(I);

impl<I: Iterator<Item = std::io::Result<Bytes>> + Unpin> futures_core::Stream for ChunkIter<I> {
    type Item = std::io::Result<Bytes>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}
