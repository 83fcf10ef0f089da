//! The gNOI plugin operations that run a plugin as a TPC: StartPlugin (tarball → one-layer
//! image → TPC, then its socket awaited), StopPlugin and RemovePlugin. Kept apart from
//! `plugins`, which says what a plugin is on the host (its tarballs, directories, socket,
//! config and driver protocol) and which the TPC operations below it use: this module sits
//! above `tpc`, so no module imports one that imports it back.

use super::plugins::{
    Plugin, clean_host, config, get, get_tar, rootfs, socket_path, tar_path, validate_name,
};
use super::store::{Store, TpcRecord};
use super::tpc::{self, InstallRequest, RequestedSettings};
use super::{Error, ImageSource, Progress};
use crate::config::Settings;
use crate::runtime::Runtime;
use crate::tpc_spec::plugin::PluginConfig;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long StartPlugin waits for the plugin's socket (dockerd: about 9.5 s).
const SOCKET_PATIENCE: Duration = Duration::from_secs(10);

/// The image a plugin instance runs.
fn image_name(instance: &str) -> String {
    format!("tpcm.local/plugin/{instance}:latest")
}

/// StartPlugin: installs and starts plugin `instance` from tarball `tar` with `config` (JSON).
/// An unknown tarball is NOT_FOUND, an instance (or TPC) of that name ALREADY_EXISTS, a config
/// that cannot run INVALID_ARGUMENT; a plugin whose socket does not appear within 10 s is taken
/// back (FAILED_PRECONDITION). Whatever fails, nothing of the plugin is left. Returns the
/// record.
pub async fn start<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    tar: &str,
    instance: &str,
    config_json: &str,
    progress: Arc<dyn Progress>,
) -> Result<TpcRecord, Error> {
    validate_name("plugin instance", instance)?;
    let store = Store::new(&settings.root);
    if get_tar(&store, tar)?.is_none() {
        return Err(Error::NotFound(format!(
            "no plugin tarball named {tar}; deploy it with is_plugin first"
        )));
    }
    if store.get(instance)?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "plugin (or container) instance {instance} already exists"
        )));
    }
    // A tarball with its own config may be started without one.
    let request = if config_json.trim().is_empty() {
        PluginConfig::default()
    } else {
        config::parse(config_json).map_err(Error::Invalid)?
    };
    // A work directory of this start alone; the tarball linked (or copied) into it first, so a
    // Deploy that replaces it or a RemovePluginTar meanwhile cannot change what is built, and
    // the digest recorded is of the bytes built.
    let work_root = store.root().join("plugins").join("work");
    super::store::create_private_dir(&work_root)?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{instance}-"))
        .tempdir_in(&work_root)
        .map_err(|e| {
            Error::Internal(format!(
                "cannot create a directory in {}: {e}",
                work_root.display()
            ))
        })?;
    let built = {
        let (source, name, work) = (
            tar_path(&store, tar),
            image_name(instance),
            work.path().to_path_buf(),
        );
        tokio::task::spawn_blocking(move || -> Result<(rootfs::PluginImage, String), Error> {
            let copy = work.join("plugin.tar");
            if std::fs::hard_link(&source, &copy).is_err() {
                std::fs::copy(&source, &copy)
                    .map_err(|e| Error::NotFound(format!("plugin tarball {}: {e}", source.display())))?;
            }
            let digest = rootfs::file_digest(&copy)?;
            Ok((rootfs::build(&copy, &name, &work)?, digest))
        })
        .await
        .map_err(|e| Error::Internal(format!("plugin image thread: {e}")))?
    };
    let (image, digest) = built?;
    let effective = match &image.base_config {
        Some(base) => {
            config::merge(&config::parse(base).map_err(Error::Invalid)?, &request).map_err(Error::Invalid)?
        }
        None => request,
    };
    let container = config::settings(&effective).map_err(Error::Invalid)?;
    let plugin = Plugin {
        tar: tar.to_string(),
        tar_digest: digest,
        id: plugin_id(instance),
        config: effective,
    };
    let source = ImageSource::File(image.archive.path().to_path_buf());
    let install = InstallRequest {
        source: &source,
        settings: RequestedSettings {
            container,
            args: String::new(),
        },
        plugin: Some(plugin.clone()),
    };
    let installed = tpc::install(runtime, settings, instance, &install, progress, &|m| {
        tracing::debug!("{m}")
    })
    .await;
    let record = match installed {
        Ok(record) => record,
        Err(e) => {
            // The install took back what it made; the host side is the plugin's own.
            clean_host(settings, &store, instance, &plugin);
            return Err(e);
        }
    };
    // As dockerd: the plugin is up once its socket is there.
    let socket = socket_path(settings, &plugin);
    let deadline = Instant::now() + SOCKET_PATIENCE;
    while !socket.exists() {
        if Instant::now() >= deadline {
            let why = format!(
                "plugin {instance} did not create its socket {} within {} s",
                plugin.config.interface.socket,
                SOCKET_PATIENCE.as_secs()
            );
            return Err(
                match tpc::uninstall_with(runtime, settings, instance, false, true, &|_| {}).await {
                    Ok(()) => Error::InUse(format!("{why}; it was removed")),
                    Err(e) => Error::Internal(format!("{why}, and removing it failed: {e}")),
                },
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(record)
}

/// A plugin ID: 64 hex digits, different for every start.
fn plugin_id(instance: &str) -> String {
    let mut h = Sha256::new();
    h.update(instance.as_bytes());
    h.update(super::random_suffix().as_bytes());
    h.update(super::now_secs().to_le_bytes());
    hex::encode(h.finalize())
}

/// StopPlugin: stops a plugin (it stays stopped across reboots); a missing one is fine; one in
/// use is refused ([`volumes::check_plugin_stop`](super::volumes::check_plugin_stop)).
pub async fn stop<R: Runtime>(runtime: &R, settings: &Settings, instance: &str) -> Result<(), Error> {
    match get(settings, instance)? {
        Some(r) => tpc::stop(runtime, settings, &r.name).await,
        None => Ok(()),
    }
}

/// RemovePlugin: removes a plugin (its container, image and host directories; the tarball
/// stays); a missing one is fine; one that serves volumes is refused ([`volumes::check_plugin_removal`](super::volumes::check_plugin_removal)).
pub async fn remove<R: Runtime>(runtime: &R, settings: &Settings, instance: &str) -> Result<(), Error> {
    match get(settings, instance)? {
        // A plugin has no data directory, and one of its name (an earlier TPC's, kept) is not
        // the plugin's to remove.
        Some(r) => {
            tpc::uninstall_with(runtime, settings, &r.name, false, true, &|m| {
                tracing::debug!("{m}")
            })
            .await
        }
        None => Ok(()),
    }
}
