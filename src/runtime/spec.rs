//! The OCI runtime spec of a TPC's container, built with `oci-spec` from the image config and the
//! TPC's settings. Pure: no runtime is touched here, so every rule is unit-tested.
//!
//! Choices (see `docs/args.md` for the user-facing side): host network and host UTS namespace by
//! default, as every SONiC container; docker's default capability set; the cgroup at
//! `/<namespace>/<name>` so operators find limits under `/sys/fs/cgroup/<ctrl>/<ns>/<name>`;
//! a CFS period of 100 ms with quota = cpus × period.

use crate::tpc_spec::{ContainerSettings, DeviceMapping, ImageRef, Network, PortMapping};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxNamespaceType, LinuxResources,
    Mount, Spec,
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

fn capabilities(config: &ContainerConfig) -> Result<Capabilities, SpecError> {
    let parse = |n: &str| capability(n).ok_or_else(|| SpecError::Capability(n.to_string()));
    let all = || {
        ALL_CAPABILITIES
            .iter()
            .map(|n| parse(n))
            .collect::<Result<Capabilities, _>>()
    };
    let config = &config.settings;
    if config.privileged {
        return all();
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
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    options.push(if read_only { "ro" } else { "rw" }.to_string());
    let mut m = Mount::default();
    m.set_destination(destination.into())
        .set_typ(Some("bind".into()))
        .set_source(Some(source.to_path_buf()))
        .set_options(Some(options));
    m
}

/// Builds the spec. `cgroup_parent` is the namespace (the cgroup is `/<parent>/<id>`).
pub fn build(
    config: &ContainerConfig,
    image: &ImageConfiguration,
    cgroup_parent: &str,
) -> Result<Spec, SpecError> {
    let img = image.config().clone().unwrap_or_default();
    let settings = &config.settings;
    let mut spec = Spec::default();

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(process_args(settings, image)?));
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
    let caps = capabilities(config)?;
    let mut pc = process.capabilities().clone().unwrap_or_default();
    pc.set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(None)
        .set_ambient(None);
    process.set_capabilities(Some(pc));
    // As docker: set-id programs (su, ping, sudo) keep working in non-root images.
    process.set_no_new_privileges(Some(false));
    spec.set_process(Some(process));

    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path("rootfs".into()).set_readonly(Some(false));
    spec.set_root(Some(root));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if settings.network != Network::None {
        // The default fresh, read-only sysfs is kept: mounted from within the host's network
        // namespace it already shows the host's interfaces. (A bind of the host's /sys would be
        // read-only only at its top and expose every cgroup's limits to the container.)
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            if std::path::Path::new(f).exists() {
                mounts.push(bind(f, std::path::Path::new(f), true));
            }
        }
    }
    for m in &config.mounts {
        mounts.push(bind(&m.container, &m.host, m.read_only));
    }
    for v in &settings.volumes {
        mounts.push(bind(&v.container, &v.host, v.read_only));
    }
    spec.set_mounts(Some(mounts));

    let hostname = if config.host_network() {
        None
    } else {
        Some(settings.hostname.clone().unwrap_or(config.id.clone()))
    };
    spec.set_hostname(hostname);

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if config.host_network() {
        namespaces.retain(|n| !matches!(n.typ(), LinuxNamespaceType::Network | LinuxNamespaceType::Uts));
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(format!("/{cgroup_parent}/{}", config.id).into()));
    if settings.privileged {
        linux
            .set_masked_paths(Some(vec![]))
            .set_readonly_paths(Some(vec![]));
    }

    let mut resources = linux.resources().clone().unwrap_or(LinuxResources::default());
    let mut cpu = LinuxCpu::default();
    cpu.set_period(Some(CPU_PERIOD_US))
        .set_quota(Some((config.cpus * CPU_PERIOD_US as f64).round() as i64));
    resources.set_cpu(Some(cpu));
    if settings.memory.is_some() || settings.memory_reservation.is_some() {
        let mut mem = LinuxMemory::default();
        mem.set_limit(settings.memory.map(|m| m as i64))
            .set_reservation(settings.memory_reservation.map(|m| m as i64));
        resources.set_memory(Some(mem));
    }
    let mut rules = Vec::new();
    let mut devices = linux.devices().clone().unwrap_or_default();
    if settings.privileged {
        let mut all = LinuxDeviceCgroup::default();
        all.set_allow(true).set_access(Some("rwm".into()));
        rules.push(all);
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
            build(c, &img, "ns")
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
        assert!(matches!(build(&c, &img, "ns"), Err(SpecError::NothingToRun)));
    }

    #[test]
    fn env_merges_image_then_settings() {
        let mut c = config();
        c.settings.env = vec!["A=mine".into(), "B=2".into()];
        let spec = build(&c, &busybox(), "ns").unwrap();
        let env = spec.process().clone().unwrap().env().clone().unwrap();
        assert!(env.contains(&"A=mine".to_string()), "{env:?}");
        assert!(env.contains(&"PATH=/bin".to_string()), "{env:?}");
        assert!(env.contains(&"B=2".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("A=")).count(), 1);
    }

    #[test]
    fn cpu_quota_is_cpus_times_period_and_cgroup_is_per_namespace() {
        let spec = build(&config(), &busybox(), "tpcm").unwrap();
        let linux = spec.linux().clone().unwrap();
        let cpu = linux.resources().clone().unwrap().cpu().clone().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(40_000));
        assert_eq!(linux.cgroups_path().clone().unwrap(), PathBuf::from("/tpcm/tpc1"));
    }

    #[test]
    fn host_network_drops_network_and_uts_namespaces() {
        let spec = build(&config(), &busybox(), "ns").unwrap();
        let sys = spec
            .mounts()
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.destination() == std::path::Path::new("/sys"))
            .unwrap();
        assert_eq!(
            sys.typ().as_deref(),
            Some("sysfs"),
            "never a bind of the host's /sys"
        );
        assert!(sys.options().clone().unwrap().contains(&"ro".to_string()));
        let ns: Vec<_> = spec.linux().clone().unwrap().namespaces().clone().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Uts));
        let mut c = config();
        c.settings.network = Network::None;
        let spec = build(&c, &busybox(), "ns").unwrap();
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
        let spec = build(&c, &busybox(), "ns").unwrap();
        let caps = bounding(&spec);
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::Mknod));
        assert!(caps.contains(&Capability::Chown));
        c.settings.cap_drop = vec!["ALL".into()];
        let spec = build(&c, &busybox(), "ns").unwrap();
        let caps = bounding(&spec);
        assert_eq!(
            caps,
            [Capability::NetAdmin].into_iter().collect(),
            "drop ALL then add"
        );
        c.settings.cap_add = vec!["ALL".into()];
        c.settings.cap_drop = vec!["SYS_ADMIN".into()];
        let caps = bounding(&build(&c, &busybox(), "ns").unwrap());
        assert!(
            !caps.contains(&Capability::SysAdmin),
            "add ALL keeps the named drops"
        );
        assert!(caps.contains(&Capability::SysModule));
        c.settings.cap_add = vec!["NOT_A_CAP".into()];
        assert!(matches!(
            build(&c, &busybox(), "ns"),
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

    #[test]
    fn bind_mounts_keep_their_mode() {
        let mut c = config();
        c.mounts = vec![BindMount {
            host: "/data/x".into(),
            container: "/tpc".into(),
            read_only: false,
        }];
        let spec = build(&c, &busybox(), "ns").unwrap();
        let m = spec
            .mounts()
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.destination() == std::path::Path::new("/tpc"))
            .unwrap();
        assert_eq!(m.source().clone().unwrap(), PathBuf::from("/data/x"));
        assert!(m.options().clone().unwrap().contains(&"rw".to_string()));
    }
}
