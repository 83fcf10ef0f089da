//! One flag's value at a time: docker's syntax for ports, volumes, devices, sizes, CPUs,
//! capabilities, labels and booleans, turned into the spec's types. Rules that do not depend on
//! the syntax are the spec's own ([`crate::tpc_spec`]), shared with the gNOI front end.

use super::{ArgsError, invalid};
use crate::tpc_spec::{
    self, DeviceMapping, Dns, PortMapping, Seccomp, Security, SettingError, Ulimit, VolumeMount,
};
use std::path::PathBuf;

impl From<SettingError> for ArgsError {
    fn from(e: SettingError) -> ArgsError {
        invalid(e.setting, e.message)
    }
}

/// Parses one `-p [ip:]host:container[/tcp|udp]`; only all addresses (`0.0.0.0`, or none) are
/// supported as the host address.
pub(super) fn parse_port(p: &str) -> Result<PortMapping, ArgsError> {
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

/// Folds `.`, `..`, repeated and trailing `/` of an absolute path, without touching the
/// filesystem (`..` at `/` stays at `/`).
pub(super) fn clean_absolute(path: &str) -> String {
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

/// `-v host:container[:ro|rw]`, both paths absolute.
pub(super) fn parse_volume(spec: &str) -> Result<VolumeMount, ArgsError> {
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
pub(super) fn is_device_permissions(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 3
        && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && ['r', 'w', 'm'].iter().all(|c| p.matches(*c).count() <= 1)
}

/// Docker's `--device` syntax: `host`, `host:container`, `host:permissions`,
/// `host:container:permissions`; an empty container part means the host path.
pub(super) fn parse_device(spec: &str) -> Result<DeviceMapping, ArgsError> {
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

/// `--cpus N`: a number, then the spec's range.
pub(crate) fn parse_cpus(s: &str) -> Result<f64, ArgsError> {
    let n: f64 = s.parse().ok().filter(|n: &f64| n.is_finite()).ok_or_else(|| {
        invalid(
            "--cpus",
            format!("{s:?} is not a number of CPUs (use e.g. 0.5 or 2)"),
        )
    })?;
    tpc_spec::check_cpus(n, &format!("{s:?}"))?;
    Ok(n)
}

/// A memory size flag: a docker size, then the spec's minimum (0 means no limit).
pub(crate) fn sized(flag: &'static str, value: Option<&str>) -> Result<Option<u64>, ArgsError> {
    let Some(value) = value else { return Ok(None) };
    let bytes = tpc_spec::parse_size(value).map_err(|m| invalid(flag, m))?;
    Ok(tpc_spec::memory_limit(flag, bytes, &format!("{value:?}"))?)
}

/// Normalizes capability names to `CAP_X` (or `ALL`), refusing unknown ones; drops repeats.
pub(super) fn capabilities(flag: &'static str, names: &[String]) -> Result<Vec<String>, ArgsError> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let cap = tpc_spec::capability_name(flag, name)?;
        if !out.contains(&cap) {
            out.push(cap);
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseBool`, which docker's boolean flags use.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `key[=value]` (a missing value is empty); the key loses leading blanks, as in docker, and
/// must then pass the spec's key check.
pub(super) fn parse_label(l: &str) -> Result<(String, String), ArgsError> {
    let (key, value) = match l.split_once('=') {
        Some((k, v)) => (k, v),
        None => (l, ""),
    };
    let key = key.trim_start_matches([' ', '\t']);
    if key.is_empty() {
        return Err(invalid("--label", format!("{l:?} has no key")));
    }
    tpc_spec::check_label_key(key)?;
    Ok((key.to_string(), value.to_string()))
}

/// `--security-opt`: `seccomp=unconfined|builtin|<file>` (the file, in docker's profile format, is
/// read now and kept), `no-new-privileges[=<bool>]` (or docker's older `:` form),
/// `apparmor=<profile>`. SELinux labels and anything else are refused by name.
pub(super) fn parse_security_opts(opts: &[String], read_files: bool) -> Result<Security, ArgsError> {
    const FLAG: &str = "--security-opt";
    let mut s = Security::default();
    for opt in opts {
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("no-new-privileges", None) => s.no_new_privileges = true,
            ("no-new-privileges", Some(v)) => {
                s.no_new_privileges = parse_bool(v)
                    .ok_or_else(|| invalid(FLAG, format!("no-new-privileges={v:?} is not true or false")))?;
            }
            ("seccomp", Some("unconfined")) => s.seccomp = Seccomp::Unconfined,
            ("seccomp", Some("builtin")) => s.seccomp = Seccomp::Default,
            ("seccomp", Some(path)) if read_files => s.seccomp = Seccomp::Custom(read_seccomp_profile(path)?),
            ("seccomp", Some(_)) => {}
            ("apparmor", Some(p)) if !p.is_empty() && !p.contains(char::is_whitespace) => {
                s.apparmor = Some(p.to_string());
            }
            ("label", _) => {
                return Err(invalid(
                    FLAG,
                    format!("{opt:?}: SELinux labels are not supported (SONiC runs without SELinux)"),
                ));
            }
            _ => {
                return Err(invalid(
                    FLAG,
                    format!(
                        "{opt:?} is not supported (use seccomp=unconfined|<file>, no-new-privileges or apparmor=<profile>)"
                    ),
                ));
            }
        }
    }
    Ok(s)
}

/// Largest seccomp profile read.
const MAX_PROFILE: u64 = 1024 * 1024;

/// Reads a seccomp profile in docker's format, checks it, and returns it compacted.
fn read_seccomp_profile(path: &str) -> Result<String, ArgsError> {
    use std::io::Read;
    let fail = |m: String| invalid("--security-opt", format!("seccomp={path}: {m}"));
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PROFILE + 1).read_to_string(&mut text))
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(fail(format!("larger than {MAX_PROFILE} bytes")));
    }
    let profile = crate::runtime::seccomp::parse_profile(&text)
        .map_err(|e| fail(format!("not a seccomp profile in docker's format ({e})")))?;
    Ok(serde_json::to_string(&profile).expect("profiles serialize"))
}

/// `--pids-limit N`: as docker, 0 or less means no limit.
pub(crate) fn parse_pids_limit(v: &str) -> Result<Option<i64>, ArgsError> {
    let n: i64 = v
        .parse()
        .map_err(|_| invalid("--pids-limit", format!("{v:?} is not a whole number")))?;
    Ok((n > 0).then_some(n))
}

/// `--ulimit name=soft[:hard]`: docker's names; `-1` is unlimited; the hard limit defaults to
/// the soft one and may not be below it.
pub(super) fn parse_ulimit(v: &str) -> Result<Ulimit, ArgsError> {
    const FLAG: &str = "--ulimit";
    let (name, limits) = v
        .split_once('=')
        .ok_or_else(|| invalid(FLAG, format!("{v:?} is not name=soft[:hard]")))?;
    if !tpc_spec::ULIMIT_NAMES.contains(&name) {
        return Err(invalid(
            FLAG,
            format!(
                "{name:?} is not a limit docker knows ({})",
                tpc_spec::ULIMIT_NAMES.join(", ")
            ),
        ));
    }
    let limit = |s: &str| match s {
        "-1" => Ok(u64::MAX),
        s => s.parse::<u64>().map_err(|_| {
            invalid(
                FLAG,
                format!("{v:?}: {s:?} is not a limit (a whole number, or -1 for none)"),
            )
        }),
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (limit(s)?, limit(h)?),
        None => (limit(limits)?, limit(limits)?),
    };
    if soft > hard {
        return Err(invalid(
            FLAG,
            format!("{v:?}: the soft limit is above the hard one"),
        ));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// Mount flags `--tmpfs` options may give (they override docker's `noexec,nosuid,nodev`).
const TMPFS_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "sync",
    "async",
    "dirsync",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "mand",
    "nomand",
];
/// tmpfs's own `key=value` options, as docker accepts them.
const TMPFS_KEYS: &[&str] = &["size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"];

/// `--tmpfs path[:opt,...]`.
pub(super) fn parse_tmpfs(v: &str) -> Result<(String, Vec<String>), ArgsError> {
    const FLAG: &str = "--tmpfs";
    let (path, opts) = match v.split_once(':') {
        Some((p, o)) => (p, o),
        None => (v, ""),
    };
    if !path.starts_with('/') {
        return Err(invalid(FLAG, format!("{path:?} is not an absolute path")));
    }
    let mut options = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let known = match o.split_once('=') {
            Some((k, v)) => TMPFS_KEYS.contains(&k) && !v.is_empty() && !v.contains(char::is_whitespace),
            None => TMPFS_FLAGS.contains(&o),
        };
        if !known {
            return Err(invalid(FLAG, format!("{v:?}: {o:?} is not a tmpfs option")));
        }
        options.push(o.to_string());
    }
    Ok((clean_absolute(path), options))
}

/// `--sysctl key=value`.
pub(super) fn parse_sysctl(v: &str) -> Result<(String, String), ArgsError> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() && !k.contains(char::is_whitespace) && !val.contains('\n') => {
            Ok((k.to_string(), val.to_string()))
        }
        _ => Err(invalid("--sysctl", format!("{v:?} is not key=value"))),
    }
}

/// `--add-host name:address` (or docker's `name=address`; IPv6 in brackets or not).
pub(super) fn parse_add_host(v: &str) -> Result<(String, String), ArgsError> {
    const FLAG: &str = "--add-host";
    let (name, addr) = v
        .split_once(['=', ':'])
        .ok_or_else(|| invalid(FLAG, format!("{v:?} is not name:address")))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if addr == "host-gateway" {
        return Err(invalid(
            FLAG,
            format!("{v:?}: host-gateway is docker's bridge address; give the address itself"),
        ));
    }
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| invalid(FLAG, format!("{v:?}: {addr:?} is not an IP address")))?;
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('#') {
        return Err(invalid(FLAG, format!("{v:?}: {name:?} is not a host name")));
    }
    Ok((name.to_string(), ip.to_string()))
}

/// `--dns ADDRESS`, `--dns-search DOMAIN`, `--dns-option OPTION`.
pub(super) fn parse_dns(servers: &[String], search: &[String], options: &[String]) -> Result<Dns, ArgsError> {
    for s in servers {
        s.parse::<std::net::IpAddr>()
            .map_err(|_| invalid("--dns", format!("{s:?} is not an IP address")))?;
    }
    let word = |flag: &str, list: &[String]| {
        list.iter()
            .find(|w| w.is_empty() || w.contains(char::is_whitespace))
            .map_or(Ok(()), |w| Err(invalid(flag, format!("{w:?} is not one word"))))
    };
    word("--dns-search", search)?;
    word("--dns-option", options)?;
    Ok(Dns {
        servers: servers.to_vec(),
        search: search.to_vec(),
        options: options.to_vec(),
    })
}

/// `--stop-signal`: a signal name (`SIGTERM`, `TERM`) or number; kept as its `SIG` name.
pub(super) fn parse_signal(v: &str) -> Result<String, ArgsError> {
    crate::tpc_spec::signal_name(v).ok_or_else(|| {
        invalid(
            "--stop-signal",
            format!("{v:?} is not a signal (e.g. SIGTERM or 15)"),
        )
    })
}

/// A whole number flag.
pub(super) fn parse_number<T: std::str::FromStr>(flag: &'static str, v: &str) -> Result<T, ArgsError> {
    v.parse()
        .map_err(|_| invalid(flag, format!("{v:?} is not a whole number")))
}

/// A docker duration (`30s`, `1m30s`, `500ms`), at least 1 ms; `0` keeps the default.
pub(super) fn parse_duration_ms(flag: &'static str, v: &str) -> Result<Option<u64>, ArgsError> {
    if v == "0" {
        return Ok(None);
    }
    let d = humantime::parse_duration(v)
        .map_err(|_| invalid(flag, format!("{v:?} is not a duration (e.g. 30s, 1m30s, 500ms)")))?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(invalid(flag, format!("{v:?} is shorter than 1ms")));
    }
    Ok(Some(ms))
}
