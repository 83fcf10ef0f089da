//! The containerz client library: typed, async calls to one device's `tpcm serve` (or any
//! gNOI containerz server) over mutual TLS, and the two higher-order operations built on them —
//! the **startup client** ([`Client::deploy`]: push an archive, start it, return the instance)
//! and the **update client** ([`Client::upgrade`]: push a new version, update the instance,
//! watch it stay up, roll back to the previous image if it does not). It knows nothing of the
//! CLI; `tpcm client` (src/cli/client.rs) runs it against many devices at once.

use super::proto::containerz_client::ContainerzClient;
use super::proto::{self, deploy_request::Request as In, deploy_response::Response as Out};
use crate::error_chain;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`Client::upgrade`] looks at the updated instance.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// Why a client call failed, naming the device.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A certificate or key file cannot be read.
    #[error("{0}")]
    Config(String),
    /// The device cannot be reached or the TLS handshake failed.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// The device.
        target: String,
        /// What failed (TLS errors included).
        reason: String,
    },
    /// The device refused or failed a call.
    #[error("{target}: {rpc}: {} ({:?})", .status.message(), .status.code())]
    Rpc {
        /// The device.
        target: String,
        /// The call.
        rpc: &'static str,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The device answered something the protocol does not allow.
    #[error("{target}: {rpc}: {detail}")]
    Protocol {
        /// The device.
        target: String,
        /// The call.
        rpc: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// An upgrade did not hold and was rolled back (`restored` says whether that worked).
    #[error("{target}: upgrade of {instance} failed: {reason}; {}", if *.restored { "rolled back to the previous version" } else { "ROLLBACK FAILED" })]
    RolledBack {
        /// The device.
        target: String,
        /// The instance.
        instance: String,
        /// Why the new version was not kept.
        reason: String,
        /// Whether the previous version runs again.
        restored: bool,
    },
    /// A local file (an archive) cannot be read.
    #[error("{0}")]
    Io(String),
}

/// The client certificate, its key, and the CA that signs the devices' certificates.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate (PEM) the device's certificate must chain to.
    pub ca_cert: PathBuf,
    /// This client's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    fn config(&self, host: &str) -> Result<ClientTlsConfig, ClientError> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p)
                .map_err(|e| ClientError::Config(format!("cannot read the {what} {}: {e}", p.display())))
        };
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca_cert, "CA certificate")?))
            .identity(Identity::from_pem(
                read(&self.cert, "client certificate")?,
                read(&self.key, "client key")?,
            ))
            .domain_name(host.to_string()))
    }
}

/// What the startup client starts: everything of StartContainer but the image.
pub type StartOptions = proto::StartContainerRequest;

/// A connection to one device.
#[derive(Clone)]
pub struct Client {
    inner: ContainerzClient<Channel>,
    target: String,
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(target: &str) -> &str {
    let host = match target.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => target,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Client {
    /// Connects to `target` (`host:port`) with mutual TLS; the device's certificate must name
    /// the host (IP or DNS SAN) and chain to the CA.
    pub async fn connect(target: &str, tls: &TlsFiles) -> Result<Client, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            target: target.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("https://{target}"))
            .map_err(|e| connect_error(format!("not host:port ({e})")))?
            .tls_config(tls.config(host_of(target))?)
            .map_err(|e| connect_error(error_chain(&e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .initial_stream_window_size(Some(super::FLOW_WINDOW))
            .initial_connection_window_size(Some(2 * super::FLOW_WINDOW));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| connect_error(error_chain(&e)))?;
        let client = Client {
            inner: ContainerzClient::new(channel)
                .max_decoding_message_size(super::MAX_MESSAGE)
                .max_encoding_message_size(super::MAX_MESSAGE),
            target: target.to_string(),
        };
        Ok(client)
    }

    /// The device this client talks to.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn rpc(&self, rpc: &'static str) -> impl FnOnce(tonic::Status) -> ClientError + '_ {
        move |status| ClientError::Rpc {
            target: self.target.clone(),
            rpc,
            status: Box::new(status),
        }
    }

    fn protocol(&self, rpc: &'static str, detail: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            target: self.target.clone(),
            rpc,
            detail: detail.into(),
        }
    }

    /// Pushes an image archive (any format `tpcm image import` reads) as `name:tag`, streamed
    /// from disk in the chunk size the device asks for. `progress(sent, total)` is told as bytes
    /// are acknowledged.
    pub async fn push_image(
        &mut self,
        archive: &Path,
        name: &str,
        tag: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<proto::ImageTransferSuccess, ClientError> {
        let io = |e: std::io::Error| ClientError::Io(format!("cannot read {}: {e}", archive.display()));
        let file = std::fs::File::open(archive).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let transfer = proto::DeployRequest {
            request: Some(In::ImageTransfer(proto::ImageTransfer {
                name: name.into(),
                tag: tag.into(),
                image_size: size,
                ..Default::default()
            })),
        };
        tx.send(transfer).await.expect("the channel is open");
        let mut answers = self
            .inner
            .deploy(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(self.rpc("Deploy"))?
            .into_inner();
        let chunk = match answers.message().await.map_err(self.rpc("Deploy"))? {
            Some(proto::DeployResponse {
                response: Some(Out::ImageTransferReady(r)),
            }) if r.chunk_size > 0 => r.chunk_size as usize,
            other => {
                return Err(self.protocol("Deploy", format!("expected ImageTransferReady, got {other:?}")));
            }
        };
        // Reading the file and sending run beside the answers, so neither waits for the other.
        let sender = tokio::task::spawn_blocking(move || send_file(file, chunk, tx));
        let outcome = loop {
            match answers.message().await {
                Ok(Some(proto::DeployResponse { response: Some(r) })) => match r {
                    Out::ImageTransferProgress(p) => progress(p.bytes_received, size),
                    Out::ImageTransferSuccess(s) => break Ok(s),
                    Out::ImageTransferError(e) => {
                        break Err(self.rpc("Deploy")(tonic::Status::new(e.code.into(), e.message)));
                    }
                    Out::ImageTransferReady(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => {
                    break Err(self.protocol("Deploy", "the device ended the transfer without a result"));
                }
                Err(status) => break Err(self.rpc("Deploy")(status)),
            }
        };
        // The device is done with the stream: stop reading the file (a sender blocked on a full
        // channel would otherwise wait for a reader that is gone).
        drop(answers);
        if outcome.is_err() {
            sender.abort();
        }
        let read = sender.await;
        match (outcome, read) {
            (Ok(s), _) => Ok(s),
            (Err(_), Ok(Err(e))) => Err(io(e)),
            (Err(e), _) => Err(e),
        }
    }

    /// Has the device pull `reference` from a registry itself, naming it `name:tag`.
    pub async fn pull_image(
        &mut self,
        reference: &str,
        name: &str,
        tag: &str,
        credentials: Option<(String, String)>,
    ) -> Result<proto::ImageTransferSuccess, ClientError> {
        use super::proto::gnoi::common::RemoteDownload;
        use super::proto::gnoi::types::{Credentials, credentials::Password};
        let request = proto::DeployRequest {
            request: Some(In::ImageTransfer(proto::ImageTransfer {
                name: name.into(),
                tag: tag.into(),
                remote_download: Some(RemoteDownload {
                    path: reference.into(),
                    credentials: credentials.map(|(username, password)| Credentials {
                        username,
                        password: Some(Password::Cleartext(password)),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        let mut answers = self
            .inner
            .deploy(tokio_stream::iter(vec![request]))
            .await
            .map_err(self.rpc("Deploy"))?
            .into_inner();
        while let Some(m) = answers.message().await.map_err(self.rpc("Deploy"))? {
            match m.response {
                Some(Out::ImageTransferSuccess(s)) => return Ok(s),
                Some(Out::ImageTransferError(e)) => {
                    return Err(self.rpc("Deploy")(tonic::Status::new(e.code.into(), e.message)));
                }
                _ => {}
            }
        }
        Err(self.protocol("Deploy", "the device ended the pull without a result"))
    }

    /// Every image on the device.
    pub async fn list_images(&mut self) -> Result<Vec<proto::ListImageResponse>, ClientError> {
        let mut s = self
            .inner
            .list_image(proto::ListImageRequest::default())
            .await
            .map_err(self.rpc("ListImage"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.message().await.map_err(self.rpc("ListImage"))? {
            out.push(m);
        }
        Ok(out)
    }

    /// Removes `name:tag` (`force`: even while containers use it).
    pub async fn remove_image(&mut self, name: &str, tag: &str, force: bool) -> Result<(), ClientError> {
        let request = proto::RemoveImageRequest {
            name: name.into(),
            tag: tag.into(),
            force,
        };
        self.inner
            .remove_image(request)
            .await
            .map_err(self.rpc("RemoveImage"))?;
        Ok(())
    }

    /// Starts a container; returns its instance name.
    pub async fn start_container(
        &mut self,
        request: proto::StartContainerRequest,
    ) -> Result<String, ClientError> {
        let answer = self
            .inner
            .start_container(request)
            .await
            .map_err(self.rpc("StartContainer"))?
            .into_inner();
        match answer.response {
            Some(proto::start_container_response::Response::StartOk(ok)) => Ok(ok.instance_name),
            other => Err(self.protocol("StartContainer", format!("no StartOK in {other:?}"))),
        }
    }

    /// The device's containers (`all`: the stopped ones too).
    pub async fn list_containers(
        &mut self,
        all: bool,
    ) -> Result<Vec<proto::ListContainerResponse>, ClientError> {
        let request = proto::ListContainerRequest {
            all,
            ..Default::default()
        };
        let mut s = self
            .inner
            .list_container(request)
            .await
            .map_err(self.rpc("ListContainer"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.message().await.map_err(self.rpc("ListContainer"))? {
            out.push(m);
        }
        Ok(out)
    }

    /// One instance as listed, if the device has it.
    pub async fn container(
        &mut self,
        instance: &str,
    ) -> Result<Option<proto::ListContainerResponse>, ClientError> {
        Ok(self
            .list_containers(true)
            .await?
            .into_iter()
            .find(|c| c.name == instance))
    }

    /// Stops an instance (`force`: SIGKILL at once).
    pub async fn stop_container(&mut self, instance: &str, force: bool) -> Result<(), ClientError> {
        let request = proto::StopContainerRequest {
            instance_name: instance.into(),
            force,
            restart: false,
        };
        self.inner
            .stop_container(request)
            .await
            .map_err(self.rpc("StopContainer"))?;
        Ok(())
    }

    /// Removes an instance (`force`: even while it runs).
    pub async fn remove_container(&mut self, instance: &str, force: bool) -> Result<(), ClientError> {
        let request = proto::RemoveContainerRequest {
            name: instance.into(),
            force,
        };
        self.inner
            .remove_container(request)
            .await
            .map_err(self.rpc("RemoveContainer"))?;
        Ok(())
    }

    /// An instance's output, each line given to `line` as it arrives; with `follow`, until the
    /// device ends the stream or `line` returns false.
    pub async fn logs(
        &mut self,
        instance: &str,
        follow: bool,
        line: &mut (dyn FnMut(&str) -> bool + Send),
    ) -> Result<(), ClientError> {
        let request = proto::LogRequest {
            instance_name: instance.into(),
            follow,
        };
        let mut s = self
            .inner
            .log(request)
            .await
            .map_err(self.rpc("Log"))?
            .into_inner();
        while let Some(m) = s.message().await.map_err(self.rpc("Log"))? {
            if !line(&m.msg) {
                break;
            }
        }
        Ok(())
    }

    /// Moves an instance to `name:tag` (its settings kept); with `is_async` the device answers
    /// at once and reports the outcome as the `io.tpcm.update` label.
    pub async fn update_container(
        &mut self,
        instance: &str,
        name: &str,
        tag: &str,
        is_async: bool,
    ) -> Result<(), ClientError> {
        let request = proto::UpdateContainerRequest {
            instance_name: instance.into(),
            image_name: name.into(),
            image_tag: tag.into(),
            params: None,
            r#async: is_async,
        };
        self.inner
            .update_container(request)
            .await
            .map_err(self.rpc("UpdateContainer"))?;
        Ok(())
    }

    /// Creates a local volume with mount `options`, binding the device's existing directory
    /// `mountpoint` if given; returns its name.
    pub async fn create_volume(
        &mut self,
        name: &str,
        options: Vec<String>,
        mountpoint: Option<String>,
    ) -> Result<String, ClientError> {
        let request = proto::CreateVolumeRequest {
            name: name.into(),
            driver: proto::Driver::DsLocal as i32,
            options: (!options.is_empty() || mountpoint.is_some()).then(|| {
                proto::create_volume_request::Options::LocalMountOptions(proto::LocalDriverOptions {
                    options,
                    mountpoint: mountpoint.unwrap_or_default(),
                    ..Default::default()
                })
            }),
            ..Default::default()
        };
        Ok(self
            .inner
            .create_volume(request)
            .await
            .map_err(self.rpc("CreateVolume"))?
            .into_inner()
            .name)
    }

    /// Every volume on the device.
    pub async fn list_volumes(&mut self) -> Result<Vec<proto::ListVolumeResponse>, ClientError> {
        let mut s = self
            .inner
            .list_volume(proto::ListVolumeRequest::default())
            .await
            .map_err(self.rpc("ListVolume"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.message().await.map_err(self.rpc("ListVolume"))? {
            out.push(m);
        }
        Ok(out)
    }

    /// Removes a volume (`force`: even while a container binds it).
    pub async fn remove_volume(&mut self, name: &str, force: bool) -> Result<(), ClientError> {
        let request = proto::RemoveVolumeRequest {
            name: name.into(),
            force,
        };
        self.inner
            .remove_volume(request)
            .await
            .map_err(self.rpc("RemoveVolume"))?;
        Ok(())
    }

    /// The startup client: pushes `archive` as `name:tag` and starts it as `start`'s instance
    /// (its image fields are set here); returns the instance name.
    pub async fn deploy(
        &mut self,
        archive: &Path,
        name: &str,
        tag: &str,
        mut start: StartOptions,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<String, ClientError> {
        self.push_image(archive, name, tag, progress).await?;
        start.image_name = name.into();
        start.tag = tag.into();
        self.start_container(start).await
    }

    /// The update client: pushes `archive` as `name:tag`, updates `instance` to it, and keeps
    /// it only if the instance then stays RUNNING on the new image for `health_timeout`;
    /// otherwise updates it back to the image it ran before and returns
    /// [`ClientError::RolledBack`]. A device that rolls back by itself (its own health gate)
    /// is reported the same way. Returns the image the instance ran before.
    pub async fn upgrade(
        &mut self,
        archive: &Path,
        name: &str,
        tag: &str,
        instance: &str,
        health_timeout: Duration,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<String, ClientError> {
        let before = self
            .container(instance)
            .await?
            .ok_or_else(|| self.protocol("ListContainer", format!("no instance named {instance}")))?;
        let previous = before.image_name.clone();
        // An image pinned by digest is listed without a tag; a tpcm device names it in full in
        // a label, and that is what a rollback goes back to.
        let previous_pinned = before
            .labels
            .get(super::containers::IMAGE_LABEL)
            .filter(|full| full.contains('@'))
            .cloned();
        let wanted = familiar(name, tag);
        if previous == wanted || previous.is_empty() {
            // Updating back to the same name:tag would not restore anything.
            return Err(self.protocol(
                "UpdateContainer",
                format!("{instance} runs {wanted:?} already; give the new version a tag of its own, so a rollback has something to go back to"),
            ));
        }
        self.push_image(archive, name, tag, progress).await?;
        let target = self.target.clone();
        let rolled_back = |reason: String, restored: bool| ClientError::RolledBack {
            target: target.clone(),
            instance: instance.to_string(),
            reason,
            restored,
        };
        match self.update_container(instance, name, tag, false).await {
            Ok(()) => {}
            // The device's own health gate rolled it back (it says so with ABORTED).
            Err(ClientError::Rpc { status, .. }) if status.code() == tonic::Code::Aborted => {
                let restored = self.running_on(instance, &previous).await;
                return Err(rolled_back(status.message().to_string(), restored));
            }
            Err(e) => return Err(e),
        }
        let deadline = tokio::time::Instant::now() + health_timeout;
        let failure = loop {
            match self.container(instance).await {
                // A device that runs health checks says how the new version does (tpcm: label
                // io.tpcm.health); an unhealthy one is not kept.
                Ok(Some(c))
                    if c.labels.get(super::containers::HEALTH_LABEL).map(String::as_str)
                        == Some("unhealthy") =>
                {
                    break format!("the new version is unhealthy on {}", c.image_name);
                }
                Ok(Some(c))
                    if c.status() == proto::list_container_response::Status::Running
                        && c.image_name == wanted => {}
                Ok(Some(c)) => {
                    break format!(
                        "the new version is {} on {}",
                        c.status().as_str_name(),
                        c.image_name
                    );
                }
                Ok(None) => break "the instance disappeared".to_string(),
                // Unwatched is not kept: a device that cannot say how the new version does gets
                // the previous one back (if it can still be reached).
                Err(e) => break format!("the new version could not be watched ({e})"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(previous);
            }
            tokio::time::sleep(WATCH_POLL).await;
        };
        let (prev_name, prev_tag) = match &previous_pinned {
            Some(full) => (full.as_str(), ""),
            None => split_image(&previous),
        };
        let restored = self
            .update_container(instance, prev_name, prev_tag, false)
            .await
            .is_ok()
            && self.running_on(instance, &previous).await;
        Err(rolled_back(failure, restored))
    }

    /// Whether `instance` runs image `image` (as ListContainer names it).
    async fn running_on(&mut self, instance: &str, image: &str) -> bool {
        matches!(self.container(instance).await, Ok(Some(c))
            if c.status() == proto::list_container_response::Status::Running && c.image_name == image)
    }
}

/// Sends `file` as Deploy content messages of `chunk` bytes, then ImageTransferEnd; stops early
/// (without error) when the receiving side is gone. Blocking (whole-chunk reads, no hop to a
/// thread pool per read): run it on a thread that may block. The one piece of a chunked Deploy
/// that is the same for every client.
pub fn send_file(
    mut file: std::fs::File,
    chunk: usize,
    tx: tokio::sync::mpsc::Sender<proto::DeployRequest>,
) -> std::io::Result<()> {
    loop {
        let mut buf = vec![0u8; chunk];
        let filled = crate::archive::read_full(&mut file, &mut buf)?;
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        let content = proto::DeployRequest {
            request: Some(In::Content(buf.into())),
        };
        if tx.blocking_send(content).is_err() {
            return Ok(());
        }
    }
    let end = proto::DeployRequest {
        request: Some(In::ImageTransferEnd(proto::ImageTransferEnd {})),
    };
    let _ = tx.blocking_send(end);
    Ok(())
}

/// `name:tag` as ListContainer shows it.
fn familiar(name: &str, tag: &str) -> String {
    let tag = if tag.is_empty() { "latest" } else { tag };
    let full = format!("{name}:{tag}");
    match crate::archive::normalize_reference(&full) {
        Ok(normalized) => {
            let (name, tag) = super::familiar(&normalized);
            format!("{name}:{tag}")
        }
        Err(_) => full,
    }
}

/// `app:1.0` → (`app`, `1.0`); a name without a tag gets `latest`.
pub fn split_image(image: &str) -> (&str, &str) {
    match image.rfind(':') {
        Some(i) if i > image.rfind('/').unwrap_or(0) => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_images_split_as_written() {
        assert_eq!(host_of("127.0.0.1:9339"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9339"), "::1");
        assert_eq!(host_of("switch1"), "switch1");
        assert_eq!(split_image("app:1.0"), ("app", "1.0"));
        assert_eq!(
            split_image("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
        assert_eq!(familiar("app", "2"), "app:2");
        assert_eq!(familiar("library/app", ""), "app:latest");
    }
}
