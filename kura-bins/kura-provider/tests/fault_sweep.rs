//! The fault sweep: for every Scaleway call index *i* of a full provision
//! run and of a full delete run, inject (a) an error response at *i* and
//! (b) "applied but response lost" at *i*. In every schedule the machine
//! converges with exactly one server ever ordered, the Private Network
//! attached once, the `tuist.dev/pn-ipv4` label stamped, and nothing left
//! in the billing ledger after the delete.
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
use kura_scaleway::sim::{BillableKind, Fault};
use support::{Harness, NS, ready_elastic_metal, ready_instance};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Error,
    Lost,
}

fn fault(i: u64, kind: Kind) -> Fault {
    match kind {
        Kind::Error => Fault::at_call(i).respond(
            503,
            r#"{"type":"unknown","message":"injected: service unavailable"}"#,
        ),
        Kind::Lost => Fault::at_call(i).drop_response(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Provision,
    Delete,
}

async fn instance_schedule(name: &str, at: Option<(Phase, u64, Kind)>) -> (usize, usize) {
    let h = Harness::new().await;
    h.add_instance_machine(name);
    let start = h.sim.requests().len();
    if let Some((Phase::Provision, i, k)) = at {
        h.sim.inject(fault(i, k));
    }
    h.drive_instance(name, 200, ready_instance).await;
    let provision_calls = h.sim.requests().len() - start;
    let ip = h.ipam_ipv4(name).await.unwrap();
    assert_eq!(
        h.kube.node(name).unwrap().labels.get(PN_IPV4_LABEL),
        Some(&ip.to_string()),
        "{at:?}: label"
    );
    h.sim.clear_faults();
    let start = h.sim.requests().len();
    if let Some((Phase::Delete, i, k)) = at {
        h.sim.inject(fault(i, k));
    }
    assert!(h.kube.delete_instance_machine(NS, name, &h.now_rfc3339()));
    h.drive_instance(name, 200, |m| m.is_none()).await;
    let delete_calls = h.sim.requests().len() - start;
    let servers = h
        .sim
        .ledger()
        .created_of(BillableKind::InstanceServer)
        .len();
    assert_eq!(servers, 1, "{at:?}: servers ordered");
    assert_eq!(
        h.applied(&Method::POST, "/private_nics"),
        1,
        "{at:?}: NIC attached"
    );
    assert!(
        h.live_billables().is_empty(),
        "{at:?}: {:?}",
        h.live_billables()
    );
    assert_eq!(h.kube.secret_count(), 0, "{at:?}: identity left");
    (provision_calls, delete_calls)
}

#[tokio::test]
async fn instance_fault_sweep_every_call_index_error_and_lost_response() {
    let (provision, delete) = instance_schedule("sweep", None).await;
    let mut schedules = 0;
    for (phase, calls) in [(Phase::Provision, provision), (Phase::Delete, delete)] {
        for i in 1..=calls as u64 {
            for kind in [Kind::Error, Kind::Lost] {
                instance_schedule("sweep", Some((phase, i, kind))).await;
                schedules += 1;
            }
        }
    }
    println!(
        "instance fault sweep: {provision} provision calls, {delete} delete calls, {schedules} schedules, all converged"
    );
    assert_eq!(schedules, 2 * (provision + delete));
}

async fn elastic_metal_schedule(name: &str, at: Option<(Phase, u64, Kind)>) -> (usize, usize) {
    let h = Harness::new().await;
    h.add_elastic_metal_machine(name);
    let start = h.sim.requests().len();
    if let Some((Phase::Provision, i, k)) = at {
        h.sim.inject(fault(i, k));
    }
    h.drive_elastic_metal(name, 400, ready_elastic_metal).await;
    let provision_calls = h.sim.requests().len() - start;
    let ip = h.ipam_ipv4(name).await.unwrap();
    assert_eq!(
        h.kube.node(name).unwrap().labels.get(PN_IPV4_LABEL),
        Some(&ip.to_string()),
        "{at:?}: label"
    );
    let vlan = h
        .kube
        .elastic_metal_machine(NS, name)
        .unwrap()
        .status
        .unwrap()
        .private_network_vlan;
    assert!(vlan.is_some_and(|v| v != 0), "{at:?}: vlan");
    h.sim.clear_faults();
    let start = h.sim.requests().len();
    if let Some((Phase::Delete, i, k)) = at {
        h.sim.inject(fault(i, k));
    }
    assert!(
        h.kube
            .delete_elastic_metal_machine(NS, name, &h.now_rfc3339())
    );
    h.drive_elastic_metal(name, 400, |m| m.is_none()).await;
    let delete_calls = h.sim.requests().len() - start;
    assert_eq!(
        h.sim
            .ledger()
            .created_of(BillableKind::ElasticMetalServer)
            .len(),
        1,
        "{at:?}: servers ordered"
    );
    let attaches = h
        .sim
        .requests()
        .iter()
        .filter(|r| {
            r.method == Method::POST
                && r.path.contains("/baremetal/")
                && r.path.ends_with("/private-networks")
                && (200..300).contains(&r.status)
        })
        .count();
    assert_eq!(attaches, 1, "{at:?}: PN attached");
    assert!(
        h.live_billables().is_empty(),
        "{at:?}: {:?}",
        h.live_billables()
    );
    assert_eq!(h.kube.secret_count(), 0, "{at:?}: identity left");
    (provision_calls, delete_calls)
}

#[tokio::test]
async fn elastic_metal_fault_sweep_every_call_index_error_and_lost_response() {
    let (provision, delete) = elastic_metal_schedule("msweep", None).await;
    let mut schedules = 0;
    for (phase, calls) in [(Phase::Provision, provision), (Phase::Delete, delete)] {
        for i in 1..=calls as u64 {
            for kind in [Kind::Error, Kind::Lost] {
                elastic_metal_schedule("msweep", Some((phase, i, kind))).await;
                schedules += 1;
            }
        }
    }
    println!(
        "elastic metal fault sweep: {provision} provision calls, {delete} delete calls, {schedules} schedules, all converged"
    );
    assert_eq!(schedules, 2 * (provision + delete));
}
