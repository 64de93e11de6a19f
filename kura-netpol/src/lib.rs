//! CIDR sets and the data-plane policy of a Kura cache instance, rendered as
//! Kubernetes objects.
//!
//! Runners outside the pod network (macOS VMs on a Private Network) reach
//! their account's cache through `<instance>-external`, a NodePort Service
//! with `externalTrafficPolicy: Local` pinned to the primary pod. They keep
//! their source IP, so the instance's NetworkPolicy must admit their ranges
//! through `ipBlock` rules, and each tenant's egress on a shared NIC is capped
//! by the `kubernetes.io/egress-bandwidth` pod annotation. This crate owns
//! those rules as pure functions, so an operator (or anything else) can
//! render, diff and test them without a cluster:
//!
//! - [`Cidr`] / [`CidrSet`]: parsing with typed errors and an explicit
//!   [`HostBits`] policy, de-duplication, aggregation, subtraction,
//!   containment and overlap checks.
//! - [`ClientCidrRules`]: safety rails for client ranges (no `/0` unless
//!   [`dangerously_allow_any_address`](ClientCidrRules::dangerously_allow_any_address),
//!   nothing broader than `/8` by default).
//! - [`InstancePolicy`]: the NetworkPolicy, the NodePort Service and an
//!   optional `CiliumNetworkPolicy`, as `k8s-openapi` values.
//! - [`preserve_node_ports`]: keeps allocated node ports across reconciles.
//! - [`Quantity`] / [`Bandwidth`] / [`BandwidthLimits`] / [`merge_annotations`]:
//!   bandwidth annotations and controller-wins annotation merging.
//!
//! # Example
//!
//! ```
//! use kura_netpol::{
//!     Bandwidth, BandwidthLimits, CidrSet, ClientCidrRules, HostBits, InstancePolicy,
//!     PodName, YamlStream, merge_annotations, preserve_node_ports, prometheus_annotations,
//! };
//!
//! // Client ranges as an operator would read them from a spec.
//! let allowed = CidrSet::parse_list("172.16.0.0/22\n172.16.4.0/22", HostBits::Reject)?;
//! let except = CidrSet::parse_list("172.16.7.0/24", HostBits::Reject)?;
//! let clients = ClientCidrRules::new().check(&allowed, &except)?;
//!
//! let policy = InstancePolicy::new("kura-acme".parse()?, "kura".parse()?, "acme".parse()?)
//!     .with_region("fr-par".parse()?)
//!     .with_client_cidrs(clients);
//!
//! let network_policy = policy.network_policy();
//! let primary = PodName::of_instance(policy.instance(), 0)?;
//! let live = None; // the Service read from the API server, if any
//! let service = preserve_node_ports(live, policy.external_service(&primary, None));
//!
//! let mut stream = YamlStream::new();
//! stream.push(&network_policy)?.push(&service)?;
//! let yaml = stream.finish();
//! assert!(yaml.contains("cidr: 172.16.0.0/21"));
//! assert!(yaml.contains("- 172.16.7.0/24"));
//! assert!(yaml.contains("externalTrafficPolicy: Local"));
//!
//! // Pod annotations: user keys, overwritten by the controller's.
//! let limits = BandwidthLimits { egress: Some(Bandwidth::parse("750M")?), ingress: None };
//! let mut controller = prometheus_annotations();
//! controller.extend(limits.to_annotations());
//! let merged = merge_annotations(&Default::default(), &controller);
//! assert_eq!(merged.annotations["kubernetes.io/egress-bandwidth"], "750M");
//! assert!(merged.overridden.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Kubernetes API version
//!
//! `k8s-openapi` needs exactly one Kubernetes version feature per build. The
//! default `k8s-latest` feature selects `k8s-openapi/latest` so that this
//! crate builds on its own; an application that pins another version depends
//! on this crate with `default-features = false` and enables its own `v1_*`
//! feature on `k8s-openapi`. The rendered objects use only fields that exist
//! in every version `k8s-openapi` 0.29 supports.

mod annotations;
mod cidr;
mod cilium;
mod client;
mod error;
mod names;
mod nodeport;
mod policy;
mod quantity;
mod yaml;

pub use annotations::{
    BandwidthLimits, EGRESS_BANDWIDTH_ANNOTATION, INGRESS_BANDWIDTH_ANNOTATION, MergedAnnotations,
    OverriddenAnnotation, merge_annotations, prometheus_annotations,
};
pub use cidr::{Cidr, CidrSet, HostBits, ParsedCidr, parse_cidr_list};
pub use cilium::{
    CiliumCidrRule, CiliumIngressRule, CiliumNetworkPolicy, CiliumNetworkPolicySpec, CiliumPort,
    CiliumPortRule,
};
pub use client::{ClientCidrRules, ClientCidrs, IpBlock};
pub use error::{CidrErrorReason, Error, QuantityErrorReason};
pub use names::{AccountHandle, InstanceName, ManagedBy, Namespace, PodName, Region};
pub use nodeport::preserve_node_ports;
pub use policy::{
    APP_NAME, DEFAULT_HTTP_PORT, DEFAULT_PEER_PORT, HTTP_PORT_NAME, InstancePolicy, LABEL_ACCOUNT,
    LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_POD_NAME, LABEL_REGION, PEER_PORT_NAME,
    Peering, Ports,
};
pub use quantity::{Bandwidth, Quantity, Suffix};
pub use yaml::{YamlStream, to_yaml};

/// Re-exported so callers use the same `ipnet` and `k8s-openapi` types.
pub use {ipnet, k8s_openapi};
