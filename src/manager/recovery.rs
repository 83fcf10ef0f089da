//! Recovery: before any command changes a TPC, whatever an earlier tpcm left half-done is
//! finished or taken back (per the journal, `journal.rs`), and the half-built objects of tpcm
//! processes that died are released. `tpcm boot` runs the same for every TPC.

use super::Error;
use super::journal::{self, Journal};
use super::journal_steps;
use super::store::Store;
use crate::config::Settings;
use crate::runtime::Runtime;

/// Recovers TPC `name` (the caller holds its lock).
pub async fn recover<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    store: &Store,
    name: &str,
    say: &dyn Fn(&str),
) -> Result<(), Error> {
    match runtime.collect_abandoned().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("released {n} operation(s) left by tpcm processes that died"),
        // Not fatal: the leases expire by themselves.
        Err(e) => tracing::warn!("cannot look for abandoned operations: {e}"),
    }
    match journal::read(store, name)? {
        None => {}
        Some(Journal::Install(j)) => {
            say(&format!("Taking back the interrupted install of TPC-{name}"));
            journal_steps::undo_install(runtime, settings, store, name, &j).await?;
        }
        Some(Journal::Uninstall(j)) => {
            say(&format!("Finishing the interrupted uninstall of TPC-{name}"));
            journal_steps::finish_uninstall(runtime, settings, store, name, &j, say).await?;
        }
        Some(Journal::Upgrade(j)) => {
            journal_steps::recover_upgrade(runtime, settings, store, name, &j, say).await?;
        }
    }
    pin_converted(runtime, store, name).await
}

/// A record converted from an older format belongs to a container made before containers pinned
/// their image: pin it now (by the recorded digest, or the one the image's name has if the old
/// record kept none), so a moved tag or a removed image can no longer take its content.
async fn pin_converted<R: Runtime>(runtime: &R, store: &Store, name: &str) -> Result<(), Error> {
    let Some(mut record) = store.get(name)? else {
        return Ok(());
    };
    if !record.converted {
        return Ok(());
    }
    if record.spec.image.digest.is_empty()
        && let Some(image) = runtime
            .list_images()
            .await?
            .into_iter()
            .find(|i| i.name == record.image())
    {
        record.spec.image.digest = image.digest;
    }
    if !record.spec.image.digest.is_empty() {
        runtime.pin_image(name, record.runs_on()).await?;
    }
    record.converted = false;
    store.put(&record)?;
    Ok(())
}

/// Recovers every TPC with a journal or a record still to pin whose lock is free (a busy one is
/// being handled by the command holding it). A failure is reported per TPC and never stops the
/// others.
pub async fn recover_all<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    say: &dyn Fn(&str),
) -> Vec<(String, Error)> {
    let store = Store::new(&settings.root);
    let mut names = journal::pending(&store);
    if let Ok(records) = store.list() {
        names.extend(records.into_iter().filter(|r| r.converted).map(|r| r.name));
    }
    names.sort();
    names.dedup();
    let mut failures = Vec::new();
    for name in names {
        let Ok(_lock) = store.lock(&name) else { continue };
        match recover(runtime, settings, &store, &name, say).await {
            Err(e) => failures.push((name, e)),
            // A taken-back install or a finished uninstall leaves nothing of the TPC: its lock
            // file goes too, while it is held.
            Ok(())
                if store.get(&name).ok().flatten().is_none()
                    && journal::read(&store, &name).ok().flatten().is_none() =>
            {
                store.remove_lock_file(&name)
            }
            Ok(()) => {}
        }
    }
    failures
}
