//! [`KubeApi`] on a real cluster, with kube-rs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::{Event, EventType as KEventType, Recorder, Reporter};
use serde_json::json;

use crate::crd::{ScalewayElasticMetalMachine, ScalewayInstanceMachine};
use crate::kube_side::{
    CapiCluster, CapiMachine, EventType, KubeApi, KubeError, NodeInfo, ObjectRef, SecretData,
};

/// Field manager of every patch.
pub const FIELD_MANAGER: &str = "kura-provider";

/// [`KubeApi`] over a `kube::Client`.
#[derive(Clone)]
pub struct KubeClient {
    client: kube::Client,
    recorder: Recorder,
    capi_version: String,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("capi_version", &self.capi_version)
            .finish_non_exhaustive()
    }
}

fn api_err(e: kube::Error) -> KubeError {
    match &e {
        kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists" => {
            KubeError::AlreadyExists(s.message.clone())
        }
        kube::Error::Api(s) if s.code == 409 => KubeError::Conflict(s.message.clone()),
        _ => KubeError::Api(e.to_string()),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl KubeClient {
    /// Wraps `client`; events are reported by controller `reporter`
    /// (instance `instance`, e.g. the pod name); Cluster API objects are
    /// read at `capi_version` (e.g. `v1beta1`).
    pub fn new(
        client: kube::Client,
        reporter: &str,
        instance: Option<String>,
        capi_version: &str,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: reporter.to_owned(),
                instance,
            },
        );
        Self {
            client,
            recorder,
            capi_version: capi_version.to_owned(),
        }
    }

    fn capi(&self, kind: &str) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "cluster.x-k8s.io",
            &self.capi_version,
            kind,
        ))
    }

    async fn get_dynamic(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, KubeError> {
        let ar = self.capi(kind);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        api.get_opt(name).await.map_err(api_err)
    }
}

fn node_info(n: Node) -> NodeInfo {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    NodeInfo {
        name: n.metadata.name.unwrap_or_default(),
        provider_id: n.spec.and_then(|s| s.provider_id),
        labels: n.metadata.labels.unwrap_or_default(),
        ready,
    }
}

async fn save<T>(
    client: &kube::Client,
    obj: &T,
    spec_patch: serde_json::Value,
) -> Result<T, KubeError>
where
    T: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    T::DynamicType: Default,
{
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let api: Api<T> = Api::namespaced(client.clone(), &ns);
    let body = json!({
        "metadata": {
            "resourceVersion": meta.resource_version,
            "finalizers": meta.finalizers.clone().unwrap_or_default(),
        },
        "spec": spec_patch,
    });
    let updated = match api
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => return Ok(obj.clone()),
        Err(e) => return Err(api_err(e)),
    };
    if updated.meta().deletion_timestamp.is_some()
        && updated.meta().finalizers.as_ref().is_none_or(Vec::is_empty)
    {
        // Being removed by the API server: no status to write.
        return Ok(updated);
    }
    // Replace (not merge) the status so cleared fields are removed, with
    // the resourceVersion just written as precondition.
    let mut desired = obj.clone();
    desired.meta_mut().resource_version = updated.meta().resource_version.clone();
    match api
        .replace_status(&name, &PostParams::default(), &desired)
        .await
    {
        Ok(o) => Ok(o),
        Err(e) if is_not_found(&e) => Ok(updated),
        Err(e) => Err(api_err(e)),
    }
}

impl KubeApi for KubeClient {
    async fn get_node(&self, name: &str) -> Result<Option<NodeInfo>, KubeError> {
        let api: Api<Node> = Api::all(self.client.clone());
        Ok(api.get_opt(name).await.map_err(api_err)?.map(node_info))
    }
    async fn set_node_provider_id(&self, name: &str, provider_id: &str) -> Result<(), KubeError> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&json!({"spec": {"providerID": provider_id}})),
        )
        .await
        .map(drop)
        .map_err(api_err)
    }
    async fn set_node_label(&self, name: &str, key: &str, value: &str) -> Result<(), KubeError> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .map(drop)
        .map_err(api_err)
    }
    async fn get_capi_machine(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CapiMachine>, KubeError> {
        Ok(self
            .get_dynamic("Machine", namespace, name)
            .await?
            .map(|m| CapiMachine {
                cluster_name: m.data["spec"]["clusterName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                version: m.data["spec"]["version"].as_str().map(str::to_owned),
            }))
    }
    async fn get_capi_cluster(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CapiCluster>, KubeError> {
        Ok(self
            .get_dynamic("Cluster", namespace, name)
            .await?
            .map(|c| CapiCluster {
                paused: c.data["spec"]["paused"].as_bool().unwrap_or(false),
                infrastructure_ready: c.data["status"]["infrastructureReady"]
                    .as_bool()
                    .or_else(|| {
                        c.data["status"]["initialization"]["infrastructureProvisioned"].as_bool()
                    })
                    .unwrap_or(false),
            }))
    }
    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretData>, KubeError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await.map_err(api_err)?.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
    }
    async fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        secret_type: &str,
        labels: BTreeMap<String, String>,
        data: SecretData,
    ) -> Result<(), KubeError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(labels),
                ..Default::default()
            },
            type_: Some(secret_type.to_owned()),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &secret)
            .await
            .map(drop)
            .map_err(api_err)
    }
    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(e)),
        }
    }
    async fn save_instance_machine(
        &self,
        m: &ScalewayInstanceMachine,
    ) -> Result<ScalewayInstanceMachine, KubeError> {
        save(&self.client, m, json!({"providerID": m.spec.provider_id})).await
    }
    async fn save_elastic_metal_machine(
        &self,
        m: &ScalewayElasticMetalMachine,
    ) -> Result<ScalewayElasticMetalMachine, KubeError> {
        save(&self.client, m, json!({"providerID": m.spec.provider_id})).await
    }
    async fn event(&self, object: &ObjectRef, event_type: EventType, reason: &str, note: &str) {
        let reference = ObjectReference {
            api_version: Some(format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION)),
            kind: Some(object.kind.to_owned()),
            name: Some(object.name.clone()),
            namespace: Some(object.namespace.clone()),
            uid: object.uid.clone(),
            ..Default::default()
        };
        let ev = Event {
            type_: match event_type {
                EventType::Normal => KEventType::Normal,
                EventType::Warning => KEventType::Warning,
            },
            reason: reason.chars().take(128).collect(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason, "publishing an event failed");
        }
    }
}
