//! What an operator looks at: `tpcm inspect` (a TPC's whole spec and where it stands), `tpcm
//! stats` (usage from its cgroup, through the runtime, and network counters of a bridged TPC)
//! and `tpcm top` (its processes). Read-only: nothing here takes a TPC's lock.

use super::Error;
use super::container::{container_config, require, validate_name};
use super::status::{self, Health, LastExit, ProbeResult};
use super::store::Store;
use super::tpc::{TpcState, process_uptime, state_of};
use crate::config::Settings;
use crate::runtime::{ContainerMetrics, Runtime};
use crate::tpc_spec::{
    ContainerSettings, HealthCheck, HealthTiming, ImageRef, Network, PortMapping, RestartPolicy,
};
use serde::Serialize;

/// What `--show-env` would reveal is shown as this.
pub const MASK: &str = "*****";

/// A TPC as `tpcm inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// TPC name (the container ID).
    pub name: String,
    /// The image: reference and the manifest digest it is pinned to.
    pub image: ImageRef,
    /// The manifest its container is made from when that is not `image`'s (after a migration).
    pub base_digest: Option<String>,
    /// What its container is doing.
    pub state: TpcState,
    /// Whether the operator wants it running.
    pub wanted_running: bool,
    /// Host pid of its first process, while it runs.
    pub pid: Option<u32>,
    /// When that process started (RFC 3339), while it runs.
    pub started_at: Option<String>,
    /// When it was installed (RFC 3339).
    pub installed_at: String,
    /// Restarts its restart policy made since an operator last started it.
    pub restart_count: u32,
    /// How its process last ended, if tpcm saw it.
    pub last_exit: Option<LastExitView>,
    /// Its restart policy (docker's words).
    pub restart_policy: RestartPolicy,
    /// The CPU cap its container has, in CPUs.
    pub cpus: f64,
    /// Its network.
    pub network: Network,
    /// Its published ports.
    pub ports: Vec<PortMapping>,
    /// Everything mounted into it from the host, tpcm's own mounts first.
    pub mounts: Vec<MountView>,
    /// Its health check's state, when it has one.
    pub health: Option<HealthView>,
    /// Every setting of its spec (environment values masked unless asked for).
    pub settings: ContainerSettings,
    /// The `--args` it was installed with (only with `--show-env`: they may hold secrets).
    pub args: Option<String>,
    /// Whether it is a gNOI plugin.
    pub plugin: bool,
    /// Where its output goes.
    pub log_file: String,
}

/// A last exit, with its time readable.
#[derive(Debug, Clone, Serialize)]
pub struct LastExitView {
    /// Exit code.
    pub code: u32,
    /// When (RFC 3339).
    pub at: String,
}

/// A mount as inspect shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MountView {
    /// Host path.
    pub source: String,
    /// Path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A health check's state as inspect shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    /// The check that runs and when (the TPC's settings', or its image's).
    pub check: HealthCheck,
    /// When and how often it runs.
    pub timing: HealthTiming,
    /// Where the check comes from: `settings` or `image` (the image's `HEALTHCHECK`).
    pub from: &'static str,
    /// `starting`, `healthy` or `unhealthy`; `None` while the TPC does not run.
    pub status: Option<Health>,
    /// Failed probes in a row.
    pub failing_streak: u32,
    /// The last probes, oldest first.
    pub log: Vec<ProbeResult>,
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// Replaces each `KEY=VALUE`'s value with [`MASK`].
fn mask_env(env: &[String]) -> Vec<String> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) => format!("{k}={MASK}"),
            None => kv.clone(),
        })
        .collect()
}

/// TPC `name` in full; environment values masked unless `show_env`.
pub async fn inspect<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    show_env: bool,
) -> Result<Inspection, Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    let record = require(&store, name)?;
    let state = state_of(runtime, name).await?;
    let pid = match state {
        TpcState::Running { pid } => Some(pid),
        _ => None,
    };
    let observed = status::get(&store, name);
    let config = container_config(settings, &store, &record);
    let mut mounts: Vec<MountView> = config
        .mounts
        .iter()
        .map(|m| MountView {
            source: m.host.display().to_string(),
            destination: m.container.clone(),
            read_only: m.read_only,
        })
        .collect();
    mounts.extend(record.spec.settings.volumes.iter().map(|v| MountView {
        source: v.host.display().to_string(),
        destination: v.container.clone(),
        read_only: v.read_only,
    }));
    let mut spec_settings = record.spec.settings.clone();
    if !show_env {
        spec_settings.env = mask_env(&spec_settings.env);
    }
    let health = record.health().map(|(check, timing)| {
        let current = observed.health.clone().filter(|h| Some(h.pid) == pid);
        HealthView {
            check,
            timing,
            from: if record.spec.settings.health.is_some() {
                "settings"
            } else {
                "image"
            },
            status: super::health::shown(&record, &observed, pid),
            failing_streak: current.as_ref().map_or(0, |h| h.failing_streak),
            log: observed.health.clone().map(|h| h.log).unwrap_or_default(),
        }
    });
    let now = super::now_secs();
    Ok(Inspection {
        name: record.name.clone(),
        image: record.spec.image.clone(),
        base_digest: record.base_digest.clone(),
        state,
        wanted_running: record.running,
        pid,
        started_at: pid
            .and_then(process_uptime)
            .map(|up| rfc3339(now.saturating_sub(up))),
        installed_at: rfc3339(record.installed),
        restart_count: observed.restart_count,
        last_exit: observed.last_exit.map(|LastExit { code, at }| LastExitView {
            code,
            at: rfc3339(at),
        }),
        restart_policy: record.spec.settings.restart,
        cpus: record.cpus,
        network: record.spec.settings.network,
        ports: record.spec.settings.ports.clone(),
        mounts,
        health,
        settings: spec_settings,
        args: show_env.then(|| record.args.clone()),
        plugin: record.plugin.is_some(),
        log_file: store.log_target(name).file.display().to_string(),
    })
}

/// One reading of a TPC's counters.
#[derive(Debug, Clone)]
pub struct Sample {
    /// TPC name.
    pub name: String,
    /// Its counters; `None` when it does not run.
    pub metrics: Option<ContainerMetrics>,
    /// Bytes received and sent on its own network (bridged TPCs only).
    pub net: Option<(u64, u64)>,
    /// When it was taken.
    pub at: std::time::Instant,
}

/// A TPC's usage as `tpcm stats` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// TPC name.
    pub name: String,
    /// Whether it runs (the rest is zero when it does not).
    pub running: bool,
    /// CPU used over the interval, in percent of one CPU (docker's figure: 200 = two CPUs busy).
    pub cpu_percent: f64,
    /// Memory in use, without inactive page cache (docker's figure), in bytes.
    pub memory_usage: u64,
    /// Its memory limit in bytes; `None` = none (the host's memory).
    pub memory_limit: Option<u64>,
    /// Usage in percent of the limit (of the host's memory without one).
    pub memory_percent: f64,
    /// Processes.
    pub pids: u64,
    /// Their limit; `None` = none.
    pub pids_limit: Option<u64>,
    /// Bytes read from block devices.
    pub block_read: u64,
    /// Bytes written to block devices.
    pub block_write: u64,
    /// Bytes received on its own network; `None` on the host's network (its traffic is the
    /// host's).
    pub net_rx: Option<u64>,
    /// Bytes sent on its own network; `None` on the host's network.
    pub net_tx: Option<u64>,
    /// The cgroup version the counters come from (0 when not running).
    pub cgroup_version: u8,
}

/// The names `tpcm stats` shows: those given (each must be installed), else every running TPC.
pub async fn stats_targets<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    names: &[String],
) -> Result<Vec<String>, Error> {
    let store = Store::new(&settings.root);
    if !names.is_empty() {
        for n in names {
            require(&store, n)?;
        }
        return Ok(names.to_vec());
    }
    let mut out = Vec::new();
    for r in store.list()? {
        if let TpcState::Running { .. } = state_of(runtime, &r.name).await? {
            out.push(r.name);
        }
    }
    Ok(out)
}

/// Reads TPC `name`'s counters now.
pub async fn sample<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<Sample, Error> {
    let store = Store::new(&settings.root);
    let record = require(&store, name)?;
    let metrics = runtime.container_metrics(name).await?;
    let net = match (record.spec.settings.network, runtime.container_state(name).await?) {
        (Network::Bridge | Network::None, crate::runtime::ContainerState::Running { pid }) => {
            net_dev(&std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default())
        }
        _ => None,
    };
    Ok(Sample {
        name: name.to_string(),
        metrics,
        net,
        at: std::time::Instant::now(),
    })
}

/// Bytes received and sent on every interface but loopback, from `/proc/<pid>/net/dev`.
fn net_dev(text: &str) -> Option<(u64, u64)> {
    let mut total = None;
    for line in text.lines().skip(2) {
        let Some((iface, counters)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        if f.len() >= 9 {
            let (rx, tx) = total.unwrap_or((0, 0));
            total = Some((rx + f[0], tx + f[8]));
        }
    }
    total.or(Some((0, 0)))
}

/// The host's memory, for the percentage of a TPC without a limit.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Usage between two samples of the same TPC (the CPU figure needs both).
pub fn stats(before: &Sample, after: &Sample) -> Stats {
    let Some(m) = &after.metrics else {
        return Stats {
            name: after.name.clone(),
            running: false,
            cpu_percent: 0.0,
            memory_usage: 0,
            memory_limit: None,
            memory_percent: 0.0,
            pids: 0,
            pids_limit: None,
            block_read: 0,
            block_write: 0,
            net_rx: None,
            net_tx: None,
            cgroup_version: 0,
        };
    };
    let wall = after.at.saturating_duration_since(before.at).as_nanos() as f64;
    let cpu = match &before.metrics {
        Some(b) if wall > 0.0 => m.cpu_usage_ns.saturating_sub(b.cpu_usage_ns) as f64 / wall * 100.0,
        _ => 0.0,
    };
    let used = m.memory_usage.saturating_sub(m.memory_inactive_file);
    let of = m.memory_limit.unwrap_or_else(host_memory);
    Stats {
        name: after.name.clone(),
        running: true,
        cpu_percent: cpu,
        memory_usage: used,
        memory_limit: m.memory_limit,
        memory_percent: if of > 0 {
            used as f64 / of as f64 * 100.0
        } else {
            0.0
        },
        pids: m.pids,
        pids_limit: m.pids_limit,
        block_read: m.block_read,
        block_write: m.block_write,
        net_rx: after.net.map(|n| n.0),
        net_tx: after.net.map(|n| n.1),
        cgroup_version: m.cgroup_version,
    }
}

/// One process of a TPC, as `tpcm top` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    /// Host pid.
    pub pid: u32,
    /// Parent's host pid.
    pub ppid: u32,
    /// Real user ID.
    pub uid: u32,
    /// CPU time used, in seconds.
    pub cpu_seconds: u64,
    /// When it started (RFC 3339).
    pub started: String,
    /// Its command line (`[name]` when it has none).
    pub command: String,
}

/// The processes of running TPC `name`.
pub async fn top<R: Runtime>(runtime: &R, settings: &Settings, name: &str) -> Result<Vec<Process>, Error> {
    validate_name(name)?;
    let store = Store::new(&settings.root);
    require(&store, name)?;
    if !matches!(state_of(runtime, name).await?, TpcState::Running { .. }) {
        return Err(Error::InUse(format!("TPC {name} is not running")));
    }
    let mut pids = runtime.container_pids(name).await?;
    pids.sort_unstable();
    Ok(pids.into_iter().filter_map(process).collect())
}

/// A host process from `/proc` (`None` once it is gone).
fn process(pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, rest) = stat.split_once(" (").map(|(_, r)| r)?.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(3) ppid(4) ... utime(14) stime(15) ... starttime(22).
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    let now = super::now_secs();
    let started = process_uptime(pid).map_or(now, |up| now.saturating_sub(up));
    Some(Process {
        pid,
        ppid: field(4)? as u32,
        uid,
        cpu_seconds: (field(14)? + field(15)?) / hz,
        started: rfc3339(started),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_counters_skip_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    2000      20    0    0    0     0          0         0      3000      30    0    0    0     0       0          0\n";
        assert_eq!(net_dev(text), Some((2000, 3000)));
    }

    #[test]
    fn cpu_is_the_share_of_the_interval_and_memory_drops_inactive_cache() {
        let t0 = std::time::Instant::now();
        let m = |cpu: u64| ContainerMetrics {
            cgroup_version: 1,
            cpu_usage_ns: cpu,
            memory_usage: 100 << 20,
            memory_inactive_file: 20 << 20,
            memory_limit: Some(200 << 20),
            pids: 2,
            pids_limit: None,
            block_read: 0,
            block_write: 0,
        };
        let s = |cpu, at| Sample {
            name: "a".into(),
            metrics: Some(m(cpu)),
            net: None,
            at,
        };
        let got = stats(
            &s(1_000_000_000, t0),
            &s(1_500_000_000, t0 + std::time::Duration::from_secs(1)),
        );
        assert!((got.cpu_percent - 50.0).abs() < 1e-9, "{}", got.cpu_percent);
        assert_eq!(got.memory_usage, 80 << 20);
        assert!((got.memory_percent - 40.0).abs() < 1e-9);
        assert_eq!(mask_env(&["A=secret".into(), "B".into()]), ["A=*****", "B"]);
    }
}
