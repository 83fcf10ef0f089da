//! One flag's value at a time: docker's syntax for ports, volumes, devices, sizes, CPUs,
//! capabilities, labels and booleans, turned into the spec's types. Rules that do not depend on
//! the syntax are the spec's own ([`crate::tpc_spec`]), shared with the gNOI front end.

use super::{ArgsError, invalid};
use crate::tpc_spec::{self, DeviceMapping, PortMapping, SettingError, VolumeMount};
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
pub(super) fn parse_cpus(s: &str) -> Result<f64, ArgsError> {
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
pub(super) fn sized(flag: &'static str, value: Option<&str>) -> Result<Option<u64>, ArgsError> {
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
