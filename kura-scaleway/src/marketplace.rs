//! Marketplace v2 local images: image label → image id for a commercial type.

use serde::{Deserialize, Serialize};

use crate::client::{Client, Page, Paginator};
use crate::de::nullable;
use crate::request::{ApiRequest, path};
use crate::{CommercialType, Error, ImageId, Zone};

/// A marketplace image available in one zone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LocalImage {
    /// The image id to pass to server creation.
    pub id: ImageId,
    /// Architecture (`x86_64`, `arm64`).
    #[serde(default)]
    pub arch: Option<String>,
    /// Zone.
    #[serde(default)]
    pub zone: Option<Zone>,
    /// Commercial types that can boot it.
    #[serde(default, deserialize_with = "nullable")]
    pub compatible_commercial_types: Vec<CommercialType>,
    /// Label, e.g. `ubuntu_noble`.
    #[serde(default, deserialize_with = "nullable")]
    pub label: String,
    /// Type: `instance_sbs` or `instance_local`.
    #[serde(rename = "type", default)]
    pub image_type: Option<String>,
}

#[derive(Deserialize)]
struct ImagesEnvelope {
    #[serde(default, deserialize_with = "nullable")]
    local_images: Vec<LocalImage>,
    #[serde(default)]
    total_count: Option<u64>,
}

/// Marketplace API v2. Get it with [`Client::marketplace`].
#[derive(Clone, Copy, Debug)]
pub struct MarketplaceApi<'a> {
    client: &'a Client,
}

impl Client {
    /// The Marketplace API.
    pub fn marketplace(&self) -> MarketplaceApi<'_> {
        MarketplaceApi { client: self }
    }
}

impl<'a> MarketplaceApi<'a> {
    /// Streams the local images of `label` in `zone` of `image_type`
    /// (`instance_sbs` for SBS root volumes).
    pub fn list_local_images(
        &self,
        zone: &Zone,
        label: &str,
        image_type: &str,
    ) -> Paginator<'a, LocalImage> {
        let client = self.client.clone();
        let (zone, label, image_type) = (zone.clone(), label.to_owned(), image_type.to_owned());
        Paginator::new(move |page| {
            let client = client.clone();
            let r = ApiRequest::get(path(&["marketplace", "v2", "local-images"]))
                .query("image_label", &label)
                .query("zone", &zone)
                .query("type", &image_type)
                .query("order_by", "type_asc")
                .query("page", page)
                .query("page_size", 100);
            Box::pin(async move {
                let body: ImagesEnvelope = client.execute_json(&r).await?;
                Ok(Page {
                    items: body.local_images,
                    total_count: body.total_count,
                })
            })
        })
    }

    /// The image id of `label` bootable by `commercial_type` in `zone`.
    pub async fn find_local_image(
        &self,
        zone: &Zone,
        label: &str,
        commercial_type: &CommercialType,
        image_type: &str,
    ) -> Result<LocalImage, Error> {
        let images = self
            .list_local_images(zone, label, image_type)
            .collect_all()
            .await?;
        images
            .into_iter()
            .find(|i| i.compatible_commercial_types.contains(commercial_type))
            .ok_or_else(|| Error::NotFound {
                status: 404,
                message: format!("no {image_type} image {label:?} for {commercial_type} in {zone}"),
                resource: Some("marketplace_local_image".into()),
                resource_id: None,
                request_id: None,
            })
    }
}
