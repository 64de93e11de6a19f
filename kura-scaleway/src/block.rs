//! Block Storage v1alpha1: deleting SBS volumes, which outlive their server.

use crate::client::Client;
use crate::request::{ApiRequest, path};
use crate::{Error, VolumeId, Zone};

/// Block API. Get it with [`Client::block`].
#[derive(Clone, Copy, Debug)]
pub struct BlockApi<'a> {
    client: &'a Client,
}

impl Client {
    /// The Block Storage API.
    pub fn block(&self) -> BlockApi<'_> {
        BlockApi { client: self }
    }
}

impl BlockApi<'_> {
    /// Deletes a volume (`precondition_failed` while attached). An SBS root
    /// volume survives `terminate` and `DELETE /servers`: delete it here.
    pub async fn delete_volume(&self, zone: &Zone, id: &VolumeId) -> Result<(), Error> {
        let r = ApiRequest::delete(path(&[
            "block",
            "v1alpha1",
            "zones",
            zone.as_str(),
            "volumes",
            id.as_str(),
        ]));
        self.client.execute(&r).await.map(drop)
    }

    /// Deletes a volume; already gone counts as success.
    pub async fn ensure_volume_deleted(&self, zone: &Zone, id: &VolumeId) -> Result<(), Error> {
        match self.delete_volume(zone, id).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}
