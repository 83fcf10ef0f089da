//! A bench for unit tests of the manager's decisions: private store, data and unit directories
//! in a temp dir, and the recording [`FakeRuntime`] in place of containerd.

use super::store::{Store, TpcRecord};
use super::tpc::{self, InstallRequest, RequestedSettings};
use super::upgrade::{self, UpgradeOutcome, UpgradeRequest};
use super::{Error, ImageSource, Progress};
use crate::config::Settings;
use crate::runtime::fake::FakeRuntime;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Progress nobody watches.
pub(super) struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A store and a fake runtime.
pub(super) struct Bench {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub runtime: FakeRuntime,
}

impl Bench {
    pub fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            containerd: dir.path().join("containerd.sock"),
            namespace: "test".into(),
            root: dir.path().join("store"),
            data_root: dir.path().join("data"),
            systemd_dir: dir.path().join("units"),
            binary: Some("/usr/bin/tpcm".into()),
            plugin_sockets: dir.path().join("plugins"),
        };
        Bench {
            dir,
            settings,
            runtime: FakeRuntime::new(),
        }
    }

    pub fn store(&self) -> Store {
        Store::new(&self.settings.root)
    }

    pub fn record(&self, name: &str) -> TpcRecord {
        self.store().get(name).unwrap().expect("the TPC has a record")
    }

    /// An archive file (the fake ignores its bytes) that imports as `image` at `digest`.
    pub fn archive(&self, image: &str, digest: &str) -> ImageSource {
        let path: PathBuf = self.dir.path().join(format!("{}.tar", digest.replace(':', "-")));
        std::fs::write(&path, b"").unwrap();
        self.runtime.will_import(image, digest);
        ImageSource::File(path)
    }

    /// Installs TPC `name` from an archive of `image` at `digest`, with `args`.
    pub async fn install(&self, name: &str, image: &str, digest: &str, args: &str) -> TpcRecord {
        let source = self.archive(image, digest);
        let request = InstallRequest {
            source: &source,
            settings: RequestedSettings::from_args(args).unwrap(),
            plugin: None,
        };
        tpc::install(
            &self.runtime,
            &self.settings,
            name,
            &request,
            Arc::new(Silent),
            &|_| {},
        )
        .await
        .unwrap()
    }

    /// Upgrades TPC `name` to an archive of `image` at `digest`, keeping its settings, with no
    /// grace time.
    pub async fn upgrade(&self, name: &str, image: &str, digest: &str) -> Result<UpgradeOutcome, Error> {
        let source = self.archive(image, digest);
        self.upgrade_from(name, &source, None).await
    }

    pub async fn upgrade_from(
        &self,
        name: &str,
        source: &ImageSource,
        settings: Option<RequestedSettings>,
    ) -> Result<UpgradeOutcome, Error> {
        let request = UpgradeRequest {
            source,
            settings,
            skip_data: false,
            grace: Duration::ZERO,
            hook_timeout: Duration::from_secs(5),
        };
        upgrade::upgrade(
            &self.runtime,
            &self.settings,
            name,
            &request,
            Arc::new(Silent),
            &|_| {},
        )
        .await
    }
}
