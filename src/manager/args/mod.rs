//! The `--args` of `tpcm install`: a documented subset of `docker run` flags (docs/args.md),
//! parsed into the TPC's [`ContainerSettings`] (the typed spec the record keeps, which the
//! runtime spec builder maps onto an OCI runtime spec).
//!
//! SONiC's TPCM lets the operator pass "container args" as one string, the way they would write
//! them after `docker run`. tpcm has no Docker daemon, so it accepts only the flags that have a
//! meaning in an OCI runtime spec, and refuses everything else by name rather than ignoring it.
//!
//! The string is split into words by `shell-words` (POSIX shell quoting, never a shell: no
//! variable expansion, no globbing; a word starting with `#` starts a comment), then parsed by
//! clap. The result is plain data, serializable, so the TPC's record keeps exactly what it was
//! installed with. Two things are read from outside at parse time, as `docker run` does: files
//! named by `--env-file`, and tpcm's own environment for a bare `-e KEY`; their values are in the
//! result, so nothing is read again at boot.
//!
//! Layout: `flags` (what clap sees, refused docker flags), `values` (one flag's syntax), `env`
//! (`-e`, `--env-file`); the rules shared with gNOI are the spec's (`crate::tpc_spec`).

mod env;
mod flags;
pub(crate) mod values;

pub use env::MAX_ENV_FILE;

use crate::tpc_spec::{self, ContainerSettings, HealthCheck, HealthTiming, Network, RestartPolicy};
use clap::Parser;
use std::collections::BTreeMap;
use std::ffi::OsString;

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

/// Looks a variable up in tpcm's environment (tests give their own).
type Lookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// What parsing may read outside the `--args` text.
pub(super) struct Outside<'a> {
    /// tpcm's environment, for a bare `-e KEY`; `None`: such keys are dropped.
    environment: Option<Lookup<'a>>,
    /// Whether files named by flags (`--env-file`, a seccomp profile) are read; if not, env
    /// files contribute nothing and a profile is kept as it was.
    files: bool,
}

/// Parses the `--args` string of `tpcm install` into the TPC's settings. An empty (or blank)
/// string gives the default.
///
/// Reads `--env-file` files and, for a bare `-e KEY`, tpcm's own environment: once, here; the
/// settings hold the values.
pub fn parse_args(args: &str) -> Result<ContainerSettings, ArgsError> {
    let environment = |key: &str| std::env::var_os(key);
    parse_args_with(
        args,
        &Outside {
            environment: Some(&environment),
            files: true,
        },
    )
}

/// Parses `--args` text kept from an earlier install without reading anything outside it (no
/// env files, no environment): for a record written before settings were kept typed, whose
/// environment was resolved at its install and is taken from elsewhere.
pub fn parse_kept_args(args: &str) -> Result<ContainerSettings, ArgsError> {
    parse_args_with(
        args,
        &Outside {
            environment: None,
            files: false,
        },
    )
}

/// Parses with `outside` standing for what may be read besides the text (tests give their own).
fn parse_args_with(args: &str, outside: &Outside<'_>) -> Result<ContainerSettings, ArgsError> {
    if args.contains('\0') {
        return Err(ArgsError::Other("contains a NUL character".into()));
    }
    let words = shell_words::split(args).map_err(|_| ArgsError::UnbalancedQuotes)?;
    let argv = std::iter::once("args".to_string()).chain(words);
    let raw = flags::RawArgs::try_parse_from(argv).map_err(flags::from_clap)?;
    build(raw, outside)
}

/// Checks and converts every value, then the rules that join several.
fn build(raw: flags::RawArgs, outside: &Outside<'_>) -> Result<ContainerSettings, ArgsError> {
    let mut env = Vec::new();
    if outside.files {
        for path in &raw.env_file {
            env.extend(env::read_env_file(path, outside)?);
        }
    }
    for e in &raw.env {
        env.extend(env::env_entry(e, outside)?);
    }
    let volumes = raw
        .volume
        .iter()
        .map(|v| values::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let cpus = raw.cpus.as_deref().map(values::parse_cpus).transpose()?;
    let memory = values::sized("--memory", raw.memory.as_deref())?;
    let memory_reservation = values::sized("--memory-reservation", raw.memory_reservation.as_deref())?;
    let cap_add = values::capabilities("--cap-add", &raw.cap_add)?;
    let cap_drop = values::capabilities("--cap-drop", &raw.cap_drop)?;
    let privileged = match raw.privileged.as_deref() {
        None => false,
        Some(v) => values::parse_bool(v)
            .ok_or_else(|| invalid("--privileged", format!("{v:?} is not true or false")))?,
    };
    let user = raw.user.filter(|u| !u.is_empty());
    if let Some(u) = &user {
        tpc_spec::check_user(u)?;
    }
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
        tpc_spec::check_hostname(h)?;
    }
    let ports = raw
        .publish
        .iter()
        .map(|p| values::parse_port(p))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = raw
        .device
        .iter()
        .map(|d| values::parse_device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut labels = BTreeMap::new();
    for l in &raw.label {
        let (k, v) = values::parse_label(l)?;
        labels.insert(k, v);
    }
    let restart = match raw.restart.as_deref() {
        None => RestartPolicy::No,
        Some(r) => r.parse().map_err(|m: String| invalid("--restart", m))?,
    };
    let timing_given = raw.health_interval.is_some()
        || raw.health_timeout.is_some()
        || raw.health_retries.is_some()
        || raw.health_start_period.is_some();
    let health = health_check(raw.health_cmd, raw.health_tcp, raw.health_http)?;
    if raw.no_healthcheck && (health.is_some() || timing_given) {
        return Err(invalid("--no-healthcheck", "conflicts with the --health-* flags"));
    }
    let mut health_timing = HealthTiming::default();
    let ms = |flag, v: &Option<String>| {
        v.as_deref()
            .map(|v| values::parse_duration_ms(flag, v))
            .transpose()
    };
    if let Some(Some(v)) = ms("--health-interval", &raw.health_interval)? {
        health_timing.interval_ms = v;
    }
    if let Some(Some(v)) = ms("--health-timeout", &raw.health_timeout)? {
        health_timing.timeout_ms = v;
    }
    if let Some(Some(v)) = ms("--health-start-period", &raw.health_start_period)? {
        health_timing.start_period_ms = v;
    }
    if let Some(r) = raw.health_retries.as_deref() {
        health_timing.retries = values::parse_number("--health-retries", r)?;
    }
    let security = values::parse_security_opts(&raw.security_opt, outside.files)?;
    let pids_limit = raw
        .pids_limit
        .as_deref()
        .map(values::parse_pids_limit)
        .transpose()?
        .flatten();
    let mut ulimits: Vec<tpc_spec::Ulimit> = Vec::new();
    for u in &raw.ulimit {
        let u = values::parse_ulimit(u)?;
        // A name given again replaces the earlier one, as docker.
        ulimits.retain(|o| o.name != u.name);
        ulimits.push(u);
    }
    let flag_bool = |flag: &str, v: Option<&str>| match v {
        None => Ok(false),
        Some(v) => values::parse_bool(v).ok_or_else(|| invalid(flag, format!("{v:?} is not true or false"))),
    };
    let read_only = flag_bool("--read-only", raw.read_only.as_deref())?;
    let init = flag_bool("--init", raw.init.as_deref())?;
    let mut tmpfs = BTreeMap::new();
    for t in &raw.tmpfs {
        let (path, options) = values::parse_tmpfs(t)?;
        tmpfs.insert(path, options);
    }
    let shm_size = match raw.shm_size.as_deref() {
        None => None,
        Some(v) => match tpc_spec::parse_size(v).map_err(|m| invalid("--shm-size", m))? {
            0 => None,
            n => Some(n),
        },
    };
    let mut sysctls = BTreeMap::new();
    for s in &raw.sysctl {
        let (k, v) = values::parse_sysctl(s)?;
        sysctls.insert(k, v);
    }
    let extra_hosts = raw
        .add_host
        .iter()
        .map(|h| values::parse_add_host(h))
        .collect::<Result<Vec<_>, _>>()?;
    let dns = values::parse_dns(&raw.dns, &raw.dns_search, &raw.dns_option)?;
    let stop_signal = raw.stop_signal.as_deref().map(values::parse_signal).transpose()?;
    let stop_timeout = raw
        .stop_timeout
        .as_deref()
        .map(|v| values::parse_number("--stop-timeout", v))
        .transpose()?;
    let oom_score_adj = raw
        .oom_score_adj
        .as_deref()
        .map(|v| values::parse_number("--oom-score-adj", v))
        .transpose()?
        .unwrap_or(0);
    let uts_host = match raw.uts.as_deref() {
        None | Some("") => false,
        Some("host") => true,
        Some(other) => return Err(invalid("--uts", format!("{other:?} is not supported (use host)"))),
    };

    let settings = ContainerSettings {
        env: env::dedup_env(env),
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
        no_healthcheck: raw.no_healthcheck,
        health_timing,
        command: raw.command,
        security,
        pids_limit,
        ulimits,
        read_only,
        tmpfs,
        shm_size,
        sysctls,
        extra_hosts,
        dns,
        stop_signal,
        stop_timeout,
        oom_score_adj,
        init,
        uts_host,
    };
    settings.check()?;
    Ok(settings)
}

/// `--health-cmd`, `--health-tcp` or `--health-http`: at most one.
fn health_check(
    cmd: Option<String>,
    tcp: Option<String>,
    http: Option<String>,
) -> Result<Option<HealthCheck>, ArgsError> {
    match (cmd, tcp, http) {
        (None, None, None) => Ok(None),
        (Some(cmd), None, None) if !cmd.trim().is_empty() => Ok(Some(HealthCheck::Cmd(cmd))),
        (Some(_), None, None) => Err(invalid("--health-cmd", "needs a command")),
        (None, Some(port), None) => match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(HealthCheck::Tcp(p))),
            _ => Err(invalid("--health-tcp", format!("{port:?} is not a port number"))),
        },
        (None, None, Some(url)) if url.starts_with("http://") && url.len() > 7 => {
            Ok(Some(HealthCheck::Http(url)))
        }
        (None, None, Some(url)) => Err(invalid("--health-http", format!("{url:?} is not an http:// URL"))),
        _ => Err(invalid(
            "--health-cmd",
            "give one of --health-cmd, --health-tcp and --health-http",
        )),
    }
}

#[cfg(test)]
mod tests;
