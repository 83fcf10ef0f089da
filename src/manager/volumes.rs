//! Named volumes (gNOI CreateVolume / RemoveVolume / ListVolume): host directories a container
//! binds by name. containerd has no volume concept, so tpcm keeps them itself, docker's `local`
//! driver style: `<store>/volumes/<name>.json` describes the volume, and its data lives in
//! `<store>/volumes/<name>/data` — or, when the volume was created with a mountpoint, in that
//! existing host directory (docker's `type=none,o=bind,device=<dir>`). Both are under `/host`
//! on a switch, so volumes survive a SONiC image upgrade with the TPCs that use them.

use super::Error;
use super::plugins::config::VOLUME_DRIVER;
use super::plugins::driver::PluginClient;
use super::store::{Store, TpcRecord, write_atomic};
use crate::config::Settings;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// mount(8) options the local driver accepts: every volume is a bind mount, and `ro` makes the
/// volume read-only for every container that mounts it.
const ACCEPTED_OPTIONS: &[&str] = &["bind", "rbind", "ro", "rw"];

/// A volume as stored and listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// Its name (`[a-z0-9][a-z0-9_.-]{0,63}`).
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The driver: `local`, or the serving plugin's `<instance>:latest`.
    pub driver: String,
    /// The driver options as given (`type`, `o`, `device`), as docker lists them.
    pub options: BTreeMap<String, String>,
    /// Labels given at creation.
    pub labels: BTreeMap<String, String>,
    /// The host directory a container binds.
    pub host_path: PathBuf,
    /// Whether the volume was created read-only (option `ro`).
    pub read_only: bool,
    /// Whether tpcm made the directory (and removes it with the volume).
    pub owned_dir: bool,
    /// The plugin instance whose volume driver serves it (a custom volume); `None`: local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

/// What CreateVolume asks for.
#[derive(Debug, Clone, Default)]
pub struct VolumeRequest {
    /// Name; empty = tpcm picks one.
    pub name: String,
    /// mount(8) `-o` options.
    pub options: Vec<String>,
    /// An existing host directory to bind instead of one tpcm makes.
    pub mountpoint: Option<PathBuf>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

fn volumes_dir(store: &Store) -> PathBuf {
    store.root().join("volumes")
}

fn record_path(store: &Store, name: &str) -> PathBuf {
    volumes_dir(store).join(format!("{name}.json"))
}

/// Checks a volume name (it becomes a file and directory name).
pub fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && matches!(b, b'_' | b'-' | b'.'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid volume name {name:?}: use 1 to 64 of a-z, 0-9, '_', '-' and '.', starting with a letter or digit"
        )))
    }
}

/// Creates a volume; returns it. An existing name is ALREADY_EXISTS.
pub fn create(store: &Store, request: &VolumeRequest) -> Result<Volume, Error> {
    let name = if request.name.is_empty() {
        format!("vol-{}", super::random_suffix())
    } else {
        request.name.clone()
    };
    validate_name(&name)?;
    let mut read_only = false;
    for o in &request.options {
        if !ACCEPTED_OPTIONS.contains(&o.as_str()) {
            return Err(Error::Invalid(format!(
                "volume {name}: mount option {o:?} is not supported (the local driver binds a directory; use {})",
                ACCEPTED_OPTIONS.join(", ")
            )));
        }
        read_only = match o.as_str() {
            "ro" => true,
            "rw" => false,
            _ => read_only,
        };
    }
    let _lock = store.lock(&format!("_volume-{name}"))?;
    if get(store, &name)?.is_some() {
        return Err(Error::AlreadyExists(format!("volume {name} already exists")));
    }
    let (host_path, owned_dir) = match &request.mountpoint {
        Some(dir) => {
            if !dir.is_absolute() || !dir.is_dir() {
                return Err(Error::Invalid(format!(
                    "volume {name}: mountpoint {} is not an existing absolute directory",
                    dir.display()
                )));
            }
            (dir.clone(), false)
        }
        None => (volumes_dir(store).join(&name).join("data"), true),
    };
    let mut options = BTreeMap::new();
    options.insert("type".to_string(), "none".to_string());
    if !request.options.is_empty() {
        options.insert("o".to_string(), request.options.join(","));
    }
    if let Some(dir) = &request.mountpoint {
        options.insert("device".to_string(), dir.display().to_string());
    }
    let volume = Volume {
        name: name.clone(),
        created: super::now_secs(),
        driver: "local".into(),
        options,
        labels: request.labels.clone(),
        host_path,
        read_only,
        owned_dir,
        plugin: None,
    };
    if owned_dir {
        std::fs::create_dir_all(&volume.host_path)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", volume.host_path.display())))?;
    }
    let bytes = serde_json::to_vec_pretty(&volume).expect("volumes serialize");
    if let Err(e) = write_atomic(&record_path(store, &name), &bytes) {
        if owned_dir {
            let _ = std::fs::remove_dir_all(volumes_dir(store).join(&name));
        }
        return Err(e.into());
    }
    Ok(volume)
}

/// The volume by that name, if any.
pub fn get(store: &Store, name: &str) -> Result<Option<Volume>, Error> {
    validate_name(name)?;
    let path = record_path(store, name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Internal(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Every volume, by name.
pub fn list(store: &Store) -> Result<Vec<Volume>, Error> {
    let dir = volumes_dir(store);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::Internal(format!("cannot read {}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".json")
            && validate_name(name).is_ok()
            && let Some(v) = get(store, name)?
        {
            out.push(v);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The TPCs whose container binds this volume's directory.
pub fn users(store: &Store, volume: &Volume) -> Result<Vec<String>, Error> {
    Ok(store
        .list()?
        .into_iter()
        .filter(|r| r.spec.settings.volumes.iter().any(|m| m.host == volume.host_path))
        .map(|r| r.name)
        .collect())
}

/// Removes a volume: FAILED_PRECONDITION while a container uses it, unless `force` (the
/// containers keep their bind until they are recreated). A directory tpcm made goes with it; a
/// custom volume is removed by its driver first (a driver's refusal keeps it).
pub async fn remove(settings: &Settings, name: &str, force: bool) -> Result<(), Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    let store = &store;
    let _lock = store.lock(&format!("_volume-{name}"))?;
    let volume = get(store, name)?.ok_or_else(|| Error::NotFound(format!("no volume named {name}")))?;
    let users = users(store, &volume)?;
    if !users.is_empty() && !force {
        return Err(Error::InUse(format!(
            "volume {name} is used by {}; remove those containers first or force",
            users.join(", ")
        )));
    }
    if let Some(plugin) = &volume.plugin {
        match driver(settings, plugin) {
            Ok(client) => {
                client
                    .call("/VolumeDriver.Remove", &serde_json::json!({"Name": name}))
                    .await
                    .map_err(Error::InUse)?;
            }
            Err(Error::NotFound(_)) if force => {
                tracing::warn!(volume = %name, plugin = %plugin, "the volume's plugin is gone: only its record is removed");
            }
            Err(Error::NotFound(_)) => {
                return Err(Error::InUse(format!(
                    "volume {name}'s plugin {plugin} is gone, so its driver cannot remove it; force removes the record alone"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    let path = record_path(store, name);
    std::fs::remove_file(&path)
        .map_err(|e| Error::Internal(format!("cannot remove {}: {e}", path.display())))?;
    if volume.owned_dir {
        let dir = volumes_dir(store).join(name);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("cannot remove {}: {e}", dir.display())))?;
    }
    // Held here; the volume is gone, so is its lock file.
    store.remove_lock_file(&format!("_volume-{name}"));
    Ok(())
}

/// A plugin whose volume a TPC that should run binds cannot stop (as docker refuses to disable
/// a plugin in use): those containers would lose their mounts' driver. Anything else may.
pub(super) fn check_plugin_stop(store: &Store, record: &TpcRecord) -> Result<(), Error> {
    if record.plugin.is_none() {
        return Ok(());
    }
    let mut running = Vec::new();
    for v in of_plugin(store, &record.name)? {
        for user in users(store, &v)? {
            if store.get(&user)?.is_some_and(|u| u.running) {
                running.push(format!("{user} (volume {})", v.name));
            }
        }
    }
    if running.is_empty() {
        return Ok(());
    }
    Err(Error::InUse(format!(
        "plugin {} serves volumes that running containers use: {}; stop them first",
        record.name,
        running.join(", ")
    )))
}

/// A plugin that still serves volumes cannot be removed (as docker refuses), by RemovePlugin
/// or `tpcm uninstall`.
pub(super) fn check_plugin_removal(store: &Store, record: &TpcRecord) -> Result<(), Error> {
    if record.plugin.is_none() {
        return Ok(());
    }
    let served: Vec<String> = of_plugin(store, &record.name)?
        .into_iter()
        .map(|v| v.name)
        .collect();
    if served.is_empty() {
        return Ok(());
    }
    Err(Error::InUse(format!(
        "plugin {} still serves volumes {}; remove them first",
        record.name,
        served.join(", ")
    )))
}

/// Where a volume's data is on the host, for a container's bind mount.
pub fn host_path(store: &Store, name: &str) -> Result<(PathBuf, bool), Error> {
    let v = get(store, name)?
        .ok_or_else(|| Error::NotFound(format!("no volume named {name}; create it first")))?;
    Ok((v.host_path, v.read_only))
}

/// What CreateVolume with a custom driver asks for.
#[derive(Debug, Clone, Default)]
pub struct DriverVolumeRequest {
    /// Name; empty = tpcm picks one.
    pub name: String,
    /// The plugin instance serving it (`<instance>` or `<instance>:latest`).
    pub plugin: String,
    /// Options passed to the driver's Create.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// The volume driver of plugin `instance`: it must be installed, implement
/// `docker.volumedriver/1.0`, and run.
fn driver(settings: &Settings, instance: &str) -> Result<PluginClient, Error> {
    let instance = super::plugins::instance_name(instance);
    let record = super::plugins::get(settings, instance)?.ok_or_else(|| {
        Error::NotFound(format!(
            "no plugin named {instance}: start it with StartPlugin first"
        ))
    })?;
    if !record.running {
        return Err(Error::InUse(format!(
            "plugin {instance} is stopped; start it (tpcm start {instance}) to use its volumes"
        )));
    }
    let plugin = record.plugin.expect("plugins::get returns plugins");
    if !plugin.config.interface.types.iter().any(|t| t == VOLUME_DRIVER) {
        return Err(Error::Invalid(format!(
            "plugin {instance} is no volume driver (its interface types: {})",
            plugin.config.interface.types.join(", ")
        )));
    }
    Ok(PluginClient::new(
        &format!("{instance}:latest"),
        &super::plugins::socket_path(settings, &plugin),
    ))
}

/// Where a driver's mountpoint (a path inside the plugin, under its propagated mount) is on
/// the host: under the plugin's propagated directory, which the plugin's mounts reach.
fn host_mountpoint(settings: &Settings, instance: &str, inside: &str) -> Result<PathBuf, Error> {
    let store = Store::new(&settings.root);
    let record = super::plugins::get(settings, instance)?
        .ok_or_else(|| Error::NotFound(format!("no plugin named {instance}")))?;
    let plugin = record.plugin.expect("plugins::get returns plugins");
    let root = &plugin.config.propagatedmount;
    let rel = Path::new(inside)
        .strip_prefix(root)
        .ok()
        .filter(|_| !root.is_empty())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "plugin {instance} answered mountpoint {inside}, which is not under its propagated mount {root:?}"
            ))
        })?;
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::Invalid(format!(
            "plugin {instance} answered mountpoint {inside}"
        )));
    }
    Ok(super::plugins::propagated_dir(&store, &record.name).join(rel))
}

/// CreateVolume with a custom driver: the plugin's driver creates it (with the options), and
/// tells where it is (`Path`, else a `Mount`/`Unmount` round); the record keeps that host path,
/// which containers bind. Nothing is kept when the driver refuses.
pub async fn create_with_driver(settings: &Settings, request: &DriverVolumeRequest) -> Result<Volume, Error> {
    let store = Store::new(&settings.root);
    let name = if request.name.is_empty() {
        format!("vol-{}", super::random_suffix())
    } else {
        request.name.clone()
    };
    validate_name(&name)?;
    let _lock = store.lock(&format!("_volume-{name}"))?;
    if get(&store, &name)?.is_some() {
        return Err(Error::AlreadyExists(format!("volume {name} already exists")));
    }
    let instance = super::plugins::instance_name(&request.plugin).to_string();
    let client = driver(settings, &instance)?;
    if !client.implements("VolumeDriver").await.map_err(Error::InUse)? {
        return Err(Error::Invalid(format!(
            "plugin {instance} does not implement VolumeDriver"
        )));
    }
    client
        .call(
            "/VolumeDriver.Create",
            &serde_json::json!({"Name": name, "Opts": request.options}),
        )
        .await
        .map_err(Error::Invalid)?;
    let located = async {
        let path = client
            .call("/VolumeDriver.Path", &serde_json::json!({"Name": name}))
            .await?;
        if let Some(m) = PluginClient::mountpoint(&path) {
            return Ok(m);
        }
        let id = format!("tpcm-create-{}", super::random_suffix());
        let mounted = client
            .call(
                "/VolumeDriver.Mount",
                &serde_json::json!({"Name": name, "ID": id}),
            )
            .await?;
        client
            .call(
                "/VolumeDriver.Unmount",
                &serde_json::json!({"Name": name, "ID": id}),
            )
            .await?;
        PluginClient::mountpoint(&mounted).ok_or_else(|| "the driver gave no mountpoint".to_string())
    }
    .await
    .map_err(Error::Invalid)
    .and_then(|inside| host_mountpoint(settings, &instance, &inside));
    let host_path = match located {
        Ok(p) => p,
        Err(e) => {
            let _ = client
                .call("/VolumeDriver.Remove", &serde_json::json!({"Name": name}))
                .await;
            return Err(e);
        }
    };
    let volume = Volume {
        name: name.clone(),
        created: super::now_secs(),
        driver: format!("{instance}:latest"),
        options: request.options.clone(),
        labels: request.labels.clone(),
        host_path,
        read_only: false,
        owned_dir: false,
        plugin: Some(instance),
    };
    let bytes = serde_json::to_vec_pretty(&volume).expect("volumes serialize");
    if let Err(e) = write_atomic(&record_path(&store, &name), &bytes) {
        let _ = client
            .call("/VolumeDriver.Remove", &serde_json::json!({"Name": name}))
            .await;
        return Err(e.into());
    }
    Ok(volume)
}

/// The custom volumes plugin `instance` serves.
pub fn of_plugin(store: &Store, instance: &str) -> Result<Vec<Volume>, Error> {
    Ok(list(store)?
        .into_iter()
        .filter(|v| v.plugin.as_deref() == Some(instance))
        .collect())
}

/// The custom volumes TPC `record` binds.
/// Host paths of every custom volume (served by a plugin): they exist only while mounted.
pub(super) fn driver_volume_paths(store: &Store) -> Result<Vec<PathBuf>, Error> {
    Ok(list(store)?
        .into_iter()
        .filter(|v| v.plugin.is_some())
        .map(|v| v.host_path)
        .collect())
}

fn driver_volumes(store: &Store, record: &TpcRecord) -> Result<Vec<Volume>, Error> {
    Ok(list(store)?
        .into_iter()
        .filter(|v| v.plugin.is_some())
        .filter(|v| record.spec.settings.volumes.iter().any(|m| m.host == v.host_path))
        .collect())
}

/// How long an Unmount waits for its plugin: it may be stopping too (a shutdown stops every
/// unit at once), and the task it was for has stopped already.
const UNMOUNT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// The custom volumes TPC `name` had its drivers Mount, and not Unmount yet: docker's protocol
/// wants one Unmount per Mount, whichever path starts and stops the task (the unit, a command,
/// an upgrade, the supervisor). Kept in `<store>/containers/<name>/driver-mounts.json`, each
/// with the plugin's incarnation it was made with: a plugin that restarted (or a reboot) lost
/// its mounts and its count of them, so an older entry counts as not mounted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct DriverMounts {
    /// Volume name → the incarnation of its plugin when it was mounted.
    volumes: BTreeMap<String, String>,
}

fn driver_mounts_path(store: &Store, name: &str) -> PathBuf {
    store
        .root()
        .join("containers")
        .join(name)
        .join("driver-mounts.json")
}

/// Which run of plugin `instance` answers on its socket now: this boot, and the socket's inode
/// and time (a plugin makes its socket anew each time it starts). Empty when it has none.
fn incarnation(settings: &Settings, instance: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let socket = super::plugins::get(settings, instance)
        .ok()
        .flatten()
        .and_then(|r| r.plugin)
        .and_then(|p| std::fs::metadata(super::plugins::socket_path(settings, &p)).ok());
    match socket {
        Some(m) => format!("{} {} {}.{}", boot.trim(), m.ino(), m.ctime(), m.ctime_nsec()),
        None => String::new(),
    }
}

fn driver_mounts(store: &Store, name: &str) -> DriverMounts {
    std::fs::read(driver_mounts_path(store, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn put_driver_mounts(store: &Store, name: &str, mounts: &DriverMounts) -> Result<(), Error> {
    let path = driver_mounts_path(store, name);
    if mounts.volumes.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Internal(format!("cannot remove {}: {e}", path.display())))
            }
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent() {
        super::store::create_private_dir(dir)?;
    }
    Ok(write_atomic(
        &path,
        &serde_json::to_vec(mounts).expect("serializes"),
    )?)
}

/// Whether volume `v`'s mount for a TPC, recorded in `mounts`, still stands: made by the run
/// of its plugin that answers now.
fn still_mounted(settings: &Settings, mounts: &DriverMounts, v: &Volume) -> bool {
    match (mounts.volumes.get(&v.name), &v.plugin) {
        (Some(made), Some(plugin)) => !made.is_empty() && *made == incarnation(settings, plugin),
        _ => false,
    }
}

/// Before TPC `record`'s task starts: each custom volume it binds is mounted by its driver
/// (docker's `Mount`, with the TPC's name as the caller's ID), at the path the container binds.
/// A volume mounted for it already (a task restarted without a stop) is not mounted twice. If
/// one fails, those this call mounted are unmounted again.
pub async fn mount_driver_volumes(
    settings: &Settings,
    store: &Store,
    record: &TpcRecord,
) -> Result<(), Error> {
    let mut mounts = driver_mounts(store, &record.name);
    let mut mounted_now = Vec::new();
    let result = async {
        for v in driver_volumes(store, record)? {
            if still_mounted(settings, &mounts, &v) {
                continue;
            }
            let instance = v.plugin.as_deref().expect("driver volumes have a plugin");
            let answer = driver(settings, instance)?
                .call(
                    "/VolumeDriver.Mount",
                    &serde_json::json!({"Name": v.name, "ID": record.name}),
                )
                .await
                .map_err(Error::InUse)?;
            mounts
                .volumes
                .insert(v.name.clone(), incarnation(settings, instance));
            put_driver_mounts(store, &record.name, &mounts)?;
            mounted_now.push(v.name.clone());
            let inside = PluginClient::mountpoint(&answer).unwrap_or_default();
            if host_mountpoint(settings, instance, &inside)? != v.host_path {
                return Err(Error::InUse(format!(
                    "volume {}: its driver now mounts it at {inside}, not where TPC {} binds it; recreate the TPC",
                    v.name, record.name
                )));
            }
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        unmount(settings, store, &record.name, &mut mounts, &mounted_now).await;
    }
    result
}

/// After TPC `name`'s task stopped (or will not start): the drivers unmount what they mounted
/// for it. A driver that fails is logged, and the mount counts as gone: the stop itself
/// succeeded, and the next start mounts again.
pub async fn unmount_driver_volumes(settings: &Settings, store: &Store, name: &str) {
    let mut mounts = driver_mounts(store, name);
    let all: Vec<String> = mounts.volumes.keys().cloned().collect();
    unmount(settings, store, name, &mut mounts, &all).await;
}

async fn unmount(
    settings: &Settings,
    store: &Store,
    name: &str,
    mounts: &mut DriverMounts,
    volumes: &[String],
) {
    for volume in volumes {
        let result = match get(store, volume) {
            // A plugin that restarted since (or a reboot) knows nothing of this mount.
            Ok(Some(v)) if !still_mounted(settings, mounts, &v) => Ok(()),
            Ok(Some(Volume {
                plugin: Some(plugin), ..
            })) => match driver(settings, &plugin) {
                Ok(client) => client
                    .with_patience(UNMOUNT_PATIENCE)
                    .call(
                        "/VolumeDriver.Unmount",
                        &serde_json::json!({"Name": volume, "ID": name}),
                    )
                    .await
                    .map(|_| ()),
                Err(e) => Err(e.to_string()),
            },
            // The volume is gone: so is its mount.
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(volume = %volume, tpc = %name, "unmounting a custom volume: {e}");
        }
        mounts.volumes.remove(volume);
        if let Err(e) = put_driver_mounts(store, name, mounts) {
            tracing::warn!(tpc = %name, "{e}");
        }
    }
}

/// Whether `path` is the data directory of some volume (the janitor never touches those).
pub fn is_volume_path(store: &Store, path: &Path) -> bool {
    list(store)
        .map(|l| l.iter().any(|v| v.host_path == path))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_created_listed_and_removed_with_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let v = create(
            &store,
            &VolumeRequest {
                name: "data1".into(),
                options: vec!["bind".into(), "ro".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(v.read_only && v.host_path.is_dir());
        assert_eq!(v.options.get("o").map(String::as_str), Some("bind,ro"));
        assert!(matches!(
            create(
                &store,
                &VolumeRequest {
                    name: "data1".into(),
                    ..Default::default()
                }
            ),
            Err(Error::AlreadyExists(_))
        ));
        let bad = VolumeRequest {
            name: "x".into(),
            options: vec!["nosuid".into()],
            ..Default::default()
        };
        assert!(matches!(create(&store, &bad), Err(Error::Invalid(_))));
        assert!(get(&store, "x").unwrap().is_none());
        let auto = create(&store, &VolumeRequest::default()).unwrap();
        assert!(auto.name.starts_with("vol-"));
        assert_eq!(list(&store).unwrap().len(), 2);
        let settings = Settings {
            root: dir.path().to_path_buf(),
            ..Settings::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(remove(&settings, "data1", false)).unwrap();
        assert!(!v.host_path.exists());
        assert!(matches!(
            rt.block_on(remove(&settings, "data1", false)),
            Err(Error::NotFound(_))
        ));
    }
}
