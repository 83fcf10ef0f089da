//! The journal: what an interrupted multi-step operation on a TPC was doing, so the next tpcm
//! command (or `tpcm boot`) can finish it or take it back. One file per TPC,
//! `<store>/journal/<name>.json`, written atomically *before* each step acts; every recovery
//! action is idempotent, so being killed halfway through a recovery is fine too.
//!
//! - An install that did not finish is taken back (nothing of it stays).
//! - An uninstall that started is finished.
//! - An upgrade is committed once the new record is written and the journal says `Committed`;
//!   before that, recovery rolls back to the old container (its writable layer included).

use super::Error;
use super::store::{Store, StoreError, TpcRecord, write_atomic};
use crate::runtime::DetachedContainer;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where an upgrade had got to. Each value means "this step is about to act or has acted".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeStep {
    /// The old image may be pinned, the new image may be importing.
    Importing,
    /// The new image is in; the pre hook may run.
    Imported,
    /// The old container's definition and layer are held; it may be stopping.
    Held,
    /// The old container may be detached (removed, its layer kept).
    Detaching,
    /// The new container may exist and run; hooks and the health gate may run.
    NewCreated,
    /// The new record is written: only cleanup of the old version remains.
    Committed,
}

/// An upgrade in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeJournal {
    /// The TPC's record before the upgrade.
    pub old: TpcRecord,
    /// A name keeping the manifest the old container runs on alive while the old container is
    /// detached (`repo@digest`).
    pub pin: Option<String>,
    /// The manifest the old image's name pointed at before the import (which may move it); an
    /// aborted or rolled-back upgrade points the name back.
    #[serde(default)]
    pub tag_before: Option<String>,
    /// The imported image's name and digest, once known.
    pub new_image: Option<(String, String)>,
    /// The old container, once held.
    pub held: Option<DetachedContainer>,
    /// The record to write on success.
    pub new_record: Option<TpcRecord>,
    /// The last step started.
    pub step: UpgradeStep,
    /// The new image was there before the upgrade (gNOI): a rollback keeps it.
    #[serde(default)]
    pub keep_new_image: bool,
}

/// An install in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallJournal {
    /// The imported image, once known.
    pub image: Option<String>,
    /// The install creates the TPC's data directory (it did not exist before), so taking the
    /// install back removes it. A directory that was there before (kept by an uninstall without
    /// `--clean_data`, or prepared by the operator) stays.
    #[serde(default)]
    pub creates_data_dir: bool,
}

/// An uninstall in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UninstallJournal {
    /// The record of the TPC being removed.
    pub record: TpcRecord,
    /// Whether its data directory goes too.
    pub clean_data: bool,
    /// Whether its container is killed at once instead of stopped with the usual grace
    /// (gNOI RemoveContainer with `force`).
    #[serde(default)]
    pub kill: bool,
}

/// A journal as written (borrowing the operation's state).
#[derive(Debug, Serialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Entry<'a> {
    /// See [`InstallJournal`].
    Install(&'a InstallJournal),
    /// See [`UpgradeJournal`].
    Upgrade(&'a UpgradeJournal),
    /// See [`UninstallJournal`].
    Uninstall(&'a UninstallJournal),
}

/// A journal as read back.
#[derive(Debug, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Journal {
    /// See [`InstallJournal`].
    Install(InstallJournal),
    /// See [`UpgradeJournal`].
    Upgrade(Box<UpgradeJournal>),
    /// See [`UninstallJournal`].
    Uninstall(Box<UninstallJournal>),
}

/// The journal file of TPC `name`.
fn path(store: &Store, name: &str) -> PathBuf {
    store.root().join("journal").join(format!("{name}.json"))
}

/// Records `journal` for TPC `name` (atomically, durably).
pub fn write(store: &Store, name: &str, journal: Entry<'_>) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(&journal).expect("a journal serializes");
    write_atomic(&path(store, name), &bytes)?;
    Ok(())
}

/// The journal of TPC `name`, if an operation on it was interrupted.
pub fn read(store: &Store, name: &str) -> Result<Option<Journal>, Error> {
    let p = path(store, name);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("corrupt journal {}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io { path: p, source }.into()),
    }
}

/// Ends the journal of TPC `name` (the operation is complete or taken back).
pub fn remove(store: &Store, name: &str) -> Result<(), Error> {
    match std::fs::remove_file(path(store, name)) {
        // Durable, or a power cut could bring back the journal of a finished operation.
        Ok(()) => Ok(super::store::sync_dir(&store.root().join("journal"))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path(store, name),
            source,
        }
        .into()),
    }
}

/// TPC names with a journal.
pub fn pending(store: &Store) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(store.root().join("journal")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(String::from))
        .collect();
    names.sort();
    names
}

/// The name that pins an image's manifest during an upgrade: `<repository>@<digest>`.
pub fn pin_name(image: &str, digest: &str) -> String {
    let repository = image.split_once('@').map_or(image, |(r, _)| r);
    // Strip a tag (a ':' after the last '/', so a registry port stays).
    let repository = match repository.rfind(':') {
        Some(i) if i > repository.rfind('/').unwrap_or(0) => &repository[..i],
        _ => repository,
    };
    format!("{repository}@{digest}")
}

/// Whether an open upgrade journal of a TPC other than `name` made `pin` (and so removes it when
/// it ends, unless another upgrade still needs it).
pub fn pin_made_by_another(store: &Store, pin: &str, name: &str) -> Result<bool, Error> {
    for other in pending(store).into_iter().filter(|o| o != name) {
        if let Some(Journal::Upgrade(j)) = read(store, &other)?
            && j.pin.as_deref() == Some(pin)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Images that operations in flight (running, or interrupted and not yet recovered) still need:
/// an upgrade's new image and the name pinning the manifest its old container runs on (the old
/// container's only hold on it while detached), an install's image. An image removal refuses
/// them, the janitor keeps them, and another TPC's cleanup leaves them, so a long pre hook or a
/// crashed upgrade cannot lose the image a rollback or a recovery needs. Returns (image, TPC)
/// pairs; a journal that cannot be read is an error (what it holds is unknown).
pub fn images_in_flight(store: &Store) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    for name in pending(store) {
        let images: Vec<String> = match read(store, &name)? {
            Some(Journal::Upgrade(j)) => {
                // Whether the upgrade named the pin or found it named already (an image named
                // by its digest pins itself).
                let pin = (!j.old.runs_on().is_empty()).then(|| pin_name(j.old.image(), j.old.runs_on()));
                [pin, j.new_image.map(|(image, _)| image)]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            Some(Journal::Install(j)) => j.image.into_iter().collect(),
            _ => Vec::new(),
        };
        out.extend(images.into_iter().map(|image| (image, name.clone())));
    }
    Ok(out)
}

pub use crate::crash::point as crash_point;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_keep_the_repository_and_drop_the_tag() {
        let d = "sha256:abc";
        assert_eq!(
            pin_name("docker.io/library/app:1.0", d),
            "docker.io/library/app@sha256:abc"
        );
        assert_eq!(
            pin_name("127.0.0.1:5000/app:latest", d),
            "127.0.0.1:5000/app@sha256:abc"
        );
        assert_eq!(
            pin_name("127.0.0.1:5000/app@sha256:old", d),
            "127.0.0.1:5000/app@sha256:abc"
        );
        assert_eq!(pin_name("127.0.0.1:5000/app", d), "127.0.0.1:5000/app@sha256:abc");
    }
}
