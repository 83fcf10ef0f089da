//! The TPCM store's records: one JSON file per TPC under `<root>/tpcs/`, written atomically, and a
//! lock file per TPC so two tpcm processes never interleave on the same TPC.

use crate::runtime::logs::LogTarget;
use crate::runtime::spec::ContainerConfig;

/// Size at which a TPC's log file is rotated.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// Rotated log files kept per TPC.
pub const LOG_FILES: u32 = 3;
/// How long a command waits for a TPC's lock; see [`Store::lock_for_command`].
pub const COMMAND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What tpcm remembers about a TPC: enough to recreate its container exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TpcRecord {
    /// TPC name (also the container ID).
    pub name: String,
    /// Normalized image reference.
    pub image: String,
    /// The image's manifest digest when it was installed or last upgraded (an upgrade to the same
    /// digest is a no-op; a rollback re-points a moved tag at it).
    #[serde(default)]
    pub digest: Option<String>,
    /// The `--args` string as the operator gave it.
    pub args: String,
    /// The resolved container settings.
    pub container: ContainerConfig,
    /// Whether the operator wants it running (boot starts only those).
    pub running: bool,
    /// When it was installed (seconds since the epoch).
    pub installed: u64,
    /// Whether the TPC brought its image (CLI install: the image goes with the TPC) or runs one
    /// managed on its own (gNOI: deployed and removed with Deploy / RemoveImage, kept for
    /// rollbacks). Records written before this field existed are CLI installs.
    #[serde(default = "owns_image_default")]
    pub owns_image: bool,
    /// The image this TPC ran before its last upgrade, when the upgrade kept it (an image managed
    /// on its own, or a gNOI UpdateContainer): an update client that finds the new version
    /// failing goes back to it, so the janitor keeps it. One per TPC; the next upgrade lets it go.
    #[serde(default)]
    pub rollback_image: Option<String>,
}

impl TpcRecord {
    /// Whether this TPC runs `image` or keeps it to roll back to.
    pub fn holds_image(&self, image: &str) -> bool {
        self.image == image || self.rollback_image.as_deref() == Some(image)
    }
}

fn owns_image_default() -> bool {
    true
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

/// Held while a command works on one TPC; released on drop.
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
        let dir = self.root.join("locks");
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(StoreError::Io {
                path: dir,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name:?} is not a valid name"),
                ),
            });
        }
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(TpcLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StoreError::Busy(name.to_string())),
            Err((_, e)) => Err(StoreError::Io {
                path,
                source: e.into(),
            }),
        }
    }

    /// A TPC's record, if it is installed.
    pub fn get(&self, name: &str) -> Result<Option<TpcRecord>, StoreError> {
        let path = self.record_path(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
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
        write_atomic(&path, &bytes)
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

/// Writes `bytes` to `path` atomically (see [`Store::put`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("a file lives in a directory");
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(dir)
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
            image: "docker.io/x/y:1".into(),
            digest: None,
            args: "-e A=1".into(),
            container: ContainerConfig {
                id: name.into(),
                cpus: 0.4,
                ..Default::default()
            },
            running: true,
            installed: 1,
            owns_image: true,
            rollback_image: None,
        }
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
    fn a_corrupt_record_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tpcs")).unwrap();
        std::fs::write(dir.path().join("tpcs/a.json"), b"{").unwrap();
        let err = Store::new(dir.path()).get("a").unwrap_err().to_string();
        assert!(err.contains("a.json"), "{err}");
    }
}
