//! Status rules: phase, ready replicas, observed image, message, node address
//! and node port. Pure functions over the live objects.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;

use crate::crd::KuraInstanceStatus;

/// The node label holding a node's Private-Network IPv4 address.
pub const PN_IPV4_LABEL: &str = "tuist.dev/pn-ipv4";
/// `Ready` phase.
pub const PHASE_READY: &str = "Ready";
/// `Pending` phase.
pub const PHASE_PENDING: &str = "Pending";

/// The rollout facts of the StatefulSet: `Ok(())` when it is rolled out
/// (observedGeneration ≥ generation, currentRevision == updateRevision,
/// readyReplicas ≥ replicas, updatedReplicas ≥ replicas), else a message
/// naming the first condition that fails.
pub fn rollout(sts: Option<&StatefulSet>, replicas: i32) -> Result<(), String> {
    let Some(sts) = sts else {
        return Err("StatefulSet not created yet".to_owned());
    };
    let Some(status) = sts.status.as_ref() else {
        return Err("StatefulSet has no status yet".to_owned());
    };
    let generation = sts.metadata.generation.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Err(format!(
            "StatefulSet generation {generation} not observed yet (observed {observed})"
        ));
    }
    if status.current_revision != status.update_revision {
        return Err(format!(
            "rolling out revision {} (current {})",
            status.update_revision.as_deref().unwrap_or("?"),
            status.current_revision.as_deref().unwrap_or("?")
        ));
    }
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < replicas {
        return Err(format!("{ready}/{replicas} replicas ready"));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    if updated < replicas {
        return Err(format!("{updated}/{replicas} replicas updated"));
    }
    Ok(())
}

/// The NodePort of port `http` on the `-external` Service, if allocated.
pub fn node_port_of(service: Option<&Service>) -> Option<i32> {
    service?
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))?
        .node_port
        .filter(|p| *p > 0)
}

/// The `tuist.dev/pn-ipv4` label of a node's labels.
pub fn node_address_of(node_labels: Option<&BTreeMap<String, String>>) -> Option<String> {
    node_labels?
        .get(PN_IPV4_LABEL)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// Inputs of [`compute`].
#[derive(Debug, Clone, Default)]
pub struct StatusInputs<'a> {
    /// The live StatefulSet after apply.
    pub statefulset: Option<&'a StatefulSet>,
    /// Desired replicas.
    pub replicas: i32,
    /// The `-external` Service after apply (`None` without `exposeNodePort`).
    pub external_service: Option<&'a Service>,
    /// Labels of the node running the primary pod (`None` when unknown).
    pub primary_node_labels: Option<&'a BTreeMap<String, String>>,
    /// `https://<publicHost>` when an Ingress is rendered.
    pub public_url: Option<String>,
    /// The previous status (keeps `observedImage` while rolling out).
    pub previous: Option<&'a KuraInstanceStatus>,
    /// A progress note that takes precedence (e.g. a storage migration).
    pub note: Option<String>,
    /// RFC 3339 time of this reconcile.
    pub now: String,
}

/// The status of an instance.
///
/// `nodeAddress` and `nodePortCache` are recomputed every time (so they follow
/// the pod); a missing link (no Service, no node, no label) leaves them empty.
pub fn compute(inputs: &StatusInputs<'_>) -> KuraInstanceStatus {
    let rollout = rollout(inputs.statefulset, inputs.replicas);
    let ready_replicas = inputs
        .statefulset
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let template_image = inputs
        .statefulset
        .and_then(|s| s.spec.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone());
    let (phase, mut message, observed_image) = match rollout {
        Ok(()) => (PHASE_READY, None, template_image),
        Err(why) => (
            PHASE_PENDING,
            Some(why),
            inputs.previous.and_then(|p| p.observed_image.clone()),
        ),
    };
    if let Some(note) = &inputs.note {
        message = Some(match message {
            Some(m) => format!("{note}; {m}"),
            None => note.clone(),
        });
    }
    let exposed = inputs.external_service.is_some();
    KuraInstanceStatus {
        phase: Some(phase.to_owned()),
        public_url: inputs.public_url.clone(),
        observed_image,
        ready_replicas: Some(ready_replicas),
        message,
        last_reconciled_at: Some(inputs.now.clone()),
        node_address: if exposed {
            node_address_of(inputs.primary_node_labels)
        } else {
            None
        },
        node_port_cache: node_port_of(inputs.external_service),
    }
}

/// A status for a spec that cannot be rendered.
pub fn invalid_spec(
    message: &str,
    previous: Option<&KuraInstanceStatus>,
    now: String,
) -> KuraInstanceStatus {
    KuraInstanceStatus {
        phase: Some(PHASE_PENDING.to_owned()),
        message: Some(format!("invalid spec: {message}")),
        last_reconciled_at: Some(now),
        ..previous.cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    fn sts(
        gen_: i64,
        observed: i64,
        cur: &str,
        upd: &str,
        ready: i32,
        updated: i32,
    ) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.generation = Some(gen_);
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(observed),
            current_revision: Some(cur.to_owned()),
            update_revision: Some(upd.to_owned()),
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            ..StatefulSetStatus::default()
        });
        s
    }

    #[test]
    fn phase_rules_name_the_failing_condition() {
        assert_eq!(rollout(Some(&sts(2, 2, "a", "a", 3, 3)), 3), Ok(()));
        assert!(
            rollout(Some(&sts(3, 2, "a", "a", 3, 3)), 3)
                .unwrap_err()
                .contains("generation 3")
        );
        assert!(
            rollout(Some(&sts(2, 2, "a", "b", 3, 3)), 3)
                .unwrap_err()
                .contains("revision b")
        );
        assert_eq!(
            rollout(Some(&sts(2, 2, "a", "a", 2, 3)), 3),
            Err("2/3 replicas ready".into())
        );
        assert_eq!(
            rollout(Some(&sts(2, 2, "a", "a", 3, 1)), 3),
            Err("1/3 replicas updated".into())
        );
        assert!(rollout(None, 3).is_err());
    }

    #[test]
    fn missing_links_leave_fields_empty() {
        let st = compute(&StatusInputs {
            replicas: 1,
            external_service: Some(&Service::default()),
            now: "t".into(),
            ..StatusInputs::default()
        });
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        assert_eq!(st.node_address, None);
        assert_eq!(st.node_port_cache, None);
    }
}
