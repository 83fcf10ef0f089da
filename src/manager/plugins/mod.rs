//! gNOI containerz plugins on containerd: docker's managed plugins (a root filesystem and a
//! `config.json`), run as TPCs.
//!
//! - Deploy with `is_plugin` stores the uploaded tarball as it came, in
//!   `<store>/plugins/tars/<name>.tar`, with its size and digest beside it ([`TarWriter`]).
//! - StartPlugin turns the tarball into a one-layer image (`rootfs.rs`), imports it, and
//!   installs a TPC named after the instance from it, with the settings its config gives
//!   (`config.rs`), its socket directory `<plugin sockets>/<id>/` on the host mounted at
//!   `/run/docker/plugins` inside (docker's place), and its propagated mount: a host directory
//!   made a shared mount point and bound `rshared`, so the mounts the plugin makes there (a
//!   volume driver's volumes) reach the host. The record says it is a plugin (`PluginSpec`), so
//!   it comes back at boot, is saved by `migrate save` and is never the janitor's, like any TPC,
//!   and ListContainer leaves it out.
//! - StopPlugin stops it (it stays stopped across reboots); RemovePlugin uninstalls it; the
//!   tarball stays until RemovePluginTar.

pub mod config;
pub mod driver;
pub mod rootfs;

use super::Error;
use super::store::{Store, TpcRecord, write_atomic};
use crate::config::Settings;
pub use crate::tpc_spec::plugin::PluginSpec as Plugin;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a plugin's socket directory appears inside it (docker's place).
pub const SOCKET_DIR_INSIDE: &str = "/run/docker/plugins";

/// A stored tarball, as `<name>.json` beside it describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginTar {
    /// The Deploy name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// `sha256:…` of the file.
    pub digest: String,
    /// When it was deployed (seconds since the epoch).
    pub deployed: u64,
}

pub(super) fn tars_dir(store: &Store) -> PathBuf {
    store.root().join("plugins").join("tars")
}

/// The stored tarball file of `name`.
pub fn tar_path(store: &Store, name: &str) -> PathBuf {
    tars_dir(store).join(format!("{name}.tar"))
}

/// Where a plugin instance's own directories live on the host.
pub(super) fn instance_dir(store: &Store, instance: &str) -> PathBuf {
    store.root().join("plugins").join("instances").join(instance)
}

/// The host directory bound at a plugin's propagated mount.
pub fn propagated_dir(store: &Store, instance: &str) -> PathBuf {
    instance_dir(store, instance).join("propagated")
}

/// The host directory bound at a plugin's `/run/docker/plugins`.
pub fn socket_dir(settings: &Settings, plugin: &Plugin) -> PathBuf {
    settings.plugin_sockets.join(&plugin.id)
}

/// The host path of a plugin's socket.
pub fn socket_path(settings: &Settings, plugin: &Plugin) -> PathBuf {
    socket_dir(settings, plugin).join(&plugin.config.interface.socket)
}

/// Checks a plugin or tarball name: an identifier (containerd's rule), lowercase (docker's
/// plugin names are image references).
pub fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    if crate::tpc_spec::is_identifier(name) && !name.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid {what} name {name:?}: use lowercase letters and digits joined by single '.', '_' or '-'"
        )))
    }
}

/// An instance name as clients give it: docker lists `<instance>:latest`, and StopPlugin or
/// RemovePlugin take either form.
pub fn instance_name(given: &str) -> &str {
    given.strip_suffix(":latest").unwrap_or(given)
}

/// A tarball being received (Deploy with `is_plugin`): written to a temporary file beside its
/// place, hashed as it goes, checked against the announced size, then renamed into place.
pub struct TarWriter {
    name: String,
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    announced: u64,
    store: Store,
}

impl TarWriter {
    /// Starts receiving tarball `name` of `announced` bytes.
    pub fn new(store: &Store, name: &str, announced: u64) -> Result<TarWriter, Error> {
        validate_name("plugin tarball", name)?;
        let dir = tars_dir(store);
        super::store::create_private_dir(&dir)?;
        let file = tempfile::Builder::new()
            .prefix(".receiving-")
            .tempfile_in(&dir)
            .map_err(|e| Error::Internal(format!("cannot create a file in {}: {e}", dir.display())))?;
        Ok(TarWriter {
            name: name.to_string(),
            file,
            hasher: Sha256::new(),
            written: 0,
            announced,
            store: store.clone(),
        })
    }

    /// Appends a chunk; more than announced is refused.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.written += chunk.len() as u64;
        if self.written > self.announced {
            return Err(Error::Invalid(format!(
                "more data than the announced image_size of {} bytes",
                self.announced
            )));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .map_err(|e| Error::Internal(format!("writing plugin tarball {}: {e}", self.name)))
    }

    /// Checks the size, makes the file durable and puts it in place (replacing a tarball of the
    /// same name, as Deploy does for images).
    pub fn finish(self) -> Result<PluginTar, Error> {
        if self.written != self.announced {
            return Err(Error::Invalid(format!(
                "received {} bytes, the announced image_size was {}",
                self.written, self.announced
            )));
        }
        let io = |e: std::io::Error| Error::Internal(format!("storing plugin tarball {}: {e}", self.name));
        self.file.as_file().sync_all().map_err(io)?;
        let tar = PluginTar {
            name: self.name.clone(),
            size: self.written,
            digest: format!("sha256:{}", hex::encode(self.hasher.finalize())),
            deployed: super::now_secs(),
        };
        let path = tar_path(&self.store, &self.name);
        self.file.persist(&path).map_err(|e| io(e.error))?;
        write_atomic(
            &tars_dir(&self.store).join(format!("{}.json", tar.name)),
            &serde_json::to_vec_pretty(&tar).expect("serializes"),
        )?;
        super::store::sync_dir(&tars_dir(&self.store))?;
        Ok(tar)
    }
}

/// The stored tarball `name`, if there is one.
pub fn get_tar(store: &Store, name: &str) -> Result<Option<PluginTar>, Error> {
    validate_name("plugin tarball", name)?;
    let meta = tars_dir(store).join(format!("{name}.json"));
    match std::fs::read(&meta) {
        Ok(bytes) if tar_path(store, name).is_file() => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("{} is corrupt: {e}", meta.display()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Internal(format!("cannot read {}: {e}", meta.display()))),
    }
}

/// RemovePluginTar: deletes a stored tarball (instances started from it keep running: each has
/// its own image); NOT_FOUND when there is none.
pub fn remove_tar(store: &Store, name: &str) -> Result<(), Error> {
    if get_tar(store, name)?.is_none() {
        return Err(Error::NotFound(format!("no plugin tarball named {name}")));
    }
    for f in [
        tar_path(store, name),
        tars_dir(store).join(format!("{name}.json")),
    ] {
        std::fs::remove_file(&f)
            .map_err(|e| Error::Internal(format!("cannot remove {}: {e}", f.display())))?;
    }
    Ok(super::store::sync_dir(&tars_dir(store))?)
}

/// The installed plugin `instance` (`:latest` or not), if there is one.
pub fn get(settings: &Settings, instance: &str) -> Result<Option<TpcRecord>, Error> {
    let name = instance_name(instance);
    if !crate::tpc_spec::is_identifier(name) {
        return Ok(None);
    }
    Ok(Store::new(&settings.root)
        .get(name)?
        .filter(|r| r.plugin.is_some()))
}

/// Takes away what [`prepare_host`] made for plugin `name`: its socket directory, the shared
/// bind of its propagated directory (with whatever the plugin left mounted under it), and its
/// instance directory. Idempotent; what cannot go is logged.
pub fn clean_host(settings: &Settings, store: &Store, name: &str, plugin: &Plugin) {
    let warn = |what: &Path, e: &dyn std::fmt::Display| {
        tracing::warn!(plugin = %name, "cannot remove {}: {e}", what.display());
    };
    let sockets = socket_dir(settings, plugin);
    if let Err(e) = std::fs::remove_dir_all(&sockets)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn(&sockets, &e);
    }
    let propagated = propagated_dir(store, name);
    // Detached, the bind and every mount under it go at once; unmounting stops at the first
    // path that is no mount point (EINVAL). Bounded, in case a plugin stacked mounts there.
    for _ in 0..16 {
        if nix::mount::umount2(&propagated, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    if is_listed_mount(&propagated) {
        // Never walk into a live mount to delete what is in it.
        warn(&propagated, &"it is still a mount point");
        return;
    }
    let dir = instance_dir(store, name);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn(&dir, &e);
    }
}

/// The plugins, by instance name (those whose name, with or without `:latest`, is `filter`).
pub fn list(settings: &Settings, filter: &str) -> Result<Vec<(TpcRecord, Plugin)>, Error> {
    let filter = instance_name(filter);
    Ok(Store::new(&settings.root)
        .list()?
        .into_iter()
        .filter(|r| filter.is_empty() || r.name == filter)
        .filter_map(|r| {
            let p = r.plugin.clone()?;
            Some((r, p))
        })
        .collect())
}

/// Before a plugin's task starts: its socket directory exists, and its propagated directory is
/// a shared mount point (bound onto itself), so the plugin's rshared bind of it is a peer and
/// the mounts it makes there reach the host. Also after a reboot, which forgets both.
pub fn prepare_host(settings: &Settings, store: &Store, record: &TpcRecord) -> Result<(), Error> {
    use nix::mount::{MsFlags, mount};
    let Some(plugin) = &record.plugin else {
        return Ok(());
    };
    let io = |p: &Path, e: &dyn std::fmt::Display| {
        Error::Internal(format!("plugin {}: {}: {e}", record.name, p.display()))
    };
    let sockets = socket_dir(settings, plugin);
    std::fs::create_dir_all(&sockets).map_err(|e| io(&sockets, &e))?;
    if plugin.config.propagatedmount.is_empty() {
        return Ok(());
    }
    let dir = propagated_dir(store, &record.name);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, &e))?;
    if !is_listed_mount(&dir) {
        mount(Some(&dir), &dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| io(&dir, &e))?;
    }
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io(&dir, &e))
}

/// Whether `dir` is a mount point listed in this process's mountinfo (a bind of a directory
/// onto itself keeps its device, so comparing devices cannot tell).
fn is_listed_mount(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // mountinfo lists resolved paths, with these characters as octal escapes.
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let target = dir
        .to_string_lossy()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point == target)
}
