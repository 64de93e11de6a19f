//! The Kubernetes side of the reconcilers, behind [`KubeApi`]: Nodes, Cluster
//! API Machines/Clusters, Secrets (kubelet identities), persistence of the
//! machine objects, and Events. [`MemoryKube`] implements it in memory for
//! tests; [`crate::kube_impl::KubeClient`] on a real cluster.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::crd::{ScalewayElasticMetalMachine, ScalewayInstanceMachine};

/// Errors of the Kubernetes side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// An API call failed.
    #[error("kubernetes API: {0}")]
    Api(String),
    /// The object changed since it was read (optimistic concurrency).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The object already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
}

/// What the reconcilers read from a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// `spec.providerID`.
    pub provider_id: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Condition `Ready` is `True`.
    pub ready: bool,
}

/// What the gate reads from a Cluster API Machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapiMachine {
    /// `spec.clusterName`.
    pub cluster_name: String,
    /// `spec.version` (e.g. `v1.34.2`).
    pub version: Option<String>,
}

/// What the gate reads from a Cluster API Cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapiCluster {
    /// `spec.paused`.
    pub paused: bool,
    /// `status.infrastructureReady` (v1beta1) or
    /// `status.initialization.infrastructureProvisioned` (v1beta2).
    pub infrastructure_ready: bool,
}

/// Type of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

/// The object an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// Kind.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, when known.
    pub uid: Option<String>,
}

/// One recorded Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// About.
    pub object: ObjectRef,
    /// Type.
    pub event_type: EventType,
    /// CamelCase reason.
    pub reason: String,
    /// Message.
    pub note: String,
}

/// Secret data.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// The Kubernetes operations the reconcilers need.
pub trait KubeApi: Send + Sync + 'static {
    /// The Node named `name`.
    fn get_node(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<NodeInfo>, KubeError>> + Send;
    /// Sets `spec.providerID` of a Node.
    fn set_node_provider_id(
        &self,
        name: &str,
        provider_id: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// Sets one label of a Node.
    fn set_node_label(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// A Cluster API Machine.
    fn get_capi_machine(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<CapiMachine>, KubeError>> + Send;
    /// A Cluster API Cluster.
    fn get_capi_cluster(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<CapiCluster>, KubeError>> + Send;
    /// A Secret's data.
    fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<SecretData>, KubeError>> + Send;
    /// Creates a Secret ([`KubeError::AlreadyExists`] when it exists).
    fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        secret_type: &str,
        labels: BTreeMap<String, String>,
        data: SecretData,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// Deletes a Secret (absent is fine).
    fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), KubeError>> + Send;
    /// Persists `spec.providerID`, `metadata.finalizers` and `status` of an
    /// Instance machine; returns the stored object.
    fn save_instance_machine(
        &self,
        machine: &ScalewayInstanceMachine,
    ) -> impl Future<Output = Result<ScalewayInstanceMachine, KubeError>> + Send;
    /// Same for an Elastic Metal machine.
    fn save_elastic_metal_machine(
        &self,
        machine: &ScalewayElasticMetalMachine,
    ) -> impl Future<Output = Result<ScalewayElasticMetalMachine, KubeError>> + Send;
    /// Records an Event (best effort: failures are logged, not returned).
    fn event(
        &self,
        object: &ObjectRef,
        event_type: EventType,
        reason: &str,
        note: &str,
    ) -> impl Future<Output = ()> + Send;
}

/// Type, labels and data of a stored Secret.
type StoredSecret = (String, BTreeMap<String, String>, SecretData);

#[derive(Default)]
struct MemState {
    nodes: HashMap<String, NodeInfo>,
    machines: HashMap<(String, String), CapiMachine>,
    clusters: HashMap<(String, String), CapiCluster>,
    secrets: HashMap<(String, String), StoredSecret>,
    instance_machines: HashMap<(String, String), ScalewayInstanceMachine>,
    em_machines: HashMap<(String, String), ScalewayElasticMetalMachine>,
    events: Vec<RecordedEvent>,
    label_failures: u32,
    label_patches: u32,
}

/// An in-memory [`KubeApi`] for tests: objects in maps, deletion honouring
/// finalizers, and injectable failures of Node label patches.
#[derive(Clone, Default)]
pub struct MemoryKube {
    state: Arc<Mutex<MemState>>,
}

impl std::fmt::Debug for MemoryKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKube").finish_non_exhaustive()
    }
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_owned(), name.to_owned())
}

impl MemoryKube {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }
    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Adds or replaces a Node.
    pub fn put_node(&self, node: NodeInfo) {
        self.lock().nodes.insert(node.name.clone(), node);
    }
    /// A Node.
    pub fn node(&self, name: &str) -> Option<NodeInfo> {
        self.lock().nodes.get(name).cloned()
    }
    /// Removes a Node.
    pub fn remove_node(&self, name: &str) {
        self.lock().nodes.remove(name);
    }
    /// Adds or replaces a Cluster API Machine.
    pub fn put_capi_machine(&self, namespace: &str, name: &str, m: CapiMachine) {
        self.lock().machines.insert(key(namespace, name), m);
    }
    /// Adds or replaces a Cluster API Cluster.
    pub fn put_capi_cluster(&self, namespace: &str, name: &str, c: CapiCluster) {
        self.lock().clusters.insert(key(namespace, name), c);
    }
    /// Adds or replaces an Instance machine (as `kubectl apply` would).
    pub fn put_instance_machine(&self, m: ScalewayInstanceMachine) {
        let k = key(
            m.metadata.namespace.as_deref().unwrap_or("default"),
            m.metadata.name.as_deref().unwrap_or_default(),
        );
        self.lock().instance_machines.insert(k, m);
    }
    /// Adds or replaces an Elastic Metal machine.
    pub fn put_elastic_metal_machine(&self, m: ScalewayElasticMetalMachine) {
        let k = key(
            m.metadata.namespace.as_deref().unwrap_or("default"),
            m.metadata.name.as_deref().unwrap_or_default(),
        );
        self.lock().em_machines.insert(k, m);
    }
    /// The stored Instance machine.
    pub fn instance_machine(&self, namespace: &str, name: &str) -> Option<ScalewayInstanceMachine> {
        self.lock()
            .instance_machines
            .get(&key(namespace, name))
            .cloned()
    }
    /// The stored Elastic Metal machine.
    pub fn elastic_metal_machine(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<ScalewayElasticMetalMachine> {
        self.lock().em_machines.get(&key(namespace, name)).cloned()
    }
    /// Marks an Instance machine deleted (`deletionTimestamp`); returns false if absent.
    pub fn delete_instance_machine(&self, namespace: &str, name: &str, now: &str) -> bool {
        let mut st = self.lock();
        let k = key(namespace, name);
        let Some(m) = st.instance_machines.get_mut(&k) else {
            return false;
        };
        m.metadata.deletion_timestamp = Some(deletion_time(now));
        if m.metadata.finalizers.as_ref().is_none_or(Vec::is_empty) {
            st.instance_machines.remove(&k);
        }
        true
    }
    /// Marks an Elastic Metal machine deleted.
    pub fn delete_elastic_metal_machine(&self, namespace: &str, name: &str, now: &str) -> bool {
        let mut st = self.lock();
        let k = key(namespace, name);
        let Some(m) = st.em_machines.get_mut(&k) else {
            return false;
        };
        m.metadata.deletion_timestamp = Some(deletion_time(now));
        if m.metadata.finalizers.as_ref().is_none_or(Vec::is_empty) {
            st.em_machines.remove(&k);
        }
        true
    }
    /// Whether a Secret exists.
    pub fn has_secret(&self, namespace: &str, name: &str) -> bool {
        self.lock().secrets.contains_key(&key(namespace, name))
    }
    /// Number of Secrets.
    pub fn secret_count(&self) -> usize {
        self.lock().secrets.len()
    }
    /// Events recorded so far.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.lock().events.clone()
    }
    /// The next `n` Node label patches fail.
    pub fn fail_label_patches(&self, n: u32) {
        self.lock().label_failures = n;
    }
    /// Node label patches attempted (including failed ones).
    pub fn label_patches(&self) -> u32 {
        self.lock().label_patches
    }
}

fn deletion_time(now: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    use k8s_openapi::jiff::Timestamp;
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        now.parse::<Timestamp>().unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

fn store<T: Clone>(
    map: &mut HashMap<(String, String), T>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    obj: &T,
) -> Result<T, KubeError> {
    let k = key(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    );
    if !map.contains_key(&k) {
        return Err(KubeError::Api(format!("{}/{} not found", k.0, k.1)));
    }
    if meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(Vec::is_empty) {
        map.remove(&k);
        return Ok(obj.clone());
    }
    map.insert(k, obj.clone());
    Ok(obj.clone())
}

impl KubeApi for MemoryKube {
    async fn get_node(&self, name: &str) -> Result<Option<NodeInfo>, KubeError> {
        Ok(self.lock().nodes.get(name).cloned())
    }
    async fn set_node_provider_id(&self, name: &str, provider_id: &str) -> Result<(), KubeError> {
        let mut st = self.lock();
        let n = st
            .nodes
            .get_mut(name)
            .ok_or_else(|| KubeError::Api(format!("node {name} not found")))?;
        match &n.provider_id {
            Some(p) if p != provider_id => Err(KubeError::Api(format!(
                "node {name}: spec.providerID is immutable once set ({p})"
            ))),
            _ => {
                n.provider_id = Some(provider_id.to_owned());
                Ok(())
            }
        }
    }
    async fn set_node_label(&self, name: &str, k: &str, value: &str) -> Result<(), KubeError> {
        let mut st = self.lock();
        st.label_patches += 1;
        if st.label_failures > 0 {
            st.label_failures -= 1;
            return Err(KubeError::Api(format!(
                "injected: patching node {name} failed"
            )));
        }
        let n = st
            .nodes
            .get_mut(name)
            .ok_or_else(|| KubeError::Api(format!("node {name} not found")))?;
        n.labels.insert(k.to_owned(), value.to_owned());
        Ok(())
    }
    async fn get_capi_machine(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CapiMachine>, KubeError> {
        Ok(self.lock().machines.get(&key(namespace, name)).cloned())
    }
    async fn get_capi_cluster(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CapiCluster>, KubeError> {
        Ok(self.lock().clusters.get(&key(namespace, name)).cloned())
    }
    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretData>, KubeError> {
        Ok(self
            .lock()
            .secrets
            .get(&key(namespace, name))
            .map(|(_, _, d)| d.clone()))
    }
    async fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        secret_type: &str,
        labels: BTreeMap<String, String>,
        data: SecretData,
    ) -> Result<(), KubeError> {
        let mut st = self.lock();
        let k = key(namespace, name);
        if st.secrets.contains_key(&k) {
            return Err(KubeError::AlreadyExists(format!(
                "secret {namespace}/{name}"
            )));
        }
        st.secrets.insert(k, (secret_type.to_owned(), labels, data));
        Ok(())
    }
    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        self.lock().secrets.remove(&key(namespace, name));
        Ok(())
    }
    async fn save_instance_machine(
        &self,
        m: &ScalewayInstanceMachine,
    ) -> Result<ScalewayInstanceMachine, KubeError> {
        let mut st = self.lock();
        store(&mut st.instance_machines, &m.metadata, m)
    }
    async fn save_elastic_metal_machine(
        &self,
        m: &ScalewayElasticMetalMachine,
    ) -> Result<ScalewayElasticMetalMachine, KubeError> {
        let mut st = self.lock();
        store(&mut st.em_machines, &m.metadata, m)
    }
    async fn event(&self, object: &ObjectRef, event_type: EventType, reason: &str, note: &str) {
        self.lock().events.push(RecordedEvent {
            object: object.clone(),
            event_type,
            reason: reason.to_owned(),
            note: note.to_owned(),
        });
    }
}
