//! Directories a layer needs but does not list take their metadata from the layers below, as
//! containerd's `mkparent` does (`archive/tar.go`, `tar_unix.go` `copyDirInfo`/`copyUpXAttrs`).
//!
//! Without this, a layer that only lists `home/u/file` would hide the lower `/home/u` (0700,
//! owned by the user) behind a 0755 root-owned directory in the merged view. The extraction
//! itself cannot do it: a layer is extracted while the archive streams, before the manifest says
//! which layers lie below. So the extractor reports the directories it made
//! ([`super::extract::ImpliedDir`]) and this runs once the snapshot is prepared on its parent.
//!
//! For each implied directory, the lowers are searched from the top: the first that has the
//! path (symlinks resolved inside that lower, never past its root) decides. A directory there
//! gives its owner, mode (set-id and sticky bits included), access time and every xattr but
//! `trusted.*`; anything else there (a file, a whiteout) stops the search and the directory
//! keeps 0755 root:root. A directory the layer listed later keeps its own owner and mode and only
//! gains the lower's xattrs it does not set itself.

use super::extract::{ImpliedDir, open_dir_nofollow, xattr_allowed};
use nix::errno::Errno;
use nix::sys::stat::{FileStat, Mode, UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Applies the lowers' metadata to the implied directories of a layer now in `upper`.
/// `lowers` are the parent snapshots' directories, nearest first (overlay's `lowerdir=` order).
pub fn inherit(upper: &Path, lowers: &[PathBuf], implied: &[ImpliedDir]) -> Result<(), String> {
    if lowers.is_empty() || implied.is_empty() {
        return Ok(());
    }
    let fail = |what: &str, p: &Path, e: Errno| format!("{what} {}: {e}", p.display());
    let upper_fd = open_dir_nofollow(None, upper.as_os_str()).map_err(|e| fail("opening", upper, e))?;
    for dir in implied {
        // The layer may have removed or replaced it since: then there is nothing to inherit.
        let Some(target) = open_below(upper_fd.as_fd(), &dir.path) else {
            continue;
        };
        for lower in lowers {
            let Some(found) = root_path(lower, &dir.path) else {
                continue;
            };
            match nix::sys::stat::lstat(&found) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    copy_dir_info(&target, &st, dir.listed)
                        .map_err(|e| fail("copying attributes to", &dir.path, e))?;
                    copy_xattrs(&found, &target).map_err(|e| fail("copying xattrs to", &dir.path, e))?;
                    break;
                }
                // Replaced in that lower (a file, a whiteout): keep the defaults.
                Ok(_) => break,
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => continue,
                Err(e) => return Err(fail("reading", &found, e)),
            }
        }
    }
    Ok(())
}

/// Opens `rel` below `root` component by component, following no symlink.
fn open_below(root: BorrowedFd<'_>, rel: &Path) -> Option<OwnedFd> {
    let mut cur = root.try_clone_to_owned().ok()?;
    for c in rel.components() {
        let Component::Normal(name) = c else { return None };
        cur = open_dir_nofollow(Some(cur.as_fd()), name).ok()?;
    }
    Some(cur)
}

/// containerd's `fs.RootPath`: `rel` inside `root` with every symlink resolved as if `root`
/// were `/` (absolute targets restart at `root`, `..` stops there). Components that do not exist
/// are kept as they are. `None` after too many links.
pub fn root_path(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut todo: Vec<OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let candidate: PathBuf = root.join(PathBuf::from_iter(done.iter().chain([&part])));
        match std::fs::read_link(&candidate) {
            Ok(target) => {
                links += 1;
                if links > 255 {
                    return None;
                }
                if target.is_absolute() {
                    done.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push(OsString::from("..")),
                        _ => {}
                    }
                }
            }
            Err(_) => done.push(part),
        }
    }
    Some(root.join(PathBuf::from_iter(done)))
}

/// `copyDirInfo`: owner and mode (unless the layer listed the directory, whose own values were
/// set after containerd's copy), and the access time. The modification time is not copied: in
/// containerd it is overwritten by creating the entries inside.
fn copy_dir_info(target: &OwnedFd, st: &FileStat, listed: bool) -> Result<(), Errno> {
    if !listed {
        nix::unistd::fchown(
            target,
            Some(nix::unistd::Uid::from_raw(st.st_uid)),
            Some(nix::unistd::Gid::from_raw(st.st_gid)),
        )?;
        nix::sys::stat::fchmod(target, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
        let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
        utimensat(
            target.as_fd(),
            ".",
            &atime,
            &TimeSpec::UTIME_OMIT,
            UtimensatFlags::NoFollowSymlink,
        )?;
    }
    Ok(())
}

/// `copyUpXAttrs`: every xattr of the lower directory but `trusted.*`, never replacing one the
/// directory already has (`XATTR_CREATE`); unsupported ones are skipped.
fn copy_xattrs(from: &Path, to: &OwnedFd) -> Result<(), Errno> {
    let names = match xattr::list(from) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA)) => return Ok(()),
        Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
    };
    for name in names {
        if !xattr_allowed(name.as_bytes()) {
            continue;
        }
        let value = match xattr::get(from, &name) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA)) => continue,
            Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        };
        let cname = std::ffi::CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
        // SAFETY: valid descriptor, NUL-terminated name, value from a Vec.
        let r = unsafe {
            libc::fsetxattr(
                to.as_raw_fd(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                libc::XATTR_CREATE,
            )
        };
        match Errno::result(r) {
            Ok(_) | Err(Errno::ENOTSUP) | Err(Errno::ENODATA) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    #[test]
    fn root_path_resolves_links_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/usr", r.join("abs")).unwrap();
        symlink("../../../../etc", r.join("up")).unwrap();
        assert_eq!(root_path(r, Path::new("lib")).unwrap(), r.join("usr/lib"));
        assert_eq!(root_path(r, Path::new("abs/lib")).unwrap(), r.join("usr/lib"));
        assert_eq!(
            root_path(r, Path::new("up/passwd")).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(root_path(r, Path::new("none/x")).unwrap(), r.join("none/x"));
        symlink("loop", r.join("loop")).unwrap();
        assert_eq!(root_path(r, Path::new("loop")), None);
    }

    #[test]
    fn implied_dirs_take_the_nearest_lowers_metadata() {
        let d = tempfile::tempdir().unwrap();
        let (upper, near, far) = (d.path().join("u"), d.path().join("l1"), d.path().join("l0"));
        for p in [&upper, &near, &far] {
            std::fs::create_dir(p).unwrap();
        }
        std::fs::create_dir_all(far.join("home/u")).unwrap();
        std::fs::set_permissions(far.join("home/u"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(far.join("home/u"), Some(1000), Some(1000)).unwrap();
        xattr::set(far.join("home/u"), "user.dirx", b"1").unwrap();
        xattr::set(far.join("home/u"), "trusted.t", b"1").unwrap();
        std::fs::create_dir(far.join("tmp")).unwrap();
        std::fs::set_permissions(far.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        // The nearer lower replaced /tmp with a file: the search stops there.
        std::fs::write(near.join("tmp"), b"").unwrap();
        for p in ["home/u", "tmp", "new"] {
            std::fs::create_dir_all(upper.join(p)).unwrap();
        }
        let implied = ["home", "home/u", "tmp", "new"]
            .iter()
            .map(|p| ImpliedDir {
                path: p.into(),
                listed: false,
            })
            .collect::<Vec<_>>();
        inherit(&upper, &[near.clone(), far.clone()], &implied).unwrap();
        let m = std::fs::metadata(upper.join("home/u")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, 1000, 1000));
        assert_eq!(
            xattr::get(upper.join("home/u"), "user.dirx").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(xattr::get(upper.join("home/u"), "trusted.t").unwrap(), None);
        assert_eq!(
            std::fs::metadata(upper.join("tmp")).unwrap().mode() & 0o7777,
            0o755
        );
    }
}
