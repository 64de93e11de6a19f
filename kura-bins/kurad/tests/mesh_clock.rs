//! A node whose clock is an hour ahead cannot block others: three real `kurad`
//! processes, one run under libfaketime (`LD_PRELOAD` with `FAKETIME=+1h`, the
//! monotonic clock left alone so timers stay sane; not the `faketime` wrapper,
//! which forks and would leave `kurad` running when the test kills the wrapper). Its writes carry versions beyond the 60 s drift bound
//! and are refused (409) by the others, so they never shadow the others' later
//! writes; the normal nodes keep replicating among themselves, and their clocks are
//! not dragged forward.
//!
//! Needs libfaketime (apt package `faketime`; another location can be given in
//! `KURA_TEST_LIBFAKETIME`): skipped with a message when missing,
//! fails when `CI` is set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    missing_docs
)]

mod mesh_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_support::*;

const DEADLINE: Duration = Duration::from_secs(60);
const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The libfaketime shared object (multi-threaded variant not needed: kurad only
/// reads the clock).
fn libfaketime() -> Option<String> {
    let candidates = std::env::var("KURA_TEST_LIBFAKETIME").into_iter().chain(
        [
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib64/faketime/libfaketime.so.1",
            "/usr/lib/faketime/libfaketime.so.1",
            "/usr/local/lib/faketime/libfaketime.so.1",
        ]
        .map(String::from),
    );
    candidates
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

async fn hlc_skew_ms(client: &kura_mesh::PeerClient) -> i64 {
    let s = client.status().await.unwrap();
    kura_store::Hlc(s.hlc).physical_ms() as i64 - now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_an_hour_ahead_cannot_block_the_others() {
    let lib = libfaketime();
    let missing = lib
        .is_none()
        .then(|| "libfaketime is unavailable (apt package faketime)".to_owned());
    if !require("mesh_clock", missing) {
        return;
    }
    let lib = lib.unwrap();
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new("acme");
    let specs: Vec<NodeSpec> = ["a", "b", "fast"]
        .iter()
        .map(|n| {
            let dir = root.path().join(n);
            pki.write_leaf(n, &dir.join("tls"));
            let fast = *n == "fast";
            NodeSpec {
                data: dir.join("data"),
                tls: dir.join("tls"),
                ip: "127.0.0.1".into(),
                port: 0,
                internal_port: free_port(),
                wrapper: Vec::new(),
                env: if fast {
                    vec![
                        ("LD_PRELOAD".into(), lib.clone()),
                        ("FAKETIME".into(), "+1h".into()),
                        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
                    ]
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    let urls: Vec<String> = specs.iter().map(NodeSpec::url).collect();
    let nodes: Vec<Daemon> = specs
        .iter()
        .map(|s| start(s, &pki.service, &urls))
        .collect();
    let (a, b, fast) = (&nodes[0], &nodes[1], &nodes[2]);
    let c = client();
    for n in &nodes {
        eventually("ring of three", DEADLINE, || async {
            up(&c, n).await["ring_members"] == 3
        })
        .await;
    }
    let peer =
        |i: usize| pki.peer_client(&urls[i]["https://".len()..], &root.path().join("client"));
    let (pa, pb, pf) = (peer(0), peer(1), peer(2));
    // The faked clock is effective: the fast node's HLC is about an hour ahead.
    let skew = hlc_skew_ms(&pf).await;
    eprintln!("fast node's HLC is {skew} ms ahead");
    assert!(
        (HOUR_MS - 60_000..HOUR_MS + 60_000).contains(&skew),
        "faketime did not move the node's clock: HLC skew {skew} ms"
    );

    // The fast node writes first; its versions are an hour in the future.
    put(
        &c,
        format!("{}/ccache/ab/contested", fast.base),
        "from the fast node",
    )
    .await;
    put(&c, format!("{}/cache/fast-only", fast.base), "fast").await;
    // The others refuse them (409: beyond the drift bound).
    eventually(
        "A and B refused the fast node's pushes",
        DEADLINE,
        || async {
            let mut ok = true;
            for n in [a, b] {
                let m = c
                    .get(format!("{}/metrics", n.base))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                ok &= m.lines().any(|l| {
                    l.starts_with("kura_replication_received_total")
                        && l.contains("refused")
                        && l.split_whitespace()
                            .last()
                            .and_then(|v| v.parse::<f64>().ok())
                            .is_some_and(|v| v >= 2.0)
                });
            }
            ok
        },
    )
    .await;
    // Later writes by the normal nodes win on the normal nodes, and replicate (the
    // contested key is a ccache entry: a PUT replaces it).
    put(&c, format!("{}/ccache/ab/contested", a.base), "from A").await;
    put(&c, format!("{}/cache/from-b", b.base), "written on B").await;
    for n in [a, b] {
        let url = format!("{}/ccache/ab/contested", n.base);
        eventually(
            "A's later write is what A and B serve",
            DEADLINE,
            || async { get(&c, url.clone()).await.as_deref() == Some(b"from A".as_slice()) },
        )
        .await;
    }
    let url = format!("{}/cache/from-b", a.base);
    eventually("B's write reaches A", DEADLINE, || async {
        get(&c, url.clone()).await.as_deref() == Some(b"written on B".as_slice())
    })
    .await;
    // A second round, now that every node has repaired with every other: the fast
    // node's data still shadows nothing and never arrived.
    for n in [a, b] {
        eventually("repaired with every member", DEADLINE, || async {
            up(&c, n).await["nodes"].as_array().is_some_and(|ps| {
                ps.iter()
                    .filter(|p| p["repairs"].as_u64() > Some(0))
                    .count()
                    == 2
            })
        })
        .await;
    }
    // The fast clock did not drag the others' clocks forward.
    for p in [&pa, &pb] {
        let s = hlc_skew_ms(p).await;
        assert!(s.abs() < 60_000, "a normal node's HLC moved by {s} ms");
    }
    put(&c, format!("{}/ccache/ab/contested", b.base), "from B").await;
    for n in [a, b] {
        let url = format!("{}/ccache/ab/contested", n.base);
        eventually("B's later write wins on A and B", DEADLINE, || async {
            get(&c, url.clone()).await.as_deref() == Some(b"from B".as_slice())
        })
        .await;
        assert!(
            get(&c, format!("{}/cache/fast-only", n.base))
                .await
                .is_none()
        );
        assert_eq!(up(&c, n).await["ring_members"], 3);
    }
    for p in [&pa, &pb] {
        let s = hlc_skew_ms(p).await;
        assert!(s.abs() < 60_000, "a normal node's HLC moved by {s} ms");
    }
}
