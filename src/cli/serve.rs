//! `tpcm serve` (the gNOI containerz server) and `tpcm janitor` (one janitor sweep).
//! Every serve option can also be set under `[serve]` in the TPCM config file; a flag wins.

use crate::config::{FileConfig, Settings};
use crate::containerz::serve::{self, ServeOptions};
use crate::manager::janitor::{self, Suspects};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// `tpcm serve` options.
#[derive(Args, Debug)]
pub(super) struct Serve {
    /// Address and port to listen on (default [::]:9339).
    #[arg(long)]
    listen: Option<String>,
    /// The server's TLS certificate chain (PEM).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The server's TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that signs the client certificates; clients without one are refused.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Authz file (TOML) mapping client identities (certificate CN or DNS SAN) to read/write scopes.
    #[arg(long)]
    authz: Option<PathBuf>,
    /// Seconds between janitor sweeps (default 3600; 0 turns the janitor off).
    #[arg(long)]
    janitor_interval: Option<u64>,
    /// containerd's root directory, whose free space Deploy checks (default /var/lib/containerd).
    #[arg(long)]
    content_root: Option<PathBuf>,
    /// CRLs (PEM) of the client CA; a revoked client certificate fails the handshake. Re-read,
    /// with the certificates and the authz file, on SIGHUP.
    #[arg(long)]
    client_crl: Option<PathBuf>,
    /// Seconds a client has to finish its TLS handshake (default 5).
    #[arg(long, value_name = "SECS")]
    handshake_timeout: Option<u64>,
    /// Open connections at most; more are closed before their handshake (default 256).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Open connections from one client address at most (default 16).
    #[arg(long, value_name = "N")]
    max_connections_per_address: Option<usize>,
    /// Seconds a connection may go without a call before it is closed (default 900; 0: never).
    #[arg(long, value_name = "SECS")]
    connection_idle_timeout: Option<u64>,
    /// Deploys in flight at most; more get RESOURCE_EXHAUSTED (default 4).
    #[arg(long, value_name = "N")]
    max_deploys: Option<usize>,
    /// Seconds a Deploy's client may send or read nothing before the Deploy is cancelled and
    /// what it wrote removed (default 60).
    #[arg(long, value_name = "SECS")]
    deploy_idle_timeout: Option<u64>,
}

/// `tpcm janitor` options.
#[derive(Args, Debug)]
pub(super) struct Janitor {
    /// Print what was removed as JSON.
    #[arg(long)]
    json: bool,
}

fn required(flag: Option<PathBuf>, file: Option<PathBuf>, name: &str) -> Result<PathBuf, String> {
    flag.or(file).ok_or_else(|| {
        format!(
            "tpcm serve needs --{name} (or {} under [serve] in tpcm.toml)",
            name.replace('-', "_")
        )
    })
}

/// A count or a time that must be at least 1: from the flag, else the key, else `default`.
fn positive<T: Copy + PartialOrd + From<u8>>(
    flag: Option<T>,
    key: Option<T>,
    name: &str,
    default: T,
) -> Result<T, String> {
    let value = flag.or(key).unwrap_or(default);
    if value < T::from(1) {
        return Err(format!(
            "tpcm serve: --{name} ({} under [serve] in tpcm.toml) must be at least 1",
            key_name(name)
        ));
    }
    Ok(value)
}

/// The `[serve]` key of a flag: underscores, and the time keys end in `_secs`.
fn key_name(flag: &str) -> String {
    let key = flag.replace('-', "_");
    if key.ends_with("timeout") {
        format!("{key}_secs")
    } else {
        key
    }
}

pub(super) async fn serve(cmd: Serve, settings: &Settings) -> Result<(), String> {
    let file = FileConfig::load(&settings.root)?.serve.unwrap_or_default();
    let listen = cmd
        .listen
        .or(file.listen)
        .unwrap_or_else(|| serve::DEFAULT_LISTEN.to_string());
    let options = ServeOptions {
        listen: listen
            .parse()
            .map_err(|e| format!("--listen {listen:?}: {e} (use address:port, e.g. 127.0.0.1:9339)"))?,
        tls: serve::TlsFiles {
            cert: required(cmd.tls_cert, file.tls_cert, "tls-cert")?,
            key: required(cmd.tls_key, file.tls_key, "tls-key")?,
            client_ca: required(cmd.client_ca, file.client_ca, "client-ca")?,
            client_crl: cmd.client_crl.or(file.client_crl),
        },
        authz: required(cmd.authz, file.authz, "authz")?,
        janitor_interval: cmd
            .janitor_interval
            .or(file.janitor_interval_secs)
            .map(Duration::from_secs)
            .unwrap_or(serve::DEFAULT_JANITOR_INTERVAL),
        content_root: cmd
            .content_root
            .or(file.content_root)
            .unwrap_or_else(|| serve::DEFAULT_CONTENT_ROOT.into()),
        ssh_accept_new_host_keys: file.ssh_accept_new_host_keys.unwrap_or(false),
        connections: serve::ConnectionLimits {
            handshake_timeout: Duration::from_secs(positive(
                cmd.handshake_timeout,
                file.handshake_timeout_secs,
                "handshake-timeout",
                serve::DEFAULT_HANDSHAKE_TIMEOUT.as_secs(),
            )?),
            max_connections: positive(
                cmd.max_connections,
                file.max_connections,
                "max-connections",
                serve::DEFAULT_MAX_CONNECTIONS,
            )?,
            max_per_address: positive(
                cmd.max_connections_per_address,
                file.max_connections_per_address,
                "max-connections-per-address",
                serve::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            )?,
            idle_timeout: match cmd.connection_idle_timeout.or(file.connection_idle_timeout_secs) {
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
                None => Some(serve::DEFAULT_IDLE_TIMEOUT),
            },
        },
        max_deploys: positive(
            cmd.max_deploys,
            file.max_deploys,
            "max-deploys",
            serve::DEFAULT_MAX_DEPLOYS,
        )?,
        deploy_idle_timeout: Duration::from_secs(positive(
            cmd.deploy_idle_timeout,
            file.deploy_idle_timeout_secs,
            "deploy-idle-timeout",
            serve::DEFAULT_DEPLOY_IDLE_TIMEOUT.as_secs(),
        )?),
    };
    let runtime = super::connect(settings).await?;
    serve::serve(runtime, settings.clone(), options).await
}

pub(super) async fn janitor(cmd: Janitor, settings: &Settings) -> Result<(), String> {
    let runtime = super::connect(settings).await?;
    // Run by hand: what is unused now goes now.
    let sweep = janitor::sweep(&runtime, settings, &mut Suspects::new(true))
        .await
        .map_err(|e| e.to_string())?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&sweep).expect("serializes"));
        return Ok(());
    }
    if let Some(why) = &sweep.skipped {
        println!("janitor: skipped: {why}");
    }
    for c in &sweep.containers {
        println!("removed container {c}");
    }
    for i in &sweep.images {
        println!("removed image {i}");
    }
    for n in &sweep.networks {
        println!("released the network of container {n} (it is gone)");
    }
    if sweep.skipped.is_none() && sweep.is_empty() {
        println!("janitor: nothing to remove");
    }
    Ok(())
}
