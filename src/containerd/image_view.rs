//! Reading files out of an image's root filesystem without running it: the image is mounted
//! read-only from a temporary view snapshot of its top layer, looked at by a closure, and the
//! mount and the view are removed before returning. Used to resolve user names (`users.rs`) and
//! to read the upgrade hooks an image carries (`/tpc/hook/*.sh`).

use super::{Containerd, Error, Lease, SNAPSHOTTER};
use crate::archive::Digest;
use containerd_client::services::v1::snapshots::ViewSnapshotRequest;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

impl Containerd {
    /// Mounts the image whose top layer is `top` read-only on a temporary directory and runs
    /// `look` on it (on a blocking thread). `id` only names the view snapshot.
    pub(crate) async fn with_image_view<T, F>(
        &self,
        lease: &Lease,
        id: &str,
        top: &Digest,
        look: F,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, String> + Send + 'static,
    {
        let key = format!("tpcm-view-{}-{id}", lease.id());
        let req = ViewSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.clone(),
            parent: top.to_string(),
            labels: HashMap::new(),
        };
        let mounts = self
            .snapshots()
            .view(self.request(req, Some(lease)))
            .await
            .map_err(Error::rpc(format!("snapshot view {key}")))?
            .into_inner()
            .mounts;
        let result = tokio::task::spawn_blocking(move || -> Result<T, String> {
            let [m] = mounts.as_slice() else {
                return Err(format!("unexpected view mounts {mounts:?}"));
            };
            let dir = tempfile::Builder::new()
                .prefix("tpcm-view-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let data = m
                .options
                .iter()
                .filter(|o| *o != "ro" && *o != "rbind")
                .cloned()
                .collect::<Vec<_>>()
                .join(",");
            let mut flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if m.r#type == "bind" {
                flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
            }
            let data = (m.r#type != "bind").then_some(data.as_str());
            mount(
                Some(m.source.as_str()),
                dir.path(),
                Some(m.r#type.as_str()),
                flags,
                data,
            )
            .map_err(|e| format!("mounting the image: {e}"))?;
            // A bind mount ignores MS_RDONLY until remounted: the single-layer view is the
            // committed layer itself and must not be writable, even for a moment.
            let read_only = if m.r#type == "bind" {
                let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags;
                mount(None::<&str>, dir.path(), None::<&str>, remount, None::<&str>)
                    .map_err(|e| format!("making the image mount read-only: {e}"))
            } else {
                Ok(())
            };
            let looked = read_only.and_then(|()| look(dir.path()));
            if umount2(dir.path(), MntFlags::MNT_DETACH).is_err() {
                // Never delete through a mount point that is still mounted.
                let _ = dir.keep();
            }
            looked
        })
        .await
        .map_err(|e| Error::Unexpected {
            op: "read the image".into(),
            detail: e.to_string(),
        });
        let _ = self.remove_snapshot(&key).await;
        result?.map_err(|detail| Error::Unexpected {
            op: "read the image".into(),
            detail,
        })
    }
}

/// What [`read_in_root`] found at a path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// A regular file, with its content.
    File(Vec<u8>),
    /// Nothing there (a directory on the way is missing, or a link points nowhere).
    Missing,
    /// Something that is not a regular file (a directory, a device, a FIFO).
    NotAFile,
    /// This kernel cannot resolve paths inside a root safely (`openat2` came with Linux 5.6).
    Unsupported,
}

/// Reads the regular file at `path` inside the tree at `root`, resolving every symlink as if
/// `root` were `/` (an image's `/tpc/hook/pre.sh -> /opt/x` means the image's `/opt/x`, never the
/// host's), refusing a file larger than `limit`. The path is first opened with `O_PATH`, which
/// opens nothing (no FIFO blocks, no device is touched), and only a regular file is opened again
/// to be read.
pub(crate) fn read_in_root(root: &Path, path: &str, limit: u64) -> Result<Found, String> {
    let dir = std::fs::File::open(root).map_err(|e| e.to_string())?;
    let relative = path.trim_start_matches('/');
    let open = |flags: OFlag| {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(dir.as_fd(), relative, how)
    };
    let located = match open(OFlag::O_PATH) {
        Ok(fd) => std::fs::File::from(fd),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Ok(Found::Missing),
        Err(nix::errno::Errno::ENOSYS) => return Ok(Found::Unsupported),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    let meta = located.metadata().map_err(|e| format!("{path}: {e}"))?;
    if !meta.is_file() {
        return Ok(Found::NotAFile);
    }
    if meta.len() > limit {
        return Err(format!(
            "{path} is {} bytes, more than the {limit} bytes read from an image",
            meta.len()
        ));
    }
    let file =
        std::fs::File::from(open(OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(|e| format!("{path}: {e}"))?);
    let mut content = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut content)
        .map_err(|e| format!("{path}: {e}"))?;
    if content.len() as u64 > limit {
        return Err(format!(
            "{path} is more than the {limit} bytes read from an image"
        ));
    }
    Ok(Found::File(content))
}

#[cfg(test)]
mod tests {
    use super::{Found, read_in_root};

    #[test]
    fn files_are_read_with_links_resolved_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("tpc/hook")).unwrap();
        std::fs::create_dir_all(r.join("opt")).unwrap();
        std::fs::write(r.join("opt/pre.sh"), "echo image").unwrap();
        std::os::unix::fs::symlink("/opt/pre.sh", r.join("tpc/hook/pre.sh")).unwrap();
        // An absolute link naming a host file resolves inside the root, where it is missing.
        std::os::unix::fs::symlink("/etc/hostname", r.join("tpc/hook/post.sh")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/hostname", r.join("tpc/hook/up.sh")).unwrap();
        assert_eq!(
            read_in_root(r, "/tpc/hook/pre.sh", 100).unwrap(),
            Found::File(b"echo image".to_vec())
        );
        assert_eq!(read_in_root(r, "/tpc/hook/post.sh", 100).unwrap(), Found::Missing);
        assert_eq!(read_in_root(r, "/tpc/hook/up.sh", 100).unwrap(), Found::Missing);
        assert_eq!(read_in_root(r, "/tpc/hook/none.sh", 100).unwrap(), Found::Missing);
        assert_eq!(read_in_root(r, "/nodir/x/y", 100).unwrap(), Found::Missing);
        assert_eq!(read_in_root(r, "/tpc/hook", 100).unwrap(), Found::NotAFile);
        // A FIFO is not opened (which would block) but refused.
        nix::unistd::mkfifo(
            &r.join("tpc/hook/fifo.sh"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(
            read_in_root(r, "/tpc/hook/fifo.sh", 100).unwrap(),
            Found::NotAFile
        );
        assert!(
            read_in_root(r, "/opt/pre.sh", 4)
                .unwrap_err()
                .contains("more than the 4 bytes")
        );
    }
}
