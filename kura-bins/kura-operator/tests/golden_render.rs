//! Golden renders of `kura-operator render` for the four cases of the issue,
//! validated with kubernetes-validate.
//!
//! Secret data (freshly generated keys) is replaced by a fixed placeholder
//! before comparing; `tests/render.rs` checks the certificates themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const PLACEHOLDER: &str = "UkVEQUNURUQ="; // base64("REDACTED")

fn render_cli(fixture: &str, live: Option<&str>) -> String {
    let dir = common::crate_dir().join("tests/fixtures");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kura-operator"));
    cmd.arg("render").arg("-f").arg(dir.join(fixture));
    if let Some(live) = live {
        cmd.arg("--live").arg(dir.join(live));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "render {fixture} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn normalise(stream: &str) -> String {
    let mut out = String::new();
    for doc in serde_norway::Deserializer::from_str(stream) {
        let mut v = Value::deserialize(doc).unwrap();
        if v["kind"] == "Secret" {
            for (_, val) in v["data"].as_object_mut().unwrap() {
                *val = Value::String(PLACEHOLDER.to_owned());
            }
        }
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&v).unwrap());
    }
    out
}

const CASES: &[(&str, Option<&str>, &str, usize)] = &[
    (
        "private-nodeport.yaml",
        Some("live-nodeport"),
        "private-nodeport.yaml",
        5,
    ),
    ("public-ingress.yaml", None, "public-ingress.yaml", 6),
    ("mesh.yaml", None, "mesh.yaml", 8),
    ("plain.yaml", None, "plain.yaml", 5),
];

fn golden_path(name: &str) -> PathBuf {
    common::crate_dir().join("tests/golden").join(name)
}

#[test]
fn golden_renders_match() {
    for (fixture, live, golden, count) in CASES {
        let text = normalise(&render_cli(fixture, *live));
        assert_eq!(text.matches("---\n").count(), *count, "{fixture}:\n{text}");
        common::golden(&golden_path(golden), &text);
    }
}

#[test]
fn golden_renders_pass_kubernetes_validate() {
    if !common::tool_available() {
        return;
    }
    let files: Vec<_> = CASES.iter().map(|(_, _, g, _)| golden_path(g)).collect();
    let total = CASES.iter().map(|(_, _, _, n)| n).sum();
    common::validate(&files, total);
}

#[test]
fn live_node_port_is_preserved_and_spec_facts_are_rendered() {
    let text = render_cli("private-nodeport.yaml", Some("live-nodeport"));
    assert!(text.contains("nodePort: 31234"), "{text}");
    let fresh = render_cli("private-nodeport.yaml", None);
    assert!(!fresh.contains("nodePort:"), "{fresh}");
    // client CIDRs as ipBlocks, egress annotation kept, extended resource set.
    assert!(text.contains("cidr: 172.16.0.0/22") && text.contains("cidr: 10.20.0.0/16"));
    assert!(text.contains("kubernetes.io/egress-bandwidth: 500M"));
    assert!(text.contains("tuist.dev/egress-mbps: '500'"), "{text}");
    // private: no Ingress despite publicHost; replicas 1: no PDB.
    assert!(!text.contains("kind: Ingress") && !text.contains("kind: PodDisruptionBudget"));
}

#[test]
fn render_reports_a_bad_spec_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let base =
        std::fs::read_to_string(common::crate_dir().join("tests/fixtures/plain.yaml")).unwrap();
    for (patch, expected) in [
        (
            "  clientCIDRs: [\"10.0.0.1/8\"]\n",
            "spec.clientCIDRs[0] \"10.0.0.1/8\"",
        ),
        ("  storageSize: lots\n", "spec.storageSize \"lots\""),
        ("  clientCIDRs: [\"0.0.0.0/0\"]\n", "spec.clientCIDRs"),
    ] {
        std::fs::write(&path, format!("{base}{patch}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kura-operator"))
            .arg("render")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{patch}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{patch}: {err}");
    }
    let bad_account = base.replace("accountHandle: solo", "accountHandle: Solo_Corp");
    std::fs::write(&path, bad_account).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kura-operator"))
        .args(["render", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.accountHandle"), "{err}");
}
