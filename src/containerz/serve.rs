//! `tpcm serve`: the TLS gRPC server, plus the two background jobs a long-running manager owns —
//! the janitor (R-CLEAN) and the restart supervisor (restart policies from containerd's exit
//! events when systemd does not run the TPC units). Stopping the server stops neither the
//! containers nor their supervision by systemd: a restart of `tpcm serve` leaves every
//! container running (R-UPGRADE).
//!
//! Connections are accepted by `listener.rs` (caps, handshake timeout, idle connections, the
//! write-call bound) with the TLS settings of `tls.rs`; SIGHUP rebuilds those and the authz.
//! At start the server raises its open-files limit to what its connection cap needs and
//! releases what tpcm processes that died (a killed server among them) were building.

use super::auth::Authz;
use super::images::Deploys;
use super::listener::{self, Calls, TlsHandle, Tracked};
use super::{Containerz, Shared};
use crate::config::Settings;
use crate::manager::janitor::{self, Suspects};
use crate::manager::supervise::{self, Supervisor};
use crate::runtime::Runtime;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;

pub use super::images::{DEFAULT_DEPLOY_IDLE_TIMEOUT, DEFAULT_MAX_DEPLOYS};
pub use super::listener::{
    ConnectionLimits, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, MAX_WRITE_CALLS,
};
pub use super::tls::TlsFiles;

/// Default janitor period (containerz: 1 h).
pub const DEFAULT_JANITOR_INTERVAL: Duration = Duration::from_secs(3600);
/// Default listening address: gNOI's customary port on every address.
pub const DEFAULT_LISTEN: &str = "[::]:9339";
/// Where containerd keeps content on a switch (Deploy checks its free space).
pub const DEFAULT_CONTENT_ROOT: &str = "/var/lib/containerd";
/// Largest HTTP/2 frame the server accepts (the protocol's default is 16 KiB).
const MAX_FRAME: u32 = 1 << 20;
/// How often an idle connection is probed, and how long an answer may take.
pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long the answer to a keepalive probe may take before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls open at once on one connection (HTTP/2 streams).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Open files the server needs besides one per connection: the containerd connection, log
/// files read by Log, the files an import writes, the janitor's and the supervisor's work.
const OPEN_FILES_RESERVE: u64 = 2048;
/// Wait before re-subscribing to containerd's events after the stream broke.
const RESUBSCRIBE: Duration = Duration::from_secs(2);

/// Everything `tpcm serve` needs, from flags and `[serve]` in tpcm.toml.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The server's certificate and key, the client CA and its CRLs (re-read on SIGHUP).
    pub tls: TlsFiles,
    /// The authz file (identities → scopes; re-read on SIGHUP).
    pub authz: PathBuf,
    /// Janitor period; zero turns the janitor off.
    pub janitor_interval: Duration,
    /// containerd's root directory (free space for Deploy).
    pub content_root: PathBuf,
    /// Trust unknown SSH host keys on remote downloads (recording them in the store).
    pub ssh_accept_new_host_keys: bool,
    /// Handshake timeout, connection caps, idle connections.
    pub connections: ConnectionLimits,
    /// Deploys in flight at most.
    pub max_deploys: usize,
    /// Longest silence of a Deploy's client before the Deploy is cancelled.
    pub deploy_idle_timeout: Duration,
}

/// Runs the server until SIGTERM or SIGINT; SIGHUP re-reads the TLS files and the authz file.
pub async fn serve<R: Runtime + Clone + 'static>(
    runtime: R,
    settings: Settings,
    options: ServeOptions,
) -> Result<(), String> {
    // First of all: SIGHUP's default action would end the server (systemd may send it as soon
    // as the process runs); one arriving before the reloader runs waits for it.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    let tls = options.tls.load()?;
    let authz = Authz::load(&options.authz)?.with_verifier(tls.verifier.clone());
    raise_open_files(options.connections.max_connections as u64 + OPEN_FILES_RESERVE);
    // What a server killed halfway through a Deploy left (its lease, content and snapshots).
    match runtime.collect_abandoned().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("released {n} operation(s) left by tpcm processes that died"),
        Err(e) => tracing::warn!("cannot look for operations left by tpcm processes that died: {e}"),
    }
    let mut shared = Shared::new(
        runtime.clone(),
        settings.clone(),
        authz.clone(),
        options.content_root.clone(),
        options.ssh_accept_new_host_keys,
    );
    shared.deploys = Deploys::new(options.max_deploys, options.deploy_idle_timeout);
    let service = Containerz::new(shared);
    let shared = service.shared();
    if !options.janitor_interval.is_zero() {
        tokio::spawn(run_janitor(
            runtime.clone(),
            settings.clone(),
            options.janitor_interval,
        ));
    }
    spawn_supervisor(runtime.clone(), settings.clone());
    spawn_health_monitors(runtime, settings);

    let tcp = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let tls_handle = TlsHandle::new(&tls);
    spawn_reloader(
        hangup,
        options.tls.clone(),
        options.authz.clone(),
        tls_handle.clone(),
        authz,
    );
    // Tests and scripts wait for this line (the port is known even when 0 was asked for).
    eprintln!("tpcm serve: listening on {local}");
    tracing::info!(%local, "gNOI containerz listening");
    let stopping = {
        let shared = shared.clone();
        async move {
            shutdown().await;
            // Followed logs never end by themselves; the graceful stop waits for every stream.
            shared.shutdown.cancel();
        }
    };
    let calls = Calls::new();
    let incoming = listener::incoming(tcp, options.connections, tls_handle, calls.clone());
    let served = Server::builder()
        // A client that vanished without closing (a switch rebooting, a cable pulled) is
        // noticed, so its streams end and free what they hold.
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        // HTTP/2's default 64 KiB windows make a Deploy wait for a window update every 64 KiB;
        // windows of a few chunks let the client stream at disk speed.
        .initial_stream_window_size(Some(super::FLOW_WINDOW))
        .initial_connection_window_size(Some(2 * super::FLOW_WINDOW))
        // Clients may send a Deploy chunk in a few large HTTP/2 frames instead of 64 of 16 KiB.
        .max_frame_size(Some(MAX_FRAME))
        .add_service(Tracked::new(service.into_server(), calls))
        .serve_with_incoming_shutdown(incoming, stopping)
        .await
        .map_err(|e| format!("gRPC server: {e}"));
    // Asynchronous updates still running are finished (or rolled back) before the process ends.
    let _all_done = shared.updates_running.write().await;
    served
}

/// On each SIGHUP, builds the TLS settings and the authz from their files again and puts them
/// in place together; if any file is wrong, says so and keeps what is in use. Open connections
/// and their calls (followed logs) go on.
fn spawn_reloader(
    mut hangup: tokio::signal::unix::Signal,
    files: TlsFiles,
    authz_file: PathBuf,
    tls: TlsHandle,
    authz: Authz,
) {
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reload(&files, &authz_file, &tls, &authz) {
                Ok(()) => tracing::info!("reloaded the TLS certificates, the client CRLs and the authz file"),
                Err(e) => tracing::warn!("reload failed, the settings in use stay: {e}"),
            }
        }
    });
}

fn reload(files: &TlsFiles, authz_file: &Path, tls: &TlsHandle, authz: &Authz) -> Result<(), String> {
    let new_tls = files.load()?;
    let new_authz = Authz::load(authz_file)?.with_verifier(new_tls.verifier.clone());
    tls.replace(&new_tls);
    authz.replace(new_authz);
    Ok(())
}

/// Raises the soft limit on open files to `need` (and the hard one, which root may); short of
/// that, to the hard limit, with a warning naming the setting that bounds it.
fn raise_open_files(need: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= need {
        return;
    }
    let raised = if hard >= need {
        setrlimit(Resource::RLIMIT_NOFILE, need, hard).map(|()| need)
    } else {
        setrlimit(Resource::RLIMIT_NOFILE, need, need)
            .map(|()| need)
            .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map(|()| hard))
    };
    match raised {
        Ok(n) if n >= need => tracing::info!("open files limit raised from {soft} to {n}"),
        Ok(n) => tracing::warn!(
            "open files limit raised from {soft} to {n} only; {need} are wanted for max_connections: \
             raise LimitNOFILE= or lower max_connections"
        ),
        Err(e) => tracing::warn!("cannot raise the open files limit from {soft} to {need}: {e}"),
    }
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("tpcm serve: stopping (containers keep running)");
}

/// The janitor: a sweep every `interval`, on a blocking thread (the manager's I/O blocks).
async fn run_janitor<R: Runtime + 'static>(runtime: R, settings: Settings, interval: Duration) {
    let runtime = Arc::new(runtime);
    let mut suspects = Suspects::new(false);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (rt, st) = (runtime.clone(), settings.clone());
        let handle = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || {
            let outcome = handle.block_on(janitor::sweep(rt.as_ref(), &st, &mut suspects));
            (outcome, suspects)
        })
        .await;
        match result {
            Ok((outcome, s)) => {
                suspects = s;
                match outcome {
                    Ok(sweep) if sweep.is_empty() => {}
                    Ok(sweep) => tracing::info!(
                        ?sweep.containers,
                        ?sweep.images,
                        ?sweep.networks,
                        "janitor sweep"
                    ),
                    Err(e) => tracing::warn!("janitor: {e}"),
                }
            }
            Err(e) => {
                tracing::warn!("janitor thread failed: {e}");
                suspects = Suspects::new(false);
            }
        }
    }
}

/// The restart supervisor: exits from containerd's event stream (re-subscribed when it
/// breaks) are handled one at a time on one blocking thread.
fn spawn_supervisor<R: Runtime + Clone + 'static>(runtime: R, settings: Settings) {
    let supervisor = Arc::new(Supervisor::default());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, u32)>(64);
    // Each exit is handled on its own blocking thread (the manager's I/O blocks), so a TPC
    // whose lock is held by a long upgrade delays no other TPC's restart.
    let handle = {
        let (runtime, settings, supervisor) = (runtime.clone(), settings.clone(), supervisor.clone());
        move |id: String, code: u32| {
            let (runtime, settings, supervisor) = (runtime.clone(), settings.clone(), supervisor.clone());
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = rt.block_on(supervisor.on_exit(&runtime, &settings, &id, code)) {
                    tracing::warn!(container = %id, "restart supervisor: {e}");
                }
            });
        }
    };
    let catch_up = {
        let (runtime, settings, handle) = (runtime.clone(), settings.clone(), handle.clone());
        move || {
            let (runtime, settings, handle) = (runtime.clone(), settings.clone(), handle.clone());
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(
                move || match rt.block_on(supervise::exited(&runtime, &settings)) {
                    Ok(missed) => missed.into_iter().for_each(|(id, code)| handle(id, code)),
                    Err(e) => tracing::warn!("restart supervisor: cannot list exited containers: {e}"),
                },
            );
        }
    };
    tokio::spawn(async move {
        loop {
            let (subscribed, watching) = tokio::sync::oneshot::channel();
            let catch_up = catch_up.clone();
            // Exits from before the subscription (the server was down, or the stream broke)
            // are looked up once it stands; one reported twice finds its container running.
            tokio::spawn(async move {
                if watching.await.is_ok() {
                    catch_up();
                }
            });
            if let Err(e) = runtime.watch_exits(tx.clone(), subscribed).await {
                tracing::warn!("restart supervisor: {e}; subscribing again");
            }
            tokio::time::sleep(RESUBSCRIBE).await;
        }
    });
    tokio::spawn(async move {
        while let Some((id, code)) = rx.recv().await {
            handle(id, code);
        }
    });
}

/// How often the server looks for running TPCs whose health check nobody runs.
const HEALTH_SCAN: Duration = Duration::from_secs(1);

/// Health checks where systemd does not run the TPC units (whose `unit-run` runs them
/// otherwise; see `manager::health`): one monitor per running container process with a check,
/// each on a blocking thread of its own (probes exec into the container).
fn spawn_health_monitors<R: Runtime + Clone + 'static>(runtime: R, settings: Settings) {
    if crate::systemd::systemd_is_running() {
        return;
    }
    let watched = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<(String, u32)>::new(),
    ));
    tokio::spawn(async move {
        loop {
            let store = crate::manager::store::Store::new(&settings.root);
            for record in store.list().unwrap_or_default() {
                if record.health().is_none() {
                    continue;
                }
                let Ok(crate::runtime::ContainerState::Running { pid }) =
                    runtime.container_state(&record.name).await
                else {
                    continue;
                };
                let key = (record.name.clone(), pid);
                if !watched.lock().expect("monitors").insert(key.clone()) {
                    continue;
                }
                let (runtime, settings, watched) = (runtime.clone(), settings.clone(), watched.clone());
                let rt = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    rt.block_on(crate::manager::health::monitor(&runtime, &settings, &key.0, pid));
                    watched.lock().expect("monitors").remove(&key);
                });
            }
            tokio::time::sleep(HEALTH_SCAN).await;
        }
    });
}
