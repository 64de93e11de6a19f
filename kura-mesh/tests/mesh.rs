//! Two- and three-node meshes over real mTLS on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use kura_mesh::{ClientOptions, PeerClient, TlsState};
use kura_store::{NamespaceId, ObjectId};

const DEADLINE: Duration = Duration::from_secs(30);

fn id(ns: &str, key: &str) -> ObjectId {
    ObjectId::parse(ACCOUNT, ns, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_on_a_is_pushed_to_b_and_c() {
    let pki = Pki::new(ACCOUNT);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ls = [listener().await, listener().await, listener().await];
    let urls: Vec<_> = ls
        .iter()
        .map(|l| {
            kura_mesh::PeerUrl::parse(&format!("https://{}", l.local_addr().unwrap())).unwrap()
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let store = open_store(dirs[i].path(), i as u64 + 1).await;
        // Every node gets every URL, itself included: self is detected by node id.
        nodes.push(
            start_node(
                &pki,
                store,
                dirs[i].path().to_owned(),
                l,
                urls.clone(),
                |_| {},
            )
            .await,
        );
    }
    eventually("ring of three", DEADLINE, || async {
        nodes.iter().all(|n| n.mesh.snapshot().ring_members == 3)
    })
    .await;
    let x = id("cas", "hello");
    nodes[0]
        .store
        .put_bytes(x.clone(), "hello world")
        .await
        .unwrap();
    for n in &nodes[1..] {
        eventually("object on the other nodes", DEADLINE, || async {
            read(&n.store, &x).await.as_deref() == Some(b"hello world".as_slice())
        })
        .await;
    }
    // Same version everywhere.
    let v = nodes[0].store.head(&x).unwrap().unwrap().version;
    for n in &nodes {
        assert_eq!(n.store.head(&x).unwrap().unwrap().version, v);
    }
    // A large object (several chunks) goes through the streamed push.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let y = id("gradle", "big");
    nodes[2]
        .store
        .put_bytes(y.clone(), big.clone())
        .await
        .unwrap();
    for n in &nodes[..2] {
        eventually("big object", DEADLINE, || async {
            read(&n.store, &y).await.as_deref() == Some(big.as_slice())
        })
        .await;
    }
    // Concurrent conflicting writes converge to one value everywhere.
    let z = id("kv", "conflict");
    let (r1, r2) = tokio::join!(
        nodes[0].store.put_bytes(z.clone(), "from-a"),
        nodes[1].store.put_bytes(z.clone(), "from-b")
    );
    r1.unwrap();
    r2.unwrap();
    eventually("conflict converges", DEADLINE, || async {
        let mut vals = Vec::new();
        for n in &nodes {
            vals.push(read(&n.store, &z).await);
        }
        vals.iter().all(|v| v.is_some() && *v == vals[0])
    })
    .await;
    let snap = nodes[1].mesh.snapshot();
    assert!(snap.pushes_received >= 2, "{snap:?}");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_joiner_and_restarted_node_catch_up_by_repair_without_resurrection() {
    let pki = Pki::new(ACCOUNT);
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (la, lb) = (listener().await, listener().await);
    let (ua, ub) = (
        kura_mesh::PeerUrl::parse(&format!("https://{}", la.local_addr().unwrap())).unwrap(),
        kura_mesh::PeerUrl::parse(&format!("https://{}", lb.local_addr().unwrap())).unwrap(),
    );
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![ub.clone()],
        |_| {},
    )
    .await;
    let b_addr = lb.local_addr().unwrap();
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![ua.clone()],
        |_| {},
    )
    .await;
    // Data in two namespaces, replicated to B.
    for i in 0..50 {
        a.store
            .put_bytes(id("keep", &format!("k{i}")), format!("v{i}"))
            .await
            .unwrap();
        a.store
            .put_bytes(id("doomed", &format!("k{i}")), format!("d{i}"))
            .await
            .unwrap();
    }
    eventually("B has everything", DEADLINE, || async {
        read(&b.store, &id("doomed", "k49")).await.is_some()
            && read(&b.store, &id("keep", "k49")).await.is_some()
    })
    .await;
    // B goes down; A deletes a namespace and writes more.
    let (b_store, _) = b.stop().await;
    a.store
        .delete_namespace(&NamespaceId::new(
            id("doomed", "x").account,
            id("doomed", "x").namespace,
        ))
        .await
        .unwrap();
    for i in 50..80 {
        a.store
            .put_bytes(id("keep", &format!("k{i}")), format!("v{i}"))
            .await
            .unwrap();
    }
    // B restarts (same store, same address) and C joins late, knowing A and B
    // (neither knows C: C catches up purely by pulling).
    let lb = tokio::net::TcpListener::bind(b_addr).await.unwrap();
    let b = start_node(
        &pki,
        b_store,
        db.path().into(),
        lb,
        vec![ua.clone()],
        |_| {},
    )
    .await;
    let lc = listener().await;
    let c = start_node(
        &pki,
        open_store(dc.path(), 3).await,
        dc.path().into(),
        lc,
        vec![ua.clone(), ub.clone()],
        |_| {},
    )
    .await;
    for n in [&b, &c] {
        eventually("restarted / joining node catches up", DEADLINE, || async {
            read(&n.store, &id("keep", "k79")).await.is_some()
                && read(&n.store, &id("keep", "k0")).await.is_some()
                && read(&n.store, &id("doomed", "k0")).await.is_none()
                && read(&n.store, &id("doomed", "k49")).await.is_none()
        })
        .await;
    }
    // Give C time to have pulled from B too, then check no resurrection anywhere.
    eventually("C repaired from B", DEADLINE, || async {
        c.mesh.snapshot().peers.iter().all(|p| p.repairs > 0)
    })
    .await;
    for n in [&a, &b, &c] {
        for i in 0..50 {
            assert!(
                read(&n.store, &id("doomed", &format!("k{i}")))
                    .await
                    .is_none()
            );
        }
    }
    // Repair moved about the difference: B fetched the 30 new objects, not the 50 it had.
    let snap = b.mesh.snapshot();
    let fetched: u64 = snap.peers.iter().map(|p| p.repair_objects).sum();
    let pushed_to_b = a
        .mesh
        .snapshot()
        .peers
        .iter()
        .map(|p| p.pushed)
        .sum::<u64>();
    assert!(
        fetched <= 30,
        "B fetched {fetched} objects (pushes seen: {pushed_to_b})"
    );
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_leaf_is_refused_at_the_handshake() {
    let pki = Pki::new(ACCOUNT);
    let other = Pki::new("mallory");
    let d = tempfile::tempdir().unwrap();
    let l = listener().await;
    let node = start_node(
        &pki,
        open_store(d.path(), 1).await,
        d.path().into(),
        l,
        vec![],
        |_| {},
    )
    .await;
    let addr = node.addr.to_string();

    // 1. A client of another account does not trust our server: the handshake fails
    //    on its side with an unknown-issuer certificate error.
    let client = PeerClient::new(addr.clone(), other.tls("m1"), ClientOptions::default());
    let err = client.status().await.unwrap_err();
    let tls = err
        .tls_error()
        .unwrap_or_else(|| panic!("not a TLS error: {err:?}"));
    assert!(
        matches!(
            tls,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{tls:?}"
    );

    // 2. A client trusting our CA but presenting another account's leaf: our server
    //    refuses its certificate, nothing is served and the failure is counted.
    let (ca, _, _) = pki.leaf("x");
    let (_, cert, key) = other.leaf("m2");
    let forged = Arc::new(TlsState::from_pem(&ca, &cert, &key, &pki.service).unwrap());
    let client = PeerClient::new(addr.clone(), forged, ClientOptions::default());
    let err = client.status().await.unwrap_err();
    assert!(!matches!(err, kura_mesh::Error::Status { .. }), "{err:?}");
    eventually("server counted the refused handshake", DEADLINE, || async {
        node.mesh.snapshot().handshake_failures >= 2
    })
    .await;

    // 3. The right leaf works, and the server name checked is the Service name even
    //    though we dialled 127.0.0.1.
    let client = PeerClient::new(addr.clone(), pki.tls("ok"), ClientOptions::default());
    let st = client.status().await.unwrap();
    assert_eq!(st.account, ACCOUNT);
    assert_eq!(st.node_id, 1);

    // 4. A node of another account that has us as a seed announces itself with
    //    every probe, but its handshakes fail: it never becomes a known peer.
    let dm = tempfile::tempdir().unwrap();
    let before = node.mesh.snapshot().handshake_failures;
    let intruder = start_node(
        &other,
        open_store(dm.path(), 7).await,
        dm.path().into(),
        listener().await,
        vec![kura_mesh::PeerUrl::parse(&format!("https://{addr}")).unwrap()],
        |_| {},
    )
    .await;
    eventually("the intruder's probes were refused", DEADLINE, || async {
        node.mesh.snapshot().handshake_failures >= before + 3
    })
    .await;
    let s = node.mesh.snapshot();
    assert!(s.peers.is_empty() && s.ring_members == 1, "{s:?}");
    intruder.stop().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dials_us_over_mtls_becomes_a_known_peer() {
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let la = listener().await;
    let ua = kura_mesh::PeerUrl::parse(&format!("https://{}", la.local_addr().unwrap())).unwrap();
    // A has no seeds; B knows A.
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![],
        |_| {},
    )
    .await;
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        listener().await,
        vec![ua],
        |_| {},
    )
    .await;
    let b_addr = b.addr.to_string();
    eventually(
        "A learned B from its probes and made it a member",
        DEADLINE,
        || async {
            let s = a.mesh.snapshot();
            s.ring_members == 2
                && s.peers
                    .iter()
                    .any(|p| p.addr == b_addr && p.member && p.node_id == Some(2))
        },
    )
    .await;
    // A pushes to B now (without it, B would only get A's later writes at the next
    // anti-entropy pass, minutes away).
    let x = id("cas", "pushed-to-a-learned-peer");
    a.store.put_bytes(x.clone(), "hello B").await.unwrap();
    eventually("A's write pushed to B", DEADLINE, || async {
        read(&b.store, &x).await.as_deref() == Some(b"hello B".as_slice())
    })
    .await;
    let pushed = a
        .mesh
        .snapshot()
        .peers
        .iter()
        .map(|p| p.pushed)
        .sum::<u64>();
    assert!(pushed >= 1);
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_push_is_answered_without_reading_the_body_and_foreign_records_are_refused() {
    let pki = Pki::new(ACCOUNT);
    let d = tempfile::tempdir().unwrap();
    let node = start_node(
        &pki,
        open_store(d.path(), 1).await,
        d.path().into(),
        listener().await,
        vec![],
        |c| {
            c.max_object_bytes = 1000;
        },
    )
    .await;
    let x = id("cas", "k");
    let meta = node.store.put_bytes(x.clone(), "current").await.unwrap();
    let client = PeerClient::new(
        node.addr.to_string(),
        pki.tls("c"),
        ClientOptions::default(),
    );
    // An older version of the same key: refused as stale before the body is read.
    // The body here is an object that fails if read (we pass a reader of another store
    // object that was deleted… simpler: the receiving counters say "stale").
    let older = kura_store::ReplicatedRecord::Put {
        id: x.clone(),
        version: kura_store::Version::new(kura_store::Hlc(1), kura_store::NodeId(9)),
        content_type: String::new(),
        len: 5,
        digest: kura_store::Digest::of(b"older"),
        refs: vec![],
    };
    let out = client
        .push(
            &older,
            None,
            vec![],
            Arc::new(kura_mesh::transfer::Progress::default()),
        )
        .await
        .unwrap();
    assert!(!out.applied);
    assert_eq!(node.mesh.snapshot().pushes_stale, 1);
    assert_eq!(node.store.head(&x).unwrap().unwrap().version, meta.version);
    // Too large: 413 before reading.
    let big = kura_store::ReplicatedRecord::Put {
        id: id("cas", "big"),
        version: kura_store::Version::new(node.store.now(), kura_store::NodeId(9)),
        content_type: String::new(),
        len: 1001,
        digest: kura_store::Digest::of(b""),
        refs: vec![],
    };
    let err = client
        .push(
            &big,
            None,
            vec![],
            Arc::new(kura_mesh::transfer::Progress::default()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kura_mesh::Error::Status { status: 413, .. }),
        "{err:?}"
    );
    // Another account's record: 403.
    let foreign = kura_store::ReplicatedRecord::Delete {
        id: ObjectId::parse("mallory", "cas", "k").unwrap(),
        version: kura_store::Version::new(node.store.now(), kura_store::NodeId(9)),
    };
    let err = client
        .push(
            &foreign,
            None,
            vec![],
            Arc::new(kura_mesh::transfer::Progress::default()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kura_mesh::Error::Status { status: 403, .. }),
        "{err:?}"
    );
    // A clock an hour ahead cannot write (HLC drift bound): 409, and nothing changed.
    let ahead = kura_store::ReplicatedRecord::Delete {
        id: x.clone(),
        version: kura_store::Version::new(
            kura_store::Hlc::new(node.store.now().physical_ms() + 3_600_000, 0),
            kura_store::NodeId(9),
        ),
    };
    let err = client
        .push(
            &ahead,
            None,
            vec![],
            Arc::new(kura_mesh::transfer::Progress::default()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kura_mesh::Error::Status { status: 409, .. }),
        "{err:?}"
    );
    assert!(node.store.head(&x).unwrap().is_some());
    // A put without its body is refused (length mismatch), not applied.
    let newer = kura_store::ReplicatedRecord::Put {
        id: x.clone(),
        version: kura_store::Version::new(node.store.now(), kura_store::NodeId(9)),
        content_type: String::new(),
        len: 5,
        digest: kura_store::Digest::of(b"newer"),
        refs: vec![],
    };
    let err = client
        .push(
            &newer,
            None,
            vec![],
            Arc::new(kura_mesh::transfer::Progress::default()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kura_mesh::Error::Status { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(read(&node.store, &x).await.unwrap(), b"current");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_keeps_the_outbox_bounded() {
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lb = listener().await;
    let ub = kura_mesh::PeerUrl::parse(&format!("https://{}", lb.local_addr().unwrap())).unwrap();
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        listener().await,
        vec![ub],
        |c| {
            c.outbox.max_messages = 20;
        },
    )
    .await;
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![],
        |_| {},
    )
    .await;
    eventually("A sees B", DEADLINE, || async {
        a.mesh.snapshot().ring_members == 2
    })
    .await;
    b.stop().await; // B is gone for good.
    for i in 0..200 {
        a.store
            .put_bytes(id("cas", &format!("k{i}")), vec![1u8; 100])
            .await
            .unwrap();
    }
    eventually("overflow dropped the backlog", DEADLINE, || async {
        let s = a.mesh.snapshot();
        s.peers.iter().any(|p| p.overflows > 0 && p.ask_repair)
    })
    .await;
    let s = a.mesh.snapshot();
    assert!(s.outbox_depth <= 20, "{s:?}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_collected_once_every_peer_has_them_and_nothing_comes_back() {
    let pki = Pki::new(ACCOUNT);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (la, lb) = (listener().await, listener().await);
    let (ua, ub) = (
        kura_mesh::PeerUrl::parse(&format!("https://{}", la.local_addr().unwrap())).unwrap(),
        kura_mesh::PeerUrl::parse(&format!("https://{}", lb.local_addr().unwrap())).unwrap(),
    );
    let tweak = |c: &mut kura_mesh::MeshConfig| {
        c.tombstone_gc_horizon = Duration::from_millis(1);
        c.tombstone_gc_interval = Duration::from_millis(200);
    };
    let a = start_node(
        &pki,
        open_store(da.path(), 1).await,
        da.path().into(),
        la,
        vec![ub],
        tweak,
    )
    .await;
    let b = start_node(
        &pki,
        open_store(db.path(), 2).await,
        db.path().into(),
        lb,
        vec![ua],
        tweak,
    )
    .await;
    let x = id("proj", "k");
    a.store.put_bytes(x.clone(), "v").await.unwrap();
    eventually("replicated", DEADLINE, || async {
        read(&b.store, &x).await.is_some()
    })
    .await;
    a.store.delete_namespace(&x.namespace_id()).await.unwrap();
    eventually("tombstone collected on both sides", DEADLINE, || async {
        a.store.namespace_tombstones().unwrap().is_empty()
            && b.store.namespace_tombstones().unwrap().is_empty()
            && read(&b.store, &x).await.is_none()
    })
    .await;
    // A full repair pass afterwards brings nothing back.
    a.mesh.schedule_repair();
    b.mesh.schedule_repair();
    eventually("repairs done", DEADLINE, || async {
        [&a, &b].iter().all(|n| {
            n.mesh
                .snapshot()
                .peers
                .iter()
                .all(|p| !p.needs_repair && p.repairs >= 2)
        })
    })
    .await;
    assert!(read(&a.store, &x).await.is_none());
    assert!(read(&b.store, &x).await.is_none());
    for n in [a, b] {
        n.stop().await;
    }
}
