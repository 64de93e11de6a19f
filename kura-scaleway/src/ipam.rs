//! IPAM v1 `ListIPs` (regional).

use serde::{Deserialize, Serialize};

use crate::client::{Client, Page, Paginator};
use crate::de::nullable;
use crate::request::{ApiRequest, path};
use crate::{
    Error, IpId, MacAddress, PrivateNetworkId, ProjectId, Region, ResourceType, SubnetId, VpcId,
    Zone,
};

/// The source filter of `ListIPs`. The API accepts **at most one**; the type
/// makes sending two impossible (production bug: `zonal` + `private_network_id`
/// was rejected).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpSource {
    /// IPs of a zone (public, zonal).
    Zonal(Zone),
    /// Regional IPs.
    Regional,
    /// IPs of a private network.
    PrivateNetwork(PrivateNetworkId),
    /// IPs of a subnet.
    Subnet(SubnetId),
    /// IPs of any private network of a VPC.
    Vpc(VpcId),
}

/// Filters of `GET /ipam/v1/regions/{region}/ips`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListIpsRequest {
    /// The one source filter.
    pub source: Option<IpSource>,
    /// IPv4 only (`Some(false)`), IPv6 only (`Some(true)`), or both.
    pub is_ipv6: Option<bool>,
    /// Project.
    pub project_id: Option<ProjectId>,
    /// VPC (of the IP, not a source filter).
    pub vpc_id: Option<VpcId>,
    /// Attached to a resource or not.
    pub attached: Option<bool>,
    /// Resource name (substring).
    pub resource_name: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// Resource ids.
    pub resource_ids: Vec<String>,
    /// Resource type (`UnknownType` = no filter).
    pub resource_type: Option<ResourceType>,
    /// Resource types.
    pub resource_types: Vec<ResourceType>,
    /// MAC address (matched case-insensitively by the API).
    pub mac_address: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// IP ids.
    pub ip_ids: Vec<IpId>,
    /// Order, e.g. `created_at_desc`.
    pub order_by: Option<String>,
    /// Page size (default 100).
    pub page_size: Option<u32>,
}

/// Where an IP comes from. Exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IpSourceInfo {
    /// Zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zonal: Option<String>,
    /// Private network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_network_id: Option<PrivateNetworkId>,
    /// Subnet (what private IPs report, even when filtered by private network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<SubnetId>,
    /// Regional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regional: Option<bool>,
    /// VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<VpcId>,
}

/// The resource an IP is attached to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IpResource {
    /// Type, e.g. `instance_private_nic`.
    #[serde(rename = "type", default)]
    pub resource_type: ResourceType,
    /// Id: for an Instance NIC the **NIC id**, for Elastic Metal the server
    /// private network id.
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    /// MAC address (**upper case** in IPAM).
    #[serde(default)]
    pub mac_address: Option<MacAddress>,
    /// Name: the server's name.
    #[serde(default)]
    pub name: Option<String>,
}

/// One IPAM IP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Ip {
    /// Id.
    pub id: IpId,
    /// Address **with the subnet's prefix length**, e.g. `172.16.64.7/22`.
    #[serde(default, deserialize_with = "nullable")]
    pub address: String,
    /// Project.
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    /// IPv6.
    #[serde(default)]
    pub is_ipv6: bool,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Update time.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Source.
    #[serde(default)]
    pub source: Option<IpSourceInfo>,
    /// Attached resource.
    #[serde(default)]
    pub resource: Option<IpResource>,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// Region.
    #[serde(default)]
    pub region: Option<Region>,
    /// Zone (null for private IPs).
    #[serde(default)]
    pub zone: Option<Zone>,
}

impl Ip {
    /// The address without prefix length.
    pub fn ip_addr(&self) -> Option<std::net::IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }
    /// The IPv4 address, when this is one.
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        match self.ip_addr()? {
            std::net::IpAddr::V4(v4) if !self.is_ipv6 => Some(v4),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct IpsEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    ips: Vec<Ip>,
    #[serde(default)]
    total_count: Option<u64>,
}

/// IPAM API v1. Get it with [`Client::ipam`].
#[derive(Clone, Copy, Debug)]
pub struct IpamApi<'a> {
    client: &'a Client,
}

impl Client {
    /// The IPAM API.
    pub fn ipam(&self) -> IpamApi<'_> {
        IpamApi { client: self }
    }
}

/// Builds the `ListIPs` request (pure). The region is part of the path, so it
/// can never be forgotten.
pub fn list_ips_request(region: &Region, req: &ListIpsRequest, page: u32) -> ApiRequest {
    let mut r = ApiRequest::get(path(&["ipam", "v1", "regions", region.as_str(), "ips"]))
        .query("page", page)
        .query("page_size", req.page_size.unwrap_or(100));
    r = match &req.source {
        Some(IpSource::Zonal(z)) => r.query("zonal", z),
        Some(IpSource::Regional) => r.query("regional", true),
        Some(IpSource::PrivateNetwork(p)) => r.query("private_network_id", p),
        Some(IpSource::Subnet(s)) => r.query("subnet_id", s),
        Some(IpSource::Vpc(v)) => r.query("source_vpc_id", v),
        None => r,
    };
    r.query_opt("is_ipv6", req.is_ipv6)
        .query_opt("project_id", req.project_id.as_ref())
        .query_opt("vpc_id", req.vpc_id.as_ref())
        .query_opt("attached", req.attached)
        .query_opt("resource_name", req.resource_name.as_deref())
        .query_opt("resource_id", req.resource_id.as_deref())
        .query_repeat("resource_ids", &req.resource_ids)
        .query_opt(
            "resource_type",
            req.resource_type.as_ref().map(|t| t.as_str().to_owned()),
        )
        .query_repeat(
            "resource_types",
            req.resource_types.iter().map(|t| t.as_str().to_owned()),
        )
        .query_opt("mac_address", req.mac_address.as_deref())
        .query_repeat("tags", &req.tags)
        .query_repeat("ip_ids", &req.ip_ids)
        .query_opt("order_by", req.order_by.as_deref())
}

impl<'a> IpamApi<'a> {
    /// One page of IPs.
    pub async fn list_ips_page(
        &self,
        region: &Region,
        req: &ListIpsRequest,
        page: u32,
    ) -> Result<Page<Ip>, Error> {
        let body: IpsEnvelope = self
            .client
            .execute_json(&list_ips_request(region, req, page))
            .await?;
        Ok(Page {
            items: body.ips,
            total_count: body.total_count,
        })
    }

    /// Streams all pages of IPs.
    pub fn list_ips(&self, region: &Region, req: &ListIpsRequest) -> Paginator<'a, Ip> {
        let client = self.client.clone();
        let (region, req) = (region.clone(), req.clone());
        Paginator::new(move |page| {
            let client = client.clone();
            let (region, req) = (region.clone(), req.clone());
            Box::pin(async move { client.ipam().list_ips_page(&region, &req, page).await })
        })
    }

    /// All IPs matching `req`.
    pub async fn list_all_ips(
        &self,
        region: &Region,
        req: &ListIpsRequest,
    ) -> Result<Vec<Ip>, Error> {
        self.list_ips(region, req).collect_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_recorded_nic_ip_with_unknown_fields() {
        let body = r#"{"total_count":2,"ips":[
          {"id":"a","address":"172.16.64.7/22","project_id":"p","is_ipv6":false,"created_at":"2024-01-01T00:00:00Z",
           "source":{"subnet_id":"s"},"resource":{"type":"instance_private_nic","id":"nic","mac_address":"02:00:00:1B:A4:B6","name":"srv","new":1},
           "tags":[],"reverses":[],"region":"fr-par","zone":null,"brand_new_field":{"x":1}},
          {"id":"b","address":"fd5f:519c:6d46:2728::2/64","is_ipv6":true,"source":{"subnet_id":"s6"},"resource":{"type":"future_type","id":"nic"},"tags":null,"region":"fr-par","zone":null}]}"#;
        let env: IpsEnvelope = serde_json::from_str(body).unwrap();
        assert_eq!(env.ips[0].ipv4(), Some("172.16.64.7".parse().unwrap()));
        assert!(
            env.ips[0]
                .resource
                .as_ref()
                .unwrap()
                .mac_address
                .as_ref()
                .unwrap()
                .matches("02:00:00:1b:a4:b6")
        );
        assert_eq!(env.ips[1].ipv4(), None);
        assert_eq!(
            env.ips[1].resource.as_ref().unwrap().resource_type,
            ResourceType::Unknown("future_type".into())
        );
    }

    #[test]
    fn request_carries_region_and_one_source() {
        let req = ListIpsRequest {
            source: Some(IpSource::PrivateNetwork("pn".into())),
            is_ipv6: Some(false),
            ..ListIpsRequest::default()
        };
        let r = list_ips_request(&Region::new("nl-ams").unwrap(), &req, 1);
        let pq = r.path_and_query();
        assert!(pq.starts_with("/ipam/v1/regions/nl-ams/ips?"), "{pq}");
        assert!(pq.contains("private_network_id=pn") && pq.contains("is_ipv6=false"));
        assert!(!pq.contains("zonal") && !pq.contains("subnet_id"));
    }
}
