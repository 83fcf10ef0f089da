//! StartContainer, StopContainer, RemoveContainer, ListContainer, UpdateContainer, Log.
//!
//! A gNOI container instance is a TPC whose image is managed on its own (deployed, kept for
//! rollbacks, removed with RemoveImage). A StartContainerRequest becomes the same typed settings
//! `tpcm install --args` builds ([`start_settings`]), checked by the same rules, stored in the
//! same record, shown by `tpcm list`, and upgraded like any TPC.

use super::{Shared, on_manager, proto};
use crate::manager::container::{container_labels, validate_name};
use crate::manager::log_follow::FollowEnd;
use crate::manager::store::Store;
use crate::manager::tpc::{InstallRequest, RequestedSettings};
use crate::manager::upgrade::{UpgradeOutcome, UpgradeRequest};
use crate::manager::{self, ImageSource, tpc, volumes};
use crate::runtime::{ContainerState, Runtime};
use crate::tpc_spec::{
    self, ContainerSettings, DeviceMapping, Network, PortMapping, RestartPolicy, SettingError, VolumeMount,
};
use proto::list_container_response::Status as Listed;
use proto::start_container_request::restart::Policy;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// ListContainer label with the outcome of the instance's last UpdateContainer (how an `async`
/// update's result becomes visible).
pub const UPDATE_LABEL: &str = "io.tpcm.update";
/// ListContainer label with the instance's health while it runs with a health check:
/// `starting`, `healthy` or `unhealthy` (absent without a check or while it does not run).
pub const HEALTH_LABEL: &str = "io.tpcm.health";
/// ListContainer label: restarts its restart policy made since it was last started on request.
pub const RESTARTS_LABEL: &str = "io.tpcm.restart-count";
/// ListContainer label: the exit code of its last exit, when tpcm saw one.
pub const LAST_EXIT_LABEL: &str = "io.tpcm.last-exit";
/// ListContainer label naming the instance's image reference in full.
pub const IMAGE_LABEL: &str = "io.tpcm.image";
/// The container label holding the location a StartContainer asked for (the proto names it;
/// the value is the enum's name, `L_UNKNOWN` counting as `L_PRIMARY`, as the reference server).
pub const LOCATION_INTENDED: &str = "net.openconfig.containerz.location.intended";
/// ListContainer label: where the container runs.
pub const LOCATION_ACTUAL: &str = "net.openconfig.containerz.location.actual";
/// ListContainer label: why it does not run where it was meant to, when it does not.
pub const LOCATION_REASON: &str = "net.openconfig.containerz.location.reason";

/// The intended location a request asks for, as its label value.
fn intended_location(r: &proto::StartContainerRequest) -> Result<&'static str, Status> {
    use proto::start_container_request::Location;
    match Location::try_from(r.location) {
        Ok(Location::LUnknown | Location::LPrimary) => Ok("L_PRIMARY"),
        Ok(Location::LBackup) => Ok("L_BACKUP"),
        Ok(Location::LAll) => Ok("L_ALL"),
        Err(_) => Err(Status::invalid_argument(format!(
            "StartContainer: location {} is not one of the proto's",
            r.location
        ))),
    }
}

/// The location labels ListContainer reports for an instance: a SONiC switch has one
/// supervisor card (single card mode), so every container runs on it, the primary; one meant
/// for the backup or for all cards says so in `reason`.
fn location_labels(intended: Option<&str>) -> [(&'static str, String); 3] {
    let intended = intended.unwrap_or("L_PRIMARY");
    let reason = match intended {
        "L_BACKUP" => "single supervisor card: running on the primary",
        "L_ALL" => "single supervisor card: one instance, on the primary",
        _ => "",
    };
    [
        (LOCATION_INTENDED, intended.to_string()),
        (LOCATION_ACTUAL, "L_PRIMARY".to_string()),
        (LOCATION_REASON, reason.to_string()),
    ]
}

/// Default time a new version must stay up in UpdateContainer (tpcm.toml `upgrade_grace_secs`).
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default longest run of an upgrade hook (tpcm.toml `hook_timeout_secs`).
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// The settings a StartContainerRequest asks for (everything but the image and the name),
/// checked by the same rules as `--args` ([`ContainerSettings::check`] and the spec's value
/// checks), with no text in between. Errors are INVALID_ARGUMENT naming the field, or NOT_FOUND
/// for a volume that does not exist.
pub(super) fn start_settings(
    store: &Store,
    r: &proto::StartContainerRequest,
) -> Result<ContainerSettings, Status> {
    let refused = |m: String| Status::invalid_argument(format!("StartContainer: {m}"));
    let setting = |e: SettingError| refused(e.message);
    // Ports need the container's own network: with ports and no network named, the bridge is
    // chosen (upstream's default, host, would silently publish nothing).
    // On the host network a port is the container's own (internal and external equal, as
    // docker ignores them there; the shared check refuses unequal ones).
    let network = match (r.network.as_str(), r.ports.is_empty()) {
        ("host", _) | ("", true) => Network::Host,
        ("" | "bridge", false) | ("bridge", true) => Network::Bridge,
        ("none", true) => Network::None,
        ("none", false) => {
            return Err(refused(
                "ports need network bridge or host, not \"none\"".to_string(),
            ));
        }
        (other, _) => {
            return Err(refused(format!(
                "network {other:?} is not supported (use host, none or bridge)"
            )));
        }
    };
    let mut s = ContainerSettings {
        network,
        ..Default::default()
    };
    for p in &r.ports {
        let port = |n: u32| u16::try_from(n).ok().filter(|&n| n > 0);
        let (Some(external), Some(internal)) = (port(p.external), port(p.internal)) else {
            return Err(refused(format!(
                "port {}:{} is not a pair of ports 1 to 65535",
                p.external, p.internal
            )));
        };
        // The proto's Port has no protocol: each is forwarded for TCP and UDP.
        for protocol in ["tcp", "udp"] {
            s.ports.push(PortMapping {
                host: external,
                container: internal,
                protocol: protocol.into(),
            });
        }
    }
    let mut env: Vec<_> = r.environment.iter().collect();
    env.sort();
    for (k, v) in env {
        tpc_spec::check_env_name(k)
            .and_then(|()| tpc_spec::check_env_value(k, v))
            .map_err(|_| refused(format!("bad environment variable {k:?}")))?;
        s.env.push(format!("{k}={v}"));
    }
    for v in &r.volumes {
        let (host, volume_ro) = volumes::host_path(store, &v.name).map_err(super::status_of)?;
        if !v.mount_point.starts_with('/') {
            return Err(refused(format!(
                "volume {}: mount_point {:?} must be an absolute path",
                v.name, v.mount_point
            )));
        }
        s.volumes.push(VolumeMount {
            host,
            container: v.mount_point.clone(),
            read_only: v.read_only || volume_ro,
        });
    }
    if let Some(cap) = &r.cap {
        for (list, names, flag) in [
            (&mut s.cap_add, &cap.add, "--cap-add"),
            (&mut s.cap_drop, &cap.remove, "--cap-drop"),
        ] {
            for c in names {
                let c = tpc_spec::capability_name(flag, c).map_err(setting)?;
                if !list.contains(&c) {
                    list.push(c);
                }
            }
        }
    }
    if let Some(restart) = &r.restart {
        // The proto names FAILED_PRECONDITION for an invalid restart policy.
        let policy = Policy::try_from(restart.policy).map_err(|_| {
            Status::failed_precondition(format!(
                "StartContainer: restart policy {} is not one of the proto's",
                restart.policy
            ))
        })?;
        s.restart = match policy {
            Policy::None => RestartPolicy::No,
            Policy::Always => RestartPolicy::Always,
            Policy::UnlessStopped => RestartPolicy::UnlessStopped,
            Policy::OnFailure => RestartPolicy::OnFailure {
                max_retries: Some(restart.attempts).filter(|&n| n > 0),
            },
        };
    }
    if let Some(run_as) = &r.run_as
        && !run_as.user.is_empty()
    {
        let user = if run_as.group.is_empty() {
            run_as.user.clone()
        } else {
            format!("{}:{}", run_as.user, run_as.group)
        };
        tpc_spec::check_user(&user).map_err(setting)?;
        s.user = Some(user);
    }
    s.labels = r.labels.clone().into_iter().collect();
    // The location is kept as a label (as the reference server does); a label of that name
    // that says otherwise is refused.
    let location = intended_location(r)?;
    match s.labels.get(LOCATION_INTENDED) {
        Some(given) if given != location => {
            return Err(refused(format!(
                "label {LOCATION_INTENDED}={given} contradicts the location field ({location}); leave the label out"
            )));
        }
        _ => {
            s.labels
                .insert(LOCATION_INTENDED.to_string(), location.to_string());
        }
    }
    if let Some(l) = &r.limits {
        if l.max_cpu < 0.0 || l.soft_mem_bytes < 0 || l.hard_mem_bytes < 0 {
            return Err(refused("limits must not be negative".into()));
        }
        if l.max_cpu > 0.0 {
            tpc_spec::check_cpus(l.max_cpu, &format!("max_cpu {}", l.max_cpu)).map_err(setting)?;
            s.cpus = Some(l.max_cpu);
        }
        let bytes = |n: i64, field: &str| format!("{field} {n}");
        s.memory = tpc_spec::memory_limit(
            "--memory",
            l.hard_mem_bytes as u64,
            &bytes(l.hard_mem_bytes, "hard_mem_bytes"),
        )
        .map_err(setting)?;
        s.memory_reservation = tpc_spec::memory_limit(
            "--memory-reservation",
            l.soft_mem_bytes as u64,
            &bytes(l.soft_mem_bytes, "soft_mem_bytes"),
        )
        .map_err(setting)?;
    }
    for d in &r.devices {
        use proto::device::Permission;
        let mut perms = String::new();
        for p in &d.permissions {
            let known = Permission::try_from(*p).map_err(|_| {
                refused(format!(
                    "device {}: permission {p} is not one of the proto's",
                    d.src_path
                ))
            })?;
            let letter = match known {
                Permission::Read => 'r',
                Permission::Write => 'w',
                Permission::Mknod => 'm',
                Permission::Unspecified => continue,
            };
            if !perms.contains(letter) {
                perms.push(letter);
            }
        }
        if perms.is_empty() {
            perms = "rwm".into();
        }
        let dst = if d.dst_path.is_empty() {
            &d.src_path
        } else {
            &d.dst_path
        };
        if !d.src_path.starts_with('/') || !dst.starts_with('/') {
            return Err(refused(format!(
                "device {}: src_path and dst_path must be absolute paths",
                d.src_path
            )));
        }
        s.devices.push(DeviceMapping {
            host: d.src_path.clone().into(),
            container: dst.clone(),
            permissions: perms,
        });
    }
    if !r.cmd.trim().is_empty() {
        s.command = shell_words::split(&r.cmd).map_err(|e| refused(format!("cmd: {e}")))?;
    }
    s.check().map_err(setting)?;
    Ok(s)
}

/// A TPC name for an instance the client did not name: the image's last path part and a
/// random suffix.
fn pick_name(image_name: &str) -> String {
    let base: String = image_name
        .rsplit('/')
        .next()
        .unwrap_or("tpc")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(20)
        .collect();
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "tpc" } else { base };
    format!("{base}-{}", manager::random_suffix())
}

/// StartContainer: creates and starts an instance; with only `instance_name` set, starts an
/// existing stopped one.
pub(super) async fn start<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::StartContainerRequest,
) -> Result<proto::StartContainerResponse, Status> {
    let ok = |name: String| proto::StartContainerResponse {
        response: Some(proto::start_container_response::Response::StartOk(
            proto::StartOk { instance_name: name },
        )),
    };
    let store = Store::new(&shared.settings.root);
    if r.image_name.is_empty() {
        if r.instance_name.is_empty() {
            return Err(Status::invalid_argument(
                "StartContainer: give image_name to create an instance, or instance_name to start one",
            ));
        }
        let name = r.instance_name.clone();
        on_manager(shared, {
            let name = name.clone();
            move |s| async move {
                validate_name(&name)?;
                not_a_plugin(&Store::new(&s.settings.root), &name)?;
                // The proto: an instance that exists and runs is an error, not a start.
                if tpc::is_running(&s.runtime, &s.settings, &name).await? {
                    return Err(manager::Error::AlreadyExists(format!(
                        "container instance {name} is already running"
                    )));
                }
                tpc::start(&s.runtime, &s.settings, &name).await
            }
        })
        .await?;
        return Ok(ok(name));
    }
    let reference = super::held_reference(&r.image_name, &r.tag)?;
    let name = if r.instance_name.is_empty() {
        pick_name(&r.image_name)
    } else {
        r.instance_name.clone()
    };
    validate_name(&name).map_err(super::status_of)?;
    let container = start_settings(&store, &r)?;
    on_manager(shared, {
        let name = name.clone();
        move |s| async move {
            let source = ImageSource::Present(reference);
            let quiet: Arc<dyn manager::Progress> = Arc::new(super::images::Quiet);
            let request = InstallRequest {
                source: &source,
                settings: RequestedSettings {
                    container,
                    args: String::new(),
                },
                plugin: None,
            };
            tpc::install(&s.runtime, &s.settings, &name, &request, quiet, &|m| {
                tracing::debug!("{m}")
            })
            .await
        }
    })
    .await?;
    tracing::info!(instance = %name, "StartContainer started an instance");
    Ok(ok(name))
}

/// StopContainer: graceful (the instance's stop signal, SIGKILL after its grace time) or, with
/// `force`, SIGKILL at once; with `restart`, started again afterwards. An instance that does not
/// run is FAILED_PRECONDITION, an unknown one NOT_FOUND.
pub(super) async fn stop<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::StopContainerRequest,
) -> Result<proto::StopContainerResponse, Status> {
    on_manager(shared, move |s| async move {
        validate_name(&r.instance_name)?;
        not_a_plugin(&Store::new(&s.settings.root), &r.instance_name)?;
        // The proto: stopping an instance that does not run is an error.
        if !tpc::is_running(&s.runtime, &s.settings, &r.instance_name).await? {
            return Err(manager::Error::InUse(format!(
                "container instance {} is not running",
                r.instance_name
            )));
        }
        tpc::stop_within(&s.runtime, &s.settings, &r.instance_name, r.force).await?;
        if r.restart {
            tpc::start(&s.runtime, &s.settings, &r.instance_name).await?;
        }
        Ok(())
    })
    .await?;
    Ok(proto::StopContainerResponse {})
}

/// RemoveContainer: FAILED_PRECONDITION while running unless `force` (then killed first). The
/// instance's image stays (it is managed with RemoveImage); its `/tpc` data directory stays, as
/// with `tpcm uninstall`.
pub(super) async fn remove<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::RemoveContainerRequest,
) -> Result<proto::RemoveContainerResponse, Status> {
    let name = r.name.clone();
    on_manager(shared, move |s| async move {
        let store = Store::new(&s.settings.root);
        validate_name(&r.name)?;
        if store.get(&r.name)?.is_none() {
            return Err(manager::Error::NotFound(format!(
                "no container instance named {}",
                r.name
            )));
        }
        not_a_plugin(&store, &r.name)?;
        if let ContainerState::Running { .. } = s.runtime.container_state(&r.name).await?
            && !r.force
        {
            return Err(manager::Error::InUse(format!(
                "container {} is running; stop it first or force",
                r.name
            )));
        }
        tpc::uninstall_with(&s.runtime, &s.settings, &r.name, false, r.force, &|m| {
            tracing::debug!("{m}")
        })
        .await
    })
    .await?;
    shared.updates.lock().expect("update map").remove(&name);
    Ok(proto::RemoveContainerResponse {})
}

/// FAILED_PRECONDITION for the container RPCs on a plugin: StopPlugin and RemovePlugin manage
/// it, so its socket and driver state go with it.
fn not_a_plugin(store: &Store, name: &str) -> Result<(), manager::Error> {
    match store.get(name)? {
        Some(record) if record.plugin.is_some() => Err(manager::Error::InUse(format!(
            "{name} is a plugin; StopPlugin and RemovePlugin manage it"
        ))),
        _ => Ok(()),
    }
}

/// What ListContainer reports for a TPC: RUNNING while its process runs; STOPPED once it
/// exited or was stopped on request; PRESENT when it exists, is not running, and nobody asked
/// it to stop (created but not started yet, e.g. before `tpcm boot`).
fn listed_status(state: &ContainerState, wanted_running: bool) -> Listed {
    match state {
        ContainerState::Running { .. } => Listed::Running,
        ContainerState::Exited { .. } => Listed::Stopped,
        _ if !wanted_running => Listed::Stopped,
        _ => Listed::Present,
    }
}

/// ListContainer: every TPC (gNOI instance or CLI install). Running ones only unless `all`.
/// Filters: `name`, `image` (familiar or full reference), `status` (RUNNING, STOPPED,
/// PRESENT), `label` (`key` or `key=value`).
pub(super) async fn list<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::ListContainerRequest,
) -> Result<super::ResponseStream<proto::ListContainerResponse>, Status> {
    super::check_filter_keys(
        "ListContainer",
        r.filter.iter().map(|f| f.key.as_str()),
        &["name", "image", "status", "label"],
    )?;
    let updates = shared.updates.lock().expect("update map").clone();
    let entries = on_manager(shared, |s| async move {
        let store = Store::new(&s.settings.root);
        let mut out = Vec::new();
        // Plugins are listed by ListPlugins, as docker lists them apart from its containers.
        for record in store.list()?.into_iter().filter(|r| r.plugin.is_none()) {
            let state = s.runtime.container_state(&record.name).await?;
            let mut labels = container_labels(&record.name, &record.spec.settings);
            let pid = match state {
                ContainerState::Running { pid } => Some(pid),
                _ => None,
            };
            let observed = manager::status::get(&store, &record.name);
            if let Some(health) = manager::health::shown(&record, &observed, pid) {
                labels.insert(HEALTH_LABEL.to_string(), health.to_string());
            }
            labels.insert(RESTARTS_LABEL.to_string(), observed.restart_count.to_string());
            if let Some(exit) = observed.last_exit {
                labels.insert(LAST_EXIT_LABEL.to_string(), exit.code.to_string());
            }
            out.push((record, state, labels));
        }
        Ok(out)
    })
    .await?;
    let mut out = Vec::new();
    for (record, state, mut labels) in entries {
        let status = listed_status(&state, record.running);
        if !r.all && status != Listed::Running {
            continue;
        }
        let (name, tag) = super::familiar(record.image());
        let image_name = if tag.is_empty() {
            name.clone()
        } else {
            format!("{name}:{tag}")
        };
        labels.insert(IMAGE_LABEL.to_string(), record.image().to_string());
        let intended = record.spec.settings.labels.get(LOCATION_INTENDED).cloned();
        for (key, value) in location_labels(intended.as_deref()) {
            labels.insert(key.to_string(), value);
        }
        if let Some(u) = updates.get(&record.name) {
            labels.insert(UPDATE_LABEL.to_string(), u.clone());
        }
        let keep = r.filter.iter().all(|f| {
            f.value.iter().any(|v| match f.key.as_str() {
                "name" => v == &record.name,
                "image" => v == &image_name || v == &name || v == record.image(),
                "status" => v.eq_ignore_ascii_case(status.as_str_name()),
                _ => match v.split_once('=') {
                    Some((k, val)) => labels.get(k).is_some_and(|x| x == val),
                    None => labels.contains_key(v),
                },
            })
        });
        if !keep {
            continue;
        }
        let hash = record
            .spec
            .image
            .digest
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .map(|hash| proto::gnoi::types::HashType {
                method: proto::gnoi::types::hash_type::HashMethod::Sha256 as i32,
                hash,
            });
        out.push(Ok(proto::ListContainerResponse {
            id: record.name.clone(),
            name: record.name,
            image_name,
            status: status as i32,
            labels,
            hash,
        }));
        if r.limit > 0 && out.len() >= r.limit as usize {
            break;
        }
    }
    Ok(Box::pin(tokio_stream::iter(out)))
}

/// UpdateContainer: break before make, through `tpcm upgrade` (hooks, health gate, rollback
/// onto the kept writable layer). The top-level `image_name`/`image_tag` win over `params`
/// (upstream issue 315); `params`, when given, replace the instance's settings, else they are
/// kept. With `async` the call returns once the request is checked; the outcome appears as
/// label `io.tpcm.update` in ListContainer (`pending`, `updated`, `failed: <reason>`).
pub(super) async fn update<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::UpdateContainerRequest,
) -> Result<proto::UpdateContainerResponse, Status> {
    let name = r.instance_name.clone();
    validate_name(&name).map_err(super::status_of)?;
    let store = Store::new(&shared.settings.root);
    let Some(current) = store.get(&name).map_err(|e| super::status_of(e.into()))? else {
        return Err(Status::not_found(format!(
            "UpdateContainer: no container instance named {name}"
        )));
    };
    not_a_plugin(&store, &name).map_err(super::status_of)?;
    let params = r.params.clone();
    let image_name = if !r.image_name.is_empty() {
        r.image_name.clone()
    } else {
        params.as_ref().map(|p| p.image_name.clone()).unwrap_or_default()
    };
    let image_tag = if !r.image_tag.is_empty() {
        r.image_tag.clone()
    } else {
        params.as_ref().map(|p| p.tag.clone()).unwrap_or_default()
    };
    let reference = super::held_reference(&image_name, &image_tag)?;
    let requested = match &params {
        None => None,
        Some(p) => {
            let mut container = start_settings(&store, p)?;
            // The location is fixed for an instance's life (the proto): unset keeps it, another
            // one is refused.
            let was = current
                .spec
                .settings
                .labels
                .get(LOCATION_INTENDED)
                .cloned()
                .unwrap_or_else(|| "L_PRIMARY".to_string());
            let asked = container
                .labels
                .get(LOCATION_INTENDED)
                .cloned()
                .unwrap_or_default();
            if p.location != 0 && asked != was {
                return Err(Status::invalid_argument(format!(
                    "UpdateContainer: the location of {name} is {was} and cannot be changed to {asked}; remove the instance and start it again"
                )));
            }
            container.labels.insert(LOCATION_INTENDED.to_string(), was);
            Some(RequestedSettings {
                container,
                args: String::new(),
            })
        }
    };
    let present = on_manager(shared, {
        let reference = reference.clone();
        move |s| async move {
            manager::list_images(&s.runtime)
                .await
                .map(|l| l.iter().any(|i| i.name == reference))
        }
    })
    .await?;
    if !present {
        return Err(Status::not_found(format!(
            "UpdateContainer: no image named {reference}; deploy it first"
        )));
    }
    let config = crate::config::FileConfig::load(&shared.settings.root).map_err(Status::internal)?;
    let grace = config
        .upgrade_grace_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_GRACE);
    let hook_timeout = config
        .hook_timeout_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_HOOK_TIMEOUT);
    let run = {
        let name = name.clone();
        move |s: Arc<Shared<R>>| async move {
            let source = ImageSource::Present(reference);
            let request = UpgradeRequest {
                source: &source,
                settings: requested,
                skip_data: false,
                grace,
                hook_timeout,
            };
            let quiet: Arc<dyn manager::Progress> = Arc::new(super::images::Quiet);
            manager::upgrade::upgrade(&s.runtime, &s.settings, &name, &request, quiet, &|m| {
                tracing::debug!("{m}")
            })
            .await
        }
    };
    let ok = |is_async| proto::UpdateContainerResponse {
        response: Some(proto::update_container_response::Response::UpdateOk(
            proto::UpdateOk {
                instance_name: r.instance_name.clone(),
                is_async,
            },
        )),
    };
    let record = move |shared: &Arc<Shared<R>>, outcome: &Result<UpgradeOutcome, Status>| {
        let text = match outcome {
            Ok(_) => "updated".to_string(),
            Err(e) => format!("failed: {}", e.message()),
        };
        tracing::info!(instance = %name, outcome = %text, "UpdateContainer finished");
        shared
            .updates
            .lock()
            .expect("update map")
            .insert(name.clone(), text);
    };
    if r.r#async {
        let slot = shared.async_updates.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "UpdateContainer: {} asynchronous updates are running already; wait for one to finish",
                super::MAX_ASYNC_UPDATES
            ))
        })?;
        shared
            .updates
            .lock()
            .expect("update map")
            .insert(r.instance_name.clone(), "pending".into());
        let shared = shared.clone();
        let running = shared.updates_running.clone().read_owned().await;
        tokio::spawn(async move {
            let _running = (running, slot);
            let outcome = on_manager(&shared, run).await;
            record(&shared, &outcome);
        });
        return Ok(ok(true));
    }
    let outcome = on_manager(shared, run).await;
    record(shared, &outcome);
    outcome.map(|_| ok(false))
}

/// Writes whole lines of log output as LogResponse messages (one per line, newline kept);
/// each stream's unfinished line is held apart, so interleaved streams do not mix.
struct LineSink {
    tx: mpsc::Sender<Result<proto::LogResponse, Status>>,
    partial: [Vec<u8>; 3],
}

fn stream_slot(stream: Option<crate::runtime::logs::Stream>) -> usize {
    match stream {
        Some(crate::runtime::logs::Stream::Stdout) => 0,
        Some(crate::runtime::logs::Stream::Stderr) => 1,
        None => 2,
    }
}

impl LineSink {
    fn send(&self, line: &[u8]) -> std::io::Result<()> {
        let msg = proto::LogResponse {
            msg: String::from_utf8_lossy(line).into_owned(),
        };
        self.tx
            .blocking_send(Ok(msg))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl crate::runtime::logs::LogOutput for LineSink {
    fn write(&mut self, stream: Option<crate::runtime::logs::Stream>, buf: &[u8]) -> std::io::Result<()> {
        let partial = &mut self.partial[stream_slot(stream)];
        partial.extend_from_slice(buf);
        if partial.ends_with(b"\n") {
            let line = std::mem::take(partial);
            self.send(&line)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log: the instance's output so far, line by line; with `follow`, new lines as they are
/// written while the instance runs (the proto: an instance no longer running streams its latest
/// logs and returns), until the client cancels.
pub(super) async fn log<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::LogRequest,
) -> Result<super::ResponseStream<proto::LogResponse>, Status> {
    let target = tpc::log_target(&shared.settings, &r.instance_name).map_err(super::status_of)?;
    let shutdown = shared.shutdown.clone();
    // Each stream holds a thread while it reads, and while it waits for output or for a slow
    // client: a bounded number of them, so clients cannot take every thread the server has.
    let permit = shared.log_streams.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "Log: {} log streams are open already; close one first",
            super::MAX_LOG_STREAMS
        ))
    })?;
    // Only a running instance is followed (the proto), until its process exits and what it
    // wrote last was read; asked only when following is.
    let follow = match r.follow {
        true => {
            let store = Store::new(&shared.settings.root);
            FollowEnd::watch(shared.clone(), |s| &s.runtime, &store, &r.instance_name).await
        }
        false => None,
    };
    let (tx, rx) = mpsc::channel(64);
    // The reader owns the follow's end: when it is done, the exit watcher goes too.
    tokio::task::spawn_blocking(move || {
        let mut sink = LineSink {
            tx: tx.clone(),
            partial: Default::default(),
        };
        let options = crate::runtime::logs::ReadOptions::default();
        let mut result = crate::runtime::logs::read_tail(&target, &options, &mut sink);
        if let Some(end) = follow
            && let Ok(from) = result
        {
            let closed = tx.clone();
            // Ends when the client goes, the server stops, the instance is removed, or its
            // process exited and its last output was read.
            let stop = || closed.is_closed() || shutdown.is_cancelled() || end.reached();
            result = crate::runtime::logs::follow(&target, from, &options, &mut sink, &stop);
        }
        drop(permit);
        match result {
            Ok(_) => {
                // Unfinished lines are sent as they are.
                for rest in std::mem::take(&mut sink.partial) {
                    if !rest.is_empty() {
                        let _ = sink.send(&rest);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::internal(format!("cannot read the log: {e}"))));
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_start_request_becomes_checked_settings() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        volumes::create(
            &store,
            &volumes::VolumeRequest {
                name: "v1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let r = proto::StartContainerRequest {
            cmd: "sh -c 'echo hi; sleep 9'".into(),
            environment: env_map(&[("B", "2"), ("A", "x y")]),
            volumes: vec![proto::Volume {
                name: "v1".into(),
                mount_point: "/data".into(),
                read_only: true,
            }],
            cap: Some(proto::start_container_request::Capabilities {
                add: vec!["net_admin".into()],
                remove: vec!["CAP_CHOWN".into()],
            }),
            restart: Some(proto::start_container_request::Restart {
                policy: Policy::OnFailure as i32,
                attempts: 3,
            }),
            limits: Some(proto::start_container_request::Limits {
                max_cpu: 0.5,
                soft_mem_bytes: 32 << 20,
                hard_mem_bytes: 64 << 20,
            }),
            labels: env_map(&[("team", "noc")]),
            ..Default::default()
        };
        let parsed = start_settings(&store, &r).unwrap();
        assert_eq!(parsed.env, vec!["A=x y".to_string(), "B=2".to_string()]);
        assert_eq!(parsed.command, vec!["sh", "-c", "echo hi; sleep 9"]);
        assert_eq!(parsed.cap_add, vec!["CAP_NET_ADMIN".to_string()]);
        assert_eq!(parsed.cap_drop, vec!["CAP_CHOWN".to_string()]);
        assert_eq!(parsed.cpus, Some(0.5));
        assert_eq!(parsed.memory, Some(64 << 20));
        assert_eq!(parsed.memory_reservation, Some(32 << 20));
        assert!(parsed.volumes[0].read_only && parsed.volumes[0].container == "/data");
        assert_eq!(parsed.restart.to_string(), "on-failure:3");
        assert_eq!(parsed.labels.get("team").map(String::as_str), Some("noc"));

        let missing = proto::StartContainerRequest {
            volumes: vec![proto::Volume {
                name: "nope".into(),
                mount_point: "/x".into(),
                read_only: false,
            }],
            ..Default::default()
        };
        assert_eq!(
            start_settings(&store, &missing).unwrap_err().code(),
            tonic::Code::NotFound
        );
        let bad = proto::StartContainerRequest {
            network: "bridge0".into(),
            ..Default::default()
        };
        assert_eq!(
            start_settings(&store, &bad).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let bad_cap = proto::StartContainerRequest {
            cap: Some(proto::start_container_request::Capabilities {
                add: vec!["FLY".into()],
                remove: vec![],
            }),
            ..Default::default()
        };
        assert_eq!(
            start_settings(&store, &bad_cap).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn statuses_follow_the_documented_rules() {
        assert_eq!(
            listed_status(&ContainerState::Running { pid: 1 }, false),
            Listed::Running
        );
        assert_eq!(
            listed_status(&ContainerState::Exited { code: 0 }, true),
            Listed::Stopped
        );
        assert_eq!(listed_status(&ContainerState::Stopped, false), Listed::Stopped);
        assert_eq!(listed_status(&ContainerState::Stopped, true), Listed::Present);
    }

    #[test]
    fn picked_names_are_valid_tpc_names() {
        for image in ["busybox", "127.0.0.1:5000/Acme/My_App", "___"] {
            let n = pick_name(image);
            assert!(validate_name(&n).is_ok(), "{n}");
        }
    }
}
