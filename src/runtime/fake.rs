//! A recording fake of [`Runtime`], for unit tests of the manager's decisions (upgrade, rollback,
//! recovery, janitor, supervisor) without containerd. It keeps images, containers, tasks and
//! held containers in memory with the garbage-collection rules that matter to tpcm (an image's
//! content stays while a name or a container pins it), records every call, and fails the calls a
//! test asks it to fail. The real backend is tested against a real containerd by the integration
//! tests; this fake only stands in for it where the logic above is the subject.

use super::logs::LogTarget;
use super::spec::ContainerConfig;
use super::{
    ArchiveInput, ContainerState, ContainerSummary, DetachedContainer, Error, ExecResult, ImageSummary,
    ImportedImage, PulledImage, Runtime, SavedImage,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// A container as the fake keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FakeContainer {
    /// The image name it was made from.
    pub image: String,
    /// The manifest it pins.
    pub pin: String,
    /// Its writable layer's name.
    pub layer: String,
    /// Its settings' environment (so tests can see what a recreated container got).
    pub env: Vec<String>,
}

/// What the fake holds.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Image names → manifest digests.
    pub images: BTreeMap<String, String>,
    /// Manifests whose content the store holds.
    pub content: BTreeSet<String>,
    /// Containers by ID.
    pub containers: BTreeMap<String, FakeContainer>,
    /// Tasks by container ID (absent: stopped).
    pub tasks: BTreeMap<String, ContainerState>,
    /// Writable layers kept alive by a hold, by hold name.
    pub holds: BTreeMap<String, FakeContainer>,
    /// Imports to hand out, oldest first: (name, digest).
    pub next_imports: VecDeque<(String, String)>,
    /// Exit codes of commands run with exec, by the command's last word; 0 otherwise.
    pub exec_codes: HashMap<String, u32>,
    /// Containers holding a network: every container once started, until it is deleted or
    /// detached (a test removes a container from `containers` alone to make it vanish).
    pub networks: BTreeSet<String>,
    /// Files in images' root filesystems, by (manifest digest, path).
    pub image_files: HashMap<(String, String), Vec<u8>>,
    /// Health checks images declare, by manifest digest.
    pub image_healthchecks: HashMap<String, crate::tpc_spec::image_health::ImageHealthcheck>,
    next_pid: u32,
    next_layer: u32,
}

/// The fake runtime.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    /// Its state (tests read and arrange it directly).
    pub state: Mutex<FakeState>,
    /// Every call, as `method arg`, in order.
    pub calls: Mutex<Vec<String>>,
    /// Calls to fail: `(method, n)` fails the n-th call (1-based) of `method` from now on.
    failures: Mutex<Vec<(String, usize)>>,
}

impl FakeRuntime {
    /// An empty runtime.
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    /// An image named `name` at `digest`, as if imported.
    pub fn add_image(&self, name: &str, digest: &str) {
        let mut s = self.state.lock().unwrap();
        s.images.insert(name.into(), digest.into());
        s.content.insert(digest.into());
    }

    /// The next import (archive or pull) creates `name` at `digest`.
    pub fn will_import(&self, name: &str, digest: &str) {
        self.state
            .lock()
            .unwrap()
            .next_imports
            .push_back((name.into(), digest.into()));
    }

    /// Fails the `nth` call (1-based, counted from now) of `method`.
    pub fn fail(&self, method: &str, nth: usize) {
        let seen = self.count(method);
        self.failures
            .lock()
            .unwrap()
            .push((method.to_string(), seen + nth));
    }

    /// How many times `method` was called.
    pub fn count(&self, method: &str) -> usize {
        let prefix = format!("{method} ");
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with(&prefix) || c.as_str() == method)
            .count()
    }

    /// What container `id`'s task is doing.
    pub fn state_of(&self, id: &str) -> ContainerState {
        self.state
            .lock()
            .unwrap()
            .tasks
            .get(id)
            .cloned()
            .unwrap_or(ContainerState::Stopped)
    }

    /// Makes container `id`'s task exit with `code`.
    pub fn exit(&self, id: &str, code: u32) {
        self.state
            .lock()
            .unwrap()
            .tasks
            .insert(id.into(), ContainerState::Exited { code });
    }

    /// Records a call and fails it if a test asked for that.
    fn call(&self, method: &str, arg: &str) -> Result<(), Error> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(format!("{method} {arg}"));
            calls
                .iter()
                .filter(|c| c.split(' ').next() == Some(method))
                .count()
        };
        let mut failures = self.failures.lock().unwrap();
        if let Some(i) = failures.iter().position(|(m, at)| m == method && *at == n) {
            failures.remove(i);
            return Err(Error::Backend(format!("injected failure of {method} {arg}")));
        }
        Ok(())
    }

    /// containerd's collector: content no name, container or hold pins goes.
    fn collect(s: &mut FakeState) {
        let mut live: BTreeSet<String> = s.images.values().cloned().collect();
        live.extend(s.containers.values().map(|c| c.pin.clone()));
        live.extend(s.holds.values().map(|c| c.pin.clone()));
        s.content.retain(|d| live.contains(d));
    }

    fn import_next(&self, tag: Option<String>) -> Result<ImportedImage, Error> {
        let mut s = self.state.lock().unwrap();
        let (name, digest) = s
            .next_imports
            .pop_front()
            .ok_or_else(|| Error::InvalidRequest("the fake has no import planned".into()))?;
        let name = tag.unwrap_or(name);
        s.images.insert(name.clone(), digest.clone());
        s.content.insert(digest.clone());
        Self::collect(&mut s);
        Ok(ImportedImage {
            names: vec![name],
            digest,
            layers: 1,
            size: 1,
        })
    }
}

impl Runtime for FakeRuntime {
    async fn import_image(
        &self,
        _archive: ArchiveInput,
        tag: Option<String>,
    ) -> Result<Vec<ImportedImage>, Error> {
        self.call("import_image", tag.as_deref().unwrap_or(""))?;
        Ok(vec![self.import_next(tag)?])
    }

    async fn import_pulled(&self, image: PulledImage) -> Result<ImportedImage, Error> {
        self.call("import_pulled", &image.name)?;
        self.import_next(None)
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, Error> {
        self.call("list_images", "")?;
        let s = self.state.lock().unwrap();
        Ok(s.images
            .iter()
            .map(|(name, digest)| ImageSummary {
                name: name.clone(),
                digest: digest.clone(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 1,
                created: None,
            })
            .collect())
    }

    async fn remove_image(&self, name: &str) -> Result<(), Error> {
        self.call("remove_image", name)?;
        let mut s = self.state.lock().unwrap();
        if s.images.remove(name).is_none() {
            return Err(Error::ImageNotFound(name.into()));
        }
        Self::collect(&mut s);
        Ok(())
    }

    async fn create_container(
        &self,
        config: &ContainerConfig,
        _labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        self.call("create_container", &config.id)?;
        let mut s = self.state.lock().unwrap();
        if s.containers.contains_key(&config.id) {
            return Err(Error::AlreadyExists(format!("container {} exists", config.id)));
        }
        let digest = if config.image.digest.is_empty() {
            s.images
                .get(&config.image.reference)
                .cloned()
                .ok_or_else(|| Error::ImageNotFound(config.image.reference.clone()))?
        } else {
            config.image.digest.clone()
        };
        if !s.content.contains(&digest) {
            return Err(Error::NotFound(format!("content {digest} not found")));
        }
        s.next_layer += 1;
        let layer = format!("layer-{}", s.next_layer);
        s.containers.insert(
            config.id.clone(),
            FakeContainer {
                image: config.image.reference.clone(),
                pin: digest,
                layer,
                env: config.settings.env.clone(),
            },
        );
        Ok(())
    }

    async fn start_container(&self, id: &str, _log: &LogTarget) -> Result<u32, Error> {
        self.call("start_container", id)?;
        let mut s = self.state.lock().unwrap();
        if !s.containers.contains_key(id) {
            return Err(Error::NotFound(format!("no such container {id}")));
        }
        if let Some(ContainerState::Running { .. }) = s.tasks.get(id) {
            return Err(Error::AlreadyExists(format!("task {id} exists")));
        }
        s.next_pid += 1;
        let pid = 1000 + s.next_pid;
        s.tasks.insert(id.into(), ContainerState::Running { pid });
        s.networks.insert(id.into());
        Ok(pid)
    }

    async fn stop_container(&self, id: &str, _grace: Duration) -> Result<(), Error> {
        self.call("stop_container", id)?;
        self.state.lock().unwrap().tasks.remove(id);
        Ok(())
    }

    async fn wait_container(&self, id: &str) -> Result<u32, Error> {
        self.call("wait_container", id)?;
        match self.state_of(id) {
            ContainerState::Exited { code } => Ok(code),
            _ => Ok(0),
        }
    }

    async fn container_state(&self, id: &str) -> Result<ContainerState, Error> {
        self.call("container_state", id)?;
        Ok(self.state_of(id))
    }

    async fn collect_abandoned(&self) -> Result<usize, Error> {
        Ok(0)
    }

    async fn save_container(
        &self,
        id: &str,
        image_digest: &str,
        _layout: &Path,
    ) -> Result<SavedImage, Error> {
        self.call("save_container", id)?;
        if !self.state.lock().unwrap().content.contains(image_digest) {
            return Err(Error::NotFound(format!("content {image_digest} not found")));
        }
        Ok(SavedImage {
            manifest_digest: format!("sha256:saved-{id}"),
            manifest_size: 1,
            written: 1,
        })
    }

    async fn save_bound(&self, id: &str, image_digest: &str, _layout: &Path) -> Result<u64, Error> {
        self.call("save_bound", id)?;
        if !self.state.lock().unwrap().content.contains(image_digest) {
            return Err(Error::NotFound(format!("content {image_digest} not found")));
        }
        Ok(1)
    }

    async fn name_image(&self, name: &str, manifest_digest: &str) -> Result<(), Error> {
        self.call("name_image", name)?;
        let mut s = self.state.lock().unwrap();
        if !s.content.contains(manifest_digest) {
            return Err(Error::ImageNotFound(manifest_digest.into()));
        }
        s.images.insert(name.into(), manifest_digest.into());
        Self::collect(&mut s);
        Ok(())
    }

    async fn tag_image(&self, source: &str, name: &str) -> Result<(), Error> {
        self.call("tag_image", name)?;
        let mut s = self.state.lock().unwrap();
        let digest = s
            .images
            .get(source)
            .cloned()
            .ok_or_else(|| Error::ImageNotFound(source.into()))?;
        s.images.insert(name.into(), digest);
        Self::collect(&mut s);
        Ok(())
    }

    async fn pin_image(&self, id: &str, digest: &str) -> Result<(), Error> {
        self.call("pin_image", id)?;
        if let Some(c) = self.state.lock().unwrap().containers.get_mut(id) {
            c.pin = digest.into();
        }
        Ok(())
    }

    async fn delete_container(&self, id: &str) -> Result<(), Error> {
        self.call("delete_container", id)?;
        let mut s = self.state.lock().unwrap();
        s.containers.remove(id);
        s.tasks.remove(id);
        s.networks.remove(id);
        Self::collect(&mut s);
        Ok(())
    }

    async fn vanished_networks(&self) -> Result<Vec<String>, Error> {
        self.call("vanished_networks", "")?;
        let s = self.state.lock().unwrap();
        Ok(s.networks
            .iter()
            .filter(|id| !s.containers.contains_key(*id))
            .cloned()
            .collect())
    }

    async fn release_network(&self, id: &str) -> Result<(), Error> {
        self.call("release_network", id)?;
        self.state.lock().unwrap().networks.remove(id);
        Ok(())
    }

    async fn list_containers(&self) -> Result<Vec<ContainerSummary>, Error> {
        self.call("list_containers", "")?;
        Ok(self
            .state
            .lock()
            .unwrap()
            .containers
            .iter()
            .map(|(id, c)| ContainerSummary {
                id: id.clone(),
                image: c.image.clone(),
            })
            .collect())
    }

    async fn watch_exits(
        &self,
        _tx: tokio::sync::mpsc::Sender<(String, u32)>,
        subscribed: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), Error> {
        let _ = subscribed.send(());
        Ok(())
    }

    async fn container_exists(&self, id: &str) -> Result<bool, Error> {
        self.call("container_exists", id)?;
        Ok(self.state.lock().unwrap().containers.contains_key(id))
    }

    async fn exec_in_container(
        &self,
        id: &str,
        argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecResult, Error> {
        let last = argv.last().cloned().unwrap_or_default();
        self.call("exec_in_container", &format!("{id} {last}"))?;
        if !matches!(self.state_of(id), ContainerState::Running { .. }) {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let code = self
            .state
            .lock()
            .unwrap()
            .exec_codes
            .get(&last)
            .copied()
            .unwrap_or(0);
        Ok(ExecResult {
            code: Some(code),
            output: String::new(),
        })
    }

    async fn container_layer(&self, id: &str) -> Result<Option<String>, Error> {
        self.call("container_layer", id)?;
        Ok(self
            .state
            .lock()
            .unwrap()
            .containers
            .get(id)
            .map(|c| c.layer.clone()))
    }

    async fn hold_container(&self, id: &str) -> Result<DetachedContainer, Error> {
        self.call("hold_container", id)?;
        let mut s = self.state.lock().unwrap();
        let c = s
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no such container {id}")))?;
        let hold = format!("hold-{id}-{}", c.layer);
        s.holds.insert(hold.clone(), c.clone());
        Ok(DetachedContainer {
            id: id.into(),
            definition: serde_json::to_string(&c).unwrap(),
            layer: c.layer,
            hold,
        })
    }

    async fn detach_container(&self, held: &DetachedContainer) -> Result<(), Error> {
        self.call("detach_container", &held.id)?;
        let mut s = self.state.lock().unwrap();
        if s.containers.get(&held.id).is_some_and(|c| c.layer == held.layer) {
            s.containers.remove(&held.id);
            s.tasks.remove(&held.id);
        }
        s.networks.remove(&held.id);
        Ok(())
    }

    async fn restore_container(&self, detached: &DetachedContainer) -> Result<(), Error> {
        self.call("restore_container", &detached.id)?;
        let mut s = self.state.lock().unwrap();
        let c: FakeContainer = serde_json::from_str(&detached.definition).unwrap();
        if !s.containers.contains_key(&detached.id) {
            s.containers.insert(detached.id.clone(), c);
        }
        s.holds.remove(&detached.hold);
        Ok(())
    }

    async fn discard_detached(&self, detached: &DetachedContainer) -> Result<(), Error> {
        self.call("discard_detached", &detached.id)?;
        let mut s = self.state.lock().unwrap();
        s.holds.remove(&detached.hold);
        Self::collect(&mut s);
        Ok(())
    }

    async fn image_healthcheck(
        &self,
        image: &crate::tpc_spec::ImageRef,
    ) -> Result<Option<crate::tpc_spec::image_health::ImageHealthcheck>, Error> {
        self.call("image_healthcheck", &image.digest)?;
        let s = self.state.lock().unwrap();
        if !s.content.contains(&image.digest) {
            return Err(Error::ImageNotFound(image.reference.clone()));
        }
        Ok(s.image_healthchecks.get(&image.digest).cloned())
    }

    async fn read_image_file(
        &self,
        image: &crate::tpc_spec::ImageRef,
        path: &str,
        _limit: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        self.call("read_image_file", &format!("{} {path}", image.digest))?;
        let s = self.state.lock().unwrap();
        if !s.content.contains(&image.digest) {
            return Err(Error::ImageNotFound(image.reference.clone()));
        }
        Ok(s.image_files
            .get(&(image.digest.clone(), path.to_string()))
            .cloned())
    }

    async fn exec_attached(
        &self,
        id: &str,
        request: &super::ExecRequest,
        _stdio: super::ExecStdio,
    ) -> Result<super::ExecExit, Error> {
        self.call("exec_attached", id)?;
        let word = request.argv.last().cloned().unwrap_or_default();
        let code = self.state.lock().unwrap().exec_codes.get(&word).copied();
        Ok(super::ExecExit::Code(code.unwrap_or(0)))
    }

    async fn container_metrics(&self, id: &str) -> Result<Option<super::ContainerMetrics>, Error> {
        self.call("container_metrics", id)?;
        Ok(
            matches!(self.state_of(id), ContainerState::Running { .. })
                .then(super::ContainerMetrics::default),
        )
    }

    async fn container_pids(&self, id: &str) -> Result<Vec<u32>, Error> {
        self.call("container_pids", id)?;
        Ok(match self.state_of(id) {
            ContainerState::Running { pid } => vec![pid],
            _ => vec![],
        })
    }

    async fn update_limits(&self, id: &str, limits: &super::ResourceLimits) -> Result<(), Error> {
        self.call("update_limits", &format!("{id} cpus={}", limits.cpus))?;
        if self.state.lock().unwrap().containers.contains_key(id) {
            Ok(())
        } else {
            Err(Error::NotFound(format!("no such container {id}")))
        }
    }

    async fn recreate_container(
        &self,
        config: &ContainerConfig,
        labels: HashMap<String, String>,
    ) -> Result<super::Recreated, Error> {
        self.create_container(config, labels).await?;
        Ok(super::Recreated::FreshLayer)
    }
}
