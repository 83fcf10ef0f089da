//! The TPCM store's records: one JSON file per TPC under `<root>/tpcs/`, written atomically and
//! readable by root only (they hold the TPC's environment), and a lock file per TPC so two tpcm
//! processes never interleave on the same TPC.

use crate::runtime::logs::LogTarget;
use crate::tpc_spec::image_health::ImageHealthcheck;
use crate::tpc_spec::{HealthCheck, HealthTiming, TpcSpec};
use serde::{Deserialize, Serialize};

mod legacy;

/// Size at which a TPC's log file is rotated.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// Rotated log files kept per TPC.
pub const LOG_FILES: u32 = 3;
/// How long a command waits for a TPC's lock; see [`Store::lock_for_command`].
pub const COMMAND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
/// Mode of every file tpcm writes into the store: records, journals and logs carry the TPCs'
/// environment, which may hold secrets.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the store's directories.
pub const DIR_MODE: u32 = 0o700;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What tpcm remembers about a TPC: its spec and where it stands.
///
/// Records written by a tpcm that stored the raw `--args` instead of a spec are converted when
/// read (`legacy`); the next write stores the current format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct TpcRecord {
    /// TPC name (also the container ID).
    pub name: String,
    /// The image (name and pinned manifest digest) and every setting.
    pub spec: TpcSpec,
    /// The `--args` text as the operator gave it, for display only (empty for a gNOI instance).
    #[serde(default)]
    pub args: String,
    /// The CPU cap the container was created with (the spec's, or the default share then).
    pub cpus: f64,
    /// The manifest the container is made from when it is not the spec's image: after a
    /// migration restore, the spec's image with the TPC's writable layer committed on top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_digest: Option<String>,
    /// Whether the operator wants it running (boot starts only those).
    pub running: bool,
    /// When it was installed (seconds since the epoch).
    pub installed: u64,
    /// Whether the TPC brought its image (CLI install: the image goes with the TPC) or runs one
    /// managed on its own (gNOI, or an image imported beforehand: deployed and removed on its
    /// own, kept for rollbacks).
    pub owns_image: bool,
    /// The image this TPC ran before its last upgrade, when the upgrade kept it (an image managed
    /// on its own, or a gNOI UpdateContainer): an update client that finds the new version
    /// failing goes back to it, so the janitor keeps it. One per TPC; the next upgrade lets it go.
    #[serde(default)]
    pub rollback_image: Option<String>,
    /// Converted from an older record format, whose container may not pin its image yet; the
    /// next recovery of the TPC pins it and clears this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub converted: bool,
    /// When the TPC is a gNOI plugin: what it was started from and its plugin config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<crate::tpc_spec::plugin::PluginSpec>,
    /// The health check its image declares (`HEALTHCHECK`), read when the TPC was installed or
    /// upgraded onto the image; run when the spec names none ([`TpcRecord::health`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_health: Option<ImageHealthcheck>,
}

impl Serialize for TpcRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TpcRecord::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for TpcRecord {
    /// The current format, or an older one converted (told apart by the `spec` key).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(d)?;
        if value.get("spec").is_some() {
            // A record written before `no_healthcheck` was kept has the flag only in its
            // `--args` text: read it from there, or the image's check would start running.
            let flag_unrecorded = value.pointer("/spec/settings/no_healthcheck").is_none();
            let mut record = TpcRecord::deserialize(value).map_err(D::Error::custom)?;
            if flag_unrecorded && record.args.contains("--no-healthcheck") {
                record.spec.settings.no_healthcheck =
                    crate::manager::args::parse_kept_args(&record.args).is_ok_and(|s| s.no_healthcheck);
            }
            Ok(record)
        } else {
            serde_json::from_value::<legacy::LegacyRecord>(value)
                .map(legacy::LegacyRecord::convert)
                .map_err(D::Error::custom)
        }
    }
}

impl TpcRecord {
    /// The image reference the TPC runs.
    pub fn image(&self) -> &str {
        &self.spec.image.reference
    }

    /// The manifest digest the TPC's container is made from.
    pub fn runs_on(&self) -> &str {
        self.base_digest.as_deref().unwrap_or(&self.spec.image.digest)
    }

    /// The health check the TPC runs, and when: its settings', else its image's, as docker
    /// chooses ([`crate::tpc_spec::ContainerSettings::effective_health`]); `None` for none.
    pub fn health(&self) -> Option<(HealthCheck, HealthTiming)> {
        self.spec.settings.effective_health(self.image_health.as_ref())
    }

    /// Whether this TPC runs `image` or keeps it to roll back to.
    pub fn holds_image(&self, image: &str) -> bool {
        self.image() == image || self.rollback_image.as_deref() == Some(image)
    }
}

/// Errors of the store; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("TPCM store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A record that does not parse.
    #[error("TPCM store {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another tpcm holds the TPC's lock.
    #[error("another tpcm command is working on {0}; try again when it has finished")]
    Busy(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The store at a root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The name of the store-wide images lock ([`Store::try_images_lock`]).
const IMAGES_LOCK: &str = "_images";

/// What the images lock is taken for ([`Store::try_images_lock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagesAccess {
    /// An import (several may run at once).
    Import,
    /// A removal (alone).
    Remove,
}

/// Held while a command works on one TPC (or on the images); released on drop.
pub struct TpcLock {
    _lock: Flock<File>,
}

impl Store {
    /// The store under `root` (created on first write).
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The record file of TPC `name` (whether it exists says whether the TPC is installed).
    pub fn record_path(&self, name: &str) -> PathBuf {
        self.root.join("tpcs").join(format!("{name}.json"))
    }

    /// Where a TPC's container writes its output, and how much is kept: 3 rotated files of
    /// 10 MiB besides the current one, 40 MiB at most per TPC.
    pub fn log_target(&self, name: &str) -> LogTarget {
        LogTarget {
            file: self.root.join("logs").join(format!("{name}.log")),
            max_bytes: LOG_MAX_BYTES,
            files: LOG_FILES,
        }
    }

    /// The store's copy of a TPC's systemd unit.
    pub fn unit_path(&self, name: &str) -> PathBuf {
        self.root.join("units").join(crate::systemd::unit_name(name))
    }

    /// The directory shared by every TPC (mounted at `/tpc-shared`).
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// Takes the TPC's lock for a command (install, start, stop, upgrade, uninstall), waiting at
    /// most [`COMMAND_PATIENCE`]: the restart supervisor, the janitor and recovery hold a TPC's
    /// lock for moments, and a command that meets one must not fail for it; a command still
    /// working after that is refused rather than queued behind (an upgrade can take minutes).
    pub fn lock_for_command(&self, name: &str) -> Result<TpcLock, StoreError> {
        self.lock_waiting(name, COMMAND_PATIENCE)
    }

    /// Takes the TPC's lock, waiting at most `patience` for another tpcm to release it. For what
    /// systemd runs (`unit-run`), which is started while a command may still hold the lock.
    pub fn lock_waiting(&self, name: &str, patience: std::time::Duration) -> Result<TpcLock, StoreError> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.lock(name) {
                Err(StoreError::Busy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// Takes the TPC's lock without waiting, for background work that skips a busy TPC (the
    /// janitor, recovery, migration).
    pub fn lock(&self, name: &str) -> Result<TpcLock, StoreError> {
        // Callers validate names; this keeps a missed check from naming a file elsewhere.
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(StoreError::Io {
                path: self.root.join("locks"),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name:?} is not a valid name"),
                ),
            });
        }
        self.flock(name, FlockArg::LockExclusiveNonblock)
    }

    /// Takes the store-wide images lock if it is free for `access`: every import holds it
    /// shared, every image removal exclusive. containerd's collector may remove a blob an import
    /// has just found in the store and not yet committed, when a removal's collection runs in
    /// between (the import's image then lacks that layer); holding removals back while imports
    /// run closes that window. Named so no TPC can have it (TPC names start with a letter or
    /// digit). The manager's `lock_images` waits for it.
    pub fn try_images_lock(&self, access: ImagesAccess) -> Result<TpcLock, StoreError> {
        let arg = match access {
            ImagesAccess::Import => FlockArg::LockSharedNonblock,
            ImagesAccess::Remove => FlockArg::LockExclusiveNonblock,
        };
        self.flock(IMAGES_LOCK, arg).map_err(|e| match e {
            StoreError::Busy(_) => StoreError::Busy(match access {
                ImagesAccess::Import => "the images (an image is being removed)".into(),
                ImagesAccess::Remove => "the images (an image is being imported)".into(),
            }),
            other => other,
        })
    }

    /// The lock file of `name`.
    fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.lock"))
    }

    fn flock(&self, name: &str, arg: FlockArg) -> Result<TpcLock, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.lock_path(name);
        create_private_dir(path.parent().expect("locks live in a directory"))?;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(FILE_MODE)
                .open(&path)
                .map_err(io_err(&path))?;
            let lock = match Flock::lock(file, arg) {
                Ok(lock) => lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(StoreError::Busy(name.to_string())),
                Err((_, e)) => {
                    return Err(StoreError::Io {
                        path,
                        source: e.into(),
                    });
                }
            };
            // The file may have been removed (by an uninstall holding it) between our open and
            // our lock: then this lock guards nothing; take the one at the path now.
            let held = lock.metadata().map_err(io_err(&path))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(TpcLock { _lock: lock });
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io { path, source: e }),
            }
        }
    }

    /// Removes TPC `name`'s lock file, for an uninstall that holds the lock: whoever waits on
    /// the removed file notices and takes the lock at the path anew ([`Store::lock`]).
    pub fn remove_lock_file(&self, name: &str) {
        let _ = fs::remove_file(self.lock_path(name));
    }

    /// A TPC's record, if it is installed. A record of an older format is converted; the
    /// conversion is written back when no other tpcm holds the TPC (the holder writes it
    /// otherwise, with its own change).
    pub fn get(&self, name: &str) -> Result<Option<TpcRecord>, StoreError> {
        let path = self.record_path(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let record: TpcRecord = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if record.converted
            && !bytes.windows(7).any(|w| w == b"\"spec\":")
            && let Ok(_lock) = self.lock(name)
            && fs::read(&path).is_ok_and(|now| now == bytes)
        {
            self.put(&record)?;
        }
        Ok(Some(record))
    }

    /// Every record, by name.
    pub fn list(&self) -> Result<Vec<TpcRecord>, StoreError> {
        let dir = self.root.join("tpcs");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(StoreError::Io { path: dir, source: e }),
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry
                .map_err(io_err(&dir))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if let Some(tpc) = name.strip_suffix(".json")
                && let Some(r) = self.get(tpc)?
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Writes a record atomically: temp file, fsync, rename, fsync of the directory. A crash
    /// leaves the old record or the new one, never half of one.
    pub fn put(&self, record: &TpcRecord) -> Result<(), StoreError> {
        let path = self.record_path(&record.name);
        let bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        self.make_private()?;
        write_atomic(&path, &bytes)
    }

    /// Creates the store's root readable by root only, or makes it so (a store written by an
    /// older tpcm was world-readable).
    pub fn make_private(&self) -> Result<(), StoreError> {
        create_private_dir(&self.root)?;
        let md = fs::metadata(&self.root).map_err(io_err(&self.root))?;
        if md.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&self.root, fs::Permissions::from_mode(DIR_MODE))
                .map_err(io_err(&self.root))?;
        }
        Ok(())
    }

    /// Removes a record (missing is fine).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.record_path(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("records live in a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }
}

/// Writes `bytes` to `path` atomically (see [`Store::put`]), readable by root only.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_mode(path, bytes, FILE_MODE)
}

/// [`write_atomic`] with another mode (a unit file systemd's tools read as any user).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().expect("a file lives in a directory");
    create_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    // A temporary file left by a crash keeps its old mode through `create`.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(dir)
}

/// Creates a directory (and its parents) accessible by root only; one that exists is left as
/// it is.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err(dir))
}

/// Makes a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> TpcRecord {
        TpcRecord {
            name: name.into(),
            spec: TpcSpec {
                image: crate::tpc_spec::ImageRef {
                    reference: "docker.io/x/y:1".into(),
                    digest: "sha256:00".into(),
                },
                settings: Default::default(),
            },
            args: "-e A=1".into(),
            cpus: 0.4,
            base_digest: None,
            running: true,
            installed: 1,
            owns_image: true,
            rollback_image: None,
            converted: false,
            plugin: None,
            image_health: None,
        }
    }

    #[test]
    fn records_journals_and_the_store_are_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let store = Store::new(&root);
        store.put(&record("a")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&store.record_path("a")), 0o600);
        assert_eq!(mode(&root.join("tpcs")), 0o700);
    }

    #[test]
    fn an_old_record_is_converted_once_and_written_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        create_private_dir(&dir.path().join("tpcs")).unwrap();
        let old = serde_json::json!({
            "name": "a", "image": "docker.io/x/y:1", "digest": "sha256:00", "args": "--restart always",
            "container": {"env": ["K=v"], "cpus": 0.3, "host_network": true},
            "running": true, "installed": 1
        });
        fs::write(store.record_path("a"), old.to_string()).unwrap();
        // Held by another command: converted in memory only.
        let held = store.lock("a").unwrap();
        let r = store.get("a").unwrap().unwrap();
        assert!(
            !fs::read_to_string(store.record_path("a"))
                .unwrap()
                .contains("\"spec\"")
        );
        drop(held);
        assert_eq!(store.get("a").unwrap(), Some(r.clone()));
        let text = fs::read_to_string(store.record_path("a")).unwrap();
        assert!(text.contains("\"spec\""), "{text}");
        assert_eq!(r.spec.settings.env, ["K=v"]);
        assert_eq!(r.spec.settings.restart.to_string(), "always");
        assert!(r.converted);
    }

    #[test]
    fn no_healthcheck_is_read_from_the_args_of_a_record_written_before_it_was_kept() {
        let mut before = serde_json::to_value(record("a")).unwrap();
        before["args"] = "--no-healthcheck -- app --no-healthcheck".into();
        before["spec"]["settings"]
            .as_object_mut()
            .unwrap()
            .remove("no_healthcheck");
        let read: TpcRecord = serde_json::from_value(before.clone()).unwrap();
        assert!(read.spec.settings.no_healthcheck);
        // Only the flag before `--` counts, and a record that keeps the field is taken as it is.
        before["args"] = "-- app --no-healthcheck".into();
        let read: TpcRecord = serde_json::from_value(before.clone()).unwrap();
        assert!(!read.spec.settings.no_healthcheck);
        before["args"] = "--no-healthcheck".into();
        before["spec"]["settings"]["no_healthcheck"] = false.into();
        let read: TpcRecord = serde_json::from_value(before).unwrap();
        assert!(!read.spec.settings.no_healthcheck);
    }

    #[test]
    fn records_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.get("a").unwrap().is_none());
        store.put(&record("b")).unwrap();
        store.put(&record("a")).unwrap();
        assert_eq!(store.get("a").unwrap(), Some(record("a")));
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);
        store.remove("a").unwrap();
        store.remove("a").unwrap();
        assert!(store.get("a").unwrap().is_none());
        assert!(!dir.path().join("tpcs/.a.json.tmp").exists());
    }

    #[test]
    fn a_command_waits_for_a_brief_holder_and_gives_up_on_a_long_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let held = store.lock("a").unwrap();
        assert!(matches!(
            store.lock_waiting("a", std::time::Duration::from_millis(200)),
            Err(StoreError::Busy(_))
        ));
        // A brief holder (as the restart supervisor is): the command meets the lock held and
        // gets it once it is released, instead of failing.
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        store.lock_for_command("a").unwrap();
        holder.join().unwrap();
    }

    #[test]
    fn a_second_lock_on_the_same_tpc_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let held = store.lock("a").unwrap();
        assert!(matches!(store.lock("a"), Err(StoreError::Busy(_))));
        assert!(store.lock("b").is_ok());
        drop(held);
        assert!(store.lock("a").is_ok());
    }

    #[test]
    fn a_removed_lock_file_is_not_a_lock_any_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let held = store.lock("a").unwrap();
        store.remove_lock_file("a");
        assert!(!dir.path().join("locks/a.lock").exists());
        // A new holder takes the lock at the path; the old one guards the removed file only.
        let again = store.lock("a").unwrap();
        assert!(matches!(store.lock("a"), Err(StoreError::Busy(_))));
        drop((held, again));
        assert!(store.lock("a").is_ok());
    }

    #[test]
    fn a_corrupt_record_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tpcs")).unwrap();
        std::fs::write(dir.path().join("tpcs/a.json"), b"{").unwrap();
        let err = Store::new(dir.path()).get("a").unwrap_err().to_string();
        assert!(err.contains("a.json"), "{err}");
    }
}
