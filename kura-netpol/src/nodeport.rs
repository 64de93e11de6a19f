//! NodePort preservation across reconciles.

use k8s_openapi::api::core::v1::Service;

/// Carries every `nodePort` the API server already allocated on `live` over
/// to the port of the same name in `desired`, and returns `desired`.
///
/// Writing a Service whose ports have no `nodePort` makes the API server
/// allocate new ones, which breaks every endpoint (`http://<node>:<port>`)
/// already handed to clients. Pass the live object (if any) and the freshly
/// rendered one through this function before every write. Rules:
///
/// - ports are matched by name (an unnamed port matches the unnamed port of
///   a single-port Service);
/// - an explicit `nodePort` in `desired` wins over the live one;
/// - a port that is absent from `live` (new, or removed and re-added) keeps
///   `nodePort` unset and gets a new allocation;
/// - nothing is carried when `desired` is not of type `NodePort` or
///   `LoadBalancer` (other types must not carry node ports);
/// - for a `LoadBalancer` with `externalTrafficPolicy: Local`, the allocated
///   `healthCheckNodePort` is carried the same way.
///
/// The function is pure: same inputs, same output, no I/O.
///
/// ```
/// use kura_netpol::{preserve_node_ports, InstancePolicy, PodName};
///
/// let policy = InstancePolicy::new("kura-acme".parse()?, "kura".parse()?, "acme".parse()?);
/// let pod = PodName::of_instance(policy.instance(), 0)?;
/// let mut live = policy.external_service(&pod, None);
/// live.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(31234);
///
/// let desired = policy.external_service(&PodName::of_instance(policy.instance(), 1)?, None);
/// let merged = preserve_node_ports(Some(&live), desired);
/// assert_eq!(merged.spec.unwrap().ports.unwrap()[0].node_port, Some(31234));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn preserve_node_ports(live: Option<&Service>, mut desired: Service) -> Service {
    let Some(live_spec) = live.and_then(|l| l.spec.as_ref()) else {
        return desired;
    };
    let Some(spec) = desired.spec.as_mut() else {
        return desired;
    };
    let desired_type = spec.type_.as_deref();
    if !matches!(desired_type, Some("NodePort" | "LoadBalancer")) {
        return desired;
    }
    let live_ports = live_spec.ports.as_deref().unwrap_or_default();
    if let Some(ports) = spec.ports.as_mut() {
        for port in ports.iter_mut().filter(|p| p.node_port.is_none()) {
            port.node_port = live_ports
                .iter()
                .find(|l| l.name == port.name)
                .and_then(|l| l.node_port);
        }
    }
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    if desired_type == Some("LoadBalancer")
        && local
        && spec.health_check_node_port.is_none()
        && live_spec.type_.as_deref() == Some("LoadBalancer")
    {
        spec.health_check_node_port = live_spec.health_check_node_port;
    }
    desired
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    use super::*;

    fn svc(type_: &str, ports: &[(Option<&str>, Option<i32>)]) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(type_.to_owned()),
                ports: Some(
                    ports
                        .iter()
                        .enumerate()
                        .map(|(i, (name, node_port))| ServicePort {
                            name: name.map(str::to_owned),
                            port: 4000 + i32::try_from(i).unwrap(),
                            node_port: *node_port,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn node_ports(s: &Service) -> Vec<Option<i32>> {
        s.spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.node_port)
            .collect()
    }

    #[test]
    fn carries_by_name_and_explicit_wins() {
        let live = svc(
            "NodePort",
            &[(Some("http"), Some(30001)), (Some("grpc"), Some(30002))],
        );
        let desired = svc(
            "NodePort",
            &[
                (Some("grpc"), None),
                (Some("http"), Some(30999)),
                (Some("new"), None),
            ],
        );
        let out = preserve_node_ports(Some(&live), desired);
        assert_eq!(node_ports(&out), [Some(30002), Some(30999), None]);
    }

    #[test]
    fn no_live_object_or_non_node_port_type_changes_nothing() {
        let desired = svc("NodePort", &[(Some("http"), None)]);
        assert_eq!(preserve_node_ports(None, desired.clone()), desired);
        let live = svc("NodePort", &[(Some("http"), Some(30001))]);
        let cluster_ip = svc("ClusterIP", &[(Some("http"), None)]);
        assert_eq!(
            preserve_node_ports(Some(&live), cluster_ip.clone()),
            cluster_ip
        );
        let unnamed_live = svc("NodePort", &[(None, Some(30005))]);
        let unnamed = svc("NodePort", &[(None, None)]);
        assert_eq!(
            node_ports(&preserve_node_ports(Some(&unnamed_live), unnamed)),
            [Some(30005)]
        );
    }

    #[test]
    fn removed_then_re_added_port_gets_a_new_allocation() {
        let first = svc("NodePort", &[(Some("http"), Some(30001))]);
        // Reconcile 2 removes the port; the API server frees 30001.
        let removed = preserve_node_ports(Some(&first), svc("NodePort", &[]));
        // Reconcile 3 adds it back: nothing to carry, so a new allocation.
        let re_added =
            preserve_node_ports(Some(&removed), svc("NodePort", &[(Some("http"), None)]));
        assert_eq!(node_ports(&re_added), [None]);
    }

    #[test]
    fn load_balancer_keeps_its_health_check_port() {
        let mut live = svc("LoadBalancer", &[(Some("http"), Some(30001))]);
        live.spec.as_mut().unwrap().health_check_node_port = Some(32000);
        live.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let mut desired = svc("LoadBalancer", &[(Some("http"), None)]);
        desired.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let out = preserve_node_ports(Some(&live), desired);
        assert_eq!(
            out.spec.as_ref().unwrap().health_check_node_port,
            Some(32000)
        );
        assert_eq!(node_ports(&out), [Some(30001)]);
    }
}
