//! What a TPC is: its image (reference and manifest digest) and every setting it runs with, as
//! one typed value, [`TpcSpec`]. It sits at the bottom of the crate and depends on nothing in it.
//!
//! Two front ends build it — the `--args` parser (`manager::args`, docker-run flags) and the gNOI
//! server (`containerz`, a StartContainerRequest, with no string in between) — and everything
//! else reads it from the TPC's record: the manager, the unit writer, the restart supervisor, the
//! janitor, migration and the OCI spec builder. Nothing is parsed twice and nothing outside the
//! record is read after install: environment files and `-e KEY` values are resolved once, when
//! the front end builds the spec.
//!
//! The checks both front ends share live here ([`ContainerSettings::check`] and the value
//! checks), so a setting refused by one is refused by the other.

pub mod image_health;
pub mod plugin;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the TPC's private data directory appears inside its container.
pub const PRIVATE_MOUNT: &str = "/tpc";
/// Where the directory shared by all TPCs appears inside each container.
pub const SHARED_MOUNT: &str = "/tpc-shared";
/// Label prefix tpcm keeps for itself (its own markers on containers and in listings).
pub const RESERVED_LABEL_PREFIX: &str = "io.tpcm.";

/// Smallest `--cpus`: a 1 ms quota per 100 ms period, the kernel's minimum.
pub const MIN_CPUS: f64 = 0.01;
/// Largest `--cpus` accepted. The spec builder validates against the host.
pub const MAX_CPUS: f64 = 1024.0;
/// Smallest memory limit or reservation docker (and so tpcm) accepts: 6 MiB.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// Every Linux capability name, in capability-number order (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE
/// = 40, Linux 5.9+). Capability settings accept these (and `ALL`), nothing else.
pub const LINUX_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A TPC: the image it runs and how.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TpcSpec {
    /// The image, by name and by the manifest digest the TPC is pinned to.
    pub image: ImageRef,
    /// Everything else.
    pub settings: ContainerSettings,
}

/// An image as a TPC runs it: the name the operator knows it by, and the manifest it was
/// installed (or last upgraded) from. The digest is what counts: the name's tag may move to
/// another image later, the TPC stays on this manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageRef {
    /// Normalized reference (`docker.io/acme/app:1.0`).
    pub reference: String,
    /// Manifest digest (`sha256:…`); empty only in a record converted from a tpcm that did not
    /// keep it.
    pub digest: String,
}

/// What a TPC runs with besides its image. Every field's default means "not given": the spec
/// builder then uses the image's setting or tpcm's default. `#[serde(default)]`, so a record
/// written before a field existed still reads.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerSettings {
    /// Environment, `KEY=VALUE`, values resolved when the spec was built; a key appears once.
    pub env: Vec<String>,
    /// Bind mounts, in order; container paths are unique.
    pub volumes: Vec<VolumeMount>,
    /// CPU cap in CPUs, between [`MIN_CPUS`] and [`MAX_CPUS`]; `None` = tpcm's default cap.
    pub cpus: Option<f64>,
    /// Memory limit in bytes (≥ [`MIN_MEMORY`]); `None` = no limit.
    pub memory: Option<u64>,
    /// Memory soft limit in bytes (≥ [`MIN_MEMORY`], ≤ `memory`); `None` = none.
    pub memory_reservation: Option<u64>,
    /// Capabilities added to docker's default set, `CAP_X` upper case, or `ALL`.
    pub cap_add: Vec<String>,
    /// Capabilities removed from docker's default set, `CAP_X` upper case, or `ALL`.
    pub cap_drop: Vec<String>,
    /// All capabilities, all devices, no masked or read-only kernel paths.
    pub privileged: bool,
    /// `user[:group]`, names or numeric ids, resolved in the image by the spec builder.
    pub user: Option<String>,
    /// Absolute working directory.
    pub workdir: Option<String>,
    /// Replaces the image's entrypoint (`Some(vec![])` clears it); either way the image's command
    /// is dropped unless [`command`](Self::command) gives one (docker's rule).
    pub entrypoint: Option<Vec<String>>,
    /// Host name (default: the host's on the host network, else the TPC's name); not with
    /// `uts_host`.
    pub hostname: Option<String>,
    /// Which network namespace the container gets.
    pub network: Network,
    /// Host ports forwarded to the container (bridge network only); unique per host port and
    /// protocol.
    pub ports: Vec<PortMapping>,
    /// Host devices, in order.
    pub devices: Vec<DeviceMapping>,
    /// Container labels (never with the [`RESERVED_LABEL_PREFIX`]).
    pub labels: BTreeMap<String, String>,
    /// When the container is restarted after it exits.
    pub restart: RestartPolicy,
    /// The health check, run while the TPC runs and by an upgrade's gate; `None` = the image's
    /// (`HEALTHCHECK`), if any ([`ContainerSettings::effective_health`]).
    pub health: Option<HealthCheck>,
    /// No health check, not even the image's (`--no-healthcheck`).
    pub no_healthcheck: bool,
    /// When and how often the health check runs.
    pub health_timing: HealthTiming,
    /// Replaces the image's command when not empty.
    pub command: Vec<String>,
    /// Seccomp, no-new-privileges and AppArmor.
    pub security: Security,
    /// Most processes (tasks) in the container; `None` = no limit.
    pub pids_limit: Option<i64>,
    /// Resource limits (`setrlimit`) of the container's processes, by name (`nofile`, ...).
    pub ulimits: Vec<Ulimit>,
    /// The root filesystem is mounted read-only (volumes, tmpfs mounts and `/tpc` stay as set).
    pub read_only: bool,
    /// tmpfs mounts: path → extra mount options (after docker's `noexec,nosuid,nodev`).
    pub tmpfs: BTreeMap<String, Vec<String>>,
    /// Size of `/dev/shm` in bytes; `None` = 64 MiB (docker's default).
    pub shm_size: Option<u64>,
    /// Namespaced kernel parameters.
    pub sysctls: BTreeMap<String, String>,
    /// Extra `/etc/hosts` lines: (host name, address).
    pub extra_hosts: Vec<(String, String)>,
    /// DNS settings replacing the host's resolv.conf ones.
    pub dns: Dns,
    /// Signal that asks the main process to stop (`SIGTERM` when not set, or the image's).
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL (`None` = 10; negative = wait forever).
    pub stop_timeout: Option<i64>,
    /// The container's OOM score adjustment, -1000 to 1000 (docker's default: 0).
    pub oom_score_adj: i32,
    /// Run an init process (tini) as PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    /// Share the host's UTS namespace (host name); by default the container has its own, which
    /// carries the host's name on the host network (docker's `--uts host`).
    pub uts_host: bool,
}

/// Seccomp, no-new-privileges and AppArmor (`--security-opt`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Security {
    /// Which seccomp filter the container gets.
    pub seccomp: Seccomp,
    /// Processes cannot gain privileges (set-id programs, file capabilities).
    pub no_new_privileges: bool,
    /// AppArmor profile, applied when the host has AppArmor (as docker).
    pub apparmor: Option<String>,
}

/// Which seccomp filter a container gets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "profile", content = "json")]
pub enum Seccomp {
    /// Docker's default profile (`runtime::seccomp`); none for a privileged container.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile in docker's format, its JSON as read at install.
    Custom(String),
}

/// One resource limit: `setrlimit(RLIMIT_<NAME>, soft, hard)`; `u64::MAX` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// docker's name (`nofile`, `nproc`, `core`, ...).
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// DNS settings (`--dns`, `--dns-search`, `--dns-option`): each non-empty list replaces the
/// host's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns {
    /// Name server addresses.
    pub servers: Vec<String>,
    /// Search domains.
    pub search: Vec<String>,
    /// resolv.conf options.
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set (the container sees the host's resolv.conf).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// When and how often a health check runs (docker's `--health-*` durations, in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthTiming {
    /// Between the end of one probe and the start of the next (docker: 30 s).
    pub interval_ms: u64,
    /// Longest a probe may take (docker: 30 s).
    pub timeout_ms: u64,
    /// Failed probes in a row that make the container unhealthy (docker: 3).
    pub retries: u32,
    /// After the start, failures do not count until a probe passed (docker: 0).
    pub start_period_ms: u64,
}

impl Default for HealthTiming {
    fn default() -> Self {
        HealthTiming {
            interval_ms: 30_000,
            timeout_ms: 30_000,
            retries: 3,
            start_period_ms: 0,
        }
    }
}

/// The docker `--ulimit` names, with their `RLIMIT_` resource. `as` is not among them, as in
/// docker.
pub const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The sysctls a container may set, as docker allows them: IPC ones (the container has its own
/// IPC namespace), `fs.mqueue.*`, and `net.*` (only with its own network namespace).
pub fn sysctl_allowed(key: &str) -> bool {
    matches!(
        key,
        "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
    ) || key.starts_with("fs.mqueue.")
        || key.starts_with("net.")
}

/// One bind mount from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Absolute host path, lexically cleaned (`.`, `..`, `//` and a trailing `/` folded).
    pub host: PathBuf,
    /// Absolute path inside the container, lexically cleaned; never `/`.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// One host device made available in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// Absolute host device path.
    pub host: PathBuf,
    /// Absolute path inside the container.
    pub container: String,
    /// Device cgroup permissions, a non-empty subset of `rwm`.
    pub permissions: String,
}

/// A host port forwarded into a container on a bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host (on every address).
    pub host: u16,
    /// Port inside the container.
    pub container: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network namespace (and its hostname), as every SONiC container.
    #[default]
    Host,
    /// A new network namespace with only loopback.
    None,
    /// A new network namespace attached to tpcm's bridge (CNI `bridge` + `portmap`), with
    /// outbound NAT and the published ports forwarded.
    Bridge,
}

/// A health check: what runs or is probed while the TPC runs, and before an upgrade keeps a new
/// version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    /// Run inside the container with `/bin/sh -c`; healthy when it exits 0 (docker's
    /// `--health-cmd`).
    Cmd(String),
    /// Run inside the container as this argument vector, without a shell; healthy when it exits
    /// 0 (an image's `HEALTHCHECK CMD ["prog", "arg"]`).
    Exec(Vec<String>),
    /// Healthy when 127.0.0.1:PORT accepts a connection (host network).
    Tcp(u16),
    /// Healthy when a GET of the http:// URL answers 2xx.
    Http(String),
}

/// When the container is restarted after it exits. Serialized as docker writes it (`"no"`,
/// `"always"`, `"unless-stopped"`, `"on-failure"`, `"on-failure:3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RestartPolicy {
    /// Never restart (docker's default).
    #[default]
    No,
    /// Always restart, also after a manual stop once tpcm or the switch restarts.
    Always,
    /// Always restart, except after `tpcm stop`.
    UnlessStopped,
    /// Restart after a non-zero exit, at most `max_retries` times (`None` = without limit, as
    /// docker's `on-failure` and `on-failure:0`).
    OnFailure {
        /// Most restarts in a row; `None` = unlimited.
        max_retries: Option<u32>,
    },
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Host => "host",
            Network::None => "none",
            Network::Bridge => "bridge",
        })
    }
}

impl FromStr for Network {
    type Err = String;

    /// Parses `host`, `none` or `bridge`; the message names the supported modes.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            "bridge" => Ok(Network::Bridge),
            _ => Err(format!("{s:?} is not supported (use host, none or bridge)")),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max_retries: Some(n) } => write!(f, "on-failure:{n}"),
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;

    /// Parses docker's syntax; an empty string is `no`, as in docker.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "use no, always, unless-stopped or on-failure[:N]";
        let (name, count) = match s.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (s, None),
        };
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure { max_retries: None },
            _ => return Err(format!("{s:?} is not a restart policy ({usage})")),
        };
        match (policy, count) {
            (p, None) => Ok(p),
            (RestartPolicy::OnFailure { .. }, Some(n)) => match n.parse::<u32>() {
                Ok(0) => Ok(RestartPolicy::OnFailure { max_retries: None }),
                Ok(n) => Ok(RestartPolicy::OnFailure { max_retries: Some(n) }),
                Err(_) => Err(format!(
                    "{n:?} is not a retry count (on-failure:N takes a whole number ≥ 0)"
                )),
            },
            (_, Some(_)) => Err(format!("{s:?}: only on-failure takes a retry count ({usage})")),
        }
    }
}

impl From<RestartPolicy> for String {
    fn from(p: RestartPolicy) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A setting that is refused: `setting` is the docker flag that names it (`--cpus`), the
/// message quotes the value and says why, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct SettingError {
    /// The docker flag of the setting.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

fn refused(setting: &'static str, message: impl Into<String>) -> SettingError {
    SettingError {
        setting,
        message: message.into(),
    }
}

impl ContainerSettings {
    /// The rules that join several settings, checked after each value was checked on its own:
    /// whichever front end built the settings, the same combinations are refused.
    pub fn check(&self) -> Result<(), SettingError> {
        let mut seen: Vec<&str> = Vec::new();
        for v in &self.volumes {
            if v.container == PRIVATE_MOUNT || v.container == SHARED_MOUNT {
                return Err(refused(
                    "--volume",
                    format!(
                        "{}: {} is tpcm's own mount; choose another path",
                        v.host.display(),
                        v.container
                    ),
                ));
            }
            if seen.contains(&v.container.as_str()) {
                return Err(refused(
                    "--volume",
                    format!("{} is mounted twice in the container", v.container),
                ));
            }
            seen.push(&v.container);
        }
        if let (Some(limit), Some(reservation)) = (self.memory, self.memory_reservation)
            && reservation > limit
        {
            return Err(refused(
                "--memory-reservation",
                format!(
                    "{} is more than the memory limit, {}",
                    binary_size(reservation),
                    binary_size(limit)
                ),
            ));
        }
        for (i, p) in self.ports.iter().enumerate() {
            if self.ports[..i]
                .iter()
                .any(|q| q.host == p.host && q.protocol == p.protocol)
            {
                return Err(refused(
                    "--publish",
                    format!("host port {}/{} is given twice", p.host, p.protocol),
                ));
            }
        }
        match self.network {
            Network::Bridge => {}
            _ if self.ports.is_empty() => {}
            // On the host network a port is the container's own: it can be declared (docker and
            // gNOI clients send them) but not mapped to another.
            Network::Host => {
                if let Some(p) = self.ports.iter().find(|p| p.host != p.container) {
                    return Err(refused(
                        "--publish",
                        format!(
                            "{}:{}: on the host network the container listens on the host's port itself, so both numbers must be equal (use --network bridge to map a port)",
                            p.host, p.container
                        ),
                    ));
                }
            }
            Network::None => {
                return Err(refused(
                    "--publish",
                    "needs --network bridge or host (--network none has no ports to reach)",
                ));
            }
        }
        for key in self.labels.keys() {
            check_label_key(key)?;
        }
        for key in self.sysctls.keys() {
            if !sysctl_allowed(key) {
                return Err(refused(
                    "--sysctl",
                    format!("{key} is not a namespaced sysctl a container may set"),
                ));
            }
            if key.starts_with("net.") && self.network == Network::Host {
                return Err(refused(
                    "--sysctl",
                    format!("{key}: net.* needs the container's own network (--network none or bridge)"),
                ));
            }
        }
        for path in self.tmpfs.keys() {
            if !path.starts_with('/') || path == "/" {
                return Err(refused(
                    "--tmpfs",
                    format!("{path:?} is not an absolute path other than /"),
                ));
            }
            if path == PRIVATE_MOUNT || path == SHARED_MOUNT {
                return Err(refused("--tmpfs", format!("{path} is tpcm's own mount")));
            }
            if self.volumes.iter().any(|v| &v.container == path) {
                return Err(refused("--tmpfs", format!("{path} is also a volume")));
            }
        }
        if !(-1000..=1000).contains(&self.oom_score_adj) {
            return Err(refused(
                "--oom-score-adj",
                format!("{} is not in -1000..=1000", self.oom_score_adj),
            ));
        }
        if self.uts_host && self.hostname.is_some() {
            return Err(refused("--uts", "host conflicts with --hostname"));
        }
        Ok(())
    }
}

/// Bytes in the largest binary unit that divides them (`512MiB`, `1GiB`, `1000B`), as docker's
/// sizes are written.
fn binary_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// A CPU cap: finite, at least [`MIN_CPUS`] (the kernel refuses a CFS quota under 1 ms at the
/// 100 ms period) and at most [`MAX_CPUS`]. `as_given` is how the request wrote it, for the
/// message.
pub fn check_cpus(n: f64, as_given: &str) -> Result<(), SettingError> {
    const FLAG: &str = "--cpus";
    if !n.is_finite() {
        return Err(refused(FLAG, format!("{as_given} is not a number of CPUs")));
    }
    if n <= 0.0 {
        return Err(refused(FLAG, format!("{as_given} must be greater than 0")));
    }
    if n < MIN_CPUS {
        return Err(refused(
            FLAG,
            format!("{as_given} is less than the minimum, {MIN_CPUS}"),
        ));
    }
    if n > MAX_CPUS {
        return Err(refused(FLAG, format!("{as_given} is more than {MAX_CPUS}")));
    }
    Ok(())
}

/// A memory limit or reservation in bytes: 0 means none (docker), anything else at least
/// [`MIN_MEMORY`]. `as_given` is how the request wrote it, for the message.
pub fn memory_limit(setting: &'static str, bytes: u64, as_given: &str) -> Result<Option<u64>, SettingError> {
    match bytes {
        0 => Ok(None),
        n if n < MIN_MEMORY => Err(refused(
            setting,
            format!("{as_given} is less than the minimum, 6m"),
        )),
        n => Ok(Some(n)),
    }
}

/// A signal as docker takes it (`SIGTERM`, `TERM`, `term`, `15`), as its `SIG` name; `None`
/// when it is none (the name `--stop-signal` and an image's STOPSIGNAL share).
pub fn signal_name(v: &str) -> Option<String> {
    use std::str::FromStr;
    let signal = match v.trim().parse::<i32>() {
        Ok(n) => nix::sys::signal::Signal::try_from(n).ok()?,
        Err(_) => {
            let upper = v.trim().to_ascii_uppercase();
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            nix::sys::signal::Signal::from_str(&name).ok()?
        }
    };
    Some(signal.as_str().to_string())
}

/// A capability name normalized to `CAP_X` (or `ALL`), from any case, with or without `CAP_`.
pub fn capability_name(setting: &'static str, name: &str) -> Result<String, SettingError> {
    let upper = name.trim().to_ascii_uppercase();
    let cap = if upper == "ALL" || upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if cap != "ALL" && !LINUX_CAPABILITIES.contains(&cap.as_str()) {
        return Err(refused(setting, format!("unknown capability {name:?}")));
    }
    Ok(cap)
}

/// `user[:group]`: non-empty parts without whitespace or further colons.
pub fn check_user(u: &str) -> Result<(), SettingError> {
    let (user, group) = match u.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (u, None),
    };
    let ok = |p: &str| !p.is_empty() && !p.contains(':') && !p.chars().any(char::is_whitespace);
    if ok(user) && group.is_none_or(ok) {
        Ok(())
    } else {
        Err(refused(
            "--user",
            format!("{u:?} is not user[:group] (names or numeric ids)"),
        ))
    }
}

/// An RFC 1123 host name of at most 64 bytes (Linux's HOST_NAME_MAX), as docker checks.
pub fn check_hostname(h: &str) -> Result<(), SettingError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.len() <= 64 && h.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(refused(
            "--hostname",
            format!("{h:?} is not a valid host name (letters, digits, '-' and '.', at most 64)"),
        ))
    }
}

/// A label key: not empty, no whitespace or control character, not tpcm's own prefix.
pub fn check_label_key(key: &str) -> Result<(), SettingError> {
    if key.is_empty() {
        return Err(refused("--label", "a label has no key"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refused(
            "--label",
            format!("key {key:?} contains whitespace or a control character"),
        ));
    }
    if key.starts_with(RESERVED_LABEL_PREFIX) {
        return Err(refused(
            "--label",
            format!("{key:?}: the {RESERVED_LABEL_PREFIX} prefix is tpcm's own"),
        ));
    }
    Ok(())
}

/// An environment variable name: not empty, no `=`, no NUL.
pub fn check_env_name(name: &str) -> Result<(), SettingError> {
    if name.is_empty() {
        return Err(refused("--env", "empty variable name"));
    }
    if name.contains(['=', '\0']) {
        return Err(refused("--env", format!("{name:?} is not a variable name")));
    }
    Ok(())
}

/// An environment value: anything but NUL (the kernel's environment is NUL-separated).
pub fn check_env_value(name: &str, value: &str) -> Result<(), SettingError> {
    if value.contains('\0') {
        return Err(refused(
            "--env",
            format!("{name}: the value contains a NUL character"),
        ));
    }
    Ok(())
}

/// Longest identifier containerd accepts (namespaces, container IDs).
pub const MAX_IDENTIFIER: usize = 76;

/// Whether `s` follows containerd's identifier rule: letters and digits, in runs joined by single
/// `.`, `_` or `-` (it starts and ends with a letter or digit), at most [`MAX_IDENTIFIER`] bytes.
pub fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_IDENTIFIER
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !b
            .windows(2)
            .any(|w| !w[0].is_ascii_alphanumeric() && !w[1].is_ascii_alphanumeric())
}

/// Parses a docker size: a whole or decimal number of bytes, optionally followed (after at most
/// one space) by a unit `k`, `m`, `g`, `t` or `p` (powers of 1024; any case, optionally followed
/// by `i` and/or `b`) or by `b` alone. `512m`, `1g`, `1.5G`, `1024`, `64MiB`. A fraction of a
/// byte is dropped, as docker does.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size (use e.g. 512m or 1g)");
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let whole_len = digits(s);
    if whole_len == 0 {
        return Err(bad());
    }
    let (whole, rest) = s.split_at(whole_len);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = digits(after);
            if n == 0 {
                return Err(bad());
            }
            (Some(&after[..n]), &after[n..])
        }
        None => (None, rest),
    };
    let unit = rest.strip_prefix(' ').unwrap_or(rest).to_ascii_lowercase();
    let shift = match unit.as_bytes() {
        [] | [b'b'] => 0,
        [p] | [p, b'i'] | [p, b'b'] | [p, b'i', b'b'] => match p {
            b'k' => 10,
            b'm' => 20,
            b'g' => 30,
            b't' => 40,
            b'p' => 50,
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let too_large = || format!("{s:?} is too large");
    match frac {
        None => {
            let n: u64 = whole.parse().map_err(|_| too_large())?;
            n.checked_mul(1u64 << shift).ok_or_else(too_large)
        }
        Some(frac) => {
            let n: f64 = format!("{whole}.{frac}").parse().map_err(|_| bad())?;
            let bytes = n * (1u64 << shift) as f64;
            // 2^64 is exactly representable; anything at or above it does not fit.
            if bytes >= 18_446_744_073_709_551_616.0 {
                return Err(too_large());
            }
            Ok(bytes as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_as_docker_takes_them() {
        for (given, name) in [
            ("SIGTERM", "SIGTERM"),
            ("TERM", "SIGTERM"),
            ("term", "SIGTERM"),
            ("9", "SIGKILL"),
            (" SIGUSR1 ", "SIGUSR1"),
        ] {
            assert_eq!(signal_name(given).as_deref(), Some(name), "{given}");
        }
        for bad in ["", "SIGNOPE", "99", "-1"] {
            assert_eq!(signal_name(bad), None, "{bad}");
        }
    }

    fn settings() -> ContainerSettings {
        ContainerSettings::default()
    }

    #[test]
    fn the_shared_rules_refuse_what_either_front_end_might_build() {
        let mut s = settings();
        s.volumes.push(VolumeMount {
            host: "/h".into(),
            container: PRIVATE_MOUNT.into(),
            read_only: false,
        });
        assert_eq!(s.check().unwrap_err().setting, "--volume");

        let mut s = settings();
        s.ports.push(PortMapping {
            host: 80,
            container: 80,
            protocol: "tcp".into(),
        });
        assert!(s.check().is_ok(), "the container's own port on the host network");
        s.ports[0].container = 8080;
        assert!(s.check().unwrap_err().message.contains("must be equal"));
        s.network = Network::None;
        assert_eq!(s.check().unwrap_err().setting, "--publish");
        s.ports[0].container = 80;
        s.network = Network::Bridge;
        assert!(s.check().is_ok());
        s.ports.push(s.ports[0].clone());
        assert!(s.check().unwrap_err().message.contains("given twice"));

        let mut s = settings();
        s.memory = Some(MIN_MEMORY);
        s.memory_reservation = Some(MIN_MEMORY + 1);
        assert_eq!(s.check().unwrap_err().setting, "--memory-reservation");

        let mut s = settings();
        s.hostname = Some("h".into());
        assert!(s.check().is_ok(), "a host name on the host network, as docker");
        s.uts_host = true;
        assert_eq!(s.check().unwrap_err().setting, "--uts");

        let mut s = settings();
        s.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        assert_eq!(
            s.check().unwrap_err().setting,
            "--sysctl",
            "net.* on the host network"
        );
        s.network = Network::None;
        assert!(s.check().is_ok());
        s.sysctls.insert("kernel.hostname".into(), "x".into());
        assert_eq!(s.check().unwrap_err().setting, "--sysctl");

        for bad in ["io.tpcm.network.ports", "a\nb", "a b", ""] {
            let mut s = settings();
            s.labels.insert(bad.into(), "x".into());
            assert_eq!(s.check().unwrap_err().setting, "--label", "{bad:?}");
        }
    }

    #[test]
    fn value_checks() {
        assert!(check_cpus(0.5, "0.5").is_ok());
        for bad in [0.0, -1.0, 0.001, 2000.0, f64::NAN, f64::INFINITY] {
            assert!(check_cpus(bad, "x").is_err(), "{bad}");
        }
        assert_eq!(memory_limit("--memory", 0, "0"), Ok(None));
        assert!(memory_limit("--memory", 1024, "1k").is_err());
        assert_eq!(
            capability_name("--cap-add", "net_admin").unwrap(),
            "CAP_NET_ADMIN"
        );
        assert_eq!(capability_name("--cap-add", "all").unwrap(), "ALL");
        assert!(capability_name("--cap-add", "FLY").is_err());
        assert!(check_user("1000:1000").is_ok() && check_user("a b").is_err());
        assert!(check_env_name("A").is_ok() && check_env_name("A=B").is_err());
        assert!(check_env_value("A", "x\0y").is_err());
    }

    #[test]
    fn identifiers_follow_containerds_rule() {
        for ok in ["tpcm", "a", "A.b_c-9", &"a".repeat(76)] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a_-b", "ä", "a b", "a/b", &"a".repeat(77)] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn restart_policies_round_trip_through_their_text() {
        for p in [
            RestartPolicy::No,
            RestartPolicy::Always,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure { max_retries: None },
            RestartPolicy::OnFailure { max_retries: Some(3) },
        ] {
            assert_eq!(p.to_string().parse::<RestartPolicy>().unwrap(), p);
        }
    }
}
