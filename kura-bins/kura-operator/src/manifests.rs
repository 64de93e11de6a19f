//! Generated manifests: the CRD, the RBAC and the operator Deployment, as
//! committed under `kura-bins/kura-operator/deploy/` (a test fails when the
//! committed files drift from this code).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResourceExt;
use serde::Serialize;

use crate::crd::KuraInstance;
use crate::error::Error;
use crate::rbac::{OPERATOR_NAME, rbac};

/// Namespace of the committed `deploy/` manifests.
pub const DEFAULT_NAMESPACE: &str = "kura";
/// Image of the committed Deployment.
pub const DEFAULT_IMAGE: &str = "ghcr.io/kura-cache/kura-operator:0.1.0";
/// Port of the operator's health/metrics/endpoint server.
pub const OPERATOR_HTTP_PORT: u16 = 8080;

fn yaml_doc<T: Serialize>(out: &mut String, value: &T) -> Result<(), Error> {
    let text = serde_norway::to_string(value).map_err(|e| Error::Serialize {
        what: std::any::type_name::<T>().to_owned(),
        message: e.to_string(),
    })?;
    out.push_str("---\n");
    out.push_str(&text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
    Ok(())
}

/// The `CustomResourceDefinition` of `KuraInstance` as YAML.
pub fn crd_yaml() -> Result<String, Error> {
    let mut out = String::new();
    yaml_doc(&mut out, &KuraInstance::crd())?;
    Ok(out)
}

/// ServiceAccount, Role, RoleBinding, ClusterRole and ClusterRoleBinding as a YAML stream.
pub fn rbac_yaml(namespace: &str) -> Result<String, Error> {
    let objs = rbac(namespace);
    let mut out = String::new();
    yaml_doc(&mut out, &objs.service_account)?;
    yaml_doc(&mut out, &objs.role)?;
    yaml_doc(&mut out, &objs.role_binding)?;
    yaml_doc(&mut out, &objs.cluster_role)?;
    yaml_doc(&mut out, &objs.cluster_role_binding)?;
    Ok(out)
}

/// The operator Deployment: one replica (`Recreate`, so two never reconcile
/// at once), the ServiceAccount of [`rbac_yaml`], `kura-operator run` watching
/// its own namespace, with the endpoint hand-off server on port 8080.
pub fn deployment(namespace: &str, image: &str) -> Deployment {
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            OPERATOR_NAME.to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "controller".to_owned(),
        ),
    ]);
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    Deployment {
        metadata: ObjectMeta {
            name: Some(OPERATOR_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(1),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(OPERATOR_NAME.to_owned()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: OPERATOR_NAME.to_owned(),
                        image: Some(image.to_owned()),
                        args: Some(vec!["run".to_owned()]),
                        env: Some(vec![
                            EnvVar {
                                name: "KURA_OPERATOR_NAMESPACE".to_owned(),
                                value: Some(namespace.to_owned()),
                                value_from: None,
                            },
                            EnvVar {
                                name: "POD_NAME".to_owned(),
                                value: None,
                                value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                                    field_ref: Some(
                                        k8s_openapi::api::core::v1::ObjectFieldSelector {
                                            api_version: None,
                                            field_path: "metadata.name".to_owned(),
                                        },
                                    ),
                                    ..Default::default()
                                }),
                            },
                            EnvVar {
                                name: "KURA_OPERATOR_LISTEN".to_owned(),
                                value: Some(format!("0.0.0.0:{OPERATOR_HTTP_PORT}")),
                                value_from: None,
                            },
                        ]),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".to_owned()),
                            container_port: i32::from(OPERATOR_HTTP_PORT),
                            protocol: Some("TCP".to_owned()),
                            ..ContainerPort::default()
                        }]),
                        readiness_probe: Some(probe("/readyz")),
                        liveness_probe: Some(probe("/healthz")),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_owned(), Quantity("50m".to_owned())),
                                ("memory".to_owned(), Quantity("64Mi".to_owned())),
                            ])),
                            limits: Some(BTreeMap::from([(
                                "memory".to_owned(),
                                Quantity("256Mi".to_owned()),
                            )])),
                            ..ResourceRequirements::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".to_owned()]),
                                add: None,
                            }),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// The Deployment as YAML.
pub fn deployment_yaml(namespace: &str, image: &str) -> Result<String, Error> {
    let mut out = String::new();
    yaml_doc(&mut out, &deployment(namespace, image))?;
    Ok(out)
}

/// The files of `deploy/`: `(file name, contents)`.
pub fn deploy_files() -> Result<Vec<(&'static str, String)>, Error> {
    Ok(vec![
        ("crd.yaml", crd_yaml()?),
        ("rbac.yaml", rbac_yaml(DEFAULT_NAMESPACE)?),
        (
            "operator.yaml",
            deployment_yaml(DEFAULT_NAMESPACE, DEFAULT_IMAGE)?,
        ),
    ])
}
