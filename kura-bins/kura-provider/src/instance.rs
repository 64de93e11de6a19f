//! The `ScalewayInstanceMachine` reconciler.
//!
//! Every reconciliation starts from the persisted object and the live
//! Scaleway state, so each step is idempotent and a restart at any point
//! resumes where it stopped:
//!
//! 1. Cluster API gate; finalizer.
//! 2. Server: by recorded `serverID`, else by exact name, else by tag
//!    `scalewayinstancemachine=<name>`, else create (SBS root volume, dynamic
//!    public IPv4, no NIC, no power). The id is persisted immediately.
//! 3. While the server is stopped: user data (cloud-init).
//! 4. `ensure_private_nic` (no-op when a NIC on the network exists).
//! 5. `ensure_powered_on` (no-op when running or starting).
//! 6. Running: only then `spec.providerID`; then the Node phase.
//!
//! Deletion: stop-then-delete state machine (never an action the state
//! does not allow), then the SBS root volume, then the kubelet identity,
//! then the finalizer.

use kura_scaleway::{
    CommercialType, CreateServerRequest, DeleteStep, ListServersRequest, PowerOnStep, Server,
    ServerId, ServerState, VolumeId, VolumeTemplate, Zone,
};

use crate::cloudinit::{JoinParams, KubernetesMinor, render_cloud_init};
use crate::common::{
    CommonStatus, NodePhase, StepError, clear_failure, cond, node_phase, object_ref,
    remove_finalizer,
};
use crate::context::{Context, Next, SshRunner, requeue};
use crate::crd::{
    CONDITION_NODE_READY, CONDITION_PROVISIONED, CONDITION_READY, ConditionStatus,
    INSTANCE_FINALIZER, InstancePhase, MachineAddress, ScalewayInstanceMachine,
};
use crate::kube_side::{EventType, KubeApi};
use crate::run::{Machine, Steps};

/// The tag that identifies the server of machine `name` (second lookup key).
pub fn machine_tag(name: &str) -> String {
    format!("scalewayinstancemachine={name}")
}

/// `scaleway://instance/<zone>/<id>`.
pub fn provider_id(zone: &Zone, id: &ServerId) -> String {
    format!("scaleway://instance/{zone}/{id}")
}

type Run<'a, K, S> = crate::run::Run<'a, K, S, ScalewayInstanceMachine>;
const KIND: &str = <ScalewayInstanceMachine as Machine>::KIND;

impl<K: KubeApi, S: SshRunner> Run<'_, K, S> {
    async fn set_phase(&mut self, phase: InstancePhase) {
        self.st.phase = phase;
    }

    fn zone(&self) -> Result<Zone, StepError> {
        Zone::new(self.m.spec.zone.clone())
            .map_err(|e| StepError::failed("InvalidSpec", format!("zone: {e}")))
    }

    /// Finds the machine's server: recorded id, exact name, then tag.
    async fn find_server(&mut self, zone: &Zone) -> Result<Option<Server>, StepError> {
        let api = self.ctx.scw.instance();
        if let Some(id) = self.st.server_id.clone() {
            match api.get_server(zone, &ServerId::new(id)).await {
                Ok(s) => return Ok(Some(s)),
                Err(e) if e.is_not_found() => {
                    // The SBS root volume outlives its server: keep its id
                    // so it is deleted, not orphaned.
                    tracing::warn!(machine = %self.name(), "recorded server is gone");
                    self.st.server_id = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let name = self.name();
        let project = self.ctx.config.project_id.clone();
        if let Some(s) = api.find_server_by_name(zone, &name, Some(&project)).await? {
            return Ok(Some(s));
        }
        let tag = machine_tag(&name);
        let filter = ListServersRequest {
            tags: vec![tag.clone()],
            project: Some(project),
            per_page: Some(100),
            ..ListServersRequest::default()
        };
        let mut tagged: Vec<Server> = api
            .list_all_servers(zone, &filter)
            .await?
            .into_iter()
            .filter(|s| s.tags.contains(&tag))
            .collect();
        match tagged.len() {
            0 => Ok(None),
            1 => Ok(tagged.pop()),
            n => Err(StepError::failed(
                "AmbiguousServer",
                format!("{n} servers carry tag {tag}"),
            )),
        }
    }

    async fn record_server(&mut self, server: &Server) -> Result<(), StepError> {
        let root = server
            .volumes
            .get("0")
            .or_else(|| server.volumes.values().find(|v| v.boot))
            .map(|v| v.id.to_string());
        let changed = self.st.server_id.as_deref() != Some(server.id.as_str())
            || (root.is_some() && self.st.root_volume_id != root);
        if changed {
            self.st.server_id = Some(server.id.to_string());
            if root.is_some() {
                self.st.root_volume_id = root;
            }
            self.save().await?;
        }
        Ok(())
    }

    async fn create_server(&mut self, zone: &Zone) -> Result<Server, StepError> {
        let spec = &self.m.spec;
        let ty = CommercialType::new(spec.commercial_type.clone());
        let image = self
            .ctx
            .scw
            .marketplace()
            .find_local_image(zone, &spec.image, &ty, "instance_sbs")
            .await
            .map_err(|e| {
                if e.is_not_found() || matches!(e, kura_scaleway::Error::InvalidInput { .. }) {
                    StepError::failed("ImageNotFound", format!("image {}: {e}", spec.image))
                } else {
                    e.into()
                }
            })?;
        let name = self.name();
        let req = CreateServerRequest::new(
            name.clone(),
            ty,
            image.id,
            self.ctx.config.project_id.clone(),
        )
        .root_volume(VolumeTemplate::sbs_gb(u64::from(spec.root_volume_gb)))
        .tags(["capi".to_owned(), machine_tag(&name)])
        .dynamic_ip_required(true);
        let server = self.ctx.scw.instance().create_server(zone, &req).await?;
        self.event(
            EventType::Normal,
            "ServerCreated",
            &format!("created server {} ({})", server.id, server.commercial_type),
        )
        .await;
        Ok(server)
    }

    fn minor(&self, version: Option<&str>) -> KubernetesMinor {
        version
            .and_then(|v| KubernetesMinor::from_version(v).ok())
            .unwrap_or_else(|| self.ctx.config.default_kubernetes_minor.clone())
    }

    async fn provision(&mut self, version: Option<String>) -> Result<Next, StepError> {
        let zone = self.zone()?;
        let name = self.name();
        let server = match self.find_server(&zone).await? {
            Some(s) => s,
            None => {
                // A server that vanished leaves its root volume: delete it
                // before ordering the replacement.
                if let Some(vol) = self.st.root_volume_id.clone() {
                    self.ctx
                        .scw
                        .block()
                        .ensure_volume_deleted(&zone, &VolumeId::new(vol.clone()))
                        .await?;
                    self.event(EventType::Normal, "VolumeDeleted", &vol).await;
                    self.st.root_volume_id = None;
                    self.save().await?;
                }
                self.set_phase(InstancePhase::Provisioning).await;
                self.create_server(&zone).await?
            }
        };
        // Record the id before anything else touches the server.
        self.record_server(&server).await?;
        if self.st.phase == InstancePhase::Pending || self.st.phase == InstancePhase::Failed {
            self.set_phase(InstancePhase::Provisioning).await;
        }
        let api = self.ctx.scw.instance();
        if matches!(server.state, ServerState::Stopped) {
            let kubeconfig = crate::identity::ensure(
                &self.ctx.kube,
                &self.ctx.config,
                self.now,
                KIND,
                &self.ns(),
                &name,
            )
            .await?;
            let params = JoinParams {
                node_name: name.clone(),
                taints: self.m.spec.node_taints.clone(),
                cluster_dns: self.ctx.config.cluster_dns,
                node_ip: None,
                kubeconfig,
                kubernetes_minor: self.minor(version.as_deref()),
            };
            let doc = render_cloud_init(&params)
                .map_err(|e| StepError::failed("InvalidSpec", e.to_string()))?;
            api.set_user_data(&zone, &server.id, "cloud-init", doc)
                .await?;
        }
        let pn = kura_scaleway::PrivateNetworkId::new(self.m.spec.private_network_id.clone());
        api.ensure_private_nic(&zone, &server.id, &pn).await?;
        match api.ensure_powered_on(&zone, &server.id).await? {
            PowerOnStep::AlreadyOn(ServerState::Running) => {}
            step => {
                let now = self.now_s();
                cond(
                    &mut self.st,
                    &now,
                    CONDITION_PROVISIONED,
                    ConditionStatus::False,
                    "PoweringOn",
                    &format!("{step:?}"),
                );
                self.save().await?;
                return Ok(Next::Requeue(requeue::INSTANCE));
            }
        }
        // Running, attached, user data in place: only now the providerID.
        let pid = provider_id(&zone, &server.id);
        let now = self.now_s();
        if self.m.spec.provider_id.as_deref() != Some(pid.as_str()) {
            self.m.spec.provider_id = Some(pid.clone());
            self.set_phase(InstancePhase::Bootstrapping).await;
            cond(
                &mut self.st,
                &now,
                CONDITION_PROVISIONED,
                ConditionStatus::True,
                "Provisioned",
                "",
            );
            self.save().await?;
            self.event(EventType::Normal, "Provisioned", &pid).await;
        }
        // Fresh view (the NIC may have been created in this pass).
        let server = api.get_server(&zone, &server.id).await?;
        let mut addresses = Vec::new();
        if let Some(ip) = server.public_ipv4() {
            addresses.push(MachineAddress {
                address_type: "ExternalIP".into(),
                address: ip.to_string(),
            });
        }
        let ipv4 = api.private_network_ipv4(&zone, &server, &pn).await;
        if let Ok(Some(ip)) = &ipv4 {
            addresses.push(MachineAddress {
                address_type: "InternalIP".into(),
                address: ip.to_string(),
            });
        }
        addresses.push(MachineAddress {
            address_type: "Hostname".into(),
            address: name.clone(),
        });
        *self.st.addresses() = addresses;
        let obj = object_ref(KIND, &self.m.metadata);
        match node_phase(self.ctx, &obj, &name, &pid, ipv4).await? {
            NodePhase::Ready => {
                let was_ready = self.st.phase == InstancePhase::Ready;
                self.set_phase(InstancePhase::Ready).await;
                self.st.ready = true;
                clear_failure(&mut self.st);
                cond(
                    &mut self.st,
                    &now,
                    CONDITION_NODE_READY,
                    ConditionStatus::True,
                    "NodeReady",
                    "",
                );
                cond(
                    &mut self.st,
                    &now,
                    CONDITION_READY,
                    ConditionStatus::True,
                    "Ready",
                    "",
                );
                self.save().await?;
                if !was_ready {
                    self.event(EventType::Normal, "Ready", &format!("Node {name} is Ready"))
                        .await;
                }
                Ok(Next::Requeue(requeue::READY))
            }
            NodePhase::Pending { reason, message } => {
                self.set_phase(InstancePhase::Bootstrapping).await;
                self.st.ready = false;
                cond(
                    &mut self.st,
                    &now,
                    CONDITION_NODE_READY,
                    ConditionStatus::False,
                    reason,
                    &message,
                );
                cond(
                    &mut self.st,
                    &now,
                    CONDITION_READY,
                    ConditionStatus::False,
                    reason,
                    &message,
                );
                self.save().await?;
                Ok(Next::Requeue(requeue::NODE))
            }
        }
    }

    async fn delete(&mut self) -> Result<Next, StepError> {
        if self.st.phase != InstancePhase::Deleting {
            self.set_phase(InstancePhase::Deleting).await;
            self.st.ready = false;
            let now = self.now_s();
            cond(
                &mut self.st,
                &now,
                CONDITION_READY,
                ConditionStatus::False,
                "Deleting",
                "",
            );
            self.save().await?;
        }
        let zone = self.zone();
        if let Ok(zone) = zone {
            // A server whose create answer was lost is found by name.
            if let Some(server) = self.find_server(&zone).await? {
                self.record_server(&server).await?;
                match self
                    .ctx
                    .scw
                    .instance()
                    .delete_server_step(&zone, &server.id)
                    .await?
                {
                    DeleteStep::Gone | DeleteStep::Deleted => {
                        self.event(EventType::Normal, "ServerDeleted", server.id.as_str())
                            .await;
                    }
                    step => {
                        let now = self.now_s();
                        cond(
                            &mut self.st,
                            &now,
                            CONDITION_PROVISIONED,
                            ConditionStatus::False,
                            "Deleting",
                            &format!("{step:?}"),
                        );
                        self.save().await?;
                        return Ok(Next::Requeue(requeue::INSTANCE));
                    }
                }
            }
            self.st.server_id = None;
            // The SBS root volume survives its server: delete it too.
            if let Some(vol) = self.st.root_volume_id.clone() {
                self.ctx
                    .scw
                    .block()
                    .ensure_volume_deleted(&zone, &VolumeId::new(vol.clone()))
                    .await?;
                self.event(EventType::Normal, "VolumeDeleted", &vol).await;
                self.st.root_volume_id = None;
            }
        }
        crate::identity::delete(&self.ctx.kube, &self.ns(), &self.name()).await?;
        remove_finalizer(&mut self.m.metadata, INSTANCE_FINALIZER);
        self.save().await?;
        Ok(Next::Wait)
    }
}

/// Reconciles one `ScalewayInstanceMachine` (as read from the API server).
pub async fn reconcile<K: KubeApi, S: SshRunner>(
    ctx: &Context<K, S>,
    machine: ScalewayInstanceMachine,
) -> Next {
    crate::run::reconcile(ctx, machine).await
}

impl<K: KubeApi, S: SshRunner> Steps<K, S> for ScalewayInstanceMachine {
    async fn provision(
        run: &mut Run<'_, K, S>,
        version: Option<String>,
    ) -> Result<Next, StepError> {
        run.provision(version).await
    }
    async fn delete(run: &mut Run<'_, K, S>) -> Result<Next, StepError> {
        run.delete().await
    }
}
