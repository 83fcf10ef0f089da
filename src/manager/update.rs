//! `tpcm update`: change a TPC's CPU cap, memory limits, pids limit or restart policy without
//! its archive and without re-creating its container. The limits go to the running task at
//! once (the runtime's update; runc writes the cgroup) and into the container's definition, so
//! a restart or `tpcm boot` keeps them; the TPC's spec records them, and its unit is rewritten
//! when the restart policy changes. A refused value changes nothing.

use super::Error;
use super::container::{install_unit, require_locked, validate_name};
use super::store::{Store, TpcRecord};
use crate::config::Settings;
use crate::runtime::{ResourceLimits, Runtime};
use crate::tpc_spec::RestartPolicy;

/// What to change; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// New CPU cap in CPUs.
    pub cpus: Option<f64>,
    /// New memory limit (`Some(None)`: none).
    pub memory: Option<Option<u64>>,
    /// New memory soft limit (`Some(None)`: none).
    pub memory_reservation: Option<Option<u64>>,
    /// New pids limit (`Some(None)`: none).
    pub pids_limit: Option<Option<i64>>,
    /// New restart policy.
    pub restart: Option<RestartPolicy>,
}

impl Change {
    fn is_empty(&self) -> bool {
        *self == Change::default()
    }
}

fn limits(record: &TpcRecord) -> ResourceLimits {
    ResourceLimits {
        cpus: record.cpus,
        memory: record.spec.settings.memory,
        memory_reservation: record.spec.settings.memory_reservation,
        pids_limit: record.spec.settings.pids_limit,
    }
}

/// Applies `change` to TPC `name`; returns its new record.
pub async fn update<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    name: &str,
    change: &Change,
) -> Result<TpcRecord, Error> {
    validate_name(name)?;
    if change.is_empty() {
        return Err(Error::Invalid(
            "nothing to update: give --cpus, --memory, --memory-reservation, --pids-limit or --restart"
                .into(),
        ));
    }
    if let Some(c) = change.cpus {
        crate::tpc_spec::check_cpus(c, &c.to_string()).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    let store = Store::new(&settings.root);
    let _lock = store.lock_for_command(name)?;
    super::recovery::recover(runtime, settings, &store, name, &|m| tracing::warn!("{m}")).await?;
    let old = require_locked(&store, name)?;
    let mut new = old.clone();
    let s = &mut new.spec.settings;
    if let Some(c) = change.cpus {
        s.cpus = Some(c);
        new.cpus = c;
    }
    if let Some(m) = change.memory {
        s.memory = m;
    }
    if let Some(r) = change.memory_reservation {
        s.memory_reservation = r;
    }
    if let Some(p) = change.pids_limit {
        s.pids_limit = p;
    }
    if let Some(r) = change.restart {
        s.restart = r;
    }
    s.check().map_err(|e| Error::Invalid(e.to_string()))?;
    if new == old {
        return Ok(new);
    }
    let (before, after) = (limits(&old), limits(&new));
    let exists = runtime.container_exists(name).await?;
    // runc may have written some cgroup files before one was refused: the old limits go back,
    // so a refusal changes nothing.
    if before != after
        && exists
        && let Err(e) = runtime.update_limits(name, &after).await
    {
        let _ = runtime.update_limits(name, &before).await;
        return Err(e.into());
    }
    // The record, then the unit (for a new restart policy); a failure of either puts back what
    // was changed before it, so the TPC keeps its old settings everywhere.
    let recorded = store.put(&new).map_err(Error::from).and_then(|()| {
        if old.spec.settings.restart == new.spec.settings.restart {
            return Ok(());
        }
        install_unit(settings, &store, name, &new.spec.settings).inspect_err(|_| {
            let _ = store.put(&old);
            let _ = install_unit(settings, &store, name, &old.spec.settings);
        })
    });
    if let Err(e) = recorded {
        if before != after && exists {
            let _ = runtime.update_limits(name, &before).await;
        }
        return Err(e);
    }
    let mut attributes = Vec::new();
    if before.cpus != after.cpus {
        attributes.push(("cpus", after.cpus.to_string()));
    }
    let text = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    if before.memory != after.memory {
        attributes.push(("memory", text(after.memory)));
    }
    if before.memory_reservation != after.memory_reservation {
        attributes.push(("memoryReservation", text(after.memory_reservation)));
    }
    if before.pids_limit != after.pids_limit {
        attributes.push(("pidsLimit", text(after.pids_limit.map(|p| p as u64))));
    }
    if old.spec.settings.restart != new.spec.settings.restart {
        attributes.push(("restart", new.spec.settings.restart.to_string()));
    }
    super::events::emit(&store, name, "update", &attributes);
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testing::Bench;

    #[tokio::test]
    async fn an_update_changes_the_limits_and_records_them_and_a_refusal_changes_nothing() {
        let b = Bench::new();
        b.install("app", "app:1", "sha256:1", "").await;
        let change = Change {
            cpus: Some(0.5),
            memory: Some(Some(64 << 20)),
            restart: Some(RestartPolicy::Always),
            ..Change::default()
        };
        let r = update(&b.runtime, &b.settings, "app", &change).await.unwrap();
        assert_eq!((r.cpus, r.spec.settings.memory), (0.5, Some(64 << 20)));
        assert_eq!(b.runtime.count("update_limits"), 1);
        let unit = std::fs::read_to_string(b.settings.systemd_dir.join("tpc-app.service")).unwrap();
        assert!(unit.contains("Restart=always"), "{unit}");

        // A reservation above the limit is refused before anything changes.
        let bad = Change {
            memory_reservation: Some(Some(128 << 20)),
            ..Change::default()
        };
        let err = update(&b.runtime, &b.settings, "app", &bad).await.unwrap_err();
        assert!(err.to_string().contains("--memory-reservation"), "{err}");
        assert_eq!(b.runtime.count("update_limits"), 1);
        let kept = Store::new(&b.settings.root).get("app").unwrap().unwrap();
        assert_eq!(kept, r);
        // So is asking for nothing, or a CPU cap below the minimum.
        assert!(
            update(&b.runtime, &b.settings, "app", &Change::default())
                .await
                .is_err()
        );
        let tiny = Change {
            cpus: Some(0.001),
            ..Change::default()
        };
        assert!(update(&b.runtime, &b.settings, "app", &tiny).await.is_err());

        // A unit that cannot be written: the record and the running limits stay as they were.
        let units = b.settings.systemd_dir.clone();
        std::fs::remove_dir_all(&units).unwrap();
        std::fs::write(&units, "not a directory").unwrap();
        let both = Change {
            cpus: Some(1.0),
            restart: Some(RestartPolicy::No),
            ..Change::default()
        };
        assert!(update(&b.runtime, &b.settings, "app", &both).await.is_err());
        assert_eq!(Store::new(&b.settings.root).get("app").unwrap().unwrap(), r);
        let calls = b.runtime.calls.lock().unwrap().clone();
        let updates: Vec<&String> = calls.iter().filter(|c| c.starts_with("update_limits")).collect();
        assert_eq!(
            updates[1..],
            ["update_limits app cpus=1", "update_limits app cpus=0.5"],
            "the new limits, then the old ones back"
        );
        // The store's copy of the unit is the old one again.
        let kept_unit = std::fs::read_to_string(Store::new(&b.settings.root).unit_path("app")).unwrap();
        assert!(kept_unit.contains("Restart=always"), "{kept_unit}");
    }
}
