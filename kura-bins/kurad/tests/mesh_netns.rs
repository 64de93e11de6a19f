//! A real network partition: three `kurad` processes in three network namespaces on
//! one bridge, an `iptables` DROP between two of them (inside one namespace), writes
//! on both sides, heal, convergence on all three.
//!
//! Needs root, `ip netns` and `iptables`: skipped with a message otherwise, but
//! fails when `CI` is set. Everything it creates (namespaces, bridge, veth pairs,
//! one FORWARD rule scoped to its bridge) has per-run names and is removed by a
//! guard, also on panic. The test only touches its own private subnet
//! (10.213.N.0/24).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    missing_docs
)]

mod mesh_support;

use std::process::Command;
use std::time::Duration;

use mesh_support::*;

const DEADLINE: Duration = Duration::from_secs(90);

/// What the test created; dropped → removed.
struct Net {
    tag: String,
    namespaces: Vec<String>,
    bridge: Option<String>,
    forward_rule: bool,
}

impl Net {
    fn ns(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    fn exec(&self, i: usize, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", self.ns(i)];
        args.extend_from_slice(cmd);
        must("ip", &args);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let quiet = |cmd: &str, args: &[&str]| {
            let _ = Command::new(cmd).args(args).output();
        };
        if self.forward_rule {
            if let Some(br) = &self.bridge {
                quiet(
                    "iptables",
                    &["-D", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"],
                );
            }
        }
        // Deleting a namespace deletes its veth end (and so the pair) and its rules.
        for ns in &self.namespaces {
            quiet("ip", &["netns", "del", ns]);
        }
        if let Some(br) = &self.bridge {
            quiet("ip", &["link", "del", br]);
        }
        eprintln!("network {} torn down", self.tag);
    }
}

fn missing_tools() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if uid != "0" {
        return Some(format!("needs root (uid {uid:?})"));
    }
    if !runs("ip", &["netns", "list"]) {
        return Some("`ip netns` is unavailable (apt package iproute2)".into());
    }
    if !runs("iptables", &["--version"]) {
        return Some("`iptables` is unavailable (apt package iptables)".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_partition_between_namespaces_then_heal_converges() {
    if !require("mesh_netns", missing_tools()) {
        return;
    }
    let pid = std::process::id();
    let tag = format!("k{pid}");
    // A /24 per run (by pid) inside 10.213.0.0/16, reserved for this test.
    let subnet = format!("10.213.{}", pid % 250 + 1);
    let mut net = Net {
        tag: tag.clone(),
        namespaces: Vec::new(),
        bridge: None,
        forward_rule: false,
    };
    let br = format!("{tag}br");
    must("ip", &["link", "add", &br, "type", "bridge"]);
    net.bridge = Some(br.clone());
    must(
        "ip",
        &["addr", "add", &format!("{subnet}.1/24"), "dev", &br],
    );
    must("ip", &["link", "set", &br, "up"]);
    // Bridged traffic may traverse the host's FORWARD chain (br_netfilter): let
    // ours through whatever the host policy is.
    must(
        "iptables",
        &["-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"],
    );
    net.forward_rule = true;
    let ips: Vec<String> = (2..5).map(|i| format!("{subnet}.{i}")).collect();
    for (i, ip) in ips.iter().enumerate() {
        let ns = format!("{tag}n{i}");
        must("ip", &["netns", "add", &ns]);
        net.namespaces.push(ns.clone());
        let host_end = format!("{tag}v{i}");
        must(
            "ip",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        must("ip", &["link", "set", &host_end, "master", &br]);
        must("ip", &["link", "set", &host_end, "up"]);
        net.exec(i, &["ip", "link", "set", "lo", "up"]);
        net.exec(
            i,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        net.exec(i, &["ip", "link", "set", "eth0", "up"]);
    }
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new("acme");
    let specs: Vec<NodeSpec> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let dir = root.path().join(format!("n{i}"));
            pki.write_leaf(&format!("n{i}"), &dir.join("tls"));
            NodeSpec {
                data: dir.join("data"),
                tls: dir.join("tls"),
                ip: ip.clone(),
                port: 4000,
                internal_port: 7443,
                wrapper: vec!["ip".into(), "netns".into(), "exec".into(), net.ns(i).into()],
                env: vec![
                    // Dropped packets leave connections half-open: the stall watchdog
                    // and the probes must notice within the test's deadline.
                    ("KURA_REPLICATION_STALL_TIMEOUT_SECS".into(), "2".into()),
                ],
            }
        })
        .collect();
    let urls: Vec<String> = specs.iter().map(NodeSpec::url).collect();
    let peer_addr = |i: usize| format!("{}:7443", ips[i]);
    let nodes: Vec<Daemon> = specs
        .iter()
        .map(|s| start(s, &pki.service, &urls))
        .collect();
    let c = client();
    for n in &nodes {
        eventually("ring of three", DEADLINE, || async {
            up(&c, n).await["ring_members"] == 3
        })
        .await;
    }
    put(&c, format!("{}/cache/before", nodes[0].base), "before").await;
    for n in &nodes {
        let url = format!("{}/cache/before", n.base);
        eventually("replicated before the partition", DEADLINE, || async {
            get(&c, url.clone()).await.as_deref() == Some(b"before".as_slice())
        })
        .await;
    }

    // Partition A (node 0) from B (node 1), inside A's namespace; C sees both.
    let (a_ip, b_ip) = (ips[0].as_str(), ips[1].as_str());
    net.exec(0, &["iptables", "-I", "INPUT", "-s", b_ip, "-j", "DROP"]);
    net.exec(0, &["iptables", "-I", "OUTPUT", "-d", b_ip, "-j", "DROP"]);
    eventually("A and B declare each other lost", DEADLINE, || async {
        let (ua, ub) = (up(&c, &nodes[0]).await, up(&c, &nodes[1]).await);
        !is_member(&ua, &peer_addr(1))
            && !is_member(&ub, &peer_addr(0))
            && is_member(&ua, &peer_addr(2))
            && is_member(&ub, &peer_addr(2))
    })
    .await;
    // The partition is real: B's public port is unreachable from A's namespace.
    let probe = Command::new("ip")
        .args(["netns", "exec", net.ns(0), "curl", "-sS", "-m", "2"])
        .arg(format!("http://{b_ip}:4000/up"))
        .output();
    if let Ok(o) = probe {
        assert!(
            !o.status.success(),
            "A still reaches B through the DROP rule"
        );
    }
    // Writes on both sides: distinct keys, and the same key on both (B last).
    for i in 0..10 {
        put(
            &c,
            format!("{}/cache/a-{i}", nodes[0].base),
            format!("a{i}"),
        )
        .await;
        put(
            &c,
            format!("{}/cache/b-{i}", nodes[1].base),
            format!("b{i}"),
        )
        .await;
    }
    put(
        &c,
        format!("{}/ccache/ab/contested", nodes[0].base),
        "from A",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await; // distinct HLC milliseconds
    put(
        &c,
        format!("{}/ccache/ab/contested", nodes[1].base),
        "from B",
    )
    .await;

    // Heal.
    net.exec(0, &["iptables", "-D", "INPUT", "-s", b_ip, "-j", "DROP"]);
    net.exec(0, &["iptables", "-D", "OUTPUT", "-d", b_ip, "-j", "DROP"]);
    let _ = a_ip;
    for n in &nodes {
        eventually("ring of three after heal", DEADLINE, || async {
            up(&c, n).await["ring_members"] == 3
        })
        .await;
    }
    for n in &nodes {
        for i in [0, 9] {
            for (side, v) in [("a", "a"), ("b", "b")] {
                let url = format!("{}/cache/{side}-{i}", n.base);
                let want = format!("{v}{i}");
                eventually(&format!("{side}-{i} on {}", n.base), DEADLINE, || async {
                    get(&c, url.clone()).await.as_deref() == Some(want.as_bytes())
                })
                .await;
            }
        }
        let url = format!("{}/ccache/ab/contested", n.base);
        eventually("the later write wins everywhere", DEADLINE, || async {
            get(&c, url.clone()).await.as_deref() == Some(b"from B".as_slice())
        })
        .await;
    }
    drop(nodes);
    drop(net);
}
