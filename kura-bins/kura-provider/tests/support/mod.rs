//! Test harness: the Scaleway simulator on a virtual clock, the in-memory
//! Kubernetes side, a recording SSH runner, and a model of the node side
//! (cloud-init and the kubelet) that registers a Node only when the
//! rendered bootstrap would really run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub,
    dead_code
)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kura_provider::context::{Context, Metrics, Next, OffsetClock, ProviderConfig, RecordingSsh};
use kura_provider::crd::{
    ScalewayElasticMetalMachine, ScalewayElasticMetalMachineSpec, ScalewayInstanceMachine,
    ScalewayInstanceMachineSpec,
};
use kura_provider::kube_side::{CapiCluster, CapiMachine, MemoryKube, NodeInfo};
use kura_scaleway::sim::{BillableKind, Simulator};
use kura_scaleway::{PrivateNetworkId, RetryPolicy, ServerState, Zone};

pub const NS: &str = "default";
pub const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy\n-----END CERTIFICATE-----\n";

pub struct Harness {
    pub sim: Simulator,
    pub kube: MemoryKube,
    pub ssh: RecordingSsh,
    pub ctx: Context<MemoryKube, RecordingSsh>,
    pub pn: PrivateNetworkId,
    pub zone: Zone,
}

pub fn base_time() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap()
}

impl Harness {
    /// A fresh simulator with a Private Network for Instance machines, a
    /// Cluster `c` whose infrastructure is ready, and a client without
    /// retries (so every injected fault reaches the reconciler).
    pub async fn new() -> Self {
        let sim = Simulator::with_token("test-token");
        let kube = MemoryKube::new();
        kube.put_capi_cluster(
            NS,
            "c",
            CapiCluster {
                paused: false,
                infrastructure_ready: true,
            },
        );
        let ssh = RecordingSsh::default();
        let zone = Zone::new("fr-par-1").unwrap();
        let setup = sim.client();
        let pn = setup
            .vpc()
            .ensure_private_network(
                &zone.region(),
                &sim.project_id(),
                "instance-pn",
                Some("172.16.8.0/22"),
                &[],
            )
            .await
            .unwrap()
            .id;
        let ctx = Self::context(&sim, &kube, &ssh);
        Self {
            sim,
            kube,
            ssh,
            ctx,
            pn,
            zone,
        }
    }

    pub fn context(
        sim: &Simulator,
        kube: &MemoryKube,
        ssh: &RecordingSsh,
    ) -> Context<MemoryKube, RecordingSsh> {
        let mut config = ProviderConfig::new(sim.project_id(), "https://10.0.0.1:6443", CA_PEM);
        config.failure_backoff_base = Duration::from_secs(30);
        config.failure_backoff_cap = Duration::from_secs(600);
        config.cluster_dns = Some("10.96.0.10".parse().unwrap());
        Context {
            scw: sim.client_with_retry(RetryPolicy::none()),
            kube: kube.clone(),
            ssh: ssh.clone(),
            config,
            clock: Arc::new(OffsetClock::new(base_time(), sim.clock())),
            metrics: Metrics::default(),
        }
    }

    /// Drops every in-memory piece of the controller (a restart): only the
    /// stored objects and the cloud survive.
    pub fn restart(&mut self) {
        self.ctx = Self::context(&self.sim, &self.kube, &self.ssh);
    }

    fn owner(name: &str) -> ObjectMeta {
        self::Harness::meta_for(name)
    }

    pub fn meta_for(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            owner_references: Some(vec![OwnerReference {
                api_version: "cluster.x-k8s.io/v1beta1".into(),
                kind: "Machine".into(),
                name: format!("m-{name}"),
                uid: format!("muid-{name}"),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    /// Creates the CAPI Machine and the ScalewayInstanceMachine `name`.
    pub fn add_instance_machine(&self, name: &str) {
        self.kube.put_capi_machine(
            NS,
            &format!("m-{name}"),
            CapiMachine {
                cluster_name: "c".into(),
                version: Some("v1.34.2".into()),
            },
        );
        let spec: ScalewayInstanceMachineSpec = serde_json::from_value(serde_json::json!({
            "privateNetworkID": self.pn.as_str(),
            "nodeTaints": [{"key": "tuist.dev/runner-cache", "value": "true", "effect": "NoSchedule"}],
        }))
        .unwrap();
        let mut m = ScalewayInstanceMachine::new(name, spec);
        m.metadata = Self::owner(name);
        self.kube.put_instance_machine(m);
    }

    /// Creates the CAPI Machine and the ScalewayElasticMetalMachine `name`.
    pub fn add_elastic_metal_machine(&self, name: &str) {
        self.kube.put_capi_machine(
            NS,
            &format!("m-{name}"),
            CapiMachine {
                cluster_name: "c".into(),
                version: Some("v1.34.2".into()),
            },
        );
        let spec: ScalewayElasticMetalMachineSpec = serde_json::from_value(serde_json::json!({
            "privateNetworkName": "tuist-runner-cache",
            "privateNetworkCIDR": "172.16.0.0/22",
            "sshKeyIDs": ["key-1"],
            "nodeTaints": [{"key": "tuist.dev/runner-cache", "value": "true", "effect": "NoSchedule"}],
        }))
        .unwrap();
        let mut m = ScalewayElasticMetalMachine::new(name, spec);
        m.metadata = Self::owner(name);
        self.kube.put_elastic_metal_machine(m);
    }

    /// The node side: a kubelet registers (Ready) once what the provider
    /// set up would really bootstrap it.
    pub fn kubelet_tick(&self) {
        for s in self.sim.instance_servers() {
            if s.state != ServerState::Running || !s.has_public_ip {
                // Without a public IP cloud-init cannot reach the package
                // repositories: the kubelet is never installed.
                continue;
            }
            let Some(doc) = self.sim.instance_user_data(&s.id, "cloud-init") else {
                continue;
            };
            let doc = String::from_utf8(doc.to_vec()).unwrap();
            if cloud_init_would_bootstrap(&doc) && self.kube.node(&s.name).is_none() {
                self.kube.put_node(NodeInfo {
                    name: s.name.clone(),
                    ready: true,
                    ..NodeInfo::default()
                });
            }
        }
        for (host, script) in self.ssh.runs() {
            for name in self.elastic_metal_names() {
                let Some(m) = self.kube.elastic_metal_machine(NS, &name) else {
                    continue;
                };
                let external = m
                    .status
                    .iter()
                    .flat_map(|s| s.addresses.iter())
                    .any(|a| a.address_type == "ExternalIP" && a.address == host.to_string());
                if external
                    && script.starts_with("#!/usr/bin/env bash\nset -euxo pipefail\n")
                    && self.kube.node(&name).is_none()
                {
                    self.kube.put_node(NodeInfo {
                        name: name.clone(),
                        ready: true,
                        ..NodeInfo::default()
                    });
                }
            }
        }
    }

    fn elastic_metal_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .sim
            .baremetal_servers()
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Reconciles Instance machine `name` until `done` holds, advancing the
    /// virtual clock by each requeue. Returns the number of reconciliations.
    pub async fn drive_instance(
        &self,
        name: &str,
        max: usize,
        done: impl Fn(Option<&ScalewayInstanceMachine>) -> bool,
    ) -> usize {
        for i in 0..max {
            self.kubelet_tick();
            let m = self.kube.instance_machine(NS, name);
            if done(m.as_ref()) {
                return i;
            }
            let m = m.expect("machine vanished before the condition held");
            match kura_provider::instance::reconcile(&self.ctx, m).await {
                Next::Requeue(d) => self.sim.advance(d),
                Next::Wait => self.sim.advance(Duration::from_secs(1)),
            }
        }
        panic!(
            "instance machine {name} did not converge in {max} reconciliations: {:#?}",
            self.kube.instance_machine(NS, name).map(|m| m.status)
        );
    }

    /// Runs `n` reconciliations of Instance machine `name`, whatever happens.
    pub async fn run_instance(&self, name: &str, n: usize) {
        for _ in 0..n {
            self.kubelet_tick();
            let Some(m) = self.kube.instance_machine(NS, name) else {
                return;
            };
            match kura_provider::instance::reconcile(&self.ctx, m).await {
                Next::Requeue(d) => self.sim.advance(d),
                Next::Wait => self.sim.advance(Duration::from_secs(1)),
            }
        }
    }

    /// Same for an Elastic Metal machine.
    pub async fn drive_elastic_metal(
        &self,
        name: &str,
        max: usize,
        done: impl Fn(Option<&ScalewayElasticMetalMachine>) -> bool,
    ) -> usize {
        for i in 0..max {
            self.kubelet_tick();
            let m = self.kube.elastic_metal_machine(NS, name);
            if done(m.as_ref()) {
                return i;
            }
            let m = m.expect("machine vanished before the condition held");
            match kura_provider::elastic_metal::reconcile(&self.ctx, m).await {
                Next::Requeue(d) => self.sim.advance(d),
                Next::Wait => self.sim.advance(Duration::from_secs(1)),
            }
        }
        panic!(
            "elastic metal machine {name} did not converge in {max} reconciliations: {:#?}",
            self.kube.elastic_metal_machine(NS, name).map(|m| m.status)
        );
    }

    pub fn now_rfc3339(&self) -> String {
        kura_provider::context::rfc3339(base_time() + self.sim.now())
    }

    /// Billable resources still alive, except Private Networks created by the test itself.
    pub fn live_billables(&self) -> Vec<String> {
        self.sim
            .ledger()
            .live()
            .into_iter()
            .filter(|e| !(e.kind == BillableKind::PrivateNetwork && e.name == "instance-pn"))
            .map(|e| format!("{:?} {} {}", e.kind, e.name, e.id))
            .collect()
    }

    /// 2xx answers to requests matching `method` and `path_contains`
    /// (the call was applied, whether or not its answer was then lost).
    pub fn applied(&self, method: &http::Method, path_contains: &str) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| {
                r.method == *method
                    && r.path.contains(path_contains)
                    && (200..300).contains(&r.status)
            })
            .count()
    }

    /// The IPv4 IPAM holds for the machine named `name` on `pn` (read
    /// directly with a setup client; does not count against faults when no
    /// fault is pending).
    pub async fn ipam_ipv4(&self, name: &str) -> Option<std::net::Ipv4Addr> {
        let req = kura_scaleway::ListIpsRequest {
            resource_name: Some(name.into()),
            is_ipv6: Some(false),
            ..kura_scaleway::ListIpsRequest::default()
        };
        self.sim
            .client()
            .ipam()
            .list_all_ips(&self.zone.region(), &req)
            .await
            .unwrap()
            .iter()
            .filter(|ip| ip.resource.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .find_map(|ip| ip.ipv4())
    }
}

pub fn ready_instance(m: Option<&ScalewayInstanceMachine>) -> bool {
    m.and_then(|m| m.status.as_ref()).is_some_and(|s| s.ready)
}

pub fn ready_elastic_metal(m: Option<&ScalewayElasticMetalMachine>) -> bool {
    m.and_then(|m| m.status.as_ref()).is_some_and(|s| s.ready)
}

/// A model of cloud-init on Ubuntu: `runcmd` string entries run under
/// `/bin/sh` (dash), which rejects `set -o pipefail`; list entries are
/// exec'd as argv. The bootstrap only happens when every runcmd entry would
/// run and one of them executes the bash bootstrap script from `write_files`.
pub fn cloud_init_would_bootstrap(doc: &str) -> bool {
    if !doc.starts_with("#cloud-config\n") {
        return false;
    }
    let Ok(v) = serde_norway::from_str::<serde_json::Value>(doc) else {
        return false;
    };
    let scripts: Vec<(String, String)> = v["write_files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((
                f["path"].as_str()?.to_owned(),
                f["content"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    let Some(runcmd) = v["runcmd"].as_array() else {
        return false;
    };
    let mut bootstraps = false;
    for entry in runcmd {
        match entry {
            serde_json::Value::String(s) => {
                // dash: `set -o pipefail` is an illegal option → abort.
                if s.contains("pipefail") {
                    return false;
                }
            }
            serde_json::Value::Array(argv) => {
                let argv: Vec<&str> = argv.iter().filter_map(|a| a.as_str()).collect();
                if argv.first() == Some(&"bash")
                    && let Some(path) = argv.get(1)
                    && let Some((_, content)) = scripts.iter().find(|(p, _)| p == path)
                    && content.starts_with("#!/usr/bin/env bash\n")
                    && content.contains("systemctl restart kubelet")
                {
                    bootstraps = true;
                }
            }
            _ => return false,
        }
    }
    bootstraps
}
