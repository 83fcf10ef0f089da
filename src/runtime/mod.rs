//! The container runtime as the rest of tpcm sees it (containerz requirement R-GENERIC): one
//! trait, [`Runtime`], with containerd as its only backend. Nothing above this module knows which
//! runtime runs the containers.

#[cfg(test)]
pub mod fake;
pub mod host;
pub mod logs;
pub mod seccomp;
pub mod spec;

use crate::archive;
use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::time::Duration;
use std::time::SystemTime;

/// Errors any runtime backend reports, in terms a front end can map to exit codes or gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image archive is broken or hostile.
    #[error("{0}")]
    Archive(archive::Error),
    /// The image's source failed while the runtime consumed it (a download cut short).
    #[error("{0}")]
    Source(String),
    /// The runtime cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// No image by that name.
    #[error("no image named {0}")]
    ImageNotFound(String),
    /// The request cannot be carried out as asked (e.g. an archive without names and no tag).
    #[error("{0}")]
    InvalidRequest(String),
    /// What the request names (a container, content, a snapshot) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the request would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the request (in use, running, not running).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The runtime ran out of space or another resource.
    #[error("{0}")]
    Exhausted(String),
    /// The runtime refused or failed an operation.
    #[error("{0}")]
    Backend(String),
    /// A bug or an environment failure inside tpcm.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<archive::Error> for Error {
    fn from(e: archive::Error) -> Self {
        match e {
            archive::Error::Sink(inner) => match inner.downcast::<Error>() {
                Ok(e) => *e,
                Err(other) => Error::Internal(other.to_string()),
            },
            e => Error::Archive(e),
        }
    }
}

/// Told how many more bytes of an archive were consumed (drives progress bars). An error stops
/// the transfer there: the import fails with it and takes back what it made (the one who asked
/// for the image went away).
pub type ByteCounter = std::sync::Arc<dyn Fn(u64) -> std::io::Result<()> + Send + Sync>;

/// A reader that reports every byte read through it to a [`ByteCounter`].
pub struct Metered<R> {
    /// The stream.
    pub inner: R,
    /// Where bytes are reported.
    pub counter: ByteCounter,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.counter)(n as u64)?;
        Ok(n)
    }
}

/// An image archive to import.
pub enum ArchiveInput {
    /// A byte stream, read once front to back.
    Stream(Box<dyn Read + Send>),
    /// A local file: random access lets a backend read several layers at once. `progress` is
    /// told how many bytes were consumed, as they are.
    File {
        /// The open archive.
        file: std::fs::File,
        /// Byte counter for progress display.
        progress: ByteCounter,
    },
}

/// A document of a pulled image (manifest, index or config), exactly as the source served it.
#[derive(Debug, Clone)]
pub struct PulledDocument {
    /// Its media type, as the source declared it.
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Opens a pulled layer's byte stream. Called on a thread that may block, when the importer is
/// ready to consume the layer; the error says what could not be fetched.
pub type LayerOpener = Box<dyn FnOnce() -> Result<Box<dyn Read + Send>, String> + Send>;

/// One layer of a pulled image.
pub struct PulledLayer {
    /// The digest the manifest gives (verified while streaming).
    pub digest: String,
    /// The size the manifest gives (verified).
    pub size: u64,
    /// How to get its bytes.
    pub open: LayerOpener,
}

/// An image fetched document by document (from a registry) rather than as one archive: the
/// importer streams its layers concurrently and checks every digest, size and diff ID exactly as
/// for an archive.
pub struct PulledImage {
    /// The name to give it (normalized by the importer).
    pub name: String,
    /// The document the reference names: a manifest, or an index to pick the host's platform from.
    pub top: PulledDocument,
    /// Every other document the image needs: the platform manifest (when `top` is an index) and
    /// the config.
    pub documents: Vec<PulledDocument>,
    /// The layers of the manifest that applies to this host, in manifest order.
    pub layers: Vec<PulledLayer>,
    /// Told how many layer bytes arrived.
    pub progress: ByteCounter,
}

/// One image that an import created or updated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportedImage {
    /// Its names (normalized references).
    pub names: Vec<String>,
    /// Manifest digest.
    pub digest: String,
    /// Number of layers.
    pub layers: usize,
    /// Bytes of config and layer blobs.
    pub size: u64,
}

/// An image as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageSummary {
    /// Normalized reference.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Bytes of manifest, config and layer blobs.
    pub size: u64,
    /// When the record was created (seconds since the epoch), if known.
    pub created: Option<u64>,
}

impl ImageSummary {
    /// Converts a creation time to what listings show.
    pub fn epoch(t: Option<SystemTime>) -> Option<u64> {
        t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    }
}

/// What a command run inside a container did.
#[derive(Debug, Clone)]
pub struct ExecResult {
    /// Its exit code; `None` when it did not finish in time and was killed.
    pub code: Option<u32>,
    /// The end of its output (stdout and stderr interleaved).
    pub output: String,
}

/// A container taken out of the runtime, with everything needed to bring it back exactly as it
/// was (its definition and its writable layer, which the runtime keeps until the container is
/// restored or discarded). Serializable, so a journal can finish the job after a crash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DetachedContainer {
    /// The container ID.
    pub id: String,
    /// The runtime's own record of the container (opaque, hex).
    pub definition: String,
    /// The writable layer's name in the runtime.
    pub layer: String,
    /// What keeps the layer from being collected.
    pub hold: String,
}

/// What saving a container as an image wrote.
#[derive(Debug, Clone)]
pub struct SavedImage {
    /// The new image's manifest digest (in the layout).
    pub manifest_digest: String,
    /// Its manifest's size.
    pub manifest_size: u64,
    /// Bytes of blobs this save added to the layout (shared blobs already there are not counted).
    pub written: u64,
}

/// A container as the runtime lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    /// Its ID.
    pub id: String,
    /// The image name it was created from.
    pub image: String,
}

/// What a container's main process is doing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum ContainerState {
    /// Not running: never started, or stopped and cleaned up.
    Stopped,
    /// Running with this host pid.
    Running {
        /// Host pid of the container's first process.
        pid: u32,
    },
    /// Exited by itself with this code.
    Exited {
        /// Exit code.
        code: u32,
    },
    /// Paused, or a transient state.
    Other {
        /// The runtime's name for it.
        detail: String,
    },
}

/// What tpcm needs from a container runtime. Grows with the lifecycle operations.
pub trait Runtime: Send + Sync {
    /// Imports every image of an archive stream; `tag` renames a single-image archive.
    fn import_image(
        &self,
        archive: ArchiveInput,
        tag: Option<String>,
    ) -> impl Future<Output = Result<Vec<ImportedImage>, Error>> + Send;

    /// Imports an image pulled piecewise; returns what was created.
    fn import_pulled(&self, image: PulledImage) -> impl Future<Output = Result<ImportedImage, Error>> + Send;

    /// Lists images.
    fn list_images(&self) -> impl Future<Output = Result<Vec<ImageSummary>, Error>> + Send;

    /// Removes an image by its normalized name, and whatever only it used.
    fn remove_image(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Creates (does not start) a container from an imported image, made from the manifest
    /// `config.image` names by digest (whatever its name points at now) and pinning it: as long
    /// as the container exists, the runtime keeps that image's content and layers, even once no
    /// name points at it. Nothing is left if it fails.
    fn create_container(
        &self,
        config: &spec::ContainerConfig,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Starts a created container's process; its stdout and stderr go to `log`.
    fn start_container(
        &self,
        id: &str,
        log: &logs::LogTarget,
    ) -> impl Future<Output = Result<u32, Error>> + Send;

    /// Stops a container's process (SIGTERM, SIGKILL after `grace`); a stopped one is fine.
    fn stop_container(&self, id: &str, grace: Duration) -> impl Future<Output = Result<(), Error>> + Send;

    /// Waits until container `id`'s process exits; returns its exit code.
    fn wait_container(&self, id: &str) -> impl Future<Output = Result<u32, Error>> + Send;

    /// What a container's process is doing.
    fn container_state(&self, id: &str) -> impl Future<Output = Result<ContainerState, Error>> + Send;

    /// Frees what operations of tpcm processes that died halfway were building (half-imported
    /// content and snapshots); returns how many operations were cleaned up.
    fn collect_abandoned(&self) -> impl Future<Output = Result<usize, Error>> + Send;

    /// Containers that no longer exist but still hold a network (an address, forwarding rules):
    /// what deleting a container behind tpcm's back leaves.
    fn vanished_networks(&self) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Releases container `id`'s network; nothing to do for one that has none.
    fn release_network(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Saves container `id` as an image, its writable layer committed as one more layer, into the
    /// OCI image-layout directory `layout` (blobs shared with earlier saves are stored once).
    /// `image_digest` is the manifest the container was created from (its image's name may have
    /// moved since).
    fn save_container(
        &self,
        id: &str,
        image_digest: &str,
        layout: &Path,
    ) -> impl Future<Output = Result<SavedImage, Error>> + Send;

    /// An upper bound of the bytes [`Runtime::save_container`] would add to `layout`.
    fn save_bound(
        &self,
        id: &str,
        image_digest: &str,
        layout: &Path,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Points image name `name` at the manifest with this digest (creating or moving the name);
    /// `ImageNotFound` when the runtime no longer holds that manifest.
    fn name_image(&self, name: &str, manifest_digest: &str)
    -> impl Future<Output = Result<(), Error>> + Send;

    /// Points image name `name` at the image `source` names (creating or moving it).
    fn tag_image(&self, source: &str, name: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Makes existing container `id` pin the manifest `digest` (see [`Runtime::create_container`]):
    /// for containers made before containers pinned their image. A missing container is fine.
    fn pin_image(&self, id: &str, digest: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Deletes a stopped container and its writable layer; a missing one is fine.
    fn delete_container(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Every container the runtime holds (in tpcm's namespace), with the image it was made from.
    fn list_containers(&self) -> impl Future<Output = Result<Vec<ContainerSummary>, Error>> + Send;

    /// Sends `(container id, exit code)` whenever a container's main process exits, until the
    /// runtime's event stream breaks (an error) or `tx` is closed. `subscribed` is told once
    /// exits are being watched (what exited before must be looked up by the caller).
    fn watch_exits(
        &self,
        tx: tokio::sync::mpsc::Sender<(String, u32)>,
        subscribed: tokio::sync::oneshot::Sender<()>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Whether a container with this ID exists (running or not).
    fn container_exists(&self, id: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Runs `argv` inside running container `id` with its environment and user, for at most
    /// `timeout`.
    fn exec_in_container(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecResult, Error>> + Send;

    /// The name of container `id`'s writable layer, if the container exists.
    fn container_layer(&self, id: &str) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// Records container `id`'s definition and protects its writable layer, so it can be
    /// detached and later restored exactly; the container itself is untouched.
    fn hold_container(&self, id: &str) -> impl Future<Output = Result<DetachedContainer, Error>> + Send;

    /// Removes a held, stopped container, keeping its layer. Idempotent.
    fn detach_container(&self, held: &DetachedContainer) -> impl Future<Output = Result<(), Error>> + Send;

    /// Brings a held or detached container back exactly as it was (not started) and ends the
    /// hold; a held container that was never detached simply stays. Idempotent.
    fn restore_container(
        &self,
        detached: &DetachedContainer,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Drops a detached container's writable layer for good. Idempotent.
    fn discard_detached(
        &self,
        detached: &DetachedContainer,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The regular file at `path` in `image`'s root filesystem (symlinks resolved inside the
    /// image), at most `limit` bytes; `None` when the image has no file there. `ImageNotFound`
    /// when the runtime no longer holds the image, `FailedPrecondition` when the host cannot
    /// read inside an image safely, `InvalidRequest` when the path is no regular file.
    fn read_image_file(
        &self,
        image: &crate::tpc_spec::ImageRef,
        path: &str,
        limit: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Error>> + Send;

    /// The health check `image`'s config declares (docker's `HEALTHCHECK`), `None` when it
    /// declares none. `ImageNotFound` when the runtime no longer holds the image.
    fn image_healthcheck(
        &self,
        image: &crate::tpc_spec::ImageRef,
    ) -> impl Future<Output = Result<Option<crate::tpc_spec::image_health::ImageHealthcheck>, Error>> + Send;

    /// Runs `request` inside running container `id`, copying its streams to and from `stdio`,
    /// and returns how it ended.
    fn exec_attached(
        &self,
        id: &str,
        request: &ExecRequest,
        stdio: ExecStdio,
    ) -> impl Future<Output = Result<ExecExit, Error>> + Send;

    /// Usage counters of container `id`'s running task; `None` when it does not run.
    fn container_metrics(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ContainerMetrics>, Error>> + Send;

    /// Host pids of every process in container `id` (empty when it does not run).
    fn container_pids(&self, id: &str) -> impl Future<Output = Result<Vec<u32>, Error>> + Send;

    /// Applies `limits` to container `id`: to its running task, if any, at once, and to its
    /// definition, so later starts keep them. Nothing changes if the runtime refuses them.
    fn update_limits(
        &self,
        id: &str,
        limits: &ResourceLimits,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Creates container `config.id` again after its record was lost, on its old writable
    /// layer when that still exists (see [`Recreated`]); otherwise as
    /// [`Runtime::create_container`].
    fn recreate_container(
        &self,
        config: &spec::ContainerConfig,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = Result<Recreated, Error>> + Send;
}

/// What to run with `tpcm exec`: a command in a running container, as `docker exec` runs it.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// `user[:group]` (names resolved in the running container's files); `None` = the
    /// container's own user.
    pub user: Option<String>,
    /// Working directory; `None` = the container's.
    pub workdir: Option<String>,
    /// `KEY=VALUE` added to (or replacing in) the container's environment.
    pub env: Vec<String>,
    /// Give the process a pseudo-terminal (its stdout and stderr are that terminal).
    pub tty: bool,
    /// The terminal's size (columns, rows) at the start, when `tty`.
    pub size: Option<WindowSize>,
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// Where an exec'd process's streams go. The runtime copies between these and the process
/// until it exits.
pub struct ExecStdio {
    /// Forwarded to the process's stdin until it ends (then the process sees end of file);
    /// `None`: the process's stdin is empty.
    pub stdin: Option<Box<dyn Read + Send>>,
    /// The process's stdout (with a terminal: the terminal's output).
    pub stdout: Box<dyn std::io::Write + Send>,
    /// The process's stderr (unused with a terminal).
    pub stderr: Box<dyn std::io::Write + Send>,
    /// New terminal sizes as the user's terminal changes.
    pub resize: Option<tokio::sync::mpsc::Receiver<WindowSize>>,
    /// Signals for the process (the ones the caller received: an interrupt, a hangup), sent
    /// to it as they come; the exec still ends when the process does.
    pub signals: Option<tokio::sync::mpsc::Receiver<i32>>,
}

/// How an exec'd process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecExit {
    /// It ran and exited with this code (128 + signal when killed).
    Code(u32),
    /// The command does not exist in the container (docker exits 127).
    NotFound(String),
    /// The command exists but cannot be run (not executable, a directory; docker exits 126).
    CannotRun(String),
}

/// Usage counters of a running container, read from its cgroup by the runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ContainerMetrics {
    /// Which cgroup version they were read from (1 or 2).
    pub cgroup_version: u8,
    /// CPU time used by the container's processes since it started, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory charged to the container, in bytes.
    pub memory_usage: u64,
    /// Of that, inactive page cache the kernel can reclaim at once (docker subtracts it).
    pub memory_inactive_file: u64,
    /// The memory limit in bytes, `None` when there is none.
    pub memory_limit: Option<u64>,
    /// Processes (tasks) in the container.
    pub pids: u64,
    /// Their limit, `None` when there is none.
    pub pids_limit: Option<u64>,
    /// Bytes read from block devices.
    pub block_read: u64,
    /// Bytes written to block devices.
    pub block_write: u64,
}

/// The limits `tpcm update` changes on a container without re-creating it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceLimits {
    /// CPU cap in CPUs.
    pub cpus: f64,
    /// Memory limit in bytes; `None` = none.
    pub memory: Option<u64>,
    /// Memory soft limit in bytes; `None` = none.
    pub memory_reservation: Option<u64>,
    /// Most processes; `None` = no limit.
    pub pids_limit: Option<i64>,
}

/// What the runtime did to re-create a container whose record it had lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recreated {
    /// The container's old writable layer still existed and the new container runs on it.
    KeptLayer,
    /// The old writable layer was gone; the container starts from its image.
    FreshLayer,
}
