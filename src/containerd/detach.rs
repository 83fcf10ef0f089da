//! Taking a container out of containerd while keeping what brings it back exactly as it was: its
//! record (spec, labels, image, snapshot key; serialized) and its writable snapshot, held by a
//! lease without expiry so nothing collects it. An upgrade detaches the old container, and either
//! restores it (rollback) or discards it once the new one is healthy.

use super::{Containerd, Error, SNAPSHOTTER};
use crate::runtime::DetachedContainer;
use containerd_client::services::v1::{
    AddResourceRequest, CreateContainerRequest, CreateRequest, DeleteContainerRequest, DeleteRequest,
    Resource,
};
use prost::Message;
use std::collections::HashMap;

impl Containerd {
    /// Records container `id`'s definition and protects its writable snapshot; the container
    /// stays. Two steps (hold, then [`Containerd::detach`]) so a journal can record the hold
    /// before anything is deleted.
    pub(crate) async fn hold(&self, id: &str) -> Result<DetachedContainer, Error> {
        let container = self
            .container_record(id)
            .await?
            .ok_or_else(|| Error::Unexpected {
                op: format!("detach {id}"),
                detail: "no such container".into(),
            })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        // No expiry: the caller's journal owns this hold and ends it (restore or discard).
        let hold = format!("tpcm-hold-{id}-{nanos}");
        self.leases()
            .create(self.request(
                CreateRequest {
                    id: hold.clone(),
                    labels: HashMap::new(),
                },
                None,
            ))
            .await
            .map_err(Error::rpc(format!("create lease {hold}")))?;
        let resource = Resource {
            id: container.snapshot_key.clone(),
            r#type: format!("snapshots/{SNAPSHOTTER}"),
        };
        self.leases()
            .add_resource(self.request(
                AddResourceRequest {
                    id: hold.clone(),
                    resource: Some(resource),
                },
                None,
            ))
            .await
            .map_err(Error::rpc(format!("hold snapshot {}", container.snapshot_key)))?;
        Ok(DetachedContainer {
            id: id.to_string(),
            definition: hex::encode(container.encode_to_vec()),
            layer: container.snapshot_key.clone(),
            hold,
        })
    }

    /// Deletes a held container's record (its task must be gone); the snapshot stays, held.
    /// Idempotent.
    pub(crate) async fn detach(&self, held: &DetachedContainer) -> Result<(), Error> {
        match self.container_record(&held.id).await? {
            Some(c) if c.snapshot_key == held.layer => {}
            _ => return Ok(()),
        }
        match self
            .containers()
            .delete(self.request(DeleteContainerRequest { id: held.id.clone() }, None))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("container delete {}", held.id))(s)),
        }
    }

    /// Recreates a detached container from its record, on its kept snapshot, and ends the hold.
    /// A container already there with its ID and snapshot (a restore interrupted after the create)
    /// counts as restored.
    pub(crate) async fn restore(&self, detached: &DetachedContainer) -> Result<(), Error> {
        let bytes = hex::decode(&detached.definition).map_err(|e| Error::Unexpected {
            op: format!("restore {}", detached.id),
            detail: e.to_string(),
        })?;
        let container =
            containerd_client::services::v1::Container::decode(bytes.as_slice()).map_err(|e| {
                Error::Unexpected {
                    op: format!("restore {}", detached.id),
                    detail: e.to_string(),
                }
            })?;
        let present = self.container_record(&detached.id).await?;
        match present {
            Some(c) if c.snapshot_key == detached.layer => {}
            Some(_) => {
                return Err(Error::Unexpected {
                    op: format!("restore {}", detached.id),
                    detail: "another container has its ID".into(),
                });
            }
            None => {
                self.containers()
                    .create(self.request(
                        CreateContainerRequest {
                            container: Some(container),
                        },
                        None,
                    ))
                    .await
                    .map_err(Error::rpc(format!("container create {}", detached.id)))?;
            }
        }
        if let Err(e) = self.protect_layer(&detached.id, &detached.layer).await {
            tracing::warn!(
                "container {}: cannot protect its writable layer: {e}",
                detached.id
            );
        }
        self.end_hold(&detached.hold, false).await
    }

    /// Deletes a detached container's writable snapshot and ends the hold. Idempotent.
    pub(crate) async fn discard(&self, detached: &DetachedContainer) -> Result<(), Error> {
        self.remove_snapshot(&detached.layer).await?;
        self.end_hold(&detached.hold, true).await
    }

    async fn end_hold(&self, hold: &str, sync: bool) -> Result<(), Error> {
        match self
            .leases()
            .delete(self.request(
                DeleteRequest {
                    id: hold.to_string(),
                    sync,
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("delete lease {hold}"))(s)),
        }
    }
}
