//! The gNOI containerz service (`tpcm serve`): the second front door, for orchestration
//! systems. It drives the same manager as the CLI — a gNOI container instance is a TPC, so
//! `tpcm list` shows it and ListContainer shows CLI installs — and it reaches the runtime only
//! through [`crate::runtime::Runtime`].
//!
//! One file per RPC group: `images` (Deploy, ListImage, RemoveImage), `containers` (Start, Stop,
//! Remove, List, Update, Log), `volumes`, `plugins` (docker managed plugins run as TPCs);
//! `auth` decides who may call what, `serve` runs the TLS server, the janitor and the restart
//! supervisor. Conformance per RPC and field: `docs/containerz.md`.

pub mod auth;
pub mod client;
mod containers;
mod images;
mod listener;
mod plugins;
pub mod proto;
pub mod serve;
mod tls;
mod volumes;

/// The container settings a gNOI `StartContainerRequest` asks for, checked exactly as the
/// server checks them (volumes are looked up in `store`). For the fuzz target
/// (`fuzz/fuzz_targets/gnoi_start.rs`); the server itself calls the same translation.
pub fn start_request_settings(
    store: &crate::manager::store::Store,
    r: &proto::StartContainerRequest,
) -> Result<crate::tpc_spec::ContainerSettings, tonic::Status> {
    containers::start_settings(store, r)
}

use crate::config::Settings;
use crate::manager;
use crate::runtime::Runtime;
use auth::{Authz, Scope};
use proto::containerz_server;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Content chunk Deploy asks for (upstream allows up to 4 MiB). 1 MiB is the import engine's own
/// chunk size; 4 MiB chunks measured no faster (`benches/deploy.rs`, `docs/performance.md`) and
/// hold four times the memory in flight.
pub const DEPLOY_CHUNK: usize = 1 << 20;
/// Largest message the server decodes: a chunk of the most upstream allows, with room to spare,
/// for clients that ignore the announced chunk size.
pub const MAX_MESSAGE: usize = 8 << 20;

/// HTTP/2 flow-control window per stream (the connection gets twice this): a few Deploy
/// chunks in flight.
pub const FLOW_WINDOW: u32 = 8 << 20;

/// Most Log streams open at once, followed or not (each holds a blocking thread while it reads,
/// or waits for output or for a slow client).
pub const MAX_LOG_STREAMS: usize = 64;

/// Most asynchronous UpdateContainer calls running at once (each runs an upgrade after its
/// call has answered, so the write-call bound does not cover it).
pub const MAX_ASYNC_UPDATES: usize = 16;

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Everything the RPCs share.
pub struct Shared<R> {
    /// The container runtime.
    pub runtime: R,
    /// Where the store, data and units are.
    pub settings: Settings,
    /// Who may call what.
    pub authz: Authz,
    /// The filesystem Deploy checks for space (containerd's root).
    pub content_root: std::path::PathBuf,
    /// Whether SSH downloads trust a host key they have not seen (recording it).
    pub ssh_accept_new_host_keys: bool,
    /// The outcome of the last UpdateContainer per instance, shown as a ListContainer label.
    pub updates: Mutex<HashMap<String, String>>,
    /// Cancelled when the server stops: followed logs end, so the graceful stop can finish.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Log streams open at once (each holds a thread), at most [`MAX_LOG_STREAMS`].
    pub log_streams: Arc<tokio::sync::Semaphore>,
    /// Asynchronous updates running, at most [`MAX_ASYNC_UPDATES`].
    pub async_updates: Arc<tokio::sync::Semaphore>,
    /// Held (shared) by every asynchronous UpdateContainer while it runs; the server takes it
    /// exclusively before it exits, so no upgrade is cut off halfway.
    pub updates_running: Arc<tokio::sync::RwLock<()>>,
    /// Deploy's caps: slots, idle timeout, space reserved by Deploys in flight.
    pub deploys: images::Deploys,
}

impl<R> Shared<R> {
    /// The shared state for `runtime` with the rest at its defaults.
    pub fn new(
        runtime: R,
        settings: Settings,
        authz: Authz,
        content_root: std::path::PathBuf,
        ssh_accept_new_host_keys: bool,
    ) -> Shared<R> {
        Shared {
            runtime,
            settings,
            authz,
            content_root,
            ssh_accept_new_host_keys,
            updates: Mutex::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            log_streams: Arc::new(tokio::sync::Semaphore::new(MAX_LOG_STREAMS)),
            async_updates: Arc::new(tokio::sync::Semaphore::new(MAX_ASYNC_UPDATES)),
            updates_running: Arc::default(),
            deploys: images::Deploys::default(),
        }
    }
}

/// The containerz service over a runtime.
pub struct Containerz<R> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for Containerz<R> {
    fn clone(&self) -> Self {
        Containerz {
            shared: self.shared.clone(),
        }
    }
}

impl<R: Runtime + 'static> Containerz<R> {
    /// The service over `shared`.
    pub fn new(shared: Shared<R>) -> Self {
        Containerz {
            shared: Arc::new(shared),
        }
    }

    /// The state every RPC shares (the server's shutdown uses it).
    pub fn shared(&self) -> Arc<Shared<R>> {
        self.shared.clone()
    }

    /// The tonic service, with the message size Deploy needs.
    pub fn into_server(self) -> containerz_server::ContainerzServer<Self> {
        containerz_server::ContainerzServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn authorize<T>(&self, request: &Request<T>, scope: Scope, rpc: &str) -> Result<String, Status> {
        self.shared.authz.authorize(request, scope, rpc)
    }
}

/// Runs a manager operation on a blocking thread with its own `block_on`: the manager's
/// futures need not be `Send` (they borrow progress callbacks), and its file I/O is blocking.
pub(crate) async fn on_manager<R, T, F, Fut>(shared: &Arc<Shared<R>>, f: F) -> Result<T, Status>
where
    R: Runtime + 'static,
    T: Send + 'static,
    F: FnOnce(Arc<Shared<R>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, manager::Error>>,
{
    let shared = shared.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(f(shared)))
        .await
        .map_err(|e| Status::internal(format!("worker thread failed: {e}")))?
        .map_err(status_of)
}

/// The gRPC status for a manager error (codes as the upstream proto comments ask).
pub(crate) fn status_of(e: manager::Error) -> Status {
    use crate::runtime::Error as R;
    use manager::Error as M;
    let msg = e.to_string();
    match e {
        M::Invalid(_) => Status::invalid_argument(msg),
        M::NotFound(_) => Status::not_found(msg),
        M::AlreadyExists(_) => Status::already_exists(msg),
        M::InUse(_) => Status::failed_precondition(msg),
        M::PortInUse(_) => Status::unavailable(msg),
        M::RolledBack(_) => Status::aborted(msg),
        M::RollbackFailed(_) | M::Internal(_) => Status::internal(msg),
        M::Store(manager::store::StoreError::Busy(_)) => Status::unavailable(msg),
        M::Store(_) => Status::internal(msg),
        M::Source(_) => Status::unavailable(msg),
        M::Runtime(r) => match r {
            R::Archive(_) | R::InvalidRequest(_) => Status::invalid_argument(msg),
            R::ImageNotFound(_) | R::NotFound(_) => Status::not_found(msg),
            R::AlreadyExists(_) => Status::already_exists(msg),
            R::FailedPrecondition(_) => Status::failed_precondition(msg),
            R::Exhausted(_) => Status::resource_exhausted(msg),
            R::Unreachable(_) | R::Source(_) => Status::unavailable(msg),
            R::Backend(_) | R::Internal(_) => Status::internal(msg),
        },
    }
}

#[tonic::async_trait]
impl<R: Runtime + 'static> containerz_server::Containerz for Containerz<R> {
    type DeployStream = ResponseStream<proto::DeployResponse>;
    type ListImageStream = ResponseStream<proto::ListImageResponse>;
    type ListContainerStream = ResponseStream<proto::ListContainerResponse>;
    type LogStream = ResponseStream<proto::LogResponse>;
    type ListVolumeStream = ResponseStream<proto::ListVolumeResponse>;

    async fn deploy(
        &self,
        request: Request<Streaming<proto::DeployRequest>>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        self.authorize(&request, Scope::Write, "Deploy")?;
        images::deploy(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_image(
        &self,
        request: Request<proto::ListImageRequest>,
    ) -> Result<Response<Self::ListImageStream>, Status> {
        self.authorize(&request, Scope::Read, "ListImage")?;
        images::list(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_image(
        &self,
        request: Request<proto::RemoveImageRequest>,
    ) -> Result<Response<proto::RemoveImageResponse>, Status> {
        self.authorize(&request, Scope::Write, "RemoveImage")?;
        images::remove(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_container(
        &self,
        request: Request<proto::RemoveContainerRequest>,
    ) -> Result<Response<proto::RemoveContainerResponse>, Status> {
        self.authorize(&request, Scope::Write, "RemoveContainer")?;
        containers::remove(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_container(
        &self,
        request: Request<proto::ListContainerRequest>,
    ) -> Result<Response<Self::ListContainerStream>, Status> {
        self.authorize(&request, Scope::Read, "ListContainer")?;
        containers::list(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        request: Request<proto::StartContainerRequest>,
    ) -> Result<Response<proto::StartContainerResponse>, Status> {
        self.authorize(&request, Scope::Write, "StartContainer")?;
        containers::start(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_container(
        &self,
        request: Request<proto::StopContainerRequest>,
    ) -> Result<Response<proto::StopContainerResponse>, Status> {
        self.authorize(&request, Scope::Write, "StopContainer")?;
        containers::stop(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_container(
        &self,
        request: Request<proto::UpdateContainerRequest>,
    ) -> Result<Response<proto::UpdateContainerResponse>, Status> {
        self.authorize(&request, Scope::Write, "UpdateContainer")?;
        containers::update(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn log(&self, request: Request<proto::LogRequest>) -> Result<Response<Self::LogStream>, Status> {
        self.authorize(&request, Scope::Read, "Log")?;
        containers::log(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_volume(
        &self,
        request: Request<proto::CreateVolumeRequest>,
    ) -> Result<Response<proto::CreateVolumeResponse>, Status> {
        self.authorize(&request, Scope::Write, "CreateVolume")?;
        volumes::create(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_volume(
        &self,
        request: Request<proto::RemoveVolumeRequest>,
    ) -> Result<Response<proto::RemoveVolumeResponse>, Status> {
        self.authorize(&request, Scope::Write, "RemoveVolume")?;
        volumes::remove(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_volume(
        &self,
        request: Request<proto::ListVolumeRequest>,
    ) -> Result<Response<Self::ListVolumeStream>, Status> {
        self.authorize(&request, Scope::Read, "ListVolume")?;
        volumes::list(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_plugin(
        &self,
        request: Request<proto::StartPluginRequest>,
    ) -> Result<Response<proto::StartPluginResponse>, Status> {
        self.authorize(&request, Scope::Write, "StartPlugin")?;
        plugins::start(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_plugin(
        &self,
        request: Request<proto::StopPluginRequest>,
    ) -> Result<Response<proto::StopPluginResponse>, Status> {
        self.authorize(&request, Scope::Write, "StopPlugin")?;
        plugins::stop(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_plugins(
        &self,
        request: Request<proto::ListPluginsRequest>,
    ) -> Result<Response<proto::ListPluginsResponse>, Status> {
        self.authorize(&request, Scope::Read, "ListPlugins")?;
        plugins::list(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_plugin(
        &self,
        request: Request<proto::RemovePluginRequest>,
    ) -> Result<Response<proto::RemovePluginResponse>, Status> {
        self.authorize(&request, Scope::Write, "RemovePlugin")?;
        plugins::remove(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_plugin_tar(
        &self,
        request: Request<proto::RemovePluginTarRequest>,
    ) -> Result<Response<proto::RemovePluginTarResponse>, Status> {
        self.authorize(&request, Scope::Write, "RemovePluginTar")?;
        plugins::remove_tar(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Splits a normalized reference into the familiar name and tag gNOI clients use
/// (`docker.io/library/app:1.0` → `("app", "1.0")`; a digest-pinned name has tag `""`).
pub(crate) fn familiar(reference: &str) -> (String, String) {
    let (name, tag) = split_reference(reference);
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    (name.to_string(), tag.to_string())
}

/// A reference's repository and tag (empty for none, or for a digest).
pub(crate) fn split_reference(reference: &str) -> (&str, &str) {
    match reference.split_once('@') {
        Some((name, _digest)) => (name, ""),
        None => match reference.rfind(':') {
            Some(i) if i > reference.rfind('/').unwrap_or(0) => (&reference[..i], &reference[i + 1..]),
            _ => (reference, ""),
        },
    }
}

/// The normalized reference of an image the target holds: as [`reference`], and also a name
/// pinned by digest (`repo@sha256:…`, tag empty), as an image pulled by digest is named. This is
/// how an update client puts a digest-pinned instance back (`io.tpcm.image` holds the name).
pub(crate) fn held_reference(name: &str, tag: &str) -> Result<String, Status> {
    if name.contains('@') && tag.is_empty() {
        return crate::archive::normalize_pinned_reference(name)
            .map_err(|e| Status::invalid_argument(e.to_string()));
    }
    reference(name, tag)
}

/// The normalized reference of a gNOI name and tag (tag `latest` when empty).
pub(crate) fn reference(name: &str, tag: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("an image name is required"));
    }
    let tag = if tag.is_empty() { "latest" } else { tag };
    crate::archive::normalize_reference(&format!("{name}:{tag}"))
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Checks a listing filter's key against the ones an RPC knows.
pub(crate) fn check_filter_keys<'a>(
    rpc: &str,
    keys: impl IntoIterator<Item = &'a str>,
    known: &[&str],
) -> Result<(), Status> {
    for key in keys {
        if !known.contains(&key) {
            return Err(Status::invalid_argument(format!(
                "{rpc}: unknown filter key {key:?} (known: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_to_familiar_names() {
        assert_eq!(
            familiar("docker.io/library/app:1.0"),
            ("app".into(), "1.0".into())
        );
        assert_eq!(
            familiar("docker.io/acme/app:latest"),
            ("acme/app".into(), "latest".into())
        );
        assert_eq!(
            familiar("127.0.0.1:5000/app:2"),
            ("127.0.0.1:5000/app".into(), "2".into())
        );
        assert_eq!(
            familiar("127.0.0.1:5000/app@sha256:ab"),
            ("127.0.0.1:5000/app".into(), "".into())
        );
        let pinned = format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64));
        assert_eq!(held_reference(&pinned, "").unwrap(), pinned);
        assert_eq!(
            held_reference(&pinned, "1").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            reference(&pinned, "").unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "a Deploy cannot name an image by a digest"
        );
        assert_eq!(reference("app", "").unwrap(), "docker.io/library/app:latest");
        assert_eq!(reference("app", "1.0").unwrap(), "docker.io/library/app:1.0");
        assert_eq!(
            reference("", "1").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            reference("App", "1").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
