//! A local archive file.

use super::{Body, Error, Source};
use std::fs::File;
use std::path::Path;

/// Opens a local file for streaming. Directories and unreadable paths are refused by name.
pub fn open_local(path: &Path) -> Result<Source, Error> {
    let err = |reason: String| Error::Local {
        path: path.display().to_string(),
        reason,
    };
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        return Err(err("it is a directory, not an image archive".into()));
    }
    Ok(Source {
        body: Body::File(file),
        size: Some(meta.len()),
        description: path.display().to_string(),
    })
}
