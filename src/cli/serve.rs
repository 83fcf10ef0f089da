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
        tls_cert: required(cmd.tls_cert, file.tls_cert, "tls-cert")?,
        tls_key: required(cmd.tls_key, file.tls_key, "tls-key")?,
        client_ca: required(cmd.client_ca, file.client_ca, "client-ca")?,
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
    if sweep.skipped.is_none() && sweep.containers.is_empty() && sweep.images.is_empty() {
        println!("janitor: nothing to remove");
    }
    Ok(())
}
