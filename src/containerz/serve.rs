//! `tpcm serve`: the TLS gRPC server, plus the two background jobs a long-running manager owns —
//! the janitor (R-CLEAN) and the restart supervisor (restart policies from containerd's exit
//! events when systemd does not run the TPC units). Stopping the server stops neither the
//! containers nor their supervision by systemd: a restart of `tpcm serve` leaves every
//! container running (R-UPGRADE).

use super::auth::Authz;
use super::{Containerz, Shared};
use crate::config::Settings;
use crate::manager::janitor::{self, Suspects};
use crate::manager::supervise::{self, Supervisor};
use crate::runtime::Runtime;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// Default janitor period (containerz: 1 h).
pub const DEFAULT_JANITOR_INTERVAL: Duration = Duration::from_secs(3600);
/// Default listening address: gNOI's customary port on every address.
pub const DEFAULT_LISTEN: &str = "[::]:9339";
/// Where containerd keeps content on a switch (Deploy checks its free space).
pub const DEFAULT_CONTENT_ROOT: &str = "/var/lib/containerd";
/// Largest HTTP/2 frame the server accepts (the protocol's default is 16 KiB).
const MAX_FRAME: u32 = 1 << 20;
/// How often an idle connection is probed, and how long an answer may take.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before re-subscribing to containerd's events after the stream broke.
const RESUBSCRIBE: Duration = Duration::from_secs(2);

/// Everything `tpcm serve` needs, from flags and `[serve]` in tpcm.toml.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The server's certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// The server's private key (PEM).
    pub tls_key: PathBuf,
    /// The CA that signs client certificates (PEM).
    pub client_ca: PathBuf,
    /// The authz file (identities → scopes).
    pub authz: PathBuf,
    /// Janitor period; zero turns the janitor off.
    pub janitor_interval: Duration,
    /// containerd's root directory (free space for Deploy).
    pub content_root: PathBuf,
    /// Trust unknown SSH host keys on remote downloads (recording them in the store).
    pub ssh_accept_new_host_keys: bool,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve<R: Runtime + Clone + 'static>(
    runtime: R,
    settings: Settings,
    options: ServeOptions,
) -> Result<(), String> {
    let authz = Authz::load(&options.authz)?;
    let identity = Identity::from_pem(
        read(&options.tls_cert, "TLS certificate")?,
        read(&options.tls_key, "TLS key")?,
    );
    let tls = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(Certificate::from_pem(read(&options.client_ca, "client CA")?));
    let service = Containerz::new(Shared::new(
        runtime.clone(),
        settings.clone(),
        authz,
        options.content_root.clone(),
        options.ssh_accept_new_host_keys,
    ));
    let shared = service.shared();
    if !options.janitor_interval.is_zero() {
        tokio::spawn(run_janitor(
            runtime.clone(),
            settings.clone(),
            options.janitor_interval,
        ));
    }
    spawn_supervisor(runtime, settings);

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
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
    let served = Server::builder()
        // A client that vanished without closing (a switch rebooting, a cable pulled) is
        // noticed, so its streams end and free what they hold.
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // HTTP/2's default 64 KiB windows make a Deploy wait for a window update every 64 KiB;
        // windows of a few chunks let the client stream at disk speed.
        .initial_stream_window_size(Some(super::FLOW_WINDOW))
        .initial_connection_window_size(Some(2 * super::FLOW_WINDOW))
        // Clients may send a Deploy chunk in a few large HTTP/2 frames instead of 64 of 16 KiB.
        .max_frame_size(Some(MAX_FRAME))
        .tls_config(tls)
        .map_err(|e| format!("TLS configuration: {e}"))?
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), stopping)
        .await
        .map_err(|e| format!("gRPC server: {e}"));
    // Asynchronous updates still running are finished (or rolled back) before the process ends.
    let _all_done = shared.updates_running.write().await;
    served
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
                    Ok(sweep) if sweep.containers.is_empty() && sweep.images.is_empty() => {}
                    Ok(sweep) => tracing::info!(?sweep.containers, ?sweep.images, "janitor sweep"),
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
