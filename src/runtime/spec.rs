//! The OCI runtime spec of a TPC's container, built with `oci-spec` from the image config and the
//! TPC's settings. Pure: no runtime is touched here, so every rule is unit-tested.
//!
//! Choices (see `docs/args.md` for the user-facing side and `docs/confinement.md` for the table
//! against docker): the host network by default, as every SONiC container, with a UTS namespace
//! of its own (docker's); docker's default capability set, seccomp profile, masked and read-only
//! paths, `/proc` options and OOM score; the cgroup at `/<namespace>/<name>` so operators find
//! limits under `/sys/fs/cgroup/<ctrl>/<ns>/<name>`; a CFS period of 100 ms with quota = cpus ×
//! period. What the builder needs to know about the host comes in a [`Host`], read by the
//! backend, so the builder stays pure.

pub use super::host::Host;
use crate::runtime::ResourceLimits;
use crate::tpc_spec::{ContainerSettings, DeviceMapping, ImageRef, Network, PortMapping, Seccomp, Ulimit};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxDeviceCgroup, LinuxNamespaceType, LinuxResources, Mount, PosixRlimit,
    PosixRlimitType, Spec,
};
use std::path::PathBuf;

/// CFS period used for every CPU cap (the kernel's default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Capabilities a container gets by default: docker's default set, which is what third-party
/// applications are written and tested against.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability name `oci-spec` knows, for `ALL` and `--privileged`.
pub const ALL_CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETGID",
    "SETFCAP",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// Parses a capability name with or without `CAP_`, any case.
pub fn capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// A bind mount from the host that tpcm itself adds (the TPC's data directory at `/tpc`, the
/// shared one at `/tpc-shared`); the operator's are the settings' volumes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Host path.
    pub host: PathBuf,
    /// Path inside the container.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Bound `rshared` instead of `rprivate`: mounts made under it inside reach the host (a
    /// plugin's propagated mount; the host path must be a shared mount point).
    #[serde(default)]
    pub shared: bool,
}

/// A container to create: the TPC's spec placed on this host. Built by the manager from the
/// TPC's record each time a container is made; the backend turns it into its own configuration
/// (containerd: an OCI runtime spec).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerConfig {
    /// Container ID (the TPC name).
    pub id: String,
    /// The image to run: its name (shown by the runtime) and the manifest digest the container
    /// is made from and pinned to (the name's tag may point elsewhere meanwhile).
    pub image: ImageRef,
    /// The TPC's settings.
    pub settings: ContainerSettings,
    /// tpcm's own bind mounts, mounted before the settings' volumes.
    pub mounts: Vec<BindMount>,
    /// The CPU cap in CPUs (the settings' `cpus`, or tpcm's default share resolved).
    pub cpus: f64,
}

impl ContainerConfig {
    /// The limits `tpcm update` can change ([`set_limits`]).
    pub fn limits(&self) -> ResourceLimits {
        ResourceLimits {
            cpus: self.cpus,
            memory: self.settings.memory,
            memory_reservation: self.settings.memory_reservation,
            pids_limit: self.settings.pids_limit,
        }
    }

    /// Whether the container shares the host's network namespace.
    pub fn host_network(&self) -> bool {
        self.settings.network == Network::Host
    }

    /// The ports to forward when the container is on the runtime's bridge; `None` when it is not.
    pub fn bridge(&self) -> Option<&[PortMapping]> {
        (self.settings.network == Network::Bridge).then_some(&self.settings.ports)
    }
}

/// Why a spec cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The image has nothing to run and no command was given.
    #[error("the image has no entrypoint or command; give a command in --args")]
    NothingToRun,
    /// A user that is neither numeric nor root.
    #[error("user {0:?} is not numeric: give uid[:gid] (names are not resolved yet)")]
    User(String),
    /// An unknown capability name.
    #[error("unknown capability {0:?}")]
    Capability(String),
    /// A device that cannot be inspected on the host.
    #[error("device {path}: {reason}")]
    Device {
        /// Host path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// `--init` without an init binary on the host.
    #[error(
        "--init needs a static init binary on the host (tini-static, from Debian's tini package, or docker's docker-init)"
    )]
    NoInit,
    /// An AppArmor profile the host has not loaded.
    #[error("AppArmor profile {0:?} is not loaded on this host (load it with apparmor_parser first)")]
    AppArmor(String),
    /// A seccomp profile that does not resolve.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A resource limit oci-spec does not know.
    #[error("--ulimit: {0:?} is not a resource limit")]
    Ulimit(String),
}

fn parse_user(user: &str) -> Result<(u32, u32), SpecError> {
    let bad = || SpecError::User(user.to_string());
    let (u, g) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    let uid = if u == "root" {
        0
    } else {
        u.parse().map_err(|_| bad())?
    };
    let gid = match g {
        Some("root") => 0,
        Some(g) => g.parse().map_err(|_| bad())?,
        None => uid,
    };
    Ok((uid, gid))
}

fn capabilities(config: &ContainerConfig, host: &Host) -> Result<Capabilities, SpecError> {
    let parse = |n: &str| capability(n).ok_or_else(|| SpecError::Capability(n.to_string()));
    let all = || {
        ALL_CAPABILITIES
            .iter()
            .map(|n| parse(n))
            .collect::<Result<Capabilities, _>>()
    };
    let config = &config.settings;
    if config.privileged {
        // docker's: every capability the daemon (here: tpcm) has, that oci-spec can name.
        return Ok(host.capabilities.iter().filter_map(|n| capability(n)).collect());
    }
    // Docker's rules (moby's TweakCapabilities): `--cap-add ALL` is every capability but the
    // named drops; otherwise `--cap-drop ALL` empties the defaults first, so
    // `--cap-drop ALL --cap-add X` leaves exactly X; named drops apply, then named adds.
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let named_drops = config.cap_drop.iter().filter(|c| !is_all(c));
    let mut caps: Capabilities = if config.cap_add.iter().any(is_all) {
        all()?
    } else if config.cap_drop.iter().any(is_all) {
        Capabilities::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|n| parse(n))
            .collect::<Result<_, _>>()?
    };
    for c in named_drops {
        caps.remove(&parse(c)?);
    }
    for c in config.cap_add.iter().filter(|c| !is_all(c)) {
        caps.insert(parse(c)?);
    }
    Ok(caps)
}

/// Merges `KEY=VALUE` lists: later keys replace earlier ones, order of first appearance kept.
fn merge_env(base: &[String], over: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for kv in base.iter().chain(over) {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        match out
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => *e = kv.clone(),
            None => out.push(kv.clone()),
        }
    }
    out
}

/// Docker's rule: an entrypoint override drops the image's command unless one is given.
fn process_args(config: &ContainerSettings, image: &ImageConfiguration) -> Result<Vec<String>, SpecError> {
    let img = image.config().clone().unwrap_or_default();
    let (entrypoint, image_cmd) = match &config.entrypoint {
        Some(e) => (e.clone(), Vec::new()),
        None => (
            img.entrypoint().clone().unwrap_or_default(),
            img.cmd().clone().unwrap_or_default(),
        ),
    };
    let cmd = if config.command.is_empty() {
        image_cmd
    } else {
        config.command.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NothingToRun);
    }
    Ok(args)
}

fn bind(destination: &str, source: &std::path::Path, read_only: bool) -> Mount {
    bind_with(destination, source, read_only, "rprivate")
}

fn bind_with(destination: &str, source: &std::path::Path, read_only: bool, propagation: &str) -> Mount {
    let mut options = vec!["rbind".to_string(), propagation.to_string()];
    options.push(if read_only { "ro" } else { "rw" }.to_string());
    let mut m = Mount::default();
    m.set_destination(destination.into())
        .set_typ(Some("bind".into()))
        .set_source(Some(source.to_path_buf()))
        .set_options(Some(options));
    m
}

/// Paths docker masks beyond oci-spec's defaults (docker ≥ 25: `/proc/interrupts`, the power
/// capping interface, whose energy counters leak host activity).
const MORE_MASKED_PATHS: &[&str] = &["/proc/interrupts", "/sys/devices/virtual/powercap"];

/// docker's default `/dev/shm` size (64 MiB).
const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// Where `--init`'s binary appears in the container (docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// Builds the spec. `cgroup_parent` is the namespace (the cgroup is `/<parent>/<id>`); `host`
/// is what the backend read about this host.
pub fn build(
    config: &ContainerConfig,
    image: &ImageConfiguration,
    cgroup_parent: &str,
    host: &Host,
) -> Result<Spec, SpecError> {
    let img = image.config().clone().unwrap_or_default();
    let settings = &config.settings;
    let mut spec = Spec::default();

    let mut process = spec.process().clone().unwrap_or_default();
    let mut args = process_args(settings, image)?;
    if settings.init {
        if host.init.is_none() {
            return Err(SpecError::NoInit);
        }
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }
    process.set_args(Some(args));
    let default_env = process.env().clone().unwrap_or_default();
    let image_env = img.env().clone().unwrap_or_default();
    process.set_env(Some(merge_env(
        &merge_env(&default_env, &image_env),
        &settings.env,
    )));
    let cwd = settings
        .workdir
        .clone()
        .or_else(|| img.working_dir().clone())
        .filter(|w| !w.is_empty());
    process.set_cwd(cwd.unwrap_or_else(|| "/".into()).into());
    if let Some(user) = settings
        .user
        .clone()
        .or_else(|| img.user().clone())
        .filter(|u| !u.is_empty())
    {
        let (uid, gid) = parse_user(&user)?;
        let mut u = process.user().clone();
        u.set_uid(uid).set_gid(gid);
        process.set_user(u);
    }
    let caps = capabilities(config, host)?;
    let mut pc = process.capabilities().clone().unwrap_or_default();
    pc.set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps.clone()))
        .set_inheritable(None)
        .set_ambient(None);
    process.set_capabilities(Some(pc));
    // As docker: set-id programs (su, ping, sudo) keep working unless asked otherwise.
    process.set_no_new_privileges(Some(settings.security.no_new_privileges));
    // As docker: always written (0 by default), so a TPC does not inherit containerd's -999
    // and become the last thing the kernel kills.
    process.set_oom_score_adj(Some(settings.oom_score_adj));
    // As docker: no limits but the ones asked for; the rest are inherited from the runtime
    // (oci-spec's default would cap open files at 1024).
    process.set_rlimits(Some(rlimits(&settings.ulimits)?).filter(|r| !r.is_empty()));
    if let Some(profile) = &settings.security.apparmor {
        // As docker: only where the host has AppArmor; there the profile must be loaded, or
        // runc would fail the start.
        if let Some(loaded) = &host.apparmor_profiles {
            if !loaded.contains(profile) {
                return Err(SpecError::AppArmor(profile.clone()));
            }
            process.set_apparmor_profile(Some(profile.clone()));
        }
    }
    spec.set_process(Some(process));

    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path("rootfs".into())
        .set_readonly(Some(settings.read_only));
    spec.set_root(Some(root));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in mounts.iter_mut() {
        let dest = m.destination().clone();
        if dest == std::path::Path::new("/proc") {
            // As docker: no set-id files, executables or devices through /proc.
            m.set_options(Some(vec!["nosuid".into(), "noexec".into(), "nodev".into()]));
        } else if dest == std::path::Path::new("/dev/shm") {
            let size = settings.shm_size.unwrap_or(DEFAULT_SHM_SIZE);
            let mut options: Vec<String> = m
                .options()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| !o.starts_with("size="))
                .collect();
            options.push(format!("size={size}"));
            m.set_options(Some(options));
        } else if settings.privileged
            && (dest == std::path::Path::new("/sys") || dest == std::path::Path::new("/sys/fs/cgroup"))
        {
            // As docker: a privileged container may write sysfs and cgroupfs.
            let options = m.options().clone().unwrap_or_default();
            m.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
        }
    }
    let own = |dest: &str| config.mounts.iter().any(|m| m.container == dest);
    if settings.network != Network::None {
        // The default fresh, read-only sysfs is kept: mounted from within the host's network
        // namespace it already shows the host's interfaces. (A bind of the host's /sys would be
        // read-only only at its top and expose every cgroup's limits to the container.)
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            if std::path::Path::new(f).exists() && !own(f) {
                mounts.push(bind(f, std::path::Path::new(f), true));
            }
        }
    }
    for m in &config.mounts {
        let propagation = if m.shared { "rshared" } else { "rprivate" };
        mounts.push(bind_with(&m.container, &m.host, m.read_only, propagation));
    }
    for v in &settings.volumes {
        mounts.push(bind(&v.container, &v.host, v.read_only));
    }
    for (path, options) in &settings.tmpfs {
        mounts.push(tmpfs(path, options));
    }
    if settings.init
        && let Some(init) = &host.init
    {
        mounts.push(bind(INIT_PATH, init, true));
    }
    spec.set_mounts(Some(mounts));

    // Its own UTS namespace unless `--uts host`, as docker: on the host network it carries the
    // host's name (taken now), so a TPC with CAP_SYS_ADMIN cannot rename the switch.
    let hostname = if settings.uts_host {
        None
    } else if let Some(h) = &settings.hostname {
        Some(h.clone())
    } else if config.host_network() {
        Some(host.hostname.clone()).filter(|h| !h.is_empty())
    } else {
        Some(config.id.clone())
    };
    spec.set_hostname(hostname);

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|n| match n.typ() {
        LinuxNamespaceType::Network => !config.host_network(),
        LinuxNamespaceType::Uts => !settings.uts_host,
        _ => true,
    });
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(format!("/{cgroup_parent}/{}", config.id).into()));
    // A shared bind stays a peer of the host's mount only if the copy of the host's mount tree
    // the container starts from is shared too (runc makes it a slave by default); docker sets
    // the same for a plugin's propagated mount.
    if config.mounts.iter().any(|m| m.shared) {
        linux.set_rootfs_propagation(Some("rshared".into()));
    }
    if settings.privileged {
        linux
            .set_masked_paths(Some(vec![]))
            .set_readonly_paths(Some(vec![]));
    } else {
        let mut masked = linux.masked_paths().clone().unwrap_or_default();
        masked.extend(MORE_MASKED_PATHS.iter().map(|p| p.to_string()));
        masked.extend(host.masked_extra.iter().cloned());
        linux.set_masked_paths(Some(masked));
    }
    if !settings.sysctls.is_empty() {
        linux.set_sysctl(Some(settings.sysctls.clone().into_iter().collect()));
    }
    linux.set_seccomp(seccomp(settings, &caps, host)?);

    let mut resources = linux.resources().clone().unwrap_or(LinuxResources::default());
    set_limits(&mut resources, &config.limits(), false);
    let mut rules = Vec::new();
    let mut devices = linux.devices().clone().unwrap_or_default();
    if settings.privileged {
        let mut all = LinuxDeviceCgroup::default();
        all.set_allow(true).set_access(Some("rwm".into()));
        rules.push(all);
        // As docker: every device node of the host (explicit --device mappings of the same
        // path come after and win).
        devices.extend(
            host.devices
                .iter()
                .filter(|d| {
                    !settings
                        .devices
                        .iter()
                        .any(|m| m.container == d.path().to_string_lossy())
                })
                .cloned(),
        );
    }
    for d in &settings.devices {
        let (dev, rule) = device(d)?;
        devices.push(dev);
        rules.push(rule);
    }
    if !rules.is_empty() {
        let mut existing = resources.devices().clone().unwrap_or_default();
        existing.extend(rules);
        resources.set_devices(Some(existing));
    }
    linux.set_devices(Some(devices));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Puts the CPU cap, memory limits and pids limit into `resources`. For a container being
/// created, a limit that is not set is left out (none); for an update of a running one
/// (`for_update`) it is given as -1, which removes a limit set before (runc's `update` leaves
/// an absent value as it was).
pub fn set_limits(resources: &mut LinuxResources, limits: &ResourceLimits, for_update: bool) {
    let mut cpu = resources.cpu().clone().unwrap_or_default();
    cpu.set_period(Some(CPU_PERIOD_US))
        .set_quota(Some((limits.cpus * CPU_PERIOD_US as f64).round() as i64));
    resources.set_cpu(Some(cpu));
    let unset = for_update.then_some(-1i64);
    let memory = limits.memory.map(|m| m as i64).or(unset);
    let reservation = limits.memory_reservation.map(|m| m as i64).or(unset);
    if memory.is_some() || reservation.is_some() {
        let mut mem = (*resources.memory()).unwrap_or_default();
        mem.set_limit(memory).set_reservation(reservation);
        resources.set_memory(Some(mem));
    } else {
        resources.set_memory(None);
    }
    match limits.pids_limit.filter(|n| *n > 0).or(unset) {
        Some(limit) => {
            let mut pids = oci_spec::runtime::LinuxPids::default();
            pids.set_limit(limit);
            resources.set_pids(Some(pids));
        }
        None => {
            resources.set_pids(None);
        }
    }
}

/// The seccomp filter: docker's default profile for these capabilities (none for a privileged
/// container, as docker), a custom one, or none.
fn seccomp(
    settings: &ContainerSettings,
    caps: &Capabilities,
    host: &Host,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, SpecError> {
    let target = super::seccomp::Target {
        caps: caps
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(str::to_string))
            .collect(),
        arch: host.arch.clone(),
        kernel: host.kernel,
    };
    let profile = match &settings.security.seccomp {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default if settings.privileged => return Ok(None),
        Seccomp::Default => super::seccomp::default_profile(),
        Seccomp::Custom(json) => super::seccomp::parse_profile(json).map_err(SpecError::Seccomp)?,
    };
    super::seccomp::resolve(&profile, &target)
        .map(Some)
        .map_err(SpecError::Seccomp)
}

/// `--ulimit`s as POSIX rlimits.
fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<PosixRlimit>, SpecError> {
    ulimits
        .iter()
        .map(|u| {
            let typ: PosixRlimitType = serde_json::from_value(serde_json::Value::String(format!(
                "RLIMIT_{}",
                u.name.to_ascii_uppercase()
            )))
            .map_err(|_| SpecError::Ulimit(u.name.clone()))?;
            oci_spec::runtime::PosixRlimitBuilder::default()
                .typ(typ)
                .soft(u.soft)
                .hard(u.hard)
                .build()
                .map_err(|_| SpecError::Ulimit(u.name.clone()))
        })
        .collect()
}

/// A tmpfs mount: docker's `noexec,nosuid,nodev`, then the options given (a later flag wins).
fn tmpfs(destination: &str, options: &[String]) -> Mount {
    let mut all: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
    for o in options {
        let opposite = match o.as_str() {
            "exec" => Some("noexec"),
            "noexec" => Some("exec"),
            "suid" => Some("nosuid"),
            "nosuid" => Some("suid"),
            "dev" => Some("nodev"),
            "nodev" => Some("dev"),
            "ro" => Some("rw"),
            "rw" => Some("ro"),
            _ => None,
        };
        if let Some(op) = opposite {
            all.retain(|a| a != op);
        }
        if let Some((key, _)) = o.split_once('=') {
            all.retain(|a| !a.starts_with(&format!("{key}=")));
        }
        if !all.contains(o) {
            all.push(o.clone());
        }
    }
    let mut m = Mount::default();
    m.set_destination(destination.into())
        .set_typ(Some("tmpfs".into()))
        .set_source(Some("tmpfs".into()))
        .set_options(Some(all));
    m
}

fn device(d: &DeviceMapping) -> Result<(oci_spec::runtime::LinuxDevice, LinuxDeviceCgroup), SpecError> {
    use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let err = |reason: String| SpecError::Device {
        path: d.host.display().to_string(),
        reason,
    };
    let md = std::fs::metadata(&d.host).map_err(|e| err(e.to_string()))?;
    let typ = if md.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if md.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(err("not a device node".into()));
    };
    let (major, minor) = (
        nix::sys::stat::major(md.rdev()) as i64,
        nix::sys::stat::minor(md.rdev()) as i64,
    );
    let mut dev = LinuxDevice::default();
    dev.set_path(d.container.clone().into())
        .set_typ(typ)
        .set_major(major)
        .set_minor(minor)
        .set_file_mode(Some(md.mode() & 0o7777))
        .set_uid(Some(md.uid()))
        .set_gid(Some(md.gid()));
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true)
        .set_typ(Some(typ))
        .set_major(Some(major))
        .set_minor(Some(minor))
        .set_access(Some(d.permissions.clone()));
    Ok((dev, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(json: &str) -> ImageConfiguration {
        serde_json::from_str(json).unwrap()
    }

    fn busybox() -> ImageConfiguration {
        image(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=image"],"Cmd":["/bin/sh"]},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
    }

    /// The spec's mount at `destination`.
    fn mount_at(spec: &oci_spec::runtime::Spec, destination: &str) -> oci_spec::runtime::Mount {
        spec.mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == std::path::Path::new(destination))
            .cloned()
            .unwrap_or_else(|| panic!("no mount at {destination}"))
    }

    fn host() -> Host {
        Host {
            hostname: "switch1".into(),
            arch: "amd64".into(),
            kernel: (6, 1),
            capabilities: crate::tpc_spec::LINUX_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            ..Host::default()
        }
    }

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "tpc1".into(),
            image: ImageRef {
                reference: "x".into(),
                digest: String::new(),
            },
            cpus: 0.4,
            ..Default::default()
        }
    }

    #[test]
    fn args_follow_docker_entrypoint_and_command_rules() {
        let img = image(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/ep"],"Cmd":["a"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let mut c = config();
        let args = |c: &ContainerConfig| {
            build(c, &img, "ns", &host())
                .unwrap()
                .process()
                .clone()
                .unwrap()
                .args()
                .clone()
                .unwrap()
        };
        assert_eq!(args(&c), ["/ep", "a"]);
        c.settings.command = vec!["b".into()];
        assert_eq!(args(&c), ["/ep", "b"]);
        c.settings.entrypoint = Some(vec!["/other".into()]);
        c.settings.command.clear();
        assert_eq!(
            args(&c),
            ["/other"],
            "an entrypoint override drops the image command"
        );
        c.settings.entrypoint = Some(vec![]);
        assert!(matches!(
            build(&c, &img, "ns", &host()),
            Err(SpecError::NothingToRun)
        ));
    }

    #[test]
    fn env_merges_image_then_settings() {
        let mut c = config();
        c.settings.env = vec!["A=mine".into(), "B=2".into()];
        let spec = build(&c, &busybox(), "ns", &host()).unwrap();
        let env = spec.process().clone().unwrap().env().clone().unwrap();
        assert!(env.contains(&"A=mine".to_string()), "{env:?}");
        assert!(env.contains(&"PATH=/bin".to_string()), "{env:?}");
        assert!(env.contains(&"B=2".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("A=")).count(), 1);
    }

    #[test]
    fn cpu_quota_is_cpus_times_period_and_cgroup_is_per_namespace() {
        let spec = build(&config(), &busybox(), "tpcm", &host()).unwrap();
        let linux = spec.linux().clone().unwrap();
        let cpu = linux.resources().clone().unwrap().cpu().clone().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(40_000));
        assert_eq!(linux.cgroups_path().clone().unwrap(), PathBuf::from("/tpcm/tpc1"));
    }

    #[test]
    fn host_network_drops_the_network_namespace_and_keeps_its_own_uts() {
        let spec = build(&config(), &busybox(), "ns", &host()).unwrap();
        let sys = mount_at(&spec, "/sys");
        assert_eq!(
            sys.typ().as_deref(),
            Some("sysfs"),
            "never a bind of the host's /sys"
        );
        assert!(sys.options().clone().unwrap().contains(&"ro".to_string()));
        let ns: Vec<_> = spec.linux().clone().unwrap().namespaces().clone().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        // As docker: its own UTS namespace, carrying the host's name.
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Uts));
        assert_eq!(spec.hostname().as_deref(), Some("switch1"));
        let mut shared = config();
        shared.settings.uts_host = true;
        let spec = build(&shared, &busybox(), "ns", &host()).unwrap();
        let ns: Vec<_> = spec.linux().clone().unwrap().namespaces().clone().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Uts));
        assert_eq!(spec.hostname(), &None);
        let mut c = config();
        c.settings.network = Network::None;
        let spec = build(&c, &busybox(), "ns", &host()).unwrap();
        assert!(
            spec.linux()
                .clone()
                .unwrap()
                .namespaces()
                .clone()
                .unwrap()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network)
        );
        assert_eq!(spec.hostname().as_deref(), Some("tpc1"));
    }

    fn bounding(spec: &Spec) -> Capabilities {
        spec.process()
            .clone()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap()
            .bounding()
            .clone()
            .unwrap()
    }

    #[test]
    fn capabilities_start_from_docker_defaults() {
        let mut c = config();
        c.settings.cap_add = vec!["net_admin".into()];
        c.settings.cap_drop = vec!["CAP_MKNOD".into()];
        let spec = build(&c, &busybox(), "ns", &host()).unwrap();
        let caps = bounding(&spec);
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::Mknod));
        assert!(caps.contains(&Capability::Chown));
        c.settings.cap_drop = vec!["ALL".into()];
        let spec = build(&c, &busybox(), "ns", &host()).unwrap();
        let caps = bounding(&spec);
        assert_eq!(
            caps,
            [Capability::NetAdmin].into_iter().collect(),
            "drop ALL then add"
        );
        c.settings.cap_add = vec!["ALL".into()];
        c.settings.cap_drop = vec!["SYS_ADMIN".into()];
        let caps = bounding(&build(&c, &busybox(), "ns", &host()).unwrap());
        assert!(
            !caps.contains(&Capability::SysAdmin),
            "add ALL keeps the named drops"
        );
        assert!(caps.contains(&Capability::SysModule));
        c.settings.cap_add = vec!["NOT_A_CAP".into()];
        assert!(matches!(
            build(&c, &busybox(), "ns", &host()),
            Err(SpecError::Capability(_))
        ));
    }

    #[test]
    fn users_must_be_numeric_or_root() {
        assert_eq!(parse_user("1000:1001").unwrap(), (1000, 1001));
        assert_eq!(parse_user("root").unwrap(), (0, 0));
        assert_eq!(parse_user("7").unwrap(), (7, 7));
        assert!(parse_user("nobody").is_err());
    }

    fn json(spec: &Spec) -> serde_json::Value {
        serde_json::to_value(spec).unwrap()
    }

    #[test]
    fn a_default_container_is_confined_as_dockers() {
        let spec = json(&build(&config(), &busybox(), "ns", &host()).unwrap());
        let seccomp = &spec["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(!seccomp.to_string().contains("\"keyctl\""));
        assert_eq!(spec["process"]["oomScoreAdj"], 0);
        assert!(
            spec["process"].get("rlimits").is_none_or(|r| r.is_null()),
            "{}",
            spec["process"]
        );
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        let proc = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/proc")
            .unwrap();
        assert_eq!(proc["options"], serde_json::json!(["nosuid", "noexec", "nodev"]));
        let masked = spec["linux"]["maskedPaths"].to_string();
        for p in [
            "/sys/devices/virtual/powercap",
            "/proc/interrupts",
            "/proc/kcore",
            "/proc/keys",
        ] {
            assert!(masked.contains(p), "{p} in {masked}");
        }
        assert!(spec["linux"]["readonlyPaths"].to_string().contains("/proc/sys"));
        let shm = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert!(shm["options"].to_string().contains("size=67108864"), "{shm}");
    }

    #[test]
    fn privileged_is_dockers() {
        let mut c = config();
        c.settings.privileged = true;
        let mut h = host();
        let mut null = oci_spec::runtime::LinuxDevice::default();
        null.set_path("/dev/null".into()).set_major(1).set_minor(3);
        h.devices = vec![null];
        let spec = json(&build(&c, &busybox(), "ns", &h).unwrap());
        assert!(
            spec["linux"].get("seccomp").is_none_or(|s| s.is_null()),
            "no seccomp"
        );
        assert_eq!(spec["linux"]["maskedPaths"], serde_json::json!([]));
        assert_eq!(spec["linux"]["readonlyPaths"], serde_json::json!([]));
        assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/null");
        for dest in ["/sys", "/sys/fs/cgroup"] {
            let m = spec["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == dest)
                .unwrap();
            assert!(
                !m["options"].to_string().contains("\"ro\""),
                "{dest} writable: {m}"
            );
        }
        assert_eq!(
            spec["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            ALL_CAPABILITIES.len(),
            "every capability the host has"
        );
        // A profile asked for by name applies even so (docker's rule).
        c.settings.security.seccomp = Seccomp::Custom(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.into());
        let spec = json(&build(&c, &busybox(), "ns", &h).unwrap());
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn the_new_flags_map_as_dockers() {
        let mut c = config();
        let s = &mut c.settings;
        s.security.seccomp = Seccomp::Unconfined;
        s.security.no_new_privileges = true;
        s.security.apparmor = Some("tpc-profile".into());
        s.pids_limit = Some(64);
        s.ulimits = vec![Ulimit {
            name: "nofile".into(),
            soft: 100,
            hard: 200,
        }];
        s.read_only = true;
        s.tmpfs
            .insert("/run".into(), vec!["size=1m".into(), "exec".into()]);
        s.shm_size = Some(1 << 20);
        s.sysctls.insert("kernel.shmmax".into(), "1000".into());
        s.oom_score_adj = -100;
        s.init = true;
        let mut h = host();
        h.init = Some("/usr/bin/tini-static".into());
        h.apparmor_profiles = Some(vec!["tpc-profile".into()]);
        let spec = json(&build(&c, &busybox(), "ns", &h).unwrap());
        assert!(spec["linux"].get("seccomp").is_none_or(|s| s.is_null()));
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(spec["process"]["apparmorProfile"], "tpc-profile");
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(
            spec["process"]["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 200, "soft": 100}])
        );
        assert_eq!(spec["root"]["readonly"], true);
        let run = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/run")
            .unwrap();
        assert_eq!(
            run["options"],
            serde_json::json!(["nosuid", "nodev", "size=1m", "exec"])
        );
        assert_eq!(spec["linux"]["sysctl"]["kernel.shmmax"], "1000");
        assert_eq!(spec["process"]["oomScoreAdj"], -100);
        assert_eq!(spec["process"]["args"][0], INIT_PATH);
        assert_eq!(spec["process"]["args"][1], "--");
        // Without AppArmor on the host the profile is left out (docker does the same); with it,
        // a profile that is not loaded is refused.
        h.apparmor_profiles = None;
        let spec = json(&build(&c, &busybox(), "ns", &h).unwrap());
        assert!(spec["process"].get("apparmorProfile").is_none_or(|p| p.is_null()));
        h.apparmor_profiles = Some(vec![]);
        assert!(matches!(
            build(&c, &busybox(), "ns", &h),
            Err(SpecError::AppArmor(_))
        ));
        h.init = None;
        h.apparmor_profiles = None;
        assert!(matches!(build(&c, &busybox(), "ns", &h), Err(SpecError::NoInit)));
    }

    #[test]
    fn bind_mounts_keep_their_mode() {
        let mut c = config();
        c.mounts = vec![BindMount {
            host: "/data/x".into(),
            container: "/tpc".into(),
            read_only: false,
            shared: false,
        }];
        let spec = build(&c, &busybox(), "ns", &host()).unwrap();
        let m = mount_at(&spec, "/tpc");
        assert_eq!(m.source().clone().unwrap(), PathBuf::from("/data/x"));
        assert!(m.options().clone().unwrap().contains(&"rw".to_string()));
        assert_eq!(spec.linux().clone().unwrap().rootfs_propagation(), &None);
    }

    #[test]
    fn a_shared_bind_makes_the_root_shared() {
        let mut c = config();
        c.mounts = vec![BindMount {
            host: "/plugins/p/propagated".into(),
            container: "/mnt/volumes".into(),
            read_only: false,
            shared: true,
        }];
        let spec = build(&c, &busybox(), "ns", &host()).unwrap();
        let m = mount_at(&spec, "/mnt/volumes");
        assert!(m.options().clone().unwrap().contains(&"rshared".to_string()));
        assert_eq!(
            spec.linux().clone().unwrap().rootfs_propagation().as_deref(),
            Some("rshared")
        );
    }
}
