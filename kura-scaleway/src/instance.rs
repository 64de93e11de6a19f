//! Instance API v1: servers, actions, user data, private NICs, volumes.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Page, Paginator, WaitOptions};
use crate::de::nullable;
use crate::request::{ApiRequest, path};
use crate::{
    BootType, CommercialType, Error, ImageId, IpFamily, IpId, IpState, MacAddress, OrganizationId,
    PrivateNetworkId, PrivateNicId, PrivateNicState, ProjectId, ServerAction, ServerId,
    ServerState, TaskId, TaskStatus, VolumeId, VolumeType, Zone,
};

/// An Instance server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Server {
    /// Id.
    pub id: ServerId,
    /// Name (not unique).
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Organization.
    #[serde(default)]
    pub organization: Option<OrganizationId>,
    /// Project.
    #[serde(default)]
    pub project: Option<ProjectId>,
    /// Zone.
    #[serde(default)]
    pub zone: Option<Zone>,
    /// Commercial type, e.g. `PRO2-S`.
    #[serde(default)]
    pub commercial_type: CommercialType,
    /// CPU architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// State.
    #[serde(default)]
    pub state: ServerState,
    /// Detail of the state, e.g. `booting kernel`.
    #[serde(default, deserialize_with = "nullable")]
    pub state_detail: String,
    /// Actions the API accepts in this state; others get a 400.
    #[serde(default, deserialize_with = "nullable")]
    pub allowed_actions: Vec<ServerAction>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub creation_date: Option<String>,
    /// Modification time (RFC 3339).
    #[serde(default)]
    pub modification_date: Option<String>,
    /// Whether a dynamic public IP is attached while running.
    #[serde(default)]
    pub dynamic_ip_required: bool,
    /// Routed IPs.
    #[serde(default)]
    pub routed_ip_enabled: Option<bool>,
    /// Protection against deletion.
    #[serde(default)]
    pub protected: bool,
    /// Boot image.
    #[serde(default)]
    pub image: Option<ServerImage>,
    /// Boot type.
    #[serde(default)]
    pub boot_type: Option<BootType>,
    /// Public IPs (a dynamic one appears only while running).
    #[serde(default, deserialize_with = "nullable")]
    pub public_ips: Vec<PublicIp>,
    /// Legacy single public IP.
    #[serde(default)]
    pub public_ip: Option<PublicIp>,
    /// Legacy private IP.
    #[serde(default)]
    pub private_ip: Option<String>,
    /// MAC address of the public interface.
    #[serde(default)]
    pub mac_address: Option<MacAddress>,
    /// Volumes by index (`"0"` is the root volume).
    #[serde(default, deserialize_with = "nullable")]
    pub volumes: BTreeMap<String, ServerVolume>,
    /// Private NICs (without IPs: look those up in IPAM).
    #[serde(default, deserialize_with = "nullable")]
    pub private_nics: Vec<PrivateNic>,
}

impl Server {
    /// The first IPv4 public IP, when there is one.
    pub fn public_ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.public_ips
            .iter()
            .filter(|ip| ip.family != Some(IpFamily::Inet6))
            .find_map(|ip| ip.address.as_deref()?.parse().ok())
    }
}

/// The image of a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerImage {
    /// Id.
    #[serde(default)]
    pub id: ImageId,
    /// Name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Architecture.
    #[serde(default)]
    pub arch: Option<String>,
}

/// A public IP of a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PublicIp {
    /// Id.
    #[serde(default)]
    pub id: IpId,
    /// Address.
    #[serde(default)]
    pub address: Option<String>,
    /// Gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Netmask (e.g. `"32"`).
    #[serde(default)]
    pub netmask: Option<String>,
    /// Family.
    #[serde(default)]
    pub family: Option<IpFamily>,
    /// Whether the IP is dynamic (released at power-off).
    #[serde(default)]
    pub dynamic: bool,
    /// Provisioning mode.
    #[serde(default)]
    pub provisioning_mode: Option<String>,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// State.
    #[serde(default)]
    pub state: Option<IpState>,
    /// IPAM id.
    #[serde(default)]
    pub ipam_id: Option<String>,
}

/// A volume attached to a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerVolume {
    /// Id.
    #[serde(default)]
    pub id: VolumeId,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// Type.
    #[serde(default)]
    pub volume_type: Option<VolumeType>,
    /// State.
    #[serde(default)]
    pub state: Option<String>,
    /// Boot volume.
    #[serde(default)]
    pub boot: bool,
}

/// A private NIC: the attachment of a server to a private network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PrivateNic {
    /// Id (IPAM's `resource.id` for its IPs).
    pub id: PrivateNicId,
    /// Server.
    #[serde(default)]
    pub server_id: ServerId,
    /// Private network.
    #[serde(default)]
    pub private_network_id: PrivateNetworkId,
    /// MAC address (lower case here, upper case in IPAM).
    #[serde(default)]
    pub mac_address: MacAddress,
    /// State.
    #[serde(default)]
    pub state: PrivateNicState,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// Creation time.
    #[serde(default)]
    pub creation_date: Option<String>,
    /// Modification time.
    #[serde(default)]
    pub modification_date: Option<String>,
    /// Zone.
    #[serde(default)]
    pub zone: Option<Zone>,
    /// IPAM ids of its IPv4 and IPv6.
    #[serde(default, deserialize_with = "nullable")]
    pub ipam_ip_ids: Vec<IpId>,
}

/// An asynchronous task started by an action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Task {
    /// Id.
    #[serde(default)]
    pub id: TaskId,
    /// E.g. `server_batch_poweron`.
    #[serde(default, deserialize_with = "nullable")]
    pub description: String,
    /// Status.
    #[serde(default)]
    pub status: TaskStatus,
    /// Origin.
    #[serde(default)]
    pub href_from: Option<String>,
    /// Result.
    #[serde(default)]
    pub href_result: Option<String>,
    /// Start time.
    #[serde(default)]
    pub started_at: Option<String>,
    /// End time.
    #[serde(default)]
    pub terminated_at: Option<String>,
    /// Progress in percent.
    #[serde(default)]
    pub progress: Option<i64>,
    /// Zone.
    #[serde(default)]
    pub zone: Option<Zone>,
}

/// A volume template in [`CreateServerRequest::volumes`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTemplate {
    /// Existing volume to attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<VolumeId>,
    /// Boot from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<bool>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<VolumeType>,
}

impl VolumeTemplate {
    /// A new Block Storage (SBS) volume of `gb` gigabytes (10^9 bytes).
    pub fn sbs_gb(gb: u64) -> Self {
        Self {
            size: Some(gb.saturating_mul(1_000_000_000)),
            volume_type: Some(VolumeType::SbsVolume),
            ..Self::default()
        }
    }
}

/// `POST /servers` body. There is no user data and no private network here:
/// set them on the stopped server, then power on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateServerRequest {
    /// Name.
    pub name: String,
    /// Commercial type.
    pub commercial_type: CommercialType,
    /// Image id (resolve a label with [`crate::MarketplaceApi::find_local_image`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageId>,
    /// Volumes by index.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeTemplate>,
    /// Attach a dynamic public IP while running (API default: true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_ip_required: Option<bool>,
    /// Flexible IPs to attach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_ips: Vec<IpId>,
    /// Boot type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_type: Option<BootType>,
    /// Project (exactly one of project/organization).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<ProjectId>,
    /// Organization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<OrganizationId>,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Security group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_group: Option<String>,
    /// Placement group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_group: Option<String>,
    /// Protection against deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
}

impl CreateServerRequest {
    /// A server named `name` of type `commercial_type` booting `image` in `project`.
    pub fn new(
        name: impl Into<String>,
        commercial_type: impl Into<CommercialType>,
        image: impl Into<ImageId>,
        project: impl Into<ProjectId>,
    ) -> Self {
        Self {
            name: name.into(),
            commercial_type: commercial_type.into(),
            image: Some(image.into()),
            project: Some(project.into()),
            ..Self::default()
        }
    }
    /// Sets the root volume (index `"0"`).
    pub fn root_volume(mut self, volume: VolumeTemplate) -> Self {
        self.volumes.insert("0".into(), volume);
        self
    }
    /// Sets the tags.
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }
    /// Requests (or not) a dynamic public IP.
    pub fn dynamic_ip_required(mut self, required: bool) -> Self {
        self.dynamic_ip_required = Some(required);
        self
    }
}

/// `PATCH /servers/{id}` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UpdateServerRequest {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Dynamic IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_ip_required: Option<bool>,
    /// Protection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
}

/// Filters of `GET /servers`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListServersRequest {
    /// Name filter: **a substring match** on the API side.
    pub name: Option<String>,
    /// All these tags.
    pub tags: Vec<String>,
    /// State.
    pub state: Option<ServerState>,
    /// Servers with a NIC on this private network.
    pub private_network: Option<PrivateNetworkId>,
    /// Commercial type.
    pub commercial_type: Option<CommercialType>,
    /// Project.
    pub project: Option<ProjectId>,
    /// Organization.
    pub organization: Option<OrganizationId>,
    /// Order, e.g. `creation_date_desc` (default) or `creation_date_asc`.
    pub order: Option<String>,
    /// Page size (1..=100, default 50).
    pub per_page: Option<u32>,
}

impl ListServersRequest {
    /// Filters on a name (substring).
    pub fn name(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::default()
        }
    }
}

/// `POST /servers/{id}/private_nics` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CreatePrivateNicRequest {
    /// Private network.
    pub private_network_id: PrivateNetworkId,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Pre-reserved IPAM IPs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipam_ip_ids: Vec<IpId>,
}

impl CreatePrivateNicRequest {
    /// A NIC on `private_network_id`.
    pub fn new(private_network_id: impl Into<PrivateNetworkId>) -> Self {
        Self {
            private_network_id: private_network_id.into(),
            ..Self::default()
        }
    }
}

/// Outcome of [`InstanceApi::ensure_powered_on`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PowerOnStep {
    /// Already running or starting: nothing sent.
    AlreadyOn(ServerState),
    /// A `poweron` was accepted.
    PoweringOn,
    /// Stopping or locked: call again later.
    Busy(ServerState),
}

/// Outcome of [`InstanceApi::delete_server_step`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeleteStep {
    /// The server does not exist (any more): done.
    Gone,
    /// It was stopped and is now deleted: done.
    Deleted,
    /// A `poweroff` was accepted: call again later.
    PoweringOff,
    /// It is in transition: call again later.
    Waiting(ServerState),
}

impl DeleteStep {
    /// Whether the server is gone.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Gone | Self::Deleted)
    }
}

#[derive(Deserialize)]
struct ServerEnvelope {
    server: Server,
}
#[derive(Deserialize)]
struct ServersEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    servers: Vec<Server>,
}
#[derive(Deserialize)]
struct TaskEnvelope {
    task: Task,
}
#[derive(Deserialize)]
struct NicEnvelope {
    private_nic: PrivateNic,
}
#[derive(Deserialize)]
struct NicsEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    private_nics: Vec<PrivateNic>,
    #[serde(default)]
    total_count: Option<u64>,
}
#[derive(Deserialize)]
struct UserDataEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    user_data: Vec<String>,
}

/// Instance API v1 (`/instance/v1/zones/{zone}`). Get it with [`Client::instance`].
#[derive(Clone, Copy, Debug)]
pub struct InstanceApi<'a> {
    client: &'a Client,
}

fn zpath(zone: &Zone, rest: &[&str]) -> String {
    let mut segs = vec!["instance", "v1", "zones", zone.as_str()];
    segs.extend_from_slice(rest);
    path(&segs)
}

impl Client {
    /// The Instance API.
    pub fn instance(&self) -> InstanceApi<'_> {
        InstanceApi { client: self }
    }
}

impl<'a> InstanceApi<'a> {
    /// Creates a server (stopped). **Not retried** on 5xx or lost responses:
    /// use [`InstanceApi::find_server_by_name`] before creating again.
    pub async fn create_server(
        &self,
        zone: &Zone,
        req: &CreateServerRequest,
    ) -> Result<Server, Error> {
        let r = ApiRequest::post(zpath(zone, &["servers"])).json(req)?;
        Ok(self.client.execute_json::<ServerEnvelope>(&r).await?.server)
    }

    /// Gets a server.
    pub async fn get_server(&self, zone: &Zone, id: &ServerId) -> Result<Server, Error> {
        let r = ApiRequest::get(zpath(zone, &["servers", id.as_str()]));
        Ok(self.client.execute_json::<ServerEnvelope>(&r).await?.server)
    }

    /// Lists one page of servers (1-based). The total comes from `X-Total-Count`.
    pub async fn list_servers_page(
        &self,
        zone: &Zone,
        filter: &ListServersRequest,
        page: u32,
    ) -> Result<Page<Server>, Error> {
        if let Some(pp) = filter.per_page
            && !(1..=100).contains(&pp)
        {
            return Err(Error::InvalidInput {
                message: format!("per_page {pp} not in 1..=100"),
            });
        }
        let r = ApiRequest::get(zpath(zone, &["servers"]))
            .query("page", page)
            .query_opt("per_page", filter.per_page)
            .query_opt("name", filter.name.as_deref())
            .query_comma("tags", &filter.tags)
            .query_opt(
                "state",
                filter.state.as_ref().map(|s| s.as_str().to_owned()),
            )
            .query_opt("private_network", filter.private_network.as_ref())
            .query_opt("commercial_type", filter.commercial_type.as_ref())
            .query_opt("project", filter.project.as_ref())
            .query_opt("organization", filter.organization.as_ref())
            .query_opt("order", filter.order.as_deref());
        let resp = self.client.execute(&r).await?;
        let body: ServersEnvelope = resp.json()?;
        Ok(Page {
            items: body.servers,
            total_count: resp.total_count_header(),
        })
    }

    /// Streams all pages of servers.
    pub fn list_servers(&self, zone: &Zone, filter: &ListServersRequest) -> Paginator<'a, Server> {
        let client = self.client.clone();
        let zone = zone.clone();
        let filter = filter.clone();
        Paginator::new(move |page| {
            let client = client.clone();
            let zone = zone.clone();
            let filter = filter.clone();
            Box::pin(async move {
                client
                    .instance()
                    .list_servers_page(&zone, &filter, page)
                    .await
            })
        })
    }

    /// Lists all servers matching `filter`.
    pub async fn list_all_servers(
        &self,
        zone: &Zone,
        filter: &ListServersRequest,
    ) -> Result<Vec<Server>, Error> {
        self.list_servers(zone, filter).collect_all().await
    }

    /// Updates a server.
    pub async fn update_server(
        &self,
        zone: &Zone,
        id: &ServerId,
        req: &UpdateServerRequest,
    ) -> Result<Server, Error> {
        let r = ApiRequest::patch(zpath(zone, &["servers", id.as_str()])).json(req)?;
        Ok(self.client.execute_json::<ServerEnvelope>(&r).await?.server)
    }

    /// Deletes a server; the API accepts it only while `stopped`.
    pub async fn delete_server(&self, zone: &Zone, id: &ServerId) -> Result<(), Error> {
        let r = ApiRequest::delete(zpath(zone, &["servers", id.as_str()]));
        self.client.execute(&r).await.map(drop)
    }

    /// Runs an action; the API refuses actions not in `allowed_actions` with a
    /// 400 [`Error::InvalidRequest`]. Not retried (not idempotent).
    pub async fn server_action(
        &self,
        zone: &Zone,
        id: &ServerId,
        action: ServerAction,
    ) -> Result<Task, Error> {
        #[derive(Serialize)]
        struct Body<'b> {
            action: &'b str,
        }
        let r = ApiRequest::post(zpath(zone, &["servers", id.as_str(), "action"])).json(&Body {
            action: action.as_str(),
        })?;
        Ok(self.client.execute_json::<TaskEnvelope>(&r).await?.task)
    }

    /// Lists the user data keys of a server.
    pub async fn list_user_data(&self, zone: &Zone, id: &ServerId) -> Result<Vec<String>, Error> {
        let r = ApiRequest::get(zpath(zone, &["servers", id.as_str(), "user_data"]));
        Ok(self
            .client
            .execute_json::<UserDataEnvelope>(&r)
            .await?
            .user_data)
    }

    /// Reads one user data value (raw bytes). An unknown key is a 404 with an
    /// empty body ([`Error::is_not_found`]).
    pub async fn get_user_data(
        &self,
        zone: &Zone,
        id: &ServerId,
        key: &str,
    ) -> Result<Bytes, Error> {
        let r = ApiRequest::get(zpath(zone, &["servers", id.as_str(), "user_data", key]));
        Ok(self.client.execute(&r).await?.body)
    }

    /// Sets one user data value (sent as `text/plain`), e.g. key `cloud-init`.
    pub async fn set_user_data(
        &self,
        zone: &Zone,
        id: &ServerId,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let r =
            ApiRequest::patch(zpath(zone, &["servers", id.as_str(), "user_data", key])).text(value);
        self.client.execute(&r).await.map(drop)
    }

    /// Deletes one user data value.
    pub async fn delete_user_data(
        &self,
        zone: &Zone,
        id: &ServerId,
        key: &str,
    ) -> Result<(), Error> {
        let r = ApiRequest::delete(zpath(zone, &["servers", id.as_str(), "user_data", key]));
        self.client.execute(&r).await.map(drop)
    }

    /// Attaches the server to a private network (201). The NIC carries no IP:
    /// see [`InstanceApi::private_network_ipv4`].
    pub async fn create_private_nic(
        &self,
        zone: &Zone,
        server: &ServerId,
        req: &CreatePrivateNicRequest,
    ) -> Result<PrivateNic, Error> {
        let r = ApiRequest::post(zpath(zone, &["servers", server.as_str(), "private_nics"]))
            .json(req)?;
        Ok(self
            .client
            .execute_json::<NicEnvelope>(&r)
            .await?
            .private_nic)
    }

    /// Lists the private NICs of a server (all pages).
    pub async fn list_private_nics(
        &self,
        zone: &Zone,
        server: &ServerId,
    ) -> Result<Vec<PrivateNic>, Error> {
        let client = self.client.clone();
        let zone = zone.clone();
        let server = server.clone();
        Paginator::new(move |page| {
            let client = client.clone();
            let r = ApiRequest::get(zpath(&zone, &["servers", server.as_str(), "private_nics"]))
                .query("page", page)
                .query("per_page", 100);
            Box::pin(async move {
                let resp = client.execute(&r).await?;
                let body: NicsEnvelope = resp.json()?;
                Ok(Page {
                    items: body.private_nics,
                    total_count: body.total_count.or(resp.total_count_header()),
                })
            })
        })
        .collect_all()
        .await
    }

    /// Gets a private NIC.
    pub async fn get_private_nic(
        &self,
        zone: &Zone,
        server: &ServerId,
        nic: &PrivateNicId,
    ) -> Result<PrivateNic, Error> {
        let r = ApiRequest::get(zpath(
            zone,
            &["servers", server.as_str(), "private_nics", nic.as_str()],
        ));
        Ok(self
            .client
            .execute_json::<NicEnvelope>(&r)
            .await?
            .private_nic)
    }

    /// Sets the tags of a private NIC (the API answers the NIC unwrapped).
    pub async fn update_private_nic(
        &self,
        zone: &Zone,
        server: &ServerId,
        nic: &PrivateNicId,
        tags: &[String],
    ) -> Result<PrivateNic, Error> {
        #[derive(Serialize)]
        struct Body<'b> {
            tags: &'b [String],
        }
        let r = ApiRequest::patch(zpath(
            zone,
            &["servers", server.as_str(), "private_nics", nic.as_str()],
        ))
        .json(&Body { tags })?;
        self.client.execute_json::<PrivateNic>(&r).await
    }

    /// Detaches a private NIC.
    pub async fn delete_private_nic(
        &self,
        zone: &Zone,
        server: &ServerId,
        nic: &PrivateNicId,
    ) -> Result<(), Error> {
        let r = ApiRequest::delete(zpath(
            zone,
            &["servers", server.as_str(), "private_nics", nic.as_str()],
        ));
        self.client.execute(&r).await.map(drop)
    }

    /// Deletes an Instance volume (e.g. a local volume left by `DELETE /servers`).
    pub async fn delete_volume(&self, zone: &Zone, id: &VolumeId) -> Result<(), Error> {
        let r = ApiRequest::delete(zpath(zone, &["volumes", id.as_str()]));
        self.client.execute(&r).await.map(drop)
    }

    // ----- helpers ---------------------------------------------------------

    /// Finds the server named exactly `name` (the API filter is a substring
    /// match). More than one exact match is [`Error::Ambiguous`].
    pub async fn find_server_by_name(
        &self,
        zone: &Zone,
        name: &str,
        project: Option<&ProjectId>,
    ) -> Result<Option<Server>, Error> {
        let filter = ListServersRequest {
            name: Some(name.to_owned()),
            project: project.cloned(),
            per_page: Some(100),
            ..ListServersRequest::default()
        };
        let mut exact: Vec<Server> = self
            .list_all_servers(zone, &filter)
            .await?
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        match exact.len() {
            0 => Ok(None),
            1 => Ok(exact.pop()),
            count => Err(Error::Ambiguous {
                kind: "instance_server",
                name: name.to_owned(),
                count,
            }),
        }
    }

    /// Returns the server's NIC on `pn`, creating it only when absent.
    pub async fn ensure_private_nic(
        &self,
        zone: &Zone,
        server: &ServerId,
        pn: &PrivateNetworkId,
    ) -> Result<PrivateNic, Error> {
        let nics = self.list_private_nics(zone, server).await?;
        if let Some(nic) = nics.into_iter().find(|n| &n.private_network_id == pn) {
            return Ok(nic);
        }
        self.create_private_nic(zone, server, &CreatePrivateNicRequest::new(pn.clone()))
            .await
    }

    /// Powers the server on unless it is running or starting.
    pub async fn ensure_powered_on(
        &self,
        zone: &Zone,
        id: &ServerId,
    ) -> Result<PowerOnStep, Error> {
        let server = self.get_server(zone, id).await?;
        match server.state {
            ServerState::Running | ServerState::Starting => {
                Ok(PowerOnStep::AlreadyOn(server.state))
            }
            _ if server.allowed_actions.contains(&ServerAction::Poweron) => {
                match self.server_action(zone, id, ServerAction::Poweron).await {
                    Ok(_) => Ok(PowerOnStep::PoweringOn),
                    // The state changed between the GET and the action.
                    Err(Error::InvalidRequest { .. } | Error::TransientState { .. }) => {
                        Ok(PowerOnStep::Busy(server.state))
                    }
                    Err(e) => Err(e),
                }
            }
            other => Ok(PowerOnStep::Busy(other)),
        }
    }

    /// One step of the delete state machine: gone → done; `stopped` → DELETE
    /// (404 also done); `running` / `stopped in place` → `poweroff`;
    /// transitions → wait. Never sends an action the state does not allow.
    pub async fn delete_server_step(
        &self,
        zone: &Zone,
        id: &ServerId,
    ) -> Result<DeleteStep, Error> {
        let server = match self.get_server(zone, id).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(DeleteStep::Gone),
            Err(e) => return Err(e),
        };
        match server.state {
            ServerState::Stopped => match self.delete_server(zone, id).await {
                Ok(()) => Ok(DeleteStep::Deleted),
                Err(e) if e.is_not_found() => Ok(DeleteStep::Gone),
                Err(
                    Error::InvalidRequest { .. }
                    | Error::PreconditionFailed { .. }
                    | Error::TransientState { .. },
                ) => Ok(DeleteStep::Waiting(server.state)),
                Err(e) => Err(e),
            },
            _ if server.allowed_actions.contains(&ServerAction::Poweroff) => {
                match self.server_action(zone, id, ServerAction::Poweroff).await {
                    Ok(_) => Ok(DeleteStep::PoweringOff),
                    Err(e) if e.is_not_found() => Ok(DeleteStep::Gone),
                    Err(Error::InvalidRequest { .. } | Error::TransientState { .. }) => {
                        Ok(DeleteStep::Waiting(server.state))
                    }
                    Err(e) => Err(e),
                }
            }
            other => Ok(DeleteStep::Waiting(other)),
        }
    }

    /// Runs [`InstanceApi::delete_server_step`] until the server is gone.
    pub async fn delete_server_and_wait(
        &self,
        zone: &Zone,
        id: &ServerId,
        opts: WaitOptions,
    ) -> Result<(), Error> {
        let client = self.client.clone();
        let zone = zone.clone();
        let id = id.clone();
        self.client
            .wait_until(&format!("deletion of server {id}"), opts, move || {
                let client = client.clone();
                let zone = zone.clone();
                let id = id.clone();
                Box::pin(async move {
                    let step = client.instance().delete_server_step(&zone, &id).await?;
                    Ok((step.is_done().then_some(()), format!("{step:?}")))
                })
            })
            .await
    }

    /// Waits until the server reaches a terminal state (running, stopped,
    /// stopped in place, locked). A 404 is returned as an error: callers
    /// waiting for deletion use [`InstanceApi::wait_for_server_gone`].
    pub async fn wait_for_server(
        &self,
        zone: &Zone,
        id: &ServerId,
        opts: WaitOptions,
    ) -> Result<Server, Error> {
        let client = self.client.clone();
        let zone = zone.clone();
        let id = id.clone();
        self.client
            .wait_until(&format!("server {id}"), opts, move || {
                let client = client.clone();
                let zone = zone.clone();
                let id = id.clone();
                Box::pin(async move {
                    let s = client.instance().get_server(&zone, &id).await?;
                    let seen = format!("{} ({})", s.state, s.state_detail);
                    Ok((s.state.is_terminal().then_some(s), seen))
                })
            })
            .await
    }

    /// Waits until `GET` answers 404.
    pub async fn wait_for_server_gone(
        &self,
        zone: &Zone,
        id: &ServerId,
        opts: WaitOptions,
    ) -> Result<(), Error> {
        let client = self.client.clone();
        let zone = zone.clone();
        let id = id.clone();
        self.client
            .wait_until(&format!("server {id} to disappear"), opts, move || {
                let client = client.clone();
                let zone = zone.clone();
                let id = id.clone();
                Box::pin(async move {
                    match client.instance().get_server(&zone, &id).await {
                        Ok(s) => Ok((None, s.state.to_string())),
                        Err(e) if e.is_not_found() => Ok((Some(()), "gone".into())),
                        Err(e) => Err(e),
                    }
                })
            })
            .await
    }

    /// Waits until the NIC is `available` or `syncing_error`.
    pub async fn wait_for_private_nic(
        &self,
        zone: &Zone,
        server: &ServerId,
        nic: &PrivateNicId,
        opts: WaitOptions,
    ) -> Result<PrivateNic, Error> {
        let client = self.client.clone();
        let (zone, server, nic) = (zone.clone(), server.clone(), nic.clone());
        self.client
            .wait_until(&format!("private NIC {nic}"), opts, move || {
                let client = client.clone();
                let (zone, server, nic) = (zone.clone(), server.clone(), nic.clone());
                Box::pin(async move {
                    let n = client
                        .instance()
                        .get_private_nic(&zone, &server, &nic)
                        .await?;
                    let seen = n.state.to_string();
                    Ok((n.state.is_terminal().then_some(n), seen))
                })
            })
            .await
    }

    /// The IPv4 (without prefix length) of `server` on private network `pn`,
    /// from IPAM: rows of `pn` in the zone's region whose resource is one of
    /// the server's NICs on `pn`, or whose MAC matches one (case-insensitive),
    /// or whose resource name is the server's name. `None` while IPAM has
    /// nothing yet.
    pub async fn private_network_ipv4(
        &self,
        zone: &Zone,
        server: &Server,
        pn: &PrivateNetworkId,
    ) -> Result<Option<std::net::Ipv4Addr>, Error> {
        let nics: Vec<&PrivateNic> = server
            .private_nics
            .iter()
            .filter(|n| &n.private_network_id == pn)
            .collect();
        let req = crate::ListIpsRequest {
            source: Some(crate::IpSource::PrivateNetwork(pn.clone())),
            is_ipv6: Some(false),
            ..crate::ListIpsRequest::default()
        };
        let ips = self
            .client
            .ipam()
            .list_all_ips(&zone.region(), &req)
            .await?;
        Ok(ips.iter().filter(|ip| !ip.is_ipv6).find_map(|ip| {
            let res = ip.resource.as_ref()?;
            let by_nic = nics.iter().any(|n| res.id == n.id.as_str());
            let by_mac = res
                .mac_address
                .as_ref()
                .is_some_and(|m| nics.iter().any(|n| n.mac_address == *m));
            let by_name =
                res.name.as_deref() == Some(server.name.as_str()) && !server.name.is_empty();
            if by_nic || by_mac || by_name {
                ip.ipv4()
            } else {
                None
            }
        }))
    }
}
