//! What the spec builder must know about the host, read once per container creation by the
//! backend so the builder itself stays pure: the host name (a container on the host network
//! gets it in its own UTS namespace), the architecture and kernel (seccomp), the capabilities
//! tpcm itself has and the device nodes (what `--privileged` gives), AppArmor, the init binary
//! `--init` runs, and the per-CPU paths docker masks.

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The host, as a container is built for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    /// The host's name.
    pub hostname: String,
    /// docker's name of the architecture (`amd64`, `arm64`, ...).
    pub arch: String,
    /// Kernel major and minor version.
    pub kernel: (u32, u32),
    /// The capabilities tpcm runs with (`CAP_X`): what a privileged container gets.
    pub capabilities: Vec<String>,
    /// The host's device nodes (read only for a privileged container).
    pub devices: Vec<LinuxDevice>,
    /// The AppArmor profiles loaded, when the host has AppArmor enabled; `None` without it.
    pub apparmor_profiles: Option<Vec<String>>,
    /// A static init binary on the host (`tini-static`, docker's `docker-init`), for `--init`.
    pub init: Option<PathBuf>,
    /// Paths under `/sys` docker masks that exist on this host (per-CPU thermal throttling).
    pub masked_extra: Vec<String>,
}

/// Where docker looks for its init binary, and Debian's static tini.
const INIT_CANDIDATES: &[&str] = &[
    "/usr/bin/tini-static",
    "/usr/libexec/docker/docker-init",
    "/usr/local/libexec/docker/docker-init",
    "/usr/lib/docker/docker-init",
    "/usr/local/lib/docker/docker-init",
    "/usr/libexec/docker-init",
    "/usr/bin/docker-init",
    "/usr/sbin/docker-init",
];

impl Host {
    /// Reads this host; the device nodes only when `privileged` (a walk of `/dev`).
    pub fn detect(privileged: bool) -> Host {
        let target = super::seccomp::Target::host(Vec::new());
        Host {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            arch: target.arch,
            kernel: target.kernel,
            capabilities: effective_capabilities(),
            devices: if privileged {
                host_devices(Path::new("/dev"))
            } else {
                Vec::new()
            },
            apparmor_profiles: apparmor_profiles(),
            init: INIT_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .find(|p| is_static_executable(p)),
            masked_extra: thermal_throttle_paths(),
        }
    }
}

/// The capabilities in this process's effective set (`CapEff` in /proc/self/status), by name.
fn effective_capabilities() -> Vec<String> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Vec::new();
    };
    let Some(bits) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    else {
        return Vec::new();
    };
    crate::tpc_spec::LINUX_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Every device node under `dir`, as docker's privileged containers get them (not the
/// container's own pts, shm, mqueue, fd, console, nor fifos).
fn host_devices(dir: &Path) -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            if !matches!(
                name.to_str(),
                Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev")
            ) {
                out.extend(host_devices(&path));
            }
            continue;
        }
        let typ = if md.file_type().is_char_device() {
            LinuxDeviceType::C
        } else if md.file_type().is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        if name == "console" {
            continue;
        }
        let mut d = LinuxDevice::default();
        d.set_path(path)
            .set_typ(typ)
            .set_major(nix::sys::stat::major(md.rdev()) as i64)
            .set_minor(nix::sys::stat::minor(md.rdev()) as i64)
            .set_file_mode(Some(md.mode() & 0o7777))
            .set_uid(Some(md.uid()))
            .set_gid(Some(md.gid()));
        out.push(d);
    }
    out
}

/// The loaded AppArmor profiles, when AppArmor is enabled here as docker checks it (the module
/// enabled, securityfs mounted, the parser installed); `None` otherwise.
fn apparmor_profiles() -> Option<Vec<String>> {
    let enabled =
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'));
    if !enabled
        || !Path::new("/sys/kernel/security/apparmor").is_dir()
        || !Path::new("/sbin/apparmor_parser").exists()
    {
        return None;
    }
    let list = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").unwrap_or_default();
    // Each line: `<name> (<mode>)`.
    Some(
        list.lines()
            .filter_map(|l| l.rsplit_once(" (").map(|(n, _)| n.to_string()))
            .collect(),
    )
}

/// Whether `path` is an executable ELF file without a program interpreter (statically linked):
/// the only kind that runs in any image.
fn is_static_executable(path: &Path) -> bool {
    use std::io::Read;
    let Ok(md) = std::fs::metadata(path) else {
        return false;
    };
    if !md.is_file() || md.mode() & 0o111 == 0 {
        return false;
    }
    let mut head = vec![0u8; 64 * 1024];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    has_no_interpreter(&head[..n]).unwrap_or(false)
}

/// Whether a 64-bit little-endian ELF image's program headers lack a PT_INTERP (the dynamic
/// loader's path); `None` when the bytes are not such an ELF file or its headers are cut.
fn has_no_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    let (phoff, entsize, count) = (u64_at(32)? as usize, u16_at(54)? as usize, u16_at(56)? as usize);
    for i in 0..count {
        if u32_at(phoff + i * entsize)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// `/sys/devices/system/cpu/cpu<N>/thermal_throttle` for each CPU that has one (docker masks
/// them: they leak host activity).
fn thermal_throttle_paths() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path().join("thermal_throttle"))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_reads() {
        let h = Host::detect(true);
        assert!(!h.arch.is_empty() && h.kernel.0 >= 3);
        // Tests run as root: tpcm has every capability.
        assert!(
            h.capabilities.contains(&"CAP_SYS_ADMIN".to_string()),
            "{:?}",
            h.capabilities
        );
        assert!(h.devices.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(!h.devices.iter().any(|d| d.path().starts_with("/dev/pts")));
    }

    #[test]
    fn only_static_binaries_are_init_candidates() {
        assert!(!is_static_executable(Path::new("/bin/ls")), "ls is dynamic");
        assert!(!is_static_executable(Path::new("/nonexistent")));
        let busybox = Path::new("/bin/busybox");
        if busybox.exists() {
            assert!(is_static_executable(busybox), "busybox-static is static");
        }
    }
}
