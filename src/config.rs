//! Where tpcm keeps things, per design §3: every location has a default for a SONiC switch and an
//! environment override, so tests and the demo run against private directories and sockets.

use std::path::PathBuf;

/// Default containerd socket on a SONiC switch.
pub const DEFAULT_CONTAINERD: &str = "/run/containerd/containerd.sock";
/// containerd namespace that holds every TPC, so operators find them with `ctr -n tpcm`.
pub const DEFAULT_NAMESPACE: &str = "tpcm";
/// TPCM store: state, generated units, shared volume, migration exports, journal. Lives under
/// `/host` because that survives a SONiC image upgrade.
pub const DEFAULT_ROOT: &str = "/host/tpcm";
/// Per-TPC private data, mounted at `/tpc` in each container.
pub const DEFAULT_DATA_ROOT: &str = "/host/tpc";
/// Where per-TPC systemd units are installed.
pub const DEFAULT_SYSTEMD_DIR: &str = "/etc/systemd/system";
/// Where gNOI plugins' socket directories go on the host (`<dir>/<plugin id>/`, seen as
/// `/run/docker/plugins` inside the plugin): docker's place.
pub const DEFAULT_PLUGIN_SOCKETS: &str = "/run/docker/plugins";
/// The tpcm binary the per-TPC units run, where the package installs it. Units never name the
/// binary that happened to run `install`: it may move, and a unit naming it would fail at boot.
pub const DEFAULT_BINARY: &str = "/usr/bin/tpcm";

/// The resolved locations one tpcm invocation works with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// containerd's gRPC socket.
    pub containerd: PathBuf,
    /// containerd namespace for all tpcm objects.
    pub namespace: String,
    /// The TPCM store.
    pub root: PathBuf,
    /// Root of the per-TPC data directories.
    pub data_root: PathBuf,
    /// systemd unit directory.
    pub systemd_dir: PathBuf,
    /// The tpcm binary the per-TPC units run (`TPCM_BINARY`); `None`: `tpcm_binary` in
    /// tpcm.toml, else [`DEFAULT_BINARY`].
    pub binary: Option<PathBuf>,
    /// Where plugins' socket directories go on the host (`TPCM_PLUGIN_SOCKETS`).
    pub plugin_sockets: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            containerd: DEFAULT_CONTAINERD.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            root: DEFAULT_ROOT.into(),
            data_root: DEFAULT_DATA_ROOT.into(),
            systemd_dir: DEFAULT_SYSTEMD_DIR.into(),
            binary: None,
            plugin_sockets: DEFAULT_PLUGIN_SOCKETS.into(),
        }
    }
}

/// Name of the operator's settings file inside the TPCM store.
pub const CONFIG_FILE: &str = "tpcm.toml";

/// What an operator may change in `<TPCM store>/tpcm.toml` (kept under `/host`, so it survives a
/// SONiC image upgrade). Every key is optional; an unknown key is an error, so a typo is noticed.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Share of the host's CPU capacity a TPC gets unless its `--cpus` says otherwise
    /// (0 < share ≤ 1; default 0.2).
    pub default_cpu_share: Option<f64>,
    /// Registries (`host[:port]`, as in image references) that may be reached over plain HTTP
    /// when HTTPS fails. Loopback registries always may, as docker allows.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Longest wait, in seconds, for any single read from a download, registry or SSH server
    /// (default 60). Connections wait at most 30 s, or this if shorter.
    pub network_timeout_secs: Option<u64>,
    /// How long, in seconds, a new version must stay up (and pass its health check within) before
    /// `tpcm upgrade` keeps it (default 10; `--grace` overrides).
    pub upgrade_grace_secs: Option<u64>,
    /// Longest run, in seconds, of an upgrade hook (default 300).
    pub hook_timeout_secs: Option<u64>,
    /// IPv4 subnet (`a.b.c.d/n`, n from 8 to 30) that bridged TPCs (those publishing ports) get
    /// their addresses from; the bridge takes its first address. Default 10.213.0.0/16. Change it
    /// when that range is in use on the switch's networks.
    pub bridge_subnet: Option<String>,
    /// The tpcm binary the per-TPC units run (default /usr/bin/tpcm; `TPCM_BINARY` overrides).
    /// `tpcm boot` rewrites units that name another.
    pub tpcm_binary: Option<PathBuf>,
    /// Network device downloads (http(s), scp, sftp, registry pulls; also gNOI remote
    /// downloads) leave through: a VRF such as `mgmt` (SO_BINDTODEVICE), or any interface. The
    /// CLI's `--source-vrf` and a Deploy's `source_vrf` override it. Default: the routing table's
    /// choice.
    pub source_vrf: Option<String>,
    /// Local address downloads leave from (one of this host's); `--source-address` and a
    /// Deploy's `source_address` override it.
    pub source_address: Option<String>,
    /// `tpcm serve` (gNOI containerz) settings; its flags override them.
    pub serve: Option<ServeConfig>,
    /// `tpcm client` settings; its flags override them.
    pub client: Option<ClientConfig>,
}

/// `[client]` in tpcm.toml: the devices `tpcm client` talks to and its TLS files.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `host:port` of each device's containerz server.
    #[serde(default)]
    pub targets: Vec<String>,
    /// CA certificate (PEM) the devices' certificates chain to.
    pub ca_cert: Option<PathBuf>,
    /// This client's certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// `[serve]` in tpcm.toml: the gNOI server's settings (see `tpcm serve --help`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `address:port` to listen on.
    pub listen: Option<String>,
    /// Server certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA that signs client certificates (PEM).
    pub client_ca: Option<PathBuf>,
    /// Authz file: identities to scopes.
    pub authz: Option<PathBuf>,
    /// Seconds between janitor sweeps (0: off).
    pub janitor_interval_secs: Option<u64>,
    /// containerd's root directory (Deploy's free-space check).
    pub content_root: Option<PathBuf>,
    /// Whether remote SFTP/SCP downloads trust (and record) an SSH host key they have not seen;
    /// default false: only keys in `<store>/known_hosts` are trusted.
    pub ssh_accept_new_host_keys: Option<bool>,
    /// CRLs (PEM) of the client CA: a revoked client certificate fails the handshake.
    pub client_crl: Option<PathBuf>,
    /// Seconds a client has to finish its TLS handshake (default 5).
    pub handshake_timeout_secs: Option<u64>,
    /// Open connections at most (default 256).
    pub max_connections: Option<usize>,
    /// Open connections from one client address at most (default 16).
    pub max_connections_per_address: Option<usize>,
    /// Seconds a connection may go without a call before it is closed (default 900; 0: never).
    pub connection_idle_timeout_secs: Option<u64>,
    /// Deploys in flight at most (default 4).
    pub max_deploys: Option<usize>,
    /// Seconds a Deploy's client may send or read nothing before the Deploy is cancelled
    /// (default 60).
    pub deploy_idle_timeout_secs: Option<u64>,
}

impl Settings {
    /// The tpcm binary the per-TPC units run.
    pub fn unit_binary(&self) -> Result<PathBuf, String> {
        if let Some(b) = &self.binary {
            return Ok(b.clone());
        }
        Ok(FileConfig::load(&self.root)?
            .tpcm_binary
            .unwrap_or_else(|| DEFAULT_BINARY.into()))
    }
}

impl FileConfig {
    /// Reads `<root>/tpcm.toml`; a missing file means all defaults.
    pub fn load(root: &std::path::Path) -> Result<FileConfig, String> {
        let path = root.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(format!(
                    "cannot read {}: permission denied (run tpcm as root)",
                    path.display()
                ));
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let config: FileConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        if let Some(share) = config.default_cpu_share
            && !(share > 0.0 && share <= 1.0)
        {
            return Err(format!(
                "{}: default_cpu_share must be more than 0 and at most 1",
                path.display()
            ));
        }
        if let Some(subnet) = &config.bridge_subnet {
            check_subnet(subnet)
                .map_err(|why| format!("{}: bridge_subnet {subnet:?} {why}", path.display()))?;
        }
        if let Some(b) = &config.tpcm_binary
            && !b.is_absolute()
        {
            return Err(format!(
                "{}: tpcm_binary {:?} is not an absolute path",
                path.display(),
                b
            ));
        }
        if let Some(address) = &config.source_address
            && address.parse::<std::net::IpAddr>().is_err()
        {
            return Err(format!(
                "{}: source_address {address:?} is not an IP address",
                path.display()
            ));
        }
        if config.network_timeout_secs == Some(0) {
            return Err(format!(
                "{}: network_timeout_secs must be at least 1",
                path.display()
            ));
        }
        // Timeouts beyond a day are typos (seconds taken for milliseconds) that would wedge a
        // command or an upgrade for as long.
        for (key, value, max) in [
            (
                "network_timeout_secs",
                config.network_timeout_secs,
                MAX_TIMEOUT_SECS,
            ),
            ("upgrade_grace_secs", config.upgrade_grace_secs, MAX_TIMEOUT_SECS),
            ("hook_timeout_secs", config.hook_timeout_secs, MAX_TIMEOUT_SECS),
            (
                "serve.janitor_interval_secs",
                config.serve.as_ref().and_then(|s| s.janitor_interval_secs),
                MAX_TIMEOUT_SECS,
            ),
            (
                "serve.handshake_timeout_secs",
                config.serve.as_ref().and_then(|s| s.handshake_timeout_secs),
                MAX_TIMEOUT_SECS,
            ),
            (
                "serve.connection_idle_timeout_secs",
                config.serve.as_ref().and_then(|s| s.connection_idle_timeout_secs),
                MAX_TIMEOUT_SECS,
            ),
            (
                "serve.deploy_idle_timeout_secs",
                config.serve.as_ref().and_then(|s| s.deploy_idle_timeout_secs),
                MAX_TIMEOUT_SECS,
            ),
        ] {
            if let Some(v) = value
                && v > max
            {
                return Err(format!(
                    "{}: {key} = {v} is more than a day ({max} s); give seconds",
                    path.display()
                ));
            }
        }
        Ok(config)
    }

    /// The network timeouts this config asks for.
    pub fn timeouts(&self) -> crate::source::Timeouts {
        let default = crate::source::Timeouts::default();
        match self.network_timeout_secs {
            Some(secs) => {
                let idle = std::time::Duration::from_secs(secs);
                crate::source::Timeouts {
                    connect: default.connect.min(idle),
                    idle,
                }
            }
            None => default,
        }
    }

    /// Where a download leaves from: `device` and `address` as given (a CLI flag, a Deploy's
    /// field), each else this file's `source_vrf` / `source_address`; checked as
    /// [`Egress::new`](crate::source::Egress::new) says. An error caused by this file's values
    /// says so.
    pub fn egress(
        &self,
        device: Option<&str>,
        address: Option<&str>,
    ) -> Result<crate::source::Egress, String> {
        use crate::source::Egress;
        let given = Egress::new(device, address)?;
        let device_default = device.is_none() && self.source_vrf.is_some();
        let address_default = address.is_none() && self.source_address.is_some();
        if !device_default && !address_default {
            return Ok(given);
        }
        Egress::new(
            device.or(self.source_vrf.as_deref()),
            address.or(self.source_address.as_deref()),
        )
        .map_err(|e| format!("{e} (from source_vrf / source_address in {CONFIG_FILE})"))
    }
}

/// Longest timeout or interval `tpcm.toml` accepts: a day.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// Checks an IPv4 subnet in CIDR form that CNI's host-local can hand addresses out of, and
/// that is not a range a bridge must never take (loopback, "this network", link-local,
/// multicast and reserved).
fn check_subnet(subnet: &str) -> Result<(), String> {
    let net: ipnet::Ipv4Net = subnet.parse().map_err(|_| "is not a.b.c.d/n".to_string())?;
    if !(8..=30).contains(&net.prefix_len()) {
        return Err("needs a prefix length from 8 to 30".into());
    }
    for (range, what) in [
        ("127.0.0.0/8", "loopback"),
        ("0.0.0.0/8", "\"this network\""),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    ] {
        let range: ipnet::Ipv4Net = range.parse().expect("a network");
        if range.contains(&net.network()) || net.contains(&range.network()) {
            return Err(format!(
                "overlaps the {what} range {range}; use a private range such as 10.213.0.0/16"
            ));
        }
    }
    if net.trunc() != net {
        return Err(format!(
            "is not a network address (did you mean {}?)",
            net.trunc()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_is_optional_strict_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FileConfig::load(dir.path()).unwrap(), FileConfig::default());
        std::fs::write(dir.path().join(CONFIG_FILE), "default_cpu_share = 0.5\n").unwrap();
        assert_eq!(FileConfig::load(dir.path()).unwrap().default_cpu_share, Some(0.5));
        std::fs::write(dir.path().join(CONFIG_FILE), "default_cpu_shares = 0.5\n").unwrap();
        assert!(FileConfig::load(dir.path()).unwrap_err().contains("tpcm.toml"));
        std::fs::write(dir.path().join(CONFIG_FILE), "default_cpu_share = 2.0\n").unwrap();
        assert!(FileConfig::load(dir.path()).unwrap_err().contains("at most 1"));
    }

    #[test]
    fn the_bridge_subnet_must_be_an_ipv4_network_hosts_can_be_given_from() {
        let dir = tempfile::tempdir().unwrap();
        let load = |value: &str| {
            std::fs::write(
                dir.path().join(CONFIG_FILE),
                format!("bridge_subnet = {value:?}\n"),
            )
            .unwrap();
            FileConfig::load(dir.path())
        };
        assert_eq!(
            load("10.214.7.0/24").unwrap().bridge_subnet.as_deref(),
            Some("10.214.7.0/24")
        );
        assert!(
            load("10.214.7.5/24")
                .unwrap_err()
                .contains("did you mean 10.214.7.0/24")
        );
        assert!(load("10.214.7.0/31").unwrap_err().contains("from 8 to 30"));
        assert!(load("10.214.7.0").unwrap_err().contains("a.b.c.d/n"));
        assert!(load("fd00::/64").unwrap_err().contains("bridge_subnet"));
        for (risky, what) in [
            ("127.0.0.0/16", "loopback"),
            ("0.0.0.0/8", "this network"),
            ("169.254.0.0/24", "link-local"),
            ("224.1.0.0/16", "multicast"),
            ("240.0.0.0/8", "reserved"),
        ] {
            let e = load(risky).unwrap_err();
            assert!(e.contains(what), "{risky}: {e}");
        }
    }

    #[test]
    fn the_source_vrf_and_address_default_to_the_file_and_give_way_to_what_is_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "source_vrf = \"lo\"\nsource_address = \"127.0.0.1\"\n",
        )
        .unwrap();
        let config = FileConfig::load(dir.path()).unwrap();
        let egress = config.egress(None, None).unwrap();
        assert_eq!(egress.device(), Some("lo"));
        assert_eq!(egress.address(), Some("127.0.0.1".parse().unwrap()));
        // A given value that is wrong is named as given, not blamed on the file.
        let err = config.egress(Some("tpcm-no-dev"), None).unwrap_err();
        assert!(err.contains("tpcm-no-dev") && !err.contains(CONFIG_FILE), "{err}");
        let bad = FileConfig {
            source_vrf: Some("tpcm-no-dev".into()),
            ..FileConfig::default()
        };
        let err = bad.egress(None, None).unwrap_err();
        assert!(err.contains("tpcm-no-dev") && err.contains(CONFIG_FILE), "{err}");
        assert_eq!(bad.egress(Some("lo"), None).unwrap().device(), Some("lo"));
        std::fs::write(dir.path().join(CONFIG_FILE), "source_address = \"mgmt\"\n").unwrap();
        assert!(
            FileConfig::load(dir.path())
                .unwrap_err()
                .contains("not an IP address")
        );
    }

    #[test]
    fn network_settings_are_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            FileConfig::default().timeouts(),
            crate::source::Timeouts::default()
        );
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "network_timeout_secs = 5\ninsecure_registries = [\"reg.lab:5000\"]\n",
        )
        .unwrap();
        let config = FileConfig::load(dir.path()).unwrap();
        assert_eq!(config.insecure_registries, vec!["reg.lab:5000".to_string()]);
        let t = config.timeouts();
        assert_eq!((t.connect.as_secs(), t.idle.as_secs()), (5, 5));
        std::fs::write(dir.path().join(CONFIG_FILE), "network_timeout_secs = 0\n").unwrap();
        assert!(FileConfig::load(dir.path()).unwrap_err().contains("at least 1"));
        std::fs::write(dir.path().join(CONFIG_FILE), "hook_timeout_secs = 300000000\n").unwrap();
        assert!(
            FileConfig::load(dir.path())
                .unwrap_err()
                .contains("more than a day")
        );
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[serve]\njanitor_interval_secs = 99999999\n",
        )
        .unwrap();
        assert!(
            FileConfig::load(dir.path())
                .unwrap_err()
                .contains("janitor_interval_secs")
        );
        for key in [
            "handshake_timeout_secs",
            "connection_idle_timeout_secs",
            "deploy_idle_timeout_secs",
        ] {
            std::fs::write(
                dir.path().join(CONFIG_FILE),
                format!("[serve]\n{key} = 99999999\n"),
            )
            .unwrap();
            let err = FileConfig::load(dir.path()).unwrap_err();
            assert!(err.contains(key) && err.contains("more than a day"), "{err}");
        }
    }
}
