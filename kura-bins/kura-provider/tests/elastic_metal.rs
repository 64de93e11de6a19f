//! ScalewayElasticMetalMachine against the simulator on a virtual clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod support;

use http::Method;
use kura_provider::PN_IPV4_LABEL;
use kura_provider::crd::ElasticMetalPhase;
use kura_scaleway::sim::BillableKind;
use support::{Harness, NS, ready_elastic_metal};

#[tokio::test]
async fn elastic_metal_happy_path_from_empty_to_ready_and_back_to_nothing() {
    let h = Harness::new().await;
    h.add_elastic_metal_machine("metal-0");
    let steps = h
        .drive_elastic_metal("metal-0", 300, ready_elastic_metal)
        .await;
    println!(
        "elastic metal: Ready after {steps} reconciliations, {:?} virtual time",
        h.sim.now()
    );

    let m = h.kube.elastic_metal_machine(NS, "metal-0").unwrap();
    let st = m.status.clone().unwrap();
    assert_eq!(st.phase, ElasticMetalPhase::Ready);
    let id = st.server_id.clone().unwrap();
    assert_eq!(
        m.spec.provider_id.as_deref(),
        Some(format!("scaleway://baremetal/fr-par-1/{id}").as_str())
    );
    let vlan = st.private_network_vlan.unwrap();
    assert_ne!(vlan, 0);
    assert!(st.bootstrapped);
    // Option enabled before the attachment, attached once.
    let reqs = h.sim.requests();
    let option_at = reqs
        .iter()
        .position(|r| r.method == Method::POST && r.path.contains("/options/"))
        .unwrap();
    let attach_at = reqs
        .iter()
        .position(|r| {
            r.method == Method::POST
                && r.path.ends_with("/private-networks")
                && r.path.contains("/baremetal/")
        })
        .unwrap();
    assert!(option_at < attach_at);
    assert_eq!(attaches(&h), 1);
    // The self-join script configured pn0 with the VLAN and the PN address.
    let runs = h.ssh.runs();
    assert_eq!(runs.len(), 1);
    let ip = h.ipam_ipv4("metal-0").await.unwrap();
    let script = &runs[0].1;
    let pn0 = decode_file(script, "/usr/local/sbin/kura-pn0.sh");
    assert!(pn0.contains(&format!("type vlan id {vlan}")), "{pn0}");
    assert!(
        pn0.contains(&format!("ip addr replace {ip}/22 dev pn0")),
        "{pn0}"
    );
    let unit = decode_file(script, "/etc/systemd/system/kubelet.service");
    assert!(unit.contains(&format!("--node-ip={ip}")));
    assert!(unit.contains("--register-with-taints=tuist.dev/runner-cache=true:NoSchedule"));
    let node = h.kube.node("metal-0").unwrap();
    assert_eq!(node.labels.get(PN_IPV4_LABEL), Some(&ip.to_string()));
    assert_eq!(node.provider_id, m.spec.provider_id);

    assert!(
        h.kube
            .delete_elastic_metal_machine(NS, "metal-0", &h.now_rfc3339())
    );
    h.drive_elastic_metal("metal-0", 100, |m| m.is_none()).await;
    assert!(h.live_billables().is_empty(), "{:?}", h.live_billables());
    assert_eq!(
        h.sim
            .ledger()
            .created_of(BillableKind::ElasticMetalServer)
            .len(),
        1
    );
    assert_eq!(h.kube.secret_count(), 0);
}

fn attaches(h: &Harness) -> usize {
    h.sim
        .requests()
        .iter()
        .filter(|r| {
            r.method == Method::POST
                && r.path.contains("/baremetal/")
                && r.path.ends_with("/private-networks")
                && (200..300).contains(&r.status)
        })
        .count()
}

/// Extracts a file written by the SSH script (`printf '%s' 'B64' | base64 -d > PATH`).
pub fn decode_file(script: &str, path: &str) -> String {
    use base64::Engine as _;
    let line = script
        .lines()
        .find(|l| l.ends_with(&format!("> {path}")))
        .unwrap_or_else(|| panic!("{path} not written"));
    let b64 = line.split('\'').nth(3).unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// An install that ends in error moves the machine to Failed; the retry
/// after the backoff reinstalls, without ordering a second server.
#[tokio::test]
async fn install_error_fails_then_retries_with_a_reinstall() {
    let h = Harness::new().await;
    h.sim.fail_next_baremetal_installs(1);
    h.add_elastic_metal_machine("metal-1");
    h.drive_elastic_metal("metal-1", 300, |m| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| s.phase == ElasticMetalPhase::Failed)
    })
    .await;
    let st = h
        .kube
        .elastic_metal_machine(NS, "metal-1")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.failure_reason.as_deref(), Some("InstallFailed"));
    assert_eq!(st.failure_attempts, 1);
    assert!(st.next_retry_at.is_some());
    h.drive_elastic_metal("metal-1", 300, ready_elastic_metal)
        .await;
    assert_eq!(h.sim.count_requests(&Method::POST, "/install"), 1);
    assert_eq!(
        h.sim
            .ledger()
            .created_of(BillableKind::ElasticMetalServer)
            .len(),
        1
    );
    let st = h
        .kube
        .elastic_metal_machine(NS, "metal-1")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.failure_attempts, 0);
}

#[tokio::test]
async fn elastic_metal_restart_mid_provisioning_converges_without_a_second_order() {
    let mut h = Harness::new().await;
    h.add_elastic_metal_machine("metal-2");
    h.drive_elastic_metal("metal-2", 300, |m| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| s.phase == ElasticMetalPhase::Installing)
    })
    .await;
    h.restart();
    h.drive_elastic_metal("metal-2", 300, |m| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| s.private_network_vlan.is_some())
    })
    .await;
    h.restart();
    h.drive_elastic_metal("metal-2", 300, ready_elastic_metal)
        .await;
    assert_eq!(
        h.sim
            .ledger()
            .created_of(BillableKind::ElasticMetalServer)
            .len(),
        1
    );
    assert_eq!(attaches(&h), 1);
}

/// A failed SSH self-join is retried (and reported), not a dead end.
#[tokio::test]
async fn self_join_failure_is_retried() {
    let h = Harness::new().await;
    h.ssh.fail_next(2);
    h.add_elastic_metal_machine("metal-3");
    h.drive_elastic_metal("metal-3", 300, ready_elastic_metal)
        .await;
    assert_eq!(h.ssh.runs().len(), 1);
    assert_eq!(
        h.kube
            .events()
            .iter()
            .filter(|e| e.reason == "SelfJoinFailed")
            .count(),
        2
    );
}
