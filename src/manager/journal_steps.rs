//! The idempotent steps that end a journaled operation: take back an install, finish an
//! uninstall, and end an upgrade (abort before anything changed, roll back before the commit,
//! finish after it). The operations run them when they end or fail, and recovery runs the same
//! steps from the journal after a crash, so a step may find its work half done or done.

use super::Error;
use super::container::{
    STOP_GRACE, image_in_use, install_unit, pin_in_use, remove_dir_if_present, remove_image_if_present,
    remove_locked, remove_unit, start_task, stop_grace, stop_task,
};
use super::journal::{self, InstallJournal, UninstallJournal, UpgradeJournal, UpgradeStep, crash_point};
use super::store::{ImagesAccess, Store};
use crate::config::Settings;
use crate::runtime::{ContainerState, Runtime};
use crate::systemd;
use std::time::Duration;

/// Takes back an install that did not finish: container, unit, record, journal, and the image
/// unless another TPC uses it.
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
    super::volumes::unmount_driver_volumes(settings, store, name).await;
    runtime.delete_container(name).await?;
    if let Some(plugin) = store.get(name)?.and_then(|r| r.plugin) {
        super::plugins::clean_host(settings, store, name, &plugin);
    }
    remove_unit(settings, store, name);
    super::status::remove(store, name);
    for f in store.log_target(name).files_oldest_first() {
        let _ = std::fs::remove_file(f);
    }
    if j.creates_data_dir {
        remove_dir_if_present(&settings.data_root.join(name))?;
    }
    remove_dir_if_present(&store.root().join("containers").join(name))?;
    store.remove(name)?;
    if let Some(image) = &j.image
        && !image_in_use(store, image, name)
    {
        remove_image_if_present(runtime, store, image).await?;
    }
    journal::remove(store, name)
}

/// The steps of an uninstall.
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
    let grace = if j.kill {
        Duration::ZERO
    } else {
        stop_grace(&j.record.spec.settings)
    };
    stop_task(runtime, settings, store, &j.record, grace).await?;
    crash_point("uninstall:stopped");
    say(&format!("Removing the TPC-{name} container"));
    runtime.delete_container(name).await?;
    crash_point("uninstall:deleted");
    if let Some(plugin) = &j.record.plugin {
        super::plugins::clean_host(settings, store, name, plugin);
    }
    remove_unit(settings, store, name);
    if j.record.owns_image && !image_in_use(store, j.record.image(), name) {
        say(&format!("Removing the TPC-{name} image"));
        remove_image_if_present(runtime, store, j.record.image()).await?;
    }
    crash_point("uninstall:image-removed");
    for f in store.log_target(name).files_oldest_first() {
        let _ = std::fs::remove_file(f);
    }
    if j.clean_data {
        remove_dir_if_present(&settings.data_root.join(name))?;
    }
    remove_dir_if_present(&store.root().join("containers").join(name))?;
    // What was observed about it goes too: a TPC installed later under the name starts afresh.
    super::status::remove(store, name);
    store.remove(name)?;
    journal::remove(store, name)
}

/// Ends an upgrade that did not touch the old container: the new image goes (unless it was there
/// before), the pin goes, and a tag the import moved points back at the old image.
pub(super) async fn abort_upgrade<R: Runtime>(
    runtime: &R,
    store: &Store,
    name: &str,
    j: &UpgradeJournal,
) -> Result<(), Error> {
    // The import may have moved the old image's name: point it back.
    if let Some(before) = &j.tag_before {
        match runtime.name_image(j.old.image(), before).await {
            Ok(()) | Err(crate::runtime::Error::ImageNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some((new_image, _)) = &j.new_image
        && !j.keep_new_image
        && new_image != j.old.image()
        && !image_in_use(store, new_image, name)
    {
        remove_image_if_present(runtime, store, new_image).await?;
    }
    end_upgrade(runtime, store, name, j).await
}

/// Brings the old version back after its container was held (and possibly stopped and
/// detached): the new container goes, the old one is restored, and started again if it was
/// running; then the upgrade is aborted.
pub(super) async fn roll_back_upgrade<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    name: &str,
    j: &UpgradeJournal,
) -> Result<(), Error> {
    if let Some(held) = &j.held {
        // A container with the TPC's name on another layer is the new one.
        if let Some(layer) = runtime.container_layer(name).await?
            && layer != held.layer
        {
            runtime.stop_container(name, STOP_GRACE).await?;
            super::volumes::unmount_driver_volumes(settings, store, name).await;
            runtime.delete_container(name).await?;
        }
        runtime.restore_container(held).await?;
    }
    store.put(&j.old)?;
    if j.old.running {
        match runtime.container_state(name).await? {
            ContainerState::Running { .. } => {}
            _ => {
                // Clears an exited or half-created task first.
                runtime.stop_container(name, STOP_GRACE).await?;
                start_task(runtime, settings, store, &j.old).await?;
            }
        }
        systemd::unit_started(name).map_err(Error::Internal)?;
    }
    abort_upgrade(runtime, store, name, j).await
}

/// After the commit: drop the old layer, the pin, and the old image if nothing uses it.
pub(super) async fn finish_upgrade<R: Runtime>(
    runtime: &R,
    store: &Store,
    name: &str,
    j: &UpgradeJournal,
) -> Result<(), Error> {
    if let Some(held) = &j.held {
        runtime.discard_detached(held).await?;
    }
    let new_image = j.new_image.as_ref().map(|(n, _)| n.as_str());
    // An upgrade to an image that was there already (gNOI UpdateContainer) leaves the old one
    // too, owned or not: an update client that finds the new version failing goes back to it.
    // Unused, the janitor removes it later.
    if j.old.owns_image
        && !j.keep_new_image
        && new_image != Some(j.old.image())
        && !image_in_use(store, j.old.image(), name)
    {
        remove_image_if_present(runtime, store, j.old.image()).await?;
    }
    end_upgrade(runtime, store, name, j).await
}

/// The last step of an upgrade that ends (aborted, rolled back or finished): its pin goes unless
/// a record or another open journal needs it, and its journal ends, both under one exclusive
/// images lock. So of two upgrades sharing a pin, the second to end sees the first's journal
/// gone and removes the pin, and an upgrade about to share it (which holds the lock shared from
/// seeing the pin until its journal names it) sees either this journal or the pin gone.
async fn end_upgrade<R: Runtime>(
    runtime: &R,
    store: &Store,
    name: &str,
    j: &UpgradeJournal,
) -> Result<(), Error> {
    let Some(pin) = &j.pin else {
        return journal::remove(store, name);
    };
    let _images =
        super::images::lock_images(store, ImagesAccess::Remove, super::images::IMAGES_PATIENCE).await?;
    if !pin_in_use(store, pin, name) {
        remove_locked(runtime, pin).await?;
    }
    journal::remove(store, name)
}

/// Finishes (after the commit) or rolls back (before it) an interrupted upgrade of TPC `name`.
pub(super) async fn recover_upgrade<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    name: &str,
    j: &UpgradeJournal,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    if j.step == UpgradeStep::Committed {
        say(&format!("Finishing the interrupted upgrade of TPC-{name}"));
        let record = j.new_record.as_ref().unwrap_or(&j.old);
        store.put(record)?;
        install_unit(settings, store, name, &record.spec.settings)?;
        systemd::unit_started(name).map_err(Error::Internal)?;
        finish_upgrade(runtime, store, name, j).await
    } else {
        say(&format!("Rolling back the interrupted upgrade of TPC-{name}"));
        roll_back_upgrade(runtime, settings, store, name, j).await
    }
}
