//! Image records: the names that point at a manifest in the content store.

use super::{Containerd, Error, Lease};
use crate::archive::Digest;
use crate::archive::resolve::Target;
use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest, UpdateImageRequest,
};
use containerd_client::types::Descriptor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An image record as containerd holds it.
#[derive(Debug, Clone)]
pub(crate) struct ImageRecord {
    pub name: String,
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub created: Option<SystemTime>,
}

impl ImageRecord {
    /// The record's target as a descriptor.
    pub fn target(&self) -> Option<Target> {
        Some(Target {
            media_type: self.media_type.clone(),
            digest: Digest::parse(&self.digest)?,
            size: self.size,
            annotations: self.annotations.clone(),
        })
    }
}

fn to_time(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    Some(UNIX_EPOCH + Duration::new(ts.seconds.max(0) as u64, ts.nanos.max(0) as u32))
}

impl Containerd {
    /// Points `name` at `target` (a manifest or index, with the annotations ctr records),
    /// creating the record or moving an existing one. Returns whether the record was created
    /// (rather than moved).
    pub(crate) async fn put_image(&self, lease: &Lease, name: &str, target: &Target) -> Result<bool, Error> {
        let image = Image {
            name: name.to_string(),
            target: Some(Descriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.to_string(),
                size: target.size as i64,
                annotations: target.annotations.clone().into_iter().collect(),
            }),
            ..Default::default()
        };
        let create = CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        };
        match self.images().create(self.request(create, Some(lease))).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let update = UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".into()],
                    }),
                    source_date_epoch: None,
                };
                self.images()
                    .update(self.request(update, Some(lease)))
                    .await
                    .map_err(Error::rpc(format!("image update {name}")))?;
                Ok(false)
            }
            Err(s) => Err(Error::rpc(format!("image create {name}"))(s)),
        }
    }

    /// Points `name` at the manifest `digest` (which the content store must hold).
    pub(crate) async fn name_manifest(&self, name: &str, digest: &Digest) -> Result<(), Error> {
        let bytes = self.read_small_blob(digest, 4 << 20).await?;
        #[derive(serde::Deserialize)]
        struct Shape {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
        }
        let media_type = serde_json::from_slice::<Shape>(&bytes)
            .ok()
            .and_then(|s| s.media_type)
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());
        let lease = self.create_lease("tag").await?;
        let target = Target {
            media_type,
            digest: digest.clone(),
            size: bytes.len() as u64,
            annotations: Default::default(),
        };
        let put = self.put_image(&lease, name, &target).await;
        let _ = self.delete_lease(lease, false).await;
        put.map(|_| ())
    }

    /// Points `name` at whatever image `source` points at.
    pub(crate) async fn tag_image(&self, source: &str, name: &str) -> Result<(), Error> {
        let record = self
            .get_image_record(source)
            .await?
            .ok_or_else(|| Error::ImageNotFound(source.to_string()))?;
        let target = record.target().ok_or_else(|| Error::Unexpected {
            op: format!("tag {source}"),
            detail: format!("digest {}", record.digest),
        })?;
        let lease = self.create_lease("tag").await?;
        let put = self.put_image(&lease, name, &target).await;
        let _ = self.delete_lease(lease, false).await;
        put.map(|_| ())
    }

    /// The platform manifest a record's target stands for: the target itself, or, for an index
    /// (a multi-platform image), the manifest the importer chose for this host.
    pub(crate) async fn manifest_of(&self, record: &ImageRecord) -> Result<String, Error> {
        if !crate::archive::resolve::is_index_type(&record.media_type) {
            return Ok(record.digest.clone());
        }
        let unexpected = |detail: String| Error::Unexpected {
            op: format!("read image {}", record.name),
            detail,
        };
        let digest = Digest::parse(&record.digest).ok_or_else(|| unexpected(record.digest.clone()))?;
        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(&self.read_small_blob(&digest, 4 << 20).await?)
                .map_err(|e| unexpected(e.to_string()))?;
        let chosen = crate::archive::resolve::pick_platform(&record.name, index.manifests())
            .map_err(|e| unexpected(e.to_string()))?;
        Ok(chosen.digest().to_string())
    }

    /// Every image record in the namespace.
    pub(crate) async fn list_image_records(&self) -> Result<Vec<ImageRecord>, Error> {
        let images = self
            .images()
            .list(self.request(ListImagesRequest { filters: vec![] }, None))
            .await
            .map_err(Error::rpc("image list"))?
            .into_inner()
            .images;
        Ok(images.into_iter().map(record).collect())
    }

    /// One image record, or `None` when there is no image of that name.
    pub(crate) async fn get_image_record(&self, name: &str) -> Result<Option<ImageRecord>, Error> {
        match self
            .images()
            .get(self.request(GetImageRequest { name: name.into() }, None))
            .await
        {
            Ok(r) => Ok(r.into_inner().image.map(record)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::rpc(format!("image get {name}"))(s)),
        }
    }

    /// Deletes an image record and, synchronously, whatever only it kept alive (content and
    /// snapshots), so the disk space is back when this returns.
    pub(crate) async fn delete_image(&self, name: &str) -> Result<(), Error> {
        match self
            .images()
            .delete(self.request(
                DeleteImageRequest {
                    name: name.into(),
                    sync: true,
                    target: None,
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Err(Error::ImageNotFound(name.to_string())),
            Err(s) => Err(Error::rpc(format!("image delete {name}"))(s)),
        }
    }
}

fn record(i: Image) -> ImageRecord {
    let target = i.target.unwrap_or_default();
    ImageRecord {
        name: i.name,
        media_type: target.media_type,
        digest: target.digest,
        size: target.size.max(0) as u64,
        annotations: target.annotations.into_iter().collect(),
        created: to_time(i.created_at),
    }
}
