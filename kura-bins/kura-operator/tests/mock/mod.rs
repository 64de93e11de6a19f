//! A small in-memory Kubernetes API server behind kube's `tower-test` mock
//! transport: GET / LIST (label selectors) / server-side apply / merge patch /
//! DELETE / POST over a map of objects. Every request is recorded so tests can
//! check it against the RBAC table.
//!
//! Behaviour that matters for the operator is modelled on the real API server:
//! a `NodePort` Service port applied without `nodePort` gets a **new**
//! allocation (the pessimistic case the operator must defend against), applies
//! keep `status`, `metadata.generation` bumps when `spec` changes, and unknown
//! objects answer 404 `Status` bodies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// collection path (`/api/v1/namespaces/kura/services`) -> name -> object
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    requests: Vec<Recorded>,
    next_node_port: i64,
    next_rv: u64,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

pub fn collection(kind: &str, ns: &str) -> String {
    match kind {
        "Service" => format!("/api/v1/namespaces/{ns}/services"),
        "Secret" => format!("/api/v1/namespaces/{ns}/secrets"),
        "Pod" => format!("/api/v1/namespaces/{ns}/pods"),
        "PersistentVolumeClaim" => format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
        "Node" => "/api/v1/nodes".to_owned(),
        "StatefulSet" => format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
        "PodDisruptionBudget" => format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"),
        "NetworkPolicy" => format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"),
        "Ingress" => format!("/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"),
        "KuraInstance" => format!("/apis/kura.tuist.dev/v1alpha1/namespaces/{ns}/kurainstances"),
        "Event" => format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        other => panic!("unknown kind {other}"),
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn not_found(name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{name} not found"), "reason": "NotFound", "code": 404}),
    )
}

fn matches_selector(obj: &Value, selector: &str) -> bool {
    if selector.is_empty() {
        return true;
    }
    selector.split(',').all(|kv| {
        let (k, v) = kv.split_once('=').unwrap();
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

impl FakeApi {
    pub fn new() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi {
            state: Arc::new(Mutex::new(State {
                next_node_port: 30000,
                next_rv: 1,
                ..State::default()
            })),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                };
                let ct = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let pq = parts.uri.path_and_query().unwrap().as_str().to_owned();
                let (code, value) = server.handle(parts.method.as_str(), &pq, &ct, body);
                let resp = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap();
                send.send_response(resp);
            }
        });
        (Client::new(service, "kura"), api)
    }

    fn handle(&self, method: &str, pq: &str, ct: &str, body: Value) -> (StatusCode, Value) {
        let mut st = self.state.lock().unwrap();
        st.requests.push(Recorded {
            method: method.to_owned(),
            path: pq.to_owned(),
            content_type: ct.to_owned(),
            body: body.clone(),
        });
        let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), decode(v))
            })
            .collect();
        // Split into collection / name / subresource.
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let base = if segs[0] == "api" { 2 } else { 3 };
        let rest = &segs[base..];
        let coll_len = if rest.first() == Some(&"namespaces") {
            base + 3
        } else {
            base + 1
        };
        let coll = format!("/{}", segs[..coll_len.min(segs.len())].join("/"));
        let name = segs.get(coll_len).map(|s| s.to_string());
        let sub = segs.get(coll_len + 1).map(|s| s.to_string());
        st.next_rv += 1;
        let rv = st.next_rv.to_string();
        match (method, name) {
            ("GET", Some(name)) => match st.objects.get(&coll).and_then(|m| m.get(&name)) {
                Some(obj) => (StatusCode::OK, obj.clone()),
                None => not_found(&name),
            },
            ("GET", None) => {
                let sel = params.get("labelSelector").cloned().unwrap_or_default();
                let items: Vec<Value> = st
                    .objects
                    .get(&coll)
                    .map(|m| {
                        m.values()
                            .filter(|o| matches_selector(o, &sel))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            ("POST", None) => {
                let mut obj = body;
                let name = obj["metadata"]["name"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("generated-{rv}"));
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["resourceVersion"] = json!(rv);
                st.objects
                    .entry(coll)
                    .or_default()
                    .insert(name, obj.clone());
                (StatusCode::CREATED, obj)
            }
            ("PATCH", Some(name)) => {
                let existing = st.objects.get(&coll).and_then(|m| m.get(&name)).cloned();
                let mut obj = if ct.starts_with("application/apply-patch") {
                    let mut obj = body;
                    if let Some(ex) = &existing {
                        obj["status"] = ex["status"].clone();
                        obj["metadata"]["uid"] = ex["metadata"]["uid"].clone();
                        obj["metadata"]["finalizers"] = ex["metadata"]["finalizers"].clone();
                        let gen_ = ex["metadata"]["generation"].as_i64().unwrap_or(1);
                        let bump = ex["spec"] != obj["spec"];
                        obj["metadata"]["generation"] = json!(if bump { gen_ + 1 } else { gen_ });
                    } else {
                        obj["metadata"]["uid"] = json!(format!("uid-{name}-{rv}"));
                        obj["metadata"]["generation"] = json!(1);
                    }
                    if obj["kind"] == "Service" && obj["spec"]["type"] == "NodePort" {
                        let n = obj["spec"]["ports"].as_array().map(Vec::len).unwrap_or(0);
                        for i in 0..n {
                            if obj["spec"]["ports"][i]["nodePort"].as_i64().is_none() {
                                st.next_node_port += 1;
                                obj["spec"]["ports"][i]["nodePort"] = json!(st.next_node_port);
                            }
                        }
                    }
                    obj
                } else {
                    let Some(mut obj) = existing else {
                        return not_found(&name);
                    };
                    let mut patch = body;
                    if sub.as_deref() == Some("status") {
                        patch = json!({"status": patch["status"].clone()});
                    }
                    if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    merge(&mut obj, &patch);
                    obj
                };
                obj["metadata"]["resourceVersion"] = json!(rv);
                if obj["status"].is_null() {
                    obj.as_object_mut().unwrap().remove("status");
                }
                if obj["metadata"]["finalizers"].is_null() {
                    obj["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .remove("finalizers");
                }
                st.objects
                    .entry(coll)
                    .or_default()
                    .insert(name, obj.clone());
                (StatusCode::OK, obj)
            }
            ("DELETE", Some(name)) => match st.objects.get_mut(&coll).and_then(|m| m.remove(&name))
            {
                Some(obj) => (StatusCode::OK, obj),
                None => not_found(&name),
            },
            (m, n) => panic!("fake API: unsupported {m} {pq} ({n:?})"),
        }
    }

    /// Puts an object (JSON with apiVersion/kind/metadata).
    pub fn put(&self, obj: Value) {
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("kura")
            .to_owned();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        self.state
            .lock()
            .unwrap()
            .objects
            .entry(collection(&kind, &ns))
            .or_default()
            .insert(name, obj);
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&collection(kind, "kura"))
            .and_then(|m| m.get(name))
            .cloned()
    }

    pub fn names(&self, kind: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&collection(kind, "kura"))
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Merges `patch` into a stored object (e.g. a StatefulSet status).
    pub fn patch(&self, kind: &str, name: &str, patch: Value) {
        let mut st = self.state.lock().unwrap();
        let obj = st
            .objects
            .get_mut(&collection(kind, "kura"))
            .and_then(|m| m.get_mut(name))
            .unwrap_or_else(|| panic!("{kind}/{name} missing"));
        merge(obj, &patch);
    }

    pub fn remove(&self, kind: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .objects
            .get_mut(&collection(kind, "kura"))
            .and_then(|m| m.remove(name))
            .unwrap_or_else(|| panic!("{kind}/{name} missing"));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}
