//! RBAC of the operator, derived from one table ([`PERMISSIONS`]).
//!
//! The operator watches one namespace, so every namespaced permission is a
//! `Role` in that namespace; only Nodes (cluster-scoped: a namespaced Role
//! stalled every reconcile of the reference with "nodes is forbidden") are in a
//! `ClusterRole`. [`request_permission`] maps an API request to the permission
//! it needs, so tests can check every request the reconciler makes against the
//! table.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The name of the ServiceAccount, roles and bindings.
pub const OPERATOR_NAME: &str = "kura-operator";

/// A Kubernetes API verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// Read one object.
    Get,
    /// List a collection.
    List,
    /// Watch a collection.
    Watch,
    /// Create an object (server-side apply of a new object also needs `patch`).
    Create,
    /// Patch (server-side apply, merge patch).
    Patch,
    /// Replace.
    Update,
    /// Delete one object.
    Delete,
}

impl Verb {
    /// The verb as RBAC spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Patch => "patch",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a permission is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A `Role` in the watched namespace.
    Namespace,
    /// The `ClusterRole` (cluster-scoped resources).
    Cluster,
}

/// One row of the table: verbs on a resource of an API group.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource (plural, with `/subresource`).
    pub resource: &'static str,
    /// Verbs granted.
    pub verbs: &'static [Verb],
    /// Role or ClusterRole.
    pub scope: Scope,
}

use Verb::{Create, Delete, Get, List, Patch, Update, Watch};

/// Everything the operator may do. Server-side apply sends `PATCH`; deleting
/// an object the spec no longer wants sends `DELETE`.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "kura.tuist.dev",
        resource: "kurainstances",
        verbs: &[Get, List, Watch, Patch, Update],
        scope: Scope::Namespace,
    },
    Permission {
        group: "kura.tuist.dev",
        resource: "kurainstances/status",
        verbs: &[Get, Patch, Update],
        scope: Scope::Namespace,
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &[Get, List, Watch, Create, Patch, Delete],
        scope: Scope::Namespace,
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &[Get, List, Watch, Create, Patch, Delete],
        scope: Scope::Namespace,
    },
    Permission {
        group: "",
        resource: "pods",
        verbs: &[Get, List, Watch],
        scope: Scope::Namespace,
    },
    Permission {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &[Get, List, Patch, Delete],
        scope: Scope::Namespace,
    },
    Permission {
        group: "apps",
        resource: "statefulsets",
        verbs: &[Get, List, Watch, Create, Patch, Delete],
        scope: Scope::Namespace,
    },
    Permission {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &[Get, List, Watch, Create, Patch, Delete],
        scope: Scope::Namespace,
    },
    Permission {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &[Get, List, Watch, Create, Patch, Delete],
        scope: Scope::Namespace,
    },
    Permission {
        group: "networking.k8s.io",
        resource: "ingresses",
        verbs: &[Get, List, Watch, Create, Patch, Delete],
        scope: Scope::Namespace,
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &[Create, Patch],
        scope: Scope::Namespace,
    },
    Permission {
        group: "",
        resource: "nodes",
        verbs: &[Get, List, Watch],
        scope: Scope::Cluster,
    },
];

/// Whether the table grants `verb` on `group`/`resource`.
pub fn granted(group: &str, resource: &str, verb: Verb) -> bool {
    PERMISSIONS
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}

/// The permission an API request needs: `(group, resource, verb)`, from its
/// HTTP method and URL path (with query). `None` for paths that are not
/// resource requests (discovery, `/version`).
pub fn request_permission(method: &str, path_and_query: &str) -> Option<(String, String, Verb)> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match *segs.first()? {
        "api" => ("", segs.get(2..)?),
        "apis" => (*segs.get(1)?, segs.get(3..)?),
        _ => return None,
    };
    // rest: [namespaces, ns, resource, name?, sub?] or [resource, name?, sub?]
    let rest = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        &rest[2..]
    } else {
        rest
    };
    let resource = *rest.first()?;
    let name = rest.get(1);
    let resource = match rest.get(2) {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    let watch = query.split('&').any(|kv| kv == "watch=true");
    let verb = match (method, name.is_some()) {
        ("GET", true) => Get,
        ("GET", false) if watch => Watch,
        ("GET", false) => List,
        ("POST", _) => Create,
        ("PATCH", _) => Patch,
        ("PUT", _) => Update,
        ("DELETE", true) => Delete,
        _ => return None,
    };
    Some((group.to_owned(), resource, verb))
}

fn rules(scope: Scope) -> Vec<PolicyRule> {
    PERMISSIONS
        .iter()
        .filter(|p| p.scope == scope)
        .map(|p| PolicyRule {
            api_groups: Some(vec![p.group.to_owned()]),
            resources: Some(vec![p.resource.to_owned()]),
            verbs: p.verbs.iter().map(|v| v.as_str().to_owned()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            OPERATOR_NAME.to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "controller".to_owned(),
        ),
    ])
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels()),
        ..ObjectMeta::default()
    }
}

/// The RBAC objects for an operator running (and watching) `namespace`.
#[derive(Debug, Clone)]
pub struct RbacObjects {
    /// The ServiceAccount.
    pub service_account: ServiceAccount,
    /// Namespaced permissions.
    pub role: Role,
    /// Binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
    /// Node reads.
    pub cluster_role: ClusterRole,
    /// Binds the ClusterRole to the ServiceAccount.
    pub cluster_role_binding: ClusterRoleBinding,
}

/// Renders the RBAC objects from [`PERMISSIONS`].
pub fn rbac(namespace: &str) -> RbacObjects {
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: OPERATOR_NAME.to_owned(),
        namespace: Some(namespace.to_owned()),
        api_group: None,
    };
    RbacObjects {
        service_account: ServiceAccount {
            metadata: meta(OPERATOR_NAME, Some(namespace)),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta(OPERATOR_NAME, Some(namespace)),
            rules: Some(rules(Scope::Namespace)),
        },
        role_binding: RoleBinding {
            metadata: meta(OPERATOR_NAME, Some(namespace)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "Role".to_owned(),
                name: OPERATOR_NAME.to_owned(),
            },
            subjects: Some(vec![subject.clone()]),
        },
        cluster_role: ClusterRole {
            metadata: meta(OPERATOR_NAME, None),
            rules: Some(rules(Scope::Cluster)),
            aggregation_rule: None,
        },
        cluster_role_binding: ClusterRoleBinding {
            metadata: meta(OPERATOR_NAME, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: "ClusterRole".to_owned(),
                name: OPERATOR_NAME.to_owned(),
            },
            subjects: Some(vec![subject]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_permissions() {
        let cases = [
            ("GET", "/api/v1/nodes/n1", ("", "nodes", Get)),
            (
                "GET",
                "/api/v1/namespaces/kura/pods?watch=true&resourceVersion=1",
                ("", "pods", Watch),
            ),
            (
                "GET",
                "/apis/kura.tuist.dev/v1alpha1/namespaces/kura/kurainstances?labelSelector=x",
                ("kura.tuist.dev", "kurainstances", List),
            ),
            (
                "PATCH",
                "/apis/kura.tuist.dev/v1alpha1/namespaces/kura/kurainstances/a/status?fieldManager=x",
                ("kura.tuist.dev", "kurainstances/status", Patch),
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/kura/statefulsets/a",
                ("apps", "statefulsets", Delete),
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/kura/events",
                ("events.k8s.io", "events", Create),
            ),
        ];
        for (method, path, (g, r, v)) in cases {
            assert_eq!(
                request_permission(method, path),
                Some((g.to_owned(), r.to_owned(), v)),
                "{method} {path}"
            );
        }
        assert_eq!(request_permission("GET", "/version"), None);
    }

    #[test]
    fn nodes_are_only_in_the_cluster_role() {
        let objs = rbac("kura");
        let cluster = objs.cluster_role.rules.unwrap();
        assert_eq!(cluster.len(), 1);
        assert_eq!(
            cluster[0].resources.as_deref(),
            Some(&["nodes".to_owned()][..])
        );
        assert_eq!(cluster[0].verbs, ["get", "list", "watch"]);
        let role = objs.role.rules.unwrap();
        assert!(
            role.iter()
                .all(|r| r.resources.as_ref().unwrap()[0] != "nodes")
        );
    }
}
