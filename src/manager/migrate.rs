//! SONiC image-upgrade migration. A new SONiC image replaces `/var/lib/containerd` and `/etc`
//! but keeps `/host`, where the TPCM store and the TPCs' data live. `tpcm migrate save` (run by
//! the installer before it reboots) saves every TPC into `<store>/migration/` as an OCI image
//! layout — its image plus its writable layer committed as one more layer, every blob stored once
//! and gzip'd — with the TPC's record. `tpcm boot` on the new image (or `tpcm migrate restore`)
//! imports the layout into the new containerd, recreates each TPC on its saved image, and deletes
//! the export; boot then reinstalls the units and starts what was running.

use super::container::{create_container, install_unit};
use super::store::{Store, TpcRecord, write_atomic};
use super::{Error, recovery};
use crate::config::Settings;
use crate::runtime::{ArchiveInput, Runtime};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The export's directory inside the store.
pub const MIGRATION_DIR: &str = "migration";

/// What the export keeps per TPC besides its image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedTpc {
    /// The record at save time.
    pub record: TpcRecord,
    /// The image the TPC comes back on (its original image plus its writable layer).
    pub image: String,
    /// That image's manifest digest.
    pub digest: String,
    /// Bytes this TPC added to the export (layers shared with TPCs saved before it not counted).
    pub written: u64,
}

/// Makes the container of saved TPC `s` from its saved image, and its record and unit.
async fn restore_tpc<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    s: &SavedTpc,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    let name = &s.record.name;
    let _lock = store.lock(name)?;
    say(&format!("Recreating TPC-{name} with its saved state"));
    let mut record = s.record.clone();
    // The TPC keeps its image's name and digest; its container is made from the saved image
    // (that image plus the TPC's writable layer), which it pins.
    record.base_digest = Some(s.digest.clone());
    record.converted = false;
    // Only the images TPCs run travel with a migration.
    record.rollback_image = None;
    create_container(runtime, settings, store, &record).await?;
    store.put(&record)?;
    install_unit(settings, store, name, &record.spec.settings)
}

/// The name a TPC's saved image gets in the export, so the importer makes it an image; restore
/// removes the name once the TPC's container pins the image (the TPC keeps its own image name).
fn saved_image_name(tpc: &str) -> String {
    format!("docker.io/tpcm-migrated/{tpc}:saved")
}

fn layout_dir(store: &Store) -> PathBuf {
    store.root().join(MIGRATION_DIR)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Internal(format!("{}: {e}", path.display()))
}

/// Bytes of files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The manifest TPC `r`'s container is made from, which its save exports.
fn image_digest(r: &TpcRecord) -> Result<&str, Error> {
    match r.runs_on() {
        "" => Err(Error::Invalid(format!(
            "TPC {}: its record names no image digest (written by an old tpcm); run `tpcm boot` or any command on it to complete the record, then save again",
            r.name
        ))),
        d => Ok(d),
    }
}

/// A save that fails because the TPC's image content is gone says which TPC, which manifest,
/// and how to get it back.
fn content_error(r: &TpcRecord, e: crate::runtime::Error) -> Error {
    match e {
        crate::runtime::Error::NotFound(what) | crate::runtime::Error::ImageNotFound(what) => {
            Error::NotFound(format!(
                "TPC {}: its image {} ({}) is not in containerd any more ({what}); nothing was saved. Reinstall it from its archive: tpcm upgrade {} <archive> -y",
                r.name,
                r.image(),
                r.runs_on(),
                r.name
            ))
        }
        other => other.into(),
    }
}

/// What `save` did.
#[derive(Debug, Default)]
pub struct SaveReport {
    /// Per TPC: name and bytes it added.
    pub saved: Vec<(String, u64)>,
    /// Size of the whole export.
    pub export_bytes: u64,
}

/// Saves every TPC for a SONiC image upgrade. Refuses up front, changing nothing, when the
/// store's filesystem cannot hold the export.
pub async fn save<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    say: &dyn Fn(&str),
) -> Result<SaveReport, Error> {
    let store = Store::new(&settings.root);
    if let Some((name, e)) = recovery::recover_all(runtime, settings, say)
        .await
        .into_iter()
        .next()
    {
        return Err(Error::Invalid(format!(
            "TPC {name} has an interrupted operation that cannot be recovered: {e}"
        )));
    }
    let records = store.list()?;
    // Nothing may change a TPC while it is being saved.
    let _locks = records
        .iter()
        .map(|r| store.lock(&r.name))
        .collect::<Result<Vec<_>, _>>()?;
    let layout = layout_dir(&store);
    let mut bound = 0;
    for r in &records {
        bound += runtime
            .save_bound(&r.name, image_digest(r)?, &layout)
            .await
            .map_err(|e| content_error(r, e))?;
    }
    std::fs::create_dir_all(store.root()).map_err(io(store.root()))?;
    let stat = nix::sys::statvfs::statvfs(store.root())
        .map_err(|e| Error::Internal(format!("{}: {e}", store.root().display())))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if bound > free {
        return Err(Error::Invalid(format!(
            "the TPCM store's filesystem ({}) has {} MB free, saving {} TPC(s) needs up to {} MB; nothing was saved",
            store.root().display(),
            free / 1_000_000,
            records.len(),
            bound.div_ceil(1_000_000)
        )));
    }

    let mut report = SaveReport::default();
    let mut entries = Vec::new();
    // An earlier export stops being one before anything changes (its blobs stay, for reuse):
    // a save interrupted from here on leaves no index, which restore ignores.
    let index = layout.join("index.json");
    if index.exists() {
        std::fs::remove_file(&index).map_err(io(&index))?;
    }
    let tpcs_dir = layout.join("tpcs");
    if tpcs_dir.exists() {
        std::fs::remove_dir_all(&tpcs_dir).map_err(io(&tpcs_dir))?;
    }
    std::fs::create_dir_all(&tpcs_dir).map_err(io(&tpcs_dir))?;
    for r in &records {
        say(&format!(
            "Saving TPC-{} (its image and its writable layer)",
            r.name
        ));
        let saved = runtime
            .save_container(&r.name, image_digest(r)?, &layout)
            .await
            .map_err(|e| content_error(r, e))?;
        let entry = SavedTpc {
            record: r.clone(),
            image: saved_image_name(&r.name),
            digest: saved.manifest_digest.clone(),
            written: saved.written,
        };
        let path = tpcs_dir.join(format!("{}.json", r.name));
        write_atomic(&path, &serde_json::to_vec_pretty(&entry).expect("serializes"))?;
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": saved.manifest_digest,
            "size": saved.manifest_size,
            "annotations": {"io.containerd.image.name": entry.image},
        }));
        report.saved.push((r.name.clone(), saved.written));
    }
    // Last: a save interrupted before this is not an export (restore ignores it).
    let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
    write_atomic(
        &layout.join("index.json"),
        &serde_json::to_vec_pretty(&index).expect("serializes"),
    )?;
    report.export_bytes = tree_size(&layout);
    Ok(report)
}

/// The TPCs an export holds (empty when there is none).
pub fn saved(settings: &Settings) -> Result<Vec<SavedTpc>, Error> {
    let layout = layout_dir(&Store::new(&settings.root));
    if !layout.join("index.json").is_file() {
        return Ok(Vec::new());
    }
    let dir = layout.join("tpcs");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let path = e.map_err(io(&dir))?.path();
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        out.push(
            serde_json::from_slice::<SavedTpc>(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?,
        );
    }
    out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    Ok(out)
}

/// Size of the export on disk.
pub fn export_size(settings: &Settings) -> u64 {
    tree_size(&layout_dir(&Store::new(&settings.root)))
}

/// Brings back every saved TPC the runtime lacks, then deletes the export. Returns the TPCs
/// recreated.
pub async fn restore<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    say: &dyn Fn(&str),
) -> Result<Vec<String>, Error> {
    let store = Store::new(&settings.root);
    let saved = saved(settings)?;
    let mut missing = Vec::new();
    for s in &saved {
        // A TPC uninstalled after the save has no record any more: it stays gone.
        if store.get(&s.record.name)?.is_some() && !runtime.container_exists(&s.record.name).await? {
            missing.push(s);
        }
    }
    let layout = layout_dir(&store);
    if !missing.is_empty() {
        say(&format!("Importing the {} saved TPC image(s)", missing.len()));
        // Under the images lock, as every import, until the containers are made from the
        // imported images: an image removal or a janitor sweep waits.
        let images = super::images::lock_images(
            &store,
            super::store::ImagesAccess::Import,
            super::images::IMAGES_PATIENCE,
        )
        .await?;
        let (reader, writer) = std::io::pipe().map_err(io(&layout))?;
        let root = layout.clone();
        // The layout goes to the importer as a tar stream: nothing is copied on disk.
        let tar = std::thread::spawn(move || {
            let mut b = tar::Builder::new(writer);
            b.append_path_with_name(root.join("oci-layout"), "oci-layout")?;
            b.append_path_with_name(root.join("index.json"), "index.json")?;
            // Only complete blobs (named by their digest): a temporary file of an interrupted
            // save is not part of the layout.
            for entry in std::fs::read_dir(root.join("blobs/sha256"))? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.len() == 64 && name.bytes().all(|c| c.is_ascii_hexdigit()) {
                    b.append_path_with_name(entry.path(), format!("blobs/sha256/{name}"))?;
                }
            }
            b.finish()
        });
        let imported = runtime
            .import_image(ArchiveInput::Stream(Box::new(reader)), None)
            .await;
        let written = tar
            .join()
            .map_err(|_| Error::Internal("export reader panicked".into()))?;
        imported?;
        written.map_err(io(&layout))?;
        let mut made = Ok(());
        for s in &missing {
            made = restore_tpc(runtime, settings, &store, s, say).await;
            if made.is_err() {
                break;
            }
        }
        // The containers made pin their saved images: the names the import gave every saved
        // image can go, also when a TPC failed (a retry imports the export again for the TPCs
        // still without a container). A removal takes the images lock for itself. A TPC's own
        // failure is the one reported.
        drop(images);
        let mut removed = Ok(());
        for s in &saved {
            if removed.is_ok() {
                removed = super::container::remove_image_if_present(runtime, &store, &s.image).await;
            }
        }
        made?;
        removed?;
    }
    if layout.exists() {
        std::fs::remove_dir_all(&layout).map_err(io(&layout))?;
    }
    Ok(missing.iter().map(|s| s.record.name.clone()).collect())
}
