//! The reconciler: reads the live objects, calls [`render`], applies the result
//! with server-side apply (field manager [`FIELD_MANAGER`]), deletes what the
//! spec no longer wants, drives storage class migrations, and writes status.
//!
//! [`reconcile`] is what the kube-rs `Controller` of [`run`] calls; tests call
//! it directly against a mock API server.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use kura_ca::time::OffsetDateTime;
use kura_ca::time::format_description::well_known::Rfc3339;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{FINALIZER, KuraInstance, KuraInstanceStatus};
use crate::error::{Error, SpecError};
use crate::primary::{self, Candidate, Routability};
use crate::render::{
    CertAction, Desired, InstanceNames, LiveObjects, Removable, RenderOptions, render,
};
use crate::status::{self, StatusInputs};

/// The server-side apply field manager.
pub const FIELD_MANAGER: &str = "kura-operator";

/// Shared state of the reconciler.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Operator-wide render options.
    pub options: RenderOptions,
    /// Primary pod probe.
    pub routability: Arc<dyn Routability>,
    /// Event recorder.
    pub recorder: Recorder,
    /// The clock (injected so tests can move time).
    pub clock: Arc<dyn Fn() -> OffsetDateTime + Send + Sync>,
    /// Periodic requeue (status follows pods and nodes even without events).
    pub requeue: Duration,
}

impl Context {
    /// A context with the real clock, a 30 s requeue and events reported as
    /// `kura-operator` (instance `reporter_instance`, e.g. the pod name).
    pub fn new(
        client: Client,
        routability: Arc<dyn Routability>,
        reporter_instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: reporter_instance,
            },
        );
        Self {
            client,
            options: RenderOptions::default(),
            routability,
            recorder,
            clock: Arc::new(OffsetDateTime::now_utc),
            requeue: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("options", &self.options)
            .field("requeue", &self.requeue)
            .finish_non_exhaustive()
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get {name}"), e))
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| Error::kube(format!("apply {name}"), e))
}

async fn delete_opt<K>(api: &Api<K>, name: &str, dp: &DeleteParams) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::kube(format!("delete {name}"), e)),
    }
}

/// Reconciles one instance (see the module docs). Spec errors do not fail:
/// they set `phase: Pending` with the message, publish a Warning event and
/// requeue slowly.
pub async fn reconcile(ki: Arc<KuraInstance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = ki
        .namespace()
        .ok_or(Error::Spec(SpecError::MissingMetadata(
            "metadata.namespace",
        )))?;
    let api: Api<KuraInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let has_finalizer = ki.finalizers().iter().any(|f| f == FINALIZER);
    if ki.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            cleanup(&ki, &ctx).await?;
            let rest: Vec<String> = ki
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            let patch = serde_json::json!({"metadata": {
                "finalizers": rest,
                "resourceVersion": ki.resource_version(),
            }});
            api.patch(
                &ki.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Error::kube("remove finalizer", e))?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        let mut all: Vec<String> = ki.finalizers().to_vec();
        all.push(FINALIZER.to_owned());
        let patch = serde_json::json!({"metadata": {
            "finalizers": all,
            "resourceVersion": ki.resource_version(),
        }});
        api.patch(
            &ki.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| Error::kube("add finalizer", e))?;
    }
    apply_instance(&ki, &ctx, &api, &ns).await
}

async fn publish(ctx: &Context, ki: &KuraInstance, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    // Events are best effort: a failure to record one must not fail the reconcile.
    if let Err(e) = ctx.recorder.publish(&event, &ki.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event");
    }
}

async fn write_status(
    api: &Api<KuraInstance>,
    name: &str,
    status: &KuraInstanceStatus,
) -> Result<(), Error> {
    // A merge patch keeps fields it does not mention: clear the ones that are
    // now empty (e.g. nodePortCache after exposeNodePort is removed).
    let mut value = serde_json::to_value(status).map_err(|e| Error::Serialize {
        what: "status".to_owned(),
        message: e.to_string(),
    })?;
    if let Some(map) = value.as_object_mut() {
        for key in crate::crd::STATUS_FIELDS {
            map.entry(*key).or_insert(serde_json::Value::Null);
        }
    }
    let patch = serde_json::json!({ "status": value });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube("write status", e))?;
    Ok(())
}

/// PVCs of the instance whose claim template is not `template` (left over
/// from a storage class migration).
fn stale_claims(instance: &str, template: &str, pvcs: &[PersistentVolumeClaim]) -> Vec<String> {
    pvcs.iter()
        .filter_map(|p| p.metadata.name.clone())
        .filter(|name| {
            let Some((prefix, ordinal)) = name.rsplit_once('-') else {
                return false;
            };
            if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            match prefix
                .strip_suffix(instance)
                .and_then(|t| t.strip_suffix('-'))
            {
                Some(t) => t.starts_with(crate::render::DATA_VOLUME) && t != template,
                None => false,
            }
        })
        .collect()
}

async fn apply_instance(
    ki: &KuraInstance,
    ctx: &Context,
    api: &Api<KuraInstance>,
    ns: &str,
) -> Result<Action, Error> {
    let now = (ctx.clock)();
    let name = ki.name_any();
    let client = ctx.client.clone();
    let names = match InstanceNames::of(ki) {
        Ok(n) => n,
        Err(e) => return invalid_spec(ki, ctx, api, &e).await,
    };
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let selector = format!("app.kubernetes.io/name=kura,app.kubernetes.io/instance={name}");

    let mut live = LiveObjects {
        external_service: get_opt(&services, &format!("{name}-external")).await?,
        primary_service: get_opt(&services, &name).await?,
        statefulset: get_opt(&statefulsets, &name).await?,
        ..LiveObjects::default()
    };
    if ki.spec.managed_certificates() {
        live.ca_secret = get_opt(&secrets, &names.ca_secret).await?;
        live.leaf_secret = get_opt(&secrets, &names.leaf_secret).await?;
        let account_selector = format!(
            "app.kubernetes.io/name=kura,tuist.dev/account={}",
            names.account.as_str()
        );
        live.account_leaves = secrets
            .list(&ListParams::default().labels(&account_selector))
            .await
            .map_err(|e| Error::kube("list account leaves", e))?
            .items
            .into_iter()
            .filter(|s| {
                s.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.ends_with("-peer-tls"))
            })
            .collect();
    }
    let claims = pvcs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list volume claims", e))?
        .items;
    live.claims = claims.clone();

    // Primary pod: sticky, routable, lowest ordinal.
    let pod_list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list pods", e))?
        .items;
    let candidates: Vec<Candidate> = pod_list
        .iter()
        .filter_map(|p| {
            let pod_name = p.metadata.name.clone()?;
            Some(Candidate {
                ordinal: primary::ordinal_of(&name, &pod_name)?,
                ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
                name: pod_name,
            })
        })
        .collect();
    let current = live
        .primary_service
        .as_ref()
        .and_then(crate::render::primary_from_service);
    let replicas = ki.spec.effective_replicas();
    let chosen = primary::choose(
        &name,
        current.as_deref(),
        &candidates,
        replicas,
        ctx.routability.as_ref(),
    )
    .await;

    let rendered = match render(ki, &live, Some(&chosen), &ctx.options, now) {
        Ok(r) => r,
        Err(Error::Spec(e)) => return invalid_spec(ki, ctx, api, &e).await,
        Err(e) => return Err(e),
    };

    // Storage class migration, step 1: orphan-delete the StatefulSet whose claim
    // template has the old class; the next reconcile recreates it.
    let mut note = None;
    let mut migrating = false;
    if let Some(change) = &rendered.storage_class_change {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..DeleteParams::default()
        };
        delete_opt(&statefulsets, &name, &dp).await?;
        let msg = format!(
            "storage class migration {} -> {}: StatefulSet deleted (pods orphaned), recreating it with a new volume claim template",
            change.from.as_deref().unwrap_or("(default)"),
            change.to.as_deref().unwrap_or("(default)"),
        );
        publish(ctx, ki, EventType::Normal, "StorageMigration", msg.clone()).await;
        note = Some(msg);
        migrating = true;
    }

    let mut applied_sts = None;
    let mut applied_external = None;
    for obj in &rendered.objects {
        match obj {
            Desired::Service(s) => {
                let out = apply(&services, s).await?;
                if out.metadata.name.as_deref() == Some(&format!("{name}-external")) {
                    applied_external = Some(out);
                }
            }
            Desired::Secret(s) => {
                apply(&secrets, s).await?;
            }
            Desired::NetworkPolicy(n) => {
                apply(&Api::<NetworkPolicy>::namespaced(client.clone(), ns), n).await?;
            }
            Desired::PodDisruptionBudget(p) => {
                apply(
                    &Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
                    p,
                )
                .await?;
            }
            Desired::Ingress(i) => {
                apply(&Api::<Ingress>::namespaced(client.clone(), ns), i).await?;
            }
            Desired::StatefulSet(s) if !migrating => {
                applied_sts = Some(apply(&statefulsets, s).await?);
            }
            Desired::StatefulSet(_) => {}
        }
    }
    let dp = DeleteParams::default();
    for (kind, obj_name) in &rendered.remove {
        match kind {
            Removable::ExternalService => delete_opt(&services, obj_name, &dp).await?,
            Removable::PodDisruptionBudget => {
                delete_opt(
                    &Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
                    obj_name,
                    &dp,
                )
                .await?
            }
            Removable::Ingress => {
                delete_opt(
                    &Api::<Ingress>::namespaced(client.clone(), ns),
                    obj_name,
                    &dp,
                )
                .await?
            }
        };
    }

    for (what, action) in [
        ("account CA", &rendered.ca),
        ("leaf certificate", &rendered.leaf),
    ] {
        if let CertAction::Issued(reason) = action {
            publish(
                ctx,
                ki,
                EventType::Normal,
                "CertificateIssued",
                format!("{what} issued: {reason}"),
            )
            .await;
        }
    }
    if !rendered.overridden_annotations.is_empty() {
        let keys: Vec<&str> = rendered
            .overridden_annotations
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        publish(
            ctx,
            ki,
            EventType::Warning,
            "AnnotationOverridden",
            format!(
                "podAnnotations replaced by controller-owned values: {}",
                keys.join(", ")
            ),
        )
        .await;
    }

    // Storage class migration, step 2: once the new pods are Ready, remove the
    // claims of the old template.
    let rolled_out = status::rollout(applied_sts.as_ref(), replicas);
    if let Some(template) = applied_sts
        .as_ref()
        .and_then(|s| s.spec.volume_claim_templates.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.metadata.name.clone())
    {
        let stale = stale_claims(&name, &template, &claims);
        if !stale.is_empty() {
            if rolled_out.is_ok() {
                for claim in &stale {
                    delete_opt(&pvcs, claim, &dp).await?;
                }
                let msg = format!(
                    "storage class migration: pods Ready on the new volumes, removed old claims {}",
                    stale.join(", ")
                );
                publish(ctx, ki, EventType::Normal, "StorageMigration", msg.clone()).await;
                note = Some(msg);
            } else {
                note = Some(format!(
                    "storage class migration: waiting for pods on the new volumes before removing old claims {}",
                    stale.join(", ")
                ));
            }
        }
    }

    // Volumes are expanded to the desired size, never shrunk.
    if let Some(template) = applied_sts
        .as_ref()
        .and_then(|s| s.spec.volume_claim_templates.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.metadata.name.clone())
    {
        expand_claims(
            &pvcs,
            &name,
            &template,
            ki.spec.effective_storage_size(),
            &claims,
        )
        .await?;
    }

    // Status: node address of the primary pod's node, node port of -external.
    let primary_node = pod_list
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(rendered.primary_pod.as_str()))
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.node_name.clone());
    let node_labels: Option<BTreeMap<String, String>> = match (&applied_external, primary_node) {
        (Some(_), Some(node)) => {
            let nodes: Api<Node> = Api::all(client.clone());
            get_opt(&nodes, &node)
                .await?
                .and_then(|n| n.metadata.labels)
        }
        _ => None,
    };
    let new_status = status::compute(&StatusInputs {
        statefulset: applied_sts.as_ref(),
        replicas,
        external_service: applied_external.as_ref(),
        primary_node_labels: node_labels.as_ref(),
        public_url: rendered.public_url.clone(),
        previous: ki.status.as_ref(),
        note,
        now: rfc3339(now),
    });
    if status_needs_write(ki.status.as_ref(), &new_status, now) {
        write_status(api, &name, &new_status).await?;
    }
    if migrating {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    Ok(Action::requeue(ctx.requeue))
}

/// How often an unchanged status is re-stamped (`lastReconciledAt` is the
/// endpoint hand-off's freshness proof, stale after 120 s).
pub const RESTAMP_AFTER: Duration = Duration::from_secs(60);

/// Whether to write `new` over `previous`: when anything but
/// `lastReconciledAt` changed, or the stamp is older than [`RESTAMP_AFTER`].
/// Writing an identical status on every reconcile would re-trigger the
/// controller (a status write is a watch event) in a hot loop.
pub fn status_needs_write(
    previous: Option<&KuraInstanceStatus>,
    new: &KuraInstanceStatus,
    now: OffsetDateTime,
) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let mut same = new.clone();
    same.last_reconciled_at = previous.last_reconciled_at.clone();
    if &same != previous {
        return true;
    }
    let stamped = previous
        .last_reconciled_at
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
    match stamped {
        Some(t) => now - t >= RESTAMP_AFTER || t > now,
        None => true,
    }
}

fn bytes_of(quantity: &str) -> Option<i128> {
    kura_netpol::Quantity::parse(quantity)
        .ok()?
        .to_integer_ceil()
}

/// Claims of `template` whose requested size is below `size`, with the
/// size to request. Claims are never shrunk.
pub fn claims_to_expand(
    instance: &str,
    template: &str,
    size: &str,
    claims: &[PersistentVolumeClaim],
) -> Vec<String> {
    let Some(want) = bytes_of(size) else {
        return Vec::new();
    };
    let prefix = format!("{template}-{instance}-");
    claims
        .iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|c| {
            let have = c
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(|q| bytes_of(&q.0));
            have.is_some_and(|have| have < want)
        })
        .filter_map(|c| c.metadata.name.clone())
        .collect()
}

async fn expand_claims(
    pvcs: &Api<PersistentVolumeClaim>,
    instance: &str,
    template: &str,
    size: &str,
    claims: &[PersistentVolumeClaim],
) -> Result<(), Error> {
    for claim in claims_to_expand(instance, template, size, claims) {
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
        pvcs.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::kube(format!("expand {claim}"), e))?;
    }
    Ok(())
}

async fn invalid_spec(
    ki: &KuraInstance,
    ctx: &Context,
    api: &Api<KuraInstance>,
    err: &SpecError,
) -> Result<Action, Error> {
    let message = err.to_string();
    let now = (ctx.clock)();
    let st = status::invalid_spec(&message, ki.status.as_ref(), rfc3339(now));
    if status_needs_write(ki.status.as_ref(), &st, now) {
        publish(ctx, ki, EventType::Warning, "InvalidSpec", message.clone()).await;
        write_status(api, &ki.name_any(), &st).await?;
    }
    // Not an error: retrying cannot help until the object changes.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// On deletion: owner references remove the per-instance objects; the
/// account-scoped ones (peer Service, CA Secret) are removed only when no other
/// instance of the account remains.
async fn cleanup(ki: &KuraInstance, ctx: &Context) -> Result<(), Error> {
    let Ok(names) = InstanceNames::of(ki) else {
        return Ok(());
    };
    let ns = names.namespace.clone();
    let instances: Api<KuraInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let others = instances
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list instances", e))?
        .items
        .into_iter()
        .filter(|o| {
            // Instances being deleted do not keep the account objects alive.
            o.name_any() != names.instance
                && o.metadata.deletion_timestamp.is_none()
                && o.spec.account_handle == names.account.as_str()
        })
        .count();
    if others == 0 {
        let dp = DeleteParams::default();
        delete_opt(
            &Api::<Service>::namespaced(ctx.client.clone(), &ns),
            &names.peer_service,
            &dp,
        )
        .await?;
        delete_opt(
            &Api::<Secret>::namespaced(ctx.client.clone(), &ns),
            &names.ca_secret,
            &dp,
        )
        .await?;
    }
    Ok(())
}

/// What the controller does after a failed reconcile: retry in 15 s.
pub fn error_policy(_ki: Arc<KuraInstance>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// Runs the controller for `namespace` until the process is stopped: watches
/// KuraInstances, the objects they own, their pods and Nodes (a label change
/// re-stamps `nodeAddress`). Returns the instance store (e.g. for the endpoint
/// hand-off) through `on_store` before running.
pub async fn run(ctx: Arc<Context>, namespace: &str, on_store: impl FnOnce(Store<KuraInstance>)) {
    let client = ctx.client.clone();
    let wc = watcher::Config::default();
    let controller = Controller::new(
        Api::<KuraInstance>::namespaced(client.clone(), namespace),
        wc.clone(),
    );
    let store = controller.store();
    on_store(store.clone());
    let node_store = store.clone();
    // Only a change of a node's labels matters (not its heartbeats).
    let seen_labels: std::sync::Mutex<BTreeMap<String, BTreeMap<String, String>>> =
        std::sync::Mutex::default();
    controller
        .owns(
            Api::<StatefulSet>::namespaced(client.clone(), namespace),
            wc.clone(),
        )
        .owns(
            Api::<Service>::namespaced(client.clone(), namespace),
            wc.clone(),
        )
        .owns(
            Api::<Secret>::namespaced(client.clone(), namespace),
            wc.clone(),
        )
        .owns(
            Api::<NetworkPolicy>::namespaced(client.clone(), namespace),
            wc.clone(),
        )
        .owns(
            Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace),
            wc.clone(),
        )
        .watches(
            Api::<Pod>::namespaced(client.clone(), namespace),
            watcher::Config::default().labels("app.kubernetes.io/name=kura"),
            |pod: Pod| {
                let ns = pod.namespace();
                pod.labels().get("app.kubernetes.io/instance").map(|i| {
                    let r = ObjectRef::<KuraInstance>::new(i);
                    match ns {
                        Some(ns) => r.within(&ns),
                        None => r,
                    }
                })
            },
        )
        .watches(
            Api::<Node>::all(client.clone()),
            wc.clone(),
            move |node: Node| {
                let labels = node.metadata.labels.clone().unwrap_or_default();
                let changed = match seen_labels.lock() {
                    Ok(mut seen) => {
                        seen.insert(node.name_any(), labels.clone()).as_ref() != Some(&labels)
                    }
                    Err(_) => true,
                };
                if !changed {
                    return Vec::new();
                }
                node_store
                    .state()
                    .into_iter()
                    .filter(|ki| ki.spec.exposes_node_port())
                    .map(|ki| ObjectRef::from_obj(ki.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(instance = %obj.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_claims_only_match_this_instance() {
        let pvc = |n: &str| PersistentVolumeClaim {
            metadata: kube::api::ObjectMeta {
                name: Some(n.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let all = [
            pvc("data-kura-a-0"),
            pvc("data-kura-a-1"),
            pvc("data-scw-local-nvme-kura-a-0"),
            pvc("data-kura-a-b-0"),
            pvc("data-kura-a-x"),
            pvc("other-kura-a-0"),
        ];
        assert_eq!(
            stale_claims("kura-a", "data-scw-local-nvme", &all),
            ["data-kura-a-0", "data-kura-a-1"]
        );
        assert_eq!(
            stale_claims("kura-a", "data", &all),
            ["data-scw-local-nvme-kura-a-0"]
        );
    }
}
