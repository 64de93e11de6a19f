//! The machine custom resources: `ScalewayInstanceMachine` (short `sim`) and
//! `ScalewayElasticMetalMachine` (short `semm`) in
//! `infrastructure.cluster.x-k8s.io/v1alpha1`.

use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of both machine kinds.
pub const GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// API version of both machine kinds.
pub const VERSION: &str = "v1alpha1";
/// Finalizer of `ScalewayInstanceMachine`.
pub const INSTANCE_FINALIZER: &str = "scalewayinstance.cluster.x-k8s.io/finalizer";
/// Finalizer of `ScalewayElasticMetalMachine`.
pub const ELASTIC_METAL_FINALIZER: &str = "scalewayelasticmetal.cluster.x-k8s.io/finalizer";

fn default_commercial_type() -> String {
    "PRO2-S".into()
}
fn default_zone() -> String {
    "fr-par-1".into()
}
fn default_image() -> String {
    "ubuntu_noble".into()
}
fn default_root_volume_gb() -> u32 {
    50
}
fn default_offer_type() -> String {
    "EM-B220E-NVME".into()
}
fn default_pn_name() -> String {
    "tuist-runner-cache".into()
}
fn default_pn_cidr() -> String {
    "172.16.0.0/22".into()
}

/// A node taint registered by the kubelet (`--register-with-taints`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeTaint {
    /// Taint key, e.g. `tuist.dev/runner-cache`.
    pub key: String,
    /// Taint value (may be empty).
    #[serde(default)]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// Effect of a [`NodeTaint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    /// Do not schedule pods without a toleration.
    NoSchedule,
    /// Avoid scheduling pods without a toleration.
    PreferNoSchedule,
    /// Evict pods without a toleration.
    NoExecute,
}

impl fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        })
    }
}

impl fmt::Display for NodeTaint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.key, self.value, self.effect)
    }
}

/// A node address reported in machine status (Cluster API shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MachineAddress {
    /// `ExternalIP`, `InternalIP`, `Hostname`, ...
    #[serde(rename = "type")]
    pub address_type: String,
    /// The address.
    pub address: String,
}

/// Status of a [`Condition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known yet.
    Unknown,
}

/// A Cluster API condition (`Ready`, `Provisioned`, `NodeReady`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub condition_type: String,
    /// Status.
    pub status: ConditionStatus,
    /// `Error`, `Warning` or `Info` when the status is `False`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Condition type `Ready`.
pub const CONDITION_READY: &str = "Ready";
/// Condition type `Provisioned`.
pub const CONDITION_PROVISIONED: &str = "Provisioned";
/// Condition type `NodeReady`.
pub const CONDITION_NODE_READY: &str = "NodeReady";

/// Sets (or replaces) condition `condition_type`; the transition time only
/// changes when the status does. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    condition_type: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: &str,
) -> bool {
    let severity = (status == ConditionStatus::False).then(|| "Info".to_owned());
    let reason = (!reason.is_empty()).then(|| reason.to_owned());
    let message = (!message.is_empty()).then(|| message.to_owned());
    if let Some(c) = conditions
        .iter_mut()
        .find(|c| c.condition_type == condition_type)
    {
        let changed = c.status != status
            || c.reason != reason
            || c.message != message
            || c.severity != severity;
        if c.status != status {
            c.last_transition_time = now.to_owned();
        }
        c.status = status;
        c.reason = reason;
        c.message = message;
        c.severity = severity;
        return changed;
    }
    conditions.push(Condition {
        condition_type: condition_type.to_owned(),
        status,
        severity,
        last_transition_time: now.to_owned(),
        reason,
        message,
    });
    true
}

/// Phase of a `ScalewayInstanceMachine`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InstancePhase {
    /// Waiting for the Cluster API gate or not started.
    #[default]
    Pending,
    /// Server found or created; user data, network and power being set up.
    Provisioning,
    /// Server running; waiting for the Node to join and become Ready.
    Bootstrapping,
    /// The Node is Ready with its providerID and `tuist.dev/pn-ipv4` label.
    Ready,
    /// Being deleted.
    Deleting,
    /// A step failed; retried with exponential backoff.
    Failed,
}

/// Phase of a `ScalewayElasticMetalMachine`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ElasticMetalPhase {
    /// Waiting for the Cluster API gate or not started.
    #[default]
    Pending,
    /// Ordered, waiting for delivery.
    Ordered,
    /// Delivered, OS installing.
    Installing,
    /// Private network option and attachment.
    Provisioning,
    /// Self-join running; waiting for the Node.
    Bootstrapping,
    /// The Node is Ready.
    Ready,
    /// Being deleted.
    Deleting,
    /// A step failed; retried with exponential backoff.
    Failed,
}

macro_rules! phase_display {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}
phase_display!(InstancePhase);
phase_display!(ElasticMetalPhase);

/// Desired state of a Scaleway Instance cache node.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "ScalewayInstanceMachine",
    namespaced,
    shortname = "sim",
    status = "ScalewayInstanceMachineStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Server","type":"string","jsonPath":".status.serverID"}"#,
    printcolumn = r#"{"name":"ProviderID","type":"string","jsonPath":".spec.providerID"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScalewayInstanceMachineSpec {
    /// `scaleway://instance/<zone>/<server id>`, set by the provider once the
    /// server is attached and powered on.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Instance commercial type.
    #[serde(default = "default_commercial_type")]
    pub commercial_type: String,
    /// Zone.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Marketplace image label.
    #[serde(default = "default_image")]
    pub image: String,
    /// Size of the SBS root volume in GB.
    #[serde(default = "default_root_volume_gb", rename = "rootVolumeGB")]
    pub root_volume_gb: u32,
    /// Private Network the server gets a NIC on.
    #[serde(rename = "privateNetworkID")]
    pub private_network_id: String,
    /// Taints the kubelet registers the Node with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_taints: Vec<NodeTaint>,
}

/// Observed state of a `ScalewayInstanceMachine`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalewayInstanceMachineStatus {
    /// The Node is Ready.
    #[serde(default)]
    pub ready: bool,
    /// Scaleway server id, recorded as soon as it is known.
    #[serde(default, rename = "serverID", skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// The SBS root volume (it outlives the server and is deleted with it).
    #[serde(
        default,
        rename = "rootVolumeID",
        skip_serializing_if = "Option::is_none"
    )]
    pub root_volume_id: Option<String>,
    /// Public and private addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
    /// Phase.
    #[serde(default)]
    pub phase: InstancePhase,
    /// Machine-readable reason of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Message of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// Failed attempts since the last success or spec change.
    #[serde(default)]
    pub failure_attempts: u32,
    /// When the next attempt after a failure is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<String>,
    /// The `metadata.generation` the failure count belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Cluster API conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Desired state of a Scaleway Elastic Metal cache node.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "ScalewayElasticMetalMachine",
    namespaced,
    shortname = "semm",
    status = "ScalewayElasticMetalMachineStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Server","type":"string","jsonPath":".status.serverID"}"#,
    printcolumn = r#"{"name":"VLAN","type":"integer","jsonPath":".status.privateNetworkVLAN"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScalewayElasticMetalMachineSpec {
    /// `scaleway://baremetal/<zone>/<server id>`, set after the self-join.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Elastic Metal offer name.
    #[serde(default = "default_offer_type")]
    pub offer_type: String,
    /// Zone.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// OS label (matched against the offer's OS catalogue).
    #[serde(default = "default_image")]
    pub os: String,
    /// Private Network, found or created by exact name.
    #[serde(default = "default_pn_name")]
    pub private_network_name: String,
    /// IPv4 subnet used when the Private Network is created.
    #[serde(default = "default_pn_cidr", rename = "privateNetworkCIDR")]
    pub private_network_cidr: String,
    /// Taints the kubelet registers the Node with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_taints: Vec<NodeTaint>,
    /// Scaleway SSH key ids installed on the server (the self-join runs over SSH).
    #[serde(default, rename = "sshKeyIDs", skip_serializing_if = "Vec::is_empty")]
    pub ssh_key_ids: Vec<String>,
}

/// Observed state of a `ScalewayElasticMetalMachine`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalewayElasticMetalMachineStatus {
    /// The Node is Ready.
    #[serde(default)]
    pub ready: bool,
    /// Scaleway server id, recorded as soon as it is known.
    #[serde(default, rename = "serverID", skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// The Private Network id.
    #[serde(
        default,
        rename = "privateNetworkID",
        skip_serializing_if = "Option::is_none"
    )]
    pub private_network_id: Option<String>,
    /// VLAN of the Private Network attachment (never 0).
    #[serde(
        default,
        rename = "privateNetworkVLAN",
        skip_serializing_if = "Option::is_none"
    )]
    pub private_network_vlan: Option<u32>,
    /// The self-join script ran to completion.
    #[serde(default)]
    pub bootstrapped: bool,
    /// Public and private addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
    /// Phase.
    #[serde(default)]
    pub phase: ElasticMetalPhase,
    /// Machine-readable reason of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Message of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// Failed attempts since the last success or spec change.
    #[serde(default)]
    pub failure_attempts: u32,
    /// When the next attempt after a failure is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<String>,
    /// The `metadata.generation` the failure count belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Cluster API conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Both CRDs as a multi-document YAML stream (what `kura-provider crds` prints).
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [
        ScalewayInstanceMachine::crd(),
        ScalewayElasticMetalMachine::crd(),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_minimal_specs() {
        let s: ScalewayInstanceMachineSpec =
            serde_json::from_str(r#"{"privateNetworkID":"pn"}"#).unwrap();
        assert_eq!(s.commercial_type, "PRO2-S");
        assert_eq!(s.zone, "fr-par-1");
        assert_eq!(s.image, "ubuntu_noble");
        assert_eq!(s.root_volume_gb, 50);
        let s: ScalewayElasticMetalMachineSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(s.offer_type, "EM-B220E-NVME");
        assert_eq!(s.os, "ubuntu_noble");
    }

    #[test]
    fn condition_transition_time_changes_only_with_status() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "Ready",
            ConditionStatus::False,
            "A",
            "",
            "t1"
        ));
        assert!(!set_condition(
            &mut c,
            "Ready",
            ConditionStatus::False,
            "A",
            "",
            "t2"
        ));
        assert_eq!(c[0].last_transition_time, "t1");
        assert!(set_condition(
            &mut c,
            "Ready",
            ConditionStatus::True,
            "B",
            "",
            "t3"
        ));
        assert_eq!(c[0].last_transition_time, "t3");
        assert_eq!(c.len(), 1);
    }
}
