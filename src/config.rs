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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            containerd: DEFAULT_CONTAINERD.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            root: DEFAULT_ROOT.into(),
            data_root: DEFAULT_DATA_ROOT.into(),
            systemd_dir: DEFAULT_SYSTEMD_DIR.into(),
        }
    }
}
