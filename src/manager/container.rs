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
use crate::tpc_spec::{ContainerSettings, ImageRef, Network, PortMapping, VolumeMount};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::tpc_spec::{PRIVATE_MOUNT, SHARED_MOUNT};

/// Share of the host's CPU capacity a TPC may use unless its `--cpus` says otherwise (SONiC
/// TPCM: 20 %); `default_cpu_share` in `tpcm.toml` changes it.
pub const DEFAULT_CPU_SHARE: f64 = 0.20;
/// How long a TPC gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a TPC with these settings gets between its stop signal and SIGKILL: its
/// `--stop-timeout` (negative: forever), else [`STOP_GRACE`].
pub fn stop_grace(container: &ContainerSettings) -> Duration {
    match container.stop_timeout {
        None => STOP_GRACE,
        Some(n) if n < 0 => Duration::MAX,
        Some(n) => Duration::from_secs(n as u64),
    }
}

/// Container label that marks a container as a TPC (its value is the TPC name).
pub const TPC_LABEL: &str = "io.tpcm.tpc";

/// Checks a TPC (or gNOI instance) name: containerd's identifier rule — letters and digits
/// joined by single `.`, `_` or `-`, at most 76 characters. It becomes a container ID, a unit
/// name (`tpc-<name>.service`), a directory and a file name, all of which take it as it is.
pub fn validate_name(name: &str) -> Result<(), Error> {
    if crate::tpc_spec::is_identifier(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid name {name:?}: use letters and digits joined by single '.', '_' or '-', at most {} characters",
            crate::tpc_spec::MAX_IDENTIFIER
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

/// The container TPC `record` gets on this host, made from the manifest it is pinned to: its
/// spec, its data directory at `/tpc` and the shared directory at `/tpc-shared`; a plugin
/// instead gets its socket directory at `/run/docker/plugins` and its propagated mount (a
/// shared bind, so the mounts it makes there reach the host).
pub(super) fn container_config(settings: &Settings, store: &Store, record: &TpcRecord) -> ContainerConfig {
    let mounts = match &record.plugin {
        None => vec![
            BindMount {
                host: settings.data_root.join(&record.name),
                container: PRIVATE_MOUNT.into(),
                read_only: false,
                shared: false,
            },
            BindMount {
                host: store.shared_dir(),
                container: SHARED_MOUNT.into(),
                read_only: false,
                shared: false,
            },
        ],
        Some(plugin) => {
            let mut mounts = vec![BindMount {
                host: super::plugins::socket_dir(settings, plugin),
                container: super::plugins::SOCKET_DIR_INSIDE.into(),
                read_only: false,
                shared: false,
            }];
            if !plugin.config.propagatedmount.is_empty() {
                mounts.push(BindMount {
                    host: super::plugins::propagated_dir(store, &record.name),
                    container: plugin.config.propagatedmount.clone(),
                    read_only: false,
                    shared: true,
                });
            }
            mounts
        }
    };
    ContainerConfig {
        id: record.name.clone(),
        image: ImageRef {
            reference: record.image().to_string(),
            digest: record.runs_on().to_string(),
        },
        settings: record.spec.settings.clone(),
        mounts,
        cpus: record.cpus,
    }
}

/// docker's `/etc/hosts` for a container given extra hosts (`--add-host`): loopback and the
/// IPv6 names, then the extra lines (docker builds it so even on the host network).
const HOSTS_BASE: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// The `/etc/hosts` and `/etc/resolv.conf` a TPC gets when its settings change them
/// (`--add-host`, `--dns*`), written into `<store>/containers/<name>/` (re-made at every
/// container creation) and bound read-only; otherwise none, and the host's files are bound.
fn network_files(store: &Store, record: &TpcRecord) -> Result<Vec<BindMount>, Error> {
    let s = &record.spec.settings;
    let dir = store.root().join("containers").join(&record.name);
    let mut out = Vec::new();
    let write = |file: &str, text: String| -> Result<BindMount, Error> {
        let path = dir.join(file);
        super::store::write_atomic_mode(&path, text.as_bytes(), 0o644)?;
        Ok(BindMount {
            host: path,
            container: format!("/etc/{file}"),
            read_only: true,
            shared: false,
        })
    };
    if !s.extra_hosts.is_empty() {
        let mut text = HOSTS_BASE.to_string();
        for (name, address) in &s.extra_hosts {
            text.push_str(&format!("{address}\t{name}\n"));
        }
        out.push(write("hosts", text)?);
    }
    if !s.dns.is_empty() {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        out.push(write("resolv.conf", resolv_conf(&host, &s.dns))?);
    }
    Ok(out)
}

/// The host's resolv.conf with the lists `dns` gives replacing the host's (docker's rule).
fn resolv_conf(host: &str, dns: &crate::tpc_spec::Dns) -> String {
    let mut text =
        String::from("# Generated by tpcm from the host's resolv.conf and the TPC's --dns settings.\n");
    let keyword = |l: &str| l.split_whitespace().next().unwrap_or_default().to_string();
    for line in host.lines() {
        let replaced = match keyword(line).as_str() {
            "nameserver" => !dns.servers.is_empty(),
            "search" | "domain" => !dns.search.is_empty(),
            "options" => !dns.options.is_empty(),
            _ => false,
        };
        if !replaced {
            text.push_str(line);
            text.push('\n');
        }
    }
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.search.is_empty() {
        text.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    text
}

/// Creates TPC `record`'s container (not started).
pub(super) async fn create_container<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    record: &TpcRecord,
) -> Result<(), Error> {
    let mut config = container_config(settings, store, record);
    config.mounts.extend(network_files(store, record)?);
    runtime
        .create_container(&config, container_labels(&record.name, &record.spec.settings))
        .await?;
    Ok(())
}

/// The part of `path` that does not exist yet, outermost first, and the nearest ancestor that
/// does; `None` when `path` itself exists.
fn missing_components(path: &Path) -> Result<Option<(PathBuf, Vec<PathBuf>)>, std::io::Error> {
    let mut missing = Vec::new();
    let mut at = path.to_path_buf();
    loop {
        match std::fs::symlink_metadata(&at) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(at.clone());
                match at.parent() {
                    Some(parent) => at = parent.to_path_buf(),
                    None => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    if missing.is_empty() {
        return Ok(None);
    }
    missing.reverse();
    Ok(Some((at, missing)))
}

fn bind_error(v: &VolumeMount, why: String) -> Error {
    Error::Invalid(format!("-v {}:{}: {why}", v.host.display(), v.container))
}

/// Refuses, before anything is made, a `-v` host path that is missing and could not be created
/// as a directory (its nearest existing ancestor is no directory, or cannot be looked at).
pub(super) fn check_bind_sources(container: &ContainerSettings) -> Result<(), Error> {
    for v in &container.volumes {
        let missing = missing_components(&v.host)
            .map_err(|e| bind_error(v, format!("cannot look at {}: {e}", v.host.display())))?;
        if let Some((ancestor, _)) = missing
            && !ancestor.is_dir()
        {
            return Err(bind_error(
                v,
                format!(
                    "{} does not exist and cannot be created: {} is not a directory",
                    v.host.display(),
                    ancestor.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Creates the host directory of every `-v` bind mount that does not exist, mode 0755 whatever
/// the umask, as docker does at every start of a container, and says which. Custom volumes are
/// not: their path appears when their driver mounts them.
pub(super) fn create_missing_bind_sources(
    store: &Store,
    container: &ContainerSettings,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let driver_paths = super::volumes::driver_volume_paths(store)?;
    for v in container
        .volumes
        .iter()
        .filter(|v| !driver_paths.contains(&v.host))
    {
        let Some((_, missing)) = missing_components(&v.host)
            .map_err(|e| bind_error(v, format!("cannot look at {}: {e}", v.host.display())))?
        else {
            continue;
        };
        for dir in &missing {
            let made = match std::fs::create_dir(dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                made => made,
            };
            made.and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
                .map_err(|e| {
                    bind_error(
                        v,
                        format!("{} does not exist and cannot be created: {e}", v.host.display()),
                    )
                })?;
        }
        say(&format!(
            "Created the host directory {} for -v {}:{} (it did not exist)",
            v.host.display(),
            v.host.display(),
            v.container
        ));
    }
    Ok(())
}

/// Creates TPC `record`'s container again after the runtime lost it, on its old writable layer
/// when the runtime still has it.
pub(super) async fn recreate_container<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    record: &TpcRecord,
) -> Result<crate::runtime::Recreated, Error> {
    let mut config = container_config(settings, store, record);
    config.mounts.extend(network_files(store, record)?);
    Ok(runtime
        .recreate_container(&config, container_labels(&record.name, &record.spec.settings))
        .await?)
}

/// The store-wide lock that makes "check the ports, then record them" one step for TPCs that
/// publish ports (its name cannot be a TPC's: those start with a letter or digit).
const PORTS_LOCK: &str = "_ports";
/// How long an install or upgrade that publishes ports waits for another one to record its own.
const PORTS_PATIENCE: Duration = Duration::from_secs(120);

/// The host ports a TPC with these settings holds: forwarded ones on the bridge, its own on the
/// host network (declared so that a port is not given twice and a taken one is refused).
fn published(container: &ContainerSettings) -> &[PortMapping] {
    if container.network == Network::None {
        &[]
    } else {
        &container.ports
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

/// Starts TPC `record`'s task, after what the host side needs: a plugin's socket and
/// propagated directories, and the volumes of custom drivers mounted by their plugins.
pub(super) async fn start_task<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    record: &TpcRecord,
) -> Result<(), Error> {
    super::plugins::prepare_host(settings, store, record)?;
    create_missing_bind_sources(store, &record.spec.settings, &|m| {
        tracing::info!("TPC {}: {m}", record.name)
    })?;
    super::volumes::mount_driver_volumes(settings, store, record).await?;
    if let Err(e) = runtime
        .start_container(&record.name, &store.log_target(&record.name))
        .await
    {
        super::volumes::unmount_driver_volumes(settings, store, &record.name).await;
        return Err(e.into());
    }
    Ok(())
}

/// Stops TPC `record`'s task (its stop signal, SIGKILL after `grace`), then lets its custom
/// volumes' drivers unmount them.
pub(super) async fn stop_task<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    record: &TpcRecord,
    grace: Duration,
) -> Result<(), Error> {
    runtime.stop_container(&record.name, grace).await?;
    super::volumes::unmount_driver_volumes(settings, store, &record.name).await;
    Ok(())
}

/// Starts the TPC's container unless it runs (an exited or half-made task is cleared first).
pub(super) async fn ensure_running<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    record: &TpcRecord,
) -> Result<(), Error> {
    match runtime.container_state(&record.name).await? {
        ContainerState::Running { .. } => {}
        ContainerState::Exited { .. } | ContainerState::Other { .. } => {
            runtime.stop_container(&record.name, STOP_GRACE).await?;
            start_task(runtime, settings, store, record).await?;
        }
        ContainerState::Stopped => start_task(runtime, settings, store, record).await?,
    }
    Ok(())
}

/// The unit text of TPC `name`: it runs the installed tpcm binary with this invocation's
/// locations, so it acts on the same containerd and store.
pub(super) fn unit_text(
    settings: &Settings,
    name: &str,
    container: &ContainerSettings,
) -> Result<String, Error> {
    let binary = settings.unit_binary().map_err(Error::Invalid)?;
    let env = [
        ("TPCM_CONTAINERD", settings.containerd.display().to_string()),
        ("TPCM_NAMESPACE", settings.namespace.clone()),
        ("TPCM_ROOT", settings.root.display().to_string()),
        ("TPCM_DATA_ROOT", settings.data_root.display().to_string()),
        ("TPCM_SYSTEMD_DIR", settings.systemd_dir.display().to_string()),
        (
            "TPCM_PLUGIN_SOCKETS",
            settings.plugin_sockets.display().to_string(),
        ),
    ];
    Ok(systemd::tpc_unit(
        name,
        &binary,
        &env,
        container.restart,
        container.stop_timeout,
    ))
}

/// Writes the TPC's unit into the store and the systemd unit directory. The store's copy is what
/// a new SONiC image reinstalls from; the unit directory's is what systemd reads.
pub(super) fn install_unit(
    settings: &Settings,
    store: &Store,
    name: &str,
    container: &ContainerSettings,
) -> Result<(), Error> {
    let text = unit_text(settings, name, container)?;
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
    remove_locked(runtime, image).await
}

/// Removes an image under the exclusive images lock the caller holds; one already gone is fine.
pub(super) async fn remove_locked<R: Runtime>(runtime: &R, image: &str) -> Result<(), Error> {
    match runtime.remove_image(image).await {
        Ok(()) | Err(crate::runtime::Error::ImageNotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether another TPC than `except` uses `image`: runs it, keeps it to roll back to, or needs
/// it for an install or upgrade in flight. When that cannot be read, it counts as used.
pub(super) fn image_in_use(store: &Store, image: &str, except: &str) -> bool {
    held_by_record(store, image, except) || needed_in_flight(store, image, except)
}

/// Whether the pin an upgrade of TPC `name` made is still needed once that upgrade ends: a
/// record holds that name (an image named by its digest, `name`'s own included), or another
/// TPC's operation in flight needs it.
pub(super) fn pin_in_use(store: &Store, pin: &str, name: &str) -> bool {
    held_by_record(store, pin, "") || needed_in_flight(store, pin, name)
}

/// Whether a record other than `except`'s holds `image` (unreadable records: yes).
fn held_by_record(store: &Store, image: &str, except: &str) -> bool {
    store
        .list()
        .map(|l| l.iter().any(|r| r.name != except && r.holds_image(image)))
        .unwrap_or(true)
}

/// Whether an operation in flight on a TPC other than `except` needs `image` (unreadable
/// journals: yes).
fn needed_in_flight(store: &Store, image: &str, except: &str) -> bool {
    super::journal::images_in_flight(store).map_or(true, |in_flight| {
        in_flight.iter().any(|(i, tpc)| i == image && tpc != except)
    })
}

/// TPC `name`'s record, or NOT_FOUND.
pub(super) fn require(store: &Store, name: &str) -> Result<TpcRecord, Error> {
    validate_name(name)?;
    store
        .get(name)?
        .ok_or_else(|| Error::NotFound(format!("no TPC named {name} is installed")))
}

/// [`require`], for a command that holds the TPC's lock and has run recovery: a name that is
/// not installed (a typo) leaves no lock file behind.
pub(super) fn require_locked(store: &Store, name: &str) -> Result<TpcRecord, Error> {
    require(store, name).inspect_err(|e| {
        if matches!(e, Error::NotFound(_)) && !super::journal::pending(store).iter().any(|n| n == name) {
            store.remove_lock_file(name);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in ["a", "tpc1", "my-app_2", &"a".repeat(40)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for ok in ["A", "a.b", "Test_Instance-1", &"a".repeat(76)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "a-",
            "a..b",
            "a/b",
            "../x",
            &"a".repeat(77),
            "a b",
            "é",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
