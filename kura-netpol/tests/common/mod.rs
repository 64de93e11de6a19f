//! The renderings that have golden files, shared by the drift and schema tests.

use std::collections::BTreeMap;
use std::num::NonZeroU16;
use std::path::PathBuf;

use kura_netpol::{
    Bandwidth, BandwidthLimits, CidrSet, ClientCidrRules, HostBits, InstancePolicy, Peering,
    PodName, Ports, YamlStream, merge_annotations, preserve_node_ports, prometheus_annotations,
    to_yaml,
};

pub(crate) fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn set(text: &str) -> CidrSet {
    CidrSet::parse_list(text, HostBits::Reject).unwrap()
}

fn base() -> InstancePolicy {
    InstancePolicy::new(
        "kura-acme".parse().unwrap(),
        "kura".parse().unwrap(),
        "acme".parse().unwrap(),
    )
}

fn with_clients() -> InstancePolicy {
    let clients = ClientCidrRules::new()
        .check(
            &set("172.16.0.0/22\n172.16.4.0/22\n10.200.0.0/16\n192.168.10.7\nfd00:1::/48"),
            &set("10.200.5.0/24\n10.200.6.0/24\n172.16.7.128/25"),
        )
        .unwrap();
    base()
        .with_region("fr-par".parse().unwrap())
        .with_client_cidrs(clients)
}

fn yaml<T: serde::Serialize>(value: &T) -> String {
    let mut stream = YamlStream::new();
    stream.push(value).unwrap();
    stream.finish()
}

/// `(file name, is a core Kubernetes manifest, rendered text)`.
pub(crate) fn cases() -> Vec<(&'static str, bool, String)> {
    let primary = PodName::new("kura-acme-0").unwrap();
    let mut live = base().external_service(&primary, None);
    live.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(31234);
    live.spec.as_mut().unwrap().cluster_ip = Some("10.96.12.34".into());
    let moved = base().external_service(&PodName::new("kura-acme-2").unwrap(), None);

    let user_annotations: BTreeMap<String, String> = [
        ("kubernetes.io/egress-bandwidth", "1G"),
        ("prometheus.io/path", "/custom-metrics"),
        ("team", "ios"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut controller = prometheus_annotations();
    controller.extend(
        BandwidthLimits {
            egress: Some(Bandwidth::parse("750M").unwrap()),
            ingress: Some(Bandwidth::parse("10Gi").unwrap()),
        }
        .to_annotations(),
    );
    let merged = merge_annotations(&user_annotations, &controller);
    let annotations = serde_json::json!({
        "annotations": merged.annotations,
        "overridden": merged.overridden.iter().map(|o| serde_json::json!({
            "key": o.key, "userValue": o.user_value, "controllerValue": o.controller_value,
        })).collect::<Vec<_>>(),
    });

    vec![
        (
            "networkpolicy-minimal.yaml",
            true,
            yaml(&base().network_policy()),
        ),
        (
            "networkpolicy-clients.yaml",
            true,
            yaml(&with_clients().network_policy()),
        ),
        (
            "networkpolicy-cross-provider.yaml",
            true,
            yaml(
                &with_clients()
                    .with_ports(Ports::new(8080, 9443).unwrap())
                    .with_peering(Peering::cross_provider_any_ipv4())
                    .network_policy(),
            ),
        ),
        (
            "service-external.yaml",
            true,
            yaml(&base().external_service(&primary, None)),
        ),
        (
            "service-external-explicit-node-port.yaml",
            true,
            yaml(&base().external_service(&primary, NonZeroU16::new(30080))),
        ),
        (
            "service-external-preserved.yaml",
            true,
            yaml(&preserve_node_ports(Some(&live), moved)),
        ),
        (
            "ciliumnetworkpolicy-clients.yaml",
            false,
            yaml(&with_clients().cilium_client_policy().unwrap()),
        ),
        (
            "pod-annotations.yaml",
            false,
            to_yaml(&annotations).unwrap(),
        ),
    ]
}
