//! Rendering of the per-instance NetworkPolicy and NodePort Service.

use std::collections::BTreeMap;
use std::num::NonZeroU16;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cidr::{Cidr, CidrSet};
use crate::cilium::{
    CiliumCidrRule, CiliumIngressRule, CiliumNetworkPolicy, CiliumNetworkPolicySpec, CiliumPort,
    CiliumPortRule,
};
use crate::client::{ClientCidrs, IpBlock, ip_blocks};
use crate::error::Error;
use crate::names::{AccountHandle, InstanceName, ManagedBy, Namespace, PodName, Region};

/// Name of the cache port (HTTP and REAPI gRPC).
pub const HTTP_PORT_NAME: &str = "http";
/// Name of the peer (replication) port.
pub const PEER_PORT_NAME: &str = "peer";
/// Default cache port.
pub const DEFAULT_HTTP_PORT: u16 = 4000;
/// Default peer port.
pub const DEFAULT_PEER_PORT: u16 = 7443;

/// `app.kubernetes.io/name` label key.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance` label key.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by` label key.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Account label key.
pub const LABEL_ACCOUNT: &str = "tuist.dev/account";
/// Region label key.
pub const LABEL_REGION: &str = "tuist.dev/region";
/// Value of `app.kubernetes.io/name` on every Kura object.
pub const APP_NAME: &str = "kura";
/// Label the StatefulSet controller puts on each pod; pins a Service to one pod.
pub const LABEL_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";

/// The two ports of a Kura pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ports {
    http: NonZeroU16,
    peer: NonZeroU16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            http: NonZeroU16::MIN.saturating_add(DEFAULT_HTTP_PORT - 1),
            peer: NonZeroU16::MIN.saturating_add(DEFAULT_PEER_PORT - 1),
        }
    }
}

impl Ports {
    /// Cache port `http` and peer port `peer`; they must differ and not be 0.
    pub fn new(http: u16, peer: u16) -> Result<Self, Error> {
        let (Some(h), Some(p)) = (NonZeroU16::new(http), NonZeroU16::new(peer)) else {
            return Err(Error::InvalidPorts {
                reason: format!("ports must not be 0 (http {http}, peer {peer})"),
            });
        };
        if h == p {
            return Err(Error::InvalidPorts {
                reason: format!("http and peer must be different ports (both {http})"),
            });
        }
        Ok(Ports { http: h, peer: p })
    }

    /// The cache port.
    pub fn http(&self) -> u16 {
        self.http.get()
    }

    /// The peer port.
    pub fn peer(&self) -> u16 {
        self.peer.get()
    }
}

/// How an instance's peers reach its peer port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peering {
    /// Peers are pods of the same cluster: the account-peer pod selector
    /// covers them.
    #[default]
    InCluster,
    /// Peers also live in other clusters or providers; their traffic arrives
    /// SNATed from these ranges, which are admitted on the peer port. The
    /// peer port's mTLS (account CA) is the boundary, so these ranges are not
    /// subject to the client rails.
    CrossProvider {
        /// Source ranges admitted on the peer port.
        sources: CidrSet,
    },
}

impl Peering {
    /// Cross-provider peering from any IPv4 address (`0.0.0.0/0`), as the
    /// deployments this replaces do.
    pub fn cross_provider_any_ipv4() -> Self {
        let any = Cidr::from_net_clearing_host_bits(ipnet::IpNet::V4(ipnet::Ipv4Net::default()));
        Peering::CrossProvider {
            sources: CidrSet::from(any),
        }
    }
}

/// Everything the data-plane policy of one Kura instance depends on.
///
/// Build it with [`InstancePolicy::new`] and the `with_*` methods, then
/// render [`network_policy`](Self::network_policy),
/// [`external_service`](Self::external_service) and optionally
/// [`cilium_client_policy`](Self::cilium_client_policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePolicy {
    instance: InstanceName,
    namespace: Namespace,
    account: AccountHandle,
    region: Option<Region>,
    managed_by: ManagedBy,
    ports: Ports,
    clients: ClientCidrs,
    peering: Peering,
}

impl InstancePolicy {
    /// An instance with default ports (4000, 7443), no client CIDRs,
    /// in-cluster peering and `app.kubernetes.io/managed-by: kura-operator`.
    pub fn new(instance: InstanceName, namespace: Namespace, account: AccountHandle) -> Self {
        InstancePolicy {
            instance,
            namespace,
            account,
            region: None,
            managed_by: ManagedBy::default(),
            ports: Ports::default(),
            clients: ClientCidrs::none(),
            peering: Peering::InCluster,
        }
    }

    /// Sets the `tuist.dev/region` label.
    pub fn with_region(mut self, region: Region) -> Self {
        self.region = Some(region);
        self
    }

    /// Sets the `app.kubernetes.io/managed-by` label.
    pub fn with_managed_by(mut self, managed_by: ManagedBy) -> Self {
        self.managed_by = managed_by;
        self
    }

    /// Sets the ports.
    pub fn with_ports(mut self, ports: Ports) -> Self {
        self.ports = ports;
        self
    }

    /// Sets the client ranges admitted on the cache port (see
    /// [`ClientCidrRules::check`](crate::ClientCidrRules::check)).
    pub fn with_client_cidrs(mut self, clients: ClientCidrs) -> Self {
        self.clients = clients;
        self
    }

    /// Sets the peering mode.
    pub fn with_peering(mut self, peering: Peering) -> Self {
        self.peering = peering;
        self
    }

    /// The instance name.
    pub fn instance(&self) -> &InstanceName {
        &self.instance
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The client ranges.
    pub fn client_cidrs(&self) -> &ClientCidrs {
        &self.clients
    }

    /// Labels selecting this instance's pods:
    /// `app.kubernetes.io/name: kura`, `app.kubernetes.io/instance: <instance>`.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        labels([
            (LABEL_NAME, APP_NAME),
            (LABEL_INSTANCE, self.instance.as_str()),
        ])
    }

    /// Labels selecting every pod of the account (all its instances):
    /// `app.kubernetes.io/name: kura`, `tuist.dev/account: <account>`.
    pub fn account_peer_selector(&self) -> BTreeMap<String, String> {
        labels([
            (LABEL_NAME, APP_NAME),
            (LABEL_ACCOUNT, self.account.as_str()),
        ])
    }

    /// The full label set of the instance's objects: the selector labels plus
    /// managed-by, account and (when set) region.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut all = self.selector_labels();
        all.insert(LABEL_MANAGED_BY.to_owned(), self.managed_by.to_string());
        all.insert(LABEL_ACCOUNT.to_owned(), self.account.to_string());
        if let Some(region) = &self.region {
            all.insert(LABEL_REGION.to_owned(), region.to_string());
        }
        all
    }

    fn metadata(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_string()),
            labels: Some(self.labels()),
            ..ObjectMeta::default()
        }
    }

    /// The NetworkPolicy `<instance>`: ingress only, rules in this order:
    ///
    /// 1. from the instance's own pods, any port;
    /// 2. from the account's pods (account peer selector), on the peer port;
    /// 3. from every namespace (`namespaceSelector: {}`), on the cache port;
    /// 4. when client CIDRs are set, from their `ipBlock`s, on the cache port
    ///    (NodePort clients keep their source IP under
    ///    `externalTrafficPolicy: Local` and match no namespace selector);
    /// 5. with [`Peering::CrossProvider`], from its source ranges, on the peer
    ///    port.
    ///
    /// Ports are numeric, so the policy does not depend on container port names.
    pub fn network_policy(&self) -> NetworkPolicy {
        let selector = |labels| LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        };
        let port = |number: u16| NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(number))),
            protocol: Some("TCP".to_owned()),
            ..NetworkPolicyPort::default()
        };
        let mut rules = vec![
            NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(selector(self.selector_labels())),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: None,
            },
            NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(selector(self.account_peer_selector())),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![port(self.ports.peer())]),
            },
            NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![port(self.ports.http())]),
            },
        ];
        let blocks = self.clients.ip_blocks();
        if !blocks.is_empty() {
            rules.push(NetworkPolicyIngressRule {
                from: Some(ip_block_peers(&blocks)),
                ports: Some(vec![port(self.ports.http())]),
            });
        }
        if let Peering::CrossProvider { sources } = &self.peering {
            let blocks = ip_blocks(&sources.aggregate(), &CidrSet::new());
            if !blocks.is_empty() {
                rules.push(NetworkPolicyIngressRule {
                    from: Some(ip_block_peers(&blocks)),
                    ports: Some(vec![port(self.ports.peer())]),
                });
            }
        }
        NetworkPolicy {
            metadata: self.metadata(self.instance.to_string()),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector(self.selector_labels())),
                policy_types: Some(vec!["Ingress".to_owned()]),
                ingress: Some(rules),
                egress: None,
            }),
        }
    }

    /// Name of the NodePort Service: `<instance>-external`.
    pub fn external_service_name(&self) -> String {
        format!("{}-external", self.instance)
    }

    /// The NodePort Service `<instance>-external`: `type: NodePort`,
    /// `externalTrafficPolicy: Local` (clients keep their source IP and only
    /// the node running the pod answers), selector pinned to `primary_pod`,
    /// and only the cache port, never the peer port.
    ///
    /// `node_port` requests a specific node port; `None` leaves allocation to
    /// the API server. Before applying, pass the result through
    /// [`preserve_node_ports`](crate::preserve_node_ports) with the live
    /// Service so an allocated port is never given up.
    pub fn external_service(
        &self,
        primary_pod: &PodName,
        node_port: Option<NonZeroU16>,
    ) -> Service {
        let mut selector = self.selector_labels();
        selector.insert(LABEL_POD_NAME.to_owned(), primary_pod.to_string());
        let http = i32::from(self.ports.http());
        Service {
            metadata: self.metadata(self.external_service_name()),
            spec: Some(ServiceSpec {
                type_: Some("NodePort".to_owned()),
                external_traffic_policy: Some("Local".to_owned()),
                selector: Some(selector),
                ports: Some(vec![ServicePort {
                    name: Some(HTTP_PORT_NAME.to_owned()),
                    protocol: Some("TCP".to_owned()),
                    port: http,
                    target_port: Some(IntOrString::Int(http)),
                    node_port: node_port.map(|p| i32::from(p.get())),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// The client rule (rule 4 of [`network_policy`](Self::network_policy))
    /// as a `CiliumNetworkPolicy` named `<instance>`, using `fromCIDRSet`
    /// with `except`. `None` when there are no client CIDRs.
    ///
    /// Cilium policies are additive with Kubernetes NetworkPolicies, so this
    /// can be applied next to (or instead of the client rule of) the
    /// NetworkPolicy.
    pub fn cilium_client_policy(&self) -> Option<CiliumNetworkPolicy> {
        let blocks = self.clients.ip_blocks();
        if blocks.is_empty() {
            return None;
        }
        Some(CiliumNetworkPolicy::new(
            self.metadata(self.instance.to_string()),
            CiliumNetworkPolicySpec {
                endpoint_selector: LabelSelector {
                    match_labels: Some(self.selector_labels()),
                    ..LabelSelector::default()
                },
                ingress: vec![CiliumIngressRule {
                    from_cidr_set: blocks
                        .iter()
                        .map(|b| CiliumCidrRule {
                            cidr: b.cidr.to_string(),
                            except: b.except.iter().map(ToString::to_string).collect(),
                        })
                        .collect(),
                    to_ports: vec![CiliumPortRule {
                        ports: vec![CiliumPort {
                            port: self.ports.http().to_string(),
                            protocol: "TCP".to_owned(),
                        }],
                    }],
                }],
            },
        ))
    }
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn ip_block_peers(blocks: &[IpBlock]) -> Vec<NetworkPolicyPeer> {
    blocks
        .iter()
        .map(|block| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: block.cidr.to_string(),
                except: (!block.except.is_empty())
                    .then(|| block.except.iter().map(ToString::to_string).collect()),
            }),
            ..NetworkPolicyPeer::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientCidrRules, HostBits};

    fn policy() -> InstancePolicy {
        InstancePolicy::new(
            "kura-acme".parse().unwrap(),
            "kura".parse().unwrap(),
            "acme".parse().unwrap(),
        )
    }

    #[test]
    fn ports_must_be_distinct_and_nonzero() {
        assert_eq!(Ports::default().http(), 4000);
        assert_eq!(Ports::default().peer(), 7443);
        assert!(Ports::new(0, 7443).is_err());
        assert!(Ports::new(4000, 4000).is_err());
        assert_eq!(Ports::new(8080, 9443).unwrap().peer(), 9443);
    }

    #[test]
    fn rules_follow_the_reference_order() {
        let clients = ClientCidrRules::new()
            .check(
                &CidrSet::parse_list("172.16.0.0/16", HostBits::Reject).unwrap(),
                &CidrSet::new(),
            )
            .unwrap();
        let np = policy()
            .with_client_cidrs(clients)
            .with_peering(Peering::cross_provider_any_ipv4())
            .network_policy();
        let rules = np.spec.unwrap().ingress.unwrap();
        assert_eq!(rules.len(), 5);
        let port_of =
            |r: &NetworkPolicyIngressRule| r.ports.as_ref().map(|p| p[0].port.clone().unwrap());
        assert_eq!(port_of(&rules[0]), None);
        assert_eq!(port_of(&rules[1]), Some(IntOrString::Int(7443)));
        assert_eq!(port_of(&rules[2]), Some(IntOrString::Int(4000)));
        assert_eq!(port_of(&rules[3]), Some(IntOrString::Int(4000)));
        assert_eq!(port_of(&rules[4]), Some(IntOrString::Int(7443)));
        let cidr_of = |r: &NetworkPolicyIngressRule| {
            r.from.as_ref().unwrap()[0]
                .ip_block
                .as_ref()
                .unwrap()
                .cidr
                .clone()
        };
        assert_eq!(cidr_of(&rules[3]), "172.16.0.0/16");
        assert_eq!(cidr_of(&rules[4]), "0.0.0.0/0");
    }

    #[test]
    fn without_clients_there_is_no_client_rule_and_no_cilium_policy() {
        let p = policy();
        assert_eq!(p.network_policy().spec.unwrap().ingress.unwrap().len(), 3);
        assert!(p.cilium_client_policy().is_none());
    }

    #[test]
    fn external_service_exposes_only_the_cache_port() {
        let p = policy();
        let pod = PodName::of_instance(p.instance(), 0).unwrap();
        let svc = p.external_service(&pod, None);
        assert_eq!(svc.metadata.name.as_deref(), Some("kura-acme-external"));
        let spec = svc.spec.unwrap();
        let ports = spec.ports.unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, 4000);
        assert_eq!(ports[0].node_port, None);
        assert_eq!(spec.selector.unwrap()[LABEL_POD_NAME], "kura-acme-0");
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    }
}
