//! Saving a container as an image in an OCI layout directory: its image's layers (gzip'd, so the
//! export is compressed even when the image was imported uncompressed) plus its writable layer
//! committed as one more layer, with a config whose diff IDs say so. Used by `tpcm migrate save`;
//! the layout is imported again by the ordinary importer.

use super::{Containerd, Error};
use crate::archive::Digest;
use crate::archive::digest::HashingWriter;
use crate::archive::layout::LayoutDir;
use crate::runtime::SavedImage;
use containerd_client::services::v1::snapshots::MountsRequest;
use flate2::write::GzEncoder;
use std::io;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Bound on manifests and configs read back.
const DOCUMENT_LIMIT: u64 = 4 << 20;

/// Where the layout remembers the gzip'd form of an uncompressed layer, so a layer several TPCs
/// share is compressed once: `compressed/<uncompressed hex>` holds `<digest> <size>`.
fn compressed_note(layout: &LayoutDir, uncompressed: &Digest) -> PathBuf {
    layout.root().join("compressed").join(uncompressed.hex())
}

fn read_note(path: &Path) -> Option<(Digest, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (d, s) = text.trim().split_once(' ')?;
    Some((Digest::parse(d)?, s.parse().ok()?))
}

fn io_error(op: &str) -> impl Fn(io::Error) -> Error + '_ {
    move |e| Error::Unexpected {
        op: op.to_string(),
        detail: e.to_string(),
    }
}

/// A layer as the image's manifest lists it.
struct SourceLayer {
    digest: Digest,
    size: u64,
    gzip: bool,
}

impl Containerd {
    /// The image manifest, config and layers of container `id`, and its writable directory.
    async fn container_parts(
        &self,
        id: &str,
        image_digest: &str,
    ) -> Result<(serde_json::Value, Vec<SourceLayer>, Digest, PathBuf), Error> {
        let op = format!("save {id}");
        let unexpected = |detail: String| Error::Unexpected {
            op: op.clone(),
            detail,
        };
        let container = self
            .container_record(id)
            .await?
            .ok_or_else(|| unexpected("no such container".into()))?;
        // By digest, not by name: the name may point at another image by now.
        let manifest_digest =
            Digest::parse(image_digest).ok_or_else(|| unexpected(format!("image digest {image_digest}")))?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&self.read_small_blob(&manifest_digest, DOCUMENT_LIMIT).await?)
                .map_err(|e| unexpected(e.to_string()))?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .and_then(Digest::parse)
            .ok_or_else(|| unexpected("manifest without a config".into()))?;
        let config: serde_json::Value =
            serde_json::from_slice(&self.read_small_blob(&config_digest, DOCUMENT_LIMIT).await?)
                .map_err(|e| unexpected(e.to_string()))?;
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| unexpected("manifest without layers".into()))?
            .iter()
            .map(|l| {
                Some(SourceLayer {
                    digest: Digest::parse(l["digest"].as_str()?)?,
                    size: l["size"].as_u64()?,
                    gzip: l["mediaType"].as_str()?.ends_with("gzip"),
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| unexpected("malformed layer descriptor".into()))?;
        let mounts = self
            .snapshots()
            .mounts(self.request(
                MountsRequest {
                    snapshotter: super::SNAPSHOTTER.into(),
                    key: container.snapshot_key.clone(),
                },
                None,
            ))
            .await
            .map_err(Error::rpc(format!("snapshot mounts {id}")))?
            .into_inner()
            .mounts;
        let upper = super::snapshots::writable_dir(&mounts)
            .ok_or_else(|| unexpected(format!("no writable directory in {mounts:?}")))?
            .dir;
        Ok((config, layers, config_digest, upper))
    }

    /// An upper bound of what saving container `id` adds to `layout`: its image's layers the
    /// layout lacks (stored size; gzip only shrinks uncompressed ones) and its writable layer.
    pub(crate) async fn save_bound(&self, id: &str, image_digest: &str, layout: &Path) -> Result<u64, Error> {
        let (_, layers, _, upper) = self.container_parts(id, image_digest).await?;
        let mut bound = 0;
        for l in &layers {
            let present = std::fs::metadata(layout.join("blobs/sha256").join(l.digest.hex())).is_ok()
                || std::fs::metadata(layout.join("compressed").join(l.digest.hex())).is_ok();
            if !present {
                bound += l.size;
            }
        }
        let upper_size = tokio::task::spawn_blocking(move || dir_size(&upper))
            .await
            .map_err(|e| io_error("size")(io::Error::other(e)))?;
        // Tar headers and the two documents: a few KiB per entry at most.
        Ok(bound + upper_size + (64 << 10))
    }

    /// Saves container `id` (its image plus its writable layer) into `layout`.
    pub(crate) async fn save_container(
        &self,
        id: &str,
        image_digest: &str,
        layout: &Path,
    ) -> Result<SavedImage, Error> {
        let op = format!("save {id}");
        let layout = LayoutDir::create(layout).map_err(io_error(&op))?;
        let (mut config, layers, _, upper) = self.container_parts(id, image_digest).await?;
        let mut written = 0u64;
        let mut descriptors = Vec::new();
        for l in &layers {
            let (digest, size) = if l.gzip {
                if !layout.has(&l.digest) {
                    self.copy_blob(&l.digest, &layout, false).await?;
                    written += l.size;
                }
                (l.digest.clone(), l.size)
            } else {
                match read_note(&compressed_note(&layout, &l.digest)) {
                    Some((d, s)) if layout.has(&d) => (d, s),
                    _ => {
                        let (d, s) = self.copy_blob(&l.digest, &layout, true).await?;
                        let note = compressed_note(&layout, &l.digest);
                        std::fs::create_dir_all(note.parent().expect("under the layout"))
                            .and_then(|()| std::fs::write(&note, format!("{d} {s}")))
                            .map_err(io_error(&op))?;
                        written += s;
                        (d, s)
                    }
                }
            };
            descriptors.push(
                serde_json::json!({"mediaType": OCI_LAYER_GZIP, "digest": digest.as_str(), "size": size}),
            );
        }

        // The writable layer, committed: tar → diff ID hash → gzip → blob.
        let layout_root = layout.root().to_path_buf();
        let (rw_digest, rw_size, diff_id) = tokio::task::spawn_blocking(move || {
            let layout = LayoutDir::create(&layout_root)?;
            let mut diff_id = None;
            let (digest, size) = layout.write_with(|w| {
                let gz = GzEncoder::new(w, flate2::Compression::default());
                let mut tar = HashingWriter::new(gz);
                crate::archive::layer_writer::write_layer(&upper, &mut tar)?;
                let (digest, _, gz) = tar.finish();
                gz.finish()?;
                diff_id = Some(digest);
                Ok(())
            })?;
            Ok::<_, io::Error>((digest, size, diff_id.expect("set by the writer")))
        })
        .await
        .map_err(|e| io_error(&op)(io::Error::other(e)))?
        .map_err(io_error(&op))?;
        written += rw_size;
        descriptors.push(
            serde_json::json!({"mediaType": OCI_LAYER_GZIP, "digest": rw_digest.as_str(), "size": rw_size}),
        );

        if let Some(ids) = config["rootfs"]["diff_ids"].as_array_mut() {
            ids.push(serde_json::Value::String(diff_id.to_string()));
        }
        let history = serde_json::json!({
            "created_by": "tpcm migrate save: the container's writable layer",
            "comment": format!("container {id}"),
        });
        match config["history"].as_array_mut() {
            Some(h) => h.push(history),
            None => config["history"] = serde_json::json!([history]),
        }
        let config_bytes = serde_json::to_vec(&config).expect("json serializes");
        let (config_digest, config_size) = layout.write_bytes(&config_bytes).map_err(io_error(&op))?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest.as_str(), "size": config_size},
            "layers": descriptors,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("json serializes");
        let (manifest_digest, manifest_size) = layout.write_bytes(&manifest_bytes).map_err(io_error(&op))?;
        Ok(SavedImage {
            manifest_digest: manifest_digest.to_string(),
            manifest_size,
            written: written + config_size + manifest_size,
        })
    }

    /// Copies blob `digest` from the content store into the layout, gzip'ing it when asked.
    async fn copy_blob(
        &self,
        digest: &Digest,
        layout: &LayoutDir,
        gzip: bool,
    ) -> Result<(Digest, u64), Error> {
        let (tx, rx) = mpsc::channel(2);
        let root = layout.root().to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            let layout = LayoutDir::create(&root)?;
            let mut reader = super::import::ChunkReader::new(rx);
            if gzip {
                layout.write_with(|w| {
                    let mut gz = GzEncoder::new(w, flate2::Compression::default());
                    io::copy(&mut reader, &mut gz)?;
                    gz.finish().map(|_| ())
                })
            } else {
                layout.write_from(reader)
            }
        });
        let read = self.read_blob(digest, tx).await;
        let written = writer
            .await
            .map_err(|e| io_error("export")(io::Error::other(e)))?
            .map_err(io_error("export"))?;
        read?;
        if !gzip && &written.0 != digest {
            return Err(Error::Unexpected {
                op: format!("export {digest}"),
                detail: format!("the content store returned {} instead", written.0),
            });
        }
        Ok(written)
    }
}

/// Bytes of regular files under `dir` (not following links).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}
