//! Faults through an in-process TCP proxy: partition then heal (repair moves about
//! the difference), a slow link (no total timeout strands a large object, up to a
//! 1 GiB one), latency, half-open links (mid-transfer and idle), and DNS discovery
//! through an injectable resolver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{Dir, FaultProxy};
use common::*;
use kura_mesh::{Mesh, PeerUrl, StaticResolver};
use kura_store::ObjectId;

const DEADLINE: Duration = Duration::from_secs(60);

fn id(ns: &str, key: &str) -> ObjectId {
    ObjectId::parse(ACCOUNT, ns, key).unwrap()
}

fn url(a: std::net::SocketAddr) -> PeerUrl {
    PeerUrl::parse(&format!("https://{a}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_then_heal_repairs_about_the_difference() {
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (la, lb) = (listener().await, listener().await);
    // A reaches B only through proxy pb, B reaches A only through pa.
    let pa = FaultProxy::start(la.local_addr().unwrap()).await;
    let pb = FaultProxy::start(lb.local_addr().unwrap()).await;
    let tweak = |c: &mut kura_mesh::MeshConfig| {
        // A small outbox: the partition overflows it, so the heal goes through repair.
        c.outbox.max_messages = 5;
    };
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![url(pb.addr)],
        |c| {
            tweak(c);
            c.node_url = format!("https://{}", pa.addr);
        },
    )
    .await;
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![url(pa.addr)],
        |c| {
            tweak(c);
            c.node_url = format!("https://{}", pb.addr);
        },
    )
    .await;
    // A shared base of 300 objects.
    for i in 0..300 {
        a.store
            .put_bytes(id("cas", &format!("base{i}")), vec![(i % 251) as u8; 4096])
            .await
            .unwrap();
    }
    eventually("base replicated", DEADLINE, || async {
        b.store.head(&id("cas", "base299")).unwrap().is_some() && b.store.stats().objects == 300
    })
    .await;
    pa.cut();
    pb.cut();
    // Both sides write while partitioned: 20 × 10 KiB each.
    let mut diff_bytes = 0u64;
    for i in 0..20 {
        a.store
            .put_bytes(id("cas", &format!("a{i}")), vec![1u8; 10 * 1024])
            .await
            .unwrap();
        b.store
            .put_bytes(id("cas", &format!("b{i}")), vec![2u8; 10 * 1024])
            .await
            .unwrap();
        diff_bytes += 2 * 10 * 1024;
    }
    eventually(
        "both sides see the peer lost and the outbox overflowed",
        DEADLINE,
        || async {
            [&a, &b]
                .iter()
                .all(|n| n.mesh.snapshot().peers.iter().any(|p| p.overflows > 0))
        },
    )
    .await;
    pa.reset_bytes();
    pb.reset_bytes();
    let started = Instant::now();
    pa.heal();
    pb.heal();
    eventually("converged after heal", DEADLINE, || async {
        a.store.stats().objects == 340 && b.store.stats().objects == 340
    })
    .await;
    let elapsed = started.elapsed();
    let moved = pa.bytes() + pb.bytes();
    // Fixed overhead: TLS handshakes, probes (10/s each way), summary walk, headers.
    let overhead = 64 * 1024 + elapsed.as_millis() as u64 * 100;
    println!("repair moved {moved} bytes for {diff_bytes} bytes of difference in {elapsed:?}");
    assert!(
        moved as f64 <= 1.5 * diff_bytes as f64 + overhead as f64,
        "moved {moved} bytes for a {diff_bytes}-byte difference (overhead allowance {overhead})"
    );
    // The 1.2 MB base was not re-sent.
    assert!(moved < 300 * 4096, "{moved}");
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_object_crosses_a_slow_link_under_the_cap_without_a_total_timeout() {
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (la, lb) = (listener().await, listener().await);
    let pb = FaultProxy::start(lb.local_addr().unwrap()).await;
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![url(pb.addr)],
        |c| {
            // A 2 s stall timeout, a 6 MiB object and a 2 MiB/s cap: the push takes about
            // 3 s, longer than the stall timeout, and must not be abandoned.
            c.client.stall_timeout = Duration::from_secs(2);
            c.bandwidth_bytes_per_sec = 2 << 20;
        },
    )
    .await;
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![],
        // B announces the address A reaches it by (the proxy), or A would learn a
        // direct route around the slow link.
        |c| c.node_url = format!("https://{}", pb.addr),
    )
    .await;
    eventually("A sees B", DEADLINE, || async {
        a.mesh.snapshot().ring_members == 2
    })
    .await;
    let big: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 253) as u8).collect();
    let x = id("gradle", "big");
    let started = Instant::now();
    a.store.put_bytes(x.clone(), big.clone()).await.unwrap();
    eventually("big object replicated", DEADLINE, || async {
        b.store.head(&x).unwrap().is_some()
    })
    .await;
    let took = started.elapsed();
    assert_eq!(read(&b.store, &x).await.unwrap(), big);
    let s = a.mesh.snapshot();
    assert_eq!(
        s.peers.iter().map(|p| p.push_failures).sum::<u64>(),
        0,
        "{s:?}"
    );
    println!("6 MiB under a 2 MiB/s cap took {took:?}");
    // The cap held (the object cannot have crossed faster than the cap allows, minus
    // the bucket's burst).
    assert!(took >= Duration::from_millis(2500), "{took:?}");
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_discovery_dials_every_address_and_detects_itself() {
    let pki = Pki::new(ACCOUNT);
    // Three loopback addresses, one port: like pods behind a headless Service.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let ips: Vec<std::net::IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let resolver = Arc::new(StaticResolver::default());
    resolver.set("kura-acme-peers.kura.svc.cluster.local", ips.clone());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let l = match tokio::net::TcpListener::bind((*ip, port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipping: cannot bind {ip}:{port}: {e}");
                return;
            }
        };
        let store = open_store(dirs[i].path(), i as u64 + 1).await;
        let mut cfg = fast_config(dirs[i].path());
        cfg.discovery = Some(PeerUrl {
            host: "kura-acme-peers.kura.svc.cluster.local".into(),
            port,
        });
        let mesh = Mesh::new(
            store.clone(),
            cfg,
            pki.tls(&format!("d{i}")),
            resolver.clone(),
        )
        .unwrap();
        let handle = mesh.start(l);
        nodes.push((store, mesh, handle));
    }
    for (_, m, _) in &nodes {
        eventually("ring of three through DNS", DEADLINE, || async {
            let s = m.snapshot();
            s.ring_members == 3 && s.peers.iter().filter(|p| p.is_self).count() == 1
        })
        .await;
    }
    let x = id("cas", "via-dns");
    nodes[2]
        .0
        .put_bytes(x.clone(), "found by DNS")
        .await
        .unwrap();
    for (s, _, _) in &nodes[..2] {
        eventually(
            "written on the third, read on the others",
            DEADLINE,
            || async { read(s, &x).await.is_some() },
        )
        .await;
    }
    // A pod disappears from DNS and dies: it is dropped only after consecutive misses.
    resolver.set("kura-acme-peers.kura.svc.cluster.local", ips[..2].to_vec());
    let (_, _, h) = nodes.pop().unwrap();
    h.shutdown().await;
    for (_, m, _) in &nodes {
        eventually("dead pod leaves the ring", DEADLINE, || async {
            m.snapshot().ring_members == 2
        })
        .await;
    }
    for (_, _, h) in nodes {
        h.shutdown().await;
    }
}

/// Two nodes, each reaching the other only through a proxy: A dials B through `pb`,
/// B dials A through `pa`.
struct Pair {
    a: Node,
    b: Node,
    pa: FaultProxy,
    pb: FaultProxy,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn pair(pki: &Pki, tweak: impl Fn(&mut kura_mesh::MeshConfig) + Copy) -> Pair {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (la, lb) = (listener().await, listener().await);
    let pa = FaultProxy::start(la.local_addr().unwrap()).await;
    let pb = FaultProxy::start(lb.local_addr().unwrap()).await;
    // Each node announces the address the other reaches it by: its proxy.
    let a = start_node(
        pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![url(pb.addr)],
        |c| {
            tweak(c);
            c.node_url = format!("https://{}", pa.addr);
        },
    )
    .await;
    let b = start_node(
        pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![url(pa.addr)],
        |c| {
            tweak(c);
            c.node_url = format!("https://{}", pb.addr);
        },
    )
    .await;
    Pair {
        a,
        b,
        pa,
        pb,
        _dirs: (da, db),
    }
}

fn peer(n: &Node) -> kura_mesh::PeerSnapshot {
    n.mesh.snapshot().peers.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_and_repair_converge_over_a_high_latency_link() {
    let pki = Pki::new(ACCOUNT);
    let Pair {
        a,
        b,
        pa,
        pb,
        _dirs,
    } = pair(&pki, |c| {
        c.outbox.max_messages = 5;
        c.client.stall_timeout = Duration::from_secs(2);
    })
    .await;
    // 75 ms each way on both links: a 150 ms round trip for every exchange.
    for p in [&pa, &pb] {
        p.set_latency(Dir::Up, 75);
        p.set_latency(Dir::Down, 75);
    }
    eventually("ring of two over the slow links", DEADLINE, || async {
        a.mesh.snapshot().ring_members == 2 && b.mesh.snapshot().ring_members == 2
    })
    .await;
    // Pushes both ways, small and 1 MiB (many round trips of flow control).
    for i in 0..10 {
        a.store
            .put_bytes(id("cas", &format!("a{i}")), vec![i as u8; 4096])
            .await
            .unwrap();
        b.store
            .put_bytes(id("cas", &format!("b{i}")), vec![i as u8; 4096])
            .await
            .unwrap();
    }
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    a.store
        .put_bytes(id("cas", "big"), big.clone())
        .await
        .unwrap();
    eventually("pushes converge", DEADLINE, || async {
        a.store.stats().objects == 21 && b.store.stats().objects == 21
    })
    .await;
    assert_eq!(read(&b.store, &id("cas", "big")).await.unwrap(), big);
    // A partition that overflows the outboxes: the heal goes through repair, over
    // the same slow links.
    pa.cut();
    pb.cut();
    for i in 0..10 {
        a.store
            .put_bytes(id("cas", &format!("pa{i}")), vec![3u8; 8192])
            .await
            .unwrap();
        b.store
            .put_bytes(id("cas", &format!("pb{i}")), vec![4u8; 8192])
            .await
            .unwrap();
    }
    eventually("outboxes overflowed", DEADLINE, || async {
        peer(&a).overflows > 0 && peer(&b).overflows > 0
    })
    .await;
    let repairs = (peer(&a).repairs, peer(&b).repairs);
    pa.heal();
    pb.heal();
    eventually("repaired over the slow links", DEADLINE, || async {
        a.store.stats().objects == 41 && b.store.stats().objects == 41
    })
    .await;
    eventually("repair passes completed", DEADLINE, || async {
        peer(&a).repairs > repairs.0 && peer(&b).repairs > repairs.1
    })
    .await;
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_mid_transfer_is_abandoned_by_the_stall_watchdog_and_retried_after_heal() {
    let pki = Pki::new(ACCOUNT);
    let Pair {
        a,
        b,
        pa: _pa,
        pb,
        _dirs,
    } = pair(&pki, |c| {
        c.client.stall_timeout = Duration::from_secs(2);
        c.outbox.max_messages = 8;
        // 4 MiB/s: the 16 MiB push is still running when the link goes dark.
        c.bandwidth_bytes_per_sec = 4 << 20;
    })
    .await;
    eventually("A sees B", DEADLINE, || async {
        a.mesh.snapshot().ring_members == 2
    })
    .await;
    let big: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 249) as u8).collect();
    let x = id("gradle", "big-half-open");
    let before = pb.bytes();
    a.store.put_bytes(x.clone(), big.clone()).await.unwrap();
    eventually("the push is under way", DEADLINE, || async {
        pb.bytes() > before + (2 << 20)
    })
    .await;
    // The peer's host vanishes: nothing moves, nothing is closed.
    pb.blackhole(&[Dir::Up, Dir::Down]);
    let dark = Instant::now();
    eventually("the stall watchdog abandons the push", DEADLINE, || async {
        let p = peer(&a);
        p.push_failures >= 1 && p.last_error.as_deref().is_some_and(|e| e.contains("stall"))
    })
    .await;
    let abandoned_after = dark.elapsed();
    // Writes keep coming while the peer is dark: its backlog stays bounded.
    for i in 0..30 {
        a.store
            .put_bytes(id("cas", &format!("dark{i}")), vec![7u8; 1024])
            .await
            .unwrap();
    }
    eventually(
        "the peer is retried with back-off, then lost, and its backlog dropped",
        DEADLINE,
        || async {
            let p = peer(&a);
            p.push_failures >= 2 && !p.member && p.overflows >= 1
        },
    )
    .await;
    let p = peer(&a);
    assert!(p.outbox_depth <= 8, "{p:?}");
    assert!(
        b.store.head(&x).unwrap().is_none(),
        "arrived through a dark link?"
    );
    pb.heal();
    eventually("the object arrives after the heal", DEADLINE, || async {
        b.store.head(&x).unwrap().is_some()
    })
    .await;
    assert_eq!(read(&b.store, &x).await.unwrap(), big);
    eventually("the dark writes arrive too (repair)", DEADLINE, || async {
        b.store.stats().objects == 31
    })
    .await;
    eventually("A's peer is a healthy member again", DEADLINE, || async {
        let p = peer(&a);
        p.member && p.outbox_depth == 0
    })
    .await;
    println!("half-open push abandoned {abandoned_after:?} after the link went dark");
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_idle_link_is_detected_by_probes_with_hysteresis_then_repaired() {
    let pki = Pki::new(ACCOUNT);
    let Pair {
        a,
        b,
        pa,
        pb,
        _dirs,
    } = pair(&pki, |c| {
        c.client.stall_timeout = Duration::from_secs(1);
        c.client.connect_timeout = Duration::from_secs(1);
    })
    .await;
    eventually("ring of two", DEADLINE, || async {
        a.mesh.snapshot().ring_members == 2 && b.mesh.snapshot().ring_members == 2
    })
    .await;
    a.store.put_bytes(id("cas", "before"), "x").await.unwrap();
    eventually("replicated before the fault", DEADLINE, || async {
        b.store.head(&id("cas", "before")).unwrap().is_some()
    })
    .await;
    let repairs_before = peer(&a).repairs;
    // Both links go dark while idle: probes hang on the open connections.
    pa.blackhole(&[Dir::Up, Dir::Down]);
    pb.blackhole(&[Dir::Up, Dir::Down]);
    // Hysteresis: a failed probe alone does not remove the member.
    let mut saw_failing_member = false;
    eventually("A declares B lost", DEADLINE, || {
        let p = peer(&a);
        if p.member && (1..3).contains(&p.failures) {
            saw_failing_member = true;
        }
        async move { !p.member && p.failures >= 3 }
    })
    .await;
    assert!(
        saw_failing_member,
        "B was dropped before consecutive failures"
    );
    assert_eq!(a.mesh.snapshot().ring_members, 1);
    // B writes while it is unreachable.
    let y = id("cas", "written-while-dark");
    b.store.put_bytes(y.clone(), "from B").await.unwrap();
    pa.heal();
    pb.heal();
    eventually("B is a member again", DEADLINE, || async {
        peer(&a).member && a.mesh.snapshot().ring_members == 2
    })
    .await;
    eventually("A repaired from B and has the write", DEADLINE, || async {
        read(&a.store, &y).await.as_deref() == Some(b"from B".as_slice())
            && peer(&a).repairs > repairs_before
    })
    .await;
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_call_abandons_its_dead_connection_and_redials() {
    let pki = Pki::new(ACCOUNT);
    let Pair {
        a,
        b,
        pa: _pa,
        pb,
        _dirs,
    } = pair(&pki, |c| {
        c.client.stall_timeout = Duration::from_secs(2);
    })
    .await;
    eventually("A sees B", DEADLINE, || async {
        a.mesh.snapshot().ring_members == 2
    })
    .await;
    a.store.put_bytes(id("cas", "x1"), "one").await.unwrap();
    eventually("x1 replicated", DEADLINE, || async {
        b.store.head(&id("cas", "x1")).unwrap().is_some()
    })
    .await;
    // A's connection to B goes dark forever; a new connection would work.
    let dialled = pb.accepted();
    pb.blackhole_existing();
    let x2 = id("cas", "x2");
    a.store.put_bytes(x2.clone(), "two").await.unwrap();
    let mut max_failures = 0;
    eventually("x2 replicated over a new connection", DEADLINE, || {
        let p = peer(&a);
        max_failures = max_failures.max(p.failures);
        let arrived = b.store.head(&x2).unwrap().is_some();
        async move { arrived }
    })
    .await;
    let p = peer(&a);
    assert!(pb.accepted() > dialled, "no new connection was dialled");
    // One stall, then a new connection: not one stall per retry until HTTP/2
    // keep-alive (tens of seconds) notices the dead connection, and B never looked
    // lost.
    assert!(p.push_failures <= 2, "{p:?}");
    assert!(max_failures < 3 && p.member, "{p:?}");
    for n in [a, b] {
        n.stop().await;
    }
}

/// 1 GiB, generated chunk by chunk (never held in memory): chunk `i` is a fixed
/// pseudo-random MiB with `i` stamped into its first bytes, so reordering or loss
/// changes the digest.
const GIB: u64 = 1 << 30;
const GEN_CHUNK: usize = 1 << 20;

fn generated(
    total: u64,
) -> (
    impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
    Arc<std::sync::Mutex<sha2::Sha256>>,
) {
    use futures_util::StreamExt as _;
    use sha2::Digest as _;
    let mut base = vec![0u8; GEN_CHUNK];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in &mut base {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let hasher = Arc::new(std::sync::Mutex::new(sha2::Sha256::new()));
    let h = hasher.clone();
    let chunks = total.div_ceil(GEN_CHUNK as u64);
    let stream = futures_util::stream::iter(0..chunks).map(move |i| {
        let n = (total - i * GEN_CHUNK as u64).min(GEN_CHUNK as u64) as usize;
        let mut c = base[..n].to_vec();
        c[..8.min(n)].copy_from_slice(&i.to_le_bytes()[..8.min(n)]);
        h.lock().unwrap().update(&c);
        Ok(bytes::Bytes::from(c))
    });
    (stream, hasher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_gib_object_crosses_a_slow_link_under_the_cap_without_being_abandoned() {
    use sha2::Digest as _;
    const CAP: u64 = 64 << 20;
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (la, lb) = (listener().await, listener().await);
    let pb = FaultProxy::start(lb.local_addr().unwrap()).await;
    // The link itself is slow too (96 MiB/s per direction), above the mesh's cap.
    pb.set_rate(96 << 20);
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![url(pb.addr)],
        |c| {
            // 1 GiB at 64 MiB/s takes ~16 s; the stall timeout is 2 s, so any total
            // timeout of that order would abandon it.
            c.client.stall_timeout = Duration::from_secs(2);
            c.bandwidth_bytes_per_sec = CAP;
        },
    )
    .await;
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![],
        // B announces the address A reaches it by (the proxy), or A would learn a
        // direct route around the slow link.
        |c| c.node_url = format!("https://{}", pb.addr),
    )
    .await;
    eventually("A sees B", DEADLINE, || async {
        a.mesh.snapshot().ring_members == 2
    })
    .await;
    let x = id("bazel", "one-gib");
    let (body, hasher) = generated(GIB);
    let stored_at = Instant::now();
    let meta = a
        .store
        .put(kura_store::PutRequest::new(x.clone()).with_len(GIB), body)
        .await
        .unwrap();
    let stored = stored_at.elapsed();
    let expected: [u8; 32] = hasher.lock().unwrap().clone().finalize().into();
    assert_eq!(meta.digest.0, expected);
    let started = Instant::now();
    eventually("1 GiB replicated", Duration::from_secs(300), || async {
        b.store.head(&x).unwrap().is_some()
    })
    .await;
    let took = started.elapsed();
    // The reader side, by digest: stream B's copy through SHA-256.
    let obj = b.store.get(&x).await.unwrap().unwrap();
    assert_eq!(obj.meta().len, GIB);
    assert_eq!(obj.meta().digest.0, expected);
    let mut reader = obj.reader();
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(c) = reader.next_chunk().await.unwrap() {
        n += c.len() as u64;
        h.update(&c);
    }
    assert_eq!(n, GIB);
    assert_eq!(<[u8; 32]>::from(h.finalize()), expected);
    let s = a.mesh.snapshot();
    let p = &s.peers[0];
    assert_eq!(p.push_failures, 0, "the transfer was abandoned: {p:?}");
    assert_eq!(p.pushed_bytes, GIB, "{p:?}");
    println!(
        "1 GiB: stored locally in {stored:?}, replicated under a {} MiB/s cap through a 96 MiB/s link in {took:?} ({:.1} MiB/s)",
        CAP >> 20,
        GIB as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
    // The cap held: 1 GiB cannot cross faster than the cap allows (minus a burst).
    assert!(took.as_secs_f64() >= 0.9 * (GIB / CAP) as f64, "{took:?}");
    for n in [a, b] {
        n.stop().await;
    }
    drop((da, db));
}
