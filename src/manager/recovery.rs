//! Recovery: before any command changes a TPC, whatever an earlier tpcm left half-done is
//! finished or taken back (per the journal, `journal.rs`), and the half-built objects of tpcm
//! processes that died are released. `tpcm boot` runs the same for every TPC.

use super::journal::{self, Journal};
use super::store::Store;
use super::{Error, tpc, upgrade};
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
        None => Ok(()),
        Some(Journal::Install(j)) => {
            say(&format!("Taking back the interrupted install of TPC-{name}"));
            tpc::undo_install(runtime, settings, store, name, &j).await
        }
        Some(Journal::Uninstall(j)) => {
            say(&format!("Finishing the interrupted uninstall of TPC-{name}"));
            tpc::finish_uninstall(runtime, settings, store, name, &j, say).await
        }
        Some(Journal::Upgrade(j)) => upgrade::recover_upgrade(runtime, settings, store, name, &j, say).await,
    }
}

/// Recovers every TPC with a journal whose lock is free (a busy one is being handled by the
/// command holding it). A failure is reported per TPC and never stops the others.
pub async fn recover_all<R: Runtime>(
    runtime: &R,
    settings: &Settings,
    say: &dyn Fn(&str),
) -> Vec<(String, Error)> {
    let store = Store::new(&settings.root);
    let mut failures = Vec::new();
    for name in journal::pending(&store) {
        let Ok(_lock) = store.lock(&name) else { continue };
        if let Err(e) = recover(runtime, settings, &store, &name, say).await {
            failures.push((name, e));
        }
    }
    failures
}
