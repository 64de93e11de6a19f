//! Least-privilege RBAC for the provider (what `kura-provider rbac` prints).
//!
//! * a ClusterRole for what is cluster-scoped or spread over namespaces:
//!   Nodes (get/list/watch/patch — the controller stamps `spec.providerID`
//!   and `tuist.dev/pn-ipv4`, which the kubelet cannot set itself under
//!   NodeRestriction), the two machine kinds and their status, Cluster API
//!   Machines and Clusters (read only), and Events;
//! * a Role in `kube-system` for the kubelet identities (bootstrap-token
//!   Secrets: get/create/delete, no list);
//! * the bindings that let nodes joining with those tokens request and get
//!   their `system:node:<name>` client certificate
//!   (`system:node-bootstrapper`, CSR auto-approval for `nodeclient`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Name of the provider's ServiceAccount, roles and bindings.
pub const NAME: &str = "kura-provider";
/// Group the bootstrap tokens minted for kubelets authenticate in.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kura-provider";
/// Namespace of bootstrap-token Secrets (fixed by Kubernetes).
pub const TOKEN_NAMESPACE: &str = "kube-system";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            NAME.to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

fn sa_subject(namespace: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: NAME.into(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    }
}

fn group_subject() -> Subject {
    Subject {
        kind: "Group".into(),
        name: BOOTSTRAP_GROUP.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        ..Subject::default()
    }
}

fn cluster_role_ref(name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: name.into(),
    }
}

/// The provider's ClusterRole.
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(NAME, None),
        rules: Some(vec![
            rule(&[""], &["nodes"], &["get", "list", "watch", "patch"]),
            rule(
                &[crate::crd::GROUP],
                &["scalewayinstancemachines", "scalewayelasticmetalmachines"],
                &["get", "list", "watch", "patch", "update"],
            ),
            rule(
                &[crate::crd::GROUP],
                &[
                    "scalewayinstancemachines/status",
                    "scalewayelasticmetalmachines/status",
                ],
                &["get", "patch", "update"],
            ),
            rule(
                &["cluster.x-k8s.io"],
                &["machines", "clusters"],
                &["get", "list", "watch"],
            ),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        ]),
        ..ClusterRole::default()
    }
}

/// Every RBAC object, in apply order, as a multi-document YAML stream.
pub fn rbac_yaml(namespace: &str) -> Result<String, serde_norway::Error> {
    let sa = ServiceAccount {
        metadata: meta(NAME, Some(namespace)),
        ..ServiceAccount::default()
    };
    let crb = ClusterRoleBinding {
        metadata: meta(NAME, None),
        role_ref: cluster_role_ref(NAME),
        subjects: Some(vec![sa_subject(namespace)]),
    };
    let role = Role {
        metadata: meta(&format!("{NAME}-identities"), Some(TOKEN_NAMESPACE)),
        rules: Some(vec![rule(
            &[""],
            &["secrets"],
            &["get", "create", "delete"],
        )]),
    };
    let rb = RoleBinding {
        metadata: meta(&format!("{NAME}-identities"), Some(TOKEN_NAMESPACE)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: format!("{NAME}-identities"),
        },
        subjects: Some(vec![sa_subject(namespace)]),
    };
    let bootstrapper = ClusterRoleBinding {
        metadata: meta(&format!("{NAME}-node-bootstrapper"), None),
        role_ref: cluster_role_ref("system:node-bootstrapper"),
        subjects: Some(vec![group_subject()]),
    };
    let autoapprove = ClusterRoleBinding {
        metadata: meta(&format!("{NAME}-node-autoapprove"), None),
        role_ref: cluster_role_ref(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        ),
        subjects: Some(vec![group_subject()]),
    };
    let mut out = String::new();
    let docs: Vec<serde_json::Value> = vec![
        with_kind(&sa, "v1", "ServiceAccount"),
        with_kind(
            &cluster_role(),
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
        ),
        with_kind(&crb, "rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        with_kind(&role, "rbac.authorization.k8s.io/v1", "Role"),
        with_kind(&rb, "rbac.authorization.k8s.io/v1", "RoleBinding"),
        with_kind(
            &bootstrapper,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
        ),
        with_kind(
            &autoapprove,
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
        ),
    ];
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&d)?);
    }
    Ok(out)
}

fn with_kind<T: serde::Serialize>(obj: &T, api_version: &str, kind: &str) -> serde_json::Value {
    // k8s-openapi serializes apiVersion/kind itself; this keeps the order
    // stable and the function total.
    let mut v = serde_json::to_value(obj).unwrap_or(serde_json::Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), api_version.into());
        m.insert("kind".into(), kind.into());
    }
    v
}
