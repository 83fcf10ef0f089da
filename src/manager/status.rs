//! What tpcm observed about a TPC while it ran, apart from its record (which holds what the
//! operator asked for): restarts made by its restart policy, its last exit, and its health.
//! One small JSON file per TPC, `<store>/status/<name>.json`, written atomically under a lock
//! of its own, so the watchers that write it (the unit's `unit-run`, the health monitor, the
//! supervisor) never wait for a command holding the TPC's lock, nor a command for them.

use super::store::{FILE_MODE, Store, create_private_dir};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Health probe results kept per TPC (docker keeps 5).
pub const HEALTH_LOG: usize = 5;

/// What was observed about one TPC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observed {
    /// Restarts its restart policy made since an operator last started it.
    pub restart_count: u32,
    /// Its last exit.
    pub last_exit: Option<LastExit>,
    /// Its health check's state for the container process it ran against.
    pub health: Option<HealthState>,
}

/// How the TPC's process last ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    /// Exit code (128 + signal when killed).
    pub code: u32,
    /// When (seconds since the epoch).
    pub at: u64,
}

/// docker's health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No probe has passed yet (or failures are not counted yet: the start period).
    Starting,
    /// The last probe passed.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// The health check's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// The container process (host pid) these results are about: a restarted container starts
    /// over at `starting`.
    pub pid: u32,
    /// Where it stands.
    pub status: Health,
    /// Failed probes in a row.
    pub failing_streak: u32,
    /// The last probes, oldest first.
    pub log: Vec<ProbeResult>,
}

/// One probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// When it started (seconds since the epoch).
    pub start: u64,
    /// Whether it passed.
    pub ok: bool,
    /// What it said (a command's output, the failure).
    pub output: String,
}

fn file(store: &Store, name: &str) -> PathBuf {
    store.root().join("status").join(format!("{name}.json"))
}

/// What was observed about TPC `name` (nothing yet: the default).
pub fn get(store: &Store, name: &str) -> Observed {
    std::fs::read(file(store, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Changes what was observed about TPC `name` with `change`, under the status lock; returns the
/// result. Best effort: a failure is logged, never fails the operation that observed it.
pub fn update(store: &Store, name: &str, change: impl FnOnce(&mut Observed)) -> Observed {
    update_if(store, name, |o| {
        change(o);
        true
    })
}

/// [`update`] where `change` says whether what it changed is worth writing now (the health
/// monitor writes a passing probe into the log only now and then: a switch's flash wears).
pub fn update_if(store: &Store, name: &str, change: impl FnOnce(&mut Observed) -> bool) -> Observed {
    match try_update(store, name, change) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("cannot record the status of TPC {name}: {e}");
            get(store, name)
        }
    }
}

fn try_update(
    store: &Store,
    name: &str,
    change: impl FnOnce(&mut Observed) -> bool,
) -> Result<Observed, String> {
    let path = file(store, name);
    let dir = path.parent().expect("status files live in a directory");
    create_private_dir(dir).map_err(|e| e.to_string())?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(dir.join(format!("{name}.lock")))
        .map_err(|e| e.to_string())?;
    // Held for a read and a small write only.
    let _held = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| e.to_string())?;
    let mut observed = get(store, name);
    if !change(&mut observed) {
        return Ok(observed);
    }
    let bytes = serde_json::to_vec_pretty(&observed).map_err(|e| e.to_string())?;
    // Replaced atomically but not synced: these are observations, and losing the last ones in
    // a power cut is harmless, while a sync per probe would wear the switch's flash.
    let tmp = dir.join(format!(".{name}.json.tmp"));
    std::fs::write(&tmp, &bytes)
        .and_then(|()| {
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE))
        })
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(observed)
}

/// Forgets TPC `name` (uninstall).
pub fn remove(store: &Store, name: &str) {
    let path = file(store, name);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("lock"));
}

/// An operator (or an install or upgrade) started the TPC: restarts count from zero again.
pub fn operator_started(store: &Store, name: &str) {
    update(store, name, |o| o.restart_count = 0);
}

/// The TPC's process exited with `code`: recorded as its last exit and as a `die` event.
pub fn exited(store: &Store, name: &str, code: u32) {
    update(store, name, |o| {
        o.last_exit = Some(LastExit {
            code,
            at: super::now_secs(),
        })
    });
    super::events::emit(store, name, "die", &[("exitCode", code.to_string())]);
}

/// Its restart policy restarted the TPC after it exited: counted and recorded as an event.
pub fn restarted(store: &Store, name: &str) {
    let o = update(store, name, |o| o.restart_count += 1);
    super::events::emit(
        store,
        name,
        "restart",
        &[("restartCount", o.restart_count.to_string())],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_accumulate_and_reset_on_an_operators_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(get(&store, "a"), Observed::default());
        exited(&store, "a", 3);
        restarted(&store, "a");
        restarted(&store, "a");
        let o = get(&store, "a");
        assert_eq!((o.restart_count, o.last_exit.map(|e| e.code)), (2, Some(3)));
        operator_started(&store, "a");
        assert_eq!(get(&store, "a").restart_count, 0);
        let actions: Vec<String> = super::super::events::read(&store, 0, u64::MAX)
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["die", "restart", "restart"]);
        remove(&store, "a");
        assert_eq!(get(&store, "a"), Observed::default());
    }
}
