//! Health checks (`--health-cmd`, `--health-tcp`, `--health-http` with `--health-interval`,
//! `--health-timeout`, `--health-retries`, `--health-start-period`, or else the image's
//! `HEALTHCHECK`, as docker chooses: `TpcRecord::health`), run continuously while a
//! TPC runs, with docker's rules: `starting` until a probe passes, `healthy` while they pass,
//! `unhealthy` after `retries` failures in a row; failures in the start period do not count
//! until a probe has passed. The state is kept in the TPC's status file (`status.rs`); each
//! change is a `health_status` event.
//!
//! Who runs them: the process that waits on the TPC's container. On a switch that is the TPC's
//! systemd unit, `tpcm unit-run` (it lives exactly as long as the container runs, with or
//! without `tpcm serve`); where systemd does not run the units, `tpcm serve` runs a monitor
//! per running TPC instead, as it supervises restart policies there. An upgrade's health gate
//! runs the same probes itself.

use super::status::{self, HEALTH_LOG, Health, HealthState, ProbeResult};
use super::store::Store;
use crate::config::Settings;
use crate::runtime::{ContainerState, Runtime};
use crate::tpc_spec::{HealthCheck, HealthTiming};
use std::time::{Duration, Instant};

/// How often the probe log of a check whose state does not change is written (every probe
/// otherwise: a 1 s interval would write the status file 86,400 times a day).
const LOG_WRITE_INTERVAL: Duration = Duration::from_secs(30);

/// Longest output kept per probe.
const OUTPUT_LIMIT: usize = 4096;

/// The state after a probe: `ok` whether it passed, `in_start_period` whether the container is
/// still in its start period (failures then do not count until a probe passed).
pub fn next_state(state: &HealthState, ok: bool, in_start_period: bool, retries: u32) -> (Health, u32) {
    if ok {
        return (Health::Healthy, 0);
    }
    if in_start_period && state.status == Health::Starting {
        return (Health::Starting, state.failing_streak);
    }
    let streak = state.failing_streak + 1;
    if streak >= retries.max(1) {
        (Health::Unhealthy, streak)
    } else {
        (state.status, streak)
    }
}

/// Runs TPC `name`'s health check against its container process `pid` until that process no
/// longer runs; does nothing for a TPC without a check.
pub async fn monitor<R: Runtime>(runtime: &R, settings: &Settings, name: &str, pid: u32) {
    let store = Store::new(&settings.root);
    let Ok(Some(record)) = store.get(name) else {
        return;
    };
    let Some((check, timing)) = record.health() else {
        return;
    };
    let began = Instant::now();
    status::update(&store, name, |o| {
        if o.health.as_ref().is_none_or(|h| h.pid != pid) {
            o.health = Some(HealthState {
                pid,
                status: Health::Starting,
                failing_streak: 0,
                log: Vec::new(),
            });
        }
    });
    let mut last_write = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(timing.interval_ms.max(1))).await;
        if !runs(runtime, name, pid).await {
            return;
        }
        let result = probe_once(runtime, name, &check, timing).await;
        if !runs(runtime, name, pid).await {
            return;
        }
        let in_start = began.elapsed() < Duration::from_millis(timing.start_period_ms);
        let mut changed = None;
        let due = last_write.elapsed() >= LOG_WRITE_INTERVAL;
        let mut wrote = false;
        status::update_if(&store, name, |o| {
            let h = o.health.get_or_insert(HealthState {
                pid,
                status: Health::Starting,
                failing_streak: 0,
                log: Vec::new(),
            });
            let (next, streak) = next_state(h, result.ok, in_start, timing.retries);
            if next != h.status {
                changed = Some(next);
            }
            // Written when the state changes or the streak moves towards `retries` (or back to
            // 0); a state that stays (passing, or failing on and on) only every
            // LOG_WRITE_INTERVAL.
            let counts = streak != h.failing_streak && streak <= timing.retries.max(1);
            wrote = changed.is_some() || counts || due;
            h.status = next;
            h.failing_streak = streak;
            h.log.push(result.clone());
            let excess = h.log.len().saturating_sub(HEALTH_LOG);
            h.log.drain(..excess);
            wrote
        });
        if wrote {
            last_write = Instant::now();
        }
        if let Some(health) = changed {
            super::events::emit(&store, name, "health_status", &[("health", health.to_string())]);
        }
    }
}

async fn runs<R: Runtime>(runtime: &R, name: &str, pid: u32) -> bool {
    matches!(runtime.container_state(name).await, Ok(ContainerState::Running { pid: p }) if p == pid)
}

async fn probe_once<R: Runtime>(
    runtime: &R,
    name: &str,
    check: &HealthCheck,
    timing: HealthTiming,
) -> ProbeResult {
    let start = super::now_secs();
    let (ok, mut output) = match probe(runtime, name, check, Duration::from_millis(timing.timeout_ms)).await {
        Ok(out) => (true, out),
        Err(why) => (false, why),
    };
    if output.len() > OUTPUT_LIMIT {
        let mut cut = output.len() - OUTPUT_LIMIT;
        while !output.is_char_boundary(cut) {
            cut += 1;
        }
        output = output[cut..].to_string();
    }
    ProbeResult { start, ok, output }
}

/// The health a TPC shows for its container process `pid`, from what was `observed` of it
/// (`status::get`, which the callers read anyway): `None` without a check; `starting` until a
/// monitor has results for this process.
pub fn shown(
    record: &super::store::TpcRecord,
    observed: &status::Observed,
    pid: Option<u32>,
) -> Option<Health> {
    record.health()?;
    let pid = pid?;
    Some(
        observed
            .health
            .as_ref()
            .filter(|h| h.pid == pid)
            .map_or(Health::Starting, |h| h.status),
    )
}

/// A probe that runs `argv` in the container (`shown` names it in a failure): passed when it
/// exits 0 within `timeout`.
async fn exec_probe<R: Runtime>(
    runtime: &R,
    name: &str,
    argv: &[String],
    shown: &str,
    timeout: Duration,
) -> Result<String, String> {
    if argv.is_empty() {
        // An image's `HEALTHCHECK CMD` without a command: docker fails every probe of it.
        return Err("the health check has no command".into());
    }
    let r = runtime
        .exec_in_container(name, argv, timeout)
        .await
        .map_err(|e| e.to_string())?;
    match r.code {
        Some(0) => Ok(r.output),
        Some(c) => Err(format!("`{shown}` exited with code {c}")),
        None => Err(format!("`{shown}` did not finish within {} s", timeout.as_secs())),
    }
}

/// One probe, given at most `timeout` (the check's `--health-timeout`): what it said when it
/// passed, why not when it failed.
pub(super) async fn probe<R: Runtime>(
    runtime: &R,
    name: &str,
    check: &HealthCheck,
    timeout: Duration,
) -> Result<String, String> {
    match check {
        HealthCheck::Cmd(cmd) => {
            let argv = ["/bin/sh".to_string(), "-c".to_string(), cmd.clone()];
            exec_probe(runtime, name, &argv, cmd, timeout).await
        }
        HealthCheck::Exec(argv) => exec_probe(runtime, name, argv, &argv.join(" "), timeout).await,
        HealthCheck::Tcp(port) => {
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", *port));
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_)) => Ok(format!("127.0.0.1:{port} accepted a connection")),
                Ok(Err(e)) => Err(format!("127.0.0.1:{port}: {e}")),
                Err(_) => Err(format!("127.0.0.1:{port}: no answer")),
            }
        }
        HealthCheck::Http(url) => {
            let url = url.clone();
            tokio::task::spawn_blocking(move || {
                crate::source::install_tls_provider();
                let client = reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|e| e.to_string())?;
                let status = client
                    .get(&url)
                    .send()
                    .map_err(|e| format!("{url}: {e}"))?
                    .status();
                if status.is_success() {
                    Ok(format!("{url} answered {status}"))
                } else {
                    Err(format!("{url} answered {status}"))
                }
            })
            .await
            .map_err(|e| e.to_string())?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: Health, failing_streak: u32) -> HealthState {
        HealthState {
            pid: 1,
            status,
            failing_streak,
            log: vec![],
        }
    }

    #[test]
    fn dockers_health_rules() {
        // Failures in the start period do not count before a probe passed.
        assert_eq!(
            next_state(&state(Health::Starting, 0), false, true, 3),
            (Health::Starting, 0)
        );
        // After it, they do; `retries` in a row make it unhealthy.
        assert_eq!(
            next_state(&state(Health::Starting, 0), false, false, 3),
            (Health::Starting, 1)
        );
        assert_eq!(
            next_state(&state(Health::Healthy, 1), false, false, 3),
            (Health::Healthy, 2)
        );
        assert_eq!(
            next_state(&state(Health::Healthy, 2), false, false, 3),
            (Health::Unhealthy, 3)
        );
        // Once healthy, failures count even within the start period.
        assert_eq!(
            next_state(&state(Health::Healthy, 0), false, true, 1),
            (Health::Unhealthy, 1)
        );
        // One pass makes it healthy again.
        assert_eq!(
            next_state(&state(Health::Unhealthy, 5), true, false, 3),
            (Health::Healthy, 0)
        );
    }
}
