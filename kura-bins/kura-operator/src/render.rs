//! The pure part of the reconciler: every object one `KuraInstance` needs,
//! computed from the instance, the live objects it depends on and the time.
//!
//! [`render`] does no I/O. The reconciler and `kura-operator render` both call
//! it, so the dry run shows exactly what would be applied.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, NetworkPolicy, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kura_ca::time::OffsetDateTime;
use kura_netpol::{
    BandwidthLimits, CidrSet, ClientCidrRules, HostBits, InstancePolicy, ManagedBy, Peering,
    PodName, merge_annotations, preserve_node_ports, prometheus_annotations,
};
use serde::Serialize;

use crate::crd::KuraInstance;
use crate::error::{Error, SpecError};

/// The cache port.
pub const HTTP_PORT: i32 = 4000;
/// The peer (replication, mTLS) port.
pub const PEER_PORT: i32 = 7443;
/// Where the data volume is mounted.
pub const DATA_DIR: &str = "/var/cache/kura";
/// Where the peer TLS Secret is mounted.
pub const PEER_TLS_DIR: &str = "/etc/kura/peer-tls";
/// Termination grace period of the cache pods (seconds).
pub const TERMINATION_GRACE_SECONDS: i64 = 275;
/// Seconds the preStop hook waits so endpoints drop the pod before SIGTERM.
pub const PRE_STOP_DRAIN_SECONDS: u32 = 15;
/// Extended resource carrying the guaranteed egress (Mbit/s).
pub const EGRESS_RESOURCE: &str = "tuist.dev/egress-mbps";
/// Default `app.kubernetes.io/managed-by` value (the reference's, so selectors
/// and dashboards keep working).
pub const DEFAULT_MANAGED_BY: &str = "kura-controller";
/// Name of the data volume claim template.
pub const DATA_VOLUME: &str = "data";

/// Options that are the operator's, not the instance's.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The `app.kubernetes.io/managed-by` label value.
    pub managed_by: String,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Minimum time a CA rotation phase lasts once every leaf of the account
    /// is updated, so the kubelet has refreshed the mounted Secrets (and the
    /// nodes reloaded them) before the next phase.
    pub rotation_dwell: kura_ca::time::Duration,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            managed_by: DEFAULT_MANAGED_BY.to_owned(),
            cluster_domain: kura_ca::names::DEFAULT_CLUSTER_DOMAIN.to_owned(),
            rotation_dwell: kura_ca::time::Duration::minutes(10),
        }
    }
}

/// Live objects the rendering depends on. Everything is optional: a missing
/// object renders as a fresh one.
#[derive(Debug, Clone, Default)]
pub struct LiveObjects {
    /// The `<instance>-external` Service (its allocated NodePorts are kept).
    pub external_service: Option<Service>,
    /// The primary Service `<instance>` (its selector names the primary pod).
    pub primary_service: Option<Service>,
    /// The account CA Secret `kura-<account>-peer-ca`.
    pub ca_secret: Option<Secret>,
    /// The leaf Secret `<instance>-peer-tls`.
    pub leaf_secret: Option<Secret>,
    /// The StatefulSet `<instance>` (its claim templates are immutable).
    pub statefulset: Option<StatefulSet>,
    /// Every leaf Secret of the account (all its instances), for CA rotation.
    pub account_leaves: Vec<Secret>,
    /// The instance's PersistentVolumeClaims (a recreated StatefulSet must not
    /// reuse claim names of another storage class).
    pub claims: Vec<PersistentVolumeClaim>,
}

impl LiveObjects {
    /// Sorts arbitrary live objects (e.g. from YAML files) into the slots
    /// `instance` depends on, by kind and name. Unrelated objects are ignored.
    pub fn from_dynamic(
        instance: &KuraInstance,
        objects: impl IntoIterator<Item = serde_json::Value>,
    ) -> Result<Self, Error> {
        let name = instance.metadata.name.clone().unwrap_or_default();
        let account = kura_ca::AccountHandle::new(instance.spec.account_handle.clone()).ok();
        let ca_name = account.as_ref().map(kura_ca::names::ca_secret_name);
        let mut live = LiveObjects::default();
        for value in objects {
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_owned();
            let obj_name = value
                .pointer("/metadata/name")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_owned();
            let parse = |what: &str| Error::Live {
                path: format!("{kind}/{obj_name}"),
                message: format!("not a valid {what}"),
            };
            match kind.as_str() {
                "Service" if obj_name == format!("{name}-external") => {
                    live.external_service =
                        Some(serde_json::from_value(value).map_err(|_| parse("Service"))?);
                }
                "Service" if obj_name == name => {
                    live.primary_service =
                        Some(serde_json::from_value(value).map_err(|_| parse("Service"))?);
                }
                "Secret" if Some(&obj_name) == ca_name.as_ref() => {
                    live.ca_secret =
                        Some(serde_json::from_value(value).map_err(|_| parse("Secret"))?);
                }
                "Secret" if obj_name == format!("{name}-peer-tls") => {
                    live.leaf_secret =
                        Some(serde_json::from_value(value).map_err(|_| parse("Secret"))?);
                }
                "StatefulSet" if obj_name == name => {
                    live.statefulset =
                        Some(serde_json::from_value(value).map_err(|_| parse("StatefulSet"))?);
                }
                "PersistentVolumeClaim" if obj_name.contains(&format!("-{name}-")) => {
                    live.claims.push(
                        serde_json::from_value(value)
                            .map_err(|_| parse("PersistentVolumeClaim"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(live)
    }
}

/// An object the reconciler applies (server-side apply).
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Desired {
    /// A Service.
    Service(Service),
    /// The NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// The PodDisruptionBudget.
    PodDisruptionBudget(PodDisruptionBudget),
    /// The StatefulSet.
    StatefulSet(StatefulSet),
    /// A Secret (account CA, leaf).
    Secret(Secret),
    /// The Ingress.
    Ingress(Ingress),
}

impl Desired {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Desired::Service(_) => "Service",
            Desired::NetworkPolicy(_) => "NetworkPolicy",
            Desired::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Desired::StatefulSet(_) => "StatefulSet",
            Desired::Secret(_) => "Secret",
            Desired::Ingress(_) => "Ingress",
        }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Desired::Service(o) => &o.metadata,
            Desired::NetworkPolicy(o) => &o.metadata,
            Desired::PodDisruptionBudget(o) => &o.metadata,
            Desired::StatefulSet(o) => &o.metadata,
            Desired::Secret(o) => &o.metadata,
            Desired::Ingress(o) => &o.metadata,
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    /// The object as JSON (with `apiVersion` and `kind`).
    pub fn to_json(&self) -> Result<serde_json::Value, Error> {
        fn ser<T: Serialize>(what: &str, t: &T) -> Result<serde_json::Value, Error> {
            serde_json::to_value(t).map_err(|e| Error::Serialize {
                what: what.to_owned(),
                message: e.to_string(),
            })
        }
        match self {
            Desired::Service(o) => ser("Service", o),
            Desired::NetworkPolicy(o) => ser("NetworkPolicy", o),
            Desired::PodDisruptionBudget(o) => ser("PodDisruptionBudget", o),
            Desired::StatefulSet(o) => ser("StatefulSet", o),
            Desired::Secret(o) => ser("Secret", o),
            Desired::Ingress(o) => ser("Ingress", o),
        }
    }
}

/// Annotation on the CA Secret: the last `kura.tuist.dev/rotate-ca` token acted on.
pub const ROTATION_TOKEN_ANNOTATION: &str = "kura.tuist.dev/rotation-token";
/// Annotation on the CA Secret: when the current rotation phase began (RFC 3339).
pub const ROTATION_SINCE_ANNOTATION: &str = "kura.tuist.dev/rotation-phase-since";

/// Kinds of objects the reconciler may delete because the spec no longer wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Removable {
    /// `<instance>-external` (no `exposeNodePort`).
    ExternalService,
    /// The PDB (replicas ≤ 1).
    PodDisruptionBudget,
    /// The Ingress (no public host, or private).
    Ingress,
}

/// Why a certificate was (re-)issued, or that it was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertAction {
    /// Operator-managed certificates are off for this instance.
    NotManaged,
    /// The live material is valid and kept byte-for-byte.
    Kept,
    /// New material was issued, for this reason.
    Issued(String),
}

/// A storage class change the StatefulSet cannot absorb in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageClassChange {
    /// The class of the live claim template (`None`: cluster default).
    pub from: Option<String>,
    /// The class the spec asks for.
    pub to: Option<String>,
}

/// Everything [`render`] decided for one instance.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Objects to apply, in apply order (Secrets before the StatefulSet that mounts them).
    pub objects: Vec<Desired>,
    /// Objects (named `<instance>…`) to delete: the NodePort Service only when
    /// it is live, the PodDisruptionBudget and Ingress whenever the spec no
    /// longer asks for them (a 404 is fine).
    pub remove: Vec<(Removable, String)>,
    /// The primary pod the Services are pinned to.
    pub primary_pod: String,
    /// What happened to the account CA.
    pub ca: CertAction,
    /// What happened to the leaf.
    pub leaf: CertAction,
    /// User pod annotations replaced by controller-owned ones (`key`, user value).
    pub overridden_annotations: Vec<(String, String)>,
    /// A pending storage class migration, when the live StatefulSet's claim
    /// template has another class than the spec.
    pub storage_class_change: Option<StorageClassChange>,
    /// `https://<publicHost>` when an Ingress is rendered.
    pub public_url: Option<String>,
}

impl Rendered {
    /// The rendered objects as a YAML stream (`---` before each document).
    pub fn to_yaml_stream(&self) -> Result<String, Error> {
        let mut out = String::new();
        for obj in &self.objects {
            let text = serde_norway::to_string(&obj.to_json()?).map_err(|e| Error::Serialize {
                what: obj.kind().to_owned(),
                message: e.to_string(),
            })?;
            out.push_str("---\n");
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// The first object of `kind` named `name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Desired> {
        self.objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
    }
}

/// Validated identity of an instance.
#[derive(Debug, Clone)]
pub struct InstanceNames {
    /// `metadata.name`.
    pub instance: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.accountHandle`.
    pub account: kura_ca::AccountHandle,
    /// `kura-<account>-peers`.
    pub peer_service: String,
    /// `kura-<account>-peer-ca`.
    pub ca_secret: String,
    /// `<instance>-peer-tls`.
    pub leaf_secret: String,
}

impl InstanceNames {
    /// Validates the names of `ki`.
    pub fn of(ki: &KuraInstance) -> Result<Self, SpecError> {
        let instance = ki
            .metadata
            .name
            .clone()
            .ok_or(SpecError::MissingMetadata("metadata.name"))?;
        let namespace = ki
            .metadata
            .namespace
            .clone()
            .ok_or(SpecError::MissingMetadata("metadata.namespace"))?;
        let inst =
            kura_ca::InstanceName::new(instance.clone()).map_err(|e| SpecError::InvalidName {
                field: "metadata.name",
                message: e.to_string(),
            })?;
        let account = kura_ca::AccountHandle::new(ki.spec.account_handle.clone()).map_err(|e| {
            SpecError::InvalidName {
                field: "accountHandle",
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            peer_service: kura_ca::names::peer_service_name(&account),
            ca_secret: kura_ca::names::ca_secret_name(&account),
            leaf_secret: kura_ca::names::leaf_secret_name(&inst),
            instance,
            namespace,
            account,
        })
    }
}

fn name_err(field: &'static str) -> impl Fn(kura_netpol::Error) -> SpecError {
    move |e| SpecError::InvalidName {
        field,
        message: e.to_string(),
    }
}

/// The label sets and the kura-netpol policy of an instance.
pub(crate) fn policy_of(
    ki: &KuraInstance,
    names: &InstanceNames,
    options: &RenderOptions,
) -> Result<InstancePolicy, SpecError> {
    let instance = kura_netpol::InstanceName::new(names.instance.clone())
        .map_err(name_err("metadata.name"))?;
    let namespace = kura_netpol::Namespace::new(names.namespace.clone())
        .map_err(name_err("metadata.namespace"))?;
    let account = kura_netpol::AccountHandle::new(names.account.as_str().to_owned())
        .map_err(name_err("accountHandle"))?;
    let region = kura_netpol::Region::new(ki.spec.region.clone()).map_err(name_err("region"))?;
    let managed_by =
        ManagedBy::new(options.managed_by.clone()).map_err(name_err("managed-by option"))?;
    let mut allowed = CidrSet::new();
    for (index, value) in ki.spec.client_cidrs.iter().flatten().enumerate() {
        let parsed = kura_netpol::Cidr::parse(value, HostBits::Reject).map_err(|source| {
            SpecError::InvalidCidr {
                index,
                value: value.clone(),
                source,
            }
        })?;
        allowed.insert(parsed.cidr);
    }
    let clients = ClientCidrRules::new()
        .check(&allowed, &CidrSet::new())
        .map_err(SpecError::UnsafeCidrs)?;
    let mut policy = InstancePolicy::new(instance, namespace, account)
        .with_region(region)
        .with_managed_by(managed_by)
        .with_client_cidrs(clients);
    if ki.spec.peering() {
        policy = policy.with_peering(Peering::cross_provider_any_ipv4());
    }
    Ok(policy)
}

/// The primary pod named by a live primary Service's selector, if any.
pub fn primary_from_service(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()?
        .get(kura_netpol::LABEL_POD_NAME)
        .cloned()
}

fn meta(
    name: &str,
    names: &InstanceNames,
    labels: &BTreeMap<String, String>,
    owner: Option<&OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels.clone()),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(ki: &KuraInstance) -> Option<OwnerReference> {
    let uid = ki.metadata.uid.clone()?;
    Some(OwnerReference {
        api_version: KuraInstance::api_version(&()).into_owned(),
        kind: KuraInstance::kind(&()).into_owned(),
        name: ki.metadata.name.clone()?,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn secret_bytes(secret: Option<&Secret>) -> kura_ca::SecretData {
    secret
        .and_then(|s| s.data.as_ref())
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

fn to_secret_data(data: kura_ca::SecretData) -> BTreeMap<String, ByteString> {
    data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Validates `storageSize` (a positive Kubernetes quantity).
fn storage_quantity(size: &str) -> Result<Quantity, SpecError> {
    let q = kura_netpol::Quantity::parse(size).map_err(|e| SpecError::InvalidQuantity {
        value: size.to_owned(),
        message: e.to_string(),
    })?;
    if q.is_negative() || q.is_zero() {
        return Err(SpecError::InvalidQuantity {
            value: size.to_owned(),
            message: "must be greater than zero".to_owned(),
        });
    }
    Ok(Quantity(size.to_owned()))
}

/// Moves an account CA rotation forward by at most one phase:
///
/// - `Stable` and an instance's `kura.tuist.dev/rotate-ca` token differs from
///   the one recorded on the CA Secret → generate the next CA and publish it
///   in every leaf's trust bundle (`NextPublished`);
/// - `NextPublished`, every leaf of the account carries the new bundle, and the
///   phase is older than the dwell time → the next CA signs (`SigningWithNext`);
/// - `SigningWithNext`, every leaf is signed by the new CA, dwell elapsed →
///   drop the previous CA (`Stable`).
///
/// At every step, any two leaves of the account trust each other's issuer, so
/// peers never reject each other.
fn advance_rotation(
    pki: kura_ca::AccountPki,
    ki: &KuraInstance,
    names: &InstanceNames,
    account_leaves: &[Secret],
    annotations: &mut BTreeMap<String, String>,
    dwell: kura_ca::time::Duration,
    now: OffsetDateTime,
) -> Result<(kura_ca::AccountPki, Option<String>), Error> {
    use kura_ca::RotationPhase;
    use kura_ca::time::format_description::well_known::Rfc3339;
    let stamp = |annotations: &mut BTreeMap<String, String>| {
        annotations.insert(
            ROTATION_SINCE_ANNOTATION.to_owned(),
            now.format(&Rfc3339).unwrap_or_default(),
        );
    };
    let dwelled = annotations
        .get(ROTATION_SINCE_ANNOTATION)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .is_none_or(|since| now - since >= dwell);
    let bundle = pki.trust_bundle().to_pem().into_bytes();
    let leaves: Vec<kura_ca::SecretData> = account_leaves
        .iter()
        .map(|s| secret_bytes(Some(s)))
        .collect();
    match pki.phase() {
        RotationPhase::Stable => {
            let requested = ki
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::crd::ROTATE_CA_ANNOTATION))
                .filter(|t| !t.is_empty());
            match requested {
                Some(token) if annotations.get(ROTATION_TOKEN_ANNOTATION) != Some(token) => {
                    annotations.insert(ROTATION_TOKEN_ANNOTATION.to_owned(), token.clone());
                    stamp(annotations);
                    let next =
                        pki.begin_rotation(&names.account, &kura_ca::CaOptions::default(), now)?;
                    Ok((
                        next,
                        Some(format!("CA rotation {token:?}: next CA published")),
                    ))
                }
                _ => Ok((pki, None)),
            }
        }
        RotationPhase::NextPublished => {
            let all_trust = leaves
                .iter()
                .all(|l| l.get(kura_ca::CA_CERT_KEY) == Some(&bundle));
            if all_trust && dwelled {
                stamp(annotations);
                Ok((
                    pki.promote_next()?,
                    Some("CA rotation: the new CA signs".to_owned()),
                ))
            } else {
                Ok((pki, None))
            }
        }
        RotationPhase::SigningWithNext => {
            // A leaf is signed by the new CA iff it validates against it alone.
            let signer = kura_ca::TrustBundle::single(pki.signing_ca());
            let signer_pem = signer.to_pem().into_bytes();
            let all_signed = leaves.iter().all(|l| {
                let mut data = l.clone();
                data.insert(kura_ca::CA_CERT_KEY.to_owned(), signer_pem.clone());
                kura_ca::validate_leaf(&data, &signer, &[], now).is_ok()
            });
            if all_signed && dwelled {
                stamp(annotations);
                Ok((
                    pki.drop_previous()?,
                    Some("CA rotation: previous CA dropped".to_owned()),
                ))
            } else {
                Ok((pki, None))
            }
        }
        _ => Ok((pki, None)),
    }
}

fn slug(class: &str) -> String {
    let s: String = class
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_owned()
}

/// The claim template name for a new StatefulSet: `data`, unless claims of
/// that name with another storage class exist (a class migration in
/// progress), then `data-<class>` (then with a numeric suffix). Claim names
/// are `<template>-<instance>-<ordinal>`.
fn fresh_claim_name(
    instance: &str,
    claims: &[PersistentVolumeClaim],
    class: Option<&str>,
) -> String {
    let conflicts = |template: &str| {
        let prefix = format!("{template}-{instance}-");
        claims.iter().any(|c| {
            let name = c.metadata.name.as_deref().unwrap_or("");
            let is_ours = name
                .strip_prefix(&prefix)
                .is_some_and(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()));
            let their_class = c
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref());
            is_ours && class.is_some() && their_class != class
        })
    };
    let mut candidates = vec![DATA_VOLUME.to_owned()];
    if let Some(class) = class {
        let base = format!("{DATA_VOLUME}-{}", slug(class));
        candidates.push(base.clone());
        candidates.extend((2..10).map(|n| format!("{base}-{n}")));
    }
    candidates
        .into_iter()
        .find(|t| !conflicts(t))
        .unwrap_or_else(|| DATA_VOLUME.to_owned())
}

/// Renders every object of `ki` (see the module docs).
///
/// `primary_pod` is the pod chosen by [`crate::primary`]; `None` keeps the one
/// the live primary Service names, or `<instance>-0`.
pub fn render(
    ki: &KuraInstance,
    live: &LiveObjects,
    primary_pod: Option<&str>,
    options: &RenderOptions,
    now: OffsetDateTime,
) -> Result<Rendered, Error> {
    let names = InstanceNames::of(ki)?;
    let policy = policy_of(ki, &names, options)?;
    let spec = &ki.spec;
    let owner = owner_reference(ki);
    let owner = owner.as_ref();
    let labels = policy.labels();
    let selector = policy.selector_labels();
    let i = names.instance.as_str();
    let ns = names.namespace.as_str();
    let domain = options.cluster_domain.as_str();
    let replicas = spec.effective_replicas();
    let storage = storage_quantity(spec.effective_storage_size())?;
    if let Some(mbps) = spec.egress_guaranteed_mbps
        && mbps < 0
    {
        return Err(SpecError::OutOfRange {
            field: "egressGuaranteedMbps",
            value: i64::from(mbps),
            message: "must be ≥ 0",
        }
        .into());
    }
    let user_annotations = spec.pod_annotations.clone().unwrap_or_default();
    // A malformed bandwidth annotation would make the kubelet refuse the pod.
    BandwidthLimits::from_annotations(&user_annotations).map_err(SpecError::InvalidAnnotation)?;
    let mesh_host = match spec
        .mesh_public_peer_host
        .as_deref()
        .filter(|h| !h.is_empty())
    {
        Some(h) => {
            Some(
                kura_ca::HostName::new(h.to_owned()).map_err(|e| SpecError::InvalidName {
                    field: "meshPublicPeerHost",
                    message: e.to_string(),
                })?,
            )
        }
        None => None,
    };

    let primary = primary_pod
        .map(str::to_owned)
        .or_else(|| live.primary_service.as_ref().and_then(primary_from_service))
        .unwrap_or_else(|| format!("{i}-0"));
    let primary_name = PodName::new(primary.clone()).map_err(name_err("primary pod"))?;

    let mut objects = Vec::new();
    let mut remove = Vec::new();

    // Certificates first: the StatefulSet mounts them.
    let (mut ca_action, mut leaf_action) = (CertAction::NotManaged, CertAction::NotManaged);
    if spec.managed_certificates() {
        let live_ca = secret_bytes(live.ca_secret.as_ref());
        let live_annotations = live
            .ca_secret
            .as_ref()
            .and_then(|s| s.metadata.annotations.clone())
            .unwrap_or_default();
        let (mut pki, action) = match kura_ca::AccountPki::from_secret_data(&live_ca, now) {
            Ok(pki) => (pki, CertAction::Kept),
            Err(e) => {
                let reason = if live.ca_secret.is_none() {
                    "no account CA yet".to_owned()
                } else {
                    format!("account CA invalid: {e}")
                };
                let pki = kura_ca::AccountPki::generate(
                    &names.account,
                    &kura_ca::CaOptions::default(),
                    now,
                )?;
                (pki, CertAction::Issued(reason))
            }
        };
        ca_action = action;
        let mut ca_annotations = BTreeMap::new();
        for key in [ROTATION_TOKEN_ANNOTATION, ROTATION_SINCE_ANNOTATION] {
            if let Some(v) = live_annotations.get(key) {
                ca_annotations.insert(key.to_owned(), v.clone());
            }
        }
        if ca_action == CertAction::Kept {
            let (next, reason) = advance_rotation(
                pki,
                ki,
                &names,
                &live.account_leaves,
                &mut ca_annotations,
                options.rotation_dwell,
                now,
            )?;
            pki = next;
            if let Some(reason) = reason {
                ca_action = CertAction::Issued(reason);
            }
        }
        let ca_data = match ca_action {
            CertAction::Kept => live_ca,
            _ => pki.to_secret_data(),
        };
        let ca_labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "kura".to_owned()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                options.managed_by.clone(),
            ),
            (
                "tuist.dev/account".to_owned(),
                names.account.as_str().to_owned(),
            ),
        ]);
        let mut ca_meta = meta(&names.ca_secret, &names, &ca_labels, None);
        ca_meta.annotations = (!ca_annotations.is_empty()).then_some(ca_annotations);
        objects.push(Desired::Secret(Secret {
            metadata: ca_meta,
            type_: Some("Opaque".to_owned()),
            data: Some(to_secret_data(ca_data)),
            ..Secret::default()
        }));

        let mut request = kura_ca::LeafRequest::new(
            kura_ca::InstanceName::new(i.to_owned()).map_err(|e| SpecError::InvalidName {
                field: "metadata.name",
                message: e.to_string(),
            })?,
            kura_ca::Namespace::new(ns.to_owned()).map_err(|e| SpecError::InvalidName {
                field: "metadata.namespace",
                message: e.to_string(),
            })?,
            names.account.clone(),
        )
        .cluster_domain(kura_ca::ClusterDomain::new(domain.to_owned()).map_err(|e| {
            SpecError::InvalidName {
                field: "cluster domain option",
                message: e.to_string(),
            }
        })?);
        if let Some(host) = mesh_host.clone() {
            request = request.extra_name(host);
        }
        let live_leaf = secret_bytes(live.leaf_secret.as_ref());
        // Every literal SAN must be covered (wildcards are checked through
        // the names they cover), starting with the account peer Service name.
        let sans = request.sans();
        let peer_dns = request.peer_service_dns_name();
        let mut expected: Vec<&str> = vec![peer_dns.as_str()];
        expected.extend(
            sans.iter()
                .map(String::as_str)
                .filter(|s| !s.starts_with("*.")),
        );
        let leaf_data = match (
            &live.leaf_secret,
            pki.validate_leaf(&live_leaf, &expected, now),
        ) {
            (Some(_), Ok(info)) if !info.needs_renewal(now) => {
                leaf_action = CertAction::Kept;
                live_leaf
            }
            (Some(_), Ok(info)) => {
                leaf_action =
                    CertAction::Issued(format!("leaf expires {} (renewal window)", info.not_after));
                pki.issue_leaf(&request, now)?.to_secret_data()
            }
            (None, _) => {
                leaf_action = CertAction::Issued("no leaf yet".to_owned());
                pki.issue_leaf(&request, now)?.to_secret_data()
            }
            (Some(_), Err(problem)) => {
                leaf_action = CertAction::Issued(format!("leaf invalid: {problem}"));
                pki.issue_leaf(&request, now)?.to_secret_data()
            }
        };
        objects.push(Desired::Secret(Secret {
            metadata: meta(&names.leaf_secret, &names, &labels, owner),
            type_: Some("Opaque".to_owned()),
            data: Some(to_secret_data(leaf_data)),
            ..Secret::default()
        }));
    }

    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };

    // 1. Headless Service.
    objects.push(Desired::Service(Service {
        metadata: meta(&format!("{i}-headless"), &names, &labels, owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector.clone()),
            ports: Some(vec![port("http", HTTP_PORT), port("peer", PEER_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }));

    // 2. Account peer Service (shared, no owner reference).
    if spec.peering() {
        let account_labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "kura".to_owned()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                options.managed_by.clone(),
            ),
            (
                "tuist.dev/account".to_owned(),
                names.account.as_str().to_owned(),
            ),
        ]);
        objects.push(Desired::Service(Service {
            metadata: meta(&names.peer_service, &names, &account_labels, None),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_owned()),
                publish_not_ready_addresses: Some(true),
                selector: Some(policy.account_peer_selector()),
                ports: Some(vec![port("peer", PEER_PORT)]),
                ..ServiceSpec::default()
            }),
            status: None,
        }));
    }

    // 3. Primary Service pinned to the primary pod.
    let mut pinned = selector.clone();
    pinned.insert(kura_netpol::LABEL_POD_NAME.to_owned(), primary.clone());
    objects.push(Desired::Service(Service {
        metadata: meta(i, &names, &labels, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(pinned),
            ports: Some(vec![port("http", HTTP_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }));

    // 4. NodePort Service, allocated ports preserved.
    if spec.exposes_node_port() {
        let mut external = policy.external_service(&primary_name, None);
        external.metadata.owner_references = owner.map(|o| vec![o.clone()]);
        let external = preserve_node_ports(live.external_service.as_ref(), external);
        objects.push(Desired::Service(external));
    } else if live.external_service.is_some() {
        // Only a live one is deleted: no DELETE round trip on every reconcile.
        remove.push((Removable::ExternalService, policy.external_service_name()));
    }

    // 5. NetworkPolicy.
    let mut netpol = policy.network_policy();
    netpol.metadata.owner_references = owner.map(|o| vec![o.clone()]);
    objects.push(Desired::NetworkPolicy(netpol));

    // 6. PodDisruptionBudget.
    if replicas > 1 {
        objects.push(Desired::PodDisruptionBudget(PodDisruptionBudget {
            metadata: meta(i, &names, &labels, owner),
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(replicas - 1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        }));
    } else {
        remove.push((Removable::PodDisruptionBudget, i.to_owned()));
    }

    // Ingress for public instances.
    let public_url = spec.ingress_host().map(|h| format!("https://{h}"));
    if let Some(host) = spec.ingress_host() {
        objects.push(Desired::Ingress(Ingress {
            metadata: meta(i, &names, &labels, owner),
            spec: Some(IngressSpec {
                ingress_class_name: Some(spec.effective_ingress_class().to_owned()),
                rules: Some(vec![IngressRule {
                    host: Some(host.to_owned()),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some("/".to_owned()),
                            path_type: "Prefix".to_owned(),
                            backend: IngressBackend {
                                service: Some(IngressServiceBackend {
                                    name: i.to_owned(),
                                    port: Some(ServiceBackendPort {
                                        name: Some("http".to_owned()),
                                        number: None,
                                    }),
                                }),
                                resource: None,
                            },
                        }],
                    }),
                }]),
                ..IngressSpec::default()
            }),
            status: None,
        }));
    } else {
        remove.push((Removable::Ingress, i.to_owned()));
    }

    // 7–9. StatefulSet.
    let merged = merge_annotations(&user_annotations, &prometheus_annotations());
    let overridden_annotations = merged
        .overridden
        .iter()
        .map(|o| (o.key.clone(), o.user_value.clone()))
        .collect();
    let discovery = if spec.peering() {
        format!("{}.{ns}.svc.{domain}", names.peer_service)
    } else {
        format!("{i}-headless.{ns}.svc.{domain}")
    };
    let mut env_vars = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        env("KURA_PORT", HTTP_PORT.to_string()),
        env("KURA_TENANT_ID", spec.tenant_id.clone()),
        env("KURA_REGION", spec.region.clone()),
        env("KURA_DATA_DIR", DATA_DIR),
        env("KURA_TMP_DIR", format!("{DATA_DIR}/tmp")),
        env(
            "KURA_NODE_URL",
            format!("https://$(POD_NAME).{i}-headless.$(POD_NAMESPACE).svc.{domain}:{PEER_PORT}"),
        ),
        env("KURA_DISCOVERY_DNS_NAME", discovery),
        env("KURA_INTERNAL_PORT", PEER_PORT.to_string()),
        env(
            "KURA_INTERNAL_TLS_CA_CERT_PATH",
            format!("{PEER_TLS_DIR}/ca.pem"),
        ),
        env(
            "KURA_INTERNAL_TLS_CERT_PATH",
            format!("{PEER_TLS_DIR}/tls.crt"),
        ),
        env(
            "KURA_INTERNAL_TLS_KEY_PATH",
            format!("{PEER_TLS_DIR}/tls.key"),
        ),
        env(
            "KURA_PEERS",
            spec.mesh_external_peers
                .clone()
                .unwrap_or_default()
                .join(","),
        ),
    ];
    if let Some(script) = spec.extension_script.as_deref().filter(|s| !s.is_empty()) {
        env_vars.push(env("KURA_EXTENSION_SCRIPT", script));
    }
    env_vars.extend(spec.extra_env.clone().unwrap_or_default());

    let mut requests = BTreeMap::from([
        ("cpu".to_owned(), Quantity("500m".to_owned())),
        ("memory".to_owned(), Quantity("2Gi".to_owned())),
    ]);
    let mut limits = BTreeMap::from([("memory".to_owned(), Quantity("2Gi".to_owned()))]);
    if let Some(mbps) = spec.egress_guaranteed_mbps.filter(|m| *m > 0) {
        requests.insert(EGRESS_RESOURCE.to_owned(), Quantity(mbps.to_string()));
        limits.insert(EGRESS_RESOURCE.to_owned(), Quantity(mbps.to_string()));
    }

    let peer_secret = if spec.managed_certificates() {
        Some(names.leaf_secret.clone())
    } else {
        spec.peer_tls_secret().map(str::to_owned)
    };
    // Claim templates are immutable: keep the live ones, and report a class change.
    let live_claims = live
        .statefulset
        .as_ref()
        .and_then(|s| s.spec.volume_claim_templates.clone())
        .filter(|c| !c.is_empty());
    let want_class = spec.storage_class().map(str::to_owned);
    let claim_name = match &live_claims {
        Some(claims) => claims
            .first()
            .and_then(|c| c.metadata.name.clone())
            .unwrap_or_else(|| DATA_VOLUME.to_owned()),
        None => fresh_claim_name(i, &live.claims, want_class.as_deref()),
    };
    let mut volumes = Vec::new();
    let mut mounts = vec![VolumeMount {
        name: claim_name.clone(),
        mount_path: DATA_DIR.to_owned(),
        ..VolumeMount::default()
    }];
    if let Some(secret) = &peer_secret {
        volumes.push(Volume {
            name: "peer-tls".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "peer-tls".to_owned(),
            mount_path: PEER_TLS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let desired_claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name.clone()),
            labels: Some(selector.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOncePod".to_owned()]),
            storage_class_name: spec.storage_class().map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), storage)])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    let storage_class_change = live_claims.as_ref().and_then(|claims| {
        let live_class = claims
            .first()
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.storage_class_name.clone());
        let want = spec.storage_class().map(str::to_owned);
        // An unset class in the spec means "whatever the cluster default was": no change.
        (want.is_some() && live_class != want).then_some(StorageClassChange {
            from: live_class,
            to: want,
        })
    });
    let claims = live_claims.unwrap_or_else(|| vec![desired_claim]);

    let container = Container {
        name: "kura".to_owned(),
        image: Some(spec.image.clone()),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".to_owned()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("peer".to_owned()),
                container_port: PEER_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(env_vars),
        readiness_probe: Some(http_probe("/ready", 5, 3)),
        liveness_probe: Some(http_probe("/up", 10, 6)),
        startup_probe: Some(http_probe("/up", 5, 60)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".to_owned(), PRE_STOP_DRAIN_SECONDS.to_string()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let tolerations = spec.tolerations.clone().filter(|t| !t.is_empty());
    objects.push(Desired::StatefulSet(StatefulSet {
        metadata: meta(i, &names, &labels, owner),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(format!("{i}-headless")),
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(merged.annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    node_selector: Some(spec.effective_node_selector()),
                    tolerations,
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(claims),
            ..StatefulSetSpec::default()
        },
        status: None,
    }));

    Ok(Rendered {
        objects,
        remove,
        primary_pod: primary,
        ca: ca_action,
        leaf: leaf_action,
        overridden_annotations,
        storage_class_change,
        public_url,
    })
}
