//! The committed manifests under `deploy/` are what the binary prints
//! (drift test; regenerate with `KURA_BLESS=1 cargo test -p kura-provider
//! --test deploy`), and they pass `kubernetes-validate --strict` (skipped
//! when the tool is missing locally, required under CI).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn check(file: &str, rendered: &str) {
    let path = deploy_dir().join(file);
    if std::env::var_os("KURA_BLESS").is_some() {
        std::fs::write(&path, rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with KURA_BLESS=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        committed, rendered,
        "deploy/{file} drifted from the code; regenerate with KURA_BLESS=1"
    );
}

#[test]
fn committed_crds_match_the_code() {
    check("crds.yaml", &kura_provider::crd::crds_yaml().unwrap());
}

#[test]
fn committed_rbac_matches_the_code() {
    check(
        "rbac.yaml",
        &kura_provider::rbac::rbac_yaml("kura-system").unwrap(),
    );
}

#[test]
fn cli_prints_the_committed_manifests() {
    for (cmd, file) in [("crds", "crds.yaml"), ("rbac", "rbac.yaml")] {
        let out = Command::new(env!("CARGO_BIN_EXE_kura-provider"))
            .arg(cmd)
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            std::fs::read_to_string(deploy_dir().join(file)).unwrap()
        );
    }
}

#[test]
fn crds_have_the_reference_names_defaults_and_status() {
    let docs: Vec<serde_json::Value> = kura_provider::crd::crds_yaml()
        .unwrap()
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    let sim = &docs[0];
    assert_eq!(
        sim["metadata"]["name"],
        "scalewayinstancemachines.infrastructure.cluster.x-k8s.io"
    );
    assert_eq!(
        sim["spec"]["names"]["shortNames"],
        serde_json::json!(["sim"])
    );
    assert_eq!(sim["spec"]["scope"], "Namespaced");
    let v = &sim["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert!(v["subresources"]["status"].is_object());
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["commercialType"]["default"], "PRO2-S");
    assert_eq!(spec["zone"]["default"], "fr-par-1");
    assert_eq!(spec["image"]["default"], "ubuntu_noble");
    assert_eq!(spec["rootVolumeGB"]["default"], 50);
    assert!(
        spec["providerID"].is_object()
            && spec["privateNetworkID"].is_object()
            && spec["nodeTaints"].is_object()
    );
    let status = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    for f in [
        "ready",
        "serverID",
        "addresses",
        "phase",
        "failureReason",
        "failureMessage",
        "conditions",
        "failureAttempts",
    ] {
        assert!(status[f].is_object(), "status.{f}");
    }
    let phases = status["phase"]["enum"].as_array().unwrap();
    assert_eq!(phases.len(), 6, "{phases:?}");

    let semm = &docs[1];
    assert_eq!(
        semm["spec"]["names"]["shortNames"],
        serde_json::json!(["semm"])
    );
    let v = &semm["spec"]["versions"][0];
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["offerType"]["default"], "EM-B220E-NVME");
    assert_eq!(spec["os"]["default"], "ubuntu_noble");
    for f in [
        "privateNetworkName",
        "privateNetworkCIDR",
        "nodeTaints",
        "providerID",
    ] {
        assert!(spec[f].is_object(), "spec.{f}");
    }
    let status = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert!(status["privateNetworkVLAN"].is_object());
    assert_eq!(status["phase"]["enum"].as_array().unwrap().len(), 8);
}

#[test]
fn rbac_is_least_privilege() {
    let role = kura_provider::rbac::cluster_role();
    let rules = role.rules.unwrap();
    for r in &rules {
        assert!(!r.verbs.iter().any(|v| v == "*"), "{r:?}");
        assert!(
            !r.resources
                .iter()
                .flatten()
                .any(|x| x == "*" || x == "secrets"),
            "{r:?}"
        );
        assert!(
            !r.verbs.iter().any(|v| v == "delete"),
            "cluster-wide delete: {r:?}"
        );
    }
    let nodes = rules
        .iter()
        .find(|r| r.resources.iter().flatten().any(|x| x == "nodes"))
        .unwrap();
    assert!(nodes.verbs.contains(&"patch".to_owned()));
    let capi = rules
        .iter()
        .find(|r| {
            r.api_groups
                .iter()
                .flatten()
                .any(|g| g == "cluster.x-k8s.io")
        })
        .unwrap();
    assert_eq!(capi.verbs, vec!["get", "list", "watch"]);
}

fn tool_available() -> bool {
    match Command::new("kubernetes-validate")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => true,
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "kubernetes-validate is not installed; CI must install it (pip install kubernetes-validate)"
            )
        }
        _ => {
            println!("SKIPPED: kubernetes-validate not found; not validating deploy/");
            false
        }
    }
}

#[test]
fn deploy_manifests_pass_kubernetes_validate() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // One document per file, so the report names each.
    let mut paths = Vec::new();
    for file in ["crds.yaml", "rbac.yaml"] {
        let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
        for (i, doc) in text
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .enumerate()
        {
            let p = dir.path().join(format!("{file}-{i}.yaml"));
            std::fs::write(&p, doc).unwrap();
            paths.push(p);
        }
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.34.0"])
        .args(&paths)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{report}"
    );
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            report
                .lines()
                .any(|l| l.contains(name) && l.contains("passed")),
            "{name} was not validated:\n{report}"
        );
    }
    assert_eq!(paths.len(), 9);
}
