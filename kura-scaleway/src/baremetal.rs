//! Elastic Metal v1 (`/baremetal/v1/zones/{zone}`). Its errors are often
//! untyped (`{"message":"Server is not delivered"}`): see [`Error::Untyped`].

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Page, Paginator, WaitOptions};
use crate::de::nullable;
use crate::request::{ApiRequest, path};
use crate::{
    BaremetalServerId, BaremetalServerStatus, Error, InstallStatus, IpVersion, OfferId, OfferStock,
    OptionId, OptionStatus, OsId, PrivateNetworkAttachmentStatus, PrivateNetworkId, ProjectId,
    ServerPrivateNetworkId, Zone,
};

/// Private network capability of an option.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PrivateNetworkOptionInfo {
    /// Bandwidth.
    #[serde(default)]
    pub bandwidth_in_bps: Option<u64>,
}

/// An option of an offer, or the catalogue entry of an option.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OfferOption {
    /// Id.
    pub id: OptionId,
    /// Name, e.g. `Private Network`.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Enabled by default.
    #[serde(default)]
    pub enabled: bool,
    /// Can be enabled/disabled by the user.
    #[serde(default)]
    pub manageable: bool,
    /// Present on the private network option: identify it by this.
    #[serde(default)]
    pub private_network: Option<PrivateNetworkOptionInfo>,
}

/// An Elastic Metal offer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Offer {
    /// Id.
    pub id: OfferId,
    /// Name, e.g. `EM-B220E-NVME`.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Stock.
    #[serde(default)]
    pub stock: OfferStock,
    /// Orderable.
    #[serde(default)]
    pub enable: bool,
    /// Subscription period.
    #[serde(default)]
    pub subscription_period: Option<String>,
    /// Hourly price (as sent).
    #[serde(default)]
    pub price_per_hour: Option<serde_json::Value>,
    /// Monthly price (as sent).
    #[serde(default)]
    pub price_per_month: Option<serde_json::Value>,
    /// Public bandwidth in bit/s.
    #[serde(default)]
    pub bandwidth: Option<u64>,
    /// Private bandwidth in bit/s.
    #[serde(default)]
    pub private_bandwidth: Option<u64>,
    /// CPUs (as sent).
    #[serde(default, deserialize_with = "nullable")]
    pub cpus: Vec<serde_json::Value>,
    /// Memory modules (as sent).
    #[serde(default, deserialize_with = "nullable")]
    pub memories: Vec<serde_json::Value>,
    /// Disks (as sent).
    #[serde(default, deserialize_with = "nullable")]
    pub disks: Vec<serde_json::Value>,
    /// Options.
    #[serde(default, deserialize_with = "nullable")]
    pub options: Vec<OfferOption>,
    /// Zone.
    #[serde(default)]
    pub zone: Option<Zone>,
}

/// An operating system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Os {
    /// Id.
    pub id: OsId,
    /// Name, e.g. `Ubuntu`.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Version, e.g. `24.04 LTS (Noble Numbat)`.
    #[serde(default, deserialize_with = "nullable")]
    pub version: String,
    /// Available.
    #[serde(default)]
    pub enabled: bool,
    /// Whether user data (cloud-init) is supported.
    #[serde(default)]
    pub cloud_init_supported: bool,
}

impl Os {
    /// Whether this OS matches a label such as `ubuntu_noble`: the first part
    /// is the name, the rest must appear in the version (case-insensitive).
    pub fn matches_label(&self, label: &str) -> bool {
        let mut parts = label.split('_');
        let Some(name) = parts.next() else {
            return false;
        };
        let version = self.version.to_ascii_lowercase();
        self.name.eq_ignore_ascii_case(name)
            && parts.all(|p| version.contains(&p.to_ascii_lowercase()))
    }
}

/// A public IP of an Elastic Metal server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BaremetalIp {
    /// Id.
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    /// Address.
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
    /// Version.
    #[serde(default)]
    pub version: IpVersion,
}

/// Installation of an Elastic Metal server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Install {
    /// OS.
    #[serde(default)]
    pub os_id: OsId,
    /// Hostname.
    #[serde(default, deserialize_with = "nullable")]
    pub hostname: String,
    /// SSH keys.
    #[serde(default, deserialize_with = "nullable")]
    pub ssh_key_ids: Vec<String>,
    /// Status.
    #[serde(default)]
    pub status: InstallStatus,
}

/// An option enabled on a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerOption {
    /// Option id.
    pub id: OptionId,
    /// Name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Status.
    #[serde(default)]
    pub status: OptionStatus,
    /// Manageable.
    #[serde(default)]
    pub manageable: bool,
    /// Present on the private network option.
    #[serde(default)]
    pub private_network: Option<PrivateNetworkOptionInfo>,
}

/// An Elastic Metal server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BaremetalServer {
    /// Id.
    pub id: BaremetalServerId,
    /// Name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Status.
    #[serde(default)]
    pub status: BaremetalServerStatus,
    /// Offer.
    #[serde(default)]
    pub offer_id: OfferId,
    /// Offer name.
    #[serde(default, deserialize_with = "nullable")]
    pub offer_name: String,
    /// Project.
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// Zone.
    #[serde(default)]
    pub zone: Option<Zone>,
    /// Public IPs (present once delivered).
    #[serde(default, deserialize_with = "nullable")]
    pub ips: Vec<BaremetalIp>,
    /// Boot type.
    #[serde(default)]
    pub boot_type: Option<String>,
    /// Ping status.
    #[serde(default)]
    pub ping_status: Option<String>,
    /// Installation, when one was requested.
    #[serde(default)]
    pub install: Option<Install>,
    /// Options.
    #[serde(default, deserialize_with = "nullable")]
    pub options: Vec<ServerOption>,
}

impl BaremetalServer {
    /// The first public IPv4.
    pub fn public_ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.ips
            .iter()
            .filter(|i| i.version == IpVersion::IPv4)
            .find_map(|i| i.address.parse().ok())
    }
}

/// The attachment of an Elastic Metal server to a private network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerPrivateNetwork {
    /// Id (IPAM's `resource.id`).
    pub id: ServerPrivateNetworkId,
    /// Project.
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    /// Server.
    #[serde(default)]
    pub server_id: BaremetalServerId,
    /// Private network.
    #[serde(default)]
    pub private_network_id: PrivateNetworkId,
    /// VLAN to configure on the host (assigned immediately).
    #[serde(default)]
    pub vlan: Option<u32>,
    /// Status.
    #[serde(default)]
    pub status: PrivateNetworkAttachmentStatus,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Update time.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// The `install` part of an order, or the body of an install.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InstallRequest {
    /// OS.
    pub os_id: OsId,
    /// Hostname.
    pub hostname: String,
    /// SSH keys.
    pub ssh_key_ids: Vec<String>,
}

impl InstallRequest {
    /// Installs `os_id` as `hostname` with `ssh_key_ids`.
    pub fn new(
        os_id: impl Into<OsId>,
        hostname: impl Into<String>,
        ssh_key_ids: Vec<String>,
    ) -> Self {
        Self {
            os_id: os_id.into(),
            hostname: hostname.into(),
            ssh_key_ids,
        }
    }
}

/// `POST /servers` (order) body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CreateBaremetalServerRequest {
    /// Offer.
    pub offer_id: OfferId,
    /// Project.
    pub project_id: ProjectId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Install right after delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallRequest>,
    /// Options to enable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub option_ids: Vec<OptionId>,
    /// Protection.
    pub protected: bool,
    /// Cloud-init user data, base64-encoded (503 on offers without cloud-init).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

impl CreateBaremetalServerRequest {
    /// Orders `offer_id` named `name` in `project_id`.
    pub fn new(
        offer_id: impl Into<OfferId>,
        project_id: impl Into<ProjectId>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            offer_id: offer_id.into(),
            project_id: project_id.into(),
            name: name.into(),
            ..Self::default()
        }
    }
    /// Sets the user data (encoded to base64 here).
    pub fn user_data(mut self, data: &[u8]) -> Self {
        self.user_data = Some(base64::engine::general_purpose::STANDARD.encode(data));
        self
    }
}

#[derive(Deserialize)]
struct OffersEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    offers: Vec<Offer>,
    #[serde(default)]
    total_count: Option<u64>,
}
#[derive(Deserialize)]
struct OptionsEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    options: Vec<OfferOption>,
    #[serde(default)]
    total_count: Option<u64>,
}
#[derive(Deserialize)]
struct OsEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    os: Vec<Os>,
    #[serde(default)]
    total_count: Option<u64>,
}
#[derive(Deserialize)]
struct ServersEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    servers: Vec<BaremetalServer>,
    #[serde(default)]
    total_count: Option<u64>,
}
#[derive(Deserialize)]
struct SpnsEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    server_private_networks: Vec<ServerPrivateNetwork>,
    #[serde(default)]
    total_count: Option<u64>,
}

/// Elastic Metal API v1. Get it with [`Client::baremetal`].
#[derive(Clone, Copy, Debug)]
pub struct BaremetalApi<'a> {
    client: &'a Client,
}

impl Client {
    /// The Elastic Metal API.
    pub fn baremetal(&self) -> BaremetalApi<'_> {
        BaremetalApi { client: self }
    }
}

fn zpath(zone: &Zone, rest: &[&str]) -> String {
    let mut segs = vec!["baremetal", "v1", "zones", zone.as_str()];
    segs.extend_from_slice(rest);
    path(&segs)
}

async fn all<T: Send + 'static, E: for<'de> Deserialize<'de> + Send>(
    client: &Client,
    base: ApiRequest,
    split: fn(E) -> Page<T>,
) -> Result<Vec<T>, Error> {
    let client = client.clone();
    Paginator::new(move |page| {
        let client = client.clone();
        let r = base.clone().query("page", page).query("page_size", 100);
        Box::pin(async move { Ok(split(client.execute_json::<E>(&r).await?)) })
    })
    .collect_all()
    .await
}

impl BaremetalApi<'_> {
    /// All offers in `zone` (optionally filtered by name, a substring match).
    pub async fn list_offers(&self, zone: &Zone, name: Option<&str>) -> Result<Vec<Offer>, Error> {
        let base = ApiRequest::get(zpath(zone, &["offers"])).query_opt("name", name);
        all(self.client, base, |e: OffersEnvelope| Page {
            items: e.offers,
            total_count: e.total_count,
        })
        .await
    }

    /// The offer named exactly `name`.
    pub async fn find_offer_by_name(
        &self,
        zone: &Zone,
        name: &str,
    ) -> Result<Option<Offer>, Error> {
        Ok(self
            .list_offers(zone, Some(name))
            .await?
            .into_iter()
            .find(|o| o.name == name))
    }

    /// All options (optionally those of an offer).
    pub async fn list_options(
        &self,
        zone: &Zone,
        offer_id: Option<&OfferId>,
    ) -> Result<Vec<OfferOption>, Error> {
        let base = ApiRequest::get(zpath(zone, &["options"])).query_opt("offer_id", offer_id);
        all(self.client, base, |e: OptionsEnvelope| Page {
            items: e.options,
            total_count: e.total_count,
        })
        .await
    }

    /// All operating systems (optionally those of an offer).
    pub async fn list_os(&self, zone: &Zone, offer_id: Option<&OfferId>) -> Result<Vec<Os>, Error> {
        let base = ApiRequest::get(zpath(zone, &["os"])).query_opt("offer_id", offer_id);
        all(self.client, base, |e: OsEnvelope| Page {
            items: e.os,
            total_count: e.total_count,
        })
        .await
    }

    /// The enabled OS matching `label` (see [`Os::matches_label`]).
    pub async fn find_os(
        &self,
        zone: &Zone,
        offer_id: Option<&OfferId>,
        label: &str,
    ) -> Result<Option<Os>, Error> {
        Ok(self
            .list_os(zone, offer_id)
            .await?
            .into_iter()
            .find(|o| o.enabled && o.matches_label(label)))
    }

    /// Orders a server (200). Not retried: use [`BaremetalApi::find_server_by_name`] first.
    pub async fn create_server(
        &self,
        zone: &Zone,
        req: &CreateBaremetalServerRequest,
    ) -> Result<BaremetalServer, Error> {
        let r = ApiRequest::post(zpath(zone, &["servers"])).json(req)?;
        self.client.execute_json(&r).await
    }

    /// Gets a server (untyped 404 `{"message":"Not Found"}` when gone).
    pub async fn get_server(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
    ) -> Result<BaremetalServer, Error> {
        let r = ApiRequest::get(zpath(zone, &["servers", id.as_str()]));
        self.client.execute_json(&r).await
    }

    /// All servers (optionally filtered by name, a substring match).
    pub async fn list_servers(
        &self,
        zone: &Zone,
        name: Option<&str>,
    ) -> Result<Vec<BaremetalServer>, Error> {
        let base = ApiRequest::get(zpath(zone, &["servers"])).query_opt("name", name);
        all(self.client, base, |e: ServersEnvelope| Page {
            items: e.servers,
            total_count: e.total_count,
        })
        .await
    }

    /// The server named exactly `name` ([`Error::Ambiguous`] when several).
    pub async fn find_server_by_name(
        &self,
        zone: &Zone,
        name: &str,
    ) -> Result<Option<BaremetalServer>, Error> {
        let mut exact: Vec<_> = self
            .list_servers(zone, Some(name))
            .await?
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        match exact.len() {
            0 => Ok(None),
            1 => Ok(exact.pop()),
            count => Err(Error::Ambiguous {
                kind: "baremetal_server",
                name: name.to_owned(),
                count,
            }),
        }
    }

    /// Installs (or reinstalls, wiping the disk) an OS.
    pub async fn install_server(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        req: &InstallRequest,
    ) -> Result<BaremetalServer, Error> {
        let r = ApiRequest::post(zpath(zone, &["servers", id.as_str(), "install"])).json(req)?;
        self.client.execute_json(&r).await
    }

    async fn power(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        verb: &str,
    ) -> Result<BaremetalServer, Error> {
        let r = ApiRequest::post(zpath(zone, &["servers", id.as_str(), verb]))
            .json(&serde_json::json!({}))?;
        self.client.execute_json(&r).await
    }

    /// Starts a server.
    pub async fn start_server(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
    ) -> Result<BaremetalServer, Error> {
        self.power(zone, id, "start").await
    }
    /// Stops a server.
    pub async fn stop_server(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
    ) -> Result<BaremetalServer, Error> {
        self.power(zone, id, "stop").await
    }
    /// Reboots a server.
    pub async fn reboot_server(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
    ) -> Result<BaremetalServer, Error> {
        self.power(zone, id, "reboot").await
    }

    /// Deletes a server (200 with status `deleting`, then 404). Detach private networks first.
    pub async fn delete_server(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
    ) -> Result<BaremetalServer, Error> {
        let r = ApiRequest::delete(zpath(zone, &["servers", id.as_str()]));
        self.client.execute_json(&r).await
    }

    /// Enables an option on a server.
    pub async fn add_option(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        option: &OptionId,
    ) -> Result<BaremetalServer, Error> {
        let r = ApiRequest::post(zpath(
            zone,
            &["servers", id.as_str(), "options", option.as_str()],
        ))
        .json(&serde_json::json!({}))?;
        self.client.execute_json(&r).await
    }

    /// Disables an option on a server.
    pub async fn delete_option(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        option: &OptionId,
    ) -> Result<BaremetalServer, Error> {
        let r = ApiRequest::delete(zpath(
            zone,
            &["servers", id.as_str(), "options", option.as_str()],
        ));
        self.client.execute_json(&r).await
    }

    /// Attaches a private network; the answer carries the VLAN.
    pub async fn attach_private_network(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        pn: &PrivateNetworkId,
    ) -> Result<ServerPrivateNetwork, Error> {
        let r = ApiRequest::post(zpath(zone, &["servers", id.as_str(), "private-networks"]))
            .json(&serde_json::json!({ "private_network_id": pn }))?;
        self.client.execute_json(&r).await
    }

    /// Replaces the set of attached private networks.
    pub async fn set_private_networks(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        pns: &[PrivateNetworkId],
    ) -> Result<Vec<ServerPrivateNetwork>, Error> {
        let r = ApiRequest::put(zpath(zone, &["servers", id.as_str(), "private-networks"]))
            .json(&serde_json::json!({ "private_network_ids": pns }))?;
        Ok(self
            .client
            .execute_json::<SpnsEnvelope>(&r)
            .await?
            .server_private_networks)
    }

    /// Lists attachments, by server and/or private network.
    pub async fn list_server_private_networks(
        &self,
        zone: &Zone,
        server: Option<&BaremetalServerId>,
        pn: Option<&PrivateNetworkId>,
    ) -> Result<Vec<ServerPrivateNetwork>, Error> {
        let base = ApiRequest::get(zpath(zone, &["server-private-networks"]))
            .query_opt("server_id", server)
            .query_opt("private_network_id", pn);
        all(self.client, base, |e: SpnsEnvelope| Page {
            items: e.server_private_networks,
            total_count: e.total_count,
        })
        .await
    }

    /// Detaches a private network.
    pub async fn detach_private_network(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        pn: &PrivateNetworkId,
    ) -> Result<(), Error> {
        let r = ApiRequest::delete(zpath(
            zone,
            &["servers", id.as_str(), "private-networks", pn.as_str()],
        ));
        self.client.execute(&r).await.map(drop)
    }

    /// Makes sure the Private Network option is on the server: returns its
    /// status (enable it, then wait for `option_status_enable`). The option is
    /// identified by its `private_network` field in the offer's catalogue.
    pub async fn ensure_pn_option(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
    ) -> Result<OptionStatus, Error> {
        let server = self.get_server(zone, id).await?;
        let options = self.list_options(zone, Some(&server.offer_id)).await?;
        let pn_option = options
            .iter()
            .find(|o| o.private_network.is_some())
            .ok_or_else(|| Error::UnexpectedResponse {
                message: format!("offer {} has no private network option", server.offer_name),
            })?;
        if let Some(o) = server.options.iter().find(|o| o.id == pn_option.id) {
            return Ok(o.status.clone());
        }
        let updated = self.add_option(zone, id, &pn_option.id).await?;
        Ok(updated
            .options
            .iter()
            .find(|o| o.id == pn_option.id)
            .map(|o| o.status.clone())
            .unwrap_or(OptionStatus::Enabling))
    }

    /// Attaches `pn` unless already attached and returns the attachment,
    /// whose VLAN is never 0 ([`Error::UnexpectedResponse`] otherwise).
    pub async fn ensure_pn_attached(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        pn: &PrivateNetworkId,
    ) -> Result<ServerPrivateNetwork, Error> {
        let existing = self
            .list_server_private_networks(zone, Some(id), Some(pn))
            .await?;
        let spn = match existing
            .into_iter()
            .find(|s| &s.private_network_id == pn && &s.server_id == id)
        {
            Some(s) => s,
            None => self.attach_private_network(zone, id, pn).await?,
        };
        match spn.vlan {
            Some(v) if v != 0 => Ok(spn),
            _ => Err(Error::UnexpectedResponse {
                message: format!("private network attachment {} has no VLAN", spn.id),
            }),
        }
    }

    /// Waits until the server leaves transitional statuses.
    pub async fn wait_for_server(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        opts: WaitOptions,
    ) -> Result<BaremetalServer, Error> {
        self.wait_server_with(zone, id, opts, "Elastic Metal server", |s| {
            (s.status.is_terminal(), s.status.to_string())
        })
        .await
    }

    /// Waits until the installation is completed, failed or unknown.
    pub async fn wait_for_install(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        opts: WaitOptions,
    ) -> Result<BaremetalServer, Error> {
        self.wait_server_with(zone, id, opts, "Elastic Metal install", |s| {
            match &s.install {
                Some(i) => (i.status.is_terminal(), i.status.to_string()),
                None => (true, "no install".into()),
            }
        })
        .await
    }

    /// Waits until every option is enabled, failed or unknown.
    pub async fn wait_for_options(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        opts: WaitOptions,
    ) -> Result<BaremetalServer, Error> {
        self.wait_server_with(zone, id, opts, "Elastic Metal options", |s| {
            let done = s.options.iter().all(|o| o.status.is_terminal());
            (
                done,
                s.options
                    .iter()
                    .map(|o| format!("{}={}", o.name, o.status))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .await
    }

    /// Waits until every private network attachment of the server is settled.
    pub async fn wait_for_private_networks(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        opts: WaitOptions,
    ) -> Result<Vec<ServerPrivateNetwork>, Error> {
        let client = self.client.clone();
        let (zone, id) = (zone.clone(), id.clone());
        self.client
            .wait_until(&format!("private networks of {id}"), opts, move || {
                let client = client.clone();
                let (zone, id) = (zone.clone(), id.clone());
                Box::pin(async move {
                    let spns = client
                        .baremetal()
                        .list_server_private_networks(&zone, Some(&id), None)
                        .await?;
                    let done = spns.iter().all(|s| s.status.is_terminal());
                    let seen = spns
                        .iter()
                        .map(|s| s.status.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    Ok((done.then_some(spns), seen))
                })
            })
            .await
    }

    async fn wait_server_with(
        &self,
        zone: &Zone,
        id: &BaremetalServerId,
        opts: WaitOptions,
        what: &str,
        check: fn(&BaremetalServer) -> (bool, String),
    ) -> Result<BaremetalServer, Error> {
        let client = self.client.clone();
        let (zone, id) = (zone.clone(), id.clone());
        self.client
            .wait_until(&format!("{what} {id}"), opts, move || {
                let client = client.clone();
                let (zone, id) = (zone.clone(), id.clone());
                Box::pin(async move {
                    let s = client.baremetal().get_server(&zone, &id).await?;
                    let (done, seen) = check(&s);
                    Ok((done.then_some(s), seen))
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_label_matching() {
        let os = Os {
            name: "Ubuntu".into(),
            version: "24.04 LTS (Noble Numbat)".into(),
            ..Os::default()
        };
        assert!(os.matches_label("ubuntu_noble"));
        assert!(!os.matches_label("ubuntu_jammy"));
        assert!(!os.matches_label("debian_noble"));
    }

    #[test]
    fn decodes_server_with_unknown_status_and_fields() {
        let s: BaremetalServer = serde_json::from_str(
            r#"{"id":"x","name":"n","status":"hibernating","offer_id":"o","ips":null,"install":null,"options":[{"id":"p","name":"Private Network","status":"option_status_enable","private_network":{"bandwidth_in_bps":1000}}],"new_field":true}"#,
        )
        .unwrap();
        assert_eq!(
            s.status,
            BaremetalServerStatus::Unknown("hibernating".into())
        );
        assert_eq!(s.options[0].status, OptionStatus::Enable);
    }
}
