//! Pieces shared by both reconcilers: step errors, the Cluster API gate, the
//! Node phase, failure bookkeeping.

use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::context::{Context, Next, SshRunner, requeue};
use crate::crd::{Condition, ConditionStatus, set_condition};
use crate::kube_side::{EventType, KubeApi, KubeError, ObjectRef};

/// The node label holding the Private Network IPv4.
pub const PN_IPV4_LABEL: &str = "tuist.dev/pn-ipv4";

/// Why a reconcile step stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// Scaleway API error.
    #[error("scaleway: {0}")]
    Scaleway(Box<kura_scaleway::Error>),
    /// Kubernetes API error (always retried).
    #[error("kubernetes: {0}")]
    Kube(#[from] KubeError),
    /// A failure that moves the machine to `Failed`.
    #[error("{reason}: {message}")]
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl From<kura_scaleway::Error> for StepError {
    fn from(e: kura_scaleway::Error) -> Self {
        Self::Scaleway(Box::new(e))
    }
}

impl StepError {
    pub(crate) fn failed(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Failed {
            reason,
            message: message.into(),
        }
    }
    /// Whether the error is temporary (requeue) rather than a failure.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Self::Scaleway(e) => e.is_retryable() || e.is_transient_state(),
            Self::Kube(_) => true,
            Self::Failed { .. } => false,
        }
    }
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Scaleway(_) if self.is_retryable() => "ScalewayAPIUnavailable",
            Self::Scaleway(_) => "ScalewayAPIError",
            Self::Kube(_) => "KubernetesAPIError",
            Self::Failed { reason, .. } => reason,
        }
    }
}

/// Status fields both machine kinds share.
pub(crate) trait CommonStatus {
    fn conditions(&mut self) -> &mut Vec<Condition>;
    fn failure_attempts(&mut self) -> &mut u32;
    fn next_retry_at(&mut self) -> &mut Option<String>;
    fn failure_reason(&mut self) -> &mut Option<String>;
    fn failure_message(&mut self) -> &mut Option<String>;
    fn observed_generation(&mut self) -> &mut Option<i64>;
    fn addresses(&mut self) -> &mut Vec<crate::crd::MachineAddress>;
    fn ready(&mut self) -> &mut bool;
}

macro_rules! common_status {
    ($t:ty) => {
        impl CommonStatus for $t {
            fn conditions(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn failure_attempts(&mut self) -> &mut u32 {
                &mut self.failure_attempts
            }
            fn next_retry_at(&mut self) -> &mut Option<String> {
                &mut self.next_retry_at
            }
            fn failure_reason(&mut self) -> &mut Option<String> {
                &mut self.failure_reason
            }
            fn failure_message(&mut self) -> &mut Option<String> {
                &mut self.failure_message
            }
            fn observed_generation(&mut self) -> &mut Option<i64> {
                &mut self.observed_generation
            }
            fn addresses(&mut self) -> &mut Vec<crate::crd::MachineAddress> {
                &mut self.addresses
            }
            fn ready(&mut self) -> &mut bool {
                &mut self.ready
            }
        }
    };
}
common_status!(crate::crd::ScalewayInstanceMachineStatus);
common_status!(crate::crd::ScalewayElasticMetalMachineStatus);

pub(crate) fn object_ref(kind: &'static str, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone(),
    }
}

pub(crate) fn cond<S: CommonStatus>(
    st: &mut S,
    now: &str,
    t: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) {
    set_condition(st.conditions(), t, status, reason, message, now);
}

/// Result of the Cluster API gate.
pub(crate) enum Gate {
    /// Go on; the Machine's Kubernetes version, when set.
    Open { version: Option<String> },
    /// Stop here.
    Closed {
        next: Next,
        reason: &'static str,
        message: String,
    },
}

/// The Cluster API gate: owner Machine and its Cluster must exist, the
/// Cluster must not be paused and its infrastructure must be ready.
pub(crate) async fn gate<K: KubeApi>(kube: &K, meta: &ObjectMeta) -> Result<Gate, StepError> {
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Machine" && o.api_version.starts_with("cluster.x-k8s.io/"));
    let Some(owner) = owner else {
        return Ok(Gate::Closed {
            next: Next::Requeue(requeue::GATE),
            reason: "WaitingForMachineOwner",
            message: "no owner Machine yet".into(),
        });
    };
    let Some(machine) = kube.get_capi_machine(ns, &owner.name).await? else {
        return Ok(Gate::Closed {
            next: Next::Requeue(requeue::GATE),
            reason: "WaitingForMachineOwner",
            message: format!("owner Machine {ns}/{} not found", owner.name),
        });
    };
    let Some(cluster) = kube.get_capi_cluster(ns, &machine.cluster_name).await? else {
        return Ok(Gate::Closed {
            next: Next::Requeue(requeue::GATE),
            reason: "WaitingForCluster",
            message: format!("Cluster {ns}/{} not found", machine.cluster_name),
        });
    };
    if cluster.paused {
        return Ok(Gate::Closed {
            next: Next::Wait,
            reason: "Paused",
            message: format!("Cluster {ns}/{} is paused", machine.cluster_name),
        });
    }
    if !cluster.infrastructure_ready {
        return Ok(Gate::Closed {
            next: Next::Requeue(requeue::GATE),
            reason: "WaitingForInfrastructure",
            message: format!(
                "Cluster {ns}/{} infrastructure is not ready",
                machine.cluster_name
            ),
        });
    }
    Ok(Gate::Open {
        version: machine.version,
    })
}

/// Outcome of the Node phase.
pub(crate) enum NodePhase {
    /// The Node is Ready, labelled and has its providerID.
    Ready,
    /// Not yet; requeue.
    Pending {
        reason: &'static str,
        message: String,
    },
}

/// The Node phase: set `spec.providerID` if empty, stamp
/// `tuist.dev/pn-ipv4` (errors are logged, recorded as events and retried,
/// never swallowed), and report readiness.
pub(crate) async fn node_phase<K: KubeApi, S: SshRunner>(
    ctx: &Context<K, S>,
    obj: &ObjectRef,
    node_name: &str,
    provider_id: &str,
    pn_ipv4: Result<Option<Ipv4Addr>, kura_scaleway::Error>,
) -> Result<NodePhase, StepError> {
    let Some(node) = ctx.kube.get_node(node_name).await? else {
        return Ok(NodePhase::Pending {
            reason: "WaitingForNode",
            message: format!("Node {node_name} has not registered yet"),
        });
    };
    if node.provider_id.as_deref().is_none_or(str::is_empty) {
        ctx.kube
            .set_node_provider_id(node_name, provider_id)
            .await?;
        ctx.kube
            .event(
                obj,
                EventType::Normal,
                "ProviderIDSet",
                &format!("Node {node_name} spec.providerID = {provider_id}"),
            )
            .await;
    }
    let ip = match pn_ipv4 {
        Ok(Some(ip)) => ip,
        Ok(None) => {
            tracing::info!(
                node = node_name,
                "private network IPv4 not in IPAM yet; will retry"
            );
            return Ok(NodePhase::Pending {
                reason: "PrivateIPv4Pending",
                message: "IPAM has no IPv4 for the node's Private Network NIC yet".into(),
            });
        }
        Err(e) => {
            ctx.metrics
                .api_error(crate::context::scaleway_error_type(&e));
            tracing::warn!(node = node_name, error = %e, "IPAM lookup of the private IPv4 failed; will retry");
            ctx.kube
                .event(
                    obj,
                    EventType::Warning,
                    "PrivateIPv4LookupFailed",
                    &format!("IPAM lookup failed (will retry): {e}"),
                )
                .await;
            return Ok(NodePhase::Pending {
                reason: "PrivateIPv4LookupFailed",
                message: e.to_string(),
            });
        }
    };
    let value = ip.to_string();
    if node.labels.get(PN_IPV4_LABEL) != Some(&value) {
        if let Err(e) = ctx
            .kube
            .set_node_label(node_name, PN_IPV4_LABEL, &value)
            .await
        {
            ctx.metrics.api_error("kubernetes");
            tracing::warn!(node = node_name, error = %e, "stamping {PN_IPV4_LABEL} failed; will retry");
            ctx.kube
                .event(
                    obj,
                    EventType::Warning,
                    "LabelPatchFailed",
                    &format!("setting {PN_IPV4_LABEL}={value} failed (will retry): {e}"),
                )
                .await;
            return Ok(NodePhase::Pending {
                reason: "LabelPatchFailed",
                message: e.to_string(),
            });
        }
        tracing::info!(node = node_name, "stamped {PN_IPV4_LABEL}={value}");
        ctx.kube
            .event(
                obj,
                EventType::Normal,
                "LabelStamped",
                &format!("{PN_IPV4_LABEL}={value}"),
            )
            .await;
    }
    if node.ready {
        Ok(NodePhase::Ready)
    } else {
        Ok(NodePhase::Pending {
            reason: "NodeNotReady",
            message: format!("Node {node_name} is not Ready"),
        })
    }
}

pub(crate) fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

pub(crate) fn add_finalizer(meta: &mut ObjectMeta, f: &str) {
    if !has_finalizer(meta, f) {
        meta.finalizers
            .get_or_insert_with(Vec::new)
            .push(f.to_owned());
    }
}

pub(crate) fn remove_finalizer(meta: &mut ObjectMeta, f: &str) {
    if let Some(fs) = &mut meta.finalizers {
        fs.retain(|x| x != f);
    }
}

/// Records a failure: attempt count, next retry time, conditions.
pub(crate) fn record_failure<S: CommonStatus>(
    st: &mut S,
    config: &crate::context::ProviderConfig,
    now: time::OffsetDateTime,
    reason: &str,
    message: &str,
) -> std::time::Duration {
    let attempts = st.failure_attempts().saturating_add(1);
    *st.failure_attempts() = attempts;
    let delay = config.failure_backoff(attempts);
    *st.next_retry_at() = Some(crate::context::rfc3339(now + delay));
    *st.failure_reason() = Some(reason.to_owned());
    *st.failure_message() = Some(message.to_owned());
    *st.ready() = false;
    let now_s = crate::context::rfc3339(now);
    cond(
        st,
        &now_s,
        crate::crd::CONDITION_READY,
        ConditionStatus::False,
        reason,
        message,
    );
    delay
}

/// Clears failure bookkeeping after a success.
pub(crate) fn clear_failure<S: CommonStatus>(st: &mut S) {
    *st.failure_attempts() = 0;
    *st.next_retry_at() = None;
    *st.failure_reason() = None;
    *st.failure_message() = None;
}

/// When a failed machine may be retried: `None` = now.
pub(crate) fn retry_wait<S: CommonStatus>(
    st: &mut S,
    now: time::OffsetDateTime,
) -> Option<std::time::Duration> {
    let at = st
        .next_retry_at()
        .as_deref()
        .and_then(crate::context::parse_rfc3339)?;
    let d = at - now;
    if d.is_positive() {
        std::time::Duration::try_from(d).ok()
    } else {
        None
    }
}

/// Resets failure bookkeeping when the spec changed (`metadata.generation`).
/// Returns whether it did.
pub(crate) fn reset_on_spec_change<S: CommonStatus>(st: &mut S, generation: Option<i64>) -> bool {
    if *st.observed_generation() == generation {
        return false;
    }
    let had_failures = *st.failure_attempts() > 0;
    *st.observed_generation() = generation;
    clear_failure(st);
    had_failures
}
