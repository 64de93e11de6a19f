//! The `kura.tuist.dev/v1alpha1` `KuraInstance` custom resource.
//!
//! Field names, print columns, the short name and the finalizer are those of
//! the controller this crate replaces, so existing manifests apply unchanged.
//! Defaults are applied by the reconciler (not by the API server), exactly as
//! the reference does: see the `effective_*` methods of [`KuraInstanceSpec`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the custom resource.
pub const GROUP: &str = "kura.tuist.dev";
/// API version of the custom resource.
pub const VERSION: &str = "v1alpha1";
/// Finalizer the operator puts on every `KuraInstance`.
pub const FINALIZER: &str = "kurainstances.kura.tuist.dev/finalizer";
/// Default replica count when `replicas` is unset or ≤ 0.
pub const DEFAULT_REPLICAS: i32 = 3;
/// Default `ingressClassName`.
pub const DEFAULT_INGRESS_CLASS: &str = "nginx";
/// Default `storageSize`.
pub const DEFAULT_STORAGE_SIZE: &str = "200Gi";
/// Key of the default node selector.
pub const DEFAULT_NODE_SELECTOR_KEY: &str = "node.cluster.x-k8s.io/pool";
/// Value of the default node selector.
pub const DEFAULT_NODE_SELECTOR_VALUE: &str = "kura";
/// Annotation listing the runner platforms an instance serves (comma list,
/// e.g. `macos,linux`), read by the endpoint hand-off.
pub const RUNNER_PLATFORMS_ANNOTATION: &str = "kura.tuist.dev/runner-platforms";
/// Annotation that requests a rotation of the account CA. Its value is an
/// opaque token: each new value starts one rotation.
pub const ROTATE_CA_ANNOTATION: &str = "kura.tuist.dev/rotate-ca";
/// Manifest revision annotation of the reference deployments (kept as is).
pub const MANIFEST_REVISION_ANNOTATION: &str = "tuist.dev/kura-manifest-revision";

/// Desired state of one Kura cache instance (one account in one region).
// kube-derive takes one `printcolumn(...)` per column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[kube(
    group = "kura.tuist.dev",
    version = "v1alpha1",
    kind = "KuraInstance",
    plural = "kurainstances",
    singular = "kurainstance",
    shortname = "kura",
    namespaced,
    status = "KuraInstanceStatus",
    doc = "A Kura cache instance: a StatefulSet of cache pods of one account in one region, its Services, NetworkPolicy, PodDisruptionBudget and peer certificates.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.publicHost"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KuraInstanceSpec {
    /// The account (tenant) handle; labels every object `tuist.dev/account`.
    pub account_handle: String,
    /// The tenant id passed to the cache as `KURA_TENANT_ID`.
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    /// The region, `tuist.dev/region` label and `KURA_REGION`.
    pub region: String,
    /// Container image of the cache.
    pub image: String,
    /// Number of cache pods (default 3 when unset or ≤ 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Public host name served through an Ingress (none when empty or `private`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_host: Option<String>,
    /// Ingress class (default `nginx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// An existing Secret with `ca.pem`, `tls.crt`, `tls.key` for the peer
    /// port; turns on cross-instance peering. Empty with `mesh` means
    /// operator-managed certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "peerTLSSecretName")]
    pub peer_tls_secret_name: Option<String>,
    /// Storage class of the data volume (cluster default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Size of the data volume (default `200Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<String>,
    /// Node selector of the pods (default `node.cluster.x-k8s.io/pool: kura`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Extra environment variables, appended after the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_env: Option<Vec<EnvVar>>,
    /// Extension script passed to the cache as `KURA_EXTENSION_SCRIPT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_script: Option<String>,
    /// A private instance gets no Ingress even with a `publicHost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    /// Publish the cache port as the NodePort Service `<instance>-external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_node_port: Option<bool>,
    /// Client ranges admitted on the cache port (NetworkPolicy `ipBlock`s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "clientCIDRs")]
    pub client_cidrs: Option<Vec<String>>,
    /// Pod annotations (controller-owned keys win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Guaranteed egress in Mbit/s: the extended resource
    /// `tuist.dev/egress-mbps` (request == limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_guaranteed_mbps: Option<i32>,
    /// Cross-instance peering with operator-managed per-account certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<bool>,
    /// Public peer host added to the leaf certificate's names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_public_peer_host: Option<String>,
    /// Peers outside the cluster (`KURA_PEERS`, comma-joined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_external_peers: Option<Vec<String>>,
}

/// Observed state of a `KuraInstance`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KuraInstanceStatus {
    /// `Ready` or `Pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `https://<publicHost>` when an Ingress is rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "publicURL")]
    pub public_url: Option<String>,
    /// Image of the StatefulSet's pod template once it is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_image: Option<String>,
    /// Ready pods of the StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Why the instance is not `Ready` (or a progress note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time of the last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconciled_at: Option<String>,
    /// `tuist.dev/pn-ipv4` label of the node running the primary pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address: Option<String>,
    /// NodePort of port `http` on `<instance>-external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port_cache: Option<i32>,
}

/// The JSON names of every status field (a status write clears those it leaves empty).
pub const STATUS_FIELDS: &[&str] = &[
    "phase",
    "publicURL",
    "observedImage",
    "readyReplicas",
    "message",
    "lastReconciledAt",
    "nodeAddress",
    "nodePortCache",
];

impl KuraInstanceSpec {
    /// Replicas, defaulting to 3 when unset or ≤ 0.
    pub fn effective_replicas(&self) -> i32 {
        match self.replicas {
            Some(n) if n > 0 => n,
            _ => DEFAULT_REPLICAS,
        }
    }

    /// Ingress class, defaulting to `nginx`.
    pub fn effective_ingress_class(&self) -> &str {
        non_empty(self.ingress_class_name.as_deref()).unwrap_or(DEFAULT_INGRESS_CLASS)
    }

    /// Storage size, defaulting to `200Gi`.
    pub fn effective_storage_size(&self) -> &str {
        non_empty(self.storage_size.as_deref()).unwrap_or(DEFAULT_STORAGE_SIZE)
    }

    /// Node selector, defaulting to `node.cluster.x-k8s.io/pool: kura`.
    pub fn effective_node_selector(&self) -> BTreeMap<String, String> {
        match &self.node_selector {
            Some(sel) if !sel.is_empty() => sel.clone(),
            _ => BTreeMap::from([(
                DEFAULT_NODE_SELECTOR_KEY.to_owned(),
                DEFAULT_NODE_SELECTOR_VALUE.to_owned(),
            )]),
        }
    }

    /// The peer TLS Secret named in the spec, if any.
    pub fn peer_tls_secret(&self) -> Option<&str> {
        non_empty(self.peer_tls_secret_name.as_deref())
    }

    /// `mesh || peerTLSSecretName != ""`: cross-instance peering is on.
    pub fn peering(&self) -> bool {
        self.mesh.unwrap_or(false) || self.peer_tls_secret().is_some()
    }

    /// Mesh without an explicit Secret: the operator manages the certificates.
    pub fn managed_certificates(&self) -> bool {
        self.mesh.unwrap_or(false) && self.peer_tls_secret().is_none()
    }

    /// Whether the `<instance>-external` NodePort Service is wanted.
    pub fn exposes_node_port(&self) -> bool {
        self.expose_node_port.unwrap_or(false)
    }

    /// The public host when an Ingress is rendered (set and not private).
    pub fn ingress_host(&self) -> Option<&str> {
        if self.private.unwrap_or(false) {
            return None;
        }
        non_empty(self.public_host.as_deref())
    }

    /// The storage class, if set and not empty.
    pub fn storage_class(&self) -> Option<&str> {
        non_empty(self.storage_class_name.as_deref())
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn reference_manifest_deserialises_unchanged() {
        let yaml = r#"
apiVersion: kura.tuist.dev/v1alpha1
kind: KuraInstance
metadata: {name: kura-acme, namespace: kura}
spec:
  accountHandle: acme
  tenantID: t-1
  region: fr-par
  image: ghcr.io/tuist/kura:1
  replicas: 0
  peerTLSSecretName: ""
  exposeNodePort: true
  clientCIDRs: ["172.16.0.0/22"]
"#;
        let ki: KuraInstance = serde_norway::from_str(yaml).unwrap();
        assert_eq!(ki.spec.tenant_id, "t-1");
        assert_eq!(ki.spec.effective_replicas(), 3);
        assert!(!ki.spec.peering());
        assert!(ki.spec.exposes_node_port());
        assert_eq!(ki.spec.effective_storage_size(), "200Gi");
        assert_eq!(ki.spec.effective_ingress_class(), "nginx");
    }

    #[test]
    fn crd_names_and_columns_match_the_reference() {
        let crd = KuraInstance::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("kurainstances.kura.tuist.dev")
        );
        let names = &crd.spec.names;
        assert_eq!(names.short_names.as_deref(), Some(&["kura".to_owned()][..]));
        let v = &crd.spec.versions[0];
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Phase", ".status.phase"),
                ("Host", ".spec.publicHost"),
                ("Ready", ".status.readyReplicas"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
        assert!(v.subresources.as_ref().unwrap().status.is_some());
    }
}
