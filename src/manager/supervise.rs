//! Restart policies without systemd (containerz: "supervised from containerd exit events").
//! When systemd runs the TPC units, their `Restart=` does this; when it does not (a gNOI
//! server in a container, or a test machine), `tpcm serve` feeds every container exit here.

use super::Error;
use super::container::{ensure_running, validate_name};
use super::store::Store;
use crate::config::Settings;
use crate::runtime::{ContainerState, Runtime};
use crate::tpc_spec::RestartPolicy;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A container that ran at least this long before exiting starts a new failure streak
/// (docker's rule for `on-failure:N` counts).
const STREAK_RESET: Duration = Duration::from_secs(10);
/// First delay before restarting a container that failed again within [`STREAK_RESET`]; it
/// doubles per restart in the streak up to [`MAX_BACKOFF`] (docker's back-off), so a
/// container that exits at once does not spin.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait for a command that holds the TPC's lock (an upgrade's hooks and health gate).
const LOCK_PATIENCE: Duration = Duration::from_secs(900);

/// The `always` and `unless-stopped` TPCs whose container exited while nobody watched (e.g.
/// while `tpcm serve` was down), with their exit codes: what to feed [`Supervisor::on_exit`]
/// once watching starts. `on-failure` ones are left, as docker leaves them when its daemon
/// starts: their retry count was spent or is unknown.
pub async fn exited<R: Runtime>(runtime: &R, settings: &Settings) -> Result<Vec<(String, u32)>, Error> {
    let mut out = Vec::new();
    for record in Store::new(&settings.root).list()? {
        if !matches!(
            record.spec.settings.restart,
            RestartPolicy::Always | RestartPolicy::UnlessStopped
        ) {
            continue;
        }
        if let ContainerState::Exited { code } = runtime.container_state(&record.name).await? {
            out.push((record.name, code));
        }
    }
    Ok(out)
}

/// Restart counts per TPC, for `on-failure:N` and the back-off. Shared by the tasks that handle
/// exits, one task per exit, so a TPC that waits (for its lock, or its back-off) delays no other.
#[derive(Debug, Default)]
pub struct Supervisor {
    /// Restarts in the current streak and when the last one was made.
    streaks: std::sync::Mutex<HashMap<String, (u32, Instant)>>,
}

/// The delay before the restart after `restarts` restarts in a streak (none before the first).
fn backoff(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    FIRST_BACKOFF
        .saturating_mul(1 << restarts.min(16))
        .min(MAX_BACKOFF)
}

impl Supervisor {
    fn streak(&self, id: &str) -> (u32, Instant) {
        let streaks = self.streaks.lock().expect("streaks");
        streaks.get(id).copied().unwrap_or((0, Instant::now()))
    }

    /// Handles one exit of container `id` with `code`; returns whether it was restarted.
    pub async fn on_exit<R: Runtime>(
        &self,
        runtime: &R,
        settings: &Settings,
        id: &str,
        code: u32,
    ) -> Result<bool, Error> {
        if crate::systemd::systemd_is_running() || validate_name(id).is_err() {
            return Ok(false);
        }
        let store = Store::new(&settings.root);
        if store.get(id)?.is_some() {
            // Nobody else waits on the container without systemd: its exit is recorded here.
            super::status::exited(&store, id, code);
        }
        // The back-off is waited out before the lock is taken: a backing-off TPC blocks nothing.
        let (restarts, since) = self.streak(id);
        let in_streak = since.elapsed() < STREAK_RESET;
        let delay = if in_streak {
            backoff(restarts)
        } else {
            Duration::ZERO
        };
        tokio::time::sleep(delay).await;
        // A command working on the TPC (install, stop, upgrade, uninstall) may have caused this
        // exit or may still be starting it: wait for it, then judge by what it left.
        let _lock = store.lock_waiting(id, LOCK_PATIENCE)?;
        let Some(record) = store.get(id)? else {
            return Ok(false);
        };
        if !record.running || super::journal::pending(&store).iter().any(|n| n == id) {
            return Ok(false);
        }
        if let ContainerState::Running { .. } = runtime.container_state(id).await? {
            // Restarted already (an upgrade's new version, a rollback, `tpcm start`).
            return Ok(false);
        }
        let policy = record.spec.settings.restart;
        let restarts = if in_streak { restarts } else { 0 };
        let restart = match policy {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                let allowed = max_retries.is_none_or(|max| restarts < max);
                if code != 0 && !allowed {
                    tracing::info!(
                        tpc = id,
                        code,
                        restarts,
                        "restart limit reached ({policy}); leaving it stopped"
                    );
                }
                code != 0 && allowed
            }
        };
        if !restart {
            return Ok(false);
        }
        self.streaks
            .lock()
            .expect("streaks")
            .insert(id.to_string(), (restarts + 1, Instant::now()));
        tracing::info!(
            tpc = id,
            code,
            restarts = restarts + 1,
            "restarting per its restart policy ({policy})"
        );
        ensure_running(runtime, settings, &store, &record).await?;
        super::status::restarted(&store, id);
        Ok(true)
    }
}
