//! Turns a scanned archive into import plans: which manifest, config and layers make each image,
//! with every digest, size and diff ID checked against what streamed past.
//!
//! Two shapes are understood. With `oci-layout` + `index.json` (plain OCI archives and docker ≥ 25
//! saves) the original manifests are kept byte for byte. With only `manifest.json` (docker-save
//! v1.2) a docker schema-2 manifest is synthesized, as `ctr images import` does.

use super::scan::Scanned;
use super::{Compression, Digest, Error, chain_ids, host_arch, normalize_reference};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use std::collections::HashMap;

/// Docker schema-2 media types (what docker-save layers are).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker uncompressed layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What the importer learnt about one streamed blob.
#[derive(Debug, Clone)]
pub struct BlobFacts {
    /// sha256 of the bytes as stored.
    pub digest: Digest,
    /// Stored size.
    pub size: u64,
    /// For layers: compression and the sha256 of the uncompressed tar.
    pub layer: Option<(Compression, Digest)>,
}

/// A document (manifest or config) to write into the content store.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its media type.
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// The exact bytes.
    pub bytes: Vec<u8>,
}

/// One layer of an image, in stack order.
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    /// Archive path of the blob (after following links).
    pub path: String,
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// Media type written in the manifest.
    pub media_type: String,
    /// Uncompressed digest (from the config, verified).
    pub diff_id: Digest,
    /// Chain ID: the name of the committed snapshot for the stack up to this layer.
    pub chain_id: Digest,
}

/// One image to import.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// Normalized names to create records for (may be empty: the caller asks for `--tag`).
    pub names: Vec<String>,
    /// The manifest, the image record's target.
    pub manifest: Document,
    /// The image config.
    pub config: Document,
    /// Layers bottom to top.
    pub layers: Vec<PlannedLayer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Resolves every image in the archive.
pub fn resolve(scanned: &Scanned, blobs: &HashMap<String, BlobFacts>) -> Result<Vec<ImagePlan>, Error> {
    let docker_entries = match scanned.metadata.get("manifest.json") {
        Some(bytes) => Some(
            serde_json::from_slice::<Vec<DockerManifestEntry>>(bytes)
                .map_err(|e| Error::bad_metadata("manifest.json", e))?,
        ),
        None => None,
    };
    // Every path manifest.json names must stay inside the archive, even when index.json is the
    // one followed (docker ≥ 25 writes both).
    for e in docker_entries.iter().flatten() {
        scanned.resolve_path(&e.config)?;
        for l in &e.layers {
            scanned.resolve_path(l)?;
        }
    }
    let plans = if scanned.has_oci_layout && scanned.metadata.contains_key("index.json") {
        resolve_oci(scanned, blobs, docker_entries.as_deref().unwrap_or(&[]))?
    } else if let Some(entries) = docker_entries {
        entries
            .iter()
            .map(|e| resolve_docker(scanned, blobs, e))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        return Err(Error::NotAnImage);
    };
    if plans.is_empty() {
        return Err(Error::bad_metadata("manifest.json/index.json", "lists no image"));
    }
    Ok(plans)
}

fn metadata<'a>(scanned: &'a Scanned, path: &str) -> Result<(String, &'a [u8]), Error> {
    let real = scanned.resolve_path(path)?;
    match scanned.metadata.get(&real) {
        Some(b) => Ok((real, b)),
        None => Err(Error::MissingBlob(path.to_string())),
    }
}

fn parse_config(name: &str, bytes: &[u8]) -> Result<Vec<Digest>, Error> {
    let config: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| Error::bad_metadata(name, e))?;
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            Digest::parse(d).ok_or_else(|| Error::bad_metadata(name, format!("diff ID {d:?} is not sha256")))
        })
        .collect()
}

fn check_digest(what: &str, expected: &Digest, actual: &Digest) -> Result<(), Error> {
    if expected != actual {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Builds the layer list, checking each blob's diff ID against the config.
fn plan_layers(
    blobs: &HashMap<String, BlobFacts>,
    layers: Vec<(String, Option<String>)>,
    diff_ids: &[Digest],
    docker_media: bool,
) -> Result<Vec<PlannedLayer>, Error> {
    if layers.len() != diff_ids.len() {
        return Err(Error::DiffIdCount {
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let chains = chain_ids(diff_ids);
    let mut out = Vec::with_capacity(layers.len());
    for (i, (path, declared)) in layers.into_iter().enumerate() {
        let facts = blobs.get(&path).ok_or_else(|| Error::MissingBlob(path.clone()))?;
        let Some((compression, diff_id)) = &facts.layer else {
            return Err(Error::BadLayer {
                blob: path,
                reason: "content is neither a tar nor a gzip'd tar".into(),
            });
        };
        if diff_id != &diff_ids[i] {
            return Err(Error::DiffIdMismatch {
                index: i,
                blob: path,
                expected: diff_ids[i].to_string(),
                actual: diff_id.to_string(),
            });
        }
        let media_type = match declared {
            Some(mt) => {
                let gzip = mt.ends_with("gzip");
                let plain = mt.ends_with(".tar") || mt == DOCKER_LAYER;
                let ok = match compression {
                    Compression::Gzip => gzip,
                    Compression::None => plain,
                };
                if !ok {
                    return Err(Error::BadLayer {
                        blob: path,
                        reason: format!("declared as {mt} but its content is {compression:?}-compressed tar"),
                    });
                }
                mt
            }
            None => match (compression, docker_media) {
                (Compression::Gzip, _) => DOCKER_LAYER_GZIP.to_string(),
                (Compression::None, _) => DOCKER_LAYER.to_string(),
            },
        };
        out.push(PlannedLayer {
            path,
            digest: facts.digest.clone(),
            size: facts.size,
            media_type,
            diff_id: diff_id.clone(),
            chain_id: chains[i].clone(),
        });
    }
    Ok(out)
}

fn normalize_names(tags: &[String]) -> Result<Vec<String>, Error> {
    tags.iter().map(|t| normalize_reference(t)).collect()
}

fn resolve_docker(
    scanned: &Scanned,
    blobs: &HashMap<String, BlobFacts>,
    entry: &DockerManifestEntry,
) -> Result<ImagePlan, Error> {
    let (config_path, config_bytes) = metadata(scanned, &entry.config)?;
    let config_digest = Digest::of(config_bytes);
    // v1.2 names the config `<hex>.json`, moby 25 `blobs/sha256/<hex>`: both claim a digest.
    let claimed = config_path
        .strip_suffix(".json")
        .or_else(|| config_path.strip_prefix("blobs/sha256/"))
        .and_then(Digest::from_hex);
    if let Some(claimed) = claimed {
        check_digest(&format!("image config {config_path}"), &claimed, &config_digest)?;
    }
    let diff_ids = parse_config(&config_path, config_bytes)?;
    let layer_paths = entry
        .layers
        .iter()
        .map(|l| scanned.resolve_path(l).map(|p| (p, None)))
        .collect::<Result<Vec<_>, _>>()?;
    let layers = plan_layers(blobs, layer_paths, &diff_ids, true)?;
    let manifest_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config_bytes.len(), "digest": config_digest.as_str()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "size": l.size, "digest": l.digest.as_str(),
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest_json).expect("a json value serializes");
    Ok(ImagePlan {
        names: normalize_names(entry.repo_tags.as_deref().unwrap_or(&[]))?,
        manifest: Document {
            media_type: DOCKER_MANIFEST.into(),
            digest: Digest::of(&manifest_bytes),
            bytes: manifest_bytes,
        },
        config: Document {
            media_type: DOCKER_CONFIG.into(),
            digest: config_digest,
            bytes: config_bytes.to_vec(),
        },
        layers,
    })
}

fn blob_path(d: &Descriptor) -> Result<(String, Digest), Error> {
    let digest = Digest::parse(d.digest().as_ref())
        .ok_or_else(|| Error::bad_metadata("index.json", format!("unsupported digest {}", d.digest())))?;
    Ok((format!("blobs/sha256/{}", digest.hex()), digest))
}

/// Loads a JSON blob a descriptor points at and checks its digest and size.
fn descriptor_document<'a>(
    scanned: &'a Scanned,
    d: &Descriptor,
) -> Result<(String, Digest, &'a [u8]), Error> {
    let (path, digest) = blob_path(d)?;
    let (path, bytes) = metadata(scanned, &path)?;
    check_digest(&path, &digest, &Digest::of(bytes))?;
    if d.size() != bytes.len() as u64 {
        return Err(Error::SizeMismatch {
            what: path,
            expected: d.size() as i64,
            actual: bytes.len() as u64,
        });
    }
    Ok((path, digest, bytes))
}

fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex) || mt.to_string() == DOCKER_MANIFEST_LIST
}

/// Picks linux/<host arch> from an index (a single unlabelled entry is taken as is). Registry
/// pulls use it too, so an archive and a pull choose the same platform.
pub fn pick_platform<'a>(what: &str, manifests: &'a [Descriptor]) -> Result<&'a Descriptor, Error> {
    let arch = host_arch();
    if let Some(d) = manifests.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
    }) {
        return Ok(d);
    }
    match manifests {
        [only] if only.platform().is_none() => Ok(only),
        [] => Err(Error::bad_metadata(what, "the index lists no manifest")),
        _ => Err(Error::NoPlatform(arch.to_string())),
    }
}

fn resolve_oci(
    scanned: &Scanned,
    blobs: &HashMap<String, BlobFacts>,
    docker_entries: &[DockerManifestEntry],
) -> Result<Vec<ImagePlan>, Error> {
    let (_, index_bytes) = metadata(scanned, "index.json")?;
    let index: ImageIndex =
        serde_json::from_slice(index_bytes).map_err(|e| Error::bad_metadata("index.json", e))?;
    let mut plans: Vec<ImagePlan> = Vec::new();
    // Entries for other platforms are skipped; an index with only those is refused.
    let arch = host_arch();
    let for_host: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| {
            d.platform()
                .as_ref()
                .is_none_or(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
        })
        .collect();
    if for_host.is_empty() && !index.manifests().is_empty() {
        return Err(Error::NoPlatform(arch.to_string()));
    }
    for top in for_host {
        let mut names = Vec::new();
        let annotations = top.annotations().clone().unwrap_or_default();
        if let Some(full) = annotations.get("io.containerd.image.name") {
            names.push(normalize_reference(full)?);
        } else if let Some(r) = annotations.get("org.opencontainers.image.ref.name") {
            // A bare tag names no repository; only a full reference is usable as a name.
            if r.contains('/') || r.contains(':') {
                names.push(normalize_reference(r)?);
            }
        }
        let mut descriptor = top.clone();
        if is_index(descriptor.media_type()) {
            let (path, _, bytes) = descriptor_document(scanned, &descriptor)?;
            let nested: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| Error::bad_metadata(&path, e))?;
            descriptor = pick_platform(&path, nested.manifests())?.clone();
        }
        let (manifest_path, manifest_digest, manifest_bytes) = descriptor_document(scanned, &descriptor)?;
        let manifest: ImageManifest =
            serde_json::from_slice(manifest_bytes).map_err(|e| Error::bad_metadata(&manifest_path, e))?;
        let (config_path, config_digest, config_bytes) = descriptor_document(scanned, manifest.config())?;
        let diff_ids = parse_config(&config_path, config_bytes)?;
        let mut layer_paths = Vec::new();
        for l in manifest.layers() {
            let (path, digest) = blob_path(l)?;
            let path = scanned.resolve_path(&path)?;
            if let Some(facts) = blobs.get(&path) {
                check_digest(&path, &digest, &facts.digest)?;
                if l.size() != facts.size {
                    return Err(Error::SizeMismatch {
                        what: path,
                        expected: l.size() as i64,
                        actual: facts.size,
                    });
                }
            }
            layer_paths.push((path, Some(l.media_type().to_string())));
        }
        let layers = plan_layers(blobs, layer_paths, &diff_ids, false)?;
        // Docker ≥ 25 also writes manifest.json; its RepoTags name the image when the index does not.
        if names.is_empty() {
            for e in docker_entries {
                if scanned.resolve_path(&e.config).ok().as_deref() == Some(config_path.as_str()) {
                    names.extend(normalize_names(e.repo_tags.as_deref().unwrap_or(&[]))?);
                }
            }
        }
        if let Some(existing) = plans.iter_mut().find(|p| p.manifest.digest == manifest_digest) {
            for n in names {
                if !existing.names.contains(&n) {
                    existing.names.push(n);
                }
            }
            continue;
        }
        plans.push(ImagePlan {
            names,
            manifest: Document {
                media_type: descriptor.media_type().to_string(),
                digest: manifest_digest,
                bytes: manifest_bytes.to_vec(),
            },
            config: Document {
                media_type: manifest.config().media_type().to_string(),
                digest: config_digest,
                bytes: config_bytes.to_vec(),
            },
            layers,
        });
    }
    Ok(plans)
}
