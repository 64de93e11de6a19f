//! Several real `kurad` processes on loopback replicating over mTLS with leaves
//! from one account CA: writes on one node are readable on the others for every
//! protocol family, a SIGKILLed node converges after restart, a late joiner gets
//! the existing data, a deleted namespace is never resurrected, and the peer API
//! is not reachable on the public port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod mesh_support;

use std::time::Duration;

use mesh_support::{Daemon, NodeSpec, Pki, free_port, get, start, up};

const DEADLINE: Duration = Duration::from_secs(60);

async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    mesh_support::eventually(what, DEADLINE, cond).await;
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kurad_processes_replicate_restart_join_and_never_resurrect() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new("acme");
    let specs: Vec<NodeSpec> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            let tls = root.path().join(n).join("tls");
            pki.write_leaf(n, &tls);
            NodeSpec {
                data: root.path().join(n).join("data"),
                tls,
                ip: "127.0.0.1".into(),
                port: 0,
                internal_port: free_port(),
                wrapper: Vec::new(),
                env: Vec::new(),
            }
        })
        .collect();
    let urls: Vec<String> = specs[..3].iter().map(NodeSpec::url).collect();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut nodes: Vec<Daemon> = specs[..3]
        .iter()
        .map(|s| start(s, &pki.service, &urls))
        .collect();

    for n in &nodes {
        eventually("ring of three", || async {
            up(&c, n).await["ring_members"] == 3
        })
        .await;
    }
    let rollout: serde_json::Value = c
        .get(format!("{}/status/rollout", nodes[0].base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rollout["ring_members"], 3);
    assert!(rollout["state"] == "serving" || rollout["state"] == "joining");

    // Every protocol family, written on A.
    let blob = b"bazel blob".to_vec();
    let hash = sha256_hex(&blob);
    let writes: Vec<(String, Vec<u8>)> = vec![
        ("/cache/gradle-key".into(), b"gradle entry".to_vec()),
        (format!("/bazel/cas/{hash}"), blob.clone()),
        ("/ccache/ab/cdef".into(), b"ccache entry".to_vec()),
        ("/v1/cache/nxhash".into(), b"nx entry".to_vec()),
        ("/ns/proj/cache/doomed".into(), b"to be deleted".to_vec()),
    ];
    for (path, body) in &writes {
        let r = c
            .put(format!("{}{path}", nodes[0].base))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    let r = c
        .post(format!(
            "{}/api/cache/cas/xcode1?tenant_id=acme&namespace_id=proj",
            nodes[0].base
        ))
        .body("xcode object")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    for n in &nodes[1..] {
        for (path, body) in &writes {
            let url = format!("{}{path}", n.base);
            eventually(&format!("{path} on {}", n.base), || async {
                get(&c, url.clone()).await.as_deref() == Some(body.as_slice())
            })
            .await;
        }
        let url = format!(
            "{}/api/cache/cas/xcode1?tenant_id=acme&namespace_id=proj",
            n.base
        );
        eventually("xcode object", || async {
            get(&c, url.clone()).await.is_some()
        })
        .await;
    }
    // The peer API is not served on the public port.
    let r = c
        .get(format!("{}/_internal/status", nodes[1].base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let up_b = up(&c, &nodes[1]).await;
    assert_eq!(up_b["connected_nodes"], 2, "{up_b}");
    assert!(up_b["outbox_messages"].is_u64());
    let metrics = c
        .get(format!("{}/metrics", nodes[0].base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "kura_replication_requests_total",
        "kura_outbox_messages",
        "kura_discovered_peer_nodes",
        "kura_repair_runs_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    // B is SIGKILLed while A keeps writing; it converges after restart.
    nodes[1].child.kill().unwrap();
    nodes[1].child.wait().unwrap();
    for i in 0..20 {
        let r = c
            .put(format!("{}/cache/while-down-{i}", nodes[0].base))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    // Namespace delete on C while B is down.
    let r = c
        .delete(format!(
            "{}/api/cache/clean?tenant_id=acme&namespace_id=proj",
            nodes[2].base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    nodes[1] = start(&specs[1], &pki.service, &urls);
    for i in [0, 19] {
        let url = format!("{}/cache/while-down-{i}", nodes[1].base);
        eventually("restarted B catches up", || async {
            get(&c, url.clone()).await.is_some()
        })
        .await;
    }
    // A late joiner D that knows only A.
    let d = start(&specs[3], &pki.service, &urls[..1]);
    for (path, body) in &writes[..4] {
        let url = format!("{}{path}", d.base);
        eventually(&format!("{path} on the late joiner"), || async {
            get(&c, url.clone()).await.as_deref() == Some(body.as_slice())
        })
        .await;
    }
    // Nothing of the deleted namespace anywhere — including B, which held it when it died.
    let all: Vec<&Daemon> = nodes.iter().chain(std::iter::once(&d)).collect();
    for n in &all {
        let url = format!("{}/ns/proj/cache/doomed", n.base);
        eventually("namespace deletion reaches every node", || async {
            get(&c, url.clone()).await.is_none()
        })
        .await;
    }
    // And it stays deleted after every node has repaired with every other.
    eventually("D repaired", || async {
        let u = up(&c, &d).await;
        u["nodes"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["repairs"].as_u64() > Some(0)))
    })
    .await;
    for n in &all {
        assert!(
            get(&c, format!("{}/ns/proj/cache/doomed", n.base))
                .await
                .is_none()
        );
        assert!(
            get(
                &c,
                format!(
                    "{}/api/cache/cas/xcode1?tenant_id=acme&namespace_id=proj",
                    n.base
                )
            )
            .await
            .is_none()
        );
    }
}
