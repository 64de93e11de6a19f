//! Eviction vs anti-entropy: an object a node evicted stays in its digest summary as a
//! ghost, so repair neither fetches it back nor makes the peer drop its copy; a peer ahead
//! with only a ghost teaches the other the ghost instead of sending bytes; a peer ahead with
//! the bytes we already hold only raises our version.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use kura_mesh::repair::{self, RepairContext, RepairReport};
use kura_mesh::{ClientOptions, PeerClient, PeerService, TlsState, TokenBucket};
use kura_store::{Account, MemBackend, NodeId, ObjectId, Store};

const DEADLINE: Duration = Duration::from_secs(30);

fn id(ns: &str, key: &str) -> ObjectId {
    ObjectId::parse(ACCOUNT, ns, key).unwrap()
}

fn tls() -> Arc<TlsState> {
    static PKI: OnceLock<Arc<TlsState>> = OnceLock::new();
    PKI.get_or_init(|| Pki::new(ACCOUNT).tls("node")).clone()
}

async fn mem_store(node: u64) -> Store {
    let mut cfg = kura_store::Config::default();
    cfg.node = NodeId(node);
    Store::open(MemBackend::default(), cfg).await.unwrap()
}

/// Serves `store`'s peer API over mTLS; returns its address.
async fn serve(store: &Store, stop: &tokio::sync::watch::Receiver<bool>) -> String {
    let l = listener().await;
    let addr = l.local_addr().unwrap().to_string();
    let svc = Arc::new(PeerService::new(
        store.clone(),
        Account::new(ACCOUNT).unwrap(),
        "r",
        "",
        1 << 24,
        Duration::from_secs(5),
        Arc::new(TokenBucket::new(0)),
    ));
    let mut rx = stop.clone();
    tokio::spawn(kura_mesh::server::serve(l, tls(), svc, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    addr
}

/// One pull repair pass: `dst` pulls from the store served at `src`.
async fn pull(dst: &Store, src: &str) -> RepairReport {
    let account = Account::new(ACCOUNT).unwrap();
    let transfers = tokio::sync::Semaphore::new(4);
    let client = PeerClient::new(src.to_owned(), tls(), ClientOptions::default());
    let status = client.status().await.unwrap();
    let ctx = RepairContext {
        store: dst,
        account: &account,
        limiters: vec![],
        transfers: &transfers,
        push: false,
    };
    repair::pull(&ctx, &client, &status).await.unwrap()
}

fn root(s: &Store, ns: &str) -> [u8; 32] {
    s.summary_node(&id(ns, "x").namespace_id(), 0, 0).unwrap()
}

const N: u64 = 40;
const SIZE: usize = 8 << 10;

fn data(i: u64) -> Vec<u8> {
    (0..SIZE).map(|j| (i as usize * 31 + j) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_objects_are_not_fetched_back_by_repair() {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let a = mem_store(1).await;
    let b = mem_store(2).await;
    let (addr_a, addr_b) = (serve(&a, &rx).await, serve(&b, &rx).await);
    for i in 0..N {
        a.put_bytes(id("cas", &format!("k{i}")), data(i))
            .await
            .unwrap();
    }
    // B catches up by repair: every byte crosses once.
    let r = pull(&b, &addr_a).await;
    assert_eq!(r.objects_applied, N);
    assert_eq!(r.bytes_fetched, N * SIZE as u64);
    assert_eq!(root(&a, "cas"), root(&b, "cas"));
    // B runs out of room and evicts half.
    b.evict_to(b.stats().bytes / 2).await.unwrap();
    let held = b.stats().objects;
    assert!(held < N && held > 0, "{held}");
    assert_eq!(b.stats().ghosts, N - held);
    assert_eq!(
        root(&a, "cas"),
        root(&b, "cas"),
        "eviction is invisible to repair"
    );
    // Anti-entropy both ways, several rounds: nothing moves.
    for _ in 0..3 {
        for (dst, src) in [(&b, &addr_a), (&a, &addr_b)] {
            let r = pull(dst, src).await;
            assert_eq!(r.namespaces_differing, 0, "{r:?}");
            assert_eq!((r.objects_applied, r.bytes_fetched), (0, 0), "{r:?}");
            assert_eq!((r.ghosts_learned, r.versions_bumped), (0, 0), "{r:?}");
        }
    }
    assert_eq!(b.stats().objects, held, "B fetched evicted objects back");
    assert_eq!(a.stats().objects, N, "A dropped copies because B evicted");
    assert_eq!(a.stats().ghosts, 0);
    // A fetch of a ghost is a 404, which the client reports as "not there".
    let client = PeerClient::new(addr_b.clone(), tls(), ClientOptions::default());
    let ghost = (0..N)
        .map(|i| id("cas", &format!("k{i}")))
        .find(|k| b.head(k).unwrap().is_none())
        .unwrap();
    let got = client
        .fetch(
            &ghost.namespace,
            &ghost.key,
            vec![],
            Arc::new(kura_mesh::transfer::Progress::default()),
        )
        .await
        .unwrap();
    assert!(got.is_none());
    a.verify_summary().unwrap();
    b.verify_summary().unwrap();
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_ahead_with_a_ghost_or_the_same_bytes_transfers_nothing() {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let a = mem_store(1).await;
    let b = mem_store(2).await;
    let addr_a = serve(&a, &rx).await;
    let addr_b = serve(&b, &rx).await;
    // `old`: both hold v1; then A writes v2 and evicts it before B got it.
    let old = id("cas", "old");
    a.put_bytes(old.clone(), data(1)).await.unwrap();
    pull(&b, &addr_a).await;
    assert!(b.head(&old).unwrap().is_some());
    a.put_bytes(old.clone(), data(2)).await.unwrap();
    // `fresh`: written and evicted on A, never seen by B.
    let fresh = id("cas", "fresh");
    a.put_bytes(fresh.clone(), data(3)).await.unwrap();
    a.evict_to(0).await.unwrap();
    assert_eq!(a.stats().ghosts, 2);
    // `same`: the same bytes PUT on both nodes (content-addressed), A's write last.
    let same = id("cas", "same");
    b.put_bytes(same.clone(), data(4)).await.unwrap();
    a.put_bytes(same.clone(), data(4)).await.unwrap();
    let a_same = a.head(&same).unwrap().unwrap().version;
    assert_ne!(b.head(&same).unwrap().unwrap().version, a_same);

    let r = pull(&b, &addr_a).await;
    assert_eq!(r.bytes_fetched, 0, "{r:?}");
    assert_eq!(r.objects_applied, 0, "{r:?}");
    assert_eq!(r.ghosts_learned, 2, "{r:?}");
    assert_eq!(r.versions_bumped, 1, "{r:?}");
    assert!(b.head(&old).unwrap().is_none(), "B kept a superseded copy");
    assert!(b.head(&fresh).unwrap().is_none());
    assert_eq!(b.head(&same).unwrap().unwrap().version, a_same);
    assert_eq!(read(&b, &same).await.unwrap(), data(4));
    assert_eq!(b.stats().ghosts, 2);
    assert_eq!(root(&a, "cas"), root(&b, "cas"), "summaries converge");
    // And stay converged.
    for (dst, src) in [(&b, &addr_a), (&a, &addr_b)] {
        let r = pull(dst, src).await;
        assert_eq!(r.namespaces_differing, 0, "{r:?}");
    }
    b.verify_summary().unwrap();
    let _ = stop.send(true);
}

/// The same with the full mesh: anti-entropy runs on its own, and B's repair counters show
/// nothing fetched back after it evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_entropy_does_not_churn_an_evicting_node() {
    let pki = Pki::new(ACCOUNT);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ls = [listener().await, listener().await];
    let urls: Vec<_> = ls
        .iter()
        .map(|l| {
            kura_mesh::PeerUrl::parse(&format!("https://{}", l.local_addr().unwrap())).unwrap()
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let store = open_store(dirs[i].path(), i as u64 + 1).await;
        nodes.push(
            start_node(
                &pki,
                store,
                dirs[i].path().to_owned(),
                l,
                urls.clone(),
                |c| c.anti_entropy_interval = Duration::from_millis(200),
            )
            .await,
        );
    }
    eventually("ring of two", DEADLINE, || async {
        nodes.iter().all(|n| n.mesh.snapshot().ring_members == 2)
    })
    .await;
    for i in 0..N {
        nodes[0]
            .store
            .put_bytes(id("cas", &format!("k{i}")), data(i))
            .await
            .unwrap();
    }
    eventually("B has everything", DEADLINE, || async {
        nodes[1].store.stats().objects == N
    })
    .await;
    let b = &nodes[1];
    b.store.evict_to(b.store.stats().bytes / 2).await.unwrap();
    let held = b.store.stats().objects;
    assert!(held < N);
    let peer_of_b = |n: &Node| {
        n.mesh
            .snapshot()
            .peers
            .into_iter()
            .find(|p| p.member && !p.is_self)
            .unwrap()
    };
    let before = peer_of_b(b);
    // Wait for at least three more completed passes in each direction.
    eventually("three anti-entropy passes", DEADLINE, || async {
        peer_of_b(b).repairs >= before.repairs + 3
            && peer_of_b(&nodes[0]).repairs >= before.repairs + 3
    })
    .await;
    let after = peer_of_b(b);
    assert_eq!(
        after.repair_bytes, before.repair_bytes,
        "B fetched data back"
    );
    assert_eq!(after.repair_objects, before.repair_objects);
    assert_eq!(b.store.stats().objects, held);
    assert_eq!(nodes[0].store.stats().objects, N);
    assert_eq!(root(&nodes[0].store, "cas"), root(&b.store, "cas"));
    for n in nodes {
        n.stop().await;
    }
}
