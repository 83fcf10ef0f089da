//! Image archives: reading docker-save (v1.2 and moby ≥ 25) and OCI image-layout archives as one
//! stream, verifying every digest, and extracting layer tars safely.
//!
//! The archive is read once, front to back ([`scan`]): small JSON files are kept (bounded), every
//! blob is handed to a [`scan::BlobSink`] as it streams past, because in real archives the
//! manifest comes *after* the layers. When the stream ends, [`resolve`] turns what was seen into
//! [`resolve::ImagePlan`]s, checking digests, diff IDs and paths. Nothing here knows containerd.

pub mod digest;
pub mod extract;
pub mod layer_writer;
pub mod layout;
pub mod parents;
pub mod resolve;
pub mod scan;
pub mod tarmeta;

pub use digest::{Digest, chain_ids};

/// Everything that can be wrong with an archive. Each message names the part of the archive at
/// fault; none of these leave anything behind (the importer cleans up on any error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Empty input.
    #[error("the archive is empty")]
    Empty,
    /// Not a tar (or gzip'd tar) at all, or the tar/gzip stream is corrupt or truncated.
    #[error("the archive is corrupt or truncated: {0}")]
    Corrupt(String),
    /// A tar with neither `manifest.json` nor `index.json`.
    #[error("not an image archive: it has neither manifest.json nor index.json")]
    NotAnImage,
    /// An entry or a path inside metadata leads outside the archive.
    #[error("archive path {0:?} points outside the archive")]
    PathOutsideArchive(String),
    /// JSON metadata over the bound we read into memory.
    #[error("archive metadata {name:?} is larger than the {limit} byte limit")]
    MetadataTooLarge {
        /// The file or blob.
        name: String,
        /// The bound.
        limit: u64,
    },
    /// Malformed JSON or a document that does not fit its schema.
    #[error("archive metadata {name:?} is invalid: {reason}")]
    BadMetadata {
        /// The file or blob.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob's content does not hash to its name or to the descriptor that references it.
    #[error("digest mismatch for {what}: expected {expected}, content is {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest claimed.
        expected: String,
        /// The digest computed.
        actual: String,
    },
    /// A blob's size differs from its descriptor.
    #[error("size mismatch for {what}: descriptor says {expected} bytes, content is {actual}")]
    SizeMismatch {
        /// What was checked.
        what: String,
        /// Descriptor size.
        expected: i64,
        /// Content size.
        actual: u64,
    },
    /// A layer's uncompressed digest differs from the config's `rootfs.diff_ids`.
    #[error("layer {index} ({blob}) has diff ID {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// Position in the image.
        index: usize,
        /// The blob.
        blob: String,
        /// From the config.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The config lists a different number of diff IDs than the manifest lists layers.
    #[error("image config lists {diff_ids} diff IDs for {layers} layers")]
    DiffIdCount {
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// Metadata references a blob the archive does not contain.
    #[error("the archive lacks {0}, which its metadata references")]
    MissingBlob(String),
    /// A layer whose content is neither tar nor gzip'd tar, or whose media type disagrees.
    #[error("layer {blob}: {reason}")]
    BadLayer {
        /// The blob.
        blob: String,
        /// What is wrong.
        reason: String,
    },
    /// No image in the archive matches this host's platform.
    #[error("the archive has no image for linux/{0}")]
    NoPlatform(String),
    /// An image name that is not a valid reference.
    #[error("invalid image reference {name:?}: {reason}")]
    BadReference {
        /// The name as given.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A layer tar that cannot be extracted safely.
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
    /// A failure of whatever consumed the blobs (not of the archive), carried through the scan
    /// unchanged so the caller can recover it.
    #[error(transparent)]
    Sink(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub(crate) fn bad_metadata(name: &str, reason: impl std::fmt::Display) -> Error {
        Error::BadMetadata {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// How a blob's bytes are compressed, detected from its first bytes (never from its name), as
/// containerd's `compression.DetectCompression` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd (also zstd:chunked, whose metadata lives in skippable frames).
    Zstd,
}

/// Detects gzip (`1f 8b 08`) and zstd (a frame, or a skippable frame as zstd:chunked and
/// others put first) by their magic bytes; anything else is taken as uncompressed.
pub fn detect_compression(prefix: &[u8]) -> Compression {
    if prefix.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (prefix.len() >= 4
            && u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) & 0xFFFF_FFF0 == 0x184D_2A50)
    {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// The largest zstd window accepted: containerd's decoder (klauspost/compress) allows 512 MiB,
/// more than libzstd's default of 128 MiB, so layers it reads are read here too.
const ZSTD_WINDOW_LOG_MAX: u32 = 29;

/// A reader of `input` decompressed as `compression` says. gzip members and zstd frames that
/// follow each other are read as one stream; zstd skippable frames are skipped.
pub fn decompress<'a, R: std::io::Read + Send + 'a>(
    compression: Compression,
    input: R,
) -> std::io::Result<Box<dyn std::io::Read + Send + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(input)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
    })
}

/// Fills `buf` from `r` as far as the stream allows; returns the bytes read (0 at its end).
/// Stages hand each other whole chunks, and the kernel is cheaper with large writes.
pub fn read_full(r: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Normalizes an image name the way docker and ctr do (`busybox` → `docker.io/library/busybox:latest`).
/// A name given to an archive cannot pin a digest: the archive's content decides the digest.
pub fn normalize_reference(name: &str) -> Result<String, Error> {
    if name.contains('@') {
        return Err(Error::BadReference {
            name: name.to_string(),
            reason: "an image name for import cannot pin a digest".into(),
        });
    }
    normalize_pinned_reference(name)
}

/// A `--tag` argument: the name as given and normalized, and its repository (what names the
/// archive's bare tags when the argument has no tag of its own).
#[derive(Debug, Clone)]
pub struct TagArg {
    /// As the user wrote it.
    pub given: String,
    /// Normalized (`docker.io/library/app:latest`).
    pub normalized: String,
    /// The normalized repository without tag (`docker.io/library/app`).
    pub repository: String,
}

impl TagArg {
    /// Checks and normalizes a `--tag` value.
    pub fn parse(given: &str) -> Result<TagArg, Error> {
        let normalized = normalize_reference(given)?;
        let repository = match normalized.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
            _ => normalized.clone(),
        };
        Ok(TagArg {
            given: given.to_string(),
            normalized,
            repository,
        })
    }
}

/// Whether a reference as written names a tag or a digest (`app:1`, `reg:5000/app@sha256:…`),
/// not only a repository (`app`, `reg:5000/app`).
pub fn has_tag_or_digest(reference: &str) -> bool {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.contains(':') || last.contains('@')
}

/// Like [`normalize_reference`], but keeps a pinned digest (`repo@sha256:…`): an image pulled by
/// digest is named so, as ctr names it.
pub fn normalize_pinned_reference(name: &str) -> Result<String, Error> {
    let r: oci_spec::distribution::Reference = name.parse().map_err(|e| Error::BadReference {
        name: name.to_string(),
        reason: format!("{e}"),
    })?;
    Ok(r.whole())
}

/// This host's architecture in the spelling image platforms use (GOARCH).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized_like_docker() {
        assert_eq!(
            normalize_reference("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize_reference("a/b:1.0").unwrap(), "docker.io/a/b:1.0");
        assert_eq!(
            normalize_reference("reg.local:5000/x/y:2").unwrap(),
            "reg.local:5000/x/y:2"
        );
        assert!(normalize_reference("Bad Name").is_err());
        assert!(normalize_reference("").is_err());
        assert!(normalize_reference(&format!("x@sha256:{}", "a".repeat(64))).is_err());
    }

    #[test]
    fn tag_arguments_know_their_repository() {
        let t = TagArg::parse("app").unwrap();
        assert_eq!(
            (t.normalized.as_str(), t.repository.as_str()),
            ("docker.io/library/app:latest", "docker.io/library/app")
        );
        let t = TagArg::parse("reg:5000/a/b:2").unwrap();
        assert_eq!(t.repository, "reg:5000/a/b");
        assert!(!has_tag_or_digest("reg:5000/a/b"));
        assert!(has_tag_or_digest("a/b:1"));
        assert!(!has_tag_or_digest("app"));
    }

    #[test]
    fn compression_is_detected_by_magic() {
        assert_eq!(detect_compression(&[0x1f, 0x8b, 8]), Compression::Gzip);
        // containerd wants the deflate method byte too.
        assert_eq!(detect_compression(&[0x1f, 0x8b, 9]), Compression::None);
        assert_eq!(
            detect_compression(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(detect_compression(&[0x5a, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(detect_compression(&[0x50, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(detect_compression(&[0x60, 0x2a, 0x4d, 0x18]), Compression::None);
        assert_eq!(detect_compression(b"bin/"), Compression::None);
        assert_eq!(detect_compression(b""), Compression::None);
    }

    #[test]
    fn zstd_frames_and_skippable_frames_decode_as_one_stream() {
        use std::io::Read;
        let mut data = vec![0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3];
        data.extend(zstd::encode_all(&b"hello "[..], 3).unwrap());
        data.extend(zstd::encode_all(&b"world"[..], 3).unwrap());
        data.extend([0x50, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 9, 9]);
        assert_eq!(detect_compression(&data), Compression::Zstd);
        let mut out = String::new();
        decompress(Compression::Zstd, &data[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
    }
}
