//! The import engine: an image archive stream into containerd's content store and overlayfs
//! snapshots, in one pass over the bytes.
//!
//! Real archives put the manifest after the layers, so a layer's parent is unknown while its
//! bytes stream past. Each layer is therefore written to the content store *and* extracted, at
//! the same time, into a parentless "staging" snapshot (the untar is independent of the parent:
//! an overlay upper directory holds only the layer's own changes). Once the manifest is known,
//! each chain ID gets its real snapshot (`Prepare` on its parent), the staged top-level entries
//! are renamed into it (same filesystem, no copy) and it is committed. Per blob, three stages
//! overlap: reading + hashing (this thread), extraction (a thread), upload (a tokio task).
//!
//! Everything happens under one lease; on any error the staging snapshots are removed and the
//! lease is deleted synchronously, so containerd collects every blob and snapshot this import
//! made and no image record exists. See `docs/architecture.md` and `docs/performance.md`.

use super::content::{Upload, UploadOutcome};
use super::snapshots::SNAPSHOT_REF_LABEL;
use super::{Containerd, Lease, SNAPSHOTTER};
use crate::archive::extract::{ExtractSummary, Whiteouts, extract_layer};
use crate::archive::resolve::{BlobFacts, ImagePlan, default_base_name, named_record, resolve};
use crate::archive::scan::{BlobEntry, BlobKind, BlobSink, Scanned, blob_kind, scan, scan_seekable};
use crate::archive::{self, Compression, Digest, digest::Hasher, digest::HashingReader};
use crate::runtime::{ArchiveInput, ByteCounter, Error, ImportedImage, Metered, PulledImage};
use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Bytes per chunk handed between stages (and per content `WRITE`): within design §4's 1–8 MiB.
const CHUNK: usize = 1 << 20;
/// Chunks queued between two stages; with [`CHUNK`] this bounds the memory an import holds.
const QUEUE: usize = 2;
/// Uploads whose commit may still be in flight while the next blob streams.
const MAX_PENDING_UPLOADS: usize = 2;

/// Imports every image in the archive read from `input`. With `tag`, the archive must hold one
/// image, which gets that (normalized) name instead of the archive's own.
pub async fn import_archive(
    cd: &Containerd,
    input: ArchiveInput,
    tag: Option<String>,
) -> Result<Vec<ImportedImage>, Error> {
    let tag = tag.map(|t| archive::TagArg::parse(&t)).transpose()?;
    under_lease(cd, |lease, scratch_keys| {
        run_archive(cd, lease, input, tag, scratch_keys)
    })
    .await
}

/// Imports an image pulled piecewise (from a registry): its layers stream concurrently through
/// the same staging pipeline as an archive's, and the documents are checked by the same resolver.
pub async fn import_pulled(cd: &Containerd, image: PulledImage) -> Result<ImportedImage, Error> {
    let name = archive::normalize_pinned_reference(&image.name)?;
    let mut imported = under_lease(cd, |lease, scratch_keys| {
        run_pulled(cd, lease, image, name, scratch_keys)
    })
    .await?;
    Ok(imported.remove(0))
}

/// Runs an import under a fresh lease: whatever the outcome, the staging snapshots go; on
/// failure the lease is deleted synchronously, so containerd collects every blob and snapshot
/// the import made and no image record exists.
async fn under_lease<F, Fut>(cd: &Containerd, import: F) -> Result<Vec<ImportedImage>, Error>
where
    F: FnOnce(Lease, Arc<Mutex<Vec<String>>>) -> Fut,
    Fut: Future<Output = Result<Vec<ImportedImage>, Error>>,
{
    let lease = cd.create_lease("import").await?;
    let scratch_keys = Arc::new(Mutex::new(Vec::new()));
    let result = import(lease.clone(), scratch_keys.clone()).await;
    // Staging snapshots are never needed after the import, whatever its outcome; unpack keys
    // that were committed no longer exist and their removal is a no-op.
    let keys = std::mem::take(&mut *scratch_keys.lock().expect("lock is never poisoned"));
    for key in keys.iter().rev() {
        let _ = cd.remove_snapshot(key).await;
    }
    match result {
        Ok(images) => {
            // The images are complete and referenced; a lease that cannot be deleted now only
            // delays collection of nothing, and expires by itself.
            if let Err(e) = cd.delete_lease(lease, false).await {
                tracing::warn!("import succeeded but its lease was not released: {e}");
            }
            Ok(images)
        }
        Err(e) => {
            // Synchronous: containerd collects everything only this lease kept alive.
            let _ = cd.delete_lease(lease, true).await;
            Err(e)
        }
    }
}

/// A layer extracted into a staging snapshot, waiting for its parent to be known.
struct Staged {
    dir: PathBuf,
    summary: ExtractSummary,
}

async fn run_archive(
    cd: &Containerd,
    lease: Lease,
    input: ArchiveInput,
    tag: Option<archive::TagArg>,
    scratch_keys: Arc<Mutex<Vec<String>>>,
) -> Result<Vec<ImportedImage>, Error> {
    let sink = StagingSink::new(cd, &lease, scratch_keys.clone());
    let started = std::time::Instant::now();
    let (scanned, mut sink) = tokio::task::spawn_blocking(move || stage(input, sink))
        .await
        .map_err(|e| Error::Internal(format!("import thread: {e}")))?;
    let scanned = scanned?;
    tracing::debug!(elapsed = ?started.elapsed(), bytes = scanned.bytes, "import: archive streamed, layers staged");
    crate::crash::point("import:staged");
    // A `--tag` without a tag part names the archive's bare tags (`<tag>:1.0`), as ctr's
    // `--base-name` does; otherwise they are named as ctr names them (`import-<date>:1.0`).
    let base = match &tag {
        Some(t) if !archive::has_tag_or_digest(&t.given) => t.repository.clone(),
        _ => default_base_name(),
    };
    let mut plans = resolve(&scanned, &sink.facts, &base)?;
    if let Some(tag) = tag {
        match plans.as_mut_slice() {
            [one] => one.records = vec![named_record(&tag.normalized, &one.top)],
            _ if !archive::has_tag_or_digest(&tag.given) => {}
            many => {
                return Err(Error::InvalidRequest(format!(
                    "the archive holds {} images; --tag can name only one (a name without a tag names their tags)",
                    many.len()
                )));
            }
        }
    }
    if let Some(p) = plans.iter().find(|p| p.records.is_empty()) {
        return Err(Error::InvalidRequest(format!(
            "the image {} in the archive has no name; give one with --tag name:tag",
            p.manifest.digest
        )));
    }
    commit(cd, &lease, &plans, &mut sink.staged, &scratch_keys).await
}

/// Layers of a pulled image streamed at the same time: downloads overlap each other's latency
/// and extraction (as `ctr pull`'s three concurrent fetches), without oversubscribing two cores.
const PULL_PARALLEL_LAYERS: usize = 3;

async fn run_pulled(
    cd: &Containerd,
    lease: Lease,
    image: PulledImage,
    name: String,
    scratch_keys: Arc<Mutex<Vec<String>>>,
) -> Result<Vec<ImportedImage>, Error> {
    // The documents become an OCI layout in memory, so the archive resolver checks them: every
    // digest and size, the diff IDs, the platform choice. The name is set after resolving.
    let mut scanned = Scanned {
        has_oci_layout: true,
        ..Scanned::default()
    };
    let top_digest = Digest::of(&image.top.bytes);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": image.top.media_type,
            "digest": top_digest.as_str(),
            "size": image.top.bytes.len(),
        }],
    });
    scanned.metadata.insert(
        "index.json".into(),
        serde_json::to_vec(&index).expect("json serializes"),
    );
    for doc in std::iter::once(&image.top).chain(&image.documents) {
        let path = format!("blobs/sha256/{}", Digest::of(&doc.bytes).hex());
        scanned.metadata.insert(path, doc.bytes.clone());
    }
    let progress = image.progress.clone();
    let mut jobs = Vec::new();
    for layer in image.layers {
        let digest = Digest::parse(&layer.digest).ok_or_else(|| {
            archive::Error::bad_metadata("manifest", format!("unsupported layer digest {}", layer.digest))
        })?;
        let entry = BlobEntry {
            path: format!("blobs/sha256/{}", digest.hex()),
            size: layer.size,
            // Decided from the first bytes once the stream is open.
            kind: BlobKind::Opaque,
            name_digest: Some(digest),
            offset: 0,
        };
        let (open, size, progress) = (layer.open, layer.size, progress.clone());
        jobs.push(BlobJob {
            entry,
            open: Box::new(move |entry: &mut BlobEntry| {
                let stream = open().map_err(Error::Source)?;
                // One byte more than announced is enough to detect a blob that is too long.
                let mut stream = Metered {
                    inner: stream,
                    counter: progress,
                }
                .take(size + 1);
                let mut prefix = vec![0u8; 512];
                let n = archive::read_full(&mut stream, &mut prefix)
                    .map_err(|e| Error::Source(format!("layer {}: {e}", entry.path)))?;
                prefix.truncate(n);
                entry.kind = blob_kind(&prefix, size);
                Ok(Box::new(io::Cursor::new(prefix).chain(stream)) as Box<dyn Read + Send>)
            }),
        });
    }
    let mut sink = StagingSink::new(cd, &lease, scratch_keys.clone());
    let started = std::time::Instant::now();
    let (streamed, mut sink) = tokio::task::spawn_blocking(move || {
        let streamed = stream_parallel(&mut sink, jobs, PULL_PARALLEL_LAYERS);
        let uploads = sink.finish_all_uploads();
        (streamed.and(uploads), sink)
    })
    .await
    .map_err(|e| Error::Internal(format!("import thread: {e}")))?;
    streamed?;
    tracing::debug!(elapsed = ?started.elapsed(), "pull: layers staged");
    let mut plans = resolve(&scanned, &sink.facts, "")?;
    if plans.len() != 1 {
        return Err(Error::Internal(format!(
            "a pull resolved to {} images",
            plans.len()
        )));
    }
    // As `ctr images pull`: the name points at what the registry serves for it (an index for a
    // multi-platform image), without annotations.
    let mut top = plans[0].top.clone();
    top.annotations.clear();
    plans[0].records = vec![archive::resolve::Record { name, target: top }];
    commit(cd, &lease, &plans, &mut sink.staged, &scratch_keys).await
}

/// Turns resolved plans with staged layers into committed snapshots, content and image records.
async fn commit(
    cd: &Containerd,
    lease: &Lease,
    plans: &[ImagePlan],
    staged: &mut HashMap<String, Staged>,
    scratch_keys: &Arc<Mutex<Vec<String>>>,
) -> Result<Vec<ImportedImage>, Error> {
    let started = std::time::Instant::now();
    let mut written: Vec<PathBuf> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        unpack(cd, lease, plan, i, staged, scratch_keys, &mut written).await?;
        tracing::debug!(elapsed = ?started.elapsed(), image = i, "import: layers committed");
        write_documents(cd, lease, plan, i).await?;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "import: snapshots committed, documents written");
    // Durable before it is named: an image reported imported survives a power cut right after.
    let synced = std::time::Instant::now();
    sync_filesystems(&written)?;
    tracing::debug!(elapsed = ?synced.elapsed(), dirs = written.len(), "import: snapshots synced");
    let mut created: Vec<&str> = Vec::new();
    for plan in plans {
        for record in &plan.records {
            let put = cd.put_image(lease, &record.name, &record.target).await;
            match put {
                Ok(true) => created.push(&record.name),
                Ok(false) => {}
                Err(e) => {
                    // All or nothing: names this import created go again (a name it moved
                    // keeps its new target, which is complete).
                    for name in created {
                        let _ = cd.delete_image(name).await;
                    }
                    return Err(e.into());
                }
            }
        }
    }
    let imported = plans
        .iter()
        .map(|plan| {
            let mut names: Vec<String> = Vec::new();
            for r in &plan.records {
                if !names.contains(&r.name) {
                    names.push(r.name.clone());
                }
            }
            ImportedImage {
                names,
                digest: plan.manifest.digest.to_string(),
                layers: plan.layers.len(),
                size: plan.layers.iter().map(|l| l.size).sum::<u64>() + plan.config.bytes.len() as u64,
            }
        })
        .collect();
    Ok(imported)
}

/// Whether imports flush what they unpacked before naming it (`TPCM_IMPORT_SYNC=0` turns it off,
/// for measuring its cost only: containerd 1.6's own import never syncs snapshots).
fn sync_wanted() -> bool {
    std::env::var("TPCM_IMPORT_SYNC").map_or(true, |v| v != "0")
}

/// One `syncfs` per filesystem holding a directory this import wrote: the unpacked files (and,
/// on the same filesystem, the content store's renames) reach the disk before any record names
/// them. containerd fsyncs each blob it ingests, but not the snapshots it unpacks.
fn sync_filesystems(dirs: &[PathBuf]) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    if !sync_wanted() {
        return Ok(());
    }
    let mut done = std::collections::HashSet::new();
    for dir in dirs {
        let f = match std::fs::File::open(dir) {
            Ok(f) => f,
            // Committed snapshots keep their directory; one removed meanwhile has nothing to sync.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Internal(format!("syncing {}: {e}", dir.display()))),
        };
        let dev = f
            .metadata()
            .map_err(|e| Error::Internal(format!("syncing {}: {e}", dir.display())))?
            .dev();
        if done.insert(dev) {
            nix::unistd::syncfs(&f)
                .map_err(|e| Error::Internal(format!("syncing {}: {e}", dir.display())))?;
        }
    }
    Ok(())
}

/// Streams the archive, staging every layer; returns what was seen and the sink holding the
/// staged layers (also on error, so the caller can clean up). Runs on a blocking thread.
fn stage(input: ArchiveInput, mut sink: StagingSink) -> (Result<Scanned, Error>, StagingSink) {
    let result = match input {
        ArchiveInput::Stream(reader) => scan(reader, &mut sink).map_err(Error::from),
        ArchiveInput::File { file, progress } => match is_compressed(&file) {
            // A compressed archive can only be read front to back.
            Ok(true) => scan(
                Metered {
                    inner: file,
                    counter: progress,
                },
                &mut sink,
            )
            .map_err(Error::from),
            Ok(false) => stage_parallel(&file, &progress, &mut sink),
            Err(e) => Err(archive::Error::Corrupt(e.to_string()).into()),
        },
    };
    let uploads = sink.finish_all_uploads();
    (result.and_then(|s| uploads.map(|()| s)), sink)
}

fn is_compressed(file: &std::fs::File) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 4];
    let n = file.read_at(&mut magic, 0)?;
    Ok(archive::detect_compression(&magic[..n]) != Compression::None)
}

/// Layers streamed at the same time from a local file: two keeps both cores busy (each stream
/// has its own reader, extraction thread and containerd ingest) without oversubscribing them.
const PARALLEL_LAYERS: usize = 2;

/// The local-file path: the tar's headers are read first (data skipped with seeks), then the
/// blobs are streamed by [`PARALLEL_LAYERS`] workers at once, biggest first, each through the same
/// hash + upload + extraction pipeline as a stream.
fn stage_parallel(
    file: &std::fs::File,
    progress: &ByteCounter,
    sink: &mut StagingSink,
) -> Result<Scanned, Error> {
    struct Locate(Vec<BlobEntry>);
    impl BlobSink for Locate {
        fn blob(&mut self, blob: BlobEntry, _: &mut dyn Read) -> Result<(), archive::Error> {
            self.0.push(blob);
            Ok(())
        }
    }
    let mut located = Locate(Vec::new());
    let scanned = scan_seekable(file, &mut located)?;
    let mut blobs = located.0;
    blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
    // Workers take the blobs in this order, so blob `i + PARALLEL_LAYERS` is the next one to
    // start after blob `i`'s worker (or another) is done.
    let ranges: Vec<(u64, u64)> = blobs.iter().map(|b| (b.offset, b.size)).collect();
    let will_need = move |(offset, size): (u64, u64)| {
        let _ = nix::fcntl::posix_fadvise(
            file,
            offset as i64,
            size as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    };
    let jobs = blobs
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let progress = progress.clone();
            let next = ranges.get(i + PARALLEL_LAYERS).copied();
            BlobJob {
                entry,
                open: Box::new(move |blob: &mut BlobEntry| {
                    // Ask the kernel to read the range ahead while we work through it; a cold
                    // archive otherwise stalls each reader on every readahead window. The blob
                    // to start next is read ahead too: without it, the last large layer (which
                    // often runs alone) began with a cold read (measured 185 ms of 770 ms).
                    will_need((blob.offset, blob.size));
                    if let Some(next) = next {
                        will_need(next);
                    }
                    Ok(Box::new(ReadAt {
                        file,
                        pos: blob.offset,
                        end: blob.offset + blob.size,
                        progress,
                    }) as Box<dyn Read + Send + '_>)
                }),
            }
        })
        .collect();
    stream_parallel(sink, jobs, PARALLEL_LAYERS)?;
    Ok(scanned)
}

/// Opens a blob's bytes when a worker takes it; may refine the entry (a pulled layer's kind is
/// known only from its first bytes).
type BlobOpener<'a> = Box<dyn FnOnce(&mut BlobEntry) -> Result<Box<dyn Read + Send + 'a>, Error> + Send + 'a>;

/// A blob waiting for a worker.
struct BlobJob<'a> {
    entry: BlobEntry,
    open: BlobOpener<'a>,
}

/// Streams `jobs` through `workers` threads, each with its own staging pipeline, and gathers
/// their results into `sink`. The first failure cancels the other workers' reads and is the one
/// returned; every upload has ended when this returns.
fn stream_parallel(sink: &mut StagingSink, jobs: Vec<BlobJob<'_>>, workers: usize) -> Result<(), Error> {
    let queue = Mutex::new(std::collections::VecDeque::from(jobs));
    let cancelled = AtomicBool::new(false);
    let first_failure: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        // The first failure is the cause; record it before cancelling, so a worker stopped by
        // the cancellation cannot report first.
        first_failure
            .lock()
            .expect("lock is never poisoned")
            .get_or_insert(e);
        cancelled.store(true, Ordering::Relaxed);
    };
    let results: Vec<Option<StagingSink>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                let mut worker = sink.worker();
                let (queue, cancelled, fail) = (&queue, &cancelled, &fail);
                scope.spawn(move || {
                    loop {
                        let next = queue.lock().expect("lock is never poisoned").pop_front();
                        let Some(BlobJob { mut entry, open }) = next else {
                            break;
                        };
                        let streamed = open(&mut entry).and_then(|inner| {
                            let mut reader = Cancellable { inner, cancelled };
                            worker.stream_blob(entry, &mut reader)
                        });
                        if let Err(e) = streamed {
                            fail(e);
                            let _ = worker.finish_all_uploads();
                            return None;
                        }
                    }
                    match worker.finish_all_uploads() {
                        Ok(()) => Some(worker),
                        Err(e) => {
                            fail(e);
                            None
                        }
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    fail(Error::Internal("import worker panicked".into()));
                    None
                })
            })
            .collect()
    });
    if let Some(e) = first_failure.into_inner().expect("lock is never poisoned") {
        return Err(e);
    }
    for worker in results.into_iter().flatten() {
        sink.absorb(worker);
    }
    Ok(())
}

/// Fails reads once another worker has failed, so every worker stops soon after the first error.
struct Cancellable<'a, R> {
    inner: R,
    cancelled: &'a AtomicBool,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled: another layer failed"));
        }
        self.inner.read(buf)
    }
}

/// Reads one blob's byte range of a local file with positioned reads, so several blobs of the
/// same file can be read at once.
struct ReadAt<'a> {
    file: &'a std::fs::File,
    pos: u64,
    end: u64,
    progress: ByteCounter,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive is cut short",
            ));
        }
        self.pos += n as u64;
        (self.progress)(n as u64)?;
        Ok(n)
    }
}

/// Commits one snapshot per chain ID that containerd does not have yet; the directories written
/// go to `written` (to be synced).
async fn unpack(
    cd: &Containerd,
    lease: &Lease,
    plan: &ImagePlan,
    image_index: usize,
    staged: &mut HashMap<String, Staged>,
    scratch_keys: &Mutex<Vec<String>>,
    written: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    for (i, layer) in plan.layers.iter().enumerate() {
        let chain = layer.chain_id.to_string();
        // Leased before it is looked at: an image removed meanwhile cannot take it (it is
        // content this image's record will reference).
        cd.lease_snapshot(lease, &chain).await?;
        if cd.snapshot_exists(&chain).await? {
            continue;
        }
        let parent = if i == 0 {
            String::new()
        } else {
            plan.layers[i - 1].chain_id.to_string()
        };
        let key = format!("tpcm-unpack-{}-{image_index}-{i}", lease.id());
        let labels = HashMap::from([(SNAPSHOT_REF_LABEL.to_string(), chain.clone())]);
        scratch_keys
            .lock()
            .expect("lock is never poisoned")
            .push(key.clone());
        let prepared = cd.prepare_snapshot(lease, &key, &parent, labels.clone()).await?;
        let upper = prepared.dir.clone();
        // containerd applies the bottom layer without overlay: its whiteouts remove instead of
        // marking. A staged layer was extracted for overlay, so a bottom layer with whiteouts
        // (rare) is extracted again.
        let whiteouts = if prepared.lowers.is_empty() && parent.is_empty() {
            Whiteouts::Remove
        } else {
            Whiteouts::Overlay
        };
        let staged_layer = staged
            .remove(&layer.path)
            .filter(|st| whiteouts == Whiteouts::Overlay || !st.summary.whiteouts);
        // A staged extraction can be used once; a blob that recurs (the same layer at two places
        // in a stack, or in two images) is extracted again from the content store.
        let summary = match staged_layer {
            Some(st) => {
                move_entries(&st.dir, &upper)?;
                st.summary
            }
            None => {
                let compression = layer.compression;
                let (tx, rx) = mpsc::channel(QUEUE);
                let dir = upper.clone();
                let extraction = std::thread::spawn(move || {
                    extract_stream(ChunkReader::new(rx), compression, &dir, whiteouts)
                });
                let read = cd.read_blob(&layer.digest, tx).await;
                let (diff_id, summary) = join_extraction(extraction)?;
                read?;
                // The store verified the blob digest, which is the diff ID of an uncompressed layer.
                let diff_id = diff_id.unwrap_or_else(|| layer.digest.clone());
                if diff_id != layer.diff_id {
                    return Err(archive::Error::DiffIdMismatch {
                        index: i,
                        blob: layer.digest.to_string(),
                        expected: layer.diff_id.to_string(),
                        actual: diff_id.to_string(),
                    }
                    .into());
                }
                summary
            }
        };
        archive::parents::inherit(&upper, &prepared.lowers, &summary.implied)
            .map_err(|e| Error::Internal(format!("layer {}: {e}", layer.digest)))?;
        if summary.opaque_root && whiteouts == Whiteouts::Overlay {
            xattr::set(&upper, "trusted.overlay.opaque", b"y")
                .map_err(|e| Error::Internal(format!("marking {} opaque: {e}", upper.display())))?;
        }
        written.push(upper);
        // ctr's committed layer snapshots carry no labels (the label was the active one's).
        if !cd.commit_snapshot(lease, &chain, &key, HashMap::new()).await? {
            cd.remove_snapshot(&key).await?;
        }
    }
    Ok(())
}

/// Writes config and manifest with the labels that make containerd's GC keep the image whole:
/// manifest → config and layers, config → top snapshot (design §4).
async fn write_documents(
    cd: &Containerd,
    lease: &Lease,
    plan: &ImagePlan,
    image_index: usize,
) -> Result<(), Error> {
    let mut config_labels = HashMap::new();
    if let Some(top) = plan.layers.last() {
        config_labels.insert(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            top.chain_id.to_string(),
        );
    }
    let reference = format!("{}-config-{image_index}", lease.id());
    cd.write_small_blob(
        lease,
        reference,
        &plan.config.digest,
        &plan.config.bytes,
        config_labels,
    )
    .await?;
    let mut manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        plan.config.digest.to_string(),
    )]);
    for (i, l) in plan.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.to_string(),
        );
    }
    let reference = format!("{}-manifest-{image_index}", lease.id());
    cd.write_small_blob(
        lease,
        reference,
        &plan.manifest.digest,
        &plan.manifest.bytes,
        manifest_labels,
    )
    .await?;
    if let Some(index) = &plan.index {
        let labels = index
            .manifests
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("containerd.io/gc.ref.content.m.{i}"), d.to_string()))
            .collect();
        let reference = format!("{}-index-{image_index}", lease.id());
        cd.write_small_blob(
            lease,
            reference,
            &index.document.digest,
            &index.document.bytes,
            labels,
        )
        .await?;
    }
    Ok(())
}

/// Renames every top-level entry of a staging directory into the real snapshot's directory.
/// Both belong to the same snapshotter root, so this is a handful of renames, not a copy.
fn move_entries(from: &Path, to: &Path) -> Result<(), Error> {
    let io_err = |e: io::Error| {
        Error::Internal(format!(
            "moving staged layer {} to {}: {e}",
            from.display(),
            to.display()
        ))
    };
    for entry in std::fs::read_dir(from).map_err(io_err)? {
        let name = entry.map_err(io_err)?.file_name();
        std::fs::rename(from.join(&name), to.join(&name)).map_err(io_err)?;
    }
    Ok(())
}

/// Reads chunks from a channel as a blocking byte stream (the extraction thread's input; an
/// export's copy of a content blob).
pub(super) struct ChunkReader {
    rx: mpsc::Receiver<Arc<Vec<u8>>>,
    current: Arc<Vec<u8>>,
    pos: usize,
}

impl ChunkReader {
    pub(super) fn new(rx: mpsc::Receiver<Arc<Vec<u8>>>) -> Self {
        ChunkReader {
            rx,
            current: Arc::new(Vec::new()),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decompresses (if needed) and extracts one layer stream. For a compressed layer it also
/// returns the diff ID (the uncompressed digest); an uncompressed layer's diff ID is its blob
/// digest, which the caller already has.
fn extract_stream(
    mut input: ChunkReader,
    compression: Compression,
    dir: &Path,
    whiteouts: Whiteouts,
) -> Result<(Option<Digest>, ExtractSummary), archive::Error> {
    let drain_err = archive::extract::ExtractError::Io;
    match compression {
        Compression::None => {
            let summary = extract_layer(&mut input, dir, whiteouts)?;
            io::copy(&mut input, &mut io::sink()).map_err(drain_err)?;
            Ok((None, summary))
        }
        compressed => {
            let decoder = archive::decompress(compressed, input).map_err(drain_err)?;
            let mut hashed = HashingReader::new(decoder);
            let summary = extract_layer(&mut hashed, dir, whiteouts)?;
            // The rest (tar padding, the compressed stream's trailer) counts for the diff ID
            // and is checked by the decoder.
            let (diff_id, _) = hashed.finish().map_err(drain_err)?;
            Ok((Some(diff_id), summary))
        }
    }
}

type Extracted = Result<(Option<Digest>, ExtractSummary), archive::Error>;

fn join_extraction(t: std::thread::JoinHandle<Extracted>) -> Result<(Option<Digest>, ExtractSummary), Error> {
    t.join()
        .map_err(|_| Error::Internal("layer extraction thread panicked".into()))?
        .map_err(Error::from)
}

/// Receives blobs from the archive scan (on a blocking thread) and sends each to containerd and,
/// for layers, to an extraction thread, while hashing it.
struct StagingSink {
    handle: Handle,
    cd: Containerd,
    lease: Lease,
    /// Numbers blobs across workers, to make ingest refs and snapshot keys unique.
    counter: Arc<AtomicUsize>,
    facts: HashMap<String, BlobFacts>,
    staged: HashMap<String, Staged>,
    scratch_keys: Arc<Mutex<Vec<String>>>,
    pending: std::collections::VecDeque<PendingUpload>,
}

impl StagingSink {
    fn new(cd: &Containerd, lease: &Lease, scratch_keys: Arc<Mutex<Vec<String>>>) -> StagingSink {
        StagingSink {
            handle: Handle::current(),
            cd: cd.clone(),
            lease: lease.clone(),
            counter: Arc::new(AtomicUsize::new(0)),
            facts: HashMap::new(),
            staged: HashMap::new(),
            scratch_keys,
            pending: Default::default(),
        }
    }

    fn join_upload(
        &self,
        upload: tokio::task::JoinHandle<Result<UploadOutcome, super::Error>>,
    ) -> Result<UploadOutcome, Error> {
        self.handle
            .block_on(upload)
            .map_err(|e| Error::Internal(format!("upload task: {e}")))?
            .map_err(Error::from)
    }

    /// A sink for another worker: same connection, lease and numbering, its own results.
    fn worker(&self) -> StagingSink {
        StagingSink {
            handle: self.handle.clone(),
            cd: self.cd.clone(),
            lease: self.lease.clone(),
            counter: self.counter.clone(),
            facts: HashMap::new(),
            staged: HashMap::new(),
            scratch_keys: self.scratch_keys.clone(),
            pending: Default::default(),
        }
    }

    /// Takes over a finished worker's results.
    fn absorb(&mut self, worker: StagingSink) {
        self.facts.extend(worker.facts);
        self.staged.extend(worker.staged);
    }

    fn stream_blob(&mut self, blob: BlobEntry, data: &mut dyn Read) -> Result<(), Error> {
        let path = blob.path.clone();
        self.stream_blob_inner(blob, data).map_err(|e| match e {
            // A broken tar or gzip stream inside a layer: say which layer.
            Error::Archive(archive::Error::Extract(archive::extract::ExtractError::Io(io))) => {
                archive::Error::BadLayer {
                    blob: path,
                    reason: format!("corrupt or truncated: {io}"),
                }
                .into()
            }
            other => other,
        })
    }

    fn stream_blob_inner(&mut self, blob: BlobEntry, data: &mut dyn Read) -> Result<(), Error> {
        let BlobEntry {
            path,
            size,
            kind,
            name_digest,
            ..
        } = blob;
        let path = path.as_str();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let (up_tx, up_rx) = mpsc::channel(QUEUE);
        let (cd, lease) = (self.cd.clone(), self.lease.clone());
        let reference = format!("{}-{n}", lease.id());
        let expected = name_digest.clone();
        let mut upload = Some(
            self.handle
                .spawn(async move { cd.upload_blob(&lease, reference, size, expected, up_rx).await }),
        );
        let mut extraction = None;
        if let BlobKind::Layer(compression) = kind {
            let key = format!("tpcm-stage-{}-{n}", self.lease.id());
            self.scratch_keys
                .lock()
                .expect("lock is never poisoned")
                .push(key.clone());
            let dir = self
                .handle
                .block_on(self.cd.prepare_snapshot(&self.lease, &key, "", HashMap::new()))?
                .dir;
            let (tx, rx) = mpsc::channel(QUEUE);
            let target = dir.clone();
            let thread = std::thread::spawn(move || {
                extract_stream(ChunkReader::new(rx), compression, &target, Whiteouts::Overlay)
            });
            extraction = Some((tx, thread, dir, compression));
        }
        let mut hasher = Hasher::new();
        let mut existed = false;
        // Where this thread waits tells which stage limits the import (shown with TPCM_LOG=debug).
        let (mut t_read, mut t_upload, mut t_extract) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let started = std::time::Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let t = std::time::Instant::now();
            let got =
                archive::read_full(data, &mut buf).map_err(|e| archive::Error::Corrupt(e.to_string()))?;
            t_read += t.elapsed();
            if got == 0 {
                break;
            }
            buf.truncate(got);
            hasher.update(&buf);
            let chunk = Arc::new(buf);
            let t = std::time::Instant::now();
            let upload_gone = upload.is_some() && up_tx.blocking_send(Upload::Data(chunk.clone())).is_err();
            t_upload += t.elapsed();
            if upload_gone {
                // The upload ended early: the store already has the blob, or it failed.
                let outcome = self.join_upload(upload.take().expect("checked above"))?;
                existed = outcome == UploadOutcome::AlreadyExisted;
            }
            let t = std::time::Instant::now();
            let extraction_gone = extraction
                .as_ref()
                .is_some_and(|(tx, ..)| tx.blocking_send(chunk).is_err());
            t_extract += t.elapsed();
            if extraction_gone {
                // Extraction stopped early: its error is the one to report.
                let (_, thread, ..) = extraction.take().expect("checked above");
                join_extraction(thread)?;
                return Err(Error::Internal("layer extraction ended before its input".into()));
            }
        }
        let digest = hasher.finish();
        tracing::debug!(
            path, size, elapsed = ?started.elapsed(), reading = ?t_read, waiting_upload = ?t_upload,
            waiting_extraction = ?t_extract, "import: blob streamed"
        );
        if let Some(claimed) = &name_digest
            && claimed != &digest
        {
            return Err(archive::Error::DigestMismatch {
                what: format!("blob {path}"),
                expected: claimed.to_string(),
                actual: digest.to_string(),
            }
            .into());
        }
        let mut labels = HashMap::new();
        let mut layer = None;
        if let Some((tx, thread, dir, compression)) = extraction {
            drop(tx);
            let (diff_id, summary) = join_extraction(thread)?;
            // An uncompressed layer's diff ID is its blob digest: hashed once, above.
            let diff_id = diff_id.unwrap_or_else(|| digest.clone());
            labels.insert("containerd.io/uncompressed".to_string(), diff_id.to_string());
            layer = Some((compression, diff_id));
            self.staged.insert(path.to_string(), Staged { dir, summary });
        }
        if upload.is_some() {
            // A send error means the upload already ended; finishing it reports how.
            let _ = up_tx.blocking_send(Upload::Commit {
                digest: digest.clone(),
                labels: labels.clone(),
            });
        }
        drop(up_tx);
        // containerd fsyncs on commit: let that overlap the next blob instead of waiting here.
        self.pending.push_back(PendingUpload {
            task: upload,
            existed,
            digest: digest.clone(),
            labels,
        });
        while self.pending.len() > MAX_PENDING_UPLOADS {
            let oldest = self.pending.pop_front().expect("longer than the bound");
            self.finish_upload(oldest)?;
        }
        self.facts
            .insert(path.to_string(), BlobFacts { digest, size, layer });
        Ok(())
    }

    /// Waits for an upload and labels its blob if the store already had it.
    fn finish_upload(&self, p: PendingUpload) -> Result<(), Error> {
        let existed = match p.task {
            Some(task) => self.join_upload(task)? == UploadOutcome::AlreadyExisted,
            None => p.existed,
        };
        if existed {
            self.handle
                .block_on(self.cd.set_content_labels(&p.digest, p.labels))?;
        }
        Ok(())
    }

    /// Waits for every upload still in flight; the first failure is returned, after all ended
    /// (so none writes under the lease once the caller releases it).
    fn finish_all_uploads(&mut self) -> Result<(), Error> {
        let mut first_error = None;
        while let Some(p) = self.pending.pop_front() {
            if let Err(e) = self.finish_upload(p) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// An upload whose commit was sent but not yet confirmed.
struct PendingUpload {
    task: Option<tokio::task::JoinHandle<Result<UploadOutcome, super::Error>>>,
    /// The upload already ended early because the store had the blob.
    existed: bool,
    digest: Digest,
    labels: HashMap<String, String>,
}

impl BlobSink for StagingSink {
    fn blob(&mut self, blob: BlobEntry, data: &mut dyn Read) -> Result<(), archive::Error> {
        // The scan speaks archive errors; containerd failures travel inside one so the scan can
        // stop, and are unwrapped again by `run`.
        self.stream_blob(blob, data).map_err(|e| match e {
            Error::Archive(a) => a,
            other => archive::Error::Sink(Box::new(other)),
        })
    }
}
