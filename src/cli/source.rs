//! The source options `install`, `upgrade` and `image import` share, and the questions they may
//! ask on a terminal (host key, password). Without a terminal nothing is asked: `-y` accepts an
//! unknown host key, a missing password is an error.

use crate::config::{FileConfig, Settings};
use crate::manager::ImageSource;
use crate::source::registry::RegistryRequest;
use crate::source::ssh::{SshProtocol, SshRequest, UnknownHostKey};
use clap::{Args, ValueEnum};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// `--protocol` values.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub(super) enum Protocol {
    /// OpenSSH scp.
    Scp,
    /// SSH file transfer protocol.
    Sftp,
}

/// Where the image comes from, beyond its location.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct SourceArgs {
    /// Fetch the archive over scp or sftp from --server; the location is the remote path.
    #[arg(long, value_enum, requires_all = ["server", "username"])]
    protocol: Option<Protocol>,
    /// SSH server: host or host:port.
    #[arg(long, requires = "protocol")]
    server: Option<String>,
    /// User name on the SSH server or the registry.
    #[arg(long)]
    username: Option<String>,
    /// Password; when needed and not given, it is asked on the terminal (never echoed).
    #[arg(long, requires = "username")]
    password: Option<String>,
    /// Private key file for SSH (default: the user's ~/.ssh/id_ed25519, id_ecdsa, id_rsa).
    #[arg(long, requires = "protocol")]
    identity: Option<PathBuf>,
    /// Network device the download leaves through: a VRF such as mgmt, or an interface
    /// (default: source_vrf in tpcm.toml, else the routing table's choice).
    #[arg(long, value_name = "DEV")]
    source_vrf: Option<String>,
    /// Local address the download leaves from (default: source_address in tpcm.toml).
    #[arg(long, value_name = "ADDR")]
    source_address: Option<String>,
}

impl SourceArgs {
    /// Where a download leaves from: these options, else tpcm.toml's defaults; checked.
    fn egress(&self, config: &FileConfig) -> Result<crate::source::Egress, String> {
        config.egress(self.source_vrf.as_deref(), self.source_address.as_deref())
    }
}

/// The known_hosts files an SSH source checks: the user's, then the TPCM store's, where keys
/// accepted by tpcm are recorded (it survives a SONiC image upgrade).
fn known_hosts(settings: &Settings) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(home) = std::env::home_dir() {
        files.push(home.join(".ssh").join("known_hosts"));
    }
    files.push(settings.root.join("known_hosts"));
    files
}

fn ask_password(prompt: &str) -> Result<String, String> {
    if !std::io::stdin().is_terminal() {
        return Err("a password is needed and there is no terminal to ask on; give --password".into());
    }
    rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the password: {e}"))
}

/// Accepts an unknown host key with `-y` (saying so), asks on a terminal, refuses otherwise.
fn host_key_policy(yes: bool) -> impl Fn(&UnknownHostKey) -> bool + Send + Sync {
    move |key: &UnknownHostKey| {
        let shown = format!(
            "host {} has an unknown {} key {}",
            key.host, key.algorithm, key.fingerprint
        );
        if yes {
            eprintln!("Accepting and recording: {shown}");
            return true;
        }
        if !std::io::stdin().is_terminal() {
            return false;
        }
        eprint!("The {shown}. Trust it and record it? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
    }
}

/// Builds the image source from a location and the source options.
pub(super) fn image_source(
    location: &str,
    args: &SourceArgs,
    yes: bool,
    settings: &Settings,
) -> Result<ImageSource, String> {
    let config = FileConfig::load(&settings.root)?;
    if let Some(protocol) = args.protocol {
        let (server, username) = match (&args.server, &args.username) {
            (Some(s), Some(u)) => (s.clone(), u.clone()),
            _ => return Err("--protocol needs --server and --username".into()),
        };
        crate::source::ssh::parse_server(&server)?;
        return Ok(ImageSource::Ssh(SshRequest {
            protocol: match protocol {
                Protocol::Scp => SshProtocol::Scp,
                Protocol::Sftp => SshProtocol::Sftp,
            },
            server,
            username,
            password: args.password.clone(),
            identity: args.identity.clone(),
            path: location.to_string(),
            known_hosts: known_hosts(settings),
            accept_host_key: Arc::new(host_key_policy(yes)),
            ask_password: Some(Arc::new(ask_password)),
            timeouts: config.timeouts(),
            egress: args.egress(&config)?,
        }));
    }
    let registry = RegistryRequest {
        reference: String::new(),
        credentials: None,
        timeouts: config.timeouts(),
        insecure_registries: config.insecure_registries.clone(),
        // Set below, for the sources that download: a local file ignores tpcm.toml's default.
        egress: Default::default(),
    };
    let source = ImageSource::infer(location, registry).map_err(|e| e.to_string())?;
    match source {
        ImageSource::Registry(mut request) => {
            // Checked before a password is asked for.
            request.egress = args.egress(&config)?;
            if let Some(user) = &args.username {
                let password = match &args.password {
                    Some(p) => p.clone(),
                    None => ask_password(&format!("Password for {user} at {}: ", request.reference))?,
                };
                request.credentials = Some((user.clone(), password));
            }
            Ok(ImageSource::Registry(request))
        }
        ImageSource::Http {
            url, timeouts, login, ..
        } if args.username.is_none() => Ok(ImageSource::Http {
            url,
            timeouts,
            login,
            egress: args.egress(&config)?,
        }),
        other if args.username.is_some() => Err(format!(
            "--username applies to scp, sftp and registry sources, not to {}",
            other.describe()
        )),
        other if args.source_vrf.is_some() || args.source_address.is_some() => Err(format!(
            "--source-vrf and --source-address apply to downloads (http(s), scp, sftp, registry), not to {}",
            other.describe()
        )),
        other => Ok(other),
    }
}
