//! Resolving a user name (`-u app`, or an image's `User`) to numeric IDs from the image's own
//! `/etc/passwd` and `/etc/group`, as docker does. The image is mounted read-only from a view
//! snapshot (`image_view.rs`); the two files are opened without following symlinks (a symlink there would resolve
//! on the host, not in the image) and read with a size bound.

use super::{Containerd, Error, Lease};
use crate::archive::Digest;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use std::io::Read;
use std::os::fd::AsFd;

/// Largest passwd or group file read.
const ACCOUNT_FILE_LIMIT: u64 = 1 << 20;

/// Turns `user[:group]` into `uid:gid`. Numeric parts pass through; names are looked up.
pub(crate) fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<String, String> {
    let (user, grp) = spec.split_once(':').map_or((spec, None), |(u, g)| (u, Some(g)));
    let field = |line: &str, i: usize| line.split(':').nth(i).map(str::to_string);
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .lines()
                .find(|l| field(l, 2).as_deref() == Some(user))
                .and_then(|l| field(l, 3));
            (uid, gid.and_then(|g| g.parse().ok()).unwrap_or(uid))
        }
        // root is uid 0 even in an image without /etc/passwd.
        Err(_) if user == "root" && !passwd.lines().any(|l| field(l, 0).as_deref() == Some("root")) => (0, 0),
        Err(_) => {
            let line = passwd
                .lines()
                .find(|l| field(l, 0).as_deref() == Some(user))
                .ok_or_else(|| format!("user {user:?} is not in the image's /etc/passwd"))?;
            let num = |i| field(line, i).and_then(|v| v.parse::<u32>().ok());
            (
                num(2).ok_or("bad uid in /etc/passwd")?,
                num(3).ok_or("bad gid in /etc/passwd")?,
            )
        }
    };
    let gid = match grp {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .find(|l| field(l, 0).as_deref() == Some(g))
                .and_then(|l| field(l, 2))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok(format!("{uid}:{gid}"))
}

pub(super) fn read_account_file(root: &std::path::Path, name: &str) -> Result<String, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = std::fs::File::open(root).map_err(|e| e.to_string())?;
    let etc = match openat(dir.as_fd(), "etc", flags | OFlag::O_DIRECTORY, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(String::new()),
        Err(e) => return Err(format!("/etc: {e}")),
    };
    let fd = match openat(etc.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(String::new()),
        Err(e) => return Err(format!("/etc/{name}: {e} (a symlink is not followed)")),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(ACCOUNT_FILE_LIMIT)
        .read_to_string(&mut text)
        .map_err(|e| format!("/etc/{name}: {e}"))?;
    Ok(text)
}

impl Containerd {
    /// Resolves `user` against the image whose top layer is `top`, through a temporary read-only
    /// mount of a view snapshot (removed before returning).
    pub(crate) async fn resolve_image_user(
        &self,
        lease: &Lease,
        id: &str,
        top: &Digest,
        user: &str,
    ) -> Result<String, Error> {
        let numeric = |s: &str| s.split(':').all(|p| p.parse::<u32>().is_ok());
        if numeric(user) && user.contains(':') {
            return Ok(user.to_string());
        }
        let files = self
            .with_image_view(lease, id, top, |root| {
                read_account_file(root, "passwd")
                    .and_then(|p| read_account_file(root, "group").map(|g| (p, g)))
            })
            .await?;
        let (passwd, group) = files;
        resolve_user(user, &passwd, &group).map_err(|detail| Error::Unexpected {
            op: format!("resolve user {user}"),
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_user;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:\n";

    #[test]
    fn names_resolve_from_the_images_files() {
        assert_eq!(resolve_user("app", PASSWD, GROUP).unwrap(), "1000:1001");
        assert_eq!(resolve_user("app:staff", PASSWD, GROUP).unwrap(), "1000:50");
        assert_eq!(resolve_user("1000", PASSWD, GROUP).unwrap(), "1000:1001");
        assert_eq!(resolve_user("4242", PASSWD, GROUP).unwrap(), "4242:4242");
        assert_eq!(resolve_user("root:7", PASSWD, GROUP).unwrap(), "0:7");
        assert!(
            resolve_user("nobody", PASSWD, GROUP)
                .unwrap_err()
                .contains("nobody")
        );
        assert!(
            resolve_user("app:nogroup", PASSWD, GROUP)
                .unwrap_err()
                .contains("nogroup")
        );
    }
}
