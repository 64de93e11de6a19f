//! The reconcile run both machine kinds share: persisting status with phase
//! events and metrics, the Cluster API gate and finalizer, the retry gate of a
//! `Failed` machine, and turning a step error into a retry or a recorded
//! failure. The kind-specific steps (`provision`, `delete`) live in
//! `instance.rs` and `elastic_metal.rs` as inherent methods of
//! `Run<_, _, TheirMachine>`.

use std::fmt::Display;
use std::future::Future;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::common::{
    CommonStatus, Gate, StepError, add_finalizer, cond, gate, has_finalizer, object_ref,
    record_failure, reset_on_spec_change, retry_wait,
};
use crate::context::{Context, Next, SshRunner, requeue, rfc3339, scaleway_error_type};
use crate::crd::{
    CONDITION_READY, ConditionStatus, ELASTIC_METAL_FINALIZER, ElasticMetalPhase,
    INSTANCE_FINALIZER, InstancePhase, ScalewayElasticMetalMachine,
    ScalewayElasticMetalMachineStatus, ScalewayInstanceMachine, ScalewayInstanceMachineStatus,
};
use crate::kube_side::{EventType, KubeApi, KubeError};

/// A machine custom resource the provider reconciles.
pub(crate) trait Machine: Sized + Send + Sync {
    /// Its status type.
    type Status: CommonStatus + Clone + Default + Send + Sync;
    /// Its phase type.
    type Phase: Copy + PartialEq + Display + Send + Sync;
    /// The resource kind (events, metrics).
    const KIND: &'static str;
    /// The finalizer the provider owns.
    const FINALIZER: &'static str;
    /// The phase of a failed machine (retried with backoff).
    const FAILED: Self::Phase;
    /// The phase a failed machine returns to when it is retried or gated.
    const PENDING: Self::Phase;
    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    fn status(&self) -> Option<&Self::Status>;
    fn set_status(&mut self, st: Self::Status);
    fn phase(st: &Self::Status) -> Self::Phase;
    fn set_phase(st: &mut Self::Status, phase: Self::Phase);
    /// Persists `spec.providerID`, finalizers and status; returns the stored object.
    fn save<K: KubeApi>(&self, kube: &K) -> impl Future<Output = Result<Self, KubeError>> + Send;
}

macro_rules! machine {
    ($t:ty, $status:ty, $phase:ty, $kind:literal, $finalizer:expr, $save:ident) => {
        impl Machine for $t {
            type Status = $status;
            type Phase = $phase;
            const KIND: &'static str = $kind;
            const FINALIZER: &'static str = $finalizer;
            const FAILED: $phase = <$phase>::Failed;
            const PENDING: $phase = <$phase>::Pending;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn set_status(&mut self, st: $status) {
                self.status = Some(st);
            }
            fn phase(st: &$status) -> $phase {
                st.phase
            }
            fn set_phase(st: &mut $status, phase: $phase) {
                st.phase = phase;
            }
            fn save<K: KubeApi>(
                &self,
                kube: &K,
            ) -> impl Future<Output = Result<Self, KubeError>> + Send {
                kube.$save(self)
            }
        }
    };
}
machine!(
    ScalewayInstanceMachine,
    ScalewayInstanceMachineStatus,
    InstancePhase,
    "ScalewayInstanceMachine",
    INSTANCE_FINALIZER,
    save_instance_machine
);
machine!(
    ScalewayElasticMetalMachine,
    ScalewayElasticMetalMachineStatus,
    ElasticMetalPhase,
    "ScalewayElasticMetalMachine",
    ELASTIC_METAL_FINALIZER,
    save_elastic_metal_machine
);

/// The kind-specific steps of a reconcile.
pub(crate) trait Steps<K, S>: Machine {
    /// Drives the machine towards `Ready` (the gate is open).
    fn provision(
        run: &mut Run<'_, K, S, Self>,
        version: Option<String>,
    ) -> impl Future<Output = Result<Next, StepError>> + Send;
    /// Tears the machine down (it is being deleted and holds our finalizer).
    fn delete(
        run: &mut Run<'_, K, S, Self>,
    ) -> impl Future<Output = Result<Next, StepError>> + Send;
}

/// Reconciles one machine (as read from the API server): the shared prelude,
/// then the kind's step, then [`Run::finish`].
pub(crate) async fn reconcile<K: KubeApi, S: SshRunner, M: Steps<K, S>>(
    ctx: &Context<K, S>,
    machine: M,
) -> Next {
    let mut run = Run::new(ctx, machine);
    let result = match run.prelude().await {
        Ok(Step::Done(next)) => Ok(next),
        Ok(Step::Delete) => M::delete(&mut run).await,
        Ok(Step::Provision(version)) => M::provision(&mut run, version).await,
        Err(e) => Err(e),
    };
    run.finish(result).await
}

/// What the shared part of a reconcile decided.
pub(crate) enum Step {
    /// Nothing more to do in this run.
    Done(Next),
    /// The machine is being deleted and holds our finalizer.
    Delete,
    /// The gate is open: provision with this Kubernetes version.
    Provision(Option<String>),
}

/// One reconcile of one machine.
pub(crate) struct Run<'a, K, S, M: Machine> {
    pub(crate) ctx: &'a Context<K, S>,
    pub(crate) m: M,
    pub(crate) st: M::Status,
    pub(crate) now: time::OffsetDateTime,
    /// This run retries a `Failed` machine.
    pub(crate) retrying: bool,
    last_saved_phase: Option<M::Phase>,
}

impl<'a, K: KubeApi, S: SshRunner, M: Machine> Run<'a, K, S, M> {
    pub(crate) fn new(ctx: &'a Context<K, S>, machine: M) -> Self {
        let st = machine.status().cloned().unwrap_or_default();
        Run {
            ctx,
            last_saved_phase: machine.status().map(M::phase),
            m: machine,
            st,
            now: ctx.clock.now(),
            retrying: false,
        }
    }

    pub(crate) fn ns(&self) -> String {
        self.m
            .meta()
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    pub(crate) fn name(&self) -> String {
        self.m.meta().name.clone().unwrap_or_default()
    }

    pub(crate) fn now_s(&self) -> String {
        rfc3339(self.now)
    }

    /// Persists status, finalizers and providerID; emits an event on phase change.
    pub(crate) async fn save(&mut self) -> Result<(), StepError> {
        let phase = M::phase(&self.st);
        if self.last_saved_phase != Some(phase) {
            let from = self
                .last_saved_phase
                .map_or_else(|| "-".to_owned(), |p| p.to_string());
            let event_type = if phase == M::FAILED {
                EventType::Warning
            } else {
                EventType::Normal
            };
            self.event(
                event_type,
                &format!("Phase{phase}"),
                &format!("phase {from} -> {phase}"),
            )
            .await;
        }
        self.m.set_status(self.st.clone());
        self.m = self.m.save(&self.ctx.kube).await?;
        self.last_saved_phase = Some(phase);
        let key = format!("{}/{}", self.ns(), self.name());
        let gone = self.m.meta().deletion_timestamp.is_some()
            && !has_finalizer(self.m.meta(), M::FINALIZER);
        self.ctx
            .metrics
            .set_phase(M::KIND, &key, (!gone).then(|| phase.to_string()).as_deref());
        Ok(())
    }

    pub(crate) async fn event(&self, t: EventType, reason: &str, note: &str) {
        let obj = object_ref(M::KIND, self.m.meta());
        self.ctx.kube.event(&obj, t, reason, note).await;
    }

    /// Spec-change reset, deletion, the retry backoff of a failed machine, the
    /// Cluster API gate and the finalizer.
    pub(crate) async fn prelude(&mut self) -> Result<Step, StepError> {
        let generation = self.m.meta().generation;
        if reset_on_spec_change(&mut self.st, generation) && M::phase(&self.st) == M::FAILED {
            M::set_phase(&mut self.st, M::PENDING);
            self.event(
                EventType::Normal,
                "SpecChanged",
                "spec changed: failure count reset",
            )
            .await;
        }
        if self.m.meta().deletion_timestamp.is_some() {
            if !has_finalizer(self.m.meta(), M::FINALIZER) {
                return Ok(Step::Done(Next::Wait));
            }
            if let Gate::Closed {
                reason: "Paused",
                next,
                ..
            } = gate(&self.ctx.kube, self.m.meta()).await?
            {
                return Ok(Step::Done(next));
            }
            return Ok(Step::Delete);
        }
        if M::phase(&self.st) == M::FAILED {
            if let Some(wait) = retry_wait(&mut self.st, self.now) {
                return Ok(Step::Done(Next::Requeue(wait)));
            }
            self.retrying = true;
            let attempt = *self.st.failure_attempts() + 1;
            self.event(
                EventType::Normal,
                "Retrying",
                &format!("retrying after failure (attempt {attempt})"),
            )
            .await;
        }
        match gate(&self.ctx.kube, self.m.meta()).await? {
            Gate::Closed {
                next,
                reason,
                message,
            } => {
                let now = self.now_s();
                cond(
                    &mut self.st,
                    &now,
                    CONDITION_READY,
                    ConditionStatus::False,
                    reason,
                    &message,
                );
                if M::phase(&self.st) == M::FAILED {
                    M::set_phase(&mut self.st, M::PENDING);
                }
                self.save().await?;
                Ok(Step::Done(next))
            }
            Gate::Open { version } => {
                if !has_finalizer(self.m.meta(), M::FINALIZER) {
                    add_finalizer(self.m.meta_mut(), M::FINALIZER);
                    self.save().await?;
                }
                Ok(Step::Provision(version))
            }
        }
    }

    /// Metrics for the outcome; a retryable error requeues, any other error
    /// records a failure (phase `Failed`, exponential backoff).
    pub(crate) async fn finish(&mut self, result: Result<Next, StepError>) -> Next {
        let ctx = self.ctx;
        let e = match result {
            Ok(next) => {
                ctx.metrics.reconciled(M::KIND, "ok");
                return next;
            }
            Err(e) => e,
        };
        let error_type = match &e {
            StepError::Scaleway(se) => scaleway_error_type(se.as_ref()),
            StepError::Kube(_) => "kubernetes",
            StepError::Failed { .. } => "failed",
        };
        if !matches!(e, StepError::Failed { .. }) {
            ctx.metrics.api_error(error_type);
        }
        if e.is_retryable() {
            ctx.metrics.reconciled(M::KIND, "retry");
            tracing::warn!(machine = %self.name(), error = %e, "reconcile step failed; retrying");
            self.event(EventType::Warning, e.reason(), &format!("will retry: {e}"))
                .await;
            return Next::Requeue(requeue::API_ERROR);
        }
        ctx.metrics.reconciled(M::KIND, "failed");
        tracing::error!(machine = %self.name(), error = %e, "machine failed");
        let delay = record_failure(
            &mut self.st,
            &ctx.config,
            self.now,
            e.reason(),
            &e.to_string(),
        );
        M::set_phase(&mut self.st, M::FAILED);
        let attempts = *self.st.failure_attempts();
        self.event(
            EventType::Warning,
            e.reason(),
            &format!("{e} (attempt {attempts}, retry in {}s)", delay.as_secs()),
        )
        .await;
        if let Err(se) = self.save().await {
            tracing::warn!(machine = %self.name(), error = %se, "saving the failure failed");
            return Next::Requeue(requeue::API_ERROR);
        }
        Next::Requeue(delay)
    }
}
