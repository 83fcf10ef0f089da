//! Leases: containerd's guard against garbage collection of objects still being built.

use super::{Containerd, Error};
use containerd_client::services::v1::{CreateRequest, DeleteRequest, ListRequest};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Leases that keep a TPC's writable layer while the TPC exists (`tpcm-layer-<id>`): a
/// container deleted behind tpcm's back leaves its layer, which `tpcm start` builds on again.
pub(crate) const LAYER_LEASE_PREFIX: &str = "tpcm-layer-";

/// How long a lease outlives a crashed tpcm before containerd may collect what it protected.
const LEASE_SAFETY_NET: Duration = Duration::from_secs(24 * 3600);

/// A lease held while an operation creates content and snapshots. Release it with
/// [`Containerd::delete_lease`]; if tpcm dies first, the expiry label lets containerd clean up.
#[derive(Debug, Clone)]
pub struct Lease {
    id: String,
}

impl Lease {
    /// The lease ID (also used to make ingest refs and snapshot keys unique).
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Containerd {
    /// Creates a lease named after `purpose`, expiring after the safety net.
    pub async fn create_lease(&self, purpose: &str) -> Result<Lease, Error> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let id = format!("tpcm-{purpose}-{}-{nanos}", std::process::id());
        let expire = humantime::format_rfc3339_seconds(SystemTime::now() + LEASE_SAFETY_NET).to_string();
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire)]);
        self.leases()
            .create(self.request(
                CreateRequest {
                    id: id.clone(),
                    labels,
                },
                None,
            ))
            .await
            .map_err(Error::rpc(format!("create lease {id}")))?;
        Ok(Lease { id })
    }

    /// Deletes the leases of tpcm processes that no longer exist (killed halfway through an
    /// import or a container creation), synchronously, so what only they protected is collected
    /// now rather than when their expiry passes. Holds (`tpcm-hold-…`) belong to journals and are
    /// left alone. Returns how many were deleted.
    pub async fn collect_abandoned(&self) -> Result<usize, Error> {
        let leases = self
            .leases()
            .list(self.request(ListRequest { filters: vec![] }, None))
            .await
            .map_err(Error::rpc("list leases"))?
            .into_inner()
            .leases;
        let mut deleted = 0;
        for lease in leases {
            if lease.id.starts_with("tpcm-hold-") || lease.id.starts_with(LAYER_LEASE_PREFIX) {
                continue;
            }
            // tpcm-<purpose>-<pid>-<nanos>, as create_lease names them.
            let Some(rest) = lease.id.strip_prefix("tpcm-") else {
                continue;
            };
            let mut parts = rest.rsplitn(3, '-');
            let (_nanos, pid) = (parts.next(), parts.next());
            let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            self.delete_lease(Lease { id: lease.id }, true).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Adds snapshot `key` to `lease`, whether it exists or not: from then on, if it exists, no
    /// collection removes it while the lease lives. An import that finds a layer's snapshot
    /// already there adds it first and looks second, so a concurrent removal of the image that
    /// made it cannot take it between the look and the new image's record.
    pub(crate) async fn lease_snapshot(&self, lease: &Lease, key: &str) -> Result<(), Error> {
        use containerd_client::services::v1::{AddResourceRequest, Resource};
        let resource = Resource {
            id: key.to_string(),
            r#type: format!("snapshots/{}", super::SNAPSHOTTER),
        };
        self.leases()
            .add_resource(self.request(
                AddResourceRequest {
                    id: lease.id.clone(),
                    resource: Some(resource),
                },
                None,
            ))
            .await
            .map_err(Error::rpc(format!("lease snapshot {key}")))?;
        Ok(())
    }

    /// Deletes a lease. With `sync`, containerd collects what only the lease kept alive before
    /// answering: that is how a failed import leaves nothing behind.
    pub async fn delete_lease(&self, lease: Lease, sync: bool) -> Result<(), Error> {
        self.leases()
            .delete(self.request(
                DeleteRequest {
                    id: lease.id.clone(),
                    sync,
                },
                None,
            ))
            .await
            .map_err(Error::rpc(format!("delete lease {}", lease.id)))?;
        Ok(())
    }
}

impl Containerd {
    /// Makes container `id`'s writable layer `key` outlive its container record (the layer
    /// lease of `id` holds it, and only it: a layer of an earlier container of `id` is let go).
    pub(crate) async fn protect_layer(&self, id: &str, key: &str) -> Result<(), Error> {
        use containerd_client::services::v1::{
            AddResourceRequest, DeleteResourceRequest, ListResourcesRequest, Resource,
        };
        let lease = format!("{LAYER_LEASE_PREFIX}{id}");
        let create = CreateRequest {
            id: lease.clone(),
            labels: HashMap::new(),
        };
        match self.leases().create(self.request(create, None)).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(Error::rpc(format!("create lease {lease}"))(s)),
        }
        let kind = format!("snapshots/{}", super::SNAPSHOTTER);
        let held = self
            .leases()
            .list_resources(self.request(ListResourcesRequest { id: lease.clone() }, None))
            .await
            .map_err(Error::rpc(format!("lease resources {lease}")))?
            .into_inner()
            .resources;
        // Held already (every start of a container protected before): nothing to change.
        let layers: Vec<&str> = held
            .iter()
            .filter(|r| r.r#type == kind)
            .map(|r| r.id.as_str())
            .collect();
        if layers == [key] {
            return Ok(());
        }
        for old in held.into_iter().filter(|r| r.r#type == kind && r.id != key) {
            let req = DeleteResourceRequest {
                id: lease.clone(),
                resource: Some(old),
            };
            self.leases()
                .delete_resource(self.request(req, None))
                .await
                .map_err(Error::rpc(format!("lease resources {lease}")))?;
        }
        let add = AddResourceRequest {
            id: lease.clone(),
            resource: Some(Resource {
                id: key.to_string(),
                r#type: kind,
            }),
        };
        self.leases()
            .add_resource(self.request(add, None))
            .await
            .map_err(Error::rpc(format!("lease snapshot {key}")))?;
        Ok(())
    }

    /// Lets container `id`'s writable layer go with it (the container is being deleted).
    pub(crate) async fn unprotect_layer(&self, id: &str) -> Result<(), Error> {
        let lease = format!("{LAYER_LEASE_PREFIX}{id}");
        let req = DeleteRequest {
            id: lease.clone(),
            sync: false,
        };
        match self.leases().delete(self.request(req, None)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("delete lease {lease}"))(s)),
        }
    }
}
