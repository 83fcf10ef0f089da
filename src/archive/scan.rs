//! One forward pass over an archive stream (tar, or gzip'd tar detected by content).
//!
//! Small JSON documents are kept in memory under a bound; everything that looks like a layer (a
//! tar or gzip stream) or sits under `blobs/` is streamed to a [`BlobSink`] without ever being
//! held whole in memory or written to a temporary file. Symlinks between archive entries (docker
//! writes one for a layer that repeats) are recorded and resolved later.

use super::{Compression, Digest, Error, detect_compression};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Cursor, Read};

/// Largest single JSON document read into memory (manifests, configs, indexes).
pub const MAX_METADATA_FILE: u64 = 4 << 20;
/// Largest total of JSON documents kept from one archive.
pub const MAX_METADATA_TOTAL: u64 = 16 << 20;

/// What a streamed blob looks like, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// A tar or gzip'd tar: a layer candidate.
    Layer(Compression),
    /// Anything else under `blobs/` (kept as content, never unpacked).
    Opaque,
}

/// One blob found in the archive.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    /// Normalized archive path.
    pub path: String,
    /// Stored size.
    pub size: u64,
    /// What its first bytes say it is.
    pub kind: BlobKind,
    /// The digest its path claims (`blobs/sha256/<hex>`), which whoever consumes it must verify.
    pub name_digest: Option<Digest>,
    /// Where its bytes start in the (uncompressed) archive.
    pub offset: u64,
}

/// Receives each blob while the archive streams past.
pub trait BlobSink {
    /// `data` yields the blob's bytes; a sink that wants them must read `data` to its end (one
    /// that only records where blobs are may leave it).
    fn blob(&mut self, blob: BlobEntry, data: &mut dyn Read) -> Result<(), Error>;
}

/// The small parts of an archive, kept after the pass.
#[derive(Debug, Default)]
pub struct Scanned {
    /// JSON documents by normalized archive path.
    pub metadata: HashMap<String, Vec<u8>>,
    /// Archive-internal links: path → target path (both normalized).
    pub links: HashMap<String, String>,
    /// Whether an `oci-layout` file was present.
    pub has_oci_layout: bool,
    /// Total bytes of the (decompressed) archive stream.
    pub bytes: u64,
}

impl Scanned {
    /// Follows archive links (a bounded number of hops) to the path that holds the bytes.
    pub fn resolve_path(&self, path: &str) -> Result<String, Error> {
        let mut p = normalize(path, "")?;
        for _ in 0..16 {
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => return Ok(p),
            }
        }
        Err(Error::PathOutsideArchive(path.to_string()))
    }
}

/// Normalizes an archive path: strips `./`, folds `..` lexically relative to `base_dir`, refuses
/// absolute paths and anything that climbs above the archive root.
pub fn normalize(path: &str, base_dir: &str) -> Result<String, Error> {
    if path.starts_with('/') || path.contains('\0') {
        return Err(Error::PathOutsideArchive(path.to_string()));
    }
    let mut parts: Vec<&str> = base_dir
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Error::PathOutsideArchive(path.to_string()));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn is_metadata_name(path: &str) -> bool {
    matches!(path, "manifest.json" | "index.json" | "oci-layout")
        || (!path.contains('/') && path.ends_with(".json"))
}

/// Files of the docker v1.2 format that carry nothing the import needs.
fn is_ignored_name(path: &str) -> bool {
    path == "repositories" || path.ends_with("/VERSION") || path.ends_with("/json")
}

fn looks_like_json(prefix: &[u8]) -> bool {
    matches!(
        prefix.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{') | Some(b'[')
    )
}

/// What a blob is, from its first 512 bytes (or all of it, if shorter): gzip, zstd or tar is a
/// layer (an empty blob too: containerd reads it as an empty layer), anything else is opaque
/// content.
pub fn blob_kind(prefix: &[u8], size: u64) -> BlobKind {
    match detect_compression(prefix) {
        Compression::None => {}
        c => return BlobKind::Layer(c),
    }
    if size == 0 || looks_like_tar(prefix, size) {
        BlobKind::Layer(Compression::None)
    } else {
        BlobKind::Opaque
    }
}

fn looks_like_tar(prefix: &[u8], size: u64) -> bool {
    // ustar/gnu magic at offset 257; an empty layer is 1024 zero bytes with no header at all.
    (prefix.len() >= 262 && &prefix[257..262] == b"ustar") || (size == 1024 && prefix.iter().all(|b| *b == 0))
}

fn corrupt(e: io::Error) -> Error {
    Error::Corrupt(e.to_string())
}

/// Counts bytes read, for the import report.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The read buffer in front of a streamed archive; see [`scan`].
const SCAN_BUFFER: usize = 64 << 10;

/// Reads the whole archive from `input`, feeding blobs to `sink`.
pub fn scan<R: Read + Send>(input: R, sink: &mut dyn BlobSink) -> Result<Scanned, Error> {
    // Small on purpose: a read at least this big into an empty buffer goes straight to `input`,
    // so blob data (read in 1 MiB chunks) is copied once, not into the buffer and out again.
    let mut buffered = BufReader::with_capacity(SCAN_BUFFER, input);
    let head = buffered.fill_buf().map_err(corrupt)?;
    if head.is_empty() {
        return Err(Error::Empty);
    }
    let compression = detect_compression(head);
    let stream = super::decompress(compression, buffered).map_err(corrupt)?;
    let mut counted = Counting {
        inner: stream,
        count: 0,
    };
    let mut state = ScanState::default();
    {
        let mut archive = tar::Archive::new(&mut counted);
        for entry in archive.entries().map_err(corrupt)? {
            state.entry(&mut entry.map_err(corrupt)?, sink)?;
        }
    }
    // Drain what follows the tar's end marker so a gzip trailer (CRC, length) is verified too.
    io::copy(&mut counted, &mut io::sink()).map_err(corrupt)?;
    state.scanned.bytes = counted.count;
    state.finish()
}

/// Like [`scan`] for an uncompressed tar in a local file: blob data is skipped with seeks, so
/// the sink learns where each blob is (to read several in parallel) without the file being read.
pub fn scan_seekable(file: &std::fs::File, sink: &mut dyn BlobSink) -> Result<Scanned, Error> {
    let len = file.metadata().map_err(corrupt)?.len();
    if len == 0 {
        return Err(Error::Empty);
    }
    let mut state = ScanState::default();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries_with_seek().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        // Seeking past the end succeeds; a blob cut short must still be refused.
        if entry.raw_file_position() + entry.size() > len {
            return Err(Error::Corrupt(format!(
                "{} is cut short",
                String::from_utf8_lossy(&entry.path_bytes())
            )));
        }
        state.entry(&mut entry, sink)?;
    }
    state.scanned.bytes = len;
    state.finish()
}

#[derive(Default)]
struct ScanState {
    scanned: Scanned,
    meta_total: u64,
    entries: usize,
}

impl ScanState {
    /// Classifies one tar entry: link, metadata, blob or ignored.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        sink: &mut dyn BlobSink,
    ) -> Result<(), Error> {
        self.entries += 1;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = normalize(&raw, "")?;
        let kind = entry.header().entry_type();
        let size = entry.size();
        let offset = entry.raw_file_position();
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                // A symlink is relative to its own directory, a hardlink to the archive root.
                let base = if kind == tar::EntryType::Symlink {
                    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
                } else {
                    ""
                };
                let resolved = normalize(&target, base)
                    .map_err(|_| Error::PathOutsideArchive(format!("{path} -> {target}")))?;
                self.scanned.links.insert(path, resolved);
                return Ok(());
            }
            k if !k.is_file() => return Ok(()),
            _ => {}
        }
        if path == "oci-layout" {
            self.scanned.has_oci_layout = true;
        }
        if is_ignored_name(&path) {
            return Ok(());
        }
        let mut prefix = Vec::with_capacity(512);
        entry.take(512).read_to_end(&mut prefix).map_err(corrupt)?;
        let json = looks_like_json(&prefix) || is_metadata_name(&path);
        if json && (path.starts_with("blobs/") || is_metadata_name(&path)) {
            if size > MAX_METADATA_FILE {
                return Err(Error::MetadataTooLarge {
                    name: path,
                    limit: MAX_METADATA_FILE,
                });
            }
            self.meta_total += size;
            if self.meta_total > MAX_METADATA_TOTAL {
                return Err(Error::MetadataTooLarge {
                    name: "all metadata".into(),
                    limit: MAX_METADATA_TOTAL,
                });
            }
            let mut doc = prefix;
            entry.read_to_end(&mut doc).map_err(corrupt)?;
            self.scanned.metadata.insert(path, doc);
            return Ok(());
        }
        let blob_kind = blob_kind(&prefix, size);
        if blob_kind == BlobKind::Opaque && !path.starts_with("blobs/") {
            return Ok(());
        }
        let name_digest = match path.strip_prefix("blobs/sha256/") {
            Some(hex) => Some(
                Digest::from_hex(hex)
                    .ok_or_else(|| Error::bad_metadata(&path, "blob file name is not a sha256 hex digest"))?,
            ),
            None if path.starts_with("blobs/") => {
                return Err(Error::bad_metadata(&path, "only sha256 blobs are supported"));
            }
            None => None,
        };
        let mut data = Cursor::new(prefix).chain(entry);
        sink.blob(
            BlobEntry {
                path,
                size,
                kind: blob_kind,
                name_digest,
                offset,
            },
            &mut data,
        )
    }

    fn finish(self) -> Result<Scanned, Error> {
        if self.entries == 0 {
            return Err(Error::Corrupt("no tar entries".into()));
        }
        let m = &self.scanned.metadata;
        if !m.contains_key("manifest.json") && !m.contains_key("index.json") {
            return Err(Error::NotAnImage);
        }
        Ok(self.scanned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_and_refuses_escapes() {
        assert_eq!(normalize("./a/b", "").unwrap(), "a/b");
        assert_eq!(normalize("../x/layer.tar", "y").unwrap(), "x/layer.tar");
        assert!(normalize("../../etc/passwd", "y").is_err());
        assert!(normalize("/etc/passwd", "").is_err());
        assert!(normalize("..", "").is_err());
    }

    struct Drain(Vec<String>);
    impl BlobSink for Drain {
        fn blob(&mut self, blob: BlobEntry, data: &mut dyn Read) -> Result<(), Error> {
            io::copy(data, &mut io::sink()).unwrap();
            self.0.push(blob.path);
            Ok(())
        }
    }

    #[test]
    fn garbage_and_empty_inputs_are_refused() {
        assert!(matches!(scan(&b""[..], &mut Drain(vec![])), Err(Error::Empty)));
        let garbage = vec![0x55u8; 4096];
        assert!(matches!(
            scan(&garbage[..], &mut Drain(vec![])),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn a_tar_without_manifest_is_not_an_image() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"abc"[..]).unwrap();
        let t = b.into_inner().unwrap();
        assert!(matches!(scan(&t[..], &mut Drain(vec![])), Err(Error::NotAnImage)));
    }
}
