//! A deployed plugin tarball as an image the ordinary importer takes: an OCI image layout (as a
//! tar file) whose one layer is the plugin's root filesystem. So a plugin runs as a container
//! made from a snapshot like every TPC, its content is checked and unpacked by the same code,
//! and migration, the janitor and boot need nothing of their own for it.
//!
//! Two tarball layouts exist: docker's `plugin create` context (`config.json` at the top, the
//! root filesystem under `rootfs/`), whose `rootfs/` is rewritten into a layer of its own, and
//! what the reference containerz server takes (the root filesystem at the top, gzip'd or not),
//! which is the layer as it is.

use super::super::Error;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;

/// The OCI layout an import takes, and the config docker's layout carried.
pub struct PluginImage {
    /// The OCI image layout, as a tar file.
    pub archive: tempfile::NamedTempFile,
    /// `config.json` of a tarball in docker's layout.
    pub base_config: Option<String>,
}

/// Largest `config.json` read from a tarball.
const MAX_CONFIG: u64 = 1 << 20;

/// How the tarball is compressed (from its first bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

fn invalid(tarball: &Path, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("plugin tarball {}: {why}", tarball.display()))
}

fn compression(tarball: &Path) -> Result<Compression, Error> {
    let mut magic = [0u8; 6];
    let n = File::open(tarball)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| invalid(tarball, e))?;
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] | [b'B', b'Z', b'h', ..] | [0xfd, b'7', b'z', b'X', b'Z', 0] => {
            Err(invalid(
                tarball,
                "is compressed with zstd, bzip2 or xz; deploy it as a plain or gzip'd tar",
            ))
        }
        _ => Ok(Compression::None),
    }
}

/// The tarball's content as a tar stream.
fn open_tar(tarball: &Path, c: Compression) -> Result<Box<dyn Read>, Error> {
    let f = BufReader::new(File::open(tarball).map_err(|e| invalid(tarball, e))?);
    Ok(match c {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(f)),
    })
}

/// An entry's path without a leading `./` (or `/`).
fn clean(path: &Path) -> String {
    let s = path.to_string_lossy();
    let s = s.trim_start_matches("./").trim_start_matches('/');
    s.trim_end_matches('/').to_string()
}

/// Writes everything through a SHA-256.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest_of(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The layer blob of a tarball: its file, media type, digest, size, and diff ID.
struct Layer {
    file: LayerFile,
    media_type: &'static str,
    digest: String,
    size: u64,
    diff_id: String,
}

enum LayerFile {
    /// The tarball itself.
    Original(std::path::PathBuf),
    /// A rewritten one.
    Rewritten(tempfile::NamedTempFile),
}

/// Builds the image of a tarball, named `image_name`, in `work`.
pub fn build(tarball: &Path, image_name: &str, work: &Path) -> Result<PluginImage, Error> {
    let c = compression(tarball)?;
    // First look: docker's layout has `config.json` at the top and the root filesystem under
    // `rootfs/`; the uncompressed stream's digest is the layer's diff ID if it is the layer.
    let mut hasher = Sha256::new();
    let (mut has_config, mut has_rootfs) = (false, false);
    {
        let mut counted = HashingReader {
            inner: open_tar(tarball, c)?,
            hasher: &mut hasher,
        };
        let mut archive = tar::Archive::new(&mut counted);
        for entry in archive.entries().map_err(|e| invalid(tarball, e))? {
            let entry = entry.map_err(|e| invalid(tarball, format!("not a tar archive: {e}")))?;
            let path = clean(&entry.path().map_err(|e| invalid(tarball, e))?);
            has_config |= path == "config.json";
            has_rootfs |= path == "rootfs" || path.starts_with("rootfs/");
        }
        // The rest of the stream (tar padding) counts too.
        io::copy(&mut counted, &mut io::sink()).map_err(|e| invalid(tarball, e))?;
    }
    let docker_layout = has_config && has_rootfs;
    let mut base_config = None;
    let layer = if docker_layout {
        let (layer, config) = rewrite(tarball, c, work)?;
        base_config = Some(config);
        layer
    } else {
        let size = std::fs::metadata(tarball).map_err(|e| invalid(tarball, e))?.len();
        let diff_id = digest_of(hasher);
        let (media_type, digest) = match c {
            Compression::None => ("application/vnd.oci.image.layer.v1.tar", diff_id.clone()),
            Compression::Gzip => (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                file_digest(tarball)?,
            ),
        };
        Layer {
            file: LayerFile::Original(tarball.to_path_buf()),
            media_type,
            digest,
            size,
            diff_id,
        }
    };
    let archive = layout(image_name, &layer, work)?;
    Ok(PluginImage { archive, base_config })
}

/// Reads through a SHA-256.
struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `sha256:…` of a file.
pub(crate) fn file_digest(path: &Path) -> Result<String, Error> {
    let mut hasher = Sha256::new();
    let mut reader = HashingReader {
        inner: File::open(path).map_err(|e| invalid(path, e))?,
        hasher: &mut hasher,
    };
    io::copy(&mut reader, &mut io::sink()).map_err(|e| invalid(path, e))?;
    Ok(digest_of(hasher))
}

/// Docker's layout: `rootfs/` becomes the layer's top (hard-link targets too); `config.json`
/// is returned.
fn rewrite(tarball: &Path, c: Compression, work: &Path) -> Result<(Layer, String), Error> {
    let out = tempfile::NamedTempFile::new_in(work).map_err(|e| invalid(tarball, e))?;
    let mut writer = Hashing {
        inner: io::BufWriter::new(out.reopen().map_err(|e| invalid(tarball, e))?),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut config = None;
    {
        let mut builder = tar::Builder::new(&mut writer);
        let mut archive = tar::Archive::new(open_tar(tarball, c)?);
        for entry in archive.entries().map_err(|e| invalid(tarball, e))? {
            let mut entry = entry.map_err(|e| invalid(tarball, e))?;
            let path = clean(&entry.path().map_err(|e| invalid(tarball, e))?);
            if path == "config.json" {
                let mut text = String::new();
                (&mut entry)
                    .take(MAX_CONFIG + 1)
                    .read_to_string(&mut text)
                    .map_err(|e| invalid(tarball, format!("config.json: {e}")))?;
                if text.len() as u64 > MAX_CONFIG {
                    return Err(invalid(tarball, "config.json is larger than 1 MiB"));
                }
                config = Some(text);
                continue;
            }
            let Some(inner) = path.strip_prefix("rootfs/") else {
                continue;
            };
            let mut header = entry.header().clone();
            let kind = header.entry_type();
            let result = if kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(|e| invalid(tarball, e))?
                    .map(|t| clean(&t))
                    .unwrap_or_default();
                let target = target.strip_prefix("rootfs/").unwrap_or(&target).to_string();
                builder.append_link(&mut header, inner, target)
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(|e| invalid(tarball, e))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                builder.append_link(&mut header, inner, target)
            } else {
                builder.append_data(&mut header, inner, &mut entry)
            };
            result.map_err(|e| invalid(tarball, format!("rootfs/{inner}: {e}")))?;
        }
        builder.finish().map_err(|e| invalid(tarball, e))?;
    }
    writer.flush().map_err(|e| invalid(tarball, e))?;
    let digest = digest_of(writer.hasher);
    let layer = Layer {
        file: LayerFile::Rewritten(out),
        media_type: "application/vnd.oci.image.layer.v1.tar",
        diff_id: digest.clone(),
        digest,
        size: writer.written,
    };
    Ok((layer, config.unwrap_or_default()))
}

/// The host's architecture in OCI's words.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The OCI layout of a one-layer image named `name`, as a tar file.
fn layout(name: &str, layer: &Layer, work: &Path) -> Result<tempfile::NamedTempFile, Error> {
    let io_err = |e: io::Error| Error::Internal(format!("building the plugin image: {e}"));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }))
    .expect("serializes");
    let config_digest = digest_of(Sha256::new_with_prefix(&config));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
    }))
    .expect("serializes");
    let manifest_digest = digest_of(Sha256::new_with_prefix(&manifest));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name},
        }],
    }))
    .expect("serializes");
    let out = tempfile::NamedTempFile::new_in(work).map_err(io_err)?;
    let mut b = tar::Builder::new(io::BufWriter::new(out.reopen().map_err(io_err)?));
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let small = |b: &mut tar::Builder<_>, path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, bytes)
    };
    small(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err)?;
    small(&mut b, "index.json", &index).map_err(io_err)?;
    small(&mut b, &blob(&config_digest), &config).map_err(io_err)?;
    small(&mut b, &blob(&manifest_digest), &manifest).map_err(io_err)?;
    let mut file = match &layer.file {
        LayerFile::Original(p) => File::open(p).map_err(io_err)?,
        LayerFile::Rewritten(t) => t.reopen().map_err(io_err)?,
    };
    file.rewind().map_err(io_err)?;
    let mut h = tar::Header::new_gnu();
    h.set_size(layer.size);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, blob(&layer.digest), file).map_err(io_err)?;
    b.into_inner().and_then(|mut w| w.flush()).map_err(io_err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])], gzip: bool) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let w: Box<dyn Write> = if gzip {
            Box::new(flate2::write::GzEncoder::new(
                f.reopen().unwrap(),
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(f.reopen().unwrap())
        };
        let mut b = tar::Builder::new(w);
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
        f
    }

    fn listing(archive: &Path) -> Vec<String> {
        tar::Archive::new(File::open(archive).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn the_reference_layout_is_the_layer_itself() {
        let work = tempfile::tempdir().unwrap();
        let tarball = tar_of(&[("./bin/plugin", b"x"), ("./config.json", b"{}")], true);
        let image = build(tarball.path(), "tpcm.local/plugin/p:latest", work.path()).unwrap();
        assert!(image.base_config.is_none());
        let names = listing(image.archive.path());
        assert_eq!(names.len(), 5, "{names:?}");
        let layer_digest = file_digest(tarball.path()).unwrap();
        assert!(names.contains(&format!(
            "blobs/sha256/{}",
            layer_digest.trim_start_matches("sha256:")
        )));
    }

    #[test]
    fn dockers_layout_becomes_a_layer_of_its_rootfs() {
        let work = tempfile::tempdir().unwrap();
        let tarball = tar_of(
            &[
                ("config.json", br#"{"entrypoint":["/p"]}"#),
                ("rootfs/p", b"bin"),
                ("rootfs/etc/x", b"y"),
            ],
            false,
        );
        let image = build(tarball.path(), "tpcm.local/plugin/p:latest", work.path()).unwrap();
        assert_eq!(image.base_config.as_deref(), Some(r#"{"entrypoint":["/p"]}"#));
    }

    #[test]
    fn other_compressions_and_non_tars_are_refused() {
        let work = tempfile::tempdir().unwrap();
        let xz = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(xz.path(), [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]).unwrap();
        assert!(build(xz.path(), "n:latest", work.path()).is_err());
    }
}
