//! Validates every core golden manifest against the Kubernetes OpenAPI schemas
//! with `kubernetes-validate` (PyPI), in strict mode (unknown fields fail).
//!
//! The `CiliumNetworkPolicy` golden file is not validated: it is a CRD and
//! kubernetes-validate only ships schemas for built-in kinds.
//!
//! When `kubernetes-validate` is not installed the test is skipped with a
//! message, except under CI (`CI` set), where it fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::path::Path;
use std::process::Command;

const TOOL: &str = "kubernetes-validate";

/// The Kubernetes version the crate is built against (k8s-openapi's feature).
#[allow(unused_assignments)]
fn kubernetes_version() -> &'static str {
    let mut version = "1.33.0";
    k8s_openapi::k8s_if_1_34! { version = "1.34.0"; }
    k8s_openapi::k8s_if_1_35! { version = "1.35.0"; }
    k8s_openapi::k8s_if_1_36! { version = "1.36.0"; }
    k8s_openapi::k8s_if_1_37! { version = "1.37.0"; }
    version
}

fn tool_available() -> bool {
    match Command::new(TOOL).arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ if std::env::var_os("CI").is_some() => {
            panic!("{TOOL} is not installed; CI must install it (pip install kubernetes-validate)")
        }
        _ => {
            eprintln!(
                "SKIPPED: {TOOL} not found (pip install kubernetes-validate); not validating manifests"
            );
            false
        }
    }
}

fn validate(files: &[&Path]) -> std::process::Output {
    Command::new(TOOL)
        .args(["--strict", "--kubernetes-version", kubernetes_version()])
        .args(files)
        .output()
        .unwrap()
}

#[test]
fn every_core_golden_manifest_passes_kubernetes_validate() {
    if !tool_available() {
        return;
    }
    let dir = common::golden_dir();
    let paths: Vec<_> = common::cases()
        .into_iter()
        .filter(|(_, core, _)| *core)
        .map(|(name, _, _)| dir.join(name))
        .collect();
    assert!(
        paths.len() >= 6,
        "expected the NetworkPolicy and Service goldens"
    );
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let out = validate(&refs);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{TOOL} failed:\n{report}");
    // Every file must have been checked against a schema, not skipped.
    for path in &paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            report
                .lines()
                .any(|l| l.contains(name) && l.contains("passed")),
            "{name} was not validated:\n{report}"
        );
    }
}

/// Guards the test above: the validator must actually reject a bad manifest
/// (an unknown field, and a port of the wrong type).
#[test]
fn kubernetes_validate_rejects_a_broken_manifest() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x\nspec:\n  podSelector: {}\n  ingres: []\n",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  type: NodePort\n  ports:\n  - port: http\n",
    ];
    for (i, manifest) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        let out = validate(&[&path]);
        assert!(!out.status.success(), "{TOOL} accepted:\n{manifest}");
    }
}
