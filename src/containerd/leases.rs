//! Leases: containerd's guard against garbage collection of objects still being built.

use super::{Containerd, Error};
use containerd_client::services::v1::{CreateRequest, DeleteRequest};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
