//! The operations front ends ask for. The manager talks to the runtime only through
//! [`crate::runtime::Runtime`], and to the outside world only through [`crate::source`].

//!
//! Inside, the modules form layers, none importing one that imports it back (checked by
//! `tests/layering.rs`; the order is in `docs/architecture.md`): `store`, `journal`, `args` and
//! `log_follow` at the bottom; `images`, `plugins` (a plugin on the host) and `volumes`;
//! `container` (what every operation shares about a TPC's container); `journal_steps` (the idempotent ends of
//! journaled operations); `recovery`; then the operations (`tpc`, `upgrade`, `migrate`, `boot`,
//! `janitor`, `supervise`, ...), and `plugin_lifecycle` above `tpc`.

pub mod args;
pub mod boot;
pub mod container;
pub mod events;
pub mod exec;
pub mod health;
pub mod hooks;
mod images;
pub mod janitor;
pub mod journal;
mod journal_steps;
pub mod log_follow;
pub mod migrate;
pub mod observe;
pub mod plugin_lifecycle;
pub mod plugins;
pub mod recovery;
pub mod status;
pub mod store;
pub mod supervise;
pub mod tpc;
pub mod update;
pub mod upgrade;
pub mod volumes;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use images::{
    IMAGES_PATIENCE, ImageSource, Progress, import_image, list_images, lock_images, looks_like_path,
    prefer_present, remove_image, report_moved_tags,
};

/// Errors of manager operations: the layers below, converted at this boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source could not be read.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// The runtime (or the archive it was given) failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    /// The TPCM store failed or is busy.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The TPC, volume or image asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something by that name already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in use (or running) and the request did not force it.
    #[error("{0}")]
    InUse(String),
    /// A host port the container would publish is taken.
    #[error("{0}")]
    PortInUse(String),
    /// The host failed tpcm (a file that cannot be written, systemd refusing, a worker thread
    /// lost): not the request's fault.
    #[error("{0}")]
    Internal(String),
    /// An upgrade failed after it had changed something, and the old version was restored.
    #[error("{0}")]
    RolledBack(String),
    /// An upgrade failed and so did restoring the old version (the next command retries).
    #[error("{0}")]
    RollbackFailed(String),
}

/// Seconds since the epoch, for records.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Eight hex digits that differ between calls, for names tpcm picks (instances, volumes).
pub(crate) fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // RandomState is seeded randomly per process; the counter separates calls within one.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:08x}", h.finish() as u32)
}
