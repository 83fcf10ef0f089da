//! What every TPC operation shares about a TPC's container and its surroundings: the name rule,
//! placing the spec on this host (mounts, CPU cap, labels), published ports, the unit files,
//! and the small idempotent removals recovery repeats. No operation lives here, so the
//! lifecycle (`tpc`), `upgrade`, the journal steps, recovery, the janitor, the supervisor and
//! migration all build on it without importing one another.

use super::Error;
use super::store::{ImagesAccess, Store, TpcLock, TpcRecord};
use crate::config::{FileConfig, Settings};
use crate::runtime::spec::{BindMount, ContainerConfig};
use crate::runtime::{ContainerState, Runtime};
use crate::systemd;
use crate::tpc_spec::{ContainerSettings, ImageRef, Network, PortMapping, RestartPolicy};
use std::collections::HashMap;
use std::time::Duration;

pub use crate::tpc_spec::{PRIVATE_MOUNT, SHARED_MOUNT};

/// Share of the host's CPU capacity a TPC may use unless its `--cpus` says otherwise (SONiC
/// TPCM: 20 %); `default_cpu_share` in `tpcm.toml` changes it.
pub const DEFAULT_CPU_SHARE: f64 = 0.20;
/// How long a TPC gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Container label that marks a container as a TPC (its value is the TPC name).
pub const TPC_LABEL: &str = "io.tpcm.tpc";

/// Checks a TPC name: `[a-z0-9][a-z0-9_-]{0,31}` (it becomes a container ID, a unit name and a
/// directory name, so nothing else is allowed).
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid TPC name {name:?}: use 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )))
    }
}

/// The share of the host's CPUs a TPC gets without `--cpus` (config file, else 20 %).
pub(super) fn default_cpu_share(settings: &Settings) -> Result<f64, Error> {
    Ok(FileConfig::load(&settings.root)
        .map_err(Error::Invalid)?
        .default_cpu_share
        .unwrap_or(DEFAULT_CPU_SHARE))
}

/// The CPU cap a container with these settings gets: its own, or `share` of the host's CPUs.
pub(super) fn cpu_cap(container: &ContainerSettings, share: f64) -> f64 {
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    container.cpus.unwrap_or(share * online)
}

/// The labels of a TPC's container: the settings' labels plus the TPC marker.
pub fn container_labels(name: &str, container: &ContainerSettings) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = container.labels.clone().into_iter().collect();
    labels.insert(TPC_LABEL.to_string(), name.to_string());
    labels
}

/// The container TPC `record` gets on this host: its spec, its data directory at `/tpc`, the
/// shared directory at `/tpc-shared`, made from the manifest it is pinned to.
pub(super) fn container_config(settings: &Settings, store: &Store, record: &TpcRecord) -> ContainerConfig {
    ContainerConfig {
        id: record.name.clone(),
        image: ImageRef {
            reference: record.image().to_string(),
            digest: record.runs_on().to_string(),
        },
        settings: record.spec.settings.clone(),
        mounts: vec![
            BindMount {
                host: settings.data_root.join(&record.name),
                container: PRIVATE_MOUNT.into(),
                read_only: false,
            },
            BindMount {
                host: store.shared_dir(),
                container: SHARED_MOUNT.into(),
                read_only: false,
            },
        ],
        cpus: record.cpus,
    }
}

/// Creates TPC `record`'s container (not started).
pub(super) async fn create_container<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    record: &TpcRecord,
) -> Result<(), Error> {
    let config = container_config(settings, store, record);
    runtime
        .create_container(&config, container_labels(&record.name, &record.spec.settings))
        .await?;
    Ok(())
}

/// The store-wide lock that makes "check the ports, then record them" one step for TPCs that
/// publish ports (its name cannot be a TPC's: those start with a letter or digit).
const PORTS_LOCK: &str = "_ports";
/// How long an install or upgrade that publishes ports waits for another one to record its own.
const PORTS_PATIENCE: Duration = Duration::from_secs(120);

/// The host ports a TPC with these settings publishes.
fn published(container: &ContainerSettings) -> &[PortMapping] {
    if container.network == Network::Bridge {
        &container.ports
    } else {
        &[]
    }
}

/// Takes [`PORTS_LOCK`] when `container` publishes ports; held until the TPC's record is
/// written.
pub(super) fn lock_ports(store: &Store, container: &ContainerSettings) -> Result<Option<TpcLock>, Error> {
    if published(container).is_empty() {
        return Ok(None);
    }
    Ok(Some(store.lock_waiting(PORTS_LOCK, PORTS_PATIENCE)?))
}

/// Refuses host ports that another TPC publishes or that something on the host listens on
/// (ports TPC `name` itself publishes already are its own). Checked before anything changes.
pub(super) fn check_ports(store: &Store, name: &str, container: &ContainerSettings) -> Result<(), Error> {
    let records = store.list()?;
    let publishes = |r: &TpcRecord, p: &PortMapping| {
        published(&r.spec.settings)
            .iter()
            .any(|q| q.host == p.host && q.protocol == p.protocol)
    };
    for p in published(container) {
        if let Some(other) = records.iter().find(|r| r.name != name && publishes(r, p)) {
            return Err(Error::PortInUse(format!(
                "host port {}/{} is published by TPC {}; choose another",
                p.host, p.protocol, other.name
            )));
        }
        if records.iter().any(|r| r.name == name && publishes(r, p)) {
            continue;
        }
        check_host_port(p)?;
    }
    Ok(())
}

/// Refuses a host port something on the host listens on. The bridge's port forwarding does not
/// listen itself, so a TPC's own published ports pass while it runs.
fn check_host_port(p: &PortMapping) -> Result<(), Error> {
    let free = if p.protocol == "udp" {
        std::net::UdpSocket::bind(("0.0.0.0", p.host)).is_ok()
    } else {
        std::net::TcpListener::bind(("0.0.0.0", p.host)).is_ok()
    };
    if free {
        Ok(())
    } else {
        Err(Error::PortInUse(format!(
            "host port {}/{} is in use on this host; choose another",
            p.host, p.protocol
        )))
    }
}

/// Refuses to start a stopped TPC whose published port a host service took while it was
/// stopped: forwarding that port to the container would take the service's traffic.
pub(super) async fn check_ports_before_start<R: Runtime>(
    runtime: &R,
    record: &TpcRecord,
) -> Result<(), Error> {
    let ports = published(&record.spec.settings);
    if ports.is_empty()
        || matches!(
            runtime.container_state(&record.name).await?,
            ContainerState::Running { .. }
        )
    {
        return Ok(());
    }
    ports.iter().try_for_each(check_host_port)
}

/// Starts the TPC's container unless it runs (an exited or half-made task is cleared first).
pub(super) async fn ensure_running<R: Runtime>(runtime: &R, store: &Store, name: &str) -> Result<(), Error> {
    match runtime.container_state(name).await? {
        ContainerState::Running { .. } => {}
        ContainerState::Exited { .. } | ContainerState::Other { .. } => {
            runtime.stop_container(name, STOP_GRACE).await?;
            runtime.start_container(name, &store.log_target(name)).await?;
        }
        ContainerState::Stopped => {
            runtime.start_container(name, &store.log_target(name)).await?;
        }
    }
    Ok(())
}

/// The unit text of TPC `name`: it runs the installed tpcm binary with this invocation's
/// locations, so it acts on the same containerd and store.
pub(super) fn unit_text(settings: &Settings, name: &str, restart: RestartPolicy) -> Result<String, Error> {
    let binary = settings.unit_binary().map_err(Error::Invalid)?;
    let env = [
        ("TPCM_CONTAINERD", settings.containerd.display().to_string()),
        ("TPCM_NAMESPACE", settings.namespace.clone()),
        ("TPCM_ROOT", settings.root.display().to_string()),
        ("TPCM_DATA_ROOT", settings.data_root.display().to_string()),
        ("TPCM_SYSTEMD_DIR", settings.systemd_dir.display().to_string()),
    ];
    Ok(systemd::tpc_unit(name, &binary, &env, restart))
}

/// Writes the TPC's unit into the store and the systemd unit directory. The store's copy is what
/// a new SONiC image reinstalls from; the unit directory's is what systemd reads.
pub(super) fn install_unit(
    settings: &Settings,
    store: &Store,
    name: &str,
    restart: RestartPolicy,
) -> Result<(), Error> {
    let text = unit_text(settings, name, restart)?;
    let unit = systemd::unit_name(name);
    super::store::write_atomic_mode(&store.unit_path(name), text.as_bytes(), 0o644)?;
    super::store::write_atomic_mode(&settings.systemd_dir.join(&unit), text.as_bytes(), 0o644)?;
    if systemd::systemd_is_running() {
        systemd::systemctl(&["daemon-reload"]).map_err(Error::Internal)?;
        systemd::systemctl(&["enable", &unit]).map_err(Error::Internal)?;
    }
    Ok(())
}

/// Removes the TPC's unit from systemd and the store (best effort: missing is fine).
pub(super) fn remove_unit(settings: &Settings, store: &Store, name: &str) {
    let unit = systemd::unit_name(name);
    if systemd::systemd_is_running() {
        let _ = systemd::systemctl(&["disable", &unit]);
    }
    let _ = std::fs::remove_file(settings.systemd_dir.join(&unit));
    let _ = std::fs::remove_file(store.unit_path(name));
    if systemd::systemd_is_running() {
        let _ = systemd::systemctl(&["daemon-reload"]);
    }
}

/// Removes a directory and what it holds; one already gone is fine (recovery may run twice).
pub(super) fn remove_dir_if_present(dir: &std::path::Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Internal(format!("cannot remove {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}

/// Removes an image; one already gone is fine (recovery may run a removal twice). Waits for
/// imports that run ([`Store::try_images_lock`]).
pub(super) async fn remove_image_if_present<R: Runtime>(
    runtime: &R,
    store: &Store,
    image: &str,
) -> Result<(), Error> {
    let _images =
        super::images::lock_images(store, ImagesAccess::Remove, super::images::IMAGES_PATIENCE).await?;
    match runtime.remove_image(image).await {
        Ok(()) | Err(crate::runtime::Error::ImageNotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether another TPC than `except` uses `image`.
pub(super) fn image_in_use(store: &Store, image: &str, except: &str) -> bool {
    store
        .list()
        .map(|l| l.iter().any(|r| r.name != except && r.holds_image(image)))
        .unwrap_or(true)
}

/// TPC `name`'s record, or NOT_FOUND.
pub(super) fn require(store: &Store, name: &str) -> Result<TpcRecord, Error> {
    validate_name(name)?;
    store
        .get(name)?
        .ok_or_else(|| Error::NotFound(format!("no TPC named {name} is installed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in ["a", "tpc1", "my-app_2", &"a".repeat(32)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a.b", "a/b", "../x", &"a".repeat(33), "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
