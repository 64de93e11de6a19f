//! Self-join rendering: the cloud-init document parses, its script passes
//! `bash -n` and `shellcheck` (Debian package `shellcheck`) without
//! warnings, runcmd uses the list form; the Elastic Metal SSH script too;
//! and `kura-provider render-cloud-init` prints the document.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use base64::Engine as _;
use kura_provider::cloudinit::{
    JoinParams, VlanInterface, parse_taint, render_cloud_init, render_elastic_metal_script,
};

fn kubeconfig() -> String {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAj\n-----END CERTIFICATE-----\n";
    let config = kura_provider::context::ProviderConfig::new(
        kura_scaleway::ProjectId::new("p"),
        "https://10.0.0.1:6443",
        ca,
    );
    kura_provider::identity::bootstrap_kubeconfig(&config, "abcdef.0123456789abcdef")
}

fn params() -> JoinParams {
    JoinParams {
        node_name: "cache-0".into(),
        taints: vec![
            parse_taint("tuist.dev/runner-cache=true:NoSchedule").unwrap(),
            parse_taint("dedicated:NoExecute").unwrap(),
        ],
        cluster_dns: Some("10.96.0.10".parse().unwrap()),
        node_ip: None,
        kubeconfig: kubeconfig(),
        kubernetes_minor: "v1.34".parse().unwrap(),
    }
}

fn tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is required under CI (Debian package `{name}`)");
        }
        println!("SKIP: {name} not installed");
    }
    found
}

fn bash_n(script: &str) {
    let mut child = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shellcheck(script: &str) {
    if !tool("shellcheck") {
        return;
    }
    let mut child = Command::new("shellcheck")
        .args(["--shell=bash", "--severity=style", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}\n--- script ---\n{script}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn file<'a>(doc: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} missing"))
}

#[test]
fn cloud_init_parses_and_has_every_reference_part() {
    let doc = render_cloud_init(&params()).unwrap();
    assert!(doc.starts_with("#cloud-config\n"));
    let v: serde_json::Value = serde_norway::from_str(&doc).unwrap();
    let kc = file(&v, "/etc/kubernetes/bootstrap-kubelet.conf");
    assert_eq!(kc["permissions"], "0600");
    assert_eq!(kc["content"].as_str().unwrap(), kubeconfig());
    assert_eq!(
        file(&v, "/etc/modules-load.d/kura-k8s.conf")["content"],
        "overlay\nbr_netfilter\n"
    );
    let sysctl = file(&v, "/etc/sysctl.d/99-kura-k8s.conf")["content"]
        .as_str()
        .unwrap();
    assert!(sysctl.contains("net.bridge.bridge-nf-call-iptables = 1"));
    assert!(sysctl.contains("net.ipv4.ip_forward = 1"));
    let unit = file(&v, "/etc/systemd/system/kubelet.service")["content"]
        .as_str()
        .unwrap();
    for flag in [
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--config=/var/lib/kubelet/config.yaml",
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--hostname-override=cache-0",
        "--register-with-taints=tuist.dev/runner-cache=true:NoSchedule,dedicated=:NoExecute",
        "--node-labels=node.cluster.x-k8s.io/instance-type=scaleway",
    ] {
        assert!(unit.contains(flag), "{flag} missing from\n{unit}");
    }
    let kcfg: serde_json::Value = serde_norway::from_str(
        file(&v, "/var/lib/kubelet/config.yaml")["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(kcfg["kind"], "KubeletConfiguration");
    assert_eq!(kcfg["cgroupDriver"], "systemd");
    assert_eq!(kcfg["authentication"]["anonymous"]["enabled"], false);
    assert_eq!(kcfg["authentication"]["webhook"]["enabled"], true);
    assert_eq!(kcfg["authorization"]["mode"], "Webhook");
    assert_eq!(kcfg["clusterDomain"], "cluster.local");
    assert_eq!(kcfg["serverTLSBootstrap"], true);
    assert_eq!(kcfg["clusterDNS"], serde_json::json!(["10.96.0.10"]));
    assert_eq!(
        kcfg["authentication"]["x509"]["clientCAFile"],
        "/etc/kubernetes/pki/ca.crt"
    );
    // No clusterDNS when unknown.
    let mut p = params();
    p.cluster_dns = None;
    let v2: serde_json::Value = serde_norway::from_str(&render_cloud_init(&p).unwrap()).unwrap();
    let kcfg2: serde_json::Value = serde_norway::from_str(
        file(&v2, "/var/lib/kubelet/config.yaml")["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(kcfg2.get("clusterDNS").is_none());

    let script = file(&v, "/opt/bootstrap-node.sh");
    assert_eq!(script["permissions"], "0755");
    let script = script["content"].as_str().unwrap();
    assert!(script.starts_with("#!/usr/bin/env bash\nset -euxo pipefail\n"));
    assert!(script.contains("https://pkgs.k8s.io/core:/stable:/v1.34/deb/"));
    // runcmd: the list form, and nothing else.
    assert_eq!(
        v["runcmd"],
        serde_json::json!([["bash", "/opt/bootstrap-node.sh"]])
    );
    assert!(doc.ends_with("runcmd:\n  - [bash, /opt/bootstrap-node.sh]\n"));
}

#[test]
fn bootstrap_script_passes_bash_n_and_shellcheck() {
    let doc = render_cloud_init(&params()).unwrap();
    let v: serde_json::Value = serde_norway::from_str(&doc).unwrap();
    let script = file(&v, "/opt/bootstrap-node.sh")["content"]
        .as_str()
        .unwrap();
    bash_n(script);
    shellcheck(script);
}

#[test]
fn runcmd_under_dash_would_reject_pipefail() {
    // Why the list form matters: dash really rejects the option.
    if Command::new("dash").arg("-c").arg("true").status().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("dash is required under CI");
        }
        println!("SKIP: dash not installed");
        return;
    }
    let status = Command::new("dash")
        .arg("-c")
        .arg("set -euxo pipefail")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "dash accepted pipefail?");
}

#[test]
fn elastic_metal_script_passes_bash_n_and_shellcheck() {
    let mut p = params();
    p.node_ip = Some("172.16.0.5".parse().unwrap());
    let script = render_elastic_metal_script(
        &p,
        &VlanInterface {
            vlan: 2319,
            address: "172.16.0.5".parse().unwrap(),
            prefix_len: 22,
        },
    )
    .unwrap();
    assert!(script.starts_with("#!/usr/bin/env bash\nset -euxo pipefail\n"));
    bash_n(&script);
    shellcheck(&script);
    // The embedded scripts too.
    for path in ["/usr/local/sbin/kura-pn0.sh", "/opt/bootstrap-node.sh"] {
        let line = script
            .lines()
            .find(|l| l.ends_with(&format!("> {path}")))
            .unwrap();
        let b64 = line.split('\'').nth(3).unwrap();
        let inner = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        bash_n(&inner);
        shellcheck(&inner);
        if path.ends_with("pn0.sh") {
            assert!(inner.contains("name pn0 type vlan id 2319"));
            assert!(inner.contains("ip addr replace 172.16.0.5/22 dev pn0"));
        }
    }
    assert!(script.contains("systemctl enable --now kura-pn0.service"));
    assert!(
        render_elastic_metal_script(
            &p,
            &VlanInterface {
                vlan: 0,
                address: "172.16.0.5".parse().unwrap(),
                prefix_len: 22
            }
        )
        .is_err()
    );
}

#[test]
fn render_cloud_init_cli_prints_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, kubeconfig()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kura-provider"))
        .args(["render-cloud-init", "--node-name", "cache-0"])
        .args([
            "--taint",
            "tuist.dev/runner-cache=true:NoSchedule",
            "--taint",
            "dedicated:NoExecute",
        ])
        .args(["--cluster-dns", "10.96.0.10", "--kubernetes-minor", "v1.34"])
        .arg("--kubeconfig")
        .arg(&kc)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        render_cloud_init(&params()).unwrap()
    );

    // Bad input: a clear error and exit code 2.
    let out = Command::new(env!("CARGO_BIN_EXE_kura-provider"))
        .args([
            "render-cloud-init",
            "--node-name",
            "cache-0",
            "--taint",
            "nope",
            "--kubernetes-minor",
            "v1.34",
        ])
        .arg("--kubeconfig")
        .arg(&kc)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid taint"));
}
