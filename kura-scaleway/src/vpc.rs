//! VPC v2 private networks (regional).

use serde::{Deserialize, Serialize};

use crate::client::{Client, Page, Paginator};
use crate::de::nullable;
use crate::request::{ApiRequest, path};
use crate::{Error, OrganizationId, PrivateNetworkId, ProjectId, Region, SubnetId, VpcId};

/// A private network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PrivateNetwork {
    /// Id.
    pub id: PrivateNetworkId,
    /// Name (not unique).
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// Organization.
    #[serde(default)]
    pub organization_id: Option<OrganizationId>,
    /// Project.
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    /// Region.
    #[serde(default)]
    pub region: Option<Region>,
    /// Tags.
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Update time.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// VPC.
    #[serde(default)]
    pub vpc_id: Option<VpcId>,
    /// DHCP.
    #[serde(default)]
    pub dhcp_enabled: bool,
    /// Subnets (an IPv4 and usually an IPv6 ULA).
    #[serde(default, deserialize_with = "nullable")]
    pub subnets: Vec<Subnet>,
}

/// A subnet of a private network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Subnet {
    /// Id.
    #[serde(default)]
    pub id: SubnetId,
    /// CIDR, e.g. `172.16.4.0/22`.
    #[serde(default, deserialize_with = "nullable")]
    pub subnet: String,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `POST /private-networks` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CreatePrivateNetworkRequest {
    /// Name.
    pub name: String,
    /// Project.
    pub project_id: ProjectId,
    /// Tags.
    pub tags: Vec<String>,
    /// CIDRs, or `None` to let the API allocate a /22 and a /64.
    pub subnets: Option<Vec<String>>,
    /// VPC (default VPC of the region when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<VpcId>,
}

/// Filters of `GET /private-networks`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPrivateNetworksRequest {
    /// Name: **a "containing" match** on the API side.
    pub name: Option<String>,
    /// Project.
    pub project_id: Option<ProjectId>,
    /// VPC.
    pub vpc_id: Option<VpcId>,
    /// Tags.
    pub tags: Vec<String>,
    /// Order (default `created_at_asc`).
    pub order_by: Option<String>,
}

#[derive(Deserialize)]
struct PnsEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    private_networks: Vec<PrivateNetwork>,
    #[serde(default)]
    total_count: Option<u64>,
}

/// VPC API v2. Get it with [`Client::vpc`].
#[derive(Clone, Copy, Debug)]
pub struct VpcApi<'a> {
    client: &'a Client,
}

impl Client {
    /// The VPC API.
    pub fn vpc(&self) -> VpcApi<'_> {
        VpcApi { client: self }
    }
}

fn rpath(region: &Region, rest: &[&str]) -> String {
    let mut segs = vec!["vpc", "v2", "regions", region.as_str()];
    segs.extend_from_slice(rest);
    path(&segs)
}

impl<'a> VpcApi<'a> {
    /// One page of private networks.
    pub async fn list_private_networks_page(
        &self,
        region: &Region,
        req: &ListPrivateNetworksRequest,
        page: u32,
    ) -> Result<Page<PrivateNetwork>, Error> {
        let r = ApiRequest::get(rpath(region, &["private-networks"]))
            .query("page", page)
            .query("page_size", 100)
            .query(
                "order_by",
                req.order_by.as_deref().unwrap_or("created_at_asc"),
            )
            .query_opt("name", req.name.as_deref())
            .query_opt("project_id", req.project_id.as_ref())
            .query_opt("vpc_id", req.vpc_id.as_ref())
            .query_repeat("tags", &req.tags);
        let body: PnsEnvelope = self.client.execute_json(&r).await?;
        Ok(Page {
            items: body.private_networks,
            total_count: body.total_count,
        })
    }

    /// Streams all pages of private networks.
    pub fn list_private_networks(
        &self,
        region: &Region,
        req: &ListPrivateNetworksRequest,
    ) -> Paginator<'a, PrivateNetwork> {
        let client = self.client.clone();
        let (region, req) = (region.clone(), req.clone());
        Paginator::new(move |page| {
            let client = client.clone();
            let (region, req) = (region.clone(), req.clone());
            Box::pin(async move {
                client
                    .vpc()
                    .list_private_networks_page(&region, &req, page)
                    .await
            })
        })
    }

    /// Gets a private network.
    pub async fn get_private_network(
        &self,
        region: &Region,
        id: &PrivateNetworkId,
    ) -> Result<PrivateNetwork, Error> {
        let r = ApiRequest::get(rpath(region, &["private-networks", id.as_str()]));
        self.client.execute_json(&r).await
    }

    /// Creates a private network (200, unwrapped). Not retried: use
    /// [`VpcApi::ensure_private_network`].
    pub async fn create_private_network(
        &self,
        region: &Region,
        req: &CreatePrivateNetworkRequest,
    ) -> Result<PrivateNetwork, Error> {
        let r = ApiRequest::post(rpath(region, &["private-networks"])).json(req)?;
        self.client.execute_json(&r).await
    }

    /// Deletes a private network (412 `resource_still_in_use` while anything is attached).
    pub async fn delete_private_network(
        &self,
        region: &Region,
        id: &PrivateNetworkId,
    ) -> Result<(), Error> {
        let r = ApiRequest::delete(rpath(region, &["private-networks", id.as_str()]));
        self.client.execute(&r).await.map(drop)
    }

    /// Finds the private network named exactly `name` in `project`.
    pub async fn find_private_network_by_name(
        &self,
        region: &Region,
        project: &ProjectId,
        name: &str,
    ) -> Result<Option<PrivateNetwork>, Error> {
        let req = ListPrivateNetworksRequest {
            name: Some(name.to_owned()),
            project_id: Some(project.clone()),
            ..ListPrivateNetworksRequest::default()
        };
        let mut exact: Vec<_> = self
            .list_private_networks(region, &req)
            .collect_all()
            .await?
            .into_iter()
            .filter(|p| p.name == name)
            .collect();
        match exact.len() {
            0 => Ok(None),
            1 => Ok(exact.pop()),
            count => Err(Error::Ambiguous {
                kind: "private_network",
                name: name.to_owned(),
                count,
            }),
        }
    }

    /// Find-or-create by exact name: returns the one network named `name`,
    /// creates it (with `cidr`, or API-allocated subnets) when there is none,
    /// fails with [`Error::Ambiguous`] when there are several.
    pub async fn ensure_private_network(
        &self,
        region: &Region,
        project: &ProjectId,
        name: &str,
        cidr: Option<&str>,
        tags: &[String],
    ) -> Result<PrivateNetwork, Error> {
        if let Some(pn) = self
            .find_private_network_by_name(region, project, name)
            .await?
        {
            return Ok(pn);
        }
        let req = CreatePrivateNetworkRequest {
            name: name.to_owned(),
            project_id: project.clone(),
            tags: tags.to_vec(),
            subnets: cidr.map(|c| vec![c.to_owned()]),
            vpc_id: None,
        };
        self.create_private_network(region, &req).await
    }
}
