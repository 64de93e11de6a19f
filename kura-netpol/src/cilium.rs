//! A typed subset of Cilium's `CiliumNetworkPolicy` (`cilium.io/v2`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// A `cilium.io/v2` `CiliumNetworkPolicy` with the fields this crate renders.
///
/// Serialises to the manifest Cilium expects; render one with
/// [`InstancePolicy::cilium_client_policy`](crate::InstancePolicy::cilium_client_policy)
/// and turn it into JSON with [`serde_json::to_value`] or YAML with
/// [`to_yaml`](crate::to_yaml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicy {
    /// Always `cilium.io/v2`.
    pub api_version: String,
    /// Always `CiliumNetworkPolicy`.
    pub kind: String,
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// The policy.
    pub spec: CiliumNetworkPolicySpec,
}

impl CiliumNetworkPolicy {
    /// `cilium.io/v2`.
    pub const API_VERSION: &'static str = "cilium.io/v2";
    /// `CiliumNetworkPolicy`.
    pub const KIND: &'static str = "CiliumNetworkPolicy";

    /// A policy with the right `apiVersion` and `kind`.
    pub fn new(metadata: ObjectMeta, spec: CiliumNetworkPolicySpec) -> Self {
        CiliumNetworkPolicy {
            api_version: Self::API_VERSION.to_owned(),
            kind: Self::KIND.to_owned(),
            metadata,
            spec,
        }
    }
}

/// `spec` of a [`CiliumNetworkPolicy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicySpec {
    /// The endpoints (pods) the policy applies to.
    pub endpoint_selector: LabelSelector,
    /// Ingress allow rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<CiliumIngressRule>,
}

/// One ingress rule: traffic from these CIDRs to these ports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumIngressRule {
    /// Source ranges, each with optional holes.
    #[serde(rename = "fromCIDRSet", default, skip_serializing_if = "Vec::is_empty")]
    pub from_cidr_set: Vec<CiliumCidrRule>,
    /// Destination ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<CiliumPortRule>,
}

/// A `fromCIDRSet` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiliumCidrRule {
    /// The range.
    pub cidr: String,
    /// Ranges inside `cidr` that are not admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// A `toPorts` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiliumPortRule {
    /// The ports.
    pub ports: Vec<CiliumPort>,
}

/// A port and protocol (Cilium writes the port as a string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CiliumPort {
    /// Port number (or name), as a string.
    pub port: String,
    /// `TCP`, `UDP`, `SCTP` or `ANY`.
    pub protocol: String,
}
