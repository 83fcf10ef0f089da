//! Docker managed plugins for the tests: the volume plugin of `volume_plugin.c` compiled
//! statically here, packed as the tarballs gNOI clients deploy (the reference server's layout,
//! a root filesystem at the top of a gzip'd tar; or docker's `plugin create` layout,
//! `config.json` beside `rootfs/`).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The volume plugin, compiled once per socket name (its default `PLUGIN_SOCKET` is
/// `/run/docker/plugins/<socket>`).
pub fn plugin_binary(socket: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, p)) = built.iter().find(|(s, _)| s == socket) {
        return p.clone();
    }
    let dir = std::env::temp_dir().join(format!("tpcm-volume-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(socket.replace('.', "_"));
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/volume_plugin.c");
    let made = std::process::Command::new("cc")
        .args(["-static", "-O2"])
        .arg(format!("-DDEFAULT_SOCKET=\"/run/docker/plugins/{socket}\""))
        .arg("-o")
        .arg(&out)
        .arg(src)
        .output()
        .expect("cc (scripts/install-deps.sh installs a C toolchain)");
    assert!(
        made.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    built.push((socket.to_string(), out.clone()));
    out
}

/// How a plugin tarball is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The root filesystem at the top, gzip'd, with `config.json` beside it when given (what
    /// featureprofiles' `rootfs.tar.gz` is).
    FlatGzip,
    /// docker's `plugin create` context, plain: `config.json` and `rootfs/`.
    Docker,
}

/// A plugin tarball at `path` whose root filesystem holds the plugin at `/<program>` (built
/// for `socket`) and the directories docker plugins expect, plus `extra` entries (path,
/// content) written as they are (a hostile name included).
pub fn tarball(
    path: &Path,
    layout: Layout,
    program: &str,
    socket: &str,
    config: Option<&str>,
    extra: &[(&str, &[u8])],
) -> PathBuf {
    let binary = std::fs::read(plugin_binary(socket)).unwrap();
    let prefix = match layout {
        Layout::FlatGzip => "",
        Layout::Docker => "rootfs/",
    };
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, mode: u32, data: Option<&[u8]>| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        match data {
            Some(d) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(d.len() as u64);
                builder.append_data(&mut header, name, d).unwrap();
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, name, std::io::empty()).unwrap();
            }
        }
    };
    if let Some(c) = config {
        add("config.json", 0o644, Some(c.as_bytes()));
    }
    if layout == Layout::Docker {
        add("rootfs/", 0o755, None);
    }
    for dir in [
        "run",
        "run/docker",
        "run/docker/plugins",
        "mnt",
        "mnt/state",
        "mnt/volumes",
        "root",
        "root/.ssh",
        "tmp",
        "etc",
    ] {
        add(&format!("{prefix}{dir}/"), 0o755, None);
    }
    add(&format!("{prefix}{program}"), 0o755, Some(&binary));
    let mut bytes = builder.into_inner().unwrap();
    for (name, content) in extra {
        // Appended by hand so that any name, `..` included, is written as it is.
        let mut raw = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(content.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        raw.append(&header, *content).unwrap();
        let tail = raw.into_inner().unwrap();
        // Drop the end-of-archive blocks of the first before joining.
        bytes.truncate(bytes.len() - 1024);
        bytes.extend_from_slice(&tail);
    }
    let data = match layout {
        Layout::FlatGzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap()
        }
        Layout::Docker => bytes,
    };
    std::fs::write(path, data).unwrap();
    path.to_path_buf()
}

/// The SHA-256 of a file, as bytes.
pub fn sha256(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// Whether `path` is on a tmpfs (a volume plugin's Mount made it).
pub fn on_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}
