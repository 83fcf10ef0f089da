//! The janitor (containerz R-CLEAN): removes what nothing owns, so a fleet's switches do not
//! fill up with leftovers. It runs periodically in `tpcm serve` and once with `tpcm janitor`.
//!
//! What it removes, and what it never touches:
//! - a container that no TPC record (CLI or gNOI instance) owns and whose process is not
//!   running — never a TPC, so a container the operator stopped on purpose stays;
//! - an image that no TPC and no container uses, once it was found unused by two sweeps in a
//!   row (an image deployed over gNOI a moment before its StartContainer is not swept away);
//!   the image a TPC ran before its last upgrade counts as used (its rollback target);
//! - the network (address, forwarding rules, namespace) of a container that no longer exists,
//!   as deleting a container behind tpcm's back leaves it: its published ports would otherwise
//!   stay forwarded to nothing, taking those ports from every service on the host;
//! - no container and no image while any journal is open: an install, upgrade or uninstall in
//!   flight holds images and containers that look unowned.

use super::container::{STOP_GRACE, validate_name};
use super::store::{ImagesAccess, Store};
use super::{Error, journal};
use crate::config::Settings;
use crate::runtime::{ContainerState, Runtime};
use std::collections::BTreeSet;

/// What one sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sweep {
    /// Containers removed.
    pub containers: Vec<String>,
    /// Images removed.
    pub images: Vec<String>,
    /// Containers (gone) whose network was released.
    pub networks: Vec<String>,
    /// Why the sweep did nothing, when it skipped.
    pub skipped: Option<String>,
}

impl Sweep {
    /// Whether the sweep removed nothing.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.images.is_empty() && self.networks.is_empty()
    }
}

/// Images seen unused by the previous sweep: an image is removed when it is still unused now.
#[derive(Debug, Default)]
pub struct Suspects(BTreeSet<String>);

impl Suspects {
    /// With `first_sight_counts`, an image unused now is removed at once (`tpcm janitor`, which
    /// an operator runs on purpose); otherwise only on its second unused sweep.
    pub fn new(first_sight_counts: bool) -> Suspects {
        if first_sight_counts {
            Suspects(BTreeSet::from(["*".to_string()]))
        } else {
            Suspects::default()
        }
    }

    fn seen(&self, image: &str) -> bool {
        self.0.contains("*") || self.0.contains(image)
    }
}

/// Runs one sweep. `suspects` carries the unused images from one sweep to the next.
pub async fn sweep<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    suspects: &mut Suspects,
) -> Result<Sweep, Error> {
    let store = Store::new(&settings.root);
    let mut out = Sweep::default();
    // Networks first, whatever is in flight: an operation on a TPC holds its lock, and a
    // container an interrupted one may bring back attaches anew when it starts.
    // A network that cannot be released is said and left for the next sweep: it must not keep
    // the sweep from containers and images.
    let vanished = runtime.vanished_networks().await.unwrap_or_else(|e| {
        tracing::warn!("janitor: cannot list the networks of containers that are gone: {e}");
        Vec::new()
    });
    for id in vanished {
        // One being made or removed right now holds its lock; the next sweep looks again.
        let _lock = match validate_name(&id) {
            Ok(()) => match store.lock(&id) {
                Ok(lock) => Some(lock),
                Err(_) => continue,
            },
            Err(_) => None,
        };
        let released = match runtime.container_exists(&id).await {
            Ok(true) => continue,
            Ok(false) => runtime.release_network(&id).await,
            Err(e) => Err(e),
        };
        match released {
            Ok(()) => {
                tracing::info!(container = %id, "janitor released the network of a container that is gone");
                out.networks.push(id);
            }
            Err(e) => {
                tracing::warn!("janitor: cannot release the network of container {id}, which is gone: {e}")
            }
        }
    }

    let pending = journal::pending(&store);
    if !pending.is_empty() {
        out.skipped = Some(format!("operations in flight on {}", pending.join(", ")));
        return Ok(out);
    }
    let owned: BTreeSet<String> = store.list()?.into_iter().map(|r| r.name).collect();
    let containers = runtime.list_containers().await?;
    for c in &containers {
        if owned.contains(&c.id) {
            continue;
        }
        // A TPC being installed has its container before its record: its lock says so.
        let _lock = match validate_name(&c.id) {
            Ok(()) => match store.lock(&c.id) {
                Ok(lock) => Some(lock),
                Err(_) => continue,
            },
            Err(_) => None,
        };
        if store.get(&c.id).ok().flatten().is_some() {
            continue;
        }
        if matches!(
            runtime.container_state(&c.id).await?,
            ContainerState::Running { .. }
        ) {
            continue;
        }
        runtime.stop_container(&c.id, STOP_GRACE).await?;
        runtime.delete_container(&c.id).await?;
        tracing::info!(container = %c.id, "janitor removed a stopped container no TPC owns");
        out.containers.push(c.id.clone());
    }

    // Images only while no import or install runs (it may be about to use an image that looks
    // unused), and the lock taken before the users are read, so none appears meanwhile.
    let Ok(_images) = store.try_images_lock(ImagesAccess::Remove) else {
        out.skipped = Some("an image import is running".into());
        return Ok(out);
    };
    let mut used: BTreeSet<String> = store
        .list()?
        .into_iter()
        .flat_map(|r| [Some(r.image().to_string()), r.rollback_image])
        .flatten()
        .collect();
    used.extend(runtime.list_containers().await?.into_iter().map(|c| c.image));
    // An upgrade that opened its journal since the check above names its pin before it imports.
    used.extend(
        journal::images_in_flight(&store)?
            .into_iter()
            .map(|(image, _)| image),
    );
    let mut unused = BTreeSet::new();
    for image in runtime.list_images().await? {
        if used.contains(&image.name) {
            continue;
        }
        if suspects.seen(&image.name) {
            match runtime.remove_image(&image.name).await {
                Ok(()) | Err(crate::runtime::Error::ImageNotFound(_)) => {
                    tracing::info!(image = %image.name, "janitor removed an image nothing uses");
                    out.images.push(image.name);
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            unused.insert(image.name);
        }
    }
    suspects.0 = unused;
    Ok(out)
}
