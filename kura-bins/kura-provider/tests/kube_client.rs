//! `KubeClient` at the transport boundary: a tower service stands in for
//! the API server, records every request and answers like one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

use std::sync::{Arc, Mutex};

use http_body_util::BodyExt as _;
use kura_provider::crd::{ScalewayInstanceMachine, ScalewayInstanceMachineSpec};
use kura_provider::kube_impl::KubeClient;
use kura_provider::kube_side::KubeApi;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

fn mock(
    answer: impl Fn(&str, &str, &Value) -> (u16, Value) + Send + Sync + 'static,
) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let log = log.clone();
        let answer = answer.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            let method = parts.method.to_string();
            log.lock().unwrap().push(Seen {
                method: method.clone(),
                path: path.clone(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default(),
                body: body.clone(),
            });
            let (status, out) = answer(&method, &path, &body);
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&out).unwrap()))
                    .unwrap(),
            )
        }
    });
    (kube::Client::new(svc, "default"), seen)
}

fn status_404() -> (u16, Value) {
    (
        404,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"not found","reason":"NotFound","code":404}),
    )
}

#[tokio::test]
async fn nodes_are_read_and_patched_with_merge_patches() {
    let (client, seen) = mock(|method, path, body| match (method, path) {
        ("GET", "/api/v1/nodes/n1") => (
            200,
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"a":"b"}},
                   "spec":{"providerID":"scaleway://instance/fr-par-1/x"},
                   "status":{"conditions":[{"type":"Ready","status":"True"}]}}),
        ),
        ("GET", "/api/v1/nodes/missing") => status_404(),
        ("PATCH", "/api/v1/nodes/n1") => (
            200,
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"},"echo":body}),
        ),
        _ => status_404(),
    });
    let kube = KubeClient::new(client, "kura-provider", None, "v1beta1");
    let n = kube.get_node("n1").await.unwrap().unwrap();
    assert!(n.ready);
    assert_eq!(
        n.provider_id.as_deref(),
        Some("scaleway://instance/fr-par-1/x")
    );
    assert_eq!(n.labels.get("a").map(String::as_str), Some("b"));
    assert!(kube.get_node("missing").await.unwrap().is_none());
    kube.set_node_label("n1", "tuist.dev/pn-ipv4", "172.16.0.2")
        .await
        .unwrap();
    kube.set_node_provider_id("n1", "scaleway://instance/fr-par-1/x")
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let patches: Vec<&Seen> = seen.iter().filter(|s| s.method == "PATCH").collect();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert_eq!(
        patches[0].body,
        json!({"metadata":{"labels":{"tuist.dev/pn-ipv4":"172.16.0.2"}}})
    );
    assert_eq!(
        patches[1].body,
        json!({"spec":{"providerID":"scaleway://instance/fr-par-1/x"}})
    );
}

#[tokio::test]
async fn capi_gate_reads_v1beta1_and_v1beta2_shapes() {
    let (client, _) = mock(|_, path, _| match path {
        "/apis/cluster.x-k8s.io/v1beta1/namespaces/ns/machines/m" => (
            200,
            json!({"apiVersion":"cluster.x-k8s.io/v1beta1","kind":"Machine","metadata":{"name":"m"},"spec":{"clusterName":"c","version":"v1.34.1"}}),
        ),
        "/apis/cluster.x-k8s.io/v1beta1/namespaces/ns/clusters/c" => (
            200,
            json!({"apiVersion":"cluster.x-k8s.io/v1beta1","kind":"Cluster","metadata":{"name":"c"},"spec":{"paused":true},"status":{"infrastructureReady":true}}),
        ),
        "/apis/cluster.x-k8s.io/v1beta1/namespaces/ns/clusters/d" => (
            200,
            json!({"apiVersion":"cluster.x-k8s.io/v1beta1","kind":"Cluster","metadata":{"name":"d"},"spec":{},"status":{"initialization":{"infrastructureProvisioned":true}}}),
        ),
        _ => status_404(),
    });
    let kube = KubeClient::new(client, "kura-provider", None, "v1beta1");
    let m = kube.get_capi_machine("ns", "m").await.unwrap().unwrap();
    assert_eq!(m.cluster_name, "c");
    assert_eq!(m.version.as_deref(), Some("v1.34.1"));
    let c = kube.get_capi_cluster("ns", "c").await.unwrap().unwrap();
    assert!(c.paused && c.infrastructure_ready);
    let d = kube.get_capi_cluster("ns", "d").await.unwrap().unwrap();
    assert!(!d.paused && d.infrastructure_ready);
    assert!(kube.get_capi_machine("ns", "nope").await.unwrap().is_none());
}

#[tokio::test]
async fn saving_a_machine_patches_finalizers_with_a_precondition_then_replaces_status() {
    let (client, seen) = mock(|method, path, body| {
        let base = "/apis/infrastructure.cluster.x-k8s.io/v1alpha1/namespaces/default/scalewayinstancemachines/x";
        let obj = json!({
            "apiVersion":"infrastructure.cluster.x-k8s.io/v1alpha1","kind":"ScalewayInstanceMachine",
            "metadata":{"name":"x","namespace":"default","resourceVersion":"8","finalizers":["scalewayinstance.cluster.x-k8s.io/finalizer"]},
            "spec":{"privateNetworkID":"pn"}
        });
        match (method, path) {
            ("PATCH", p) if p == base => (200, obj),
            ("PUT", p) if p == format!("{base}/status") => (200, body.clone()),
            ("DELETE", "/api/v1/namespaces/kube-system/secrets/gone") => status_404(),
            _ => status_404(),
        }
    });
    let kube = KubeClient::new(client, "kura-provider", None, "v1beta1");
    let spec: ScalewayInstanceMachineSpec =
        serde_json::from_value(json!({"privateNetworkID":"pn"})).unwrap();
    let mut m = ScalewayInstanceMachine::new("x", spec);
    m.metadata.namespace = Some("default".into());
    m.metadata.resource_version = Some("7".into());
    m.metadata.finalizers = Some(vec!["scalewayinstance.cluster.x-k8s.io/finalizer".into()]);
    // Cleared fields must disappear: nothing sets nextRetryAt here.
    let status = kura_provider::crd::ScalewayInstanceMachineStatus {
        server_id: Some("srv".into()),
        ..Default::default()
    };
    m.status = Some(status);
    let saved = kube.save_instance_machine(&m).await.unwrap();
    assert_eq!(saved.status.unwrap().server_id.as_deref(), Some("srv"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(seen[0].body["metadata"]["resourceVersion"], "7");
    assert_eq!(
        seen[0].body["metadata"]["finalizers"],
        json!(["scalewayinstance.cluster.x-k8s.io/finalizer"])
    );
    assert_eq!(seen[1].method, "PUT");
    assert!(seen[1].path.ends_with("/scalewayinstancemachines/x/status"));
    assert_eq!(seen[1].body["metadata"]["resourceVersion"], "8");
    assert_eq!(seen[1].body["status"]["serverID"], "srv");
    assert!(seen[1].body["status"].get("nextRetryAt").is_none());
    // Deleting an absent Secret is fine.
    kube.delete_secret("kube-system", "gone").await.unwrap();
}
