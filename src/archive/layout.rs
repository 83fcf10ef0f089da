//! Writing an OCI image-layout directory (`oci-layout`, `index.json`, `blobs/sha256/<hex>`):
//! blobs are content-addressed, so a blob several images share is stored once; each is written to
//! a temporary file and renamed into place once complete and hashed, so a crash never leaves a
//! blob whose name lies about its content.

use super::Digest;
use super::digest::HashingWriter;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// An OCI layout directory being written.
pub struct LayoutDir {
    root: PathBuf,
}

impl LayoutDir {
    /// Opens (creating) a layout at `root`.
    pub fn create(root: &Path) -> io::Result<LayoutDir> {
        std::fs::create_dir_all(root.join("blobs/sha256"))?;
        std::fs::write(root.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(LayoutDir {
            root: root.to_path_buf(),
        })
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the layout already holds blob `digest`.
    pub fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Writes a blob produced by `produce` (which writes it into the given writer, gzip'd or
    /// not); returns its digest and size. The blob is synced and renamed into place.
    pub fn write_with(
        &self,
        produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<(Digest, u64)> {
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("blobs"))?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp.as_file()));
        produce(&mut w)?;
        w.flush()?;
        let (digest, size, _) = w.finish();
        tmp.as_file().sync_all()?;
        tmp.persist(self.blob_path(&digest)).map_err(|e| e.error)?;
        Ok((digest, size))
    }

    /// Writes a blob from a reader.
    pub fn write_from(&self, mut r: impl Read) -> io::Result<(Digest, u64)> {
        self.write_with(|w| io::copy(&mut r, w).map(|_| ()))
    }

    /// Writes a small document.
    pub fn write_bytes(&self, bytes: &[u8]) -> io::Result<(Digest, u64)> {
        self.write_with(|w| w.write_all(bytes))
    }
}
