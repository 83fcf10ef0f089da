//! When a followed log ends: with its TPC's process, as `docker logs -f` and the proto's Log do.
//! Shared by `tpcm logs -f` and gNOI Log; the reading itself is [`crate::runtime::logs::follow`].

use super::store::Store;
use crate::runtime::{ContainerState, Runtime};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a follow goes on reading after the TPC's process exited: what its last moments wrote
/// reaches the log file through the log driver a moment later.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(600);

/// The end of one follow of a TPC's log: reached once its process exited and
/// [`DRAIN_AFTER_EXIT`] passed, or once the TPC is removed. Cheap to ask from the thread that
/// reads; a task learns of the exit, and goes when this is dropped.
pub struct FollowEnd {
    record: PathBuf,
    exited: Arc<Mutex<Option<Instant>>>,
    watcher: Option<tokio::task::AbortHandle>,
}

impl FollowEnd {
    /// Watches TPC `name` for a follow: `None` when its process does not run (its log so far is
    /// all there is). While the runtime cannot say, it counts as running (a TPC's shim and log
    /// driver outlive containerd). The runtime is `runtime(&owner)`, so a server can lend the
    /// one its shared state holds. Must be called within a Tokio runtime.
    pub async fn watch<S, R>(
        owner: Arc<S>,
        runtime: fn(&S) -> &R,
        store: &Store,
        name: &str,
    ) -> Option<FollowEnd>
    where
        S: Send + Sync + 'static,
        R: Runtime + 'static,
    {
        if matches!(
            runtime(&owner).container_state(name).await,
            Ok(s) if !matches!(s, ContainerState::Running { .. })
        ) {
            return None;
        }
        let mut end = FollowEnd::unwatched(store, name);
        let (name, exited) = (name.to_string(), end.exited.clone());
        end.watcher = Some(
            tokio::spawn(async move {
                wait_for_exit(runtime(&owner), &name).await;
                *exited.lock().expect("exit time") = Some(Instant::now());
            })
            .abort_handle(),
        );
        Some(end)
    }

    /// An end reached only when TPC `name` is removed: for a follow without a runtime to ask.
    pub fn unwatched(store: &Store, name: &str) -> FollowEnd {
        FollowEnd {
            record: store.record_path(name),
            exited: Arc::default(),
            watcher: None,
        }
    }

    /// Whether the follow should end now.
    pub fn reached(&self) -> bool {
        !self.record.exists()
            || self
                .exited
                .lock()
                .expect("exit time")
                .is_some_and(|t| t.elapsed() >= DRAIN_AFTER_EXIT)
    }
}

impl Drop for FollowEnd {
    fn drop(&mut self) {
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
    }
}

/// Returns once TPC `name`'s process exited. Without a wait to be had (containerd restarted,
/// the task went meanwhile) it watches the state once a second, counting a state it cannot read
/// as running.
async fn wait_for_exit<R: Runtime>(runtime: &R, name: &str) {
    if runtime.wait_container(name).await.is_ok() {
        return;
    }
    while !matches!(
        runtime.container_state(name).await,
        Ok(s) if !matches!(s, ContainerState::Running { .. })
    ) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
