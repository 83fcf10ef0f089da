//! Deploy, ListImage, RemoveImage.
//!
//! Deploy streams the client's chunks straight into the import engine through a bounded pipe
//! (nothing is written to a temporary file). The pipe only reports the end of the archive once
//! ImageTransferEnd arrived and the byte count matches `image_size`; anything else makes the
//! reader fail, so the import is taken back and nothing of it is left.
//!
//! Deploys are bounded ([`Deploys`]): at most `max_deploys` run at once (more are
//! RESOURCE_EXHAUSTED at once); the space each announces is reserved until it ends, so Deploys
//! that each fit but together do not are refused rather than all started; and a Deploy whose
//! client sends nothing, or reads nothing, for `deploy_idle_timeout` is cancelled, its import
//! taken back.

use super::{Shared, on_manager, proto};
use crate::manager::store::ImagesAccess;
use crate::manager::{self, ImageSource, Progress};
use crate::runtime::{ArchiveInput, Runtime};
use crate::source::registry::RegistryRequest;
use crate::source::ssh::{SshProtocol, SshRequest};
use proto::deploy_request::Request as In;
use proto::deploy_response::Response as Out;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// Chunks in flight between the gRPC stream and the importer (bounds memory per Deploy).
const PIPE_DEPTH: usize = 4;
/// Free space Deploy wants per announced byte: the blob in the content store plus its
/// unpacked snapshot.
const SPACE_FACTOR: u64 = 2;
/// Default cap on Deploys in flight.
pub const DEFAULT_MAX_DEPLOYS: usize = 4;
/// Default time a Deploy's client may send (or read) nothing before the Deploy is cancelled.
pub const DEFAULT_DEPLOY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What bounds Deploys: the slots, the idle timeout, and the space reserved by those in
/// flight.
pub struct Deploys {
    slots: Arc<Semaphore>,
    max: usize,
    pub(super) idle: Duration,
    reserved: Arc<Mutex<u64>>,
}

impl Default for Deploys {
    fn default() -> Self {
        Deploys::new(DEFAULT_MAX_DEPLOYS, DEFAULT_DEPLOY_IDLE_TIMEOUT)
    }
}

impl Deploys {
    /// At most `max` Deploys at once, each cancelled after `idle` without a message.
    pub fn new(max: usize, idle: Duration) -> Deploys {
        Deploys {
            slots: Arc::new(Semaphore::new(max)),
            max,
            idle,
            reserved: Arc::default(),
        }
    }

    /// A slot, or RESOURCE_EXHAUSTED when every one is taken.
    pub(super) fn slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "Deploy: {} Deploys are in flight already (max_deploys); try again when one has ended",
                self.max
            ))
        })
    }

    /// Reserves room for an image of `size` bytes in `root`'s filesystem, or RESOURCE_EXHAUSTED
    /// when its free space, less what Deploys in flight reserved, is short of it.
    pub(super) fn reserve(&self, root: &std::path::Path, size: u64) -> Result<Reservation, Status> {
        let mut reserved = self.reserved.lock().expect("never poisoned");
        let free = free_space(root)?;
        let needed = size.saturating_mul(SPACE_FACTOR);
        let available = free.saturating_sub(*reserved);
        if needed > available {
            let others = if *reserved > 0 {
                format!(
                    " ({} of the {free} free are reserved by Deploys in flight)",
                    *reserved
                )
            } else {
                String::new()
            };
            return Err(Status::resource_exhausted(format!(
                "Deploy: an image of {size} bytes needs about {needed} bytes free in {}; {available} are{others}",
                root.display()
            )));
        }
        *reserved += needed;
        Ok(Reservation {
            ledger: self.reserved.clone(),
            held: needed,
        })
    }
}

/// Space reserved for one Deploy: it shrinks as the bytes arrive (they then take real space),
/// and what is left is given back when the Deploy ends.
pub(super) struct Reservation {
    ledger: Arc<Mutex<u64>>,
    held: u64,
}

impl Reservation {
    /// `bytes` of the image arrived.
    pub(super) fn arrived(&mut self, bytes: u64) {
        let release = bytes.saturating_mul(SPACE_FACTOR).min(self.held);
        self.held -= release;
        *self.ledger.lock().expect("never poisoned") -= release;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        *self.ledger.lock().expect("never poisoned") -= self.held;
    }
}

/// The status of a Deploy cancelled for its client's silence.
pub(super) fn idle_status(idle: Duration, what: &str) -> Status {
    Status::deadline_exceeded(format!(
        "Deploy: the client {what} for {} s (deploy_idle_timeout); the transfer was cancelled \
         and what it had written removed",
        idle.as_secs()
    ))
}

/// What the import reads: chunks as they arrive, then EOF or the reason the transfer failed.
struct ChunkPipe {
    rx: mpsc::Receiver<Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
}

impl Read for ChunkPipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(reason)) => return Err(std::io::Error::other(reason)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Progress is not drawn on the server.
pub(super) struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A remote-download Deploy's progress. The download stops, and its import takes back what it
/// made, when the client that asked for it has gone (its answer stream was dropped), so an
/// abandoned Deploy does not go on filling the disk; or when the size the source announces
/// (an HTTP length, an SSH file's size, a registry's layer sizes) does not fit, checked as
/// for a chunked Deploy before the first byte is taken.
struct RemoteProgress<R> {
    answers: mpsc::Sender<Result<proto::DeployResponse, Status>>,
    shared: Arc<Shared<R>>,
    no_room: Mutex<Option<Status>>,
    /// The room the source's announced size took, until the import ends.
    room: Mutex<Option<Reservation>>,
}

impl<R> RemoteProgress<R> {
    /// Why the source did not fit, when that is what stopped the import.
    fn no_room(&self) -> Option<Status> {
        self.no_room.lock().expect("never poisoned").take()
    }
}

impl<R: Send + Sync> Progress for RemoteProgress<R> {
    fn start(&self, _: &str, total: Option<u64>) {
        if let Some(size) = total {
            match self.shared.deploys.reserve(&self.shared.content_root, size) {
                Ok(room) => *self.room.lock().expect("never poisoned") = Some(room),
                Err(status) => *self.no_room.lock().expect("never poisoned") = Some(status),
            }
        }
    }
    fn advance(&self, n: u64) {
        if let Some(room) = self.room.lock().expect("never poisoned").as_mut() {
            room.arrived(n);
        }
    }
    fn finish(&self) {}
    fn cancelled(&self) -> Option<String> {
        if let Some(status) = &*self.no_room.lock().expect("never poisoned") {
            return Some(status.message().to_string());
        }
        self.answers
            .is_closed()
            .then(|| "the Deploy client went away".to_string())
    }
}

fn response(r: Out) -> Result<proto::DeployResponse, Status> {
    Ok(proto::DeployResponse { response: Some(r) })
}

/// Deploy: see the module docs.
pub(super) async fn deploy<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    mut inbound: Streaming<proto::DeployRequest>,
) -> Result<super::ResponseStream<proto::DeployResponse>, Status> {
    // Held until the Deploy has ended and its import finished or been taken back.
    let slot = shared.deploys.slot()?;
    let idle = shared.deploys.idle;
    let first = tokio::time::timeout(idle, inbound.message())
        .await
        .map_err(|_| idle_status(idle, "sent no ImageTransfer"))?;
    let transfer = match first? {
        Some(proto::DeployRequest {
            request: Some(In::ImageTransfer(t)),
        }) => t,
        Some(_) => {
            return Err(Status::invalid_argument(
                "Deploy: the first message must be an ImageTransfer",
            ));
        }
        None => {
            return Err(Status::invalid_argument(
                "Deploy: the stream ended before an ImageTransfer",
            ));
        }
    };
    if transfer.is_plugin {
        return super::plugins::deploy(shared, transfer, inbound, slot).await;
    }
    let reference = super::reference(&transfer.name, &transfer.tag)?;
    let tag = if transfer.tag.is_empty() {
        "latest".to_string()
    } else {
        transfer.tag.clone()
    };
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    if let Some(remote) = transfer.remote_download.clone() {
        let source = remote_source(shared, &remote)?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let progress = Arc::new(RemoteProgress {
                answers: tx.clone(),
                shared: shared.clone(),
                no_room: Default::default(),
                room: Default::default(),
            });
            let imported = on_manager(&shared, {
                let (reference, progress) = (reference.clone(), progress.clone());
                move |s| async move {
                    let store = manager::store::Store::new(&s.settings.root);
                    manager::import_image(&s.runtime, &store, &source, Some(reference), progress).await
                }
            })
            .await;
            // RESOURCE_EXHAUSTED, as for a chunked Deploy, rather than the import's read error.
            let imported = match (imported, progress.no_room()) {
                (Err(_), Some(status)) => Err(status),
                (imported, _) => imported,
            };
            if let Err(e) = &imported {
                tracing::info!(image = %reference, "Deploy with remote_download failed: {}", e.message());
            }
            let result = imported.map(|images| {
                let size = images.iter().map(|i| i.size).sum();
                Out::ImageTransferSuccess(proto::ImageTransferSuccess {
                    name: transfer.name,
                    tag,
                    image_size: size,
                })
            });
            let _ = tx.send(result.and_then(response)).await;
        });
        return Ok(Box::pin(ReceiverStream::new(rx)));
    }
    let room = shared
        .deploys
        .reserve(&shared.content_root, transfer.image_size)?;
    let shared = shared.clone();
    tokio::spawn(async move {
        let outcome = receive(&shared, transfer, tag, reference, inbound, room, &tx).await;
        // The slot is free once the import ended; the error waits for a client that reads
        // no longer than the idle timeout (it may be why the Deploy failed).
        drop(slot);
        if let Err(status) = outcome {
            let _ = tokio::time::timeout(idle, tx.send(Err(status))).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Free bytes (for unprivileged users: root's reserve does not count) in `root`'s filesystem.
fn free_space(root: &std::path::Path) -> Result<u64, Status> {
    let stat = nix::sys::statvfs::statvfs(root)
        .map_err(|e| Status::internal(format!("cannot read the free space of {}: {e}", root.display())))?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// The chunked transfer: ready, chunks with progress, end, import result.
async fn receive<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    transfer: proto::ImageTransfer,
    tag: String,
    reference: String,
    mut inbound: Streaming<proto::DeployRequest>,
    mut room: Reservation,
    tx: &mpsc::Sender<Result<proto::DeployResponse, Status>>,
) -> Result<(), Status> {
    let announced = transfer.image_size;
    let idle = shared.deploys.idle;
    // An answer the client does not take within the idle timeout: it stopped reading.
    let answer = |message| async move {
        match tokio::time::timeout(idle, tx.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Status::cancelled("Deploy: the client went away")),
            Err(_) => Err(idle_status(idle, "read no answer")),
        }
    };
    let (chunks_tx, pipe_rx) = mpsc::channel(PIPE_DEPTH);
    // Dropped (EOF) only when the transfer ended as announced.
    let mut chunks = Some(chunks_tx);
    let pipe = ChunkPipe {
        rx: pipe_rx,
        current: bytes::Bytes::new(),
    };
    let import = tokio::spawn({
        let shared = shared.clone();
        let reference = reference.clone();
        async move {
            on_manager(&shared, move |s| async move {
                let store = manager::store::Store::new(&s.settings.root);
                let _images =
                    manager::lock_images(&store, ImagesAccess::Import, manager::IMAGES_PATIENCE).await?;
                let input = ArchiveInput::Stream(Box::new(pipe));
                let imported = s.runtime.import_image(input, Some(reference)).await?;
                manager::report_moved_tags(&store, &imported, &Quiet);
                Ok(imported)
            })
            .await
        }
    });
    let ready = answer(response(Out::ImageTransferReady(proto::ImageTransferReady {
        chunk_size: super::DEPLOY_CHUNK as i32,
    })))
    .await;

    let mut received: u64 = 0;
    // Why the transfer failed, if it did; the import is then made to fail and awaited, so its
    // cleanup has finished before the client hears the error.
    let failure: Option<Status> = if let Err(status) = ready {
        Some(status)
    } else {
        loop {
            let message = match tokio::time::timeout(idle, inbound.message()).await {
                Err(_) => break Some(idle_status(idle, "sent nothing")),
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => {
                    break Some(Status::invalid_argument(
                        "Deploy: the stream ended before ImageTransferEnd",
                    ));
                }
                Ok(Err(s)) => break Some(s),
            };
            match message.request {
                Some(In::Content(data)) => {
                    received += data.len() as u64;
                    room.arrived(data.len() as u64);
                    if received > announced {
                        break Some(Status::invalid_argument(format!(
                            "Deploy: more data than the announced image_size of {announced} bytes"
                        )));
                    }
                    // The importer stopped reading: it failed; its error is reported below.
                    let pipe = chunks.as_ref().expect("open until the end");
                    if pipe.send(Ok(data)).await.is_err() {
                        break None;
                    }
                    let progress = Out::ImageTransferProgress(proto::ImageTransferProgress {
                        bytes_received: received,
                    });
                    if let Err(status) = answer(response(progress)).await {
                        break Some(status);
                    }
                }
                Some(In::ImageTransferEnd(_)) if received == announced => {
                    chunks = None;
                    break None;
                }
                Some(In::ImageTransferEnd(_)) => {
                    break Some(Status::invalid_argument(format!(
                        "Deploy: {received} bytes arrived but image_size announced {announced}"
                    )));
                }
                Some(In::ImageTransfer(_)) | None => {
                    break Some(Status::invalid_argument(
                        "Deploy: only content and ImageTransferEnd may follow the ImageTransfer",
                    ));
                }
            }
        }
    };
    if let Some(status) = failure {
        // The importer fails on this instead of reading an end, and takes its work back; the
        // send fails at once if it already quit.
        if let Some(pipe) = chunks.take() {
            let _ = pipe.send(Err(status.message().to_string())).await;
        }
        let _ = import.await;
        if status.code() == tonic::Code::DeadlineExceeded {
            tracing::info!(image = %reference, bytes = received, "Deploy cancelled: {}", status.message());
        }
        return Err(status);
    }
    let imported = import
        .await
        .map_err(|e| Status::internal(format!("import task failed: {e}")))??;
    tracing::info!(image = %reference, bytes = received, "Deploy imported an image");
    let size = imported.iter().map(|i| i.size).sum::<u64>().max(received);
    drop(room);
    answer(response(Out::ImageTransferSuccess(proto::ImageTransferSuccess {
        name: transfer.name,
        tag,
        image_size: size,
    })))
    .await
}

/// The image source a RemoteDownload names. HTTP(S) take a URL (the scheme may be left out);
/// SFTP and SCP take `host[:port]:/path` (upstream's `host:/path`); UNKNOWN with an image
/// reference pulls from a registry.
fn remote_source<R>(
    shared: &Shared<R>,
    remote: &crate::containerz::proto::gnoi::common::RemoteDownload,
) -> Result<ImageSource, Status> {
    use crate::containerz::proto::gnoi::common::remote_download::Protocol;
    use crate::containerz::proto::gnoi::types::credentials::Password;
    let credentials = match &remote.credentials {
        None => None,
        Some(c) => match &c.password {
            Some(Password::Cleartext(p)) => Some((c.username.clone(), p.clone())),
            None => Some((c.username.clone(), String::new())),
            Some(Password::Hashed(_)) => {
                return Err(Status::invalid_argument(
                    "Deploy: a hashed password cannot log in to a download server; send it in cleartext over this TLS channel",
                ));
            }
        },
    };
    let config = crate::config::FileConfig::load(&shared.settings.root).map_err(Status::internal)?;
    // Empty fields leave it to tpcm.toml's source_vrf / source_address, else to routing.
    let given = |field: &str| Some(field.trim()).filter(|f| !f.is_empty()).map(str::to_string);
    let egress = config
        .egress(
            given(&remote.source_vrf).as_deref(),
            given(&remote.source_address).as_deref(),
        )
        .map_err(|e| Status::invalid_argument(format!("Deploy: {e}")))?;
    let path = remote.path.trim();
    if path.is_empty() {
        return Err(Status::invalid_argument("Deploy: remote_download.path is empty"));
    }
    let protocol = Protocol::try_from(remote.protocol).map_err(|_| {
        Status::invalid_argument(format!(
            "Deploy: download protocol {} is not one of the proto's",
            remote.protocol
        ))
    })?;
    match protocol {
        Protocol::Http | Protocol::Https => {
            let scheme = if protocol == Protocol::Http {
                "http"
            } else {
                "https"
            };
            let url = if path.contains("://") {
                path.to_string()
            } else {
                format!("{scheme}://{path}")
            };
            Ok(ImageSource::Http {
                url,
                timeouts: config.timeouts(),
                login: credentials,
                egress,
            })
        }
        Protocol::Sftp | Protocol::Scp => {
            let (server, file) = split_ssh_path(path)
                .ok_or_else(|| Status::invalid_argument(format!("Deploy: {path:?} is not host:/path")))?;
            let (username, password) = credentials.ok_or_else(|| {
                Status::invalid_argument("Deploy: SFTP and SCP need credentials (a user name)")
            })?;
            let accept = shared.ssh_accept_new_host_keys;
            Ok(ImageSource::Ssh(SshRequest {
                protocol: if protocol == Protocol::Sftp {
                    SshProtocol::Sftp
                } else {
                    SshProtocol::Scp
                },
                server,
                username,
                password: (!password.is_empty()).then_some(password),
                identity: None,
                path: file,
                known_hosts: vec![shared.settings.root.join("known_hosts")],
                accept_host_key: Arc::new(move |_| accept),
                ask_password: None,
                timeouts: config.timeouts(),
                egress,
            }))
        }
        Protocol::Unknown => {
            if !crate::source::registry::is_image_reference(path) {
                return Err(Status::invalid_argument(format!(
                    "Deploy: {path:?} with protocol UNKNOWN must be an image reference (a registry pull)"
                )));
            }
            Ok(ImageSource::Registry(RegistryRequest {
                reference: path.to_string(),
                credentials,
                timeouts: config.timeouts(),
                insecure_registries: config.insecure_registries,
                egress,
            }))
        }
    }
}

/// `host:/path`, `host:port:/path`, `[v6]:port:/path` → (server, path).
fn split_ssh_path(path: &str) -> Option<(String, String)> {
    let i = path.find(":/")?;
    let (server, file) = (&path[..i], &path[i + 1..]);
    (!server.is_empty()).then(|| (server.to_string(), file.to_string()))
}

/// ListImage: every image as name, tag and manifest digest. Filters: `name` (familiar or full
/// name), `tag`, `id` (digest); values of one key are alternatives, keys must all match.
pub(super) async fn list<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    request: proto::ListImageRequest,
) -> Result<super::ResponseStream<proto::ListImageResponse>, Status> {
    super::check_filter_keys(
        "ListImage",
        request.filter.iter().map(|f| f.key.as_str()),
        &["name", "tag", "id"],
    )?;
    let images = on_manager(shared, |s| async move { manager::list_images(&s.runtime).await }).await?;
    let mut out = Vec::new();
    for image in images {
        let (name, tag) = super::familiar(&image.name);
        let (repository, _) = super::split_reference(&image.name);
        let matches = request.filter.iter().all(|f| {
            f.value.iter().any(|v| match f.key.as_str() {
                "name" => v == &name || v == repository || v == &image.name,
                "tag" => v == &tag,
                _ => v == &image.digest,
            })
        });
        if !matches {
            continue;
        }
        out.push(Ok(proto::ListImageResponse {
            id: image.digest,
            image_name: name,
            tag,
        }));
        if request.limit > 0 && out.len() >= request.limit as usize {
            break;
        }
    }
    Ok(Box::pin(tokio_stream::iter(out)))
}

/// RemoveImage: FAILED_PRECONDITION while a container uses the image, unless `force` (the
/// containers keep running on their snapshots); NOT_FOUND when there is no such image.
pub(super) async fn remove<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    request: proto::RemoveImageRequest,
) -> Result<proto::RemoveImageResponse, Status> {
    let reference = super::held_reference(&request.name, &request.tag)?;
    on_manager(shared, move |s| async move {
        let store = manager::store::Store::new(&s.settings.root);
        manager::remove_image(&s.runtime, &store, &reference, request.force).await?;
        tracing::info!(image = %reference, "RemoveImage removed an image");
        Ok(())
    })
    .await?;
    Ok(proto::RemoveImageResponse {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_paths_split_at_the_first_colon_slash() {
        assert_eq!(split_ssh_path("h:/a/b"), Some(("h".into(), "/a/b".into())));
        assert_eq!(
            split_ssh_path("127.0.0.1:2222:/x.tar"),
            Some(("127.0.0.1:2222".into(), "/x.tar".into()))
        );
        assert_eq!(split_ssh_path("/x.tar"), None);
        assert_eq!(split_ssh_path(":/x"), None);
    }

    #[test]
    fn deploys_take_slots_and_reserve_their_space_until_they_end() {
        let deploys = Deploys::new(2, Duration::from_secs(60));
        let a = deploys.slot().unwrap();
        let _b = deploys.slot().unwrap();
        assert_eq!(deploys.slot().unwrap_err().code(), tonic::Code::ResourceExhausted);
        drop(a);
        let _c = deploys.slot().unwrap();

        let root = tempfile::tempdir().unwrap();
        // Each needs 60 % of the free space (twice its size): one fits, two do not.
        let size = free_space(root.path()).unwrap() * 3 / 10;
        let mut first = deploys.reserve(root.path(), size).unwrap();
        let e = deploys.reserve(root.path(), size).err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().contains("reserved by Deploys in flight"),
            "{}",
            e.message()
        );
        // Half the first one's bytes arrived: half its reservation is given back (those bytes
        // now take real space, which this test's empty directory does not show).
        first.arrived(size / 2);
        let second = deploys.reserve(root.path(), size).unwrap();
        drop(first);
        drop(second);
        assert_eq!(*deploys.reserved.lock().unwrap(), 0, "everything given back");
    }

    #[test]
    fn the_pipe_ends_only_as_told() {
        let (tx, rx) = mpsc::channel(4);
        let mut pipe = ChunkPipe {
            rx,
            current: bytes::Bytes::new(),
        };
        tx.try_send(Ok(bytes::Bytes::from_static(b"abc"))).unwrap();
        tx.try_send(Err("cut".into())).unwrap();
        let mut buf = [0u8; 2];
        assert_eq!(pipe.read(&mut buf).unwrap(), 2);
        assert_eq!(pipe.read(&mut buf).unwrap(), 1);
        assert_eq!(pipe.read(&mut buf).unwrap_err().to_string(), "cut");
        drop(tx);
        assert_eq!(pipe.read(&mut buf).unwrap(), 0);
    }
}
