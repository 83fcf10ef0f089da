//! An overlay upper directory (a container's writable layer) → an OCI layer tar, the reverse of
//! `extract.rs`: overlay whiteouts (0/0 character devices) become `.wh.<name>` entries, opaque
//! directories (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` entry, hard links within the
//! layer become tar links. Entries are written in sorted order with their mode, owner and mtime,
//! so the same directory always gives the same tar. Extended attributes are not carried
//! (`docs/operations.md`).
//!
//! containerd's differ would need a second overlay mount of the same upper directory while the
//! container runs, which overlayfs refuses; reading the upper directory directly needs none.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use xattr::FileExt;

/// Writes the layer tar of `upper` into `out`; returns the bytes of file data it holds.
///
/// The container may be running: every directory and file is opened without following
/// symlinks and read through its descriptor, so an entry swapped for a symlink while the save
/// runs can never pull a host file into the layer, and a file's size is the one the header
/// states (a file that grows is cut, one that shrinks is padded) so the tar stays well-formed.
pub fn write_layer<W: Write>(upper: &Path, out: W) -> io::Result<u64> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    let mut data = 0;
    let root = open_nofollow(upper, true)?;
    walk(&root, "", &mut builder, &mut links, &mut data)?;
    builder.into_inner()?.flush()?;
    Ok(data)
}

/// Opens a directory or a regular file without following a symlink (and without blocking on
/// a FIFO that took a file's place).
fn open_nofollow(path: &Path, dir: bool) -> io::Result<File> {
    let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// The path of an entry inside an open directory, through the descriptor (so renames of the
/// directory's ancestors cannot redirect it).
fn inside(dir: &File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

fn changed(path: &str) -> io::Error {
    io::Error::other(format!(
        "{path} changed while it was being saved; stop the TPC and save again"
    ))
}

fn header_for(meta: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid().into());
    h.set_gid(meta.gid().into());
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn empty<W: Write>(builder: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(0);
    builder.append_data(&mut h, path, io::empty())
}

fn walk<W: Write>(
    dir: &File,
    prefix: &str,
    builder: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), String>,
    data: &mut u64,
) -> io::Result<()> {
    let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let mut names: Vec<String> = std::fs::read_dir(&listing)?
        .map(|e| {
            let name = e?.file_name();
            name.into_string()
                .map_err(|n| io::Error::new(io::ErrorKind::InvalidData, format!("{prefix}{n:?}: not UTF-8")))
        })
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = format!("{prefix}{name}");
        let at = inside(dir, &name);
        let meta = match std::fs::symlink_metadata(&at) {
            Ok(m) => m,
            // Deleted since the listing: it is not part of the state any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            // An overlay whiteout: the name was deleted from the lower layers.
            empty(builder, &format!("{prefix}.wh.{name}"))?;
        } else if ft.is_dir() {
            let sub = open_nofollow(&at, true).map_err(|_| changed(&path))?;
            let mut h = header_for(&meta, tar::EntryType::Directory);
            builder.append_data(&mut h, format!("{path}/"), io::empty())?;
            let opaque = sub
                .get_xattr("trusted.overlay.opaque")?
                .is_some_and(|v| v == b"y");
            if opaque {
                empty(builder, &format!("{path}/.wh..wh..opq"))?;
            }
            walk(&sub, &format!("{path}/"), builder, links, data)?;
        } else if ft.is_symlink() {
            let mut h = header_for(&meta, tar::EntryType::Symlink);
            builder.append_link(&mut h, &path, std::fs::read_link(&at)?)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    let mut h = header_for(&meta, tar::EntryType::Link);
                    builder.append_link(&mut h, &path, first)?;
                    continue;
                }
                links.insert(key, path.clone());
            }
            let file = open_nofollow(&at, false).map_err(|_| changed(&path))?;
            let opened = file.metadata()?;
            if !opened.is_file() || opened.ino() != meta.ino() {
                return Err(changed(&path));
            }
            let size = opened.len();
            let mut h = header_for(&opened, tar::EntryType::Regular);
            h.set_size(size);
            // Exactly `size` bytes, whatever the file does meanwhile.
            let body = (&file).take(size).chain(io::repeat(0)).take(size);
            builder.append_data(&mut h, &path, body)?;
            *data += size;
        } else {
            let kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                // Sockets are not part of a filesystem's state.
                continue;
            };
            let mut h = header_for(&meta, kind);
            let rdev = meta.rdev();
            h.set_device_major(nix::sys::stat::major(rdev) as u32)?;
            h.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
            builder.append_data(&mut h, &path, io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_opaque_dirs_and_hard_links_become_oci_entries() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path();
        std::fs::create_dir_all(up.join("etc")).unwrap();
        std::fs::write(up.join("etc/state"), "s\n").unwrap();
        std::fs::hard_link(up.join("etc/state"), up.join("etc/state-link")).unwrap();
        std::os::unix::fs::symlink("state", up.join("etc/sym")).unwrap();
        nix::sys::stat::mknod(
            &up.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        std::fs::create_dir(up.join("data")).unwrap();
        xattr::set(up.join("data"), "trusted.overlay.opaque", b"y").unwrap();

        let mut tar_bytes = Vec::new();
        assert_eq!(write_layer(up, &mut tar_bytes).unwrap(), 2);
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let entries: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type())
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "data/",
                "data/.wh..wh..opq",
                "etc/",
                "etc/.wh.gone",
                "etc/state",
                "etc/state-link",
                "etc/sym"
            ]
        );
        assert_eq!(entries[5].1, tar::EntryType::Link);
        assert_eq!(entries[6].1, tar::EntryType::Symlink);
    }
}
