//! `tpcm boot`, what the boot unit runs after every reboot: finish or roll back interrupted
//! operations (the journal), then start every TPC whose last intended state is running, all at
//! once; one broken TPC does not hold up or stop the others. A TPC the operator stopped stays
//! stopped. Before starting, TPCs saved for a SONiC image upgrade are restored (`migrate.rs`)
//! and unit files are written again where they are missing or differ from what this tpcm writes
//! (a new SONiC image's empty unit directory, a tpcm binary that moved).

use super::container::unit_text;
use super::store::{Store, write_atomic_mode};
use super::{Error, recovery, tpc};
use crate::config::Settings;
use crate::runtime::Runtime;

/// What boot did, per TPC.
#[derive(Debug, Default)]
pub struct BootReport {
    /// Interrupted operations that could not be recovered, with why.
    pub recovery_failures: Vec<(String, String)>,
    /// TPCs started (or found running).
    pub started: Vec<String>,
    /// TPCs left stopped because the operator stopped them.
    pub stopped: Vec<String>,
    /// TPCs that should run but could not be started, with why.
    pub failed: Vec<(String, String)>,
}

impl BootReport {
    /// Whether everything that should run runs.
    pub fn ok(&self) -> bool {
        self.recovery_failures.is_empty() && self.failed.is_empty()
    }
}

/// Recovers, then starts every TPC that should run, concurrently.
pub async fn boot<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    say: &dyn Fn(&str),
) -> Result<BootReport, Error> {
    let mut report = BootReport {
        recovery_failures: recovery::recover_all(runtime, settings, say)
            .await
            .into_iter()
            .map(|(name, e)| (name, e.to_string()))
            .collect(),
        ..BootReport::default()
    };
    // TPCs saved before a SONiC image upgrade come back first, so the steps below see them. A
    // failed restore is reported; the TPCs already in containerd still start.
    if let Err(e) = super::migrate::restore(runtime, settings, say).await {
        report
            .recovery_failures
            .push(("(migration restore)".to_string(), e.to_string()));
    }
    let store = Store::new(&settings.root);
    let records = store.list()?;
    // A new SONiC image comes with an empty unit directory, and a unit may name a tpcm binary
    // that has moved since it was written: every unit is written again unless it is what this
    // tpcm would write.
    let mut rewritten = false;
    for r in &records {
        let text = unit_text(settings, &r.name, &r.spec.settings)?;
        let installed = settings.systemd_dir.join(crate::systemd::unit_name(&r.name));
        let current = |p: &std::path::Path| std::fs::read(p).is_ok_and(|b| b == text.as_bytes());
        if current(&installed) && current(&store.unit_path(&r.name)) {
            continue;
        }
        write_atomic_mode(&store.unit_path(&r.name), text.as_bytes(), 0o644)?;
        write_atomic_mode(&installed, text.as_bytes(), 0o644)?;
        say(&format!("Wrote {}", installed.display()));
        rewritten = true;
    }
    if rewritten && crate::systemd::systemd_is_running() {
        crate::systemd::systemctl(&["daemon-reload"]).map_err(Error::Internal)?;
        for r in &records {
            crate::systemd::systemctl(&["enable", &crate::systemd::unit_name(&r.name)])
                .map_err(Error::Internal)?;
        }
    }
    let (to_start, stopped): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| r.running);
    report.stopped = stopped.into_iter().map(|r| r.name).collect();
    // Plugins first: a container's custom volume is mounted by its plugin before it starts.
    let (plugins, others): (Vec<_>, Vec<_>) = to_start.into_iter().partition(|r| r.plugin.is_some());
    for wave in [plugins, others] {
        let starts = wave.iter().map(|r| async move {
            let result = tpc::start_with(runtime, settings, &r.name, say).await;
            (r.name.clone(), result)
        });
        for (name, result) in futures_util::future::join_all(starts).await {
            match result {
                Ok(()) => report.started.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
    }
    Ok(report)
}
