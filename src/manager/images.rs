//! Image operations: import from a source, list, remove.

use super::Error;
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

    /// Infers the kind of a location as the TPCM CLI does: an http(s) URL is downloaded, an
    /// existing file is an archive, anything else is an image reference. A location that reads
    /// as a path (`/…`, `./…`, `…​.tar`, `…​.gz`) stays a file even when missing, so a typo says
    /// "no such file" instead of trying a registry.
    /// `registry` is the template for a registry pull (credentials, insecure registries); its
    /// timeouts serve downloads too.
    pub fn infer(location: &str, registry: RegistryRequest) -> Result<ImageSource, Error> {
        if source::is_http_url(location) {
            return Ok(ImageSource::Http {
                url: location.to_string(),
                timeouts: registry.timeouts,
                login: None,
            });
        }
        let looks_like_path = location.starts_with('/')
            || location.starts_with('.')
            || location.starts_with('~')
            || [".tar", ".gz", ".tgz"].iter().any(|s| location.ends_with(s));
        if looks_like_path || Path::new(location).exists() {
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
        ImageSource::Http { url, timeouts, login } => {
            let (url, timeouts, login) = (url.clone(), *timeouts, login.clone());
            blocking(Box::new(move || {
                source::open_http(&url, &timeouts, login.as_ref())
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
        let mut pull = registry::pull(request, counter).await?;
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
    Ok(result?)
}

/// Lists the runtime's images.
pub async fn list_images<R: Runtime>(runtime: &R) -> Result<Vec<ImageSummary>, Error> {
    Ok(runtime.list_images().await?)
}

/// Removes an image given as the user wrote it (`busybox:1.0`) or fully normalized.
pub async fn remove_image<R: Runtime>(runtime: &R, name: &str) -> Result<String, Error> {
    let normalized = archive::normalize_pinned_reference(name).map_err(|e| Error::Invalid(e.to_string()))?;
    runtime.remove_image(&normalized).await?;
    Ok(normalized)
}
