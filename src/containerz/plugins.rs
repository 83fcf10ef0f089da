//! The plugin RPCs over [`crate::manager::plugins`]: Deploy with `is_plugin` (the tarball is
//! stored as it comes), StartPlugin, StopPlugin, ListPlugins, RemovePlugin, RemovePluginTar.
//! A plugin is a docker managed plugin run as a TPC on containerd; its listed name is docker's,
//! `<instance>:latest`, and StopPlugin/RemovePlugin take either form.

use super::{Shared, on_manager, proto};
use crate::manager::plugin_lifecycle;
use crate::manager::plugins::{self, TarWriter};
use crate::manager::store::Store;
use crate::runtime::Runtime;
use proto::deploy_request::Request as In;
use proto::deploy_response::Response as Out;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// A Deploy with `is_plugin`: the tarball is received in chunks (each acknowledged with the
/// bytes so far, as the upstream client expects: one progress per chunk) into the plugin
/// store, checked against the announced size, and kept as it is until RemovePluginTar. The
/// success names it; a plugin tarball has no tag. Bounded as every Deploy: it holds its
/// `slot`, reserves its announced size in the store's filesystem, and ends when its client
/// sends or reads nothing for the idle timeout (the partial file is removed).
pub(super) async fn deploy<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    transfer: proto::ImageTransfer,
    mut inbound: Streaming<proto::DeployRequest>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<super::ResponseStream<proto::DeployResponse>, Status> {
    if transfer.remote_download.is_some() {
        return Err(Status::invalid_argument(
            "Deploy: a plugin tarball is uploaded in chunks, not downloaded",
        ));
    }
    let mut room = shared
        .deploys
        .reserve(&shared.settings.root, transfer.image_size)?;
    let idle = shared.deploys.idle;
    let store = Store::new(&shared.settings.root);
    let mut writer = TarWriter::new(&store, &transfer.name, transfer.image_size).map_err(super::status_of)?;
    let (tx, rx) = mpsc::channel(4);
    let name = transfer.name.clone();
    let respond = |r| Ok(proto::DeployResponse { response: Some(r) });
    tx.send(respond(Out::ImageTransferReady(proto::ImageTransferReady {
        chunk_size: super::DEPLOY_CHUNK as i32,
    })))
    .await
    .map_err(|_| Status::cancelled("Deploy: the client went away"))?;
    tokio::spawn(async move {
        let slot = slot;
        let outcome: Result<plugins::PluginTar, Status> = async {
            let mut received: u64 = 0;
            loop {
                let message = tokio::time::timeout(idle, inbound.message())
                    .await
                    .map_err(|_| super::images::idle_status(idle, "sent nothing"))??
                    .ok_or_else(|| {
                        Status::invalid_argument("Deploy: the stream ended before ImageTransferEnd")
                    })?;
                match message.request {
                    Some(In::Content(data)) => {
                        received += data.len() as u64;
                        writer.write(&data).map_err(super::status_of)?;
                        room.arrived(data.len() as u64);
                        let progress = tx.send(respond(Out::ImageTransferProgress(
                            proto::ImageTransferProgress {
                                bytes_received: received,
                            },
                        )));
                        tokio::time::timeout(idle, progress)
                            .await
                            .map_err(|_| super::images::idle_status(idle, "read nothing"))?
                            .map_err(|_| Status::cancelled("Deploy: the client went away"))?;
                    }
                    Some(In::ImageTransferEnd(_)) => {
                        return tokio::task::spawn_blocking(move || writer.finish())
                            .await
                            .map_err(|e| Status::internal(e.to_string()))?
                            .map_err(super::status_of);
                    }
                    _ => {
                        return Err(Status::invalid_argument(
                            "Deploy: a second ImageTransfer, or an empty message",
                        ));
                    }
                }
            }
        }
        .await;
        let answer = match outcome {
            Ok(tar) => {
                tracing::info!(plugin = %name, size = tar.size, digest = %tar.digest, "Deploy stored a plugin tarball");
                respond(Out::ImageTransferSuccess(proto::ImageTransferSuccess {
                    name: tar.name,
                    tag: String::new(),
                    image_size: tar.size,
                }))
            }
            Err(e) => Err(e),
        };
        // The slot is free once the tarball is stored or dropped; the answer waits for a
        // client that reads no longer than the idle timeout.
        drop(slot);
        let _ = tokio::time::timeout(idle, tx.send(answer)).await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// StartPlugin: the deployed tarball `name` as plugin `instance_name` with `config`.
pub(super) async fn start<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::StartPluginRequest,
) -> Result<proto::StartPluginResponse, Status> {
    let instance = r.instance_name.clone();
    on_manager(shared, move |s| async move {
        plugin_lifecycle::start(
            &s.runtime,
            &s.settings,
            &r.name,
            plugins::instance_name(&r.instance_name),
            &r.config,
            Arc::new(super::images::Quiet),
        )
        .await
    })
    .await?;
    tracing::info!(plugin = %instance, "StartPlugin started a plugin");
    Ok(proto::StartPluginResponse {
        instance_name: instance,
    })
}

/// StopPlugin: a missing plugin is a no-op (the proto).
pub(super) async fn stop<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::StopPluginRequest,
) -> Result<proto::StopPluginResponse, Status> {
    on_manager(shared, move |s| async move {
        plugin_lifecycle::stop(&s.runtime, &s.settings, &r.instance_name).await
    })
    .await?;
    Ok(proto::StopPluginResponse {})
}

/// RemovePlugin: a missing plugin is a no-op (the proto).
pub(super) async fn remove<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::RemovePluginRequest,
) -> Result<proto::RemovePluginResponse, Status> {
    on_manager(shared, move |s| async move {
        plugin_lifecycle::remove(&s.runtime, &s.settings, &r.instance_name).await
    })
    .await?;
    Ok(proto::RemovePluginResponse {})
}

/// RemovePluginTar: NOT_FOUND for a tarball that is not there (the proto).
pub(super) async fn remove_tar<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::RemovePluginTarRequest,
) -> Result<proto::RemovePluginTarResponse, Status> {
    on_manager(shared, move |s| async move {
        plugins::remove_tar(&Store::new(&s.settings.root), &r.name)
    })
    .await?;
    Ok(proto::RemovePluginTarResponse {})
}

/// ListPlugins: every plugin, or the one named `instance_name` (either form): docker's name
/// `<instance>:latest`, its ID, the tarball's SHA-256 and the config it runs with.
pub(super) async fn list<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    r: proto::ListPluginsRequest,
) -> Result<proto::ListPluginsResponse, Status> {
    let found = on_manager(shared, move |s| async move {
        plugins::list(&s.settings, &r.instance_name)
    })
    .await?;
    let plugins = found
        .into_iter()
        .map(|(record, p)| proto::Plugin {
            id: p.id,
            instance_name: format!("{}:latest", record.name),
            hash: p
                .tar_digest
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .map(|hash| proto::gnoi::types::HashType {
                    method: proto::gnoi::types::hash_type::HashMethod::Sha256 as i32,
                    hash,
                }),
            config: serde_json::to_string_pretty(&p.config).expect("configs serialize"),
        })
        .collect();
    Ok(proto::ListPluginsResponse { plugins })
}
