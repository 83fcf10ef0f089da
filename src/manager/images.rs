//! Image operations: import from a source, list, remove.

use super::Error;
use crate::archive;
use crate::runtime::{ArchiveInput, ByteCounter, ImageSummary, ImportedImage, Metered, Runtime};
use crate::source::{self, Body};
use std::path::Path;
use std::sync::Arc;

/// Receives progress of a long transfer; front ends draw it (or not, off a terminal).
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (if known) called `what` starts.
    fn start(&self, what: &str, total: Option<u64>);
    /// `n` more bytes went through.
    fn advance(&self, n: u64);
    /// The transfer ended (successfully or not).
    fn finish(&self);
}

/// Opens a location: an http(s) URL is downloaded, anything else is a local file.
pub async fn open_source(location: &str) -> Result<source::Source, Error> {
    if source::is_http_url(location) {
        let url = location.to_string();
        // The blocking client must not run on an async worker thread.
        return tokio::task::spawn_blocking(move || source::open_http(&url))
            .await
            .map_err(|e| Error::Invalid(format!("download thread: {e}")))?
            .map_err(Error::from);
    }
    Ok(source::open_local(Path::new(location))?)
}

/// Imports the image archive at a location (local path or http(s) URL) into the runtime.
pub async fn import_image<R: Runtime>(
    runtime: &R,
    location: &str,
    tag: Option<String>,
    progress: Arc<dyn Progress>,
) -> Result<Vec<ImportedImage>, Error> {
    // Refuse a bad tag before reading a byte of the archive.
    if let Some(t) = &tag {
        archive::normalize_reference(t).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    let src = open_source(location).await?;
    progress.start(&src.description, src.size);
    let p = progress.clone();
    let counter: ByteCounter = Arc::new(move |n| p.advance(n));
    let input = match src.body {
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
    let normalized = archive::normalize_reference(name).map_err(|e| Error::Invalid(e.to_string()))?;
    runtime.remove_image(&normalized).await?;
    Ok(normalized)
}
