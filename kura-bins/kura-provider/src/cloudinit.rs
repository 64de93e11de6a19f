//! Self-join rendering: the cloud-init document of Instance machines and the
//! SSH script of Elastic Metal machines.
//!
//! Both install containerd and the kubelet from `pkgs.k8s.io` with a bash
//! script (`#!/usr/bin/env bash`, `set -euxo pipefail`). cloud-init runs
//! `runcmd` entries given as strings under `/bin/sh` — dash on Ubuntu, which
//! rejects `set -o pipefail` — so the script is a file invoked with the list
//! form `runcmd: - [bash, /opt/bootstrap-node.sh]`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use base64::Engine as _;

use crate::crd::{NodeTaint, TaintEffect};

/// Where the kubelet's bootstrap kubeconfig is written (mode 0600).
pub const BOOTSTRAP_KUBECONFIG: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
/// Where the kubelet writes its own kubeconfig after TLS bootstrapping.
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
/// The KubeletConfiguration file.
pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// The bootstrap script.
pub const BOOTSTRAP_SCRIPT: &str = "/opt/bootstrap-node.sh";
/// The cluster CA (taken from the kubeconfig) used to verify the API server
/// when it calls the kubelet.
pub const CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";
/// Label every node gets.
pub const INSTANCE_TYPE_LABEL: &str = "node.cluster.x-k8s.io/instance-type=scaleway";

/// Rendering input errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenderError {
    /// A taint is not `key=value:Effect`.
    #[error("invalid taint {input:?}: {reason}")]
    Taint {
        /// The input.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The node name is not a DNS-1123 subdomain.
    #[error("invalid node name {0:?}: lowercase letters, digits, '-' and '.', at most 253")]
    NodeName(String),
    /// The Kubernetes minor is not `v1.N`.
    #[error("invalid Kubernetes minor {0:?}: expected v1.N, e.g. v1.34")]
    KubernetesMinor(String),
    /// The kubeconfig is not YAML or holds no cluster.
    #[error("invalid kubeconfig: {0}")]
    Kubeconfig(String),
    /// The VLAN is 0 or above 4094.
    #[error("invalid VLAN {0}: must be 1..=4094")]
    Vlan(u32),
}

fn valid_taint_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
        && k.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn valid_taint_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Parses `key=value:Effect` (or `key:Effect`).
pub fn parse_taint(input: &str) -> Result<NodeTaint, RenderError> {
    let err = |reason| RenderError::Taint {
        input: input.to_owned(),
        reason,
    };
    let (kv, effect) = input
        .rsplit_once(':')
        .ok_or_else(|| err("missing :Effect"))?;
    let effect = match effect {
        "NoSchedule" => TaintEffect::NoSchedule,
        "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
        "NoExecute" => TaintEffect::NoExecute,
        _ => {
            return Err(err(
                "effect must be NoSchedule, PreferNoSchedule or NoExecute",
            ));
        }
    };
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if !valid_taint_key(key) {
        return Err(err("bad key"));
    }
    if !valid_taint_value(value) {
        return Err(err("bad value"));
    }
    Ok(NodeTaint {
        key: key.to_owned(),
        value: value.to_owned(),
        effect,
    })
}

fn check_taint(t: &NodeTaint) -> Result<(), RenderError> {
    if valid_taint_key(&t.key) && valid_taint_value(&t.value) {
        Ok(())
    } else {
        Err(RenderError::Taint {
            input: t.to_string(),
            reason: "bad key or value",
        })
    }
}

/// A Kubernetes minor version such as `v1.34` (selects the `pkgs.k8s.io` repository).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesMinor(u32);

impl KubernetesMinor {
    /// `v1.<minor>`.
    pub fn new(minor: u32) -> Self {
        Self(minor)
    }
    /// From a full version such as `v1.34.2` (a Cluster API Machine's `spec.version`).
    pub fn from_version(version: &str) -> Result<Self, RenderError> {
        let mut parts = version.splitn(3, '.');
        match (parts.next(), parts.next()) {
            (Some(major), Some(minor)) => format!("{major}.{minor}").parse(),
            _ => Err(RenderError::KubernetesMinor(version.to_owned())),
        }
    }
}

impl FromStr for KubernetesMinor {
    type Err = RenderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RenderError::KubernetesMinor(s.to_owned());
        let rest = s.strip_prefix("v1.").ok_or_else(bad)?;
        if rest.is_empty() || rest.len() > 3 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        rest.parse().map(Self).map_err(|_| bad())
    }
}

impl std::fmt::Display for KubernetesMinor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v1.{}", self.0)
    }
}

/// What a node needs to join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinParams {
    /// Node name (`--hostname-override`): the machine's name.
    pub node_name: String,
    /// Taints registered with the Node.
    pub taints: Vec<NodeTaint>,
    /// Cluster DNS service IP, when known.
    pub cluster_dns: Option<IpAddr>,
    /// `--node-ip`, when the node's address must be pinned (Elastic Metal: the PN address).
    pub node_ip: Option<IpAddr>,
    /// The kubelet's bootstrap kubeconfig.
    pub kubeconfig: String,
    /// Which `pkgs.k8s.io` minor to install.
    pub kubernetes_minor: KubernetesMinor,
}

/// One file written on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFile {
    /// Absolute path.
    pub path: &'static str,
    /// Octal permissions, e.g. `0600`.
    pub permissions: &'static str,
    /// Content.
    pub content: String,
}

fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && n.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// The cluster CA certificate (PEM) from a kubeconfig's current (or first) cluster.
pub fn kubeconfig_ca(kubeconfig: &str) -> Result<Option<String>, RenderError> {
    let doc: serde_json::Value =
        serde_norway::from_str(kubeconfig).map_err(|e| RenderError::Kubeconfig(e.to_string()))?;
    let clusters = doc
        .get("clusters")
        .and_then(|c| c.as_array())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| RenderError::Kubeconfig("no clusters".into()))?;
    let current_cluster = doc
        .get("current-context")
        .and_then(|c| c.as_str())
        .and_then(|ctx| {
            doc.get("contexts")?
                .as_array()?
                .iter()
                .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(ctx))?
                .get("context")?
                .get("cluster")?
                .as_str()
        });
    let cluster = current_cluster
        .and_then(|name| {
            clusters
                .iter()
                .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(name))
        })
        .unwrap_or(&clusters[0]);
    let Some(data) = cluster
        .get("cluster")
        .and_then(|c| c.get("certificate-authority-data"))
        .and_then(|d| d.as_str())
    else {
        return Ok(None);
    };
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| RenderError::Kubeconfig(format!("certificate-authority-data: {e}")))?;
    let pem = String::from_utf8(pem)
        .map_err(|_| RenderError::Kubeconfig("certificate-authority-data is not PEM".into()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(RenderError::Kubeconfig(
            "certificate-authority-data is not a PEM certificate".into(),
        ));
    }
    Ok(Some(pem))
}

fn validate(p: &JoinParams) -> Result<Option<String>, RenderError> {
    if !valid_node_name(&p.node_name) {
        return Err(RenderError::NodeName(p.node_name.clone()));
    }
    for t in &p.taints {
        check_taint(t)?;
    }
    kubeconfig_ca(&p.kubeconfig)
}

/// The kubelet systemd unit.
pub fn kubelet_unit(p: &JoinParams) -> String {
    let mut flags = vec![
        format!("--bootstrap-kubeconfig={BOOTSTRAP_KUBECONFIG}"),
        format!("--kubeconfig={KUBELET_KUBECONFIG}"),
        format!("--config={KUBELET_CONFIG}"),
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock".to_owned(),
        format!("--hostname-override={}", p.node_name),
    ];
    if !p.taints.is_empty() {
        let taints: Vec<String> = p.taints.iter().map(ToString::to_string).collect();
        flags.push(format!("--register-with-taints={}", taints.join(",")));
    }
    flags.push(format!("--node-labels={INSTANCE_TYPE_LABEL}"));
    if let Some(ip) = p.node_ip {
        flags.push(format!("--node-ip={ip}"));
    }
    let mut s = String::from(
        "[Unit]\nDescription=kubelet: The Kubernetes Node Agent\nDocumentation=https://kubernetes.io/docs/\nWants=network-online.target containerd.service\nAfter=network-online.target containerd.service\n\n[Service]\nExecStart=/usr/bin/kubelet",
    );
    for f in flags {
        let _ = write!(s, " \\\n  {f}");
    }
    s.push_str("\nRestart=always\nRestartSec=10\n\n[Install]\nWantedBy=multi-user.target\n");
    s
}

/// The KubeletConfiguration.
pub fn kubelet_config(p: &JoinParams, has_ca: bool) -> String {
    let mut s = String::from(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\nauthentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n",
    );
    if has_ca {
        let _ = writeln!(s, "  x509:\n    clientCAFile: {CLUSTER_CA}");
    }
    s.push_str("authorization:\n  mode: Webhook\nclusterDomain: cluster.local\n");
    if let Some(dns) = p.cluster_dns {
        let _ = writeln!(s, "clusterDNS:\n  - {dns}");
    }
    s.push_str("serverTLSBootstrap: true\nrotateCertificates: true\n");
    s
}

/// The bash script that installs containerd and the kubelet and starts it.
pub fn bootstrap_script(minor: &KubernetesMinor) -> String {
    format!(
        r#"#!/usr/bin/env bash
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive

modprobe overlay
modprobe br_netfilter
sysctl --system

apt-get update
apt-get install -y apt-transport-https ca-certificates curl gpg containerd
mkdir -p /etc/containerd
containerd config default > /etc/containerd/config.toml
sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
systemctl restart containerd

install -d -m 0755 /etc/apt/keyrings
curl -fsSL "https://pkgs.k8s.io/core:/stable:/{minor}/deb/Release.key" \
  | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/{minor}/deb/ /" \
  > /etc/apt/sources.list.d/kubernetes.list
apt-get update
apt-get install -y kubelet
apt-mark hold kubelet

systemctl daemon-reload
systemctl enable kubelet
systemctl restart kubelet
"#
    )
}

/// Every file a joining node needs, in write order.
pub fn node_files(p: &JoinParams) -> Result<Vec<NodeFile>, RenderError> {
    let ca = validate(p)?;
    let mut files = vec![NodeFile {
        path: BOOTSTRAP_KUBECONFIG,
        permissions: "0600",
        content: p.kubeconfig.clone(),
    }];
    if let Some(ca) = &ca {
        files.push(NodeFile {
            path: CLUSTER_CA,
            permissions: "0644",
            content: ca.clone(),
        });
    }
    files.extend([
        NodeFile {
            path: "/etc/modules-load.d/kura-k8s.conf",
            permissions: "0644",
            content: "overlay\nbr_netfilter\n".into(),
        },
        NodeFile {
            path: "/etc/sysctl.d/99-kura-k8s.conf",
            permissions: "0644",
            content: "net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n".into(),
        },
        NodeFile {
            path: "/etc/systemd/system/kubelet.service",
            permissions: "0644",
            content: kubelet_unit(p),
        },
        NodeFile {
            path: KUBELET_CONFIG,
            permissions: "0644",
            content: kubelet_config(p, ca.is_some()),
        },
        NodeFile {
            path: BOOTSTRAP_SCRIPT,
            permissions: "0755",
            content: bootstrap_script(&p.kubernetes_minor),
        },
    ]);
    Ok(files)
}

/// Whether `content` can be a YAML literal block scalar unchanged.
fn literal_safe(content: &str) -> bool {
    !content.is_empty()
        && !content.starts_with([' ', '\t', '\n'])
        && content.chars().all(|c| {
            c == '\n'
                || (!c.is_control()
                    && c != '\u{feff}'
                    && c != '\u{85}'
                    && c != '\u{2028}'
                    && c != '\u{2029}')
        })
        && !content.lines().any(|l| l.ends_with([' ', '\t']))
}

fn push_content(out: &mut String, content: &str) {
    if literal_safe(content) {
        let trailing = content.len() - content.trim_end_matches('\n').len();
        let chomp = match trailing {
            0 => "-",
            1 => "",
            _ => "+",
        };
        let _ = writeln!(out, "    content: |{chomp}");
        for line in content.split('\n').take(content.split('\n').count() - 1) {
            if line.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "      {line}");
            }
        }
        if trailing == 0 {
            // split() yields the last line (no trailing newline) as the final item.
            if let Some(last) = content.split('\n').next_back() {
                let _ = writeln!(out, "      {last}");
            }
        }
    } else {
        out.push_str("    encoding: b64\n");
        let _ = writeln!(
            out,
            "    content: \"{}\"",
            base64::engine::general_purpose::STANDARD.encode(content)
        );
    }
}

/// The `#cloud-config` document for an Instance machine.
pub fn render_cloud_init(p: &JoinParams) -> Result<String, RenderError> {
    let files = node_files(p)?;
    let mut out = String::from("#cloud-config\nwrite_files:\n");
    for f in &files {
        let _ = writeln!(out, "  - path: {}", f.path);
        out.push_str("    owner: root:root\n");
        let _ = writeln!(out, "    permissions: \"{}\"", f.permissions);
        push_content(&mut out, &f.content);
    }
    let _ = writeln!(out, "runcmd:\n  - [bash, {BOOTSTRAP_SCRIPT}]");
    Ok(out)
}

/// The Private Network VLAN interface of an Elastic Metal server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanInterface {
    /// VLAN id of the attachment (1..=4094).
    pub vlan: u32,
    /// Static IPv4 of the server on the Private Network.
    pub address: Ipv4Addr,
    /// Prefix length of the Private Network subnet.
    pub prefix_len: u8,
}

/// The bash script run over SSH on an Elastic Metal server: writes the same
/// files as the cloud-init document, brings up VLAN interface `pn0` (persisted
/// by the `kura-pn0.service` unit), then runs the bootstrap script.
pub fn render_elastic_metal_script(
    p: &JoinParams,
    vlan: &VlanInterface,
) -> Result<String, RenderError> {
    if vlan.vlan == 0 || vlan.vlan > 4094 {
        return Err(RenderError::Vlan(vlan.vlan));
    }
    let prefix = vlan.prefix_len.min(32);
    let pn0 = format!(
        r#"#!/usr/bin/env bash
set -euo pipefail
parent="$(ip -o -4 route show to default | awk '{{print $5; exit}}')"
if ! ip link show pn0 >/dev/null 2>&1; then
  ip link add link "$parent" name pn0 type vlan id {vlan}
fi
ip addr replace {addr}/{prefix} dev pn0
ip link set pn0 up
"#,
        vlan = vlan.vlan,
        addr = vlan.address,
    );
    let unit = "[Unit]\nDescription=Kura Private Network VLAN interface pn0\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/sbin/kura-pn0.sh\n\n[Install]\nWantedBy=multi-user.target\n";
    let mut files = node_files(p)?;
    files.push(NodeFile {
        path: "/usr/local/sbin/kura-pn0.sh",
        permissions: "0755",
        content: pn0,
    });
    files.push(NodeFile {
        path: "/etc/systemd/system/kura-pn0.service",
        permissions: "0644",
        content: unit.into(),
    });
    let mut out = String::from("#!/usr/bin/env bash\nset -euxo pipefail\n\n");
    for f in &files {
        let dir = f.path.rsplit_once('/').map_or("/", |(d, _)| d);
        let _ = writeln!(out, "install -d -m 0755 {dir}");
        let _ = writeln!(
            out,
            "printf '%s' '{}' | base64 -d > {}",
            base64::engine::general_purpose::STANDARD.encode(&f.content),
            f.path
        );
        let _ = writeln!(out, "chmod {} {}", f.permissions, f.path);
    }
    out.push_str("\nsystemctl daemon-reload\nsystemctl enable --now kura-pn0.service\n");
    let _ = writeln!(out, "bash {BOOTSTRAP_SCRIPT}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn taints_parse_and_print() {
        let t = parse_taint("tuist.dev/runner-cache=true:NoSchedule").unwrap();
        assert_eq!(t.to_string(), "tuist.dev/runner-cache=true:NoSchedule");
        assert_eq!(parse_taint("a:NoExecute").unwrap().value, "");
        for bad in [
            "a=b",
            "a=b:Nope",
            "=b:NoSchedule",
            "a=b c:NoSchedule",
            "a=$(x):NoSchedule",
        ] {
            assert!(parse_taint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn minors() {
        assert_eq!(
            "v1.34".parse::<KubernetesMinor>().unwrap(),
            KubernetesMinor(34)
        );
        assert_eq!(
            KubernetesMinor::from_version("v1.34.2").unwrap(),
            KubernetesMinor(34)
        );
        for bad in ["1.34", "v2.1", "v1.", "v1.3a", "v1.1000"] {
            assert!(bad.parse::<KubernetesMinor>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn taint_roundtrip(key in "[a-z0-9][a-z0-9./_-]{0,30}", value in "[a-zA-Z0-9._-]{0,20}", e in 0..3u8) {
            let effect = [TaintEffect::NoSchedule, TaintEffect::PreferNoSchedule, TaintEffect::NoExecute][e as usize];
            let t = NodeTaint { key, value, effect };
            prop_assert_eq!(parse_taint(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn parse_taint_never_panics(s in "\\PC*") {
            let _ = parse_taint(&s);
        }

        #[test]
        fn any_file_content_roundtrips_through_yaml(content in "(\\PC|\n|\t| ){0,80}") {
            let mut out = String::from("write_files:\n  - path: /x\n");
            push_content(&mut out, &content);
            let doc: serde_json::Value = serde_norway::from_str(&out).unwrap();
            let f = &doc["write_files"][0];
            let got = if f.get("encoding").and_then(|e| e.as_str()) == Some("b64") {
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(f["content"].as_str().unwrap()).unwrap()).unwrap()
            } else {
                f["content"].as_str().unwrap_or_default().to_owned()
            };
            prop_assert_eq!(got, content);
        }
    }
}
