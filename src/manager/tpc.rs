//! The TPC lifecycle: install, list, start, stop, restart, uninstall.
//!
//! Every mutating operation takes the TPC's lock first, validates everything it can before it
//! changes anything, and undoes its own steps when a later one fails, so a refused or failed
//! install leaves no image, container, snapshot, record or file behind.

use super::container::{
    check_ports, check_ports_before_start, cpu_cap, create_container, default_cpu_share, ensure_running,
    image_in_use, install_unit, lock_ports, require, require_locked, start_task, stop_grace, stop_task,
    validate_name,
};
use super::journal::{self, Entry, InstallJournal, UninstallJournal, crash_point};
use super::journal_steps::{finish_uninstall, undo_install};
use super::store::{ImagesAccess, Store, TpcRecord};
use super::{Error, ImageSource, Progress};
use crate::config::Settings;
use crate::runtime::{ContainerState, Runtime};
use crate::systemd;
use crate::tpc_spec::{ContainerSettings, ImageRef, RestartPolicy, TpcSpec};
use std::sync::Arc;
use std::time::Duration;

/// How long `unit-run` waits for a tpcm command that holds the TPC's lock (an upgrade's hooks and
/// health gate run under it).
const UNIT_LOCK_PATIENCE: Duration = Duration::from_secs(900);

/// A TPC's settings as a front end hands them over: typed, with the `--args` text they were
/// parsed from (kept for display; empty from gNOI).
#[derive(Debug, Clone, Default)]
pub struct RequestedSettings {
    /// The settings.
    pub container: ContainerSettings,
    /// The text, if they came from `--args`.
    pub args: String,
}

impl RequestedSettings {
    /// Settings parsed from the `--args` text of `tpcm install` or `upgrade`.
    pub fn from_args(text: &str) -> Result<RequestedSettings, Error> {
        Ok(RequestedSettings {
            container: super::args::parse_args(text).map_err(|e| Error::Invalid(e.to_string()))?,
            args: text.to_string(),
        })
    }
}

/// What an install is asked to do.
pub struct InstallRequest<'a> {
    /// Where the image comes from.
    pub source: &'a ImageSource,
    /// How the TPC runs.
    pub settings: RequestedSettings,
    /// When the TPC is a gNOI plugin (`manager::plugins`), what it is.
    pub plugin: Option<crate::tpc_spec::plugin::PluginSpec>,
}

/// Installs TPC `name` from an image source and starts it. `say` receives each step.
pub async fn install<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    request: &InstallRequest<'_>,
    progress: Arc<dyn Progress>,
    say: &dyn Fn(&str),
) -> Result<TpcRecord, Error> {
    validate_name(name)?;
    let container = &request.settings.container;
    container.check().map_err(|e| Error::Invalid(e.to_string()))?;
    super::container::check_bind_sources(container)?;
    let cpu_share = default_cpu_share(settings)?;
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
    if store.get(name)?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "TPC {name} is already installed; uninstall it or use upgrade"
        )));
    }
    let prepared = async {
        let ports = lock_ports(&store, container)?;
        check_ports(&store, name, container)?;
        let source = super::images::prefer_present(runtime, request.source, None).await?;
        Ok::<_, Error>((ports, source))
    }
    .await;
    // Refused before anything was made: the name is not installed, nor is its lock file left.
    let (_ports, source) = prepared.inspect_err(|_| store.remove_lock_file(name))?;

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
        request,
        cpu_share,
    };
    match steps.run(runtime, &source, progress, say, &mut j).await {
        Ok(record) => {
            journal::remove(&store, name)?;
            super::status::operator_started(&store, name);
            super::events::emit(&store, name, "install", &[("image", record.image().to_string())]);
            Ok(record)
        }
        Err(e) => match undo_install(runtime, settings, &store, name, &j).await {
            Ok(()) => {
                // Nothing of the TPC is left, its lock file neither (removed only here, where
                // the command ends: a recovery inside another command must leave it).
                store.remove_lock_file(name);
                Err(e)
            }
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
    request: &'a InstallRequest<'a>,
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
        // Shared with other imports and installs until the container pins its image: an image
        // removal (exclusive) cannot take the image between its import and the container.
        let images_lock = super::lock_images(store, ImagesAccess::Import, super::IMAGES_PATIENCE).await?;
        say(&format!("Installing the TPC-{name} image"));
        let images = super::import_image(runtime, store, source, None, progress).await?;
        let image = match images.as_slice() {
            [one] => ImageRef {
                reference: one.names[0].clone(),
                digest: one.digest.clone(),
            },
            _ => {
                // Take back what this import made, except names another TPC runs on (a removal
                // takes the images lock for itself).
                drop(images_lock);
                for name_of_image in images.iter().flat_map(|i| &i.names) {
                    if !image_in_use(store, name_of_image, name) {
                        let _ =
                            super::container::remove_image_if_present(runtime, store, name_of_image).await;
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
            j.image = Some(image.reference.clone());
            journal::write(store, name, Entry::Install(j))?;
        }
        crash_point("install:imported");

        let data_dir = settings.data_root.join(name);
        let log_dir = store
            .log_target(name)
            .file
            .parent()
            .expect("logs live in a directory")
            .to_path_buf();
        // Journaled before it is made, so a crash in between still takes it back. A plugin has
        // no data directory.
        let is_plugin = self.request.plugin.is_some();
        if !data_dir.exists() && !is_plugin {
            j.creates_data_dir = true;
            journal::write(store, name, Entry::Install(j))?;
        }
        if !is_plugin {
            for d in [data_dir.as_path(), &store.shared_dir()] {
                std::fs::create_dir_all(d)
                    .map_err(|e| Error::Internal(format!("cannot create {}: {e}", d.display())))?;
            }
        }
        super::store::create_private_dir(&log_dir)?;

        let container = &self.request.settings.container;
        // The image's own health check (HEALTHCHECK) runs unless the settings say otherwise, as
        // with docker.
        let image_health = runtime.image_healthcheck(&image).await?;
        let record = TpcRecord {
            name: name.to_string(),
            spec: TpcSpec {
                image,
                settings: container.clone(),
            },
            args: self.request.settings.args.clone(),
            cpus: cpu_cap(container, self.cpu_share),
            base_digest: None,
            running: true,
            installed: super::now_secs(),
            owns_image: source.owned(),
            rollback_image: None,
            converted: false,
            plugin: self.request.plugin.clone(),
            image_health,
        };
        super::container::create_missing_bind_sources(store, container, say)?;
        say(&format!("Creating the TPC-{name} container"));
        create_container(runtime, settings, store, &record).await?;
        drop(images_lock);
        crash_point("install:created");
        store.put(&record)?;
        crash_point("install:recorded");

        say(&format!("Installing the TPC-{name} systemd unit"));
        install_unit(settings, store, name, container)?;
        crash_point("install:unit");
        say(&format!("Starting the TPC-{name} container"));
        start_task(runtime, settings, store, &record).await?;
        crash_point("install:started");
        systemd::unit_started(name).map_err(Error::Internal)?;
        Ok(record)
    }
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
    let record = require_locked(&store, name)?;
    super::volumes::check_plugin_removal(&store, &record)?;
    let j = UninstallJournal {
        record,
        clean_data,
        kill,
    };
    journal::write(&store, name, Entry::Uninstall(&j))?;
    finish_uninstall(runtime, settings, &store, name, &j, say).await?;
    super::events::emit(&store, name, "uninstall", &[]);
    // The command ends here holding the lock: nothing of the TPC is left, its lock file neither.
    store.remove_lock_file(name);
    Ok(())
}

/// What a TPC's container is doing, as `tpcm list` shows it: the runtime's state, or
/// `missing` when tpcm has the TPC's record but the runtime no longer has its container (deleted
/// behind tpcm's back; `tpcm start` makes it again).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum TpcState {
    /// Not running.
    Stopped,
    /// Running with this host pid.
    Running {
        /// Host pid of the container's first process.
        pid: u32,
    },
    /// Exited by itself with this code.
    Exited {
        /// Exit code.
        code: u32,
    },
    /// Paused, or a transient state.
    Other {
        /// The runtime's name for it.
        detail: String,
    },
    /// The record exists, the container does not.
    Missing,
}

impl From<ContainerState> for TpcState {
    fn from(s: ContainerState) -> TpcState {
        match s {
            ContainerState::Stopped => TpcState::Stopped,
            ContainerState::Running { pid } => TpcState::Running { pid },
            ContainerState::Exited { code } => TpcState::Exited { code },
            ContainerState::Other { detail } => TpcState::Other { detail },
        }
    }
}

impl std::fmt::Display for TpcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TpcState::Running { .. } => f.write_str("running"),
            TpcState::Stopped => f.write_str("stopped"),
            TpcState::Exited { code } => write!(f, "exited ({code})"),
            TpcState::Other { detail } => f.write_str(detail),
            TpcState::Missing => f.write_str("missing"),
        }
    }
}

/// The state of TPC `name`'s container, `missing` included.
pub async fn state_of<R: Runtime>(runtime: &R, name: &str) -> Result<TpcState, Error> {
    let state = runtime.container_state(name).await?;
    if state == ContainerState::Stopped && !runtime.container_exists(name).await? {
        return Ok(TpcState::Missing);
    }
    Ok(state.into())
}

/// A TPC as `tpcm list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TpcStatus {
    /// TPC name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// The manifest digest the TPC is pinned to (the reference's tag may have moved since).
    pub digest: String,
    /// What its process is doing.
    pub status: TpcState,
    /// CPU cap in CPUs.
    pub cpus: f64,
    /// Memory limit in bytes, if any.
    pub memory: Option<u64>,
    /// Seconds since its process started, when running.
    pub uptime: Option<u64>,
    /// Restarts its restart policy made since an operator last started it.
    pub restarts: u32,
    /// Its health while it runs with a health check (`starting`, `healthy`, `unhealthy`).
    pub health: Option<super::status::Health>,
    /// How its process last ended, if tpcm saw it end.
    pub last_exit: Option<super::status::LastExit>,
}

/// Every installed TPC with its state.
pub async fn list<R: Runtime>(runtime: &R, settings: &Settings) -> Result<Vec<TpcStatus>, Error> {
    let store = Store::new(&settings.root);
    let mut out = Vec::new();
    for r in store.list()? {
        let status = state_of(runtime, &r.name).await?;
        let pid = match status {
            TpcState::Running { pid } => Some(pid),
            _ => None,
        };
        let observed = super::status::get(&store, &r.name);
        out.push(TpcStatus {
            image: r.image().to_string(),
            digest: r.spec.image.digest.clone(),
            health: super::health::shown(&r, &observed, pid),
            name: r.name,
            status,
            cpus: r.cpus,
            memory: r.spec.settings.memory,
            uptime: pid.and_then(process_uptime),
            restarts: observed.restart_count,
            last_exit: observed.last_exit,
        });
    }
    Ok(out)
}

/// Seconds a host process has been running, from `/proc` (start time in clock ticks since boot).
pub fn process_uptime(pid: u32) -> Option<u64> {
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
    start_with(runtime, settings, name, &|m| tracing::info!("{m}")).await
}

/// [`start`]; `say` is told when the TPC's container was missing and how it was made again.
pub async fn start_with<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
    let mut record = require_locked(&store, name)?;
    check_ports_before_start(runtime, &record).await?;
    repair_if_missing(runtime, settings, &store, &record, say).await?;
    let was_running = matches!(
        runtime.container_state(name).await?,
        ContainerState::Running { .. }
    );
    // Recorded first: the unit's unit-run leaves a TPC alone while its record says stopped.
    record.running = true;
    store.put(&record)?;
    ensure_running(runtime, settings, &store, &record).await?;
    if !was_running {
        super::status::operator_started(&store, name);
        super::events::emit(&store, name, "start", &[]);
    }
    systemd::unit_started(name).map_err(Error::Internal)?;
    Ok(())
}

/// Makes TPC `record`'s container again when the runtime lost it (deleted behind tpcm's back):
/// from the image it is pinned to, on its old writable layer if that is still there. Says which.
pub(super) async fn repair_if_missing<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    record: &TpcRecord,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    let name = &record.name;
    if runtime.container_exists(name).await? {
        return Ok(());
    }
    let how = super::container::recreate_container(runtime, settings, store, record).await?;
    let (layer, said) = match how {
        crate::runtime::Recreated::KeptLayer => ("kept", "on its old writable layer, which was still there"),
        crate::runtime::Recreated::FreshLayer => (
            "fresh",
            "on a fresh writable layer (the old one was gone: changes made inside the container outside /tpc and volumes are lost)",
        ),
    };
    say(&format!(
        "TPC {name}'s container was missing; made it again from its pinned image {} {said}",
        record.runs_on()
    ));
    super::events::emit(
        store,
        name,
        "repair",
        &[
            ("layer", layer.to_string()),
            ("image", record.runs_on().to_string()),
        ],
    );
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
    let pid = {
        // systemd starts this while the command that asked for it may still hold the lock.
        let _lock = store.lock_waiting(name, UNIT_LOCK_PATIENCE)?;
        super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
        let record = require_locked(&store, name)?;
        let always = record.spec.settings.restart == RestartPolicy::Always;
        // docker's `always` restarts a stopped container when its daemon (here: the switch) restarts.
        if !record.running && !always {
            return Ok(None);
        }
        check_ports_before_start(runtime, &record).await?;
        repair_if_missing(runtime, settings, &store, &record, &|m| tracing::warn!("{m}")).await?;
        let before = runtime.container_state(name).await?;
        ensure_running(runtime, settings, &store, &record).await?;
        // A container that exited by itself and is started here again was restarted by its
        // policy (systemd's Restart=); one stopped (by an operator, or a reboot) was not.
        if let ContainerState::Exited { .. } = before {
            super::status::restarted(&store, name);
        }
        match runtime.container_state(name).await? {
            ContainerState::Running { pid } => pid,
            _ => 0,
        }
    };
    // The health check runs while this process waits on the container (see `health.rs`).
    let code = {
        let wait = runtime.wait_container(name);
        let monitor = super::health::monitor(runtime, settings, name, pid);
        tokio::pin!(wait, monitor);
        tokio::select! {
            code = &mut wait => code?,
            // Done (no check, or the process ended): only the wait is left.
            () = &mut monitor => (&mut wait).await?,
        }
    };
    super::status::exited(&store, name, code);
    Ok(Some(code))
}

/// What `tpcm unit-stop` (the unit's stop command, also run at shutdown) does: stop the
/// container without recording that the operator wants it stopped.
pub async fn unit_stop<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<(), Error> {
    let store = Store::new(&settings.root);
    let record = require(&store, name)?;
    stop_task(
        runtime,
        settings,
        &store,
        &record,
        stop_grace(&record.spec.settings),
    )
    .await
}

/// Whether TPC `name` is installed and its process runs (NOT_FOUND when it is not installed).
pub async fn is_running<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<bool, Error> {
    require(&Store::new(&settings.root), name)?;
    Ok(matches!(
        runtime.container_state(name).await?,
        ContainerState::Running { .. }
    ))
}

/// Stops a TPC and remembers that it should stay stopped (also across reboots).
pub async fn stop<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<(), Error> {
    stop_within(runtime, settings, name, false).await
}

/// [`stop`]; with `force`, SIGKILL at once (gNOI's `force`) instead of the TPC's stop signal
/// and grace.
pub async fn stop_within<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    force: bool,
) -> Result<(), Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
    let mut record = require_locked(&store, name)?;
    super::volumes::check_plugin_stop(&store, &record)?;
    let grace = if force {
        Duration::ZERO
    } else {
        stop_grace(&record.spec.settings)
    };
    record.running = false;
    store.put(&record)?;
    // Through systemd when it runs the unit, so it does not restart what the operator stopped.
    systemd::stop_unit(name).map_err(Error::Internal)?;
    stop_task(runtime, settings, &store, &record, grace).await?;
    super::events::emit(&store, name, "stop", &[]);
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
        let record = require_locked(&store, name)?;
        // Through systemd first, so the stop is not taken for a failure (Restart=, on-failure:N).
        systemd::stop_unit(name).map_err(Error::Internal)?;
        stop_task(
            runtime,
            settings,
            &store,
            &record,
            stop_grace(&record.spec.settings),
        )
        .await?;
    }
    start(runtime, settings, name).await?;
    super::events::emit(&Store::new(&settings.root), name, "restart", &[]);
    Ok(())
}
