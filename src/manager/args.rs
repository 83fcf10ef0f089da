//! The `--args` of `tpcm install`: a documented subset of `docker run` flags (docs/args.md),
//! parsed into [`ContainerArgs`], which the runtime spec builder maps onto an OCI runtime spec.
//!
//! SONiC's TPCM lets the operator pass "container args" as one string, the way they would write
//! them after `docker run`. tpcm has no Docker daemon, so it accepts only the flags that have a
//! meaning in an OCI runtime spec, and refuses everything else by name rather than ignoring it.
//!
//! The string is split into words by `shell-words` (POSIX shell quoting, never a shell: no
//! variable expansion, no globbing; a word starting with `#` starts a comment), then parsed by
//! clap. The result is plain data, serializable, so the TPC's record keeps exactly what it was
//! installed with. Two things are read from outside at parse time, as `docker run` does: files
//! named by `--env-file`, and tpcm's own environment for a bare `-e KEY`.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;

/// Smallest `--cpus`: a 1 ms quota per 100 ms period, the kernel's minimum.
pub const MIN_CPUS: f64 = 0.01;
/// Largest `--cpus` accepted here. The spec builder validates against the host.
pub const MAX_CPUS: f64 = 1024.0;

/// Smallest memory limit or reservation docker (and so tpcm) accepts: 6 MiB.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// Largest `--env-file` read: a guard against naming a device or a huge file by mistake.
pub const MAX_ENV_FILE: u64 = 1024 * 1024;

/// Every Linux capability name, in capability-number order (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE
/// = 40, Linux 5.9+). `--cap-add`/`--cap-drop` accept these (and `ALL`), nothing else.
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

/// What `--args` asked for. Every field's default means "not given": the spec builder then uses
/// the image's setting or tpcm's default. Stored in the TPC's record (`#[serde(default)]`, so a
/// record written before a field existed still reads).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerArgs {
    /// Environment, `KEY=VALUE`: `--env-file` entries first (files in order), then `-e` in order.
    /// A key given twice keeps its first position and its last value.
    pub env: Vec<String>,
    /// Bind mounts from `-v host:container[:ro|rw]`, in order; container paths are unique.
    pub volumes: Vec<VolumeMount>,
    /// `--cpus`: CPU cap in CPUs, > 0 and ≤ [`MAX_CPUS`]; `None` = tpcm's default cap.
    pub cpus: Option<f64>,
    /// `-m/--memory`: memory limit in bytes (≥ [`MIN_MEMORY`]); `None` = no limit (also `-m 0`).
    pub memory: Option<u64>,
    /// `--memory-reservation`: soft limit in bytes (≥ [`MIN_MEMORY`], ≤ `memory`); `None` = none.
    pub memory_reservation: Option<u64>,
    /// `--cap-add`: capabilities added to docker's default set, `CAP_X` upper case, or `ALL`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`: capabilities removed from docker's default set, `CAP_X` upper case, or `ALL`.
    pub cap_drop: Vec<String>,
    /// `--privileged`: all capabilities, all devices, no masked or read-only kernel paths.
    pub privileged: bool,
    /// `-u/--user`: `user[:group]`, names or numeric ids, resolved in the image by the spec builder.
    pub user: Option<String>,
    /// `-w/--workdir`: absolute working directory.
    pub workdir: Option<String>,
    /// `--entrypoint`: replaces the image's entrypoint with this one executable (docker does not
    /// split the string); `Some(vec![])` when reset with `--entrypoint ""`. Either way the image's
    /// command is dropped unless [`command`](Self::command) gives one (docker's rule).
    pub entrypoint: Option<Vec<String>>,
    /// `-h/--hostname`: only with `--network none` (on the host network the name is the host's).
    pub hostname: Option<String>,
    /// `--network`: `host` (default: a SONiC container sees the switch's interfaces), `none`,
    /// or `bridge` (its own namespace on tpcm's CNI bridge; needed for `-p`).
    pub network: Network,
    /// `-p/--publish [ip:]host:container[/tcp|udp]`: host ports forwarded to the container
    /// (bridge network only); `(host, container, protocol)` are unique per host port+protocol.
    pub ports: Vec<PortMapping>,
    /// `--device host[:container[:permissions]]`, in order.
    pub devices: Vec<DeviceMapping>,
    /// `-l/--label key[=value]`: container labels; a later value for a key wins.
    pub labels: BTreeMap<String, String>,
    /// `--restart`: the policy the TPC's systemd unit honours.
    pub restart: RestartPolicy,
    /// `--health-cmd` / `--health-tcp` / `--health-http`: how an upgrade checks the new version.
    pub health: Option<HealthCheck>,
    /// The trailing command: every word from the first that is not a flag (or after `--`);
    /// replaces the image's command when not empty.
    pub command: Vec<String>,
}

/// One `-v/--volume` bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Absolute host path, lexically cleaned (`.`, `..`, `//` and a trailing `/` folded).
    pub host: PathBuf,
    /// Absolute path inside the container, lexically cleaned; never `/`.
    pub container: String,
    /// `:ro` was given (`:rw` or nothing means read-write).
    pub read_only: bool,
}

/// One `--device` mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// Absolute host device path.
    pub host: PathBuf,
    /// Absolute path inside the container (the host path when not given).
    pub container: String,
    /// Device cgroup permissions, a non-empty subset of `rwm` (default `rwm`).
    pub permissions: String,
}

pub use crate::runtime::spec::PortMapping;

/// `--network`: which network namespace the container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network namespace (and its hostname), as every SONiC container.
    #[default]
    Host,
    /// A new network namespace with only loopback.
    None,
    /// A new network namespace attached to tpcm's bridge (CNI `bridge` + `portmap`), with
    /// outbound NAT and the `-p` ports forwarded.
    Bridge,
}

/// A health check: what `tpcm upgrade` runs or probes before it keeps a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    /// `--health-cmd CMD`: run inside the container with `/bin/sh -c`; healthy when it exits 0
    /// (docker's flag).
    Cmd(String),
    /// `--health-tcp PORT`: healthy when 127.0.0.1:PORT accepts a connection (host network).
    Tcp(u16),
    /// `--health-http URL`: healthy when a GET of the http:// URL answers 2xx.
    Http(String),
}

/// `--restart`: when the TPC's systemd unit restarts the container. Serialized as docker writes
/// it (`"no"`, `"always"`, `"unless-stopped"`, `"on-failure"`, `"on-failure:3"`).
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

    /// Parses `host` or `none`; the message names what docker modes are not supported.
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

/// Why `--args` was refused. Every message is one line, starts with `--args:` and names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A quote was opened and not closed (or a `\` ended a double-quoted word).
    #[error("--args: unbalanced quotes")]
    UnbalancedQuotes,
    /// A flag outside the accepted subset; `hint` says why docker's flag has no place in tpcm,
    /// or which accepted flag was probably meant.
    #[error("--args: unknown flag {flag}{}", hint_suffix(.hint.as_deref()))]
    UnknownFlag {
        /// The flag as written, without any `=value`.
        flag: String,
        /// A short explanation or suggestion.
        hint: Option<String>,
    },
    /// A flag that takes a value was given none.
    #[error("--args: {flag} needs a value")]
    MissingValue {
        /// The flag's long name.
        flag: String,
    },
    /// A flag's value is malformed or not allowed; `message` quotes the value and says why.
    #[error("--args: {flag}: {message}")]
    Invalid {
        /// The flag's long name.
        flag: String,
        /// What is wrong, one line.
        message: String,
    },
    /// Anything else the command line parser refused (its first line).
    #[error("--args: {0}")]
    Other(String),
}

fn hint_suffix(hint: Option<&str>) -> String {
    hint.map(|h| format!(" ({h})")).unwrap_or_default()
}

fn invalid(flag: &str, message: impl Into<String>) -> ArgsError {
    ArgsError::Invalid {
        flag: flag.to_string(),
        message: message.into(),
    }
}

/// Parses the `--args` string of `tpcm install`. An empty (or blank) string gives the default.
///
/// Reads `--env-file` files and, for a bare `-e KEY`, tpcm's own environment.
pub fn parse_args(args: &str) -> Result<ContainerArgs, ArgsError> {
    parse_args_with(args, &|key| std::env::var_os(key))
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

/// The flags, as clap sees them. Every value is taken as a string and checked afterwards, so an
/// error can name the flag and say what is wrong in tpcm's words. Value-taking flags accept values
/// that start with `-` (as docker's flag parser does), so `--cpus -1` is "must be > 0", not an
/// unknown flag `-1`.
#[derive(Parser, Debug)]
#[command(
    name = "--args",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct RawArgs {
    #[arg(short = 'e', long = "env", allow_hyphen_values = true)]
    env: Vec<String>,
    #[arg(long = "env-file", allow_hyphen_values = true)]
    env_file: Vec<String>,
    #[arg(short = 'v', long = "volume", allow_hyphen_values = true)]
    volume: Vec<String>,
    #[arg(long = "cpus", allow_hyphen_values = true)]
    cpus: Option<String>,
    #[arg(short = 'm', long = "memory", allow_hyphen_values = true)]
    memory: Option<String>,
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    #[arg(long = "cap-add", allow_hyphen_values = true)]
    cap_add: Vec<String>,
    #[arg(long = "cap-drop", allow_hyphen_values = true)]
    cap_drop: Vec<String>,
    /// `--privileged`, or docker's `--privileged=true|false`.
    #[arg(
        long = "privileged",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    privileged: Option<String>,
    #[arg(short = 'u', long = "user", allow_hyphen_values = true)]
    user: Option<String>,
    #[arg(short = 'w', long = "workdir", allow_hyphen_values = true)]
    workdir: Option<String>,
    #[arg(long = "entrypoint", allow_hyphen_values = true)]
    entrypoint: Option<String>,
    #[arg(short = 'h', long = "hostname", allow_hyphen_values = true)]
    hostname: Option<String>,
    #[arg(long = "network", alias = "net", allow_hyphen_values = true)]
    network: Option<String>,
    #[arg(short = 'p', long = "publish", allow_hyphen_values = true)]
    publish: Vec<String>,
    #[arg(long = "device", allow_hyphen_values = true)]
    device: Vec<String>,
    #[arg(short = 'l', long = "label", allow_hyphen_values = true)]
    label: Vec<String>,
    #[arg(long = "restart", allow_hyphen_values = true)]
    restart: Option<String>,
    #[arg(long = "health-cmd", allow_hyphen_values = true)]
    health_cmd: Option<String>,
    #[arg(long = "health-tcp", allow_hyphen_values = true)]
    health_tcp: Option<String>,
    #[arg(long = "health-http", allow_hyphen_values = true)]
    health_http: Option<String>,
    /// Everything from the first word that is not a flag (or after `--`).
    #[arg(trailing_var_arg = true, num_args = 1..)]
    command: Vec<String>,
}

/// `docker run` flags deliberately not accepted, and why (shown with "unknown flag").
const REFUSED: &[(&[&str], &str)] = &[
    (
        &["-d", "--detach"],
        "every TPC runs detached, under its systemd unit",
    ),
    (
        &["-i", "--interactive", "-t", "--tty", "-a", "--attach"],
        "a TPC runs without a terminal or standard input",
    ),
    (&["--rm"], "a TPC is kept until tpcm uninstall"),
    (
        &[
            "--health-interval",
            "--health-timeout",
            "--health-retries",
            "--health-start-period",
            "--no-healthcheck",
        ],
        "the health check runs only when tpcm upgrade decides whether to keep a new version",
    ),
    (&["--name"], "the TPC's name is the argument of tpcm install"),
    (
        &["-P", "--publish-all", "--expose"],
        "publish each port with -p host:container (and --network bridge)",
    ),
    (&["--mount"], "use -v host:container[:ro]"),
    (
        &["-c", "--cpu-shares", "--cpu-quota", "--cpu-period"],
        "use --cpus",
    ),
];

/// Parses one `-p [ip:]host:container[/tcp|udp]`; only all addresses (`0.0.0.0`, or none) are
/// supported as the host address.
fn parse_port(p: &str) -> Result<PortMapping, ArgsError> {
    let bad = || {
        invalid(
            "--publish",
            format!("{p:?} is not host:container[/tcp|udp] (e.g. 8080:80 or 5353:53/udp)"),
        )
    };
    let (ports, protocol) = match p.rsplit_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(invalid(
            "--publish",
            format!("{p:?}: protocol {protocol:?} is not tcp or udp"),
        ));
    }
    let parts: Vec<&str> = ports.split(':').collect();
    let (host, container) = match parts.as_slice() {
        [h, c] => (*h, *c),
        ["0.0.0.0", h, c] => (*h, *c),
        [ip, _, _] => {
            return Err(invalid(
                "--publish",
                format!("{p:?}: binding to {ip} is not supported; ports are forwarded on every address"),
            ));
        }
        _ => return Err(bad()),
    };
    let port = |s: &str| s.parse::<u16>().ok().filter(|&n| n > 0).ok_or_else(bad);
    Ok(PortMapping {
        host: port(host)?,
        container: port(container)?,
        protocol,
    })
}

/// Parses with `lookup` standing for tpcm's environment (tests give their own).
fn parse_args_with(
    args: &str,
    lookup: &dyn Fn(&str) -> Option<OsString>,
) -> Result<ContainerArgs, ArgsError> {
    if args.contains('\0') {
        return Err(ArgsError::Other("contains a NUL character".into()));
    }
    let words = shell_words::split(args).map_err(|_| ArgsError::UnbalancedQuotes)?;
    let argv = std::iter::once("args".to_string()).chain(words);
    let raw = RawArgs::try_parse_from(argv).map_err(from_clap)?;
    build(raw, lookup)
}

/// Turns clap's multi-line error into one [`ArgsError`] line that names the flag.
fn from_clap(e: clap::Error) -> ArgsError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let string = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    // clap names an option with its value placeholder ("--memory <MEMORY>"), and an unknown
    // long flag as written ("--foo=bar"): keep the flag alone.
    let flag = string(ContextKind::InvalidArg).map(|a| {
        let a = a.split(' ').next().unwrap_or_default();
        a.split('=').next().unwrap_or_default().to_string()
    });
    let first_line = || {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        line.strip_prefix("error: ").unwrap_or(line).to_string()
    };
    match (e.kind(), flag) {
        (ErrorKind::UnknownArgument, Some(flag)) => {
            let hint = REFUSED
                .iter()
                .find(|(names, _)| names.contains(&flag.as_str()))
                .map(|(_, why)| why.to_string())
                .or_else(|| string(ContextKind::SuggestedArg).map(|s| format!("did you mean {s}?")));
            ArgsError::UnknownFlag { flag, hint }
        }
        (ErrorKind::InvalidValue, Some(flag))
            if string(ContextKind::InvalidValue).is_none_or(|v| v.is_empty()) =>
        {
            ArgsError::MissingValue { flag }
        }
        (_, Some(flag)) => ArgsError::Invalid {
            flag,
            message: first_line(),
        },
        (_, None) => ArgsError::Other(first_line()),
    }
}

/// Checks and converts every value.
fn build(raw: RawArgs, lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<ContainerArgs, ArgsError> {
    let mut env = Vec::new();
    for path in &raw.env_file {
        env.extend(read_env_file(path, lookup)?);
    }
    for e in &raw.env {
        env.extend(env_entry(e, lookup)?);
    }

    let mut volumes: Vec<VolumeMount> = Vec::new();
    for spec in &raw.volume {
        let v = parse_volume(spec)?;
        if volumes.iter().any(|o| o.container == v.container) {
            return Err(invalid(
                "--volume",
                format!("{} is mounted twice in the container", v.container),
            ));
        }
        volumes.push(v);
    }

    let cpus = raw.cpus.as_deref().map(parse_cpus).transpose()?;
    let memory = sized("--memory", raw.memory.as_deref())?;
    let memory_reservation = sized("--memory-reservation", raw.memory_reservation.as_deref())?;
    if let (Some(limit), Some(reservation)) = (memory, memory_reservation)
        && reservation > limit
    {
        return Err(invalid(
            "--memory-reservation",
            format!(
                "{:?} is greater than --memory {:?}",
                raw.memory_reservation.unwrap_or_default(),
                raw.memory.unwrap_or_default()
            ),
        ));
    }

    let cap_add = capabilities("--cap-add", &raw.cap_add)?;
    let cap_drop = capabilities("--cap-drop", &raw.cap_drop)?;
    let privileged = match raw.privileged.as_deref() {
        None => false,
        Some(v) => {
            parse_bool(v).ok_or_else(|| invalid("--privileged", format!("{v:?} is not true or false")))?
        }
    };

    let user = raw
        .user
        .filter(|u| !u.is_empty())
        .map(|u| check_user(&u).map(|()| u))
        .transpose()?;
    let workdir = raw.workdir.filter(|w| !w.is_empty());
    if let Some(w) = &workdir
        && !w.starts_with('/')
    {
        return Err(invalid("--workdir", format!("{w:?} is not an absolute path")));
    }
    let entrypoint = raw
        .entrypoint
        .map(|e| if e.is_empty() { Vec::new() } else { vec![e] });

    let network = match raw.network.as_deref() {
        None => Network::Host,
        Some(n) => n.parse().map_err(|m: String| invalid("--network", m))?,
    };
    let hostname = raw.hostname.filter(|h| !h.is_empty());
    if let Some(h) = &hostname {
        check_hostname(h)?;
        if network == Network::Host {
            return Err(invalid(
                "--hostname",
                "needs --network none or bridge (on the host network a container has the host's name)",
            ));
        }
    }
    let mut ports: Vec<PortMapping> = Vec::new();
    for p in &raw.publish {
        let mapping = parse_port(p)?;
        if ports
            .iter()
            .any(|q| q.host == mapping.host && q.protocol == mapping.protocol)
        {
            return Err(invalid(
                "--publish",
                format!("host port {}/{} is given twice", mapping.host, mapping.protocol),
            ));
        }
        ports.push(mapping);
    }
    if !ports.is_empty() && network != Network::Bridge {
        return Err(invalid(
            "--publish",
            "needs --network bridge (the host network has no ports to forward)",
        ));
    }

    let devices = raw
        .device
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>, _>>()?;

    let mut labels = BTreeMap::new();
    for l in &raw.label {
        let (k, v) = parse_label(l)?;
        labels.insert(k, v);
    }

    let restart = match raw.restart.as_deref() {
        None => RestartPolicy::No,
        Some(r) => r.parse().map_err(|m: String| invalid("--restart", m))?,
    };

    let health = match (raw.health_cmd, raw.health_tcp, raw.health_http) {
        (None, None, None) => None,
        (Some(cmd), None, None) if !cmd.trim().is_empty() => Some(HealthCheck::Cmd(cmd)),
        (Some(_), None, None) => return Err(invalid("--health-cmd", "needs a command")),
        (None, Some(port), None) => match port.parse::<u16>() {
            Ok(p) if p > 0 => Some(HealthCheck::Tcp(p)),
            _ => return Err(invalid("--health-tcp", format!("{port:?} is not a port number"))),
        },
        (None, None, Some(url)) if url.starts_with("http://") && url.len() > 7 => {
            Some(HealthCheck::Http(url))
        }
        (None, None, Some(url)) => {
            return Err(invalid("--health-http", format!("{url:?} is not an http:// URL")));
        }
        _ => {
            return Err(invalid(
                "--health-cmd",
                "give one of --health-cmd, --health-tcp and --health-http",
            ));
        }
    };

    Ok(ContainerArgs {
        env: dedup_env(env),
        volumes,
        cpus,
        memory,
        memory_reservation,
        cap_add,
        cap_drop,
        privileged,
        user,
        workdir,
        entrypoint,
        hostname,
        network,
        ports,
        devices,
        labels,
        restart,
        health,
        command: raw.command,
    })
}

/// Later values of a key replace earlier ones in place (the order of first appearance stays).
fn dedup_env(env: Vec<String>) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = Vec::with_capacity(env.len());
    for e in env {
        match out.iter_mut().find(|o| key(o) == key(&e)) {
            Some(o) => *o = e,
            None => out.push(e),
        }
    }
    out
}

/// The value of `key` in tpcm's environment, if set.
fn from_environment(
    flag: &str,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<String>, ArgsError> {
    match lookup(key) {
        None => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|_| {
            invalid(
                flag,
                format!("{key}: its value in tpcm's environment is not UTF-8"),
            )
        }),
    }
}

/// `-e KEY=VALUE` as given; `-e KEY` from tpcm's environment, or nothing when it is not set.
fn env_entry(e: &str, lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Option<String>, ArgsError> {
    match e.split_once('=') {
        Some(("", _)) => Err(invalid("--env", format!("{e:?} has no variable name"))),
        Some(_) => Ok(Some(e.to_string())),
        None if e.is_empty() => Err(invalid("--env", "empty variable name")),
        None => Ok(from_environment("--env", e, lookup)?.map(|v| format!("{e}={v}"))),
    }
}

/// Reads a docker env file: `KEY=VALUE` lines (value kept verbatim: no quote removal, no
/// trimming), bare `KEY` lines taken from tpcm's environment (dropped when unset), `#` comment
/// lines and blank lines skipped, leading whitespace ignored, CRLF and a UTF-8 BOM accepted.
fn read_env_file(path: &str, lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Vec<String>, ArgsError> {
    const FLAG: &str = "--env-file";
    let fail = |m: String| invalid(FLAG, format!("{path}: {m}"));
    if path.is_empty() {
        return Err(invalid(FLAG, "empty path"));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_ENV_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_ENV_FILE {
        return Err(fail(format!("larger than {MAX_ENV_FILE} bytes")));
    }
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut line = std::str::from_utf8(raw).map_err(|_| fail(format!("line {n}: not UTF-8")))?;
        if n == 1 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() {
            return Err(fail(format!("line {n}: no variable name")));
        }
        if key.contains([' ', '\t']) {
            return Err(fail(format!(
                "line {n}: variable name {key:?} contains whitespace"
            )));
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => {
                if let Some(v) = from_environment(FLAG, key, lookup)? {
                    out.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// Folds `.`, `..`, repeated and trailing `/` of an absolute path, without touching the
/// filesystem (`..` at `/` stays at `/`).
fn clean_absolute(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parse_volume(spec: &str) -> Result<VolumeMount, ArgsError> {
    const FLAG: &str = "--volume";
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, container, mode) = match parts[..] {
        [host, container] => (host, container, None),
        [host, container, mode] => (host, container, Some(mode)),
        [_] => {
            return Err(invalid(
                FLAG,
                format!("{spec:?}: give host:container (anonymous volumes are not supported)"),
            ));
        }
        _ => {
            return Err(invalid(FLAG, format!("{spec:?} is not host:container[:ro|rw]")));
        }
    };
    if !host.starts_with('/') {
        return Err(invalid(
            FLAG,
            format!("host path {host:?} is not absolute (named volumes are not supported)"),
        ));
    }
    if !container.starts_with('/') {
        return Err(invalid(
            FLAG,
            format!("container path {container:?} is not absolute"),
        ));
    }
    let container = clean_absolute(container);
    if container == "/" {
        return Err(invalid(FLAG, "cannot mount over the container's /"));
    }
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => {
            return Err(invalid(
                FLAG,
                format!("{m:?} is not a supported mount option (use ro or rw)"),
            ));
        }
    };
    Ok(VolumeMount {
        host: PathBuf::from(clean_absolute(host)),
        container,
        read_only,
    })
}

/// A non-empty subset of `rwm`, each letter at most once.
fn is_device_permissions(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 3
        && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && ['r', 'w', 'm'].iter().all(|c| p.matches(*c).count() <= 1)
}

/// Docker's `--device` syntax: `host`, `host:container`, `host:permissions`,
/// `host:container:permissions`; an empty container part means the host path.
fn parse_device(spec: &str) -> Result<DeviceMapping, ArgsError> {
    const FLAG: &str = "--device";
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, container, permissions) = match parts[..] {
        [host] => (host, "", "rwm"),
        [host, p] if is_device_permissions(p) => (host, "", p),
        [host, container] => (host, container, "rwm"),
        [host, container, p] => (host, container, p),
        _ => {
            return Err(invalid(
                FLAG,
                format!("{spec:?} is not host[:container[:permissions]]"),
            ));
        }
    };
    if !host.starts_with('/') {
        return Err(invalid(FLAG, format!("host path {host:?} is not absolute")));
    }
    let container = if container.is_empty() { host } else { container };
    if !container.starts_with('/') {
        return Err(invalid(
            FLAG,
            format!("{container:?} is neither an absolute container path nor permissions (a subset of rwm)"),
        ));
    }
    if !is_device_permissions(permissions) {
        return Err(invalid(
            FLAG,
            format!("{permissions:?} is not a set of device permissions (a subset of rwm)"),
        ));
    }
    Ok(DeviceMapping {
        host: PathBuf::from(clean_absolute(host)),
        container: clean_absolute(container),
        permissions: permissions.to_string(),
    })
}

fn parse_cpus(s: &str) -> Result<f64, ArgsError> {
    const FLAG: &str = "--cpus";
    let n: f64 = s
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| invalid(FLAG, format!("{s:?} is not a number of CPUs (use e.g. 0.5 or 2)")))?;
    if n <= 0.0 {
        return Err(invalid(FLAG, format!("{s:?} must be greater than 0")));
    }
    // The kernel refuses a CFS quota under 1 ms, i.e. 0.01 CPU at the 100 ms period.
    if n < MIN_CPUS {
        return Err(invalid(
            FLAG,
            format!("{s:?} is less than the minimum, {MIN_CPUS}"),
        ));
    }
    if n > MAX_CPUS {
        return Err(invalid(FLAG, format!("{s:?} is more than {MAX_CPUS}")));
    }
    Ok(n)
}

/// A memory size flag: 0 means no limit (docker), anything else at least [`MIN_MEMORY`].
fn sized(flag: &str, value: Option<&str>) -> Result<Option<u64>, ArgsError> {
    let Some(value) = value else { return Ok(None) };
    match parse_size(value).map_err(|m| invalid(flag, m))? {
        0 => Ok(None),
        n if n < MIN_MEMORY => Err(invalid(flag, format!("{value:?} is less than the minimum, 6m"))),
        n => Ok(Some(n)),
    }
}

/// Normalizes capability names to `CAP_X` (or `ALL`), refusing unknown ones; drops repeats.
fn capabilities(flag: &str, names: &[String]) -> Result<Vec<String>, ArgsError> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let upper = name.trim().to_ascii_uppercase();
        let cap = if upper == "ALL" || upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if cap != "ALL" && !LINUX_CAPABILITIES.contains(&cap.as_str()) {
            return Err(invalid(flag, format!("unknown capability {name:?}")));
        }
        if !out.contains(&cap) {
            out.push(cap);
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseBool`, which docker's boolean flags use.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `user[:group]`: non-empty parts without whitespace or further colons.
fn check_user(u: &str) -> Result<(), ArgsError> {
    let (user, group) = match u.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (u, None),
    };
    let ok = |p: &str| !p.is_empty() && !p.contains(':') && !p.chars().any(char::is_whitespace);
    if ok(user) && group.is_none_or(ok) {
        Ok(())
    } else {
        Err(invalid(
            "--user",
            format!("{u:?} is not user[:group] (names or numeric ids)"),
        ))
    }
}

/// An RFC 1123 host name of at most 64 bytes (Linux's HOST_NAME_MAX), as docker checks.
fn check_hostname(h: &str) -> Result<(), ArgsError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.len() <= 64 && h.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(invalid(
            "--hostname",
            format!("{h:?} is not a valid host name (letters, digits, '-' and '.', at most 64)"),
        ))
    }
}

/// `key[=value]` (a missing value is empty); the key loses leading whitespace and must have no
/// other, as docker's label check.
fn parse_label(l: &str) -> Result<(String, String), ArgsError> {
    let (key, value) = match l.split_once('=') {
        Some((k, v)) => (k, v),
        None => (l, ""),
    };
    let key = key.trim_start_matches([' ', '\t']);
    if key.is_empty() {
        return Err(invalid("--label", format!("{l:?} has no key")));
    }
    if key.contains([' ', '\t']) {
        return Err(invalid("--label", format!("key {key:?} contains whitespace")));
    }
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// tpcm's environment as the tests see it.
    fn env_lookup(key: &str) -> Option<OsString> {
        match key {
            "TPCM_T_SET" => Some("from-env".into()),
            "TPCM_T_SPACE" => Some("a b".into()),
            _ => None,
        }
    }

    fn parse(args: &str) -> Result<ContainerArgs, ArgsError> {
        parse_args_with(args, &env_lookup)
    }

    fn ok(args: &str) -> ContainerArgs {
        parse(args).unwrap_or_else(|e| panic!("{args:?} was refused: {e}"))
    }

    fn err(args: &str) -> String {
        match parse(args) {
            Ok(a) => panic!("{args:?} was accepted: {a:?}"),
            Err(e) => {
                let s = e.to_string();
                assert!(!s.contains('\n'), "multi-line error for {args:?}: {s}");
                assert!(s.starts_with("--args: "), "{s}");
                s
            }
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn env_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn empty_and_blank_give_the_default() {
        assert_eq!(ok(""), ContainerArgs::default());
        assert_eq!(ok("   \t\n "), ContainerArgs::default());
        assert_eq!(ok("# only a comment"), ContainerArgs::default());
        let d = ContainerArgs::default();
        assert_eq!(d.network, Network::Host);
        assert_eq!(d.restart, RestartPolicy::No);
        assert!(!d.privileged);
    }

    #[test]
    fn public_parse_args_reads_the_process_environment() {
        // PATH is set in any test environment; a bare -e takes it from there.
        let path = std::env::var("PATH").unwrap();
        let a = parse_args("-e PATH").unwrap();
        assert_eq!(a.env, vec![format!("PATH={path}")]);
        assert_eq!(parse_args("").unwrap(), ContainerArgs::default());
    }

    #[test]
    fn env_every_form() {
        let a = ok("-e A=1 --env B=2 --env=C=3 -eD=4 -e=E=5 -e 'F=x y' -e G=");
        assert_eq!(
            a.env,
            strings(&["A=1", "B=2", "C=3", "D=4", "E=5", "F=x y", "G="])
        );
        // A value may hold '=' and start with '-'.
        assert_eq!(ok("-e A=b=c -e -x=1").env, strings(&["A=b=c", "-x=1"]));
    }

    #[test]
    fn bare_env_key_comes_from_tpcm_environment_or_is_left_out() {
        let a = ok("-e TPCM_T_SET -e TPCM_T_UNSET -e TPCM_T_SPACE");
        assert_eq!(a.env, strings(&["TPCM_T_SET=from-env", "TPCM_T_SPACE=a b"]));
    }

    #[test]
    fn env_key_given_twice_keeps_position_and_last_value() {
        let a = ok("-e A=1 -e B=2 -e A=3");
        assert_eq!(a.env, strings(&["A=3", "B=2"]));
    }

    #[test]
    fn env_without_name_is_refused() {
        assert_eq!(err("-e =x"), r#"--args: --env: "=x" has no variable name"#);
        assert_eq!(err("-e ''"), "--args: --env: empty variable name");
    }

    #[test]
    fn env_file_entries_then_env_flags() {
        let f = env_file(
            b"\xEF\xBB\xBF# comment\n\
              A=1\r\n\
              \n\
              \t  B= spaced value \n\
              \x20  # indented comment\n\
              C=\"quoted\"\n\
              TPCM_T_SET\n\
              TPCM_T_UNSET\n\
              TPCM_T_SPACE  \n\
              D=\n\
              E=a=b",
        );
        let p = f.path().display();
        let a = ok(&format!("-e Z=9 --env-file {p} -e A=override"));
        assert_eq!(
            a.env,
            strings(&[
                "A=override",
                "B= spaced value ",
                "C=\"quoted\"",
                "TPCM_T_SET=from-env",
                "TPCM_T_SPACE=a b",
                "D=",
                "E=a=b",
                "Z=9",
            ])
        );
    }

    #[test]
    fn several_env_files_in_order() {
        let f1 = env_file(b"A=1\nB=1\n");
        let f2 = env_file(b"B=2\nC=2\n");
        let a = ok(&format!(
            "--env-file={} --env-file {}",
            f1.path().display(),
            f2.path().display()
        ));
        assert_eq!(a.env, strings(&["A=1", "B=2", "C=2"]));
    }

    #[test]
    fn env_file_errors_name_the_file_and_line() {
        let f = env_file(b"A=1\nB C=2\n");
        let p = f.path().display().to_string();
        assert_eq!(
            err(&format!("--env-file {p}")),
            format!("--args: --env-file: {p}: line 2: variable name \"B C\" contains whitespace")
        );
        let f = env_file(b"A=1\n=2\n");
        let p = f.path().display().to_string();
        assert_eq!(
            err(&format!("--env-file {p}")),
            format!("--args: --env-file: {p}: line 2: no variable name")
        );
        let f = env_file(b"A=\xff\n");
        let p = f.path().display().to_string();
        assert_eq!(
            err(&format!("--env-file {p}")),
            format!("--args: --env-file: {p}: line 1: not UTF-8")
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.env").display().to_string();
        let e = err(&format!("--env-file {missing}"));
        assert!(e.starts_with(&format!("--args: --env-file: {missing}: ")), "{e}");
        assert_eq!(err("--env-file ''"), "--args: --env-file: empty path");
    }

    #[test]
    fn env_file_size_is_bounded() {
        let f = env_file(&vec![b'#'; MAX_ENV_FILE as usize + 1]);
        let e = err(&format!("--env-file {}", f.path().display()));
        assert!(e.ends_with("larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn volumes() {
        let a = ok(
            "-v /srv/data:/data -v=/etc/x:/etc/x:ro --volume /a/./b/../c/:/mnt//c/:rw \
                    --volume='/my dir:/in dir'",
        );
        assert_eq!(
            a.volumes,
            vec![
                VolumeMount {
                    host: "/srv/data".into(),
                    container: "/data".into(),
                    read_only: false
                },
                VolumeMount {
                    host: "/etc/x".into(),
                    container: "/etc/x".into(),
                    read_only: true
                },
                VolumeMount {
                    host: "/a/c".into(),
                    container: "/mnt/c".into(),
                    read_only: false
                },
                VolumeMount {
                    host: "/my dir".into(),
                    container: "/in dir".into(),
                    read_only: false
                },
            ]
        );
    }

    #[test]
    fn bad_volumes_are_refused() {
        assert_eq!(
            err("-v data:/data"),
            r#"--args: --volume: host path "data" is not absolute (named volumes are not supported)"#
        );
        assert_eq!(
            err("-v /data"),
            r#"--args: --volume: "/data": give host:container (anonymous volumes are not supported)"#
        );
        assert_eq!(
            err("-v /a:data"),
            r#"--args: --volume: container path "data" is not absolute"#
        );
        assert_eq!(
            err("-v /a:/b:z"),
            r#"--args: --volume: "z" is not a supported mount option (use ro or rw)"#
        );
        assert_eq!(
            err("-v /a:/b:ro:x"),
            r#"--args: --volume: "/a:/b:ro:x" is not host:container[:ro|rw]"#
        );
        assert_eq!(
            err("-v /a:/"),
            "--args: --volume: cannot mount over the container's /"
        );
        assert_eq!(
            err("-v /a:/x/.."),
            "--args: --volume: cannot mount over the container's /"
        );
        assert_eq!(
            err("-v /a:/data -v /b:/data/"),
            "--args: --volume: /data is mounted twice in the container"
        );
        assert!(err("-v :/data").contains("host path \"\" is not absolute"));
    }

    #[test]
    fn cpus() {
        assert_eq!(ok("--cpus 1.5").cpus, Some(1.5));
        assert_eq!(ok("--cpus=0.25").cpus, Some(0.25));
        assert_eq!(ok("--cpus 1024").cpus, Some(1024.0));
        assert_eq!(
            ok("--cpus 1 --cpus 2").cpus,
            Some(2.0),
            "last one wins, as docker"
        );
        assert_eq!(err("--cpus 0"), r#"--args: --cpus: "0" must be greater than 0"#);
        assert_eq!(err("--cpus -1"), r#"--args: --cpus: "-1" must be greater than 0"#);
        assert_eq!(err("--cpus 1025"), r#"--args: --cpus: "1025" is more than 1024"#);
        assert_eq!(
            err("--cpus 0.001"),
            r#"--args: --cpus: "0.001" is less than the minimum, 0.01"#
        );
        assert_eq!(ok("--cpus 0.01").cpus, Some(0.01));
        for bad in ["abc", "inf", "NaN", "''", "1,5"] {
            assert!(
                err(&format!("--cpus {bad}")).contains("is not a number of CPUs"),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes() {
        let k = 1024u64;
        for (s, n) in [
            ("0", 0),
            ("1", 1),
            ("1024", 1024),
            ("1b", 1),
            ("1B", 1),
            ("1k", k),
            ("1K", k),
            ("1kb", k),
            ("1KiB", k),
            ("1ki", k),
            ("512m", 512 * k * k),
            ("512M", 512 * k * k),
            ("64MiB", 64 * k * k),
            ("1g", k * k * k),
            ("1.5g", 3 * k * k * k / 2),
            ("1.5G", 3 * k * k * k / 2),
            ("0.5k", 512),
            ("1.7", 1),
            ("2 g", 2 * k * k * k),
            ("1t", k.pow(4)),
            ("1p", k.pow(5)),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in [
            "", "g", "12q", "1.g", ".5g", "-1", "1x", "1gb2", "1.5.5g", "1  g", " 1g", "1g ", "1bb", "1ib",
            "1e3", "+1",
        ] {
            assert_eq!(
                parse_size(s),
                Err(format!("{s:?} is not a size (use e.g. 512m or 1g)")),
                "{s}"
            );
        }
        for s in [
            "18446744073709551616",
            "16384p",
            "16384.5p",
            "99999999999999999999999g",
        ] {
            assert_eq!(parse_size(s), Err(format!("{s:?} is too large")), "{s}");
        }
    }

    #[test]
    fn memory() {
        let a = ok("-m 512m --memory-reservation=256m");
        assert_eq!(a.memory, Some(512 << 20));
        assert_eq!(a.memory_reservation, Some(256 << 20));
        assert_eq!(ok("--memory=1.5g").memory, Some(3 << 29));
        assert_eq!(ok("-m1g").memory, Some(1 << 30));
        assert_eq!(
            ok("-m 1g --memory-reservation 1g").memory_reservation,
            Some(1 << 30)
        );
        assert_eq!(ok("--memory-reservation 1g").memory_reservation, Some(1 << 30));
        assert_eq!(ok("-m 0").memory, None, "0 means no limit, as docker");
        assert_eq!(ok("-m 6m").memory, Some(6 << 20));
        assert_eq!(
            err("--memory 12q"),
            r#"--args: --memory: "12q" is not a size (use e.g. 512m or 1g)"#
        );
        assert_eq!(
            err("-m 5m"),
            r#"--args: --memory: "5m" is less than the minimum, 6m"#
        );
        assert_eq!(
            err("--memory-reservation 1k"),
            r#"--args: --memory-reservation: "1k" is less than the minimum, 6m"#
        );
        assert_eq!(
            err("-m 512m --memory-reservation 1g"),
            r#"--args: --memory-reservation: "1g" is greater than --memory "512m""#
        );
    }

    #[test]
    fn capabilities_are_normalized_and_checked() {
        let a = ok(
            "--cap-add net_admin --cap-add=CAP_SYS_TIME --cap-add Net_Admin --cap-drop all \
                    --cap-drop=mknod",
        );
        assert_eq!(a.cap_add, strings(&["CAP_NET_ADMIN", "CAP_SYS_TIME"]));
        assert_eq!(a.cap_drop, strings(&["ALL", "CAP_MKNOD"]));
        assert_eq!(ok("--cap-add ALL").cap_add, strings(&["ALL"]));
        assert_eq!(
            ok("--cap-add checkpoint_restore").cap_add,
            strings(&["CAP_CHECKPOINT_RESTORE"])
        );
        assert_eq!(
            err("--cap-add NET_FLY"),
            r#"--args: --cap-add: unknown capability "NET_FLY""#
        );
        assert_eq!(
            err("--cap-drop CAP_ALL"),
            r#"--args: --cap-drop: unknown capability "CAP_ALL""#
        );
        assert_eq!(err("--cap-add ''"), r#"--args: --cap-add: unknown capability """#);
    }

    #[test]
    fn capability_list_is_complete_and_unique() {
        assert_eq!(LINUX_CAPABILITIES.len(), 41);
        let mut sorted = LINUX_CAPABILITIES.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 41);
        assert!(LINUX_CAPABILITIES.iter().all(|c| c.starts_with("CAP_")));
    }

    #[test]
    fn privileged() {
        assert!(ok("--privileged").privileged);
        assert!(ok("--privileged=true").privileged);
        assert!(ok("--privileged=1").privileged);
        assert!(!ok("--privileged=false").privileged);
        assert!(!ok("").privileged);
        // A bare --privileged never takes the next word as its value.
        let a = ok("--privileged sh -c true");
        assert!(a.privileged);
        assert_eq!(a.command, strings(&["sh", "-c", "true"]));
        assert_eq!(
            err("--privileged=maybe"),
            r#"--args: --privileged: "maybe" is not true or false"#
        );
    }

    #[test]
    fn user() {
        assert_eq!(ok("-u 1000").user.as_deref(), Some("1000"));
        assert_eq!(ok("--user=1000:1000").user.as_deref(), Some("1000:1000"));
        assert_eq!(ok("-uapp:staff").user.as_deref(), Some("app:staff"));
        assert_eq!(ok("-u ''").user, None);
        for bad in [":g", "u:", "a:b:c", "'a b'"] {
            assert!(err(&format!("-u {bad}")).contains("is not user[:group]"), "{bad}");
        }
    }

    #[test]
    fn workdir() {
        assert_eq!(ok("-w /app").workdir.as_deref(), Some("/app"));
        assert_eq!(ok("--workdir=/a b").workdir.as_deref(), Some("/a"));
        assert_eq!(ok("--workdir '/a b'").workdir.as_deref(), Some("/a b"));
        assert_eq!(ok("-w ''").workdir, None);
        assert_eq!(
            err("-w app"),
            r#"--args: --workdir: "app" is not an absolute path"#
        );
    }

    #[test]
    fn entrypoint_is_one_executable_and_empty_resets() {
        assert_eq!(
            ok("--entrypoint /bin/app").entrypoint,
            Some(strings(&["/bin/app"]))
        );
        assert_eq!(
            ok("--entrypoint '/bin/sh -c'").entrypoint,
            Some(strings(&["/bin/sh -c"])),
            "docker does not split the entrypoint"
        );
        assert_eq!(ok("--entrypoint ''").entrypoint, Some(vec![]));
        assert_eq!(ok("--entrypoint=").entrypoint, Some(vec![]));
        assert_eq!(ok("").entrypoint, None);
        let a = ok("--entrypoint /bin/sh -- -c 'echo hi'");
        assert_eq!(a.entrypoint, Some(strings(&["/bin/sh"])));
        assert_eq!(a.command, strings(&["-c", "echo hi"]));
    }

    #[test]
    fn hostname_needs_network_none() {
        let a = ok("--network none --hostname tpc-1");
        assert_eq!(a.hostname.as_deref(), Some("tpc-1"));
        assert_eq!(a.network, Network::None);
        assert_eq!(ok("-h a.b.c --net=none").hostname.as_deref(), Some("a.b.c"));
        assert_eq!(ok("--hostname ''").hostname, None);
        assert_eq!(
            err("--hostname tpc"),
            "--args: --hostname: needs --network none or bridge (on the host network a container has the host's name)"
        );
        assert_eq!(
            err("--hostname tpc --network host"),
            "--args: --hostname: needs --network none or bridge (on the host network a container has the host's name)"
        );
        for bad in ["-a", "a-", "a..b", "a_b", "'a b'", &"a".repeat(65)] {
            assert!(
                err(&format!("--network none --hostname {bad}")).contains("is not a valid host name"),
                "{bad}"
            );
        }
        assert!(
            ok(&format!("--network none -h {}", "a".repeat(64)))
                .hostname
                .is_some()
        );
    }

    #[test]
    fn published_ports_need_the_bridge_and_are_checked() {
        let a = ok("--network bridge -p 8080:80 -p 0.0.0.0:5353:53/udp");
        assert_eq!(a.network, Network::Bridge);
        let p = |host, container, protocol: &str| PortMapping {
            host,
            container,
            protocol: protocol.into(),
        };
        assert_eq!(a.ports, vec![p(8080, 80, "tcp"), p(5353, 53, "udp")]);
        assert!(err("--network bridge -p 80").contains("is not host:container"));
        assert!(err("--network bridge -p 0:80").contains("is not host:container"));
        assert!(err("--network bridge -p 80:80/sctp").contains("not tcp or udp"));
        assert!(err("--network bridge -p 10.0.0.1:80:80").contains("not supported"));
        assert!(err("--network bridge -p 80:80 -p 80:81").contains("given twice"));
        assert_eq!(ok("--network bridge -p 80:80 -p 80:80/udp").ports.len(), 2);
        assert_eq!(
            ok("--network bridge --hostname web").hostname.as_deref(),
            Some("web")
        );
    }

    #[test]
    fn network() {
        assert_eq!(ok("--network host").network, Network::Host);
        assert_eq!(ok("--network=none").network, Network::None);
        assert_eq!(ok("--net none").network, Network::None);
        assert_eq!(
            err("--network bridgeX"),
            r#"--args: --network: "bridgeX" is not supported (use host, none or bridge)"#
        );
        assert!(err("--network container:x").contains("is not supported"));
        assert!(err("--network ''").contains("is not supported"));
    }

    #[test]
    fn devices() {
        let a = ok(
            "--device /dev/net/tun --device=/dev/sda:/dev/xvda --device /dev/ttyS0:rw \
                    --device /dev/a:/dev/b:r --device /dev/c:",
        );
        let d = |h: &str, c: &str, p: &str| DeviceMapping {
            host: h.into(),
            container: c.into(),
            permissions: p.into(),
        };
        assert_eq!(
            a.devices,
            vec![
                d("/dev/net/tun", "/dev/net/tun", "rwm"),
                d("/dev/sda", "/dev/xvda", "rwm"),
                d("/dev/ttyS0", "/dev/ttyS0", "rw"),
                d("/dev/a", "/dev/b", "r"),
                d("/dev/c", "/dev/c", "rwm"),
            ]
        );
        assert_eq!(
            ok("--device /dev/a::mw").devices,
            vec![d("/dev/a", "/dev/a", "mw")]
        );
        assert_eq!(
            err("--device /dev/a:/dev/b:rwx"),
            r#"--args: --device: "rwx" is not a set of device permissions (a subset of rwm)"#
        );
        assert_eq!(
            err("--device /dev/a:/dev/b:rr"),
            r#"--args: --device: "rr" is not a set of device permissions (a subset of rwm)"#
        );
        assert_eq!(
            err("--device /dev/a:/dev/b:"),
            r#"--args: --device: "" is not a set of device permissions (a subset of rwm)"#
        );
        assert_eq!(
            err("--device /dev/a:rwx"),
            r#"--args: --device: "rwx" is neither an absolute container path nor permissions (a subset of rwm)"#
        );
        assert_eq!(
            err("--device sda"),
            r#"--args: --device: host path "sda" is not absolute"#
        );
        assert_eq!(
            err("--device /a:/b:r:x"),
            r#"--args: --device: "/a:/b:r:x" is not host[:container[:permissions]]"#
        );
    }

    #[test]
    fn labels() {
        let a = ok("-l a=1 --label b --label=c=x=y -l 'd=with space' -lE=2 -l a=3 -l ' f=lead'");
        let want: BTreeMap<String, String> = [
            ("E", "2"),
            ("a", "3"),
            ("b", ""),
            ("c", "x=y"),
            ("d", "with space"),
            ("f", "lead"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(a.labels, want);
        assert_eq!(err("-l =v"), r#"--args: --label: "=v" has no key"#);
        assert_eq!(err("-l ''"), r#"--args: --label: "" has no key"#);
        assert_eq!(
            err("-l 'a b=c'"),
            r#"--args: --label: key "a b" contains whitespace"#
        );
    }

    #[test]
    fn health_checks() {
        assert_eq!(ok("").health, None);
        assert_eq!(
            ok("--health-cmd 'test -f /tmp/ok'").health,
            Some(HealthCheck::Cmd("test -f /tmp/ok".into()))
        );
        assert_eq!(ok("--health-tcp 8080").health, Some(HealthCheck::Tcp(8080)));
        assert_eq!(
            ok("--health-http http://127.0.0.1:8080/health").health,
            Some(HealthCheck::Http("http://127.0.0.1:8080/health".into()))
        );
        assert!(err("--health-tcp 0").contains("--health-tcp"));
        assert!(err("--health-http ftp://x").contains("not an http:// URL"));
        assert!(err("--health-cmd ''").contains("needs a command"));
        assert!(err("--health-cmd true --health-tcp 80").contains("give one of"));
    }

    #[test]
    fn restart_policies() {
        for (s, p) in [
            ("no", RestartPolicy::No),
            ("''", RestartPolicy::No),
            ("always", RestartPolicy::Always),
            ("unless-stopped", RestartPolicy::UnlessStopped),
            ("on-failure", RestartPolicy::OnFailure { max_retries: None }),
            ("on-failure:0", RestartPolicy::OnFailure { max_retries: None }),
            ("on-failure:3", RestartPolicy::OnFailure { max_retries: Some(3) }),
        ] {
            assert_eq!(ok(&format!("--restart {s}")).restart, p, "{s}");
        }
        assert_eq!(ok("--restart=always").restart, RestartPolicy::Always);
        assert_eq!(
            err("--restart sometimes"),
            r#"--args: --restart: "sometimes" is not a restart policy (use no, always, unless-stopped or on-failure[:N])"#
        );
        assert_eq!(
            err("--restart always:3"),
            r#"--args: --restart: "always:3": only on-failure takes a retry count (use no, always, unless-stopped or on-failure[:N])"#
        );
        for bad in ["on-failure:-1", "on-failure:x", "on-failure:"] {
            assert!(
                err(&format!("--restart {bad}")).contains("is not a retry count"),
                "{bad}"
            );
        }
    }

    #[test]
    fn restart_policy_display_round_trips() {
        for p in [
            RestartPolicy::No,
            RestartPolicy::Always,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure { max_retries: None },
            RestartPolicy::OnFailure { max_retries: Some(5) },
        ] {
            assert_eq!(p.to_string().parse::<RestartPolicy>(), Ok(p));
        }
        assert_eq!(
            RestartPolicy::OnFailure { max_retries: Some(5) }.to_string(),
            "on-failure:5"
        );
        assert_eq!(Network::None.to_string(), "none");
    }

    #[test]
    fn command_after_first_word() {
        let a = ok("-e A=1 sh -c 'echo hi; sleep 1' -e B=2 --privileged");
        assert_eq!(a.env, strings(&["A=1"]));
        assert!(!a.privileged, "flags after the command belong to the command");
        assert_eq!(
            a.command,
            strings(&["sh", "-c", "echo hi; sleep 1", "-e", "B=2", "--privileged"])
        );
        // '--' after the command is the command's.
        assert_eq!(ok("app -- x").command, strings(&["app", "--", "x"]));
    }

    #[test]
    fn command_after_double_dash() {
        let a = ok("-m 1g -- -weird --flag");
        assert_eq!(a.memory, Some(1 << 30));
        assert_eq!(a.command, strings(&["-weird", "--flag"]));
        assert_eq!(ok("--").command, Vec::<String>::new());
        assert_eq!(ok("-- ''").command, strings(&[""]));
    }

    #[test]
    fn quoting_follows_the_shell_without_expansion() {
        let a = ok(r#"-e "A=hello world" -e 'B=$HOME' -e C=a\ b -l k="it's" echo "a  b" '*'"#);
        assert_eq!(a.env, strings(&["A=hello world", "B=$HOME", "C=a b"]));
        assert_eq!(a.labels["k"], "it's");
        assert_eq!(a.command, strings(&["echo", "a  b", "*"]));
        // '#' starts a comment only at the start of a word.
        let a = ok("-l color=#fff # a comment -e X=1");
        assert_eq!(a.labels["color"], "#fff");
        assert!(a.env.is_empty());
    }

    #[test]
    fn unbalanced_quotes() {
        assert_eq!(err("-e 'A=1"), "--args: unbalanced quotes");
        assert_eq!(err("-e \"A=1"), "--args: unbalanced quotes");
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(err("-e A=\0"), "--args: contains a NUL character");
    }

    #[test]
    fn unknown_flags_are_named() {
        assert_eq!(err("--foo"), "--args: unknown flag --foo");
        assert_eq!(err("--foo=bar"), "--args: unknown flag --foo");
        assert_eq!(err("-e A=1 --foo bar"), "--args: unknown flag --foo");
        assert_eq!(err("-x"), "--args: unknown flag -x");
        assert_eq!(err("--help"), "--args: unknown flag --help");
        assert_eq!(
            err("-d"),
            "--args: unknown flag -d (every TPC runs detached, under its systemd unit)"
        );
        assert_eq!(
            err("-it"),
            "--args: unknown flag -i (a TPC runs without a terminal or standard input)"
        );
        assert_eq!(
            err("-P"),
            "--args: unknown flag -P (publish each port with -p host:container (and --network bridge))"
        );
        assert_eq!(
            err("-p 80:80"),
            "--args: --publish: needs --network bridge (the host network has no ports to forward)"
        );
        assert_eq!(
            err("--name x"),
            "--args: unknown flag --name (the TPC's name is the argument of tpcm install)"
        );
        assert_eq!(
            err("--memroy 1g"),
            "--args: unknown flag --memroy (did you mean --memory?)"
        );
        assert_eq!(
            err("--health-interval 5s"),
            "--args: unknown flag --health-interval (the health check runs only when tpcm upgrade decides whether to keep a new version)"
        );
    }

    #[test]
    fn missing_values_name_the_flag() {
        assert_eq!(err("-m"), "--args: --memory needs a value");
        assert_eq!(err("-e"), "--args: --env needs a value");
        assert_eq!(err("--cpus"), "--args: --cpus needs a value");
        assert_eq!(err("-e A=1 --volume"), "--args: --volume needs a value");
        assert_eq!(err("--restart"), "--args: --restart needs a value");
    }

    #[test]
    fn single_value_flags_take_the_last_and_lists_accumulate() {
        let a = ok(
            "-u a -u b -w /x -w /y --restart always --restart no -e A=1 -e B=2 \
                    --cap-add NET_ADMIN --cap-add SYS_TIME --device /dev/a --device /dev/b",
        );
        assert_eq!(a.user.as_deref(), Some("b"));
        assert_eq!(a.workdir.as_deref(), Some("/y"));
        assert_eq!(a.restart, RestartPolicy::No);
        assert_eq!(a.env.len(), 2);
        assert_eq!(a.cap_add.len(), 2);
        assert_eq!(a.devices.len(), 2);
    }

    #[test]
    fn a_realistic_combination() {
        let f = env_file(b"LOG_LEVEL=info\n");
        let a = ok(&format!(
            "--env-file {} -e MODE=prod -v /host/tpc/shared/cfg:/etc/app:ro --cpus 0.5 -m 256m \
             --memory-reservation 128m --cap-add NET_ADMIN --cap-drop MKNOD -u 1000:1000 -w /app \
             --entrypoint /usr/bin/app --network none --hostname app1 --device /dev/net/tun \
             -l vendor=acme --restart on-failure:5 serve --port 8080",
            f.path().display()
        ));
        let want = ContainerArgs {
            env: strings(&["LOG_LEVEL=info", "MODE=prod"]),
            volumes: vec![VolumeMount {
                host: "/host/tpc/shared/cfg".into(),
                container: "/etc/app".into(),
                read_only: true,
            }],
            cpus: Some(0.5),
            memory: Some(256 << 20),
            memory_reservation: Some(128 << 20),
            cap_add: strings(&["CAP_NET_ADMIN"]),
            cap_drop: strings(&["CAP_MKNOD"]),
            privileged: false,
            user: Some("1000:1000".into()),
            workdir: Some("/app".into()),
            entrypoint: Some(strings(&["/usr/bin/app"])),
            hostname: Some("app1".into()),
            network: Network::None,
            ports: vec![],
            devices: vec![DeviceMapping {
                host: "/dev/net/tun".into(),
                container: "/dev/net/tun".into(),
                permissions: "rwm".into(),
            }],
            labels: [("vendor".to_string(), "acme".to_string())].into(),
            restart: RestartPolicy::OnFailure { max_retries: Some(5) },
            health: None,
            command: strings(&["serve", "--port", "8080"]),
        };
        assert_eq!(a, want);
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let a = ok(
            "-e A=1 -v /a:/b:ro --cpus 2 -m 1g --network none --restart on-failure:2 \
                    --device /dev/x:r -l k=v cmd",
        );
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(r#""network":"none""#), "{json}");
        assert!(json.contains(r#""restart":"on-failure:2""#), "{json}");
        let back: ContainerArgs = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        // A record missing fields (written by an older tpcm) still reads.
        let old: ContainerArgs = serde_json::from_str(r#"{"env":["A=1"]}"#).unwrap();
        assert_eq!(old.env, strings(&["A=1"]));
        assert_eq!(old.restart, RestartPolicy::No);
        assert!(serde_json::from_str::<ContainerArgs>(r#"{"restart":"sometimes"}"#).is_err());
        assert!(serde_json::from_str::<ContainerArgs>(r#"{"network":"bridge0"}"#).is_err());
    }
}
