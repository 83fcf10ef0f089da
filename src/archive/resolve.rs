//! Turns a scanned archive into import plans: which manifest, config and layers make each image,
//! with every digest, size and diff ID checked against what streamed past.
//!
//! Two shapes are understood. With `oci-layout` + `index.json` (plain OCI archives and docker ≥ 25
//! saves) the original manifests are kept byte for byte. With only `manifest.json` (docker-save
//! v1.2) a docker schema-2 manifest is synthesized, as `ctr images import` does.

use super::scan::Scanned;
use super::{
    Compression, Digest, Error, chain_ids, host_arch, normalize_pinned_reference, normalize_reference,
};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Platform};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

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
    /// How its content is compressed (what was detected while it streamed).
    pub compression: Compression,
    /// Uncompressed digest (from the config, verified).
    pub diff_id: Digest,
    /// Chain ID: the name of the committed snapshot for the stack up to this layer.
    pub chain_id: Digest,
}

/// What an image record points at: a descriptor as `ctr images import` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Media type of the manifest or index.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The annotations of the index entry that named it (ctr keeps them on the record).
    pub annotations: BTreeMap<String, String>,
}

/// One image record to create (or move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Normalized reference.
    pub name: String,
    /// What it points at.
    pub target: Target,
}

/// A nested index the records point at (a multi-platform image): stored as is, with GC labels
/// for the manifests chosen for this host.
#[derive(Debug, Clone)]
pub struct IndexPlan {
    /// The index bytes.
    pub document: Document,
    /// Manifests of this host's platform it lists (`containerd.io/gc.ref.content.m.<i>`).
    pub manifests: Vec<Digest>,
}

/// One image to import.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// Records to create, in archive order (a later one with the same name wins, as with ctr).
    /// Empty when the archive does not name the image: the caller asks for `--tag`.
    pub records: Vec<Record>,
    /// What an untagged image or a `--tag` name points at.
    pub top: Target,
    /// The nested index `top` is, if it is one.
    pub index: Option<IndexPlan>,
    /// The platform manifest: what is unpacked and what a TPC pins.
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

/// The name prefix ctr gives an OCI layout's bare tags (`ref.name` = `1.0`): `import-<local date>`.
pub fn default_base_name() -> String {
    // SAFETY: time(NULL) has no preconditions; localtime_r fills a struct we own (an all-zero
    // tm is a valid value) from a valid time_t.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&now, &mut tm) };
    format!(
        "import-{:04}-{:02}-{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday
    )
}

/// Resolves every image in the archive. `base` names bare tags (`<base>:<tag>`), as ctr's
/// `--base-name` (default [`default_base_name`]).
pub fn resolve(
    scanned: &Scanned,
    blobs: &HashMap<String, BlobFacts>,
    base: &str,
) -> Result<Vec<ImagePlan>, Error> {
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
        check_layout_version(scanned)?;
        resolve_oci(scanned, blobs, docker_entries.as_deref().unwrap_or(&[]), base)?
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

/// ctr refuses a layout whose `oci-layout` is not version 1.0.0.
fn check_layout_version(scanned: &Scanned) -> Result<(), Error> {
    #[derive(Deserialize)]
    struct Layout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let Some(bytes) = scanned.metadata.get("oci-layout") else {
        return Ok(());
    };
    let layout: Layout = serde_json::from_slice(bytes).map_err(|e| Error::bad_metadata("oci-layout", e))?;
    if layout.version != "1.0.0" {
        return Err(Error::bad_metadata(
            "oci-layout",
            format!("unsupported OCI layout version {:?}", layout.version),
        ));
    }
    Ok(())
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

/// How containerd's differ reads a layer of this media type (`images.DiffCompression`): OCI
/// `…tar` without a `gzip`/`zstd` suffix, and wrapped docker types, are read as plain tar; other
/// layer types are decompressed by what their content is. `None` for a type that is no layer.
fn layer_reading(media_type: &str) -> Option<LayerReading> {
    let mut parts = media_type.split('+');
    let base = parts.next().unwrap_or_default();
    let mut ext: Vec<&str> = parts.collect();
    ext.sort_unstable();
    match base {
        DOCKER_LAYER | DOCKER_LAYER_FOREIGN | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP => {
            Some(if ext.is_empty() {
                LayerReading::ByContent
            } else {
                LayerReading::Plain
            })
        }
        OCI_LAYER | OCI_LAYER_NONDIST => Some(match ext.last() {
            Some(&"gzip") | Some(&"zstd") => LayerReading::ByContent,
            _ => LayerReading::Plain,
        }),
        _ => None,
    }
}

/// Whether a media type is one containerd unpacks as a layer (tar, gzip'd or zstd'd tar, in
/// docker's or OCI's spelling).
pub fn is_layer_type(media_type: &str) -> bool {
    layer_reading(media_type).is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerReading {
    /// Never decompressed.
    Plain,
    /// gzip, zstd or plain, as the content is.
    ByContent,
}

const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
const DOCKER_LAYER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";

/// Builds the layer list, checking each blob's diff ID against the config.
fn plan_layers(
    blobs: &HashMap<String, BlobFacts>,
    layers: Vec<(String, Option<String>)>,
    diff_ids: &[Digest],
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
                reason: "content is not a tar, nor a gzip'd or zstd'd tar".into(),
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
                match layer_reading(&mt) {
                    None => {
                        return Err(Error::BadLayer {
                            blob: path,
                            reason: format!("media type {mt} is not a layer type"),
                        });
                    }
                    Some(LayerReading::Plain) if *compression != Compression::None => {
                        return Err(Error::BadLayer {
                            blob: path,
                            reason: format!(
                                "declared as {mt} (an uncompressed tar) but its content is {compression:?}-compressed"
                            ),
                        });
                    }
                    Some(_) => {}
                }
                mt
            }
            // What ctr writes into the manifest it makes for a docker-save archive: any
            // compressed layer is typed gzip.
            None => match compression {
                Compression::None => DOCKER_LAYER.to_string(),
                _ => DOCKER_LAYER_GZIP.to_string(),
            },
        };
        out.push(PlannedLayer {
            path,
            digest: facts.digest.clone(),
            size: facts.size,
            media_type,
            compression: *compression,
            diff_id: diff_id.clone(),
            chain_id: chains[i].clone(),
        });
    }
    Ok(out)
}

fn normalize_names(tags: &[String]) -> Result<Vec<String>, Error> {
    tags.iter().map(|t| normalize_reference(t)).collect()
}

/// A descriptor in the field order Go's `ocispec.Descriptor` marshals (what ctr writes).
#[derive(Serialize)]
struct GoDescriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: &'a str,
    size: u64,
}

/// The docker schema-2 manifest `ctr images import` synthesizes for a docker-save image, in its
/// field order, so the bytes (and the digest) are the same.
#[derive(Serialize)]
struct GoDockerManifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: GoDescriptor<'a>,
    layers: Vec<GoDescriptor<'a>>,
}

/// The tag (or `@digest`) part of a normalized reference: ctr's `org.opencontainers.image.ref.name`.
fn reference_object(normalized: &str) -> String {
    if let Some((_, d)) = normalized.split_once('@') {
        return format!("@{d}");
    }
    let last = normalized.rsplit('/').next().unwrap_or(normalized);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag.to_string(),
        None => normalized.to_string(),
    }
}

/// A record for `name` (already normalized) as ctr annotates a docker-save image's index entry.
pub fn named_record(name: &str, target: &Target) -> Record {
    let mut target = target.clone();
    target.annotations = BTreeMap::from([
        ("io.containerd.image.name".to_string(), name.to_string()),
        (
            "org.opencontainers.image.ref.name".to_string(),
            reference_object(name),
        ),
    ]);
    Record {
        name: name.to_string(),
        target,
    }
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
    let layers = plan_layers(blobs, layer_paths, &diff_ids)?;
    let manifest = GoDockerManifest {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: GoDescriptor {
            media_type: DOCKER_CONFIG,
            digest: config_digest.as_str(),
            size: config_bytes.len() as u64,
        },
        layers: layers
            .iter()
            .map(|l| GoDescriptor {
                media_type: &l.media_type,
                digest: l.digest.as_str(),
                size: l.size,
            })
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let manifest_digest = Digest::of(&manifest_bytes);
    let top = Target {
        media_type: DOCKER_MANIFEST.into(),
        digest: manifest_digest.clone(),
        size: manifest_bytes.len() as u64,
        annotations: BTreeMap::new(),
    };
    let records = normalize_names(entry.repo_tags.as_deref().unwrap_or(&[]))?
        .iter()
        .map(|n| named_record(n, &top))
        .collect();
    Ok(ImagePlan {
        records,
        top,
        index: None,
        manifest: Document {
            media_type: DOCKER_MANIFEST.into(),
            digest: manifest_digest,
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

/// Whether a media type is an index (OCI index or docker manifest list).
pub fn is_index_type(mt: &str) -> bool {
    mt == MediaType::ImageIndex.to_string() || mt == DOCKER_MANIFEST_LIST
}

fn is_index(mt: &MediaType) -> bool {
    is_index_type(mt.as_ref())
}

/// containerd's `normalizeArch`: (architecture, variant) in canonical spelling.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (arch, variant) = (arch.to_ascii_lowercase(), variant.to_ascii_lowercase());
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64".into(),
            if variant == "v1" { String::new() } else { variant },
        ),
        "aarch64" | "arm64" => (
            "arm64".into(),
            if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            },
        ),
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => (
            "arm".into(),
            match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        _ => (arch, variant),
    }
}

/// The platforms this host runs, best first: containerd's `platforms.Default()` (amd64 also
/// runs 386; arm64 also runs arm v8 to v5).
fn host_platforms() -> Vec<(String, String)> {
    match host_arch() {
        "amd64" => vec![("amd64".into(), String::new()), ("386".into(), String::new())],
        "arm64" => {
            let mut v = vec![("arm64".to_string(), String::new())];
            v.extend(
                ["v8", "v7", "v6", "v5"]
                    .iter()
                    .map(|x| ("arm".to_string(), x.to_string())),
            );
            v
        }
        other => vec![normalize_arch(other, "")],
    }
}

/// Where a platform ranks for this host (0 best), `None` when the host cannot run it.
fn platform_rank(p: &Platform) -> Option<usize> {
    if !p.os().to_string().eq_ignore_ascii_case("linux") {
        return None;
    }
    let wanted = normalize_arch(
        &p.architecture().to_string(),
        p.variant().as_deref().unwrap_or(""),
    );
    host_platforms().iter().position(|h| *h == wanted)
}

/// Whether an index entry is for this host: no platform, or one the host runs.
fn runs_here(d: &Descriptor) -> bool {
    d.platform().as_ref().is_none_or(|p| platform_rank(p).is_some())
}

/// Picks this host's manifest from an index as containerd does: entries the host runs, the best
/// platform first, entries without a platform last, index order among equals. Registry pulls
/// and the image listing use it too, so all choose the same manifest.
pub fn pick_platform<'a>(what: &str, manifests: &'a [Descriptor]) -> Result<&'a Descriptor, Error> {
    let best = manifests
        .iter()
        .filter_map(|d| match d.platform() {
            Some(p) => platform_rank(p).map(|r| (r, d)),
            None => Some((usize::MAX, d)),
        })
        .min_by_key(|(r, _)| *r);
    match (best, manifests) {
        (Some((_, d)), _) => Ok(d),
        (None, []) => Err(Error::bad_metadata(what, "the index lists no manifest")),
        (None, _) => Err(Error::NoPlatform(host_arch().to_string())),
    }
}

/// The record name of an OCI index entry, as ctr names it: `io.containerd.image.name`, else
/// `org.opencontainers.image.ref.name` (a bare tag gets `<base>:`), normalized.
fn entry_name(top: &Descriptor, base: &str) -> Result<Option<String>, Error> {
    let annotations = top.annotations().clone().unwrap_or_default();
    if let Some(full) = annotations.get("io.containerd.image.name") {
        return normalize_reference(full).map(Some);
    }
    match annotations.get("org.opencontainers.image.ref.name") {
        Some(r) if r.contains(['/', ':', '@']) => normalize_pinned_reference(r).map(Some),
        Some(tag) if !tag.is_empty() => normalize_reference(&format!("{base}:{tag}")).map(Some),
        _ => Ok(None),
    }
}

fn target_of(d: &Descriptor) -> Result<Target, Error> {
    let (_, digest) = blob_path(d)?;
    Ok(Target {
        media_type: d.media_type().to_string(),
        digest,
        size: d.size(),
        annotations: d.annotations().clone().unwrap_or_default().into_iter().collect(),
    })
}

fn resolve_oci(
    scanned: &Scanned,
    blobs: &HashMap<String, BlobFacts>,
    docker_entries: &[DockerManifestEntry],
    base: &str,
) -> Result<Vec<ImagePlan>, Error> {
    let (_, index_bytes) = metadata(scanned, "index.json")?;
    let index: ImageIndex =
        serde_json::from_slice(index_bytes).map_err(|e| Error::bad_metadata("index.json", e))?;
    let mut plans: Vec<ImagePlan> = Vec::new();
    // Entries for platforms this host cannot run are skipped (ctr records them and leaves
    // records it cannot resolve); an index with only those is refused.
    let for_host: Vec<&Descriptor> = index.manifests().iter().filter(|d| runs_here(d)).collect();
    if for_host.is_empty() && !index.manifests().is_empty() {
        return Err(Error::NoPlatform(host_arch().to_string()));
    }
    for top in for_host {
        let name = entry_name(top, base)?;
        let top_target = target_of(top)?;
        let mut descriptor = top.clone();
        let mut nested = None;
        if is_index(descriptor.media_type()) {
            let (path, digest, bytes) = descriptor_document(scanned, &descriptor)?;
            let parsed: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| Error::bad_metadata(&path, e))?;
            descriptor = pick_platform(&path, parsed.manifests())?.clone();
            let (_, chosen) = blob_path(&descriptor)?;
            nested = Some(IndexPlan {
                document: Document {
                    media_type: top.media_type().to_string(),
                    digest,
                    bytes: bytes.to_vec(),
                },
                manifests: vec![chosen],
            });
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
        let layers = plan_layers(blobs, layer_paths, &diff_ids)?;
        let mut records: Vec<Record> = name
            .into_iter()
            .map(|name| Record {
                name,
                target: top_target.clone(),
            })
            .collect();
        // Docker ≥ 25 also writes manifest.json; its RepoTags name the image when the index does not.
        if records.is_empty() {
            for e in docker_entries {
                if scanned.resolve_path(&e.config).ok().as_deref() == Some(config_path.as_str()) {
                    for n in normalize_names(e.repo_tags.as_deref().unwrap_or(&[]))? {
                        records.push(named_record(&n, &top_target));
                    }
                }
            }
        }
        if let Some(existing) = plans.iter_mut().find(|p| p.top.digest == top_target.digest) {
            existing.records.extend(records);
            continue;
        }
        plans.push(ImagePlan {
            records,
            top: top_target,
            index: nested,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types_are_read_as_containerd_reads_them() {
        assert_eq!(layer_reading(OCI_LAYER), Some(LayerReading::Plain));
        assert_eq!(
            layer_reading("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(LayerReading::ByContent)
        );
        assert_eq!(
            layer_reading("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(LayerReading::ByContent)
        );
        assert_eq!(
            layer_reading("application/vnd.oci.image.layer.v1.tar+foo"),
            Some(LayerReading::Plain)
        );
        assert_eq!(layer_reading(DOCKER_LAYER), Some(LayerReading::ByContent));
        assert_eq!(layer_reading(DOCKER_LAYER_GZIP), Some(LayerReading::ByContent));
        assert_eq!(
            layer_reading("application/vnd.docker.image.rootfs.diff.tar.gzip+x"),
            Some(LayerReading::Plain)
        );
        assert_eq!(layer_reading("application/octet-stream"), None);
    }

    #[test]
    fn reference_objects_are_the_tag_or_digest() {
        assert_eq!(reference_object("docker.io/library/foo:1.0"), "1.0");
        assert_eq!(reference_object("reg:5000/a/b:2"), "2");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(reference_object(&format!("docker.io/a/b@{d}")), format!("@{d}"));
    }

    #[test]
    fn the_synthesized_docker_manifest_has_ctrs_field_order() {
        let m = GoDockerManifest {
            schema_version: 2,
            media_type: DOCKER_MANIFEST,
            config: GoDescriptor {
                media_type: DOCKER_CONFIG,
                digest: "sha256:c",
                size: 3,
            },
            layers: vec![GoDescriptor {
                media_type: DOCKER_LAYER,
                digest: "sha256:l",
                size: 5,
            }],
        };
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&m).unwrap()).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c","size":3},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar","digest":"sha256:l","size":5}]}"#
        );
    }

    #[test]
    fn platforms_rank_like_containerds_default_matcher() {
        let p = |arch: &str, variant: Option<&str>| {
            let mut b = oci_spec::image::PlatformBuilder::default()
                .os(oci_spec::image::Os::Linux)
                .architecture(oci_spec::image::Arch::from(arch));
            if let Some(v) = variant {
                b = b.variant(v.to_string());
            }
            b.build().unwrap()
        };
        if host_arch() == "amd64" {
            assert_eq!(platform_rank(&p("amd64", None)), Some(0));
            assert_eq!(platform_rank(&p("amd64", Some("v1"))), Some(0));
            assert_eq!(platform_rank(&p("386", None)), Some(1));
            assert_eq!(platform_rank(&p("amd64", Some("v2"))), None);
            assert_eq!(platform_rank(&p("arm64", None)), None);
        }
    }
}
