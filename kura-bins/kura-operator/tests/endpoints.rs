//! The endpoint hand-off API, in-process with `oneshot`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use kura_ca::time::format_description::well_known::Rfc3339;
use kura_ca::time::{Duration, OffsetDateTime};
use kura_operator::crd::KuraInstance;
use kura_operator::endpoints::{EndpointState, app};
use serde_json::{Value, json};
use tower::ServiceExt;

fn instance(
    name: &str,
    account: &str,
    platforms: &str,
    node_port: bool,
    status: Value,
) -> Arc<KuraInstance> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "kura.tuist.dev/v1alpha1", "kind": "KuraInstance",
            "metadata": {"name": name, "namespace": "kura",
                "annotations": {"kura.tuist.dev/runner-platforms": platforms}},
            "spec": {"accountHandle": account, "tenantID": "1", "region": "fr-par",
                "image": "x", "exposeNodePort": node_port},
            "status": status
        }))
        .unwrap(),
    )
}

async fn get(state: &EndpointState, uri: &str) -> (StatusCode, Value) {
    let resp = app(state.clone(), true)
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn hands_off_node_port_and_cluster_dns_endpoints_and_refuses_stale_or_incomplete_ones() {
    let now = OffsetDateTime::now_utc();
    let t = |d: i64| (now - Duration::seconds(d)).format(&Rfc3339).unwrap();
    let instances = Arc::new(Mutex::new(vec![
        instance(
            "kura-acme-mac",
            "acme",
            "macos",
            true,
            json!({"phase": "Ready", "lastReconciledAt": t(10), "nodeAddress": "172.16.0.2", "nodePortCache": 31234}),
        ),
        instance(
            "kura-acme-linux",
            "acme",
            "linux",
            false,
            json!({"phase": "Ready", "lastReconciledAt": t(30)}),
        ),
        instance(
            "kura-stale",
            "stale",
            "macos",
            true,
            json!({"phase": "Ready", "lastReconciledAt": t(121), "nodeAddress": "172.16.0.2", "nodePortCache": 31234}),
        ),
        instance(
            "kura-nolabel",
            "nolabel",
            "macos,linux",
            true,
            json!({"phase": "Ready", "lastReconciledAt": t(5), "nodePortCache": 31234}),
        ),
    ]));
    let list = instances.clone();
    let state = EndpointState {
        instances: Arc::new(move || list.lock().unwrap().clone()),
        clock: Arc::new(move || now),
    };
    let (code, body) = get(&state, "/v1/endpoints/acme?platform=macos").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["url"], "http://172.16.0.2:31234");
    assert_eq!(body["instance"], "kura-acme-mac");
    assert_eq!(body["confirmed_at"], t(10));
    let (code, body) = get(&state, "/v1/endpoints/acme?platform=linux").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body["url"],
        "http://kura-acme-linux.kura.svc.cluster.local:4000"
    );
    let (code, body) = get(&state, "/v1/endpoints/stale?platform=macos").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("120 s"));
    let (code, body) = get(&state, "/v1/endpoints/nolabel?platform=linux").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].as_str().unwrap().contains("nodeAddress"));
    assert_eq!(
        get(&state, "/v1/endpoints/acme?platform=windows").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&state, "/v1/endpoints/acme").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&state, "/v1/endpoints/nobody?platform=macos").await.0,
        StatusCode::NOT_FOUND
    );
    // Exactly 120 s is still fresh; a Pending instance is incomplete.
    instances.lock().unwrap().push(instance(
        "kura-edge",
        "edge",
        "macos",
        false,
        json!({"phase": "Ready", "lastReconciledAt": t(120)}),
    ));
    instances.lock().unwrap().push(instance(
        "kura-pending",
        "pending",
        "macos",
        false,
        json!({"phase": "Pending", "lastReconciledAt": t(1)}),
    ));
    assert_eq!(
        get(&state, "/v1/endpoints/edge?platform=macos").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&state, "/v1/endpoints/pending?platform=macos").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn the_hand_off_is_opt_in() {
    let state = EndpointState {
        instances: Arc::new(Vec::new),
        clock: Arc::new(OffsetDateTime::now_utc),
    };
    let resp = app(state.clone(), false)
        .oneshot(
            Request::get("/v1/endpoints/acme?platform=macos")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app(state, false)
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
