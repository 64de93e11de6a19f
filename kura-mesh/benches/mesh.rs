//! kura-mesh benchmarks: real mTLS on loopback, real on-disk stores in temp dirs.
//!
//! ```text
//! cargo bench -p kura-mesh --bench mesh -- [--phases throughput,hotpath,catchup,repair]
//!     [--secs N] [--cap-mib N] [--obj-kib N] [--small N] [--large-mib N] [--diff-kib A,B,C]
//! ```
//!
//! - `throughput`: node A writes `--obj-kib` objects (default 4 MiB) as fast as the outbox drains; node B
//!   receives them by push under a global cap on A (default 50 MiB/s). Prints the
//!   achieved MiB/s over `--secs` and its ratio to the cap (target 0.95–1.05).
//! - `hotpath`: 4 KiB `Store::get` + read on B, idle and while the throughput phase
//!   saturates replication into B. Prints p50/p99 and the p99 ratio (target ≤ 1.2).
//!   `throughput` and `hotpath` share one run.
//! - `catchup`: A holds `--small` 1 KiB objects and `--large-mib` MiB of 64 MiB
//!   objects; a new node B joins with A as its seed (A does not know B, so everything
//!   arrives through repair). Prints the time until B holds everything.
//! - `repair`: A and B talk only through byte-counting TCP proxies; after a shared
//!   base both sides write while partitioned (half the difference each, 16 KiB
//!   objects, outbox overflow forces repair), then heal. Prints the bytes on the wire
//!   during the heal against the difference size, for each `--diff-kib` size.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proxy::FaultProxy;
use common::*;
use futures_util::StreamExt;
use kura_mesh::{MeshConfig, PeerUrl};
use kura_store::ObjectId;

const MIB: u64 = 1 << 20;
const DEADLINE: Duration = Duration::from_secs(1800);

struct Args {
    phases: Vec<String>,
    secs: u64,
    cap_mib: u64,
    small: u64,
    large_mib: u64,
    diff_kib: Vec<u64>,
    obj_kib: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        phases: vec![
            "throughput".into(),
            "hotpath".into(),
            "catchup".into(),
            "repair".into(),
        ],
        secs: 10,
        cap_mib: 50,
        small: 100_000,
        large_mib: 2048,
        diff_kib: vec![256, 2048, 16384],
        obj_kib: 4096,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
                .to_string()
        };
        let num = |v: String| -> u64 { v.parse().unwrap_or_else(|_| panic!("bad number {v}")) };
        match flag.as_str() {
            "--phases" => a.phases = val().split(',').map(str::to_owned).collect(),
            "--secs" => a.secs = num(val()),
            "--cap-mib" => a.cap_mib = num(val()),
            "--small" => a.small = num(val()),
            "--large-mib" => a.large_mib = num(val()),
            "--obj-kib" => a.obj_kib = num(val()),
            "--diff-kib" => a.diff_kib = val().split(',').map(|s| num(s.to_owned())).collect(),
            // `cargo bench` passes `--bench`; ignore it and any filter.
            _ => {}
        }
    }
    a
}

fn id(ns: &str, key: &str) -> ObjectId {
    ObjectId::parse(ACCOUNT, ns, key).unwrap()
}

fn url(a: std::net::SocketAddr) -> PeerUrl {
    PeerUrl::parse(&format!("https://{a}")).unwrap()
}

/// Distinct content of `len` bytes (the first 8 bytes are `n`).
fn payload(n: u64, len: usize) -> Bytes {
    let mut v = vec![(n % 251) as u8; len];
    v[..8].copy_from_slice(&n.to_le_bytes());
    Bytes::from(v)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times sequential 4 KiB gets on `store` over `keys` for `dur`; returns sorted latencies.
async fn read_loop(store: &kura_store::Store, keys: &[ObjectId], dur: Duration) -> Vec<Duration> {
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < dur {
        let k = &keys[(i * 7919) % keys.len()];
        i += 1;
        let t = Instant::now();
        let o = store.get(k).await.unwrap().expect("hot object present");
        let b = o.read_all().await.unwrap();
        lat.push(t.elapsed());
        assert_eq!(b.len(), 4096);
        // A paced load (about 4 reads per millisecond), not a spin loop that would take
        // a whole core of a 2-core machine away from replication.
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    lat.sort();
    lat
}

async fn throughput_and_hotpath(args: &Args) {
    let cap = args.cap_mib * MIB;
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (la, lb) = (listener().await, listener().await);
    let (ua, ub) = (url(la.local_addr().unwrap()), url(lb.local_addr().unwrap()));
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![ub],
        |c: &mut MeshConfig| c.bandwidth_bytes_per_sec = cap,
    )
    .await;
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![ua],
        |_| {},
    )
    .await;
    // The hot set lives on B (written there, replicated to A).
    let hot: Vec<ObjectId> = (0..1000).map(|i| id("hot", &format!("h{i}"))).collect();
    for (i, k) in hot.iter().enumerate() {
        b.store
            .put_bytes(k.clone(), payload(i as u64, 4096))
            .await
            .unwrap();
    }
    eventually("hot set replicated", DEADLINE, || async {
        a.store.head(hot.last().unwrap()).unwrap().is_some() && b.mesh.snapshot().outbox_depth == 0
    })
    .await;

    let window = Duration::from_secs(args.secs);
    let idle = read_loop(&b.store, &hot, window.min(Duration::from_secs(5))).await;

    // Writer on A: `--obj-kib` objects, keeping a bounded backlog so the cap is the limit.
    let obj = (args.obj_kib * 1024) as usize;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = a.store.clone();
        let mesh = a.mesh.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if mesh.snapshot().outbox_depth > 8 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                store
                    .put_bytes(id("bulk", &format!("o{n}")), payload(n, obj))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    // Warm up until replication is flowing, then measure over the window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r0 = b.mesh.snapshot().bytes_received;
    let t0 = Instant::now();
    let busy = read_loop(&b.store, &hot, window).await;
    let elapsed = t0.elapsed();
    let r1 = b.mesh.snapshot().bytes_received;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    let rate = (r1 - r0) as f64 / elapsed.as_secs_f64() / MIB as f64;
    let backlog = a.mesh.snapshot().outbox_depth;

    if args.phases.iter().any(|p| p == "throughput") {
        println!(
            "throughput: {rate:.1} MiB/s received over {:.1}s with a {} MiB/s cap: ratio {:.3} (target 0.95-1.05; {written} x {} KiB written on A, backlog at end {backlog})",
            elapsed.as_secs_f64(),
            args.cap_mib,
            rate / args.cap_mib as f64,
            args.obj_kib,
        );
    }
    if args.phases.iter().any(|p| p == "hotpath") {
        let (ip50, ip99) = (pct(&idle, 0.5), pct(&idle, 0.99));
        let (bp50, bp99) = (pct(&busy, 0.5), pct(&busy, 0.99));
        println!(
            "hotpath: 4 KiB get idle p50 {:.0} us p99 {:.0} us ({} reads); saturated p50 {:.0} us p99 {:.0} us ({} reads); p99 ratio {:.2} (target <= 1.2)",
            us(ip50),
            us(ip99),
            idle.len(),
            us(bp50),
            us(bp99),
            busy.len(),
            us(bp99) / us(ip99).max(1e-9)
        );
    }
    for n in [a, b] {
        n.stop().await;
    }
}

async fn catchup(args: &Args) {
    const LARGE: u64 = 64 * MIB;
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store_a = open_store(da.path(), 1).await;
    let t = Instant::now();
    futures_util::stream::iter(0..args.small)
        .map(|i| {
            let s = store_a.clone();
            async move {
                s.put_bytes(id("small", &format!("s{i}")), payload(i, 1024))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(64)
        .collect::<()>()
        .await;
    let mut large_bytes = 0u64;
    let mut n_large = 0u64;
    while large_bytes < args.large_mib * MIB {
        let len = LARGE.min(args.large_mib * MIB - large_bytes);
        store_a
            .put_bytes(
                id("large", &format!("l{n_large}")),
                payload(1_000_000 + n_large, len as usize),
            )
            .await
            .unwrap();
        large_bytes += len;
        n_large += 1;
    }
    let total = args.small + n_large;
    eprintln!(
        "catchup: seeded A with {} small + {n_large} large objects in {:.1}s",
        args.small,
        t.elapsed().as_secs_f64()
    );
    let la = listener().await;
    let ua = url(la.local_addr().unwrap());
    let a = start_node(&pki, store_a, da.path().into(), la, vec![], |_| {}).await;
    let t0 = Instant::now();
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        listener().await,
        vec![ua],
        |_| {},
    )
    .await;
    eventually("new node caught up", DEADLINE, || async {
        b.store.stats().objects == total
    })
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let snap = b.mesh.snapshot();
    let (rb, ro) = snap.peers.iter().fold((0, 0), |(b, o), p| {
        (b + p.repair_bytes, o + p.repair_objects)
    });
    let data = args.small * 1024 + large_bytes;
    println!(
        "catchup: {} x 1 KiB + {} MiB large ({n_large} objects) caught up by repair in {elapsed:.1}s: {:.0} objects/s, {:.1} MiB/s; repair fetched {rb} bytes / {ro} objects, ratio to data {:.3} (no cap)",
        args.small,
        large_bytes / MIB,
        total as f64 / elapsed,
        data as f64 / MIB as f64 / elapsed,
        rb as f64 / data as f64
    );
    for n in [a, b] {
        n.stop().await;
    }
}

async fn repair_once(diff: u64) {
    const OBJ: u64 = 16 * 1024;
    const BASE: u64 = 500;
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (la, lb) = (listener().await, listener().await);
    let pa = FaultProxy::start(la.local_addr().unwrap()).await;
    let pb = FaultProxy::start(lb.local_addr().unwrap()).await;
    let tweak = |c: &mut MeshConfig| c.outbox.max_messages = 5;
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![url(pb.addr)],
        tweak,
    )
    .await;
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![url(pa.addr)],
        tweak,
    )
    .await;
    for i in 0..BASE {
        a.store
            .put_bytes(id("cas", &format!("base{i}")), payload(i, 4096))
            .await
            .unwrap();
    }
    eventually("base replicated", DEADLINE, || async {
        b.store.stats().objects == BASE && a.mesh.snapshot().outbox_depth == 0
    })
    .await;
    pa.cut();
    pb.cut();
    let per_side = (diff / OBJ / 2).max(6);
    for i in 0..per_side {
        a.store
            .put_bytes(
                id("cas", &format!("a{i}")),
                payload(10_000 + i, OBJ as usize),
            )
            .await
            .unwrap();
        b.store
            .put_bytes(
                id("cas", &format!("b{i}")),
                payload(20_000 + i, OBJ as usize),
            )
            .await
            .unwrap();
    }
    let diff_bytes = 2 * per_side * OBJ;
    eventually("outboxes overflowed", DEADLINE, || async {
        [&a, &b]
            .iter()
            .all(|n| n.mesh.snapshot().peers.iter().any(|p| p.overflows > 0))
    })
    .await;
    let repaired_before: u64 = [&a, &b]
        .iter()
        .flat_map(|n| n.mesh.snapshot().peers)
        .map(|p| p.repair_bytes)
        .sum();
    pa.reset_bytes();
    pb.reset_bytes();
    let t0 = Instant::now();
    pa.heal();
    pb.heal();
    let want = BASE + 2 * per_side;
    eventually("converged after heal", DEADLINE, || async {
        a.store.stats().objects == want && b.store.stats().objects == want
    })
    .await;
    let elapsed = t0.elapsed();
    let wire = pa.bytes() + pb.bytes();
    let repaired: u64 = [&a, &b]
        .iter()
        .flat_map(|n| n.mesh.snapshot().peers)
        .map(|p| p.repair_bytes)
        .sum::<u64>()
        - repaired_before;
    println!(
        "repair: difference {} KiB ({} x 16 KiB) over a {} KiB base: {wire} bytes on the wire in {:.2}s (ratio {:.3}), repair fetched {repaired} bytes (ratio {:.3})",
        diff_bytes / 1024,
        2 * per_side,
        BASE * 4,
        elapsed.as_secs_f64(),
        wire as f64 / diff_bytes as f64,
        repaired as f64 / diff_bytes as f64
    );
    for n in [a, b] {
        n.stop().await;
    }
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let has = |p: &str| args.phases.iter().any(|x| x == p);
        if has("throughput") || has("hotpath") {
            throughput_and_hotpath(&args).await;
        }
        if has("catchup") {
            catchup(&args).await;
        }
        if has("repair") {
            for &d in &args.diff_kib {
                repair_once(d * 1024).await;
            }
        }
    });
}
