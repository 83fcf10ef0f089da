//! Containers and their tasks: create (spec + snapshot), start, stop, delete, status.

use super::{Containerd, Error, Lease, SNAPSHOTTER};
use crate::archive::{Digest, chain_ids};
use crate::runtime::ContainerState;
use containerd_client::services::v1::snapshots::{MountsRequest, PrepareSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, StartRequest, WaitRequest,
    container::Runtime as ContainerRuntime,
};
use containerd_client::services::v1::{containers_client::ContainersClient, tasks_client::TasksClient};
use containerd_client::types::v1::Status;
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::Channel;

/// The runtime every TPC runs under.
const RUNC: &str = "io.containerd.runc.v2";
/// How containerd recognises an OCI runtime spec inside an `Any`.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// How containerd recognises the resources of a task update inside an `Any`.
const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// Bound on manifests and configs read to start a container.
const DOCUMENT_LIMIT: u64 = 4 << 20;

impl Containerd {
    pub(super) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    pub(super) fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// The config document (JSON bytes) of an image, read from the content store: the manifest
    /// `image` names by digest (its name may point elsewhere by now), or, without a digest, the
    /// one its name points at.
    pub(crate) async fn image_config_document(
        &self,
        image: &crate::tpc_spec::ImageRef,
    ) -> Result<Vec<u8>, Error> {
        let op = format!("read image {}", image.reference);
        let unexpected = |detail: String| Error::Unexpected {
            op: op.clone(),
            detail,
        };
        let digest = if image.digest.is_empty() {
            let record = self
                .get_image_record(&image.reference)
                .await?
                .ok_or_else(|| Error::ImageNotFound(image.reference.clone()))?;
            self.manifest_of(&record).await?
        } else {
            image.digest.clone()
        };
        let manifest_digest = Digest::parse(&digest).ok_or_else(|| unexpected(digest.clone()))?;
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&self.read_small_blob(&manifest_digest, DOCUMENT_LIMIT).await?)
                .map_err(|e| unexpected(e.to_string()))?;
        let config_digest = Digest::parse(manifest.config().digest().as_ref())
            .ok_or_else(|| unexpected("config digest".into()))?;
        self.read_small_blob(&config_digest, DOCUMENT_LIMIT).await
    }

    /// The image config and top chain ID of an image ([`Self::image_config_document`]).
    pub(crate) async fn image_config(
        &self,
        image: &crate::tpc_spec::ImageRef,
    ) -> Result<(oci_spec::image::ImageConfiguration, Digest), Error> {
        let unexpected = |detail: String| Error::Unexpected {
            op: format!("read image {}", image.reference),
            detail,
        };
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&self.image_config_document(image).await?)
                .map_err(|e| unexpected(e.to_string()))?;
        // A diff ID we cannot parse would give a wrong chain ID, possibly another image's.
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| Digest::parse(d).ok_or_else(|| unexpected(format!("diff ID {d} is not sha256"))))
            .collect::<Result<Vec<_>, _>>()?;
        let top = chain_ids(&diff_ids)
            .pop()
            .ok_or_else(|| unexpected("image has no layers".into()))?;
        Ok((config, top))
    }

    /// Creates container `id` running `image` with `spec`, on a fresh writable snapshot over the
    /// image's top layer. Both are made under `lease`, so a failure halfway leaves nothing once
    /// the lease goes. The snapshot key is `<id>-<time>`, not `id`: during an upgrade the old
    /// container's writable layer is kept (detached) while the new container exists.
    /// With `layer`, the container is made on that existing writable snapshot (one left by a
    /// container that was deleted without it), which the caller has added to `lease`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn make_container(
        &self,
        lease: &Lease,
        id: &str,
        image: &str,
        top_chain: &Digest,
        spec: &oci_spec::runtime::Spec,
        labels: HashMap<String, String>,
        layer: Option<&str>,
    ) -> Result<(), Error> {
        let key = match layer {
            Some(key) => key.to_string(),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                let key = format!("{id}-{nanos}");
                let prepare = PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.clone(),
                    parent: top_chain.to_string(),
                    labels: HashMap::new(),
                };
                self.snapshots()
                    .prepare(self.request(prepare, Some(lease)))
                    .await
                    .map_err(Error::rpc(format!("snapshot prepare {id}")))?;
                key
            }
        };
        let value = serde_json::to_vec(spec).map_err(|e| Error::Unexpected {
            op: "spec".into(),
            detail: e.to_string(),
        })?;
        let container = Container {
            id: id.into(),
            labels,
            image: image.into(),
            runtime: Some(ContainerRuntime {
                name: RUNC.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: key.clone(),
            ..Default::default()
        };
        let req = CreateContainerRequest {
            container: Some(container),
        };
        if let Err(status) = self.containers().create(self.request(req, Some(lease))).await {
            // Only the snapshot prepared just above is ours to take back; a container that
            // already had this ID (AlreadyExists) is left alone, and so is a layer we were given.
            if layer.is_none() {
                let _ = self.remove_snapshot(&key).await;
            }
            return Err(Error::rpc(format!("container create {id}"))(status));
        }
        Ok(())
    }

    /// Creates and starts the task of container `id`; stdout and stderr go to the stdio URI
    /// `log` (both to the same one).
    pub(crate) async fn start_task(&self, id: &str, log: &str) -> Result<u32, Error> {
        let key = self.snapshot_key(id).await?;
        let mounts = self
            .snapshots()
            .mounts(self.request(
                MountsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key,
                },
                None,
            ))
            .await
            .map_err(Error::rpc(format!("snapshot mounts {id}")))?
            .into_inner()
            .mounts;
        let log = log.to_string();
        let create = CreateTaskRequest {
            container_id: id.into(),
            rootfs: mounts,
            stdout: log.clone(),
            stderr: log,
            ..Default::default()
        };
        self.tasks()
            .create(self.request(create, None))
            .await
            .map_err(Error::rpc(format!("task create {id}")))?;
        let start = StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        };
        match self.tasks().start(self.request(start, None)).await {
            Ok(r) => Ok(r.into_inner().pid),
            Err(s) => {
                let _ = self.delete_task(id).await;
                Err(Error::rpc(format!("task start {id}"))(s))
            }
        }
    }

    /// The state of container `id`'s task.
    pub(crate) async fn task_state(&self, id: &str) -> Result<ContainerState, Error> {
        let req = GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        };
        let process = match self.tasks().get(self.request(req, None)).await {
            Ok(r) => r.into_inner().process.unwrap_or_default(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(ContainerState::Stopped),
            Err(s) => return Err(Error::rpc(format!("task get {id}"))(s)),
        };
        Ok(
            match Status::try_from(process.status).unwrap_or(Status::Unknown) {
                Status::Running => ContainerState::Running { pid: process.pid },
                Status::Stopped => ContainerState::Exited {
                    code: process.exit_status,
                },
                // Created but never started (tpcm died in between): not runnable as is;
                // `start` deletes the task first.
                Status::Created => ContainerState::Other {
                    detail: "created".into(),
                },
                other => ContainerState::Other {
                    detail: other.as_str_name().to_lowercase(),
                },
            },
        )
    }

    /// Stops container `id`'s task: its stop signal (SIGTERM unless set) to its first process
    /// only, as docker does, so an init or shell that traps it can stop its children in order;
    /// then, after `grace`, SIGKILL to every process; then deletes the task. No task is not an
    /// error.
    pub(crate) async fn stop_task(&self, id: &str, grace: Duration) -> Result<(), Error> {
        if let ContainerState::Running { .. } = self.task_state(id).await? {
            let signal = self
                .container_record(id)
                .await?
                .and_then(|c| c.labels.get(super::backend::STOP_SIGNAL_LABEL).cloned())
                .and_then(|s| s.parse::<nix::sys::signal::Signal>().ok())
                .unwrap_or(nix::sys::signal::Signal::SIGTERM);
            self.kill(id, signal as u32, false).await?;
            let mut tasks = self.tasks();
            let wait = tasks.wait(self.request(
                WaitRequest {
                    container_id: id.into(),
                    exec_id: String::new(),
                },
                None,
            ));
            // A grace too long for a timer (a negative --stop-timeout: wait forever) is none.
            let deadline = tokio::time::Instant::now().checked_add(grace);
            let waited = match deadline {
                Some(d) => tokio::time::timeout_at(d, wait).await,
                None => Ok(wait.await),
            };
            match waited {
                Ok(r) => {
                    r.map_err(Error::rpc(format!("task wait {id}")))?;
                }
                Err(_) => {
                    self.kill(id, libc::SIGKILL as u32, true).await?;
                    self.tasks()
                        .wait(self.request(
                            WaitRequest {
                                container_id: id.into(),
                                exec_id: String::new(),
                            },
                            None,
                        ))
                        .await
                        .map_err(Error::rpc(format!("task wait {id}")))?;
                }
            }
        }
        self.delete_task(id).await
    }

    /// Waits for container `id`'s task to exit and returns its exit status.
    pub(crate) async fn wait_task(&self, id: &str) -> Result<u32, Error> {
        let req = WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        };
        Ok(self
            .tasks()
            .wait(self.request(req, None))
            .await
            .map_err(Error::rpc(format!("task wait {id}")))?
            .into_inner()
            .exit_status)
    }

    /// Sends `signal` to the task's first process, or with `all` to every process in it (which
    /// matters when the container shares the host's pid namespace and its init's death would
    /// not take the rest with it).
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), Error> {
        let req = KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal,
            all,
        };
        match self.tasks().kill(self.request(req, None)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("task kill {id}"))(s)),
        }
    }

    async fn delete_task(&self, id: &str) -> Result<(), Error> {
        match self
            .tasks()
            .delete(self.request(
                DeleteTaskRequest {
                    container_id: id.into(),
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("task delete {id}"))(s)),
        }
    }

    /// The container record of `id`, if there is one.
    pub(crate) async fn container_record(&self, id: &str) -> Result<Option<Container>, Error> {
        match self
            .containers()
            .get(self.request(GetContainerRequest { id: id.into() }, None))
            .await
        {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::rpc(format!("container get {id}"))(s)),
        }
    }

    /// Sets one label of container `id`; a missing container is fine.
    pub(crate) async fn set_container_label(&self, id: &str, key: &str, value: &str) -> Result<(), Error> {
        use containerd_client::services::v1::UpdateContainerRequest;
        let container = Container {
            id: id.into(),
            labels: HashMap::from([(key.to_string(), value.to_string())]),
            ..Default::default()
        };
        let req = UpdateContainerRequest {
            container: Some(container),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{key}")],
            }),
        };
        match self.containers().update(self.request(req, None)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("container update {id}"))(s)),
        }
    }

    /// The key of container `id`'s writable snapshot.
    async fn snapshot_key(&self, id: &str) -> Result<String, Error> {
        self.container_record(id)
            .await?
            .map(|c| c.snapshot_key)
            .ok_or_else(|| Error::Unexpected {
                op: format!("container {id}"),
                detail: "no such container".into(),
            })
    }

    /// Deletes container `id` and its writable snapshot. A missing one is not an error.
    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), Error> {
        let Some(record) = self.container_record(id).await? else {
            return Ok(());
        };
        match self
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.into() }, None))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Error::rpc(format!("container delete {id}"))(s)),
        }
        self.remove_snapshot(&record.snapshot_key).await
    }
}

impl Containerd {
    /// The writable layer a deleted container `id` left behind, if one is still there: the
    /// newest active snapshot named `<id>-<nanoseconds>` (the names [`Containerd::make_container`]
    /// gives) on top of the layer `parent` (the image's top chain ID) that no container uses.
    pub(crate) async fn leftover_layer(&self, id: &str, parent: &str) -> Result<Option<String>, Error> {
        use containerd_client::services::v1::snapshots::{Kind, ListSnapshotsRequest};
        let req = ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            filters: vec![],
        };
        let mut stream = self
            .snapshots()
            .list(self.request(req, None))
            .await
            .map_err(Error::rpc("snapshot list"))?
            .into_inner();
        let mut best: Option<(u128, String)> = None;
        while let Some(page) = stream.message().await.map_err(Error::rpc("snapshot list"))? {
            for info in page.info {
                let Some(stamp) = info
                    .name
                    .strip_prefix(id)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .and_then(|n| n.parse::<u128>().ok())
                else {
                    continue;
                };
                if info.kind != Kind::Active as i32 || info.parent != parent {
                    continue;
                }
                if best.as_ref().is_none_or(|(b, _)| stamp > *b) {
                    best = Some((stamp, info.name));
                }
            }
        }
        let in_use: Vec<String> = self
            .containers()
            .list(self.request(
                containerd_client::services::v1::ListContainersRequest { filters: vec![] },
                None,
            ))
            .await
            .map_err(Error::rpc("container list"))?
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.snapshot_key)
            .collect();
        Ok(best.map(|(_, name)| name).filter(|n| !in_use.contains(n)))
    }

    /// Applies new limits to container `id`: its running task first (runc changes the cgroup;
    /// a refusal changes nothing), then the container's spec, which the next task starts from.
    pub(crate) async fn update_limits(
        &self,
        id: &str,
        limits: &crate::runtime::ResourceLimits,
    ) -> Result<(), Error> {
        use containerd_client::services::v1::{UpdateContainerRequest, UpdateTaskRequest};
        let unexpected = |detail: String| Error::Unexpected {
            op: format!("update {id}"),
            detail,
        };
        let mut container = self.container_record(id).await?.ok_or_else(|| Error::Rpc {
            op: format!("update {id}"),
            status: Box::new(tonic::Status::not_found(format!("no container {id}"))),
        })?;
        let any = container
            .spec
            .take()
            .ok_or_else(|| unexpected("the container has no spec".into()))?;
        let mut spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&any.value).map_err(|e| unexpected(e.to_string()))?;
        if let ContainerState::Running { .. } = self.task_state(id).await? {
            let mut resources = oci_spec::runtime::LinuxResources::default();
            crate::runtime::spec::set_limits(&mut resources, limits, true);
            let value = serde_json::to_vec(&resources).map_err(|e| unexpected(e.to_string()))?;
            let req = UpdateTaskRequest {
                container_id: id.into(),
                resources: Some(prost_types::Any {
                    type_url: RESOURCES_TYPE_URL.into(),
                    value,
                }),
                annotations: HashMap::new(),
            };
            self.tasks()
                .update(self.request(req, None))
                .await
                .map_err(|status| match status.code() {
                    // runc's own failure (containerd passes it on as Unknown): its reason alone.
                    tonic::Code::Unknown => Error::Refused {
                        op: format!("runc refused the new limits of {id}'s running task"),
                        reason: runc_reason(status.message()),
                    },
                    _ => Error::rpc(format!("task update {id}"))(status),
                })?;
        }
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut resources = linux.resources().clone().unwrap_or_default();
        crate::runtime::spec::set_limits(&mut resources, limits, false);
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
        let value = serde_json::to_vec(&spec).map_err(|e| unexpected(e.to_string()))?;
        let req = UpdateContainerRequest {
            container: Some(Container {
                id: id.into(),
                spec: Some(prost_types::Any {
                    type_url: any.type_url,
                    value,
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec".into()],
            }),
        };
        self.containers()
            .update(self.request(req, None))
            .await
            .map_err(Error::rpc(format!("container update {id}")))?;
        Ok(())
    }
}

/// runc's reason in a message containerd passes on from its shim
/// (`runc did not terminate successfully: exit status 1: <reason>\n: unknown`).
fn runc_reason(message: &str) -> String {
    let reason = message
        .rsplit_once("did not terminate successfully: ")
        .map_or(message, |(_, r)| r);
    let reason = reason
        .strip_prefix("exit status ")
        .and_then(|r| r.split_once(": "))
        .map_or(reason, |(_, r)| r);
    let reason = reason.trim_end_matches(": unknown").trim_end();
    reason.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::runc_reason;

    #[test]
    fn runc_reason_is_taken_out_of_containerds_wrapping() {
        assert_eq!(
            runc_reason(
                "runc did not terminate successfully: exit status 1: unable to set memory limit to 16777216 (current usage: 50827264, peak usage: 52318208)\n: unknown"
            ),
            "unable to set memory limit to 16777216 (current usage: 50827264, peak usage: 52318208)"
        );
        assert_eq!(runc_reason("something else"), "something else");
    }
}
