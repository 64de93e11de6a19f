//! The merge laws, end to end: three stores take random writes, deletes and namespace
//! deletes; their change feeds are delivered to each other in random order with
//! duplicates and losses; then pull repair over real mTLS runs between every pair.
//! Stores also evict (everything, at random points, and some just before repair), which
//! turns objects into ghosts. Every replica's summary must end in the same state, and that
//! state must be the last-writer-wins join of every original write
//! (`kura_store::merge::State`): nothing resurrected, whatever the delivery; a replica
//! holds an object only at its winning version, and every winning object that was never
//! evicted anywhere is held everywhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop,
    missing_docs
)]

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use kura_mesh::repair::{self, RepairContext};
use kura_mesh::{ClientOptions, PeerClient, PeerService, TlsState, TokenBucket};
use kura_store::merge::{Entry, Payload, State};
use kura_store::{
    Account, MemBackend, NamespaceId, NodeId, ObjectId, ReplicatedRecord, Store, body_from_bytes,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8, u8),
    Delete(u8, u8),
    DeleteNs(u8),
    Evict,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..2, 0u8..3, any::<u8>()).prop_map(|(n, k, v)| Op::Put(n, k, v)),
        2 => (0u8..2, 0u8..3).prop_map(|(n, k)| Op::Delete(n, k)),
        1 => (0u8..2).prop_map(Op::DeleteNs),
        1 => Just(Op::Evict),
    ]
}

fn oid(n: u8, k: u8) -> ObjectId {
    ObjectId::parse(ACCOUNT, &format!("n{n}"), &format!("k{k}")).unwrap()
}

fn tls() -> Arc<TlsState> {
    static PKI: OnceLock<Arc<TlsState>> = OnceLock::new();
    PKI.get_or_init(|| Pki::new(ACCOUNT).tls("node")).clone()
}

async fn apply_op(s: &Store, op: &Op) {
    match op {
        Op::Put(n, k, v) => {
            s.put_bytes(oid(*n, *k), vec![*v; 1 + (*v as usize % 7)])
                .await
                .unwrap();
        }
        Op::Delete(n, k) => {
            s.delete(&oid(*n, *k)).await.unwrap();
        }
        Op::DeleteNs(n) => {
            s.delete_namespace(&oid(*n, 0).namespace_id())
                .await
                .unwrap();
        }
        Op::Evict => {
            s.evict_to(0).await.unwrap();
        }
    }
}

async fn deliver(src: &Store, dst: &Store, rec: &ReplicatedRecord) {
    match rec {
        ReplicatedRecord::Put { id, version, .. } => {
            // What the outbox does: only the current copy travels.
            let Some(o) = src.get(id).await.unwrap() else {
                return;
            };
            if o.meta().version != *version {
                return;
            }
            let bytes = o.read_all().await.unwrap();
            dst.apply_replicated(rec.clone(), Some(Box::pin(body_from_bytes(bytes))))
                .await
                .unwrap();
        }
        _ => {
            dst.apply_replicated(rec.clone(), None).await.unwrap();
        }
    }
}

fn model(origin: &[Vec<ReplicatedRecord>]) -> State<String, String> {
    let mut m = State::default();
    for recs in origin {
        for r in recs {
            match r {
                ReplicatedRecord::Put {
                    id,
                    version,
                    digest,
                    ..
                } => {
                    m.apply(
                        id.namespace.to_string(),
                        id.key.to_string(),
                        Entry {
                            version: *version,
                            payload: Payload::Present(*digest),
                        },
                    );
                }
                ReplicatedRecord::Delete { id, version } => {
                    m.apply(
                        id.namespace.to_string(),
                        id.key.to_string(),
                        Entry {
                            version: *version,
                            payload: Payload::Deleted,
                        },
                    );
                }
                ReplicatedRecord::DeleteNamespace { namespace, version } => {
                    m.delete_namespace(namespace.namespace.to_string(), *version);
                }
            }
        }
    }
    m
}

async fn run_case(
    ops: Vec<Vec<Op>>,
    deliveries: Vec<Vec<prop::sample::Index>>,
    evict_before_repair: Vec<bool>,
) {
    let mut stores = Vec::new();
    for i in 0..3u64 {
        let mut cfg = kura_store::Config::default();
        cfg.node = NodeId(i + 1);
        stores.push(Store::open(MemBackend::default(), cfg).await.unwrap());
    }
    for (s, ops) in stores.iter().zip(&ops) {
        for o in ops {
            apply_op(s, o).await;
        }
    }
    // Each store's own records (before any replication).
    let mut origin = Vec::new();
    for s in &stores {
        origin.push(
            s.changes_since(0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|c| c.record)
                .collect::<Vec<_>>(),
        );
    }
    // Random order, duplicates and losses.
    let mut d = deliveries.into_iter();
    for src in 0..3 {
        for dst in 0..3 {
            if src == dst {
                continue;
            }
            let picks = d.next().unwrap_or_default();
            if origin[src].is_empty() {
                continue;
            }
            for ix in picks {
                let rec = ix.get(&origin[src]);
                deliver(&stores[src], &stores[dst], rec).await;
            }
        }
    }
    for (s, evict) in stores.iter().zip(&evict_before_repair) {
        if *evict {
            s.evict_to(0).await.unwrap();
        }
    }
    let evicted_anywhere = ops.iter().flatten().any(|o| matches!(o, Op::Evict))
        || evict_before_repair.iter().any(|e| *e);
    // Pull repair between every pair, twice, over mTLS.
    let tls = tls();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::new();
    for s in &stores {
        let l = listener().await;
        addrs.push(l.local_addr().unwrap().to_string());
        let svc = Arc::new(PeerService::new(
            s.clone(),
            Account::new(ACCOUNT).unwrap(),
            "r",
            "",
            1 << 20,
            Duration::from_secs(5),
            Arc::new(TokenBucket::new(0)),
        ));
        let mut rx = rx.clone();
        tokio::spawn(kura_mesh::server::serve(l, tls.clone(), svc, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
    }
    let account = Account::new(ACCOUNT).unwrap();
    let transfers = tokio::sync::Semaphore::new(4);
    for _round in 0..2 {
        for dst in 0..3 {
            for src in 0..3 {
                if src == dst {
                    continue;
                }
                let client =
                    PeerClient::new(addrs[src].clone(), tls.clone(), ClientOptions::default());
                let status = client.status().await.unwrap();
                let ctx = RepairContext {
                    store: &stores[dst],
                    account: &account,
                    limiters: vec![],
                    transfers: &transfers,
                    push: false,
                };
                repair::pull(&ctx, &client, &status).await.unwrap();
            }
        }
    }
    let _ = tx.send(true);
    // Every replica equals the model.
    let m = model(&origin);
    for s in &stores {
        for n in 0..2u8 {
            let ns = format!("n{n}");
            let tomb = s.namespace_tombstone(&oid(n, 0).namespace_id()).unwrap();
            assert_eq!(
                tomb,
                m.namespaces.get(&ns).copied(),
                "namespace tombstone of {ns} on {}",
                s.node()
            );
            for k in 0..3u8 {
                let head = s.head(&oid(n, k)).unwrap();
                let want = m.entries.get(&(ns.clone(), format!("k{k}")));
                match want {
                    Some(Entry {
                        version,
                        payload: Payload::Present(d),
                    }) => {
                        // Without eviction every winning object is held everywhere; with
                        // it a replica may know it only as a ghost.
                        if head.is_none() && evicted_anywhere {
                            continue;
                        }
                        let h = head.unwrap_or_else(|| panic!("n{n}/k{k} lost on {}", s.node()));
                        assert_eq!(
                            (h.version, h.digest),
                            (*version, *d),
                            "n{n}/k{k} on {}",
                            s.node()
                        );
                    }
                    _ => assert!(
                        head.is_none(),
                        "n{n}/k{k} resurrected on {}: {head:?}",
                        s.node()
                    ),
                }
            }
        }
    }
    for n in 0..2u8 {
        let ns: NamespaceId = oid(n, 0).namespace_id();
        let roots: Vec<_> = stores
            .iter()
            .map(|s| s.summary_node(&ns, 0, 0).unwrap())
            .collect();
        assert!(
            roots.iter().all(|r| *r == roots[0]),
            "summary roots differ for n{n}"
        );
        // The summary is the LWW join, ghosts included.
        for s in &stores {
            for k in 0..3u8 {
                let key = oid(n, k).key;
                let leaf = kura_store::summary::leaf_of(&key);
                let got = s
                    .summary_bucket(&ns, leaf)
                    .unwrap()
                    .into_iter()
                    .find(|e| e.key == key)
                    .map(|e| e.entry());
                let want = m.entries.get(&(format!("n{n}"), format!("k{k}"))).copied();
                assert_eq!(got, want, "summary entry n{n}/k{k} on {}", s.node());
            }
        }
    }
    for s in &stores {
        s.verify_summary().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn replicas_converge_to_the_lww_join_under_reordering_duplication_and_loss(
        ops in proptest::collection::vec(proptest::collection::vec(op(), 0..10), 3),
        deliveries in proptest::collection::vec(proptest::collection::vec(any::<prop::sample::Index>(), 0..16), 6),
        evict_before_repair in proptest::collection::vec(proptest::bool::weighted(0.25), 3),
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run_case(ops, deliveries, evict_before_repair));
    }
}
