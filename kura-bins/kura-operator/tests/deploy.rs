//! The committed `deploy/` manifests: drift, schema validity, structural CRD.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use kube::CustomResourceExt;
use kura_operator::crd::KuraInstance;
use kura_operator::manifests;
use serde_json::Value;

#[test]
fn deploy_files_match_the_code() {
    let dir = common::crate_dir().join("deploy");
    for (name, text) in manifests::deploy_files().unwrap() {
        common::golden(&dir.join(name), &text);
    }
}

#[test]
fn cli_prints_the_committed_manifests() {
    let dir = common::crate_dir().join("deploy");
    for (args, file) in [
        (&["crd"][..], "crd.yaml"),
        (&["rbac"][..], "rbac.yaml"),
        (&["deployment"][..], "operator.yaml"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kura-operator"))
            .args(args)
            .env_remove("KURA_OPERATOR_NAMESPACE")
            .env_remove("KURA_OPERATOR_IMAGE")
            .output()
            .unwrap();
        assert!(out.status.success());
        let expected = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            expected,
            "kura-operator {args:?}"
        );
    }
}

#[test]
fn deploy_files_pass_kubernetes_validate() {
    if !common::tool_available() {
        return;
    }
    let dir = common::crate_dir().join("deploy");
    let files: Vec<_> = ["crd.yaml", "rbac.yaml", "operator.yaml"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    // 1 CRD + 5 RBAC objects + 1 Deployment.
    common::validate(&files, 7);
}

/// Every node of the schema must carry a type (or an explicit
/// int-or-string / preserve-unknown-fields marker), with no `$ref`,
/// `anyOf`/`oneOf` without types: the API server only keeps fields of a
/// structural schema (the reference lost `exposeNodePort` to pruning).
fn assert_structural(path: &str, schema: &Value) {
    let obj = schema
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    assert!(!obj.contains_key("$ref"), "{path}: $ref");
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    assert!(typed, "{path}: no type in {schema}");
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get(key) {
            for branch in list.as_array().unwrap() {
                // Branches may only restate validation, never types/properties.
                let b = branch.as_object().unwrap();
                assert!(
                    !b.contains_key("properties") && !b.contains_key("type"),
                    "{path}.{key}: branch declares structure: {branch}"
                );
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            assert_structural(&format!("{path}.{k}"), v);
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(&format!("{path}[]"), items);
    }
    if let Some(Value::Object(_)) = obj.get("additionalProperties") {
        assert_structural(&format!("{path}{{}}"), &obj["additionalProperties"]);
    }
}

fn schema() -> Value {
    let crd = KuraInstance::crd();
    let v = crd.spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema
        .unwrap();
    serde_json::to_value(v).unwrap()
}

#[test]
fn crd_schema_is_structural() {
    assert_structural("", &schema());
}

#[test]
fn crd_schema_keeps_every_reference_field() {
    let s = schema();
    let spec = s["properties"]["spec"]["properties"].as_object().unwrap();
    for field in [
        "accountHandle",
        "tenantID",
        "region",
        "image",
        "replicas",
        "publicHost",
        "ingressClassName",
        "peerTLSSecretName",
        "storageClassName",
        "storageSize",
        "nodeSelector",
        "tolerations",
        "extraEnv",
        "extensionScript",
        "private",
        "exposeNodePort",
        "clientCIDRs",
        "podAnnotations",
        "egressGuaranteedMbps",
        "mesh",
        "meshPublicPeerHost",
        "meshExternalPeers",
    ] {
        assert!(
            spec.contains_key(field),
            "spec.{field} missing from the schema"
        );
    }
    assert_eq!(spec.len(), 22, "unexpected spec fields: {:?}", spec.keys());
    let mut required: Vec<_> = s["properties"]["spec"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["accountHandle", "image", "region", "tenantID"]);
    let status = s["properties"]["status"]["properties"].as_object().unwrap();
    for field in [
        "phase",
        "publicURL",
        "observedImage",
        "readyReplicas",
        "message",
        "lastReconciledAt",
        "nodeAddress",
        "nodePortCache",
    ] {
        assert!(status.contains_key(field), "status.{field} missing");
    }
}
