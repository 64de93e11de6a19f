//! Reconciler scenarios against an in-memory API server on kube's
//! `tower-test` mock transport (see `tests/mock/mod.rs`). Every scenario also
//! checks that each request the reconciler made is granted by the RBAC table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod mock;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use kube::runtime::events::{Recorder, Reporter};
use kura_ca::time::OffsetDateTime;
use kura_operator::crd::KuraInstance;
use kura_operator::primary::{RolloutStatus, Routability};
use kura_operator::rbac::{granted, request_permission};
use kura_operator::reconcile::{Context, reconcile};
use kura_operator::render::RenderOptions;
use mock::FakeApi;
use serde_json::{Value, json};

#[derive(Default, Clone)]
struct Probe(Arc<Mutex<BTreeMap<String, RolloutStatus>>>);

impl Routability for Probe {
    fn rollout<'a>(&'a self, ip: &'a str) -> BoxFuture<'a, Option<RolloutStatus>> {
        Box::pin(async move { self.0.lock().unwrap().get(ip).cloned() })
    }
}

impl Probe {
    fn serving(&self, ip: &str, members: u32) {
        self.0.lock().unwrap().insert(
            ip.to_owned(),
            RolloutStatus {
                ready: true,
                state: "serving".into(),
                ring_members: members,
                writer_lock_owned: true,
            },
        );
    }
}

struct Harness {
    api: FakeApi,
    ctx: Arc<Context>,
    probe: Probe,
    clock: Arc<Mutex<OffsetDateTime>>,
}

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let v: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v
}

impl Harness {
    fn new() -> Self {
        let (client, api) = FakeApi::new();
        let probe = Probe::default();
        let clock = Arc::new(Mutex::new(OffsetDateTime::now_utc()));
        let c = clock.clone();
        let ctx = Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "kura-operator".into(),
                    instance: None,
                },
            ),
            client,
            options: RenderOptions {
                // Tests move through rotation phases without waiting.
                rotation_dwell: kura_ca::time::Duration::ZERO,
                ..RenderOptions::default()
            },
            routability: Arc::new(probe.clone()),
            clock: Arc::new(move || *c.lock().unwrap()),
            requeue: Duration::from_secs(30),
        };
        Harness {
            api,
            ctx: Arc::new(ctx),
            probe,
            clock,
        }
    }

    fn add_instance(&self, mut v: Value) -> String {
        let name = v["metadata"]["name"].as_str().unwrap().to_owned();
        v["metadata"]["uid"] = json!(format!("uid-{name}"));
        self.api.put(v);
        name
    }

    async fn reconcile(&self, name: &str) -> kube::runtime::controller::Action {
        let v = self.api.get("KuraInstance", name).unwrap();
        let ki: KuraInstance = serde_json::from_value(v).unwrap();
        let action = reconcile(Arc::new(ki), self.ctx.clone()).await.unwrap();
        self.assert_rbac();
        action
    }

    fn status(&self, name: &str) -> Value {
        self.api.get("KuraInstance", name).unwrap()["status"].clone()
    }

    fn assert_rbac(&self) {
        for r in self.api.requests() {
            let (g, res, verb) = request_permission(&r.method, &r.path)
                .unwrap_or_else(|| panic!("unmapped request {} {}", r.method, r.path));
            assert!(
                granted(&g, &res, verb),
                "reconciler used {verb} on {g}/{res} ({} {}), which the RBAC does not grant",
                r.method,
                r.path
            );
        }
    }

    fn pod(&self, name: &str, instance: &str, node: &str, ip: &str) {
        self.api.put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kura", "labels": {
                "app.kubernetes.io/name": "kura", "app.kubernetes.io/instance": instance}},
            "spec": {"nodeName": node, "containers": [{"name": "kura"}]},
            "status": {"podIP": ip}
        }));
    }

    fn node(&self, name: &str, pn: Option<&str>) {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(pn) = pn {
            labels["tuist.dev/pn-ipv4"] = json!(pn);
        }
        self.api.put(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels}}));
    }

    fn sts_ready(&self, name: &str, replicas: i64) {
        let generation =
            self.api.get("StatefulSet", name).unwrap()["metadata"]["generation"].clone();
        self.api.patch(
            "StatefulSet",
            name,
            json!({"status": {"observedGeneration": generation, "currentRevision": "r1",
                "updateRevision": "r1", "readyReplicas": replicas, "updatedReplicas": replicas,
                "replicas": replicas}}),
        );
    }

    fn secret(&self, name: &str) -> kura_ca::SecretData {
        let v = self
            .api
            .get("Secret", name)
            .unwrap_or_else(|| panic!("secret {name}"));
        let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(v).unwrap();
        s.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect()
    }

    fn applies(&self) -> BTreeMap<String, Value> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.content_type.starts_with("application/apply-patch"))
            .map(|r| (r.path.split('?').next().unwrap().to_owned(), r.body))
            .collect()
    }
}

fn node_port(api: &FakeApi, name: &str) -> i64 {
    api.get("Service", name).unwrap()["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn first_reconcile_creates_everything_and_the_second_is_a_no_op_keeping_node_ports() {
    let h = Harness::new();
    let name = h.add_instance(fixture("private-nodeport.yaml"));
    h.reconcile(&name).await;
    let ki = h.api.get("KuraInstance", &name).unwrap();
    assert_eq!(
        ki["metadata"]["finalizers"][0],
        "kurainstances.kura.tuist.dev/finalizer"
    );
    for svc in [
        "kura-acme-mac-headless",
        "kura-acme-mac",
        "kura-acme-mac-external",
    ] {
        assert!(h.api.get("Service", svc).is_some(), "{svc}");
    }
    assert!(h.api.get("NetworkPolicy", &name).is_some());
    assert!(h.api.get("StatefulSet", &name).is_some());
    assert!(
        h.api.get("PodDisruptionBudget", &name).is_none(),
        "replicas 1: no PDB"
    );
    let port = node_port(&h.api, "kura-acme-mac-external");
    let st = h.status(&name);
    assert_eq!(st["phase"], "Pending");
    assert_eq!(st["nodePortCache"], port);
    assert!(
        st["message"].as_str().unwrap().contains("StatefulSet"),
        "{st}"
    );
    let first = h.applies();
    // Field manager is ours on every apply.
    assert!(
        h.api
            .requests()
            .iter()
            .all(|r| !r.content_type.starts_with("application/apply-patch")
                || r.path.contains("fieldManager=kura-operator"))
    );

    h.api.clear_requests();
    h.reconcile(&name).await;
    assert_eq!(
        node_port(&h.api, "kura-acme-mac-external"),
        port,
        "NodePort must be kept"
    );
    let second = h.applies();
    // The second apply differs only by the preserved nodePort of -external.
    for (path, body) in &first {
        let mut expected = body.clone();
        if path.ends_with("kura-acme-mac-external") {
            expected["spec"]["ports"][0]["nodePort"] = json!(port);
        }
        assert_eq!(
            second.get(path),
            Some(&expected),
            "{path} changed between reconciles"
        );
    }
    // Ready once the StatefulSet is rolled out.
    h.sts_ready(&name, 1);
    h.reconcile(&name).await;
    let st = h.status(&name);
    assert_eq!(st["phase"], "Ready");
    assert_eq!(st["observedImage"], "ghcr.io/tuist/kura:0.7.0");
    assert_eq!(st["readyReplicas"], 1);
}

#[tokio::test]
async fn node_address_follows_the_primary_pod_and_a_late_label() {
    let h = Harness::new();
    let name = h.add_instance(fixture("private-nodeport.yaml"));
    h.node("n1", Some("172.16.0.2"));
    h.node("n2", None);
    h.pod("kura-acme-mac-0", &name, "n1", "10.1.0.5");
    h.probe.serving("10.1.0.5", 1);
    h.reconcile(&name).await;
    assert_eq!(h.status(&name)["nodeAddress"], "172.16.0.2");

    // The pod is rescheduled onto n2, whose label is not there yet.
    h.pod("kura-acme-mac-0", &name, "n2", "10.1.0.9");
    h.probe.serving("10.1.0.9", 1);
    h.reconcile(&name).await;
    let st = h.status(&name);
    assert!(
        st.get("nodeAddress").is_none() || st["nodeAddress"].is_null(),
        "{st}"
    );
    assert!(st["nodePortCache"].is_i64(), "node port stays known: {st}");

    // The provider stamps the label later: the next reconcile fills the status.
    h.node("n2", Some("172.16.0.3"));
    h.reconcile(&name).await;
    assert_eq!(h.status(&name)["nodeAddress"], "172.16.0.3");
}

#[tokio::test]
async fn primary_moves_to_a_routable_pod_and_sticks() {
    let h = Harness::new();
    let mut v = fixture("private-nodeport.yaml");
    v["spec"]["replicas"] = json!(2);
    let name = h.add_instance(v);
    h.node("n1", Some("172.16.0.2"));
    h.node("n2", Some("172.16.0.3"));
    h.pod("kura-acme-mac-0", &name, "n1", "10.1.0.1");
    h.pod("kura-acme-mac-1", &name, "n2", "10.1.0.2");
    h.probe.serving("10.1.0.2", 2); // only pod 1 routable
    h.reconcile(&name).await;
    let sel = |h: &Harness| {
        h.api.get("Service", "kura-acme-mac-external").unwrap()["spec"]["selector"]
            ["statefulset.kubernetes.io/pod-name"]
            .clone()
    };
    assert_eq!(sel(&h), "kura-acme-mac-1");
    assert_eq!(h.status(&name)["nodeAddress"], "172.16.0.3");
    // Pod 0 becomes routable too: the choice is sticky.
    h.probe.serving("10.1.0.1", 2);
    h.reconcile(&name).await;
    assert_eq!(sel(&h), "kura-acme-mac-1");
    assert_eq!(
        h.api.get("Service", "kura-acme-mac").unwrap()["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
        "kura-acme-mac-1"
    );
}

#[tokio::test]
async fn removing_expose_node_port_deletes_the_external_service() {
    let h = Harness::new();
    let name = h.add_instance(fixture("private-nodeport.yaml"));
    h.reconcile(&name).await;
    assert!(h.api.get("Service", "kura-acme-mac-external").is_some());
    h.api.patch(
        "KuraInstance",
        &name,
        json!({"spec": {"exposeNodePort": false}}),
    );
    h.reconcile(&name).await;
    assert!(h.api.get("Service", "kura-acme-mac-external").is_none());
    // Once it is gone, later reconciles do not ask to delete it again.
    h.api.clear_requests();
    h.reconcile(&name).await;
    let again: Vec<_> = h
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("kura-acme-mac-external"))
        .collect();
    assert!(again.is_empty(), "{again:?}");
    assert!(
        h.status(&name)
            .get("nodePortCache")
            .is_none_or(Value::is_null)
    );
}

fn mesh(name: &str, account: &str) -> Value {
    let mut v = fixture("mesh.yaml");
    v["metadata"]["name"] = json!(name);
    v["spec"]["accountHandle"] = json!(account);
    v
}

fn peer_dns(account: &str) -> String {
    format!("kura-{account}-peers.kura.svc.cluster.local")
}

#[tokio::test]
async fn two_instances_of_an_account_share_one_ca() {
    let h = Harness::new();
    let a = h.add_instance(mesh("kura-acme-eu", "acme"));
    let b = h.add_instance(mesh("kura-acme-us", "acme"));
    h.reconcile(&a).await;
    let ca_before = h.secret("kura-acme-peer-ca");
    h.reconcile(&b).await;
    assert_eq!(
        h.secret("kura-acme-peer-ca"),
        ca_before,
        "the account CA is shared"
    );
    let ca = h.api.get("Secret", "kura-acme-peer-ca").unwrap();
    assert!(
        ca["metadata"].get("ownerReferences").is_none(),
        "no owner on the CA"
    );
    assert!(
        h.api.get("Service", "kura-acme-peers").unwrap()["metadata"]
            .get("ownerReferences")
            .is_none()
    );
    let now = OffsetDateTime::now_utc();
    let pki = kura_ca::AccountPki::from_secret_data(&ca_before, now).unwrap();
    for inst in [&a, &b] {
        let leaf = h.secret(&format!("{inst}-peer-tls"));
        pki.validate_leaf(&leaf, &[&peer_dns("acme")], now).unwrap();
        assert_eq!(leaf["ca.pem"], ca_before["ca.pem"]);
    }
    // Valid material is kept byte for byte.
    let leaf = h.secret("kura-acme-eu-peer-tls");
    h.reconcile(&a).await;
    assert_eq!(h.secret("kura-acme-eu-peer-tls"), leaf);
}

#[tokio::test]
async fn accounts_get_different_cas_and_alphas_leaf_fails_against_bravos_ca() {
    let h = Harness::new();
    let a = h.add_instance(mesh("kura-alpha", "alpha"));
    let b = h.add_instance(mesh("kura-bravo", "bravo"));
    h.reconcile(&a).await;
    h.reconcile(&b).await;
    let alpha_ca = h.secret("kura-alpha-peer-ca");
    let bravo_ca = h.secret("kura-bravo-peer-ca");
    assert_ne!(alpha_ca["ca.pem"], bravo_ca["ca.pem"]);
    let now = OffsetDateTime::now_utc();
    let bravo = kura_ca::TrustBundle::from_pem(&bravo_ca["ca.pem"]).unwrap();
    let alpha_leaf = h.secret("kura-alpha-peer-tls");
    assert!(kura_ca::validate_leaf(&alpha_leaf, &bravo, &[&peer_dns("alpha")], now).is_err());
    let alpha = kura_ca::TrustBundle::from_pem(&alpha_ca["ca.pem"]).unwrap();
    kura_ca::validate_leaf(&alpha_leaf, &alpha, &[&peer_dns("alpha")], now).unwrap();
}

#[tokio::test]
async fn a_leaf_near_expiry_is_renewed_before_it_expires() {
    let h = Harness::new();
    let a = h.add_instance(mesh("kura-acme-eu", "acme"));
    h.reconcile(&a).await;
    let ca = h.secret("kura-acme-peer-ca");
    let leaf = h.secret("kura-acme-eu-peer-tls");
    // 600 of 730 days later: still valid, but in the renewal window.
    *h.clock.lock().unwrap() += kura_ca::time::Duration::days(600);
    h.reconcile(&a).await;
    let renewed = h.secret("kura-acme-eu-peer-tls");
    assert_ne!(renewed["tls.crt"], leaf["tls.crt"], "leaf renewed");
    assert_eq!(h.secret("kura-acme-peer-ca"), ca, "CA kept");
    let now = *h.clock.lock().unwrap();
    let pki = kura_ca::AccountPki::from_secret_data(&ca, now).unwrap();
    let info = pki
        .validate_leaf(&renewed, &[&peer_dns("acme")], now)
        .unwrap();
    assert!(!info.needs_renewal(now));
}

#[tokio::test]
async fn garbage_ca_is_replaced_and_every_leaf_reissued() {
    let h = Harness::new();
    let a = h.add_instance(mesh("kura-acme-eu", "acme"));
    h.reconcile(&a).await;
    let leaf = h.secret("kura-acme-eu-peer-tls");
    h.api.patch(
        "Secret",
        "kura-acme-peer-ca",
        json!({"data": {"ca.pem": "Z2FyYmFnZQ=="}}),
    );
    h.reconcile(&a).await;
    let ca = h.secret("kura-acme-peer-ca");
    let new_leaf = h.secret("kura-acme-eu-peer-tls");
    assert_ne!(new_leaf["tls.crt"], leaf["tls.crt"]);
    assert_eq!(new_leaf["ca.pem"], ca["ca.pem"]);
}

#[tokio::test]
async fn storage_class_change_drives_the_migration() {
    let h = Harness::new();
    let mut v = fixture("private-nodeport.yaml");
    v["spec"]["storageClassName"] = json!("scw-bssd");
    let name = h.add_instance(v);
    h.reconcile(&name).await;
    // The StatefulSet controller created the claim of the old template.
    h.api
        .put(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-kura-acme-mac-0", "namespace": "kura",
            "labels": {"app.kubernetes.io/name": "kura", "app.kubernetes.io/instance": name}},
        "spec": {"storageClassName": "scw-bssd", "accessModes": ["ReadWriteOncePod"]}}));
    h.sts_ready(&name, 1);
    h.reconcile(&name).await;
    assert_eq!(h.status(&name)["phase"], "Ready");

    // 1. The class changes: the StatefulSet is deleted with orphan propagation.
    h.api.patch(
        "KuraInstance",
        &name,
        json!({"spec": {"storageClassName": "scw-local-nvme"}}),
    );
    h.api.clear_requests();
    h.reconcile(&name).await;
    let del = h
        .api
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path.contains("/statefulsets/"))
        .expect("StatefulSet deleted");
    assert_eq!(del.body["propagationPolicy"], "Orphan");
    assert!(h.api.get("StatefulSet", &name).is_none());
    let msg = h.status(&name)["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("storage class migration scw-bssd -> scw-local-nvme"),
        "{msg}"
    );

    // 2. Recreated with a new claim template; old claims wait for Ready pods.
    h.reconcile(&name).await;
    let sts = h.api.get("StatefulSet", &name).unwrap();
    let tmpl = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(tmpl["metadata"]["name"], "data-scw-local-nvme");
    assert_eq!(tmpl["spec"]["storageClassName"], "scw-local-nvme");
    let mounts = &sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert_eq!(mounts[0]["name"], "data-scw-local-nvme");
    let msg = h.status(&name)["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("waiting for pods on the new volumes"), "{msg}");
    assert!(
        h.api
            .get("PersistentVolumeClaim", "data-kura-acme-mac-0")
            .is_some()
    );

    // 3. New pods Ready: the old claims are removed.
    h.sts_ready(&name, 1);
    h.reconcile(&name).await;
    assert!(
        h.api
            .get("PersistentVolumeClaim", "data-kura-acme-mac-0")
            .is_none()
    );
    let st = h.status(&name);
    assert_eq!(st["phase"], "Ready");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("removed old claims data-kura-acme-mac-0")
    );
    // 4. Steady state: nothing left to migrate.
    h.reconcile(&name).await;
    assert!(h.status(&name).get("message").is_none_or(Value::is_null));
}

#[tokio::test]
async fn a_bad_spec_reports_pending_with_an_event_and_does_not_fail() {
    let h = Harness::new();
    for (i, (field, value, expected)) in [
        ("clientCIDRs", json!(["10.0.0.1/8"]), "spec.clientCIDRs[0]"),
        ("storageSize", json!("-5Gi"), "spec.storageSize"),
        ("accountHandle", json!("Not_Valid"), "spec.accountHandle"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut v = fixture("plain.yaml");
        v["metadata"]["name"] = json!(format!("kura-bad-{i}"));
        v["spec"][field] = value;
        let name = h.add_instance(v);
        let action = h.reconcile(&name).await;
        assert_eq!(
            action,
            kube::runtime::controller::Action::requeue(Duration::from_secs(300))
        );
        let st = h.status(&name);
        assert_eq!(st["phase"], "Pending");
        assert!(st["message"].as_str().unwrap().contains(expected), "{st}");
        assert!(h.api.get("StatefulSet", &name).is_none(), "nothing applied");
        // Reconciling the unchanged bad object again writes nothing (no hot loop).
        let before = h.api.requests().len();
        h.reconcile(&name).await;
        assert!(
            h.api.requests()[before..].iter().all(|r| r.method == "GET"),
            "a repeated bad spec must only read"
        );
    }
    let events: Vec<Value> = h
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/events"))
        .map(|r| r.body)
        .collect();
    assert!(
        events
            .iter()
            .filter(|e| e["reason"] == "InvalidSpec")
            .count()
            >= 3,
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["type"] == "Warning"));
}

#[tokio::test]
async fn deleting_the_last_instance_of_an_account_removes_the_account_objects() {
    let h = Harness::new();
    let a = h.add_instance(mesh("kura-acme-eu", "acme"));
    let b = h.add_instance(mesh("kura-acme-us", "acme"));
    h.reconcile(&a).await;
    h.reconcile(&b).await;
    let ts = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}});
    h.api.patch("KuraInstance", &a, ts.clone());
    h.reconcile(&a).await;
    let ki = h.api.get("KuraInstance", &a).unwrap();
    assert!(
        ki["metadata"]
            .get("finalizers")
            .is_none_or(|f| f.as_array().unwrap().is_empty())
    );
    // The real API server removes the object once the finalizer is gone.
    h.api.remove("KuraInstance", &a);
    assert!(
        h.api.get("Secret", "kura-acme-peer-ca").is_some(),
        "still used by {b}"
    );
    assert!(h.api.get("Service", "kura-acme-peers").is_some());
    h.api.patch("KuraInstance", &b, ts);
    h.reconcile(&b).await;
    assert!(h.api.get("Secret", "kura-acme-peer-ca").is_none());
    assert!(h.api.get("Service", "kura-acme-peers").is_none());
}

/// A real mTLS handshake over an in-memory pipe between two leaf Secrets.
async fn handshake(
    server_leaf: &kura_ca::SecretData,
    client_leaf: &kura_ca::SecretData,
    dns: &str,
) -> Result<(), String> {
    use kura_ca::{PeerIdentity, ServerOptions, TrustBundle, client_config, server_config};
    let e = |x: kura_ca::Error| x.to_string();
    let server = server_config(
        &PeerIdentity::from_secret_data(server_leaf).map_err(e)?,
        &TrustBundle::from_pem(&server_leaf["ca.pem"]).map_err(e)?,
        &ServerOptions::default(),
    )
    .map_err(e)?;
    let client = client_config(
        &PeerIdentity::from_secret_data(client_leaf).map_err(e)?,
        &TrustBundle::from_pem(&client_leaf["ca.pem"]).map_err(e)?,
        dns,
    )
    .map_err(e)?;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client.config.clone());
    let (s, c) = tokio::join!(
        acceptor.accept(a),
        connector.connect(client.server_name.clone(), b)
    );
    c.map_err(|e| format!("client: {e}"))?;
    let mut s = s.map_err(|e| format!("server: {e}"))?;
    // Drive the server side until the client's certificate has been checked.
    use tokio::io::AsyncWriteExt;
    s.flush().await.map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test]
async fn ca_rotation_goes_through_the_phases_without_peers_rejecting_each_other() {
    let h = Harness::new();
    let a = h.add_instance(mesh("kura-acme-eu", "acme"));
    let b = h.add_instance(mesh("kura-acme-us", "acme"));
    h.reconcile(&a).await;
    h.reconcile(&b).await;
    let original = h.secret("kura-acme-peer-ca");
    let dns = peer_dns("acme");
    let check_mesh = |h: &Harness| {
        let la = h.secret("kura-acme-eu-peer-tls");
        let lb = h.secret("kura-acme-us-peer-tls");
        (la, lb)
    };
    h.api.patch(
        "KuraInstance",
        &a,
        json!({"metadata": {"annotations": {"kura.tuist.dev/rotate-ca": "r1"}}}),
    );
    let mut phases = Vec::new();
    for step in 0..12 {
        let inst = if step % 2 == 0 { &a } else { &b };
        h.reconcile(inst).await;
        let ca = h.secret("kura-acme-peer-ca");
        let phase = if ca.contains_key("next-ca.pem") {
            "NextPublished"
        } else if ca.contains_key("previous-ca.pem") {
            "SigningWithNext"
        } else {
            "Stable"
        };
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        let (la, lb) = check_mesh(&h);
        handshake(&la, &lb, &dns)
            .await
            .unwrap_or_else(|e| panic!("step {step} ({phase}): b -> a rejected: {e}"));
        handshake(&lb, &la, &dns)
            .await
            .unwrap_or_else(|e| panic!("step {step} ({phase}): a -> b rejected: {e}"));
    }
    assert_eq!(phases, ["NextPublished", "SigningWithNext", "Stable"]);
    let rotated = h.secret("kura-acme-peer-ca");
    assert_ne!(rotated["ca.pem"], original["ca.pem"], "a new CA signs");
    let ca = h.api.get("Secret", "kura-acme-peer-ca").unwrap();
    assert_eq!(
        ca["metadata"]["annotations"]["kura.tuist.dev/rotation-token"],
        "r1"
    );
    // Both leaves are now signed by the new CA alone.
    let now = *h.clock.lock().unwrap();
    let pki = kura_ca::AccountPki::from_secret_data(&rotated, now).unwrap();
    for inst in [&a, &b] {
        pki.validate_leaf(&h.secret(&format!("{inst}-peer-tls")), &[&dns], now)
            .unwrap();
    }
    // The same token does not rotate again.
    h.reconcile(&a).await;
    assert_eq!(h.secret("kura-acme-peer-ca"), rotated);
}

#[tokio::test]
async fn leaves_of_different_accounts_fail_the_handshake() {
    let h = Harness::new();
    let a = h.add_instance(mesh("kura-alpha", "alpha"));
    let b = h.add_instance(mesh("kura-bravo", "bravo"));
    h.reconcile(&a).await;
    h.reconcile(&b).await;
    let la = h.secret("kura-alpha-peer-tls");
    let lb = h.secret("kura-bravo-peer-tls");
    assert!(handshake(&la, &lb, &peer_dns("alpha")).await.is_err());
    assert!(handshake(&la, &la, &peer_dns("alpha")).await.is_ok());
}

#[tokio::test]
async fn volumes_are_expanded_never_shrunk() {
    let h = Harness::new();
    let name = h.add_instance(fixture("private-nodeport.yaml")); // 100Gi
    h.reconcile(&name).await;
    let claim = |n: &str, size: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": n, "namespace": "kura",
            "labels": {"app.kubernetes.io/name": "kura", "app.kubernetes.io/instance": "kura-acme-mac"}},
        "spec": {"storageClassName": "scw-local-nvme", "resources": {"requests": {"storage": size}}}})
    };
    h.api.put(claim("data-kura-acme-mac-0", "50Gi"));
    h.api.put(claim("data-kura-acme-mac-1", "200Gi"));
    h.reconcile(&name).await;
    let size = |n: &str| {
        h.api.get("PersistentVolumeClaim", n).unwrap()["spec"]["resources"]["requests"]["storage"]
            .clone()
    };
    assert_eq!(size("data-kura-acme-mac-0"), "100Gi");
    assert_eq!(size("data-kura-acme-mac-1"), "200Gi");
}

#[tokio::test]
async fn an_unchanged_status_is_not_rewritten_until_the_restamp_interval() {
    // A status write is a watch event: rewriting it every reconcile would loop.
    let h = Harness::new();
    let name = h.add_instance(fixture("plain.yaml"));
    h.reconcile(&name).await;
    let status_writes = |h: &Harness| {
        h.api
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.contains("/status"))
            .count()
    };
    h.api.clear_requests();
    h.reconcile(&name).await;
    assert_eq!(status_writes(&h), 0, "unchanged status rewritten");
    *h.clock.lock().unwrap() += kura_ca::time::Duration::seconds(61);
    h.reconcile(&name).await;
    assert_eq!(status_writes(&h), 1, "stale stamp must be refreshed");
    // A real change is written at once.
    h.sts_ready(&name, 3);
    h.api.clear_requests();
    h.reconcile(&name).await;
    assert_eq!(status_writes(&h), 1);
    assert_eq!(h.status(&name)["phase"], "Ready");
}
