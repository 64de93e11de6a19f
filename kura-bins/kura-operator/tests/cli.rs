//! The binary's error paths: clear message on stderr, exit code 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kura-operator"))
}

#[test]
fn run_without_any_cluster_configuration_fails_clearly() {
    let home = tempfile::tempdir().unwrap();
    let out = operator()
        .arg("run")
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KURA_OPERATOR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no Kubernetes configuration"), "{err}");
}

#[test]
fn render_rejects_missing_and_non_instance_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = operator()
        .args(["render", "-f"])
        .arg(dir.path().join("nope.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.yaml"));

    let path = dir.path().join("svc.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
    )
    .unwrap();
    let out = operator()
        .args(["render", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a KuraInstance"));

    std::fs::write(&path, "a: [unclosed\n").unwrap();
    let out = operator()
        .args(["render", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("parsing"));
}
