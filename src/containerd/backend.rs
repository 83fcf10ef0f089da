//! containerd as the [`Runtime`] backend: the trait's methods in terms of this module's calls.

use super::{Containerd, Error};
use crate::archive::Digest;
use crate::runtime::logs::LogTarget;
use crate::runtime::spec::{self, ContainerConfig};
use crate::runtime::{
    self, ArchiveInput, ContainerState, DetachedContainer, ExecResult, ImageSummary, ImportedImage,
    PulledImage, Runtime,
};
use std::collections::HashMap;
use std::time::Duration;

impl From<Error> for runtime::Error {
    /// containerd's status codes become the runtime's error kinds, so front ends answer with
    /// codes chosen by kind, never by message.
    fn from(e: Error) -> Self {
        use tonic::Code;
        let message = e.to_string();
        match e {
            Error::Unreachable { .. } | Error::Forbidden { .. } => runtime::Error::Unreachable(message),
            Error::ImageNotFound(name) => runtime::Error::ImageNotFound(name),
            Error::Rpc { status, .. } => match status.code() {
                Code::NotFound => runtime::Error::NotFound(message),
                Code::AlreadyExists => runtime::Error::AlreadyExists(message),
                Code::FailedPrecondition => runtime::Error::FailedPrecondition(message),
                Code::ResourceExhausted => runtime::Error::Exhausted(message),
                Code::InvalidArgument => runtime::Error::InvalidRequest(message),
                Code::Unavailable => runtime::Error::Unreachable(message),
                _ => runtime::Error::Backend(message),
            },
            Error::Unexpected { .. } => runtime::Error::Backend(message),
            Error::Refused { .. } => runtime::Error::FailedPrecondition(message),
        }
    }
}

/// The container label that pins the manifest a container was made from: containerd's garbage
/// collector follows `containerd.io/gc.ref.content.*` labels of containers, so the manifest, and
/// through its own labels the config, layers and snapshots, stay while the container does.
pub(super) const IMAGE_PIN_LABEL: &str = "containerd.io/gc.ref.content.tpcm.image";

/// containerd's label for the signal that stops a container (`ctr` and the task service read
/// it too).
pub(super) const STOP_SIGNAL_LABEL: &str = "io.containerd.image.config.stop-signal";

/// Largest manifest read back when sizing an image for a listing.
const MANIFEST_LIMIT: u64 = 4 << 20;

impl Runtime for Containerd {
    async fn import_image(
        &self,
        archive: ArchiveInput,
        tag: Option<String>,
    ) -> Result<Vec<ImportedImage>, runtime::Error> {
        super::import_archive(self, archive, tag).await
    }

    async fn import_pulled(&self, image: PulledImage) -> Result<ImportedImage, runtime::Error> {
        super::import::import_pulled(self, image).await
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, runtime::Error> {
        let mut out = Vec::new();
        for r in self.list_image_records().await? {
            // A multi-platform image is listed (and pinned) by this host's manifest.
            let digest = self.manifest_of(&r).await.unwrap_or_else(|_| r.digest.clone());
            let size = self.image_size(&digest).await.unwrap_or(0);
            out.push(ImageSummary {
                name: r.name,
                digest,
                media_type: r.media_type,
                size,
                created: ImageSummary::epoch(r.created),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn remove_image(&self, name: &str) -> Result<(), runtime::Error> {
        Ok(self.delete_image(name).await?)
    }

    async fn create_container(
        &self,
        config: &ContainerConfig,
        labels: HashMap<String, String>,
    ) -> Result<(), runtime::Error> {
        self.create_on(config, labels, None).await
    }

    async fn recreate_container(
        &self,
        config: &ContainerConfig,
        labels: HashMap<String, String>,
    ) -> Result<runtime::Recreated, runtime::Error> {
        // Only a layer made on this very image: a leftover of another image's container of the
        // same name would put other files under the pinned image's settings.
        let (_, top) = self.image_config(&config.image).await?;
        let layer = self.leftover_layer(&config.id, &top.to_string()).await?;
        self.create_on(config, labels, layer.clone()).await?;
        Ok(match layer {
            Some(_) => runtime::Recreated::KeptLayer,
            None => runtime::Recreated::FreshLayer,
        })
    }

    async fn exec_attached(
        &self,
        id: &str,
        request: &runtime::ExecRequest,
        stdio: runtime::ExecStdio,
    ) -> Result<runtime::ExecExit, runtime::Error> {
        Ok(Containerd::exec_attached(self, id, request, stdio).await?)
    }

    async fn container_metrics(&self, id: &str) -> Result<Option<runtime::ContainerMetrics>, runtime::Error> {
        Ok(self.task_metrics(id).await?)
    }

    async fn container_pids(&self, id: &str) -> Result<Vec<u32>, runtime::Error> {
        Ok(self.task_pids(id).await?)
    }

    async fn update_limits(&self, id: &str, limits: &runtime::ResourceLimits) -> Result<(), runtime::Error> {
        Ok(Containerd::update_limits(self, id, limits).await?)
    }
    async fn start_container(&self, id: &str, log: &LogTarget) -> Result<u32, runtime::Error> {
        let exe = std::env::current_exe()
            .map_err(|e| runtime::Error::Internal(format!("cannot locate the tpcm binary: {e}")))?;
        self.attach_network(id).await?;
        // Containers made by a tpcm from before layer leases get theirs at their next start.
        self.protect_current_layer(id).await;
        Ok(self.start_task(id, &log.driver_uri(&exe)).await?)
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), runtime::Error> {
        Ok(self.stop_task(id, grace).await?)
    }

    async fn wait_container(&self, id: &str) -> Result<u32, runtime::Error> {
        Ok(self.wait_task(id).await?)
    }

    async fn container_state(&self, id: &str) -> Result<ContainerState, runtime::Error> {
        Ok(self.task_state(id).await?)
    }

    async fn pin_image(&self, id: &str, digest: &str) -> Result<(), runtime::Error> {
        Ok(self.set_container_label(id, IMAGE_PIN_LABEL, digest).await?)
    }

    async fn delete_container(&self, id: &str) -> Result<(), runtime::Error> {
        self.unprotect_layer(id).await?;
        self.remove_container(id).await?;
        Ok(self.detach_network(id).await?)
    }

    async fn vanished_networks(&self) -> Result<Vec<String>, runtime::Error> {
        let ns = self.namespace().to_string();
        let attached = tokio::task::spawn_blocking(move || super::cni::attached(&ns))
            .await
            .map_err(|e| runtime::Error::Internal(format!("bridge networks: {e}")))?;
        let mut vanished = Vec::new();
        for id in attached {
            if self.container_record(&id).await?.is_none() {
                vanished.push(id);
            }
        }
        Ok(vanished)
    }

    async fn release_network(&self, id: &str) -> Result<(), runtime::Error> {
        Ok(self.detach_network(id).await?)
    }

    async fn list_containers(&self) -> Result<Vec<runtime::ContainerSummary>, runtime::Error> {
        Ok(self
            .container_images()
            .await?
            .into_iter()
            .map(|(id, image)| runtime::ContainerSummary { id, image })
            .collect())
    }

    async fn watch_exits(
        &self,
        tx: tokio::sync::mpsc::Sender<(String, u32)>,
        subscribed: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), runtime::Error> {
        Ok(self.forward_exits(tx, subscribed).await?)
    }

    async fn container_exists(&self, id: &str) -> Result<bool, runtime::Error> {
        Ok(self.container_record(id).await?.is_some())
    }

    async fn exec_in_container(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, runtime::Error> {
        Ok(self.exec(id, argv, timeout).await?)
    }

    async fn container_layer(&self, id: &str) -> Result<Option<String>, runtime::Error> {
        Ok(self.container_record(id).await?.map(|c| c.snapshot_key))
    }

    async fn hold_container(&self, id: &str) -> Result<DetachedContainer, runtime::Error> {
        Ok(self.hold(id).await?)
    }

    async fn image_healthcheck(
        &self,
        image: &crate::tpc_spec::ImageRef,
    ) -> Result<Option<crate::tpc_spec::image_health::ImageHealthcheck>, runtime::Error> {
        let document = self.image_config_document(image).await?;
        // A config that is no JSON would have failed the import; read leniently all the same.
        let config: serde_json::Value = serde_json::from_slice(&document).unwrap_or_default();
        Ok(crate::tpc_spec::image_health::ImageHealthcheck::from_image_config(&config))
    }

    async fn read_image_file(
        &self,
        image: &crate::tpc_spec::ImageRef,
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, runtime::Error> {
        let (_, top) = self.image_config(image).await?;
        let lease = self.create_lease("read").await?;
        let wanted = path.to_string();
        let read = self
            .with_image_view(&lease, "file", &top, move |root| {
                super::image_view::read_in_root(root, &wanted, limit)
            })
            .await;
        let _ = self.delete_lease(lease, false).await;
        match read? {
            super::image_view::Found::File(content) => Ok(Some(content)),
            super::image_view::Found::Missing => Ok(None),
            super::image_view::Found::NotAFile => Err(runtime::Error::InvalidRequest(format!(
                "{path} in image {} is not a regular file",
                image.reference
            ))),
            super::image_view::Found::Unsupported => Err(runtime::Error::FailedPrecondition(
                "this kernel cannot read files inside an image safely (openat2 needs Linux 5.6)".into(),
            )),
        }
    }

    async fn detach_container(&self, held: &DetachedContainer) -> Result<(), runtime::Error> {
        self.detach(held).await?;
        // The ports go with the container: its successor (or itself, restored) attaches anew.
        Ok(self.detach_network(&held.id).await?)
    }

    async fn save_container(
        &self,
        id: &str,
        image_digest: &str,
        layout: &std::path::Path,
    ) -> Result<runtime::SavedImage, runtime::Error> {
        Ok(Containerd::save_container(self, id, image_digest, layout).await?)
    }

    async fn save_bound(
        &self,
        id: &str,
        image_digest: &str,
        layout: &std::path::Path,
    ) -> Result<u64, runtime::Error> {
        Ok(Containerd::save_bound(self, id, image_digest, layout).await?)
    }

    async fn name_image(&self, name: &str, manifest_digest: &str) -> Result<(), runtime::Error> {
        let digest = Digest::parse(manifest_digest).ok_or_else(|| {
            runtime::Error::InvalidRequest(format!("not a sha256 digest: {manifest_digest}"))
        })?;
        match self.name_manifest(name, &digest).await {
            // The manifest is no longer in the content store.
            Err(Error::Rpc { status, .. }) if status.code() == tonic::Code::NotFound => {
                Err(runtime::Error::ImageNotFound(manifest_digest.to_string()))
            }
            other => Ok(other?),
        }
    }

    async fn collect_abandoned(&self) -> Result<usize, runtime::Error> {
        Ok(Containerd::collect_abandoned(self).await?)
    }

    async fn tag_image(&self, source: &str, name: &str) -> Result<(), runtime::Error> {
        Ok(Containerd::tag_image(self, source, name).await?)
    }

    async fn restore_container(&self, detached: &DetachedContainer) -> Result<(), runtime::Error> {
        Ok(self.restore(detached).await?)
    }

    async fn discard_detached(&self, detached: &DetachedContainer) -> Result<(), runtime::Error> {
        Ok(self.discard(detached).await?)
    }
}

impl Containerd {
    /// [`Runtime::create_container`], on a fresh writable layer or on `layer`.
    async fn create_on(
        &self,
        config: &ContainerConfig,
        labels: HashMap<String, String>,
        layer: Option<String>,
    ) -> Result<(), runtime::Error> {
        let (image_config, top) = self.image_config(&config.image).await?;
        let mut labels = labels;
        if !config.image.digest.is_empty() {
            labels.insert(IMAGE_PIN_LABEL.to_string(), config.image.digest.clone());
        }
        let lease = self.create_lease("create").await?;
        let created = async {
            if let Some(layer) = &layer {
                // Held by the lease from now on, so no collection takes it while we build on it.
                self.lease_snapshot(&lease, layer).await?;
            }
            // A user name is resolved in the image, as docker does; the spec holds numbers.
            let image_user = image_config.config().as_ref().and_then(|c| c.user().clone());
            let mut config = config.clone();
            if let Some(user) = config
                .settings
                .user
                .clone()
                .or(image_user)
                .filter(|u| !u.is_empty())
            {
                let resolved = self
                    .resolve_image_user(&lease, &config.id, &top, &user)
                    .await
                    .map_err(|e| runtime::Error::InvalidRequest(e.to_string()))?;
                config.settings.user = Some(resolved);
            }
            let host = spec::Host::detect(config.settings.privileged);
            let mut spec = spec::build(&config, &image_config, self.namespace(), &host)
                .map_err(|e| runtime::Error::InvalidRequest(e.to_string()))?;
            // containerd's own label for the signal a stop sends (the image's STOPSIGNAL unless
            // the settings name one), read back by stop_task. An image may spell it any way
            // docker takes (`9`, `TERM`); one that is no signal leaves SIGTERM.
            let stop_signal = config.settings.stop_signal.clone().or_else(|| {
                image_config
                    .config()
                    .as_ref()
                    .and_then(|c| c.stop_signal().as_deref())
                    .and_then(crate::tpc_spec::signal_name)
            });
            if let Some(signal) = stop_signal {
                labels.insert(STOP_SIGNAL_LABEL.to_string(), signal);
            }
            if let Some(ports) = config.bridge() {
                super::cni::join_netns(&mut spec, self.namespace(), &config.id);
                labels.insert(
                    super::cni::NETWORK_LABEL.to_string(),
                    serde_json::to_string(ports).expect("ports serialize"),
                );
            }
            self.make_container(
                &lease,
                &config.id,
                &config.image.reference,
                &top,
                &spec,
                labels,
                layer.as_deref(),
            )
            .await
            .map_err(runtime::Error::from)
        }
        .await;
        if created.is_ok() {
            // The layer outlives the container record, until tpcm deletes the container.
            self.protect_current_layer(&config.id).await;
        }
        // Sync on failure so the half-made snapshot is collected before we answer.
        let _ = self.delete_lease(lease, created.is_err()).await;
        created
    }
}

impl Containerd {
    /// Puts container `id`'s writable layer under its layer lease (idempotent); a failure is
    /// only logged: the lease serves a later repair, not the operation at hand.
    async fn protect_current_layer(&self, id: &str) {
        let key = self
            .container_record(id)
            .await
            .ok()
            .flatten()
            .map(|c| c.snapshot_key);
        if let Some(key) = key
            && let Err(e) = self.protect_layer(id, &key).await
        {
            tracing::warn!("container {id}: cannot protect its writable layer: {e}");
        }
    }

    /// Manifest + config + layer sizes, from the manifest in the content store.
    async fn image_size(&self, manifest: &str) -> Result<u64, Error> {
        let digest = Digest::parse(manifest).ok_or_else(|| Error::Unexpected {
            op: "image size".into(),
            detail: format!("digest {manifest}"),
        })?;
        let bytes = self.read_small_blob(&digest, MANIFEST_LIMIT).await?;
        let m: oci_spec::image::ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::Unexpected {
                op: "image size".into(),
                detail: e.to_string(),
            })?;
        Ok(bytes.len() as u64 + m.config().size() + m.layers().iter().map(|l| l.size()).sum::<u64>())
    }
}

impl Containerd {
    /// Puts a bridged container (one with the network label) on the bridge before its task
    /// starts; the plugins run on a thread that may block.
    async fn attach_network(&self, id: &str) -> Result<(), Error> {
        let Some(record) = self.container_record(id).await? else {
            return Ok(());
        };
        let Some(ports) = record.labels.get(super::cni::NETWORK_LABEL) else {
            return Ok(());
        };
        let ports: Vec<crate::tpc_spec::PortMapping> =
            serde_json::from_str(ports).map_err(|e| Error::Unexpected {
                op: format!("container {id}"),
                detail: format!("bad {} label: {e}", super::cni::NETWORK_LABEL),
            })?;
        let (ns, id, subnet) = (
            self.namespace().to_string(),
            id.to_string(),
            self.bridge_subnet.clone(),
        );
        tokio::task::spawn_blocking(move || super::cni::attach(&ns, &id, &ports, &subnet))
            .await
            .map_err(|e| Error::Unexpected {
                op: "bridge network".into(),
                detail: e.to_string(),
            })?
    }

    /// Takes a container off the bridge (nothing to do for one that never was on it).
    async fn detach_network(&self, id: &str) -> Result<(), Error> {
        let (ns, id, subnet) = (
            self.namespace().to_string(),
            id.to_string(),
            self.bridge_subnet.clone(),
        );
        tokio::task::spawn_blocking(move || super::cni::detach(&ns, &id, &subnet))
            .await
            .map_err(|e| Error::Unexpected {
                op: "bridge network".into(),
                detail: e.to_string(),
            })?
    }
}
