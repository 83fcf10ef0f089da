//! Image operations: import from a source, list, remove.

use super::Error;
use super::store::{ImagesAccess, Store, StoreError, TpcLock};
use crate::archive;
use crate::runtime::{ArchiveInput, ByteCounter, ImageSummary, ImportedImage, Metered, Runtime};
use crate::source::registry::{self, RegistryRequest};
use crate::source::ssh::SshRequest;
use crate::source::{self, Body};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Receives progress of a long transfer; front ends draw it (or not, off a terminal).
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (if known) called `what` starts.
    fn start(&self, what: &str, total: Option<u64>);
    /// `n` more bytes went through.
    fn advance(&self, n: u64);
    /// The transfer ended (successfully or not).
    fn finish(&self);
    /// Why the transfer should stop now, if it should (checked as bytes arrive).
    fn cancelled(&self) -> Option<String> {
        None
    }
    /// Something the operator should know about the result (a tag that moved under a TPC).
    fn notice(&self, message: &str) {
        tracing::info!("{message}");
    }
}

/// Where an image comes from (design §5).
#[derive(Clone)]
pub enum ImageSource {
    /// A local archive file.
    File(PathBuf),
    /// An archive at an http(s) URL.
    Http {
        /// The URL.
        url: String,
        /// Connection and read timeouts.
        timeouts: source::Timeouts,
        /// HTTP basic authentication (gNOI Deploy's credentials), if any.
        login: Option<source::Login>,
        /// Where the download's connections leave from.
        egress: source::Egress,
    },
    /// An archive on an SSH server, fetched with scp or sftp.
    Ssh(SshRequest),
    /// An image in a registry.
    Registry(RegistryRequest),
    /// An image the runtime already holds, by name (gNOI: deployed beforehand). Nothing is
    /// imported, and a TPC made from it does not own it.
    Present(String),
}

impl ImageSource {
    /// Whether a TPC made from this source owns the image (removes it when it goes).
    pub fn owned(&self) -> bool {
        !matches!(self, ImageSource::Present(_))
    }

    /// What getting the image involves, as the start of a progress line: a local archive is
    /// only imported, a URL, SSH server or registry is also downloaded from, and an image
    /// already present is used as it is.
    pub fn fetch_verb(&self) -> &'static str {
        match self {
            ImageSource::File(_) => "Importing",
            ImageSource::Http { .. } | ImageSource::Ssh(_) | ImageSource::Registry(_) => {
                "Downloading and importing"
            }
            ImageSource::Present(_) => "Using",
        }
    }

    /// Infers the kind of a location as the TPCM CLI does (docs/cli.md, "Where an image comes
    /// from"): an http(s) URL is downloaded, an existing file is an archive, anything else is an
    /// image reference. A location that reads as a path ([`looks_like_path`]) stays a file even
    /// when missing, so a typo says "no such file" instead of trying a registry.
    /// `registry` is the template for a registry pull (credentials, insecure registries); its
    /// timeouts and egress serve downloads too.
    pub fn infer(location: &str, registry: RegistryRequest) -> Result<ImageSource, Error> {
        if source::is_http_url(location) {
            return Ok(ImageSource::Http {
                url: location.to_string(),
                timeouts: registry.timeouts,
                login: None,
                egress: registry.egress,
            });
        }
        if looks_like_path(location) || Path::new(location).exists() {
            return Ok(ImageSource::File(PathBuf::from(location)));
        }
        if registry::is_image_reference(location) {
            return Ok(ImageSource::Registry(RegistryRequest {
                reference: location.to_string(),
                ..registry
            }));
        }
        Err(Error::Invalid(format!(
            "{location} is neither an existing file, an http(s) URL nor an image reference"
        )))
    }

    /// What to call the source in messages.
    pub fn describe(&self) -> String {
        match self {
            ImageSource::File(p) => p.display().to_string(),
            ImageSource::Http { url, .. } => url.clone(),
            ImageSource::Ssh(r) => r.describe(),
            ImageSource::Registry(r) => r.reference.clone(),
            ImageSource::Present(name) => name.clone(),
        }
    }
}

/// Whether a location names a file rather than an image: it starts with `/`, `./`, `../` or
/// `~`, or ends in an archive's extension. Such a location is never pulled from a registry.
pub fn looks_like_path(location: &str) -> bool {
    ["/", "./", "../", "~"].iter().any(|p| location.starts_with(p))
        || [".tar", ".tgz", ".gz", ".zst"]
            .iter()
            .any(|s| location.ends_with(s))
}

/// Whether a registry reference could as well be a mistyped file name: no registry host, no
/// tag or digest, and a dot in its last part (`app-v1.tr`). A pull of such a reference that
/// fails also says that no such file exists.
fn could_be_a_file_name(reference: &str) -> bool {
    let first = reference.split('/').next().unwrap_or_default();
    let has_host = reference.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    let last = reference.rsplit('/').next().unwrap_or_default();
    !has_host && !last.contains([':', '@']) && last.contains('.')
}

/// A registry source whose image is already in the runtime under that name becomes that image:
/// installing from an imported image contacts no registry. An upgrade passes the manifest the
/// TPC runs as `current`: a local image that is that very manifest is not what the operator
/// upgrades to, so the registry is asked for the tag's image (it may have moved there). Any
/// other source is returned as it is.
pub async fn prefer_present<R: Runtime>(
    runtime: &R,
    src: &ImageSource,
    current: Option<&str>,
) -> Result<ImageSource, Error> {
    let ImageSource::Registry(request) = src else {
        return Ok(src.clone());
    };
    let Ok(name) = archive::normalize_pinned_reference(&request.reference) else {
        return Ok(src.clone());
    };
    let present = runtime.list_images().await?.into_iter().find(|i| i.name == name);
    match present {
        Some(image) if current != Some(image.digest.as_str()) => Ok(ImageSource::Present(name)),
        _ => Ok(src.clone()),
    }
}

/// Tells `progress` about every name this import moved away from the manifest a TPC is pinned
/// to: those TPCs keep running the old manifest, and the operator should know the name no longer
/// says what they run.
pub fn report_moved_tags(store: &Store, imported: &[ImportedImage], progress: &dyn Progress) {
    let Ok(records) = store.list() else { return };
    for image in imported {
        for name in &image.names {
            let stay: Vec<&str> = records
                .iter()
                .filter(|r| r.image() == name && r.spec.image.digest != image.digest)
                .map(|r| r.name.as_str())
                .collect();
            if !stay.is_empty() {
                progress.notice(&format!(
                    "{name} now names {}; TPC(s) {} keep running the image they were installed from (tpcm upgrade moves them)",
                    image.digest,
                    stay.join(", ")
                ));
            }
        }
    }
}

/// How long an image removal waits for imports that run (a Deploy of a large image takes
/// minutes), and an import for a removal.
pub const IMAGES_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// Takes the store's images lock for `access` ([`Store::try_images_lock`]), waiting at most
/// `patience` without blocking a thread.
pub async fn lock_images(
    store: &Store,
    access: ImagesAccess,
    patience: std::time::Duration,
) -> Result<TpcLock, Error> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match store.try_images_lock(access) {
            Err(StoreError::Busy(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Opens an archive source. The blocking sources run on a thread that may block.
async fn open_archive(src: &ImageSource) -> Result<source::Source, Error> {
    let blocking = |f: Box<dyn FnOnce() -> Result<source::Source, source::Error> + Send>| async {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Internal(format!("download thread: {e}")))?
            .map_err(Error::from)
    };
    match src {
        ImageSource::File(path) => Ok(source::open_local(path)?),
        ImageSource::Http {
            url,
            timeouts,
            login,
            egress,
        } => {
            let (url, timeouts, login, egress) = (url.clone(), *timeouts, login.clone(), egress.clone());
            blocking(Box::new(move || {
                source::open_http(&url, &timeouts, login.as_ref(), &egress)
            }))
            .await
        }
        ImageSource::Ssh(request) => {
            let (request, runtime) = (request.clone(), tokio::runtime::Handle::current());
            blocking(Box::new(move || source::ssh::open_ssh(&request, &runtime))).await
        }
        ImageSource::Registry(_) | ImageSource::Present(_) => {
            Err(Error::Invalid(format!("{} is not an archive", src.describe())))
        }
    }
}

/// Imports an image from any source into the runtime. `tag` names it instead of the archive's
/// own name (or the registry reference); an archive must then hold exactly one image.
pub async fn import_image<R: Runtime>(
    runtime: &R,
    store: &Store,
    src: &ImageSource,
    tag: Option<String>,
    progress: Arc<dyn Progress>,
) -> Result<Vec<ImportedImage>, Error> {
    let imported = {
        let _images = match src {
            ImageSource::Present(_) => None,
            _ => Some(lock_images(store, ImagesAccess::Import, IMAGES_PATIENCE).await?),
        };
        import_from(runtime, src, tag, progress.clone()).await?
    };
    report_moved_tags(store, &imported, progress.as_ref());
    Ok(imported)
}

async fn import_from<R: Runtime>(
    runtime: &R,
    src: &ImageSource,
    tag: Option<String>,
    progress: Arc<dyn Progress>,
) -> Result<Vec<ImportedImage>, Error> {
    // Refuse a bad tag before reading a byte of the source.
    if let Some(t) = &tag {
        archive::normalize_reference(t).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    if let ImageSource::Present(name) = src {
        let normalized =
            archive::normalize_pinned_reference(name).map_err(|e| Error::Invalid(e.to_string()))?;
        let found = runtime
            .list_images()
            .await?
            .into_iter()
            .find(|i| i.name == normalized)
            .ok_or_else(|| Error::NotFound(format!("no image named {normalized}; deploy it first")))?;
        return Ok(vec![ImportedImage {
            names: vec![normalized],
            digest: found.digest,
            layers: 0,
            size: found.size,
        }]);
    }
    let p = progress.clone();
    let counter: ByteCounter = Arc::new(move |n| {
        p.advance(n);
        p.cancelled()
            .map_or(Ok(()), |why| Err(std::io::Error::other(why)))
    });
    if let ImageSource::Registry(request) = src {
        let mut pull = match registry::pull(request, counter).await {
            Ok(pull) => pull,
            Err(e) if could_be_a_file_name(&request.reference) => {
                return Err(Error::NotFound(format!(
                    "{e} (and no local file named {} exists)",
                    request.reference
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(tag) = tag {
            pull.image.name = tag;
        }
        progress.start(&request.reference, Some(pull.layer_bytes));
        let result = runtime.import_pulled(pull.image).await;
        progress.finish();
        return Ok(vec![result?]);
    }
    let opened = open_archive(src).await?;
    progress.start(&opened.description, opened.size);
    let input = match opened.body {
        Body::File(file) => ArchiveInput::File {
            file,
            progress: counter,
        },
        Body::Stream(inner) => ArchiveInput::Stream(Box::new(Metered { inner, counter })),
    };
    let result = runtime.import_image(input, tag).await;
    progress.finish();
    // A broken archive's error names the archive, which the layers below never saw.
    Ok(result.map_err(|e| match e {
        crate::runtime::Error::Archive(e) => {
            crate::runtime::Error::InvalidRequest(format!("{}: {e}", opened.description))
        }
        e => e,
    })?)
}

/// Lists the runtime's images.
pub async fn list_images<R: Runtime>(runtime: &R) -> Result<Vec<ImageSummary>, Error> {
    Ok(runtime.list_images().await?)
}

/// Removes an image given as the user wrote it (`busybox:1.0`) or fully normalized. An image a
/// TPC runs (or keeps to roll back to), or any container was made from, is refused naming them,
/// unless `force`: then only the name goes, and the TPCs keep running on the manifest their
/// containers pin. Returns the normalized name and, when forced, who still uses the image.
pub async fn remove_image<R: Runtime>(
    runtime: &R,
    store: &Store,
    name: &str,
    force: bool,
) -> Result<(String, Vec<String>), Error> {
    let normalized = archive::normalize_pinned_reference(name).map_err(|e| Error::Invalid(e.to_string()))?;
    // Exclusive before the users are read: no install or import can start using the image
    // between the check and the removal.
    let _images = lock_images(store, ImagesAccess::Remove, IMAGES_PATIENCE).await?;
    let mut users: Vec<String> = store
        .list()?
        .into_iter()
        .filter(|r| r.holds_image(&normalized))
        .map(|r| r.name)
        .collect();
    // An upgrade or install in flight needs its images to finish or be taken back: not even
    // `force` takes them.
    let busy: Vec<String> = super::journal::images_in_flight(store)
        .map_err(|e| {
            Error::Internal(format!(
                "cannot tell whether an operation in flight needs image {normalized}: {e}"
            ))
        })?
        .into_iter()
        .filter(|(image, _)| *image == normalized)
        .map(|(_, tpc)| tpc)
        .collect();
    if !busy.is_empty() {
        return Err(Error::InUse(format!(
            "image {normalized} is in use by the install or upgrade of {} that has not finished; wait for it to end (an interrupted one is finished or taken back by the next tpcm command on that TPC, or by `tpcm boot`), then retry",
            busy.join(", ")
        )));
    }
    for c in runtime.list_containers().await? {
        if c.image == normalized && !users.contains(&c.id) {
            users.push(c.id);
        }
    }
    if !users.is_empty() && !force {
        return Err(Error::InUse(format!(
            "image {normalized} is used by {}; uninstall or upgrade them first, or force (they keep running on the image they pin)",
            users.join(", ")
        )));
    }
    runtime.remove_image(&normalized).await?;
    Ok((normalized, users))
}
