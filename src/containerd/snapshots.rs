//! Snapshots in the overlayfs snapshotter: prepare, commit, remove, and finding the directory a
//! layer is written into.

use super::{Containerd, Error, Lease, SNAPSHOTTER};
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::types::Mount;
use std::collections::HashMap;
use std::path::PathBuf;

/// Label containerd's own unpacker puts on layer snapshots: the chain ID they hold.
pub(crate) const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

/// An active snapshot's directories, from the mounts containerd gives for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// Where the layer's own files go: a bind mount's source, an overlay's upperdir.
    pub dir: PathBuf,
    /// The parent snapshots' directories, nearest first (overlay `lowerdir=`); empty without a
    /// parent.
    pub lowers: Vec<PathBuf>,
}

impl Containerd {
    /// Prepares an active snapshot `key` on top of `parent` (empty: none) and returns the
    /// directory that receives the layer's files (the bind source for a parentless snapshot, the
    /// overlay `upperdir` otherwise: writing there is what containerd's overlay applier does)
    /// and the parents' directories.
    pub(crate) async fn prepare_snapshot(
        &self,
        lease: &Lease,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Prepared, Error> {
        let op = format!("snapshot prepare {key}");
        let mounts = self
            .snapshots()
            .prepare(self.request(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.into(),
                    parent: parent.into(),
                    labels,
                },
                Some(lease),
            ))
            .await
            .map_err(Error::rpc(op.clone()))?
            .into_inner()
            .mounts;
        writable_dir(&mounts).ok_or_else(|| Error::Unexpected {
            op,
            detail: format!("mounts {mounts:?} are neither a bind nor an overlay with an upperdir"),
        })
    }

    /// Commits active snapshot `key` as `name`. `Ok(false)` when `name` already exists (another
    /// import got there first); the caller then drops its own copy.
    pub(crate) async fn commit_snapshot(
        &self,
        lease: &Lease,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<bool, Error> {
        let req = CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            name: name.into(),
            key: key.into(),
            labels,
        };
        match self.snapshots().commit(self.request(req, Some(lease))).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
            Err(s) => Err(Error::rpc(format!("snapshot commit {name}"))(s)),
        }
    }

    /// Removes a snapshot; a missing one is not an error.
    pub(crate) async fn remove_snapshot(&self, key: &str) -> Result<(), Error> {
        let req = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        match self.snapshots().remove(self.request(req, None)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("snapshot remove {key}"))(s)),
        }
    }

    /// Whether a snapshot exists.
    pub(crate) async fn snapshot_exists(&self, key: &str) -> Result<bool, Error> {
        let req = StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        match self.snapshots().stat(self.request(req, None)).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::rpc(format!("snapshot stat {key}"))(s)),
        }
    }
}

/// The directory a snapshot's own files live in (a bind mount's source, an overlay's upperdir)
/// and its lower directories.
pub(super) fn writable_dir(mounts: &[Mount]) -> Option<Prepared> {
    let [m] = mounts else { return None };
    let option = |name: &str| m.options.iter().find_map(|o| o.strip_prefix(name));
    match m.r#type.as_str() {
        "bind" => Some(Prepared {
            dir: PathBuf::from(&m.source),
            lowers: Vec::new(),
        }),
        "overlay" => Some(Prepared {
            dir: PathBuf::from(option("upperdir=")?),
            lowers: option("lowerdir=")
                .map(|l| l.split(':').map(PathBuf::from).collect())
                .unwrap_or_default(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(t: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: t.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_writable_dir_is_the_bind_source_or_the_upperdir() {
        assert_eq!(
            writable_dir(&[mount("bind", "/s/1/fs", &["rw", "rbind"])]).map(|p| p.dir),
            Some("/s/1/fs".into())
        );
        let o = mount(
            "overlay",
            "overlay",
            &[
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/2/fs:/s/1/fs",
            ],
        );
        assert_eq!(
            writable_dir(&[o]),
            Some(Prepared {
                dir: "/s/3/fs".into(),
                lowers: vec!["/s/2/fs".into(), "/s/1/fs".into()],
            })
        );
        assert_eq!(
            writable_dir(&[mount("overlay", "overlay", &["lowerdir=/a:/b"])]),
            None
        );
        assert_eq!(writable_dir(&[]), None);
    }
}
