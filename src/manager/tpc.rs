//! The TPC lifecycle: install, list, start, stop, restart, uninstall.
//!
//! Every mutating operation takes the TPC's lock first, validates everything it can before it
//! changes anything, and undoes its own steps when a later one fails, so a refused or failed
//! install leaves no image, container, snapshot, record or file behind.

use super::args::{self, ContainerArgs, Network};
use super::journal::{self, Entry, InstallJournal, UninstallJournal, crash_point};
use super::store::{Store, TpcRecord};
use super::{Error, ImageSource, Progress};
use crate::config::{FileConfig, Settings};
use crate::runtime::spec::{BindMount, ContainerConfig, Device};
use crate::runtime::{ContainerState, Runtime};
use crate::systemd;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Share of the host's CPU capacity a TPC may use unless its `--cpus` says otherwise (SONiC
/// TPCM: 20 %); `default_cpu_share` in `tpcm.toml` changes it.
pub const DEFAULT_CPU_SHARE: f64 = 0.20;
/// How long `unit-run` waits for a tpcm command that holds the TPC's lock (an upgrade's hooks and
/// health gate run under it).
const UNIT_LOCK_PATIENCE: Duration = Duration::from_secs(900);
/// How long a TPC gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Where the TPC's private data directory appears inside its container.
pub const PRIVATE_MOUNT: &str = "/tpc";
/// Container label that marks a container as a TPC (its value is the TPC name).
pub const TPC_LABEL: &str = "io.tpcm.tpc";
/// Where the directory shared by all TPCs appears inside each container.
pub const SHARED_MOUNT: &str = "/tpc-shared";

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

/// Parses a TPC's `--args`, refusing volumes over tpcm's own mounts.
pub fn parse_tpc_args(text: &str) -> Result<ContainerArgs, Error> {
    let parsed = args::parse_args(text).map_err(|e| Error::Invalid(e.to_string()))?;
    if let Some(v) = parsed
        .volumes
        .iter()
        .find(|v| v.container == PRIVATE_MOUNT || v.container == SHARED_MOUNT)
    {
        return Err(Error::Invalid(format!(
            "--args: -v {}: {} is tpcm's own mount; choose another path",
            v.host.display(),
            v.container
        )));
    }
    Ok(parsed)
}

/// The share of the host's CPUs a TPC gets without `--cpus` (config file, else 20 %).
pub(super) fn default_cpu_share(settings: &Settings) -> Result<f64, Error> {
    Ok(FileConfig::load(&settings.root)
        .map_err(Error::Invalid)?
        .default_cpu_share
        .unwrap_or(DEFAULT_CPU_SHARE))
}

/// The labels of a TPC's container: `-l` labels plus the TPC marker.
pub fn container_labels(name: &str, parsed: &ContainerArgs) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = parsed.labels.clone().into_iter().collect();
    labels.insert(TPC_LABEL.to_string(), name.to_string());
    labels
}

/// The store-wide lock that makes "check the ports, then record them" one step for TPCs that
/// publish ports (its name cannot be a TPC's: those start with a letter or digit).
const PORTS_LOCK: &str = "_ports";
/// How long an install or upgrade that publishes ports waits for another one to record its own.
const PORTS_PATIENCE: Duration = Duration::from_secs(120);

/// Takes [`PORTS_LOCK`] when `ports` is not empty; held until the TPC's record is written.
pub(super) fn lock_ports(
    store: &Store,
    ports: &[crate::runtime::spec::PortMapping],
) -> Result<Option<super::store::TpcLock>, Error> {
    if ports.is_empty() {
        return Ok(None);
    }
    Ok(Some(store.lock_waiting(PORTS_LOCK, PORTS_PATIENCE)?))
}

/// Refuses host ports that another TPC publishes or that something on the host listens on
/// (ports TPC `name` itself publishes already are its own). Checked before anything changes.
pub(super) fn check_ports(
    store: &Store,
    name: &str,
    ports: &[crate::runtime::spec::PortMapping],
) -> Result<(), Error> {
    let records = store.list()?;
    let published = |r: &TpcRecord, p: &crate::runtime::spec::PortMapping| {
        r.container
            .bridge
            .as_ref()
            .is_some_and(|own| own.iter().any(|q| q.host == p.host && q.protocol == p.protocol))
    };
    for p in ports {
        if let Some(other) = records.iter().find(|r| r.name != name && published(r, p)) {
            return Err(Error::PortInUse(format!(
                "host port {}/{} is published by TPC {}; choose another",
                p.host, p.protocol, other.name
            )));
        }
        if records.iter().any(|r| r.name == name && published(r, p)) {
            continue;
        }
        check_host_port(p)?;
    }
    Ok(())
}

/// Refuses a host port something on the host listens on. The bridge's port forwarding does not
/// listen itself, so a TPC's own published ports pass while it runs.
fn check_host_port(p: &crate::runtime::spec::PortMapping) -> Result<(), Error> {
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

/// The host's CPU count, for the default cap.
fn online_cpus() -> f64 {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64
}

/// Turns parsed `--args` into container settings for TPC `name`; `cpu_share` is the default
/// share of the host's CPUs.
pub(super) fn container_config(
    settings: &Settings,
    store: &Store,
    name: &str,
    image: &str,
    a: &ContainerArgs,
    cpu_share: f64,
) -> ContainerConfig {
    let mut mounts = vec![
        BindMount {
            host: settings.data_root.join(name),
            container: PRIVATE_MOUNT.into(),
            read_only: false,
        },
        BindMount {
            host: store.shared_dir(),
            container: SHARED_MOUNT.into(),
            read_only: false,
        },
    ];
    mounts.extend(a.volumes.iter().map(|v| BindMount {
        host: v.host.clone(),
        container: v.container.clone(),
        read_only: v.read_only,
    }));
    ContainerConfig {
        id: name.to_string(),
        image: image.to_string(),
        env: a.env.clone(),
        mounts,
        cpus: a.cpus.unwrap_or(cpu_share * online_cpus()),
        memory: a.memory,
        memory_reservation: a.memory_reservation,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        entrypoint: a.entrypoint.clone(),
        command: a.command.clone(),
        hostname: a.hostname.clone(),
        host_network: a.network == Network::Host,
        bridge: (a.network == Network::Bridge).then(|| a.ports.clone()),
        devices: a
            .devices
            .iter()
            .map(|d| Device {
                host: d.host.clone(),
                container: d.container.clone(),
                permissions: d.permissions.clone(),
            })
            .collect(),
    }
}

/// Installs TPC `name` from an image source and starts it. `say` receives each step.
pub async fn install<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    source: &ImageSource,
    args_text: &str,
    progress: Arc<dyn Progress>,
    say: &dyn Fn(&str),
) -> Result<TpcRecord, Error> {
    validate_name(name)?;
    let parsed = parse_tpc_args(args_text)?;
    let cpu_share = default_cpu_share(settings)?;
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
    if store.get(name)?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "TPC {name} is already installed; uninstall it or use upgrade"
        )));
    }
    let _ports = lock_ports(&store, &parsed.ports)?;
    check_ports(&store, name, &parsed.ports)?;

    let mut j = InstallJournal {
        image: None,
        creates_data_dir: false,
    };
    journal::write(&store, name, Entry::Install(&j))?;
    crash_point("install:journaled");
    let steps = InstallSteps {
        settings,
        store: &store,
        name,
        args_text,
        parsed: &parsed,
        cpu_share,
    };
    match steps.run(runtime, source, progress, say, &mut j).await {
        Ok(record) => {
            journal::remove(&store, name)?;
            Ok(record)
        }
        Err(e) => match undo_install(runtime, settings, &store, name, &j).await {
            Ok(()) => Err(e),
            Err(u) => Err(Error::Internal(format!(
                "{e} (and taking the install back failed: {u})"
            ))),
        },
    }
}

/// What an install works with once its input is checked.
struct InstallSteps<'a> {
    settings: &'a Settings,
    store: &'a Store,
    name: &'a str,
    args_text: &'a str,
    parsed: &'a ContainerArgs,
    cpu_share: f64,
}

impl InstallSteps<'_> {
    /// Import, create, record, unit, start; `j` learns the image as soon as it exists. On error
    /// the caller takes back whatever was made ([`undo_install`]).
    async fn run<R: Runtime>(
        &self,
        runtime: &R,
        source: &ImageSource,
        progress: Arc<dyn Progress>,
        say: &dyn Fn(&str),
        j: &mut InstallJournal,
    ) -> Result<TpcRecord, Error> {
        let (settings, store, name) = (self.settings, self.store, self.name);
        say(&format!("Installing the TPC-{name} image"));
        let images = super::import_image(runtime, source, None, progress).await?;
        let (image, digest) = match images.as_slice() {
            [one] => (one.names[0].clone(), one.digest.clone()),
            _ => {
                // Take back what this import made, except names another TPC runs on.
                for name_of_image in images.iter().flat_map(|i| &i.names) {
                    if !image_in_use(store, name_of_image, name) {
                        let _ = runtime.remove_image(name_of_image).await;
                    }
                }
                return Err(Error::Invalid(format!(
                    "{} holds {} images; a TPC needs an archive with exactly one",
                    source.describe(),
                    images.len()
                )));
            }
        };
        // An image the TPC does not own stays when the install is taken back.
        if source.owned() {
            j.image = Some(image.clone());
            journal::write(store, name, Entry::Install(j))?;
        }
        crash_point("install:imported");

        let config = container_config(settings, store, name, &image, self.parsed, self.cpu_share);
        let data_dir = settings.data_root.join(name);
        let log_dir = store
            .log_target(name)
            .file
            .parent()
            .expect("logs live in a directory")
            .to_path_buf();
        // Journaled before it is made, so a crash in between still takes it back.
        if !data_dir.exists() {
            j.creates_data_dir = true;
            journal::write(store, name, Entry::Install(j))?;
        }
        for d in [data_dir.as_path(), &store.shared_dir(), &log_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", d.display())))?;
        }

        say(&format!("Creating the TPC-{name} container"));
        runtime
            .create_container(&config, container_labels(name, self.parsed))
            .await?;
        crash_point("install:created");
        let record = TpcRecord {
            name: name.to_string(),
            image,
            digest: Some(digest),
            args: self.args_text.to_string(),
            container: config,
            running: true,
            installed: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            owns_image: source.owned(),
            rollback_image: None,
        };
        store.put(&record)?;
        crash_point("install:recorded");

        say(&format!("Installing the TPC-{name} systemd unit"));
        install_unit(settings, store, name, self.parsed.restart)?;
        crash_point("install:unit");
        say(&format!("Starting the TPC-{name} container"));
        runtime.start_container(name, &store.log_target(name)).await?;
        crash_point("install:started");
        systemd::unit_started(name).map_err(Error::Internal)?;
        Ok(record)
    }
}

/// Takes back an install that did not finish: container, unit, record, journal, and the image
/// unless another TPC uses it. Idempotent (recovery runs it after a crash).
pub(super) async fn undo_install<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    name: &str,
    j: &InstallJournal,
) -> Result<(), Error> {
    // The install may have got as far as handing the TPC to systemd.
    systemd::stop_unit(name).map_err(Error::Internal)?;
    runtime.stop_container(name, STOP_GRACE).await?;
    runtime.delete_container(name).await?;
    remove_unit(settings, store, name);
    for f in store.log_target(name).files_oldest_first() {
        let _ = std::fs::remove_file(f);
    }
    if j.creates_data_dir {
        remove_dir_if_present(&settings.data_root.join(name))?;
    }
    store.remove(name)?;
    if let Some(image) = &j.image
        && !image_in_use(store, image, name)
    {
        remove_image_if_present(runtime, image).await?;
    }
    journal::remove(store, name)
}

/// Writes the TPC's unit into the store and the systemd unit directory. The store's copy is what
/// a new SONiC image reinstalls from; the unit directory's is what systemd reads.
pub(super) fn install_unit(
    settings: &Settings,
    store: &Store,
    name: &str,
    restart: args::RestartPolicy,
) -> Result<(), Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Internal(format!("cannot locate the tpcm binary: {e}")))?;
    let env = [
        ("TPCM_CONTAINERD", settings.containerd.display().to_string()),
        ("TPCM_NAMESPACE", settings.namespace.clone()),
        ("TPCM_ROOT", settings.root.display().to_string()),
        ("TPCM_DATA_ROOT", settings.data_root.display().to_string()),
        ("TPCM_SYSTEMD_DIR", settings.systemd_dir.display().to_string()),
    ];
    let text = systemd::tpc_unit(name, &exe, &env, restart);
    let unit = systemd::unit_name(name);
    super::store::write_atomic(&store.unit_path(name), text.as_bytes())?;
    super::store::write_atomic(&settings.systemd_dir.join(&unit), text.as_bytes())?;
    if systemd::systemd_is_running() {
        systemd::systemctl(&["daemon-reload"]).map_err(Error::Internal)?;
        systemd::systemctl(&["enable", &unit]).map_err(Error::Internal)?;
    }
    Ok(())
}

/// Removes the TPC's unit from systemd and the store (best effort: missing is fine).
fn remove_unit(settings: &Settings, store: &Store, name: &str) {
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
fn remove_dir_if_present(dir: &std::path::Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Internal(format!("cannot remove {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}

/// Removes an image; one already gone is fine (recovery may run a removal twice).
pub(super) async fn remove_image_if_present<R: Runtime>(runtime: &R, image: &str) -> Result<(), Error> {
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

pub(super) fn require(store: &Store, name: &str) -> Result<TpcRecord, Error> {
    validate_name(name)?;
    store
        .get(name)?
        .ok_or_else(|| Error::NotFound(format!("no TPC named {name} is installed")))
}

/// Stops and removes TPC `name`: container, writable layer, image (unless another TPC uses it),
/// record. Its data directory is kept unless `clean_data`.
pub async fn uninstall<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    clean_data: bool,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    uninstall_with(runtime, settings, name, clean_data, false, say).await
}

/// [`uninstall`]; with `kill`, a running container is killed at once (gNOI's `force`) instead
/// of stopped with the usual grace. The kill is part of the journaled removal, so a refused
/// uninstall leaves the TPC running.
pub async fn uninstall_with<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    clean_data: bool,
    kill: bool,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
    let record = require(&store, name)?;
    let j = UninstallJournal {
        record,
        clean_data,
        kill,
    };
    journal::write(&store, name, Entry::Uninstall(&j))?;
    finish_uninstall(runtime, settings, &store, name, &j, say).await
}

/// The steps of an uninstall; idempotent, so recovery finishes one that was interrupted.
pub(super) async fn finish_uninstall<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    name: &str,
    j: &UninstallJournal,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    say(&format!("Stopping the TPC-{name} container"));
    systemd::stop_unit(name).map_err(Error::Internal)?;
    let grace = if j.kill { Duration::ZERO } else { STOP_GRACE };
    runtime.stop_container(name, grace).await?;
    crash_point("uninstall:stopped");
    say(&format!("Removing the TPC-{name} container"));
    runtime.delete_container(name).await?;
    crash_point("uninstall:deleted");
    remove_unit(settings, store, name);
    if j.record.owns_image && !image_in_use(store, &j.record.image, name) {
        say(&format!("Removing the TPC-{name} image"));
        remove_image_if_present(runtime, &j.record.image).await?;
    }
    crash_point("uninstall:image-removed");
    for f in store.log_target(name).files_oldest_first() {
        let _ = std::fs::remove_file(f);
    }
    if j.clean_data {
        remove_dir_if_present(&settings.data_root.join(name))?;
    }
    store.remove(name)?;
    journal::remove(store, name)
}

/// A TPC as `tpcm list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TpcStatus {
    /// TPC name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// What its process is doing.
    pub status: ContainerState,
    /// CPU cap in CPUs.
    pub cpus: f64,
    /// Memory limit in bytes, if any.
    pub memory: Option<u64>,
    /// Seconds since its process started, when running.
    pub uptime: Option<u64>,
}

/// Every installed TPC with its state.
pub async fn list<R: Runtime>(runtime: &R, settings: &Settings) -> Result<Vec<TpcStatus>, Error> {
    let store = Store::new(&settings.root);
    let mut out = Vec::new();
    for r in store.list()? {
        let status = runtime.container_state(&r.name).await?;
        let uptime = match status {
            ContainerState::Running { pid } => process_uptime(pid),
            _ => None,
        };
        out.push(TpcStatus {
            name: r.name,
            image: r.image,
            status,
            cpus: r.container.cpus,
            memory: r.container.memory,
            uptime,
        });
    }
    Ok(out)
}

/// Seconds a host process has been running, from `/proc` (start time in clock ticks since boot).
fn process_uptime(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised command name (which may hold spaces).
    let start_ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((uptime - start_ticks as f64 / hz).max(0.0) as u64)
}

/// Starts a stopped TPC (a running one is left alone) and remembers that it should run.
pub async fn start<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<(), Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
    let mut record = require(&store, name)?;
    check_ports_before_start(runtime, &record).await?;
    // Recorded first: the unit's unit-run leaves a TPC alone while its record says stopped.
    record.running = true;
    store.put(&record)?;
    ensure_running(runtime, &store, name).await?;
    systemd::unit_started(name).map_err(Error::Internal)?;
    Ok(())
}

/// Refuses to start a stopped TPC whose published port a host service took while it was
/// stopped: forwarding that port to the container would take the service's traffic.
async fn check_ports_before_start<R: Runtime>(runtime: &R, record: &TpcRecord) -> Result<(), Error> {
    if record.container.bridge.iter().flatten().next().is_none()
        || matches!(
            runtime.container_state(&record.name).await?,
            ContainerState::Running { .. }
        )
    {
        return Ok(());
    }
    record
        .container
        .bridge
        .iter()
        .flatten()
        .try_for_each(check_host_port)
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

/// What `tpcm unit-run` (the TPC unit's main process) does: start the container unless the
/// operator stopped the TPC (then it returns `None` at once), and wait for it to exit,
/// returning its exit code. The record is not changed, and the TPC's lock is held only while
/// starting, so tpcm commands work on the TPC while the unit waits.
pub async fn unit_run<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
) -> Result<Option<u32>, Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    {
        // systemd starts this while the command that asked for it may still hold the lock.
        let _lock = store.lock_waiting(name, UNIT_LOCK_PATIENCE)?;
        super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
        let record = require(&store, name)?;
        let always = parse_tpc_args(&record.args)?.restart == args::RestartPolicy::Always;
        // docker's `always` restarts a stopped container when its daemon (here: the switch) restarts.
        if !record.running && !always {
            return Ok(None);
        }
        check_ports_before_start(runtime, &record).await?;
        ensure_running(runtime, &store, name).await?;
    }
    Ok(Some(runtime.wait_container(name).await?))
}

/// What `tpcm unit-stop` (the unit's stop command, also run at shutdown) does: stop the
/// container without recording that the operator wants it stopped.
pub async fn unit_stop<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<(), Error> {
    let store = Store::new(&settings.root);
    require(&store, name)?;
    Ok(runtime.stop_container(name, STOP_GRACE).await?)
}

/// Stops a TPC and remembers that it should stay stopped (also across reboots).
pub async fn stop<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<(), Error> {
    stop_within(runtime, settings, name, STOP_GRACE).await
}

/// [`stop`] with SIGKILL after `grace` (zero: at once, gNOI's `force`).
pub async fn stop_within<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    grace: Duration,
) -> Result<(), Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
    let mut record = require(&store, name)?;
    record.running = false;
    store.put(&record)?;
    // Through systemd when it runs the unit, so it does not restart what the operator stopped.
    systemd::stop_unit(name).map_err(Error::Internal)?;
    runtime.stop_container(name, grace).await?;
    Ok(())
}

/// Where an installed TPC's output is.
pub fn log_target(settings: &Settings, name: &str) -> Result<crate::runtime::logs::LogTarget, Error> {
    let store = Store::new(&settings.root);
    require(&store, name)?;
    Ok(store.log_target(name))
}

/// Stops then starts a TPC.
pub async fn restart<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<(), Error> {
    validate_name(name)?;
    {
        let store = Store::new(&settings.root);
        let _lock = store.lock_for_command(name)?;
        super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
        require(&store, name)?;
        // Through systemd first, so the stop is not taken for a failure (Restart=, on-failure:N).
        systemd::stop_unit(name).map_err(Error::Internal)?;
        runtime.stop_container(name, STOP_GRACE).await?;
    }
    start(runtime, settings, name).await
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
