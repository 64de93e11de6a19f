//! ScalewayInstanceMachine against the simulator on a virtual clock:
//! happy path, restart, and regression tests named after the production
//! bugs of the provider this one replaces (see the reference notes).
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
use kura_provider::crd::{INSTANCE_FINALIZER, InstancePhase};
use kura_scaleway::sim::{BillableKind, Fault};
use kura_scaleway::{ServerId, ServerState};
use support::{Harness, NS, ready_instance};

#[tokio::test]
async fn instance_happy_path_from_empty_to_ready_and_back_to_nothing() {
    let h = Harness::new().await;
    h.add_instance_machine("cache-0");
    h.drive_instance("cache-0", 100, ready_instance).await;

    let m = h.kube.instance_machine(NS, "cache-0").unwrap();
    let st = m.status.clone().unwrap();
    assert_eq!(st.phase, InstancePhase::Ready);
    let server_id = st.server_id.clone().unwrap();
    assert_eq!(
        m.spec.provider_id.as_deref(),
        Some(format!("scaleway://instance/fr-par-1/{server_id}").as_str())
    );
    assert!(
        m.metadata
            .finalizers
            .unwrap()
            .contains(&INSTANCE_FINALIZER.to_owned())
    );
    let node = h.kube.node("cache-0").unwrap();
    assert_eq!(node.provider_id, m.spec.provider_id);
    let ip = h.ipam_ipv4("cache-0").await.unwrap();
    assert_eq!(node.labels.get(PN_IPV4_LABEL), Some(&ip.to_string()));
    assert!(
        st.addresses
            .iter()
            .any(|a| a.address_type == "InternalIP" && a.address == ip.to_string())
    );
    for c in ["Ready", "Provisioned", "NodeReady"] {
        assert!(
            st.conditions
                .iter()
                .any(|x| x.condition_type == c
                    && x.status == kura_provider::crd::ConditionStatus::True),
            "{c}: {:?}",
            st.conditions
        );
    }
    assert_eq!(
        h.ctx
            .metrics
            .machines_in_phase("ScalewayInstanceMachine", "Ready"),
        1
    );
    let reasons: Vec<String> = h.kube.events().into_iter().map(|e| e.reason).collect();
    for r in [
        "ServerCreated",
        "Provisioned",
        "LabelStamped",
        "Ready",
        "PhaseProvisioning",
        "PhaseBootstrapping",
        "PhaseReady",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "missing event {r}: {reasons:?}"
        );
    }
    // A kubelet identity exists while the machine does.
    assert_eq!(h.kube.secret_count(), 1);

    assert!(
        h.kube
            .delete_instance_machine(NS, "cache-0", &h.now_rfc3339())
    );
    h.drive_instance("cache-0", 100, |m| m.is_none()).await;
    assert!(h.live_billables().is_empty(), "{:?}", h.live_billables());
    assert_eq!(h.kube.secret_count(), 0);
    let ledger = h.sim.ledger();
    assert_eq!(ledger.created_of(BillableKind::InstanceServer).len(), 1);
    assert_eq!(
        h.ctx
            .metrics
            .machines_in_phase("ScalewayInstanceMachine", "Ready"),
        0
    );
    assert_eq!(
        h.ctx
            .metrics
            .machines_in_phase("ScalewayInstanceMachine", "Deleting"),
        0
    );
}

#[tokio::test]
async fn controller_restart_mid_provisioning_converges_without_a_second_order() {
    let mut h = Harness::new().await;
    h.add_instance_machine("cache-1");
    // Stop right after the server id is recorded.
    h.drive_instance("cache-1", 100, |m| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| s.server_id.is_some())
    })
    .await;
    h.restart();
    h.drive_instance("cache-1", 100, ready_instance).await;
    assert_eq!(
        h.sim
            .ledger()
            .created_of(BillableKind::InstanceServer)
            .len(),
        1
    );

    // A restart between the create and the recording of its id (the answer
    // of the create is lost, then the controller dies): the next controller
    // finds the server by name.
    h.add_instance_machine("cache-2");
    let lost = h
        .sim
        .inject(Fault::on(Method::POST, "/instance/v1/zones/fr-par-1/servers").drop_response());
    h.run_instance("cache-2", 1).await;
    assert_eq!(h.sim.fault_fired(lost), 1);
    let st = h
        .kube
        .instance_machine(NS, "cache-2")
        .unwrap()
        .status
        .unwrap();
    assert!(
        st.server_id.is_none(),
        "the lost create must not have been recorded"
    );
    h.restart();
    h.drive_instance("cache-2", 100, ready_instance).await;
    let created: Vec<_> = h
        .sim
        .ledger()
        .created_of(BillableKind::InstanceServer)
        .into_iter()
        .filter(|e| e.name == "cache-2")
        .cloned()
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
}

/// Regression (346e0219e1f): `CreateInstance` bundled create + PN attach +
/// power-on, so a failure after the create stranded a half-configured paid
/// instance. Create must only create; attach and power are separate
/// idempotent steps, and a failure of either is retried to completion.
#[tokio::test]
async fn create_bundling_attach_and_power_strands_a_half_configured_instance() {
    let h = Harness::new().await;
    h.add_instance_machine("cache-3");
    // The NIC attach fails twice, the power-on once.
    h.sim
        .inject(Fault::on(Method::POST, "/private_nics").times(2));
    h.sim.inject(Fault::on(Method::POST, "/action"));
    h.drive_instance("cache-3", 100, ready_instance).await;

    // The create request carried neither a private network nor a power flag.
    let creates: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::POST && r.path.ends_with("/servers"))
        .collect();
    assert_eq!(creates.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&creates[0].body).unwrap();
    assert!(body.get("private_network").is_none() && body.get("private_nics").is_none());
    assert_eq!(body["dynamic_ip_required"], serde_json::json!(true));
    // The providerID only appeared once the server was attached and running.
    let st = h
        .kube
        .instance_machine(NS, "cache-3")
        .unwrap()
        .status
        .unwrap();
    let info = h
        .sim
        .instance_servers()
        .into_iter()
        .find(|s| Some(&s.id) == st.server_id.as_ref())
        .unwrap();
    assert_eq!(info.private_networks, vec![h.pn.to_string()]);
    assert_eq!(info.state, ServerState::Running);
    assert_eq!(h.applied(&Method::POST, "/private_nics"), 1);
}

/// Regression (346e0219e1f): `DeleteInstance` unconditionally powered off;
/// Scaleway rejects poweroff on a stopped server, which wedged finalizer
/// removal. Deleting a machine whose server is already stopped must delete
/// it without a poweroff.
#[tokio::test]
async fn poweroff_of_an_already_stopped_server_wedges_the_finalizer() {
    let h = Harness::new().await;
    h.add_instance_machine("cache-4");
    h.drive_instance("cache-4", 100, ready_instance).await;
    let id = h
        .kube
        .instance_machine(NS, "cache-4")
        .unwrap()
        .status
        .unwrap()
        .server_id
        .unwrap();
    // Someone stops the server out of band.
    let client = h.sim.client();
    client
        .instance()
        .server_action(
            &h.zone,
            &ServerId::new(id.clone()),
            kura_scaleway::ServerAction::Poweroff,
        )
        .await
        .unwrap();
    h.sim.advance(std::time::Duration::from_secs(120));
    assert_eq!(
        h.sim.instance_server_state(&id).unwrap().0,
        ServerState::Stopped
    );
    let before = h.sim.requests().len();
    assert!(
        h.kube
            .delete_instance_machine(NS, "cache-4", &h.now_rfc3339())
    );
    h.drive_instance("cache-4", 20, |m| m.is_none()).await;
    let poweroffs = h.sim.requests()[before..]
        .iter()
        .filter(|r| {
            r.path.ends_with("/action") && String::from_utf8_lossy(&r.body).contains("poweroff")
        })
        .count();
    assert_eq!(poweroffs, 0, "a poweroff was sent to a stopped server");
    assert!(h.live_billables().is_empty(), "{:?}", h.live_billables());
}

/// Regression (87761e20a35): the instance came up with only its PN NIC, so
/// cloud-init could not install the kubelet and the node sat in
/// Bootstrapping forever. The server is created with a dynamic public IPv4.
#[tokio::test]
async fn no_public_ip_means_cloud_init_cannot_install_kubelet() {
    let h = Harness::new().await;
    h.add_instance_machine("cache-5");
    h.drive_instance("cache-5", 100, ready_instance).await;
    let st = h
        .kube
        .instance_machine(NS, "cache-5")
        .unwrap()
        .status
        .unwrap();
    let info = h
        .sim
        .instance_servers()
        .into_iter()
        .find(|s| Some(&s.id) == st.server_id.as_ref())
        .unwrap();
    assert!(info.has_public_ip, "the node joined without a public IP?");
    assert!(st.addresses.iter().any(|a| a.address_type == "ExternalIP"));
}

/// Regression (7b365e10711): runcmd runs under /bin/sh (dash), which rejects
/// `set -o pipefail`; the whole bootstrap aborted on its first line. The
/// user data the provider sets runs the bash script with the list form.
#[tokio::test]
async fn pipefail_under_dash_aborts_cloud_init() {
    let h = Harness::new().await;
    h.add_instance_machine("cache-6");
    h.drive_instance("cache-6", 100, ready_instance).await;
    let id = h
        .kube
        .instance_machine(NS, "cache-6")
        .unwrap()
        .status
        .unwrap()
        .server_id
        .unwrap();
    let doc = String::from_utf8(
        h.sim
            .instance_user_data(&id, "cloud-init")
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(support::cloud_init_would_bootstrap(&doc));
    let after_runcmd = doc.split("runcmd:").nth(1).unwrap();
    assert!(!after_runcmd.contains("pipefail"));
    assert_eq!(after_runcmd, "\n  - [bash, /opt/bootstrap-node.sh]\n");
    // And the model rejects what the original rendered.
    let broken = "#cloud-config\nruncmd:\n  - set -euxo pipefail; apt-get update\n";
    assert!(!support::cloud_init_would_bootstrap(broken));
}

/// Regression (d9f8cb379ef, 6674f866b37, 868c67a90ba): IPAM `ListIPs` with
/// zonal + private_network_id (rejected), a lower-case MAC filter, the IPv6
/// taken first, no region, and a swallowed error — the label never landed.
/// Here: one source filter (the simulator rejects two), case-insensitive
/// matching, the IPv4, the regional path, and errors retried and reported.
#[tokio::test]
async fn ipam_filter_combination_uppercase_mac_ipv6_first_missing_region_swallowed_error() {
    let h = Harness::new().await;
    h.add_instance_machine("cache-7");
    // IPAM fails three times and the label patch twice before working.
    h.sim
        .inject(Fault::on(Method::GET, "/ipam/v1/regions/fr-par/ips").times(3));
    h.kube.fail_label_patches(2);
    h.drive_instance("cache-7", 200, ready_instance).await;

    let node = h.kube.node("cache-7").unwrap();
    let label = node.labels.get(PN_IPV4_LABEL).unwrap();
    let ip: std::net::Ipv4Addr = label.parse().expect("an IPv4 without prefix length");
    assert_eq!(Some(ip), h.ipam_ipv4("cache-7").await);
    assert!(h.kube.label_patches() >= 3);
    // Every IPAM request used the regional path and exactly one source filter.
    for r in h
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.contains("/ipam/"))
    {
        assert!(r.path.starts_with("/ipam/v1/regions/fr-par/"), "{}", r.path);
        let sources = [
            "zonal=",
            "regional=",
            "private_network_id=",
            "subnet_id=",
            "source_vpc_id=",
        ]
        .iter()
        .filter(|k| r.query.split('&').any(|p| p.starts_with(*k)))
        .count();
        assert!(sources <= 1, "{}", r.query);
    }
    // The errors were not swallowed: events and metrics saw them.
    let events = h.kube.events();
    assert!(events.iter().any(|e| e.reason == "PrivateIPv4LookupFailed"));
    assert!(events.iter().any(|e| e.reason == "LabelPatchFailed"));
    assert!(h.ctx.metrics.api_errors_of("kubernetes") >= 2);
}

/// Regression (stuck-:failed nodes were never retried; an operator had to
/// reset them): a machine in Failed is retried with exponential backoff,
/// the attempt count is in status, and a spec change resets it.
#[tokio::test]
async fn failed_node_never_retried() {
    let h = Harness::new().await;
    h.add_instance_machine("cache-8");
    // A non-retryable refusal of the create (quota), three times.
    h.sim.inject(
        Fault::on(Method::POST, "/instance/v1/zones/fr-par-1/servers")
            .respond(403, r#"{"type":"quotas_exceeded","message":"quota exceeded","details":[{"resource":"instances","quota":1,"current":1}]}"#)
            .times(3),
    );
    let mut delays = Vec::new();
    let mut attempts_seen = Vec::new();
    for _ in 0..60 {
        let m = h.kube.instance_machine(NS, "cache-8").unwrap();
        if ready_instance(Some(&m)) {
            break;
        }
        h.kubelet_tick();
        let next = kura_provider::instance::reconcile(&h.ctx, m).await;
        let st = h
            .kube
            .instance_machine(NS, "cache-8")
            .unwrap()
            .status
            .unwrap();
        if st.phase == InstancePhase::Failed && attempts_seen.last() != Some(&st.failure_attempts) {
            attempts_seen.push(st.failure_attempts);
            if let kura_provider::context::Next::Requeue(d) = next {
                delays.push(d);
            }
        }
        match next {
            kura_provider::context::Next::Requeue(d) => h.sim.advance(d),
            kura_provider::context::Next::Wait => h.sim.advance(std::time::Duration::from_secs(1)),
        }
    }
    assert_eq!(attempts_seen, vec![1, 2, 3]);
    assert_eq!(
        delays,
        vec![
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(120)
        ]
    );
    let st = h
        .kube
        .instance_machine(NS, "cache-8")
        .unwrap()
        .status
        .unwrap();
    assert!(st.ready, "{st:?}");
    assert_eq!(st.failure_attempts, 0);
    assert_eq!(
        h.sim
            .ledger()
            .created_of(BillableKind::InstanceServer)
            .len(),
        1
    );

    // Early reconciles during the backoff do nothing.
    let h = Harness::new().await;
    h.add_instance_machine("cache-9");
    h.sim.inject(
        Fault::on(Method::POST, "/instance/v1/zones/fr-par-1/servers")
            .respond(
                403,
                r#"{"type":"quotas_exceeded","message":"quota exceeded"}"#,
            )
            .times(u64::MAX),
    );
    for _ in 0..40 {
        let m = h.kube.instance_machine(NS, "cache-9").unwrap();
        match kura_provider::instance::reconcile(&h.ctx, m).await {
            kura_provider::context::Next::Requeue(d) => h.sim.advance(d),
            kura_provider::context::Next::Wait => break,
        }
    }
    let st = h
        .kube
        .instance_machine(NS, "cache-9")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.phase, InstancePhase::Failed);
    // The cap (600 s) bounds the delay however many attempts.
    let posts = h
        .sim
        .count_requests(&Method::POST, "/instance/v1/zones/fr-par-1/servers");
    assert_eq!(
        posts as u32, st.failure_attempts,
        "a retry ran before its backoff elapsed"
    );
    // The last requeue delay has elapsed: this reconcile retries (and fails
    // again); the next one, before the new backoff ends, must not touch the API.
    let m = h.kube.instance_machine(NS, "cache-9").unwrap();
    kura_provider::instance::reconcile(&h.ctx, m).await;
    let before = h.sim.requests().len();
    let m = h.kube.instance_machine(NS, "cache-9").unwrap();
    let next = kura_provider::instance::reconcile(&h.ctx, m).await;
    assert_eq!(
        h.sim.requests().len(),
        before,
        "reconcile during backoff called the API"
    );
    assert!(
        matches!(next, kura_provider::context::Next::Requeue(d) if d <= std::time::Duration::from_secs(600))
    );
    // A spec change resets the count and retries at once.
    h.sim.clear_faults();
    let mut m = h.kube.instance_machine(NS, "cache-9").unwrap();
    m.metadata.generation = Some(2);
    m.spec.root_volume_gb = 60;
    h.kube.put_instance_machine(m);
    h.drive_instance("cache-9", 100, ready_instance).await;
    let st = h
        .kube
        .instance_machine(NS, "cache-9")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.failure_attempts, 0);
    assert!(h.kube.events().iter().any(|e| e.reason == "SpecChanged"));
}

#[tokio::test]
async fn gate_waits_for_owner_and_infrastructure_and_stops_when_paused() {
    let h = Harness::new().await;
    h.add_instance_machine("cache-10");
    h.kube.put_capi_cluster(
        NS,
        "c",
        kura_provider::kube_side::CapiCluster {
            paused: false,
            infrastructure_ready: false,
        },
    );
    let m = h.kube.instance_machine(NS, "cache-10").unwrap();
    let next = kura_provider::instance::reconcile(&h.ctx, m).await;
    assert_eq!(
        next,
        kura_provider::context::Next::Requeue(std::time::Duration::from_secs(30))
    );
    assert!(
        h.sim
            .ledger()
            .created_of(BillableKind::InstanceServer)
            .is_empty()
    );
    h.kube.put_capi_cluster(
        NS,
        "c",
        kura_provider::kube_side::CapiCluster {
            paused: true,
            infrastructure_ready: true,
        },
    );
    let m = h.kube.instance_machine(NS, "cache-10").unwrap();
    assert_eq!(
        kura_provider::instance::reconcile(&h.ctx, m).await,
        kura_provider::context::Next::Wait
    );
    assert!(
        h.sim
            .ledger()
            .created_of(BillableKind::InstanceServer)
            .is_empty()
    );
}
