//! The `ScalewayElasticMetalMachine` reconciler.
//!
//! 1. Cluster API gate; finalizer.
//! 2. Private Network: find-or-create by exact name (several matches is an
//!    error), id persisted.
//! 3. Server: recorded `serverID`, else exact name, else order (offer by
//!    name, OS by label, hostname, SSH keys, tags); id persisted at once.
//! 4. Delivery and OS install (requeue 60 s; install error → `Failed`, and
//!    the retry reinstalls).
//! 5. The Private Network server option first, then the attachment (VLAN ≠ 0,
//!    persisted), then wait for `attached`.
//! 6. Wait for a public IPv4 and the PN IPv4 in IPAM.
//! 7. Self-join over SSH (VLAN interface `pn0` + kubelet), recorded as
//!    `bootstrapped`; then `spec.providerID`; then the Node phase.
//!
//! Deletion: detach the Private Network, delete the server (404 is done),
//! delete the Private Network when it is ours and empty, the kubelet
//! identity, then the finalizer.

use std::net::Ipv4Addr;

use kura_scaleway::{
    BaremetalServer, BaremetalServerId, BaremetalServerStatus, CreateBaremetalServerRequest,
    InstallRequest, InstallStatus, IpSource, ListIpsRequest, OptionStatus,
    PrivateNetworkAttachmentStatus, PrivateNetworkId, ResourceType, Zone,
};

use crate::cloudinit::{JoinParams, KubernetesMinor, VlanInterface, render_elastic_metal_script};
use crate::common::{
    CommonStatus, NodePhase, StepError, clear_failure, cond, node_phase, object_ref,
    remove_finalizer,
};
use crate::context::{Context, Next, SshRunner, requeue, scaleway_error_type};
use crate::crd::{
    CONDITION_NODE_READY, CONDITION_PROVISIONED, CONDITION_READY, ConditionStatus,
    ELASTIC_METAL_FINALIZER, ElasticMetalPhase, MachineAddress, ScalewayElasticMetalMachine,
};
use crate::kube_side::{EventType, KubeApi};
use crate::run::{Machine, Steps};

/// Tags of Private Networks the provider creates.
pub const PN_TAGS: [&str; 2] = ["capi", "tuist.dev/runner-cache"];

/// The tag that identifies the server of machine `name`.
pub fn machine_tag(name: &str) -> String {
    format!("scalewayelasticmetalmachine={name}")
}

/// `scaleway://baremetal/<zone>/<id>`.
pub fn provider_id(zone: &Zone, id: &BaremetalServerId) -> String {
    format!("scaleway://baremetal/{zone}/{id}")
}

type Run<'a, K, S> = crate::run::Run<'a, K, S, ScalewayElasticMetalMachine>;
const KIND: &str = <ScalewayElasticMetalMachine as Machine>::KIND;

impl<K: KubeApi, S: SshRunner> Run<'_, K, S> {
    async fn phase(
        &mut self,
        phase: ElasticMetalPhase,
        reason: &str,
        message: &str,
    ) -> Result<(), StepError> {
        let now = self.now_s();
        cond(
            &mut self.st,
            &now,
            CONDITION_PROVISIONED,
            ConditionStatus::False,
            reason,
            message,
        );
        cond(
            &mut self.st,
            &now,
            CONDITION_READY,
            ConditionStatus::False,
            reason,
            message,
        );
        self.st.phase = phase;
        self.save().await
    }

    fn zone(&self) -> Result<Zone, StepError> {
        Zone::new(self.m.spec.zone.clone())
            .map_err(|e| StepError::failed("InvalidSpec", format!("zone: {e}")))
    }

    async fn ensure_pn(&mut self, zone: &Zone) -> Result<PrivateNetworkId, StepError> {
        let region = zone.region();
        let vpc = self.ctx.scw.vpc();
        if let Some(id) = self.st.private_network_id.clone() {
            let id = PrivateNetworkId::new(id);
            match vpc.get_private_network(&region, &id).await {
                Ok(_) => return Ok(id),
                Err(e) if e.is_not_found() => self.st.private_network_id = None,
                Err(e) => return Err(e.into()),
            }
        }
        let tags: Vec<String> = PN_TAGS.iter().map(|s| (*s).to_owned()).collect();
        let pn = vpc
            .ensure_private_network(
                &region,
                &self.ctx.config.project_id,
                &self.m.spec.private_network_name,
                Some(&self.m.spec.private_network_cidr),
                &tags,
            )
            .await
            .map_err(|e| match e {
                kura_scaleway::Error::Ambiguous { count, .. } => StepError::failed(
                    "AmbiguousPrivateNetwork",
                    format!(
                        "{count} private networks are named {}",
                        self.m.spec.private_network_name
                    ),
                ),
                other => other.into(),
            })?;
        self.st.private_network_id = Some(pn.id.to_string());
        self.save().await?;
        Ok(pn.id)
    }

    async fn find_server(&mut self, zone: &Zone) -> Result<Option<BaremetalServer>, StepError> {
        let api = self.ctx.scw.baremetal();
        if let Some(id) = self.st.server_id.clone() {
            match api.get_server(zone, &BaremetalServerId::new(id)).await {
                Ok(s) => return Ok(Some(s)),
                Err(e) if e.is_not_found() => {
                    self.st.server_id = None;
                    self.st.private_network_vlan = None;
                    self.st.bootstrapped = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        match api.find_server_by_name(zone, &self.name()).await {
            Ok(s) => Ok(s),
            Err(kura_scaleway::Error::Ambiguous { count, .. }) => Err(StepError::failed(
                "AmbiguousServer",
                format!("{count} Elastic Metal servers are named {}", self.name()),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn order(&mut self, zone: &Zone) -> Result<BaremetalServer, StepError> {
        let api = self.ctx.scw.baremetal();
        let spec = self.m.spec.clone();
        let offer = api
            .find_offer_by_name(zone, &spec.offer_type)
            .await?
            .ok_or_else(|| {
                StepError::failed("OfferNotFound", format!("no offer {}", spec.offer_type))
            })?;
        let os = api
            .find_os(zone, Some(&offer.id), &spec.os)
            .await?
            .ok_or_else(|| StepError::failed("OSNotFound", format!("no OS {}", spec.os)))?;
        let name = self.name();
        let mut req = CreateBaremetalServerRequest::new(
            offer.id.clone(),
            self.ctx.config.project_id.clone(),
            name.clone(),
        );
        req.description = format!("Kura cache node {}/{}", self.ns(), name);
        req.tags = vec!["capi".into(), machine_tag(&name)];
        req.install = Some(InstallRequest::new(
            os.id,
            name.clone(),
            spec.ssh_key_ids.clone(),
        ));
        let server = api.create_server(zone, &req).await.map_err(|e| match e {
            kura_scaleway::Error::OutOfStock { .. } => StepError::failed(
                "OutOfStock",
                format!("offer {} is out of stock", spec.offer_type),
            ),
            other => other.into(),
        })?;
        self.event(
            EventType::Normal,
            "ServerOrdered",
            &format!("ordered {} ({})", server.id, offer.name),
        )
        .await;
        Ok(server)
    }

    async fn pn_ipv4(
        &self,
        zone: &Zone,
        pn: &PrivateNetworkId,
        attachment_id: &str,
    ) -> Result<Option<(Ipv4Addr, u8)>, kura_scaleway::Error> {
        let req = ListIpsRequest {
            source: Some(IpSource::PrivateNetwork(pn.clone())),
            resource_type: Some(ResourceType::BaremetalPrivateNic),
            resource_id: Some(attachment_id.to_owned()),
            is_ipv6: Some(false),
            project_id: Some(self.ctx.config.project_id.clone()),
            ..ListIpsRequest::default()
        };
        let ips = self
            .ctx
            .scw
            .ipam()
            .list_all_ips(&zone.region(), &req)
            .await?;
        Ok(ips.iter().find_map(|ip| {
            let v4 = ip.ipv4()?;
            let prefix = ip
                .address
                .split_once('/')
                .and_then(|(_, p)| p.parse::<u8>().ok())
                .unwrap_or(32);
            Some((v4, prefix))
        }))
    }

    async fn provision(&mut self, version: Option<String>) -> Result<Next, StepError> {
        let zone = self.zone()?;
        let name = self.name();
        let pn = self.ensure_pn(&zone).await?;
        let server = match self.find_server(&zone).await? {
            Some(s) => s,
            None => self.order(&zone).await?,
        };
        if self.st.server_id.as_deref() != Some(server.id.as_str()) {
            self.st.server_id = Some(server.id.to_string());
            self.st.phase = ElasticMetalPhase::Ordered;
            self.save().await?;
        }
        let api = self.ctx.scw.baremetal();
        match &server.status {
            BaremetalServerStatus::Delivering | BaremetalServerStatus::Ordered => {
                self.phase(ElasticMetalPhase::Ordered, "WaitingForDelivery", "")
                    .await?;
                return Ok(Next::Requeue(requeue::ELASTIC_METAL));
            }
            BaremetalServerStatus::Error
            | BaremetalServerStatus::OutOfStock
            | BaremetalServerStatus::Locked => {
                return Err(StepError::failed(
                    "ServerError",
                    format!("server {} is {}", server.id, server.status),
                ));
            }
            BaremetalServerStatus::Ready => {}
            other => {
                self.phase(
                    ElasticMetalPhase::Ordered,
                    "WaitingForServer",
                    &other.to_string(),
                )
                .await?;
                return Ok(Next::Requeue(requeue::ELASTIC_METAL));
            }
        }
        let reinstall = |run: &Self| {
            let os_id = server.install.as_ref().map(|i| i.os_id.clone());
            let keys = run.m.spec.ssh_key_ids.clone();
            (os_id, keys)
        };
        match server.install.as_ref().map(|i| &i.status) {
            Some(InstallStatus::Completed) => {}
            Some(InstallStatus::Error) if !self.retrying => {
                return Err(StepError::failed(
                    "InstallFailed",
                    format!("OS install of {} ended in error", server.id),
                ));
            }
            Some(InstallStatus::Error) | None => {
                let (os_id, keys) = reinstall(self);
                let os_id = match os_id {
                    Some(id) => id,
                    None => {
                        let offer = api.get_server(&zone, &server.id).await?.offer_id;
                        api.find_os(&zone, Some(&offer), &self.m.spec.os)
                            .await?
                            .ok_or_else(|| {
                                StepError::failed("OSNotFound", format!("no OS {}", self.m.spec.os))
                            })?
                            .id
                    }
                };
                api.install_server(
                    &zone,
                    &server.id,
                    &InstallRequest::new(os_id, name.clone(), keys),
                )
                .await?;
                self.event(EventType::Normal, "Installing", "OS (re)install started")
                    .await;
                self.phase(ElasticMetalPhase::Installing, "Installing", "")
                    .await?;
                return Ok(Next::Requeue(requeue::ELASTIC_METAL));
            }
            Some(other) => {
                self.phase(
                    ElasticMetalPhase::Installing,
                    "Installing",
                    &other.to_string(),
                )
                .await?;
                return Ok(Next::Requeue(requeue::ELASTIC_METAL));
            }
        }
        // Private Network option first, then the attachment.
        match api.ensure_pn_option(&zone, &server.id).await? {
            OptionStatus::Enable => {}
            OptionStatus::Error => {
                return Err(StepError::failed(
                    "PrivateNetworkOptionFailed",
                    "enabling the Private Network option failed",
                ));
            }
            other => {
                self.phase(
                    ElasticMetalPhase::Provisioning,
                    "EnablingPrivateNetworkOption",
                    &other.to_string(),
                )
                .await?;
                return Ok(Next::Requeue(requeue::ELASTIC_METAL));
            }
        }
        let spn = api
            .ensure_pn_attached(&zone, &server.id, &pn)
            .await
            .map_err(|e| match e {
                kura_scaleway::Error::UnexpectedResponse { message } => {
                    StepError::failed("NoVLAN", message)
                }
                other => other.into(),
            })?;
        if self.st.private_network_vlan != spn.vlan {
            self.st.private_network_vlan = spn.vlan;
            self.save().await?;
        }
        match spn.status {
            PrivateNetworkAttachmentStatus::Attached => {}
            PrivateNetworkAttachmentStatus::Error => {
                return Err(StepError::failed(
                    "PrivateNetworkAttachFailed",
                    format!("attachment {} is in error", spn.id),
                ));
            }
            other => {
                self.phase(
                    ElasticMetalPhase::Provisioning,
                    "AttachingPrivateNetwork",
                    &other.to_string(),
                )
                .await?;
                return Ok(Next::Requeue(requeue::ELASTIC_METAL_SHORT));
            }
        }
        let Some(public) = server.public_ipv4() else {
            self.phase(ElasticMetalPhase::Provisioning, "WaitingForPublicIP", "")
                .await?;
            return Ok(Next::Requeue(requeue::ELASTIC_METAL_SHORT));
        };
        let pn_ip = self.pn_ipv4(&zone, &pn, spn.id.as_str()).await;
        let now = self.now_s();
        let mut addresses = vec![MachineAddress {
            address_type: "ExternalIP".into(),
            address: public.to_string(),
        }];
        if let Ok(Some((ip, _))) = &pn_ip {
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
        if !self.st.bootstrapped {
            let (ip, prefix) = match &pn_ip {
                Ok(Some(v)) => *v,
                Ok(None) => {
                    self.phase(ElasticMetalPhase::Provisioning, "PrivateIPv4Pending", "")
                        .await?;
                    return Ok(Next::Requeue(requeue::ELASTIC_METAL_SHORT));
                }
                Err(e) => {
                    self.ctx.metrics.api_error(scaleway_error_type(e));
                    tracing::warn!(machine = %name, error = %e, "IPAM lookup failed; will retry");
                    self.event(
                        EventType::Warning,
                        "PrivateIPv4LookupFailed",
                        &e.to_string(),
                    )
                    .await;
                    return Ok(Next::Requeue(requeue::API_ERROR));
                }
            };
            let vlan = spn.vlan.unwrap_or(0);
            let kubeconfig = crate::identity::ensure(
                &self.ctx.kube,
                &self.ctx.config,
                self.now,
                KIND,
                &self.ns(),
                &name,
            )
            .await?;
            let minor = version
                .as_deref()
                .and_then(|v| KubernetesMinor::from_version(v).ok())
                .unwrap_or_else(|| self.ctx.config.default_kubernetes_minor.clone());
            let params = JoinParams {
                node_name: name.clone(),
                taints: self.m.spec.node_taints.clone(),
                cluster_dns: self.ctx.config.cluster_dns,
                node_ip: Some(ip.into()),
                kubeconfig,
                kubernetes_minor: minor,
            };
            let script = render_elastic_metal_script(
                &params,
                &VlanInterface {
                    vlan,
                    address: ip,
                    prefix_len: prefix,
                },
            )
            .map_err(|e| StepError::failed("InvalidSpec", e.to_string()))?;
            self.st.phase = ElasticMetalPhase::Bootstrapping;
            if let Err(e) = self
                .ctx
                .ssh
                .run(public, &self.ctx.config.ssh_user, &script)
                .await
            {
                tracing::warn!(machine = %name, error = %e, "self-join over SSH failed; will retry");
                self.event(
                    EventType::Warning,
                    "SelfJoinFailed",
                    &format!("will retry: {e}"),
                )
                .await;
                self.phase(
                    ElasticMetalPhase::Bootstrapping,
                    "SelfJoinFailed",
                    &e.to_string(),
                )
                .await?;
                return Ok(Next::Requeue(requeue::ELASTIC_METAL_SHORT));
            }
            self.st.bootstrapped = true;
            self.save().await?;
            self.event(
                EventType::Normal,
                "SelfJoined",
                &format!("bootstrap script ran on {public}"),
            )
            .await;
        }
        let pid = provider_id(&zone, &server.id);
        if self.m.spec.provider_id.as_deref() != Some(pid.as_str()) {
            self.m.spec.provider_id = Some(pid.clone());
            self.st.phase = ElasticMetalPhase::Bootstrapping;
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
        let obj = object_ref(KIND, &self.m.metadata);
        let label_ip = pn_ip.map(|o| o.map(|(ip, _)| ip));
        match node_phase(self.ctx, &obj, &name, &pid, label_ip).await? {
            NodePhase::Ready => {
                let was_ready = self.st.phase == ElasticMetalPhase::Ready;
                self.st.phase = ElasticMetalPhase::Ready;
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
                self.st.phase = ElasticMetalPhase::Bootstrapping;
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
        if self.st.phase != ElasticMetalPhase::Deleting {
            self.st.ready = false;
            self.phase(ElasticMetalPhase::Deleting, "Deleting", "")
                .await?;
        }
        if let Ok(zone) = self.zone() {
            let api = self.ctx.scw.baremetal();
            if let Some(server) = self.find_server(&zone).await? {
                if self.st.server_id.as_deref() != Some(server.id.as_str()) {
                    self.st.server_id = Some(server.id.to_string());
                    self.save().await?;
                }
                let spns = api
                    .list_server_private_networks(&zone, Some(&server.id), None)
                    .await?;
                if !spns.is_empty() {
                    for spn in &spns {
                        if spn.status != PrivateNetworkAttachmentStatus::Detaching {
                            match api
                                .detach_private_network(&zone, &server.id, &spn.private_network_id)
                                .await
                            {
                                Ok(()) => {
                                    self.event(
                                        EventType::Normal,
                                        "PrivateNetworkDetached",
                                        spn.private_network_id.as_str(),
                                    )
                                    .await;
                                }
                                Err(e) if e.is_not_found() => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    return Ok(Next::Requeue(requeue::ELASTIC_METAL_SHORT));
                }
                if server.status != BaremetalServerStatus::Deleting {
                    match api.delete_server(&zone, &server.id).await {
                        Ok(_) => {
                            self.event(EventType::Normal, "ServerDeleted", server.id.as_str())
                                .await;
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                return Ok(Next::Requeue(requeue::ELASTIC_METAL));
            }
            self.st.server_id = None;
            // Delete the Private Network when it is ours and nothing else uses it.
            if let Some(pn) = self.st.private_network_id.clone() {
                let region = zone.region();
                let pn_id = PrivateNetworkId::new(pn);
                let vpc = self.ctx.scw.vpc();
                match vpc.get_private_network(&region, &pn_id).await {
                    Ok(p) if PN_TAGS.iter().all(|t| p.tags.iter().any(|x| x == t)) => {
                        match vpc.delete_private_network(&region, &pn_id).await {
                            Ok(()) => {
                                self.event(
                                    EventType::Normal,
                                    "PrivateNetworkDeleted",
                                    pn_id.as_str(),
                                )
                                .await;
                            }
                            Err(e)
                                if e.is_not_found()
                                    || matches!(
                                        e,
                                        kura_scaleway::Error::PreconditionFailed { .. }
                                    ) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                self.st.private_network_id = None;
            }
        }
        crate::identity::delete(&self.ctx.kube, &self.ns(), &self.name()).await?;
        remove_finalizer(&mut self.m.metadata, ELASTIC_METAL_FINALIZER);
        self.save().await?;
        Ok(Next::Wait)
    }
}

/// Reconciles one `ScalewayElasticMetalMachine` (as read from the API server).
pub async fn reconcile<K: KubeApi, S: SshRunner>(
    ctx: &Context<K, S>,
    machine: ScalewayElasticMetalMachine,
) -> Next {
    crate::run::reconcile(ctx, machine).await
}

impl<K: KubeApi, S: SshRunner> Steps<K, S> for ScalewayElasticMetalMachine {
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
