//! Hostile and broken archives against a real containerd: every bad-input class of
//! `docs/archive-safety.md`.
//!
//! For each refused class: `tpcm image import` exits 1, prints exactly one `tpcm: error:` line that
//! names what is at fault, and leaves nothing behind (no image, snapshot, content blob or lease), and,
//! for escape attempts, nothing was written outside the snapshot (a canary directory that absolute,
//! `..` and symlink targets point at stays empty, a victim file for hard links keeps its single
//! link). Cases are grouped per containerd instance; a failing case is recorded, the instance is
//! reset, and every failure is reported together at the end of its test.
//!
//! The contained classes (an entry under a lower layer's symlink, symlinks with outside targets,
//! `trusted.overlay.*` xattrs) import, and are checked in a container and in the snapshot.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use builder::{ArchiveFormat, ArchiveInfo, Entry, ImageSpec, Layer, Tamper};
use common::{Containerd, assert_ok, tpcm};
use serde_json::{Value, json};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Every hostile entry name that could land on disk starts with this, so a stray file can be
/// found anywhere under the instance's directory.
const MARKER: &str = "tpcm-escape";
const VICTIM_TEXT: &str = "secret\n";

// ---- the per-instance harness ------------------------------------------------------------------

/// A containerd plus the canary and victim an escape would touch, and the failures seen so far.
struct Hostile {
    cd: Containerd,
    /// Must stay empty: absolute, `..` and symlink targets of hostile entries point into it.
    canary: PathBuf,
    /// `victim/secret`: hostile hard links point at it; it must keep one link and its content.
    victim: PathBuf,
    failures: Vec<String>,
    cases: usize,
    started: Instant,
}

impl Hostile {
    fn start() -> Hostile {
        let cd = Containerd::start();
        let canary = cd.dir().join("canary");
        fs::create_dir(&canary).unwrap();
        let victim_dir = cd.dir().join("victim");
        fs::create_dir(&victim_dir).unwrap();
        let victim = victim_dir.join("secret");
        fs::write(&victim, VICTIM_TEXT).unwrap();
        fs::create_dir(cd.dir().join("cases")).unwrap();
        Hostile {
            cd,
            canary,
            victim,
            failures: Vec::new(),
            cases: 0,
            started: Instant::now(),
        }
    }

    fn canary_abs(&self) -> String {
        self.canary.to_str().unwrap().to_string()
    }

    /// A fresh path for a case's archive.
    fn path(&mut self, name: &str) -> PathBuf {
        self.cases += 1;
        self.cd
            .dir()
            .join("cases")
            .join(format!("{:02}-{name}", self.cases))
    }

    /// Builds `spec` in `format` at a fresh path.
    fn build(
        &mut self,
        name: &str,
        spec: &ImageSpec,
        format: ArchiveFormat,
        gz: bool,
    ) -> (PathBuf, ArchiveInfo) {
        let path = self.path(name);
        let info = builder::write_archive(spec, format, gz, &path).expect("build fixture");
        (path, info)
    }

    /// Writes raw bytes at a fresh path.
    fn raw(&mut self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Imports `archive` (plus `extra` args) and checks that it is refused cleanly. `needs`: for
    /// each group, stderr must contain at least one of its strings.
    fn refused(&mut self, label: &str, archive: &Path, extra: &[&str], needs: &[&[&str]]) {
        let t = Instant::now();
        let mut args = vec!["image", "import", archive.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = tpcm(&self.cd, &args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("exit status {} (want 1)", out.status));
        }
        if !stdout.is_empty() {
            problems.push(format!("stdout is not empty: {stdout:?}"));
        }
        if stderr.lines().count() != 1 || !stderr.ends_with('\n') {
            problems.push("stderr is not exactly one line".to_string());
        }
        if !stderr.starts_with("tpcm: error: ") {
            problems.push("stderr does not start with `tpcm: error: `".to_string());
        }
        for alternatives in needs {
            if !alternatives.iter().any(|a| stderr.contains(a)) {
                problems.push(format!("stderr names none of {alternatives:?}"));
            }
        }
        let left = leftovers(&self.cd);
        if !left.is_empty() {
            problems.push(format!("left behind: {left}"));
        }
        problems.extend(self.escapes());
        eprintln!("  {label}: {:?} -> {}", t.elapsed(), stderr.trim_end());
        if !problems.is_empty() {
            self.failures.push(format!(
                "[{label}] tpcm {}\n    stderr: {stderr:?}\n    - {}",
                args.join(" "),
                problems.join("\n    - ")
            ));
            reset(&self.cd);
        }
        let _ = fs::remove_file(archive);
    }

    /// Imports `archive`, which containerd's unpacker takes although it looks odd, and checks
    /// that tpcm takes it too and unpacked what ctr unpacks (`check`); then removes it again.
    fn accepted_as_ctr_accepts(
        &mut self,
        label: &str,
        archive: &Path,
        check: impl Fn(&Containerd) -> Result<(), String>,
    ) {
        let out = tpcm(&self.cd, &["image", "import", archive.to_str().unwrap()]);
        let mut problems = Vec::new();
        if !out.status.success() {
            problems.push(format!(
                "refused: {}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        } else if let Err(e) = check(&self.cd) {
            problems.push(e);
        }
        problems.extend(self.escapes());
        if !problems.is_empty() {
            self.failures.push(format!(
                "[{label}] {}\n    - {}",
                archive.display(),
                problems.join("\n    - ")
            ));
        }
        reset(&self.cd);
        let _ = fs::remove_file(archive);
    }

    /// [`Hostile::refused`] where each of `names` must appear in stderr.
    fn refused_all(&mut self, label: &str, archive: &Path, extra: &[&str], names: &[String]) {
        let groups: Vec<[&str; 1]> = names.iter().map(|n| [n.as_str()]).collect();
        let needs: Vec<&[&str]> = groups.iter().map(|g| &g[..]).collect();
        self.refused(label, archive, extra, &needs);
    }

    /// What an escape would have left: files in the canary, extra links to the victim, marker
    /// names anywhere under the instance's directory (containerd root, state, work dir).
    fn escapes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let inside: Vec<_> = fs::read_dir(&self.canary)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if !inside.is_empty() {
            out.push(format!(
                "ESCAPE: the canary {} now holds {inside:?}",
                self.canary.display()
            ));
        }
        let meta = fs::symlink_metadata(&self.victim).unwrap();
        if meta.nlink() != 1 || fs::read_to_string(&self.victim).unwrap() != VICTIM_TEXT {
            out.push(format!(
                "ESCAPE: the victim {} has {} links / changed content",
                self.victim.display(),
                meta.nlink()
            ));
        }
        let mut found = Vec::new();
        find_marker(self.cd.dir().parent().unwrap(), &mut found);
        if !found.is_empty() {
            out.push(format!("ESCAPE: files named {MARKER}* at {found:?}"));
        }
        out
    }

    /// Panics with every failure seen, if any.
    fn finish(self, test: &str) {
        eprintln!("{test}: {} cases in {:?}", self.cases, self.started.elapsed());
        if !self.failures.is_empty() {
            panic!(
                "{test}: {} case(s) failed:\n{}",
                self.failures.len(),
                self.failures.join("\n")
            );
        }
    }
}

/// Non-empty image/snapshot/content/lease lists, described.
fn leftovers(cd: &Containerd) -> String {
    let mut out = Vec::new();
    for (what, list) in [
        ("images", cd.images()),
        ("snapshots", cd.snapshots()),
        ("content", cd.content()),
        ("leases", cd.leases()),
    ] {
        if !list.is_empty() {
            out.push(format!("{what} {list:?}"));
        }
    }
    out.join("; ")
}

/// Removes whatever a failed case left, so the next case starts clean.
fn reset(cd: &Containerd) {
    for l in cd.leases() {
        cd.ctr(&["leases", "rm", "--sync", &l]);
    }
    for i in cd.images() {
        cd.ctr(&["images", "rm", "--sync", &i]);
    }
    for _ in 0..16 {
        let snaps = cd.snapshots();
        if snaps.is_empty() {
            break;
        }
        for s in snaps {
            cd.ctr(&["snapshots", "rm", &s]);
        }
    }
    for c in cd.content() {
        cd.ctr(&["content", "rm", &c]);
    }
}

fn find_marker(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(MARKER) {
            found.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_marker(&p, found);
        }
    }
}

// ---- raw archives: what the builder cannot express ----------------------------------------------

/// One tar member with its name and link name written verbatim.
struct Raw {
    name: Vec<u8>,
    kind: u8,
    data: Vec<u8>,
    link: Vec<u8>,
}

fn raw_file(name: &str, data: impl Into<Vec<u8>>) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind: b'0',
        data: data.into(),
        link: Vec::new(),
    }
}

fn raw_link(name: &str, kind: u8, target: &str) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind,
        data: Vec::new(),
        link: target.as_bytes().to_vec(),
    }
}

fn raw_dir(name: &str) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind: b'5',
        data: Vec::new(),
        link: Vec::new(),
    }
}

/// A tar of `members`, names as given (each ≤ 100 bytes).
fn tar_of(members: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        assert!(m.name.len() <= 100 && m.link.len() <= 100, "raw names are short");
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..m.name.len()].copy_from_slice(&m.name);
        h.as_old_mut().linkname[..m.link.len()].copy_from_slice(&m.link);
        h.set_entry_type(tar::EntryType::new(m.kind));
        h.set_mode(if m.kind == b'5' { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(builder::MTIME);
        h.set_size(m.data.len() as u64);
        h.set_cksum();
        b.append(&h, &m.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// One PAX extended-header record: `<len> <key>=<value>\n`, `len` counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The members of a plain-tar archive (regular files, dirs and links), in order.
fn members_of(archive: &Path) -> Vec<Raw> {
    members_of_bytes(&fs::read(archive).unwrap())
}

/// (name, offset of its data, size) of each regular member of a plain-tar archive.
fn data_offsets(archive: &Path) -> Vec<(String, u64, u64)> {
    let mut a = tar::Archive::new(fs::File::open(archive).unwrap());
    a.entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type().is_file())
        .map(|e| {
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.raw_file_position(),
                e.size(),
            )
        })
        .collect()
}

/// The largest member (the busybox layer) of a plain-tar archive.
fn largest_member(archive: &Path) -> (String, u64, u64) {
    data_offsets(archive)
        .into_iter()
        .max_by_key(|(_, _, size)| *size)
        .unwrap()
}

/// A hand-made single-manifest OCI image: (manifest descriptor, blobs by digest).
fn oci_image(layers: &[(&str, Vec<u8>)], diff_ids: &[String], arch: &str) -> (Value, Vec<(String, Vec<u8>)>) {
    oci_image_with(layers, diff_ids, arch, |_| {})
}

/// [`oci_image`] with `edit` applied to the manifest JSON before it is hashed.
fn oci_image_with(
    layers: &[(&str, Vec<u8>)],
    diff_ids: &[String],
    arch: &str,
    edit: impl FnOnce(&mut Value),
) -> (Value, Vec<(String, Vec<u8>)>) {
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = builder::sha256_digest(&config);
    let mut descs = Vec::new();
    let mut blobs = Vec::new();
    for (mt, bytes) in layers {
        let d = builder::sha256_digest(bytes);
        descs.push(json!({"mediaType": mt, "digest": d, "size": bytes.len()}));
        blobs.push((d, bytes.clone()));
    }
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": builder::MT_OCI_MANIFEST,
        "config": {"mediaType": builder::MT_OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": descs,
    });
    edit(&mut manifest);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let md = builder::sha256_digest(&manifest);
    let desc = json!({"mediaType": builder::MT_OCI_MANIFEST, "digest": md, "size": manifest.len()});
    blobs.push((config_digest, config));
    blobs.push((md, manifest));
    (desc, blobs)
}

/// An OCI layout archive (plain tar) of `index` and `blobs`.
fn oci_layout(index: &Value, blobs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut members = vec![
        raw_file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
        raw_dir("blobs/"),
        raw_dir("blobs/sha256/"),
    ];
    for (d, bytes) in blobs {
        members.push(raw_file(&format!("blobs/sha256/{}", hex(d)), bytes.clone()));
    }
    members.push(raw_file("index.json", serde_json::to_vec(index).unwrap()));
    tar_of(&members)
}

/// A single-image OCI layout archive named `name`, whose layers are given as bytes.
fn oci_archive(name: &str, layers: &[(&str, Vec<u8>)], diff_ids: &[String]) -> Vec<u8> {
    let (mut desc, blobs) = oci_image(layers, diff_ids, builder::host_arch());
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    oci_layout(&json!({"schemaVersion": 2, "manifests": [desc]}), &blobs)
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A small benign layer: `etc/`, `etc/ok`.
fn benign_layer() -> Layer {
    Layer::new(vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/ok", 0o644, "ok\n"),
    ])
}

/// A two-layer image: a benign layer 0 (so a staging snapshot and a blob exist when layer 1 is
/// refused), and `hostile` as layer 1.
fn with_hostile_layer(hostile: Vec<Entry>) -> ImageSpec {
    ImageSpec {
        layers: vec![benign_layer(), Layer::new(hostile)],
        repo_tags: vec!["hostile/layer:1".into()],
        cmd: Some(vec!["/bin/sh".into()]),
        ..Default::default()
    }
}

fn small_spec() -> ImageSpec {
    ImageSpec {
        layers: vec![
            benign_layer(),
            Layer::new(vec![Entry::file("top", 0o644, "top\n")]),
        ],
        repo_tags: vec!["hostile/meta:1".into()],
        cmd: Some(vec!["/bin/sh".into()]),
        ..Default::default()
    }
}

/// Runs a command in a throwaway container from `image` and returns its stdout.
fn run_in(cd: &Containerd, image: &str, script: &str) -> String {
    cd.ctr_ok(&["run", "--rm", image, "probe", "/bin/sh", "-c", script])
}

// ---- the archive as a whole --------------------------------------------------------------------

#[test]
fn a_damaged_or_foreign_archive_is_refused_and_leaves_nothing() {
    let mut h = Hostile::start();
    let busybox = builder::busybox_image(&[builder::FIXTURE_TAG]);
    let mut busybox_gz_layers = busybox.clone();
    busybox_gz_layers.gzip_layers = true;

    let p = h.raw("empty.tar", b"");
    h.refused("empty file", &p, &[], &[&["the archive is empty"]]);

    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let p = h.raw("garbage.tar", &garbage);
    h.refused("garbage", &p, &[], &[&["corrupt or truncated"]]);

    // Truncated tar: cut in the middle of the (1 MiB+) busybox layer.
    for format in [ArchiveFormat::DockerV12, ArchiveFormat::OciLayout] {
        let (p, _) = h.build("trunc.tar", &busybox, format, false);
        let (_, off, size) = largest_member(&p);
        builder::truncate(&p, off + size / 2).unwrap();
        h.refused(
            &format!("truncated tar mid-layer ({format:?})"),
            &p,
            &[],
            &[&["corrupt or truncated"]],
        );
    }

    // Truncated gzip archive.
    for format in [ArchiveFormat::DockerV12, ArchiveFormat::OciLayout] {
        let (p, _) = h.build("trunc.tar.gz", &busybox, format, true);
        let len = fs::metadata(&p).unwrap().len();
        builder::truncate(&p, len / 2).unwrap();
        h.refused(
            &format!("truncated gzip ({format:?})"),
            &p,
            &[],
            &[&["corrupt or truncated"]],
        );
    }

    // Corrupt gzip archive: bad deflate data in the middle, and a bad CRC trailer.
    for format in [ArchiveFormat::DockerV12, ArchiveFormat::Moby25] {
        let (p, _) = h.build("corrupt.tar.gz", &busybox, format, true);
        builder::corrupt_gzip(&p).unwrap();
        h.refused(
            &format!("corrupt gzip archive, deflate data ({format:?})"),
            &p,
            &[],
            // Inflate cannot tell every damaged block from a good one before the CRC trailer: the
            // garbage it yields may first be caught downstream, by the layer's tar parser
            // ("layer tar is corrupt") or by the blob's digest check, which names the blob.
            &[&["corrupt", "digest mismatch for blob"]],
        );
    }
    let (p, _) = h.build("badcrc.tar.gz", &busybox, ArchiveFormat::DockerV12, true);
    let len = fs::metadata(&p).unwrap().len();
    builder::corrupt_at(&p, len - 8, 4).unwrap();
    h.refused(
        "corrupt gzip archive (CRC trailer)",
        &p,
        &[],
        &[&["corrupt or truncated"]],
    );

    // Corrupt gzip layer inside a plain tar: one inverted run in the middle of the layer blob.
    for format in [ArchiveFormat::DockerV12, ArchiveFormat::OciLayout] {
        let (p, info) = h.build("gzlayer.tar", &busybox_gz_layers, format, false);
        let (name, off, size) = largest_member(&p);
        assert_eq!(size, info.layer_sizes[0], "{name} is the layer blob");
        let mut magic = [0u8; 2];
        let mut f = fs::File::open(&p).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut magic).unwrap();
        assert_eq!(magic, [0x1f, 0x8b], "{name} is gzip");
        builder::corrupt_at(&p, off + size / 2, 16).unwrap();
        // The layer's decompression fails ("corrupt"); for OCI the blob may instead be caught by
        // its digest first, which names it.
        h.refused(
            &format!("corrupt gzip layer ({format:?})"),
            &p,
            &[],
            &[&["corrupt", hex(&info.layer_digests[0])]],
        );
    }

    // A tar with neither manifest.json nor index.json.
    let p = h.raw(
        "nomanifest.tar",
        &tar_of(&[
            raw_file("hello.txt", "hi\n"),
            raw_file("etc/passwd", "root:x:0:0::/:/bin/sh\n"),
        ]),
    );
    h.refused("tar without manifest", &p, &[], &[&["not an image archive"]]);

    // Archive entries whose own names escape, and archive-internal links pointing outside.
    let (good, _) = h.build(
        "good.tar",
        &builder::busybox_image(&["hostile/outer:1"]),
        ArchiveFormat::DockerV12,
        false,
    );
    let canary = h.canary_abs();
    let outer_cases: Vec<(&str, Raw, Vec<String>)> = vec![
        (
            "outer entry ../",
            raw_file(&format!("../{MARKER}-outer"), "x"),
            vec![format!("../{MARKER}-outer")],
        ),
        (
            "outer entry a/../../",
            raw_file(&format!("a/../../{MARKER}-outer"), "x"),
            vec![format!("a/../../{MARKER}-outer")],
        ),
        (
            "outer entry absolute",
            raw_file(&format!("{canary}/{MARKER}-outer"), "x"),
            vec![format!("{canary}/{MARKER}-outer")],
        ),
        (
            "outer symlink to ../../etc/passwd",
            raw_link("evil-link", b'2', "../../etc/passwd"),
            vec!["evil-link".into(), "../../etc/passwd".into()],
        ),
        (
            "outer symlink to absolute",
            raw_link("evil-link", b'2', &canary),
            vec!["evil-link".into(), canary.clone()],
        ),
        (
            "outer hardlink to absolute",
            raw_link("evil-hl", b'1', "/etc/passwd"),
            vec!["evil-hl".into(), "/etc/passwd".into()],
        ),
    ];
    for (label, evil, mut names) in outer_cases {
        let mut members = vec![evil];
        members.extend(members_of(&good));
        let p = h.raw("outer.tar", &tar_of(&members));
        names.push("outside the archive".into());
        h.refused_all(label, &p, &[], &names);
    }

    // Malformed JSON and a wrong schema in manifest.json.
    for (label, manifest, reason) in [
        ("malformed manifest.json", &b"[{\"Config\": "[..], "EOF"),
        (
            "wrong schema in manifest.json",
            &b"{\"hello\": 1}"[..],
            "invalid type",
        ),
    ] {
        let members: Vec<Raw> = members_of(&good)
            .into_iter()
            .map(|mut m| {
                if m.name == b"manifest.json" {
                    m.data = manifest.to_vec();
                }
                m
            })
            .collect();
        let p = h.raw("badjson.tar", &tar_of(&members));
        h.refused(label, &p, &[], &[&["manifest.json"], &[reason]]);
    }

    // All metadata together over 16 MiB (each file under the 4 MiB bound).
    let mut members = members_of(&good);
    for i in 0..5 {
        let mut doc = vec![b' '; (4 << 20) - 16];
        doc[0] = b'{';
        *doc.last_mut().unwrap() = b'}';
        members.push(raw_file(&format!("pad{i}.json"), doc));
    }
    let p = h.raw("bigmeta.tar", &tar_of(&members));
    h.refused(
        "all metadata over 16 MiB",
        &p,
        &[],
        &[&["all metadata"], &["16777216"]],
    );
    let _ = fs::remove_file(&good);

    h.finish("a_damaged_or_foreign_archive_is_refused_and_leaves_nothing");
}

// ---- layer contents ---------------------------------------------------------------------------

#[test]
fn hostile_layer_entries_are_refused_and_write_nothing_outside() {
    let mut h = Hostile::start();
    let canary = h.canary_abs();
    let victim = h.victim.to_str().unwrap().to_string();
    let victim_dir = h.victim.parent().unwrap().to_str().unwrap().to_string();
    // Layers are extracted into <cd>/root/io.containerd.snapshotter.v1.overlayfs/snapshots/<n>/fs:
    // five `..` from there reach <cd>, whose `work/` is `cd.dir()`.
    assert_eq!(
        h.cd.dir().parent().unwrap(),
        h.cd.containerd_root().parent().unwrap()
    );
    let up = "../../../../..";
    let m = MARKER;

    struct Case {
        label: &'static str,
        entries: Vec<Entry>,
        /// Each must appear in stderr.
        names: Vec<String>,
        format: ArchiveFormat,
        gzip_layers: bool,
    }
    let case = |label, entries, names: &[&str], format, gzip_layers| Case {
        label,
        entries,
        names: names.iter().map(|s| s.to_string()).collect(),
        format,
        gzip_layers,
    };
    use ArchiveFormat::{DockerV12 as V12, Moby25, OciLayout as Oci};
    let cases = vec![
        case(
            "entry ../x",
            vec![Entry::raw_file(format!("../{m}-x"), "x")],
            &[&format!("../{m}-x"), "'..'"],
            V12,
            false,
        ),
        case(
            "entry a/../../x",
            vec![Entry::raw_file(format!("a/../../{m}-x"), "x")],
            &[&format!("a/../../{m}-x"), "'..'"],
            Oci,
            false,
        ),
        case(
            "entry ../ climbing to the canary",
            vec![Entry::raw_file(format!("{up}/work/canary/{m}-x"), "x")],
            &[&format!("{up}/work/canary/{m}-x")],
            Moby25,
            true,
        ),
        case(
            "entry absolute /abs (the canary)",
            vec![Entry::raw_file(format!("{canary}/{m}-abs"), "x")],
            &[&format!("{canary}/{m}-abs"), "absolute"],
            V12,
            true,
        ),
        case(
            "symlink to the canary, then a write through it",
            vec![
                Entry::raw_symlink("evil", canary.as_str()),
                Entry::raw_file(format!("evil/{m}-pwned"), "x"),
            ],
            &[&format!("evil/{m}-pwned"), "under a symlink"],
            Oci,
            false,
        ),
        case(
            "relative ../ symlink to the canary, then a write through it",
            vec![
                Entry::raw_symlink("evil", format!("{up}/work/canary")),
                Entry::raw_file(format!("evil/{m}-pwned"), "x"),
            ],
            &[&format!("evil/{m}-pwned"), "under a symlink"],
            V12,
            true,
        ),
        case(
            "symlink to the canary, then a directory through it",
            vec![
                Entry::raw_symlink("evil", canary.as_str()),
                Entry::raw_file(format!("evil/{m}-dir/f"), "x"),
            ],
            &[&format!("evil/{m}-dir/f"), "under a symlink"],
            Moby25,
            false,
        ),
        case(
            "hardlink to an absolute path",
            vec![
                Entry::dir("etc", 0o755),
                Entry::raw_hardlink(format!("etc/{m}-hl"), victim.as_str()),
            ],
            &[&format!("etc/{m}-hl"), &victim, "hardlink"],
            Oci,
            false,
        ),
        case(
            "hardlink to a ../ path",
            vec![
                Entry::dir("etc", 0o755),
                Entry::raw_hardlink(format!("etc/{m}-hl"), format!("{up}/work/victim/secret")),
            ],
            &[
                &format!("etc/{m}-hl"),
                &format!("{up}/work/victim/secret"),
                "hardlink",
            ],
            V12,
            false,
        ),
        case(
            "hardlink to a file only in a lower layer",
            vec![
                Entry::dir("etc", 0o755),
                Entry::raw_hardlink(format!("etc/{m}-hl"), "etc/ok"),
            ],
            &[&format!("etc/{m}-hl"), "etc/ok", "hardlink"],
            Oci,
            true,
        ),
        case(
            "hardlink through a symlink (outside)",
            vec![
                Entry::raw_symlink("vl", victim_dir.as_str()),
                Entry::raw_hardlink(format!("{m}-hl"), "vl/secret"),
            ],
            &[&format!("{m}-hl"), "vl/secret", "hardlink"],
            V12,
            false,
        ),
        case(
            "hardlink through a symlink (inside the layer)",
            vec![
                Entry::dir("d", 0o755),
                Entry::file("d/f", 0o644, "f\n"),
                Entry::symlink("s", "d"),
                Entry::raw_hardlink(format!("{m}-hl"), "s/f"),
            ],
            &[&format!("{m}-hl"), "s/f", "hardlink"],
            Oci,
            false,
        ),
        case(
            "hardlink to a directory",
            vec![
                Entry::dir("d", 0o755),
                Entry::raw_hardlink(format!("{m}-hl"), "d"),
            ],
            &[&format!("{m}-hl"), "hardlink"],
            Moby25,
            false,
        ),
        case(
            "whiteout of '..' (etc/.wh...)",
            vec![Entry::dir("etc", 0o755), Entry::raw_file("etc/.wh...", "")],
            &["etc/.wh..."],
            Oci,
            false,
        ),
        case(
            "whiteout of '.' (etc/.wh..)",
            vec![Entry::dir("etc", 0o755), Entry::raw_file("etc/.wh..", "")],
            &["etc/.wh.."],
            V12,
            false,
        ),
    ];
    for c in cases {
        let mut spec = with_hostile_layer(c.entries);
        spec.gzip_layers = c.gzip_layers;
        // A plain tar is staged from the file (layers in parallel), a gzip'd one as a stream.
        for gzip_outer in [false, true] {
            let (p, _) = h.build("layer.tar", &spec, c.format, gzip_outer);
            let label = format!(
                "{} ({:?}{}{})",
                c.label,
                c.format,
                if c.gzip_layers { ", gzip layers" } else { "" },
                if gzip_outer { ", .tar.gz" } else { "" }
            );
            h.refused_all(&label, &p, &[], &c.names);
        }
    }

    // A later entry replaces an earlier one of the same name, a directory included: containerd's
    // unpacker removes the directory (RemoveAll), so tpcm does too (docs/archive-safety.md).
    let mut spec = builder::busybox_image(&["hostile/layer:1"]);
    spec.layers.push(Layer::new(vec![
        Entry::dir("d", 0o755),
        Entry::file("d/inner", 0o644, "gone"),
        Entry::file("d", 0o644, "x"),
    ]));
    let (p, _) = h.build("replace.tar", &spec, V12, false);
    h.accepted_as_ctr_accepts("a file replacing a directory of the same layer", &p, |cd| {
        let seen = run_in(cd, "docker.io/hostile/layer:1", "test -f /d && cat /d");
        (seen == "x")
            .then_some(())
            .ok_or(format!("/d holds {seen:?}, want the file \"x\""))
    });

    // An entry type tpcm does not create (GNU volume header 'V') in a hand-made layer.
    let layer = tar_of(&[
        raw_dir("etc/"),
        Raw {
            name: b"vol".to_vec(),
            kind: b'V',
            data: Vec::new(),
            link: Vec::new(),
        },
    ]);
    let diff = builder::sha256_digest(&layer);
    let p = h.raw(
        "unsupported.tar",
        &oci_archive("hostile/layer:1", &[(builder::MT_OCI_LAYER, layer)], &[diff]),
    );
    h.refused(
        "unsupported tar entry type",
        &p,
        &[],
        &[&["\"vol\""], &["unsupported"]],
    );

    h.finish("hostile_layer_entries_are_refused_and_write_nothing_outside");
}

// ---- metadata, digests and names ----------------------------------------------------------------

#[test]
fn tampered_metadata_and_bad_names_are_refused() {
    let mut h = Hostile::start();
    use ArchiveFormat::{DockerV12 as V12, Moby25, OciLayout as Oci};
    let spec = small_spec();
    let tampered = |t: Tamper| {
        let mut s = small_spec();
        s.tamper = vec![t];
        s
    };
    let wrong_diff_id = builder::sha256_digest(b"tpcm-fixture: wrong diff id 1");
    let wrong_config = builder::sha256_digest(b"tpcm-fixture: wrong config name");
    let wrong_blob = builder::sha256_digest(b"tpcm-fixture: wrong blob name");

    for format in [V12, Oci] {
        let (p, info) = h.build("wrongdiff.tar", &tampered(Tamper::WrongDiffId(1)), format, false);
        h.refused(
            &format!("WrongDiffId ({format:?})"),
            &p,
            &[],
            &[&["layer 1"], &[&wrong_diff_id], &[&info.diff_ids[1]]],
        );
    }
    let (p, _) = h.build("extradiff.tar", &tampered(Tamper::ExtraDiffId), Oci, true);
    h.refused("ExtraDiffId (OCI)", &p, &[], &[&["3 diff IDs for 2 layers"]]);
    let (p, _) = h.build("missingdiff.tar", &tampered(Tamper::MissingDiffId), V12, false);
    h.refused("MissingDiffId (v12)", &p, &[], &[&["1 diff IDs for 2 layers"]]);

    for format in [V12, Oci] {
        let (p, _) = h.build(
            "confname.tar",
            &tampered(Tamper::ConfigNameMismatch),
            format,
            false,
        );
        h.refused(
            &format!("ConfigNameMismatch ({format:?})"),
            &p,
            &[],
            &[&["digest mismatch"], &[hex(&wrong_config)]],
        );
    }
    for format in [Moby25, Oci] {
        let (p, _) = h.build("blobname.tar", &tampered(Tamper::BlobNameMismatch), format, false);
        h.refused(
            &format!("BlobNameMismatch ({format:?})"),
            &p,
            &[],
            &[&["digest mismatch"], &[hex(&wrong_blob)]],
        );
    }
    // In manifest.json (v12, and docker >= 25's manifest.json beside its index.json) the layer is
    // an archive path: refused naming it.
    for format in [V12, Moby25] {
        let (p, _) = h.build(
            "layerpath.tar",
            &tampered(Tamper::ManifestLayerPath("../../etc/passwd".into())),
            format,
            false,
        );
        h.refused(
            &format!("ManifestLayerPath(\"../../etc/passwd\") ({format:?})"),
            &p,
            &[],
            &[&["../../etc/passwd"], &["outside the archive"]],
        );
    }
    // In an OCI manifest the layer is a digest: a path there makes the manifest invalid, and the
    // refusal names the manifest blob.
    for bad in ["../../etc/passwd", "sha256:../../etc/passwd"] {
        let (p, info) = h.build(
            "layerpath.tar",
            &tampered(Tamper::ManifestLayerPath(bad.into())),
            Oci,
            false,
        );
        let manifest = info.manifest_digest.unwrap();
        h.refused(
            &format!("ManifestLayerPath({bad:?}) (OciLayout)"),
            &p,
            &[],
            &[&[hex(&manifest)], &["invalid"]],
        );
    }
    for format in [V12, Moby25, Oci] {
        let (p, info) = h.build(
            "missingblob.tar",
            &tampered(Tamper::MissingLayerBlob),
            format,
            false,
        );
        let v12_path = info
            .v1_layer_ids
            .first()
            .map(|id| format!("{id}/layer.tar"))
            .unwrap_or_default();
        let needle = match format {
            V12 => v12_path.as_str(),
            _ => hex(&info.layer_digests[0]),
        };
        h.refused(
            &format!("MissingLayerBlob ({format:?})"),
            &p,
            &[],
            &[&["lacks"], &[needle]],
        );
    }
    for (format, file) in [
        (V12, &["manifest.json"][..]),
        (Moby25, &["index.json", "manifest.json"][..]),
        (Oci, &["index.json"][..]),
    ] {
        let (p, _) = h.build(
            "oversized.tar",
            &tampered(Tamper::OversizedManifest),
            format,
            false,
        );
        h.refused(
            &format!("OversizedManifest ({format:?})"),
            &p,
            &[],
            &[file, &["4194304"]],
        );
    }

    // Names: an invalid RepoTags / annotation, a missing name, an invalid --tag.
    for format in [V12, Moby25, Oci] {
        let mut s = small_spec();
        s.repo_tags = vec!["UPPER/Case:tag".into()];
        let (p, _) = h.build("badname.tar", &s, format, false);
        h.refused(
            &format!("invalid RepoTags name ({format:?})"),
            &p,
            &[],
            &[&["UPPER/Case:tag"]],
        );
    }
    let mut unnamed = small_spec();
    unnamed.repo_tags.clear();
    let (p, _) = h.build("unnamed.tar", &unnamed, Oci, false);
    h.refused("no name and no --tag", &p, &[], &[&["--tag"]]);
    let missing = h.path("does-not-exist.tar");
    h.refused(
        "invalid --tag, archive missing",
        &missing,
        &["--tag", "Bad Tag!"],
        &[&["Bad Tag!"], &["invalid image reference"]],
    );
    let out = tpcm(
        &h.cd,
        &["image", "import", missing.to_str().unwrap(), "--tag", "Bad Tag!"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("does-not-exist") || err.to_lowercase().contains("no such file") {
        h.failures.push(format!(
            "[invalid --tag] the archive was looked at before the tag was checked: {err:?}"
        ));
    }
    let (p, _) = h.build("goodbadtag.tar", &spec, Oci, false);
    h.refused(
        "invalid --tag, good archive",
        &p,
        &["--tag", "x@sha256:abc"],
        &[&["x@sha256:abc"]],
    );

    // Hand-made OCI archives: layer content, digests, platforms.
    let zstd = {
        let mut b = vec![0x28, 0xb5, 0x2f, 0xfd];
        b.extend_from_slice(&[0u8; 64]);
        b
    };
    let p = h.raw(
        "zstd.tar",
        &oci_archive(
            "hostile/meta:1",
            &[("application/vnd.oci.image.layer.v1.tar+zstd", zstd.clone())],
            &[builder::sha256_digest(b"whatever")],
        ),
    );
    h.refused(
        "a broken zstd layer",
        &p,
        &[],
        &[&[hex(&builder::sha256_digest(&zstd))], &["corrupt or truncated"]],
    );
    let layer = tar_of(&[raw_file("f", "f\n")]);
    let p = h.raw(
        "mediatype.tar",
        &oci_archive(
            "hostile/meta:1",
            &[(builder::MT_OCI_LAYER_GZIP, layer.clone())],
            &[builder::sha256_digest(&layer)],
        ),
    );
    // containerd decompresses a `+gzip` layer by what its content is: a plain tar passes.
    h.accepted_as_ctr_accepts("a plain tar labelled +gzip", &p, |cd| {
        // The only snapshot is that layer's: its `f` is the tar's.
        let snapshots = cd
            .containerd_root()
            .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
        let seen: Vec<String> = fs::read_dir(&snapshots)
            .map_err(|e| e.to_string())?
            .filter_map(|d| fs::read_to_string(d.ok()?.path().join("fs/f")).ok())
            .collect();
        (seen == ["f\n"])
            .then_some(())
            .ok_or(format!("layer files f: {seen:?}"))
    });
    let gz = gzip(&layer);
    let p = h.raw(
        "mediatype2.tar",
        &oci_archive(
            "hostile/meta:1",
            &[(builder::MT_OCI_LAYER, gz.clone())],
            &[builder::sha256_digest(&layer)],
        ),
    );
    h.refused(
        "gzip content declared as plain tar",
        &p,
        &[],
        &[&[hex(&builder::sha256_digest(&gz))], &["declared as"]],
    );

    // Sizes that differ from the descriptors referencing the blobs.
    let named = json!({"org.opencontainers.image.ref.name": "hostile/meta:1"});
    let one_layer = [(builder::MT_OCI_LAYER, layer.clone())];
    let layer_diff = [builder::sha256_digest(&layer)];
    for (label, what) in [("layer", "layers"), ("config", "config")] {
        let (mut d, blobs) = oci_image_with(&one_layer, &layer_diff, builder::host_arch(), |m| {
            let desc = if what == "layers" {
                &mut m["layers"][0]
            } else {
                &mut m["config"]
            };
            desc["size"] = json!(desc["size"].as_u64().unwrap() + 1);
        });
        d["annotations"] = named.clone();
        let p = h.raw(
            "size.tar",
            &oci_layout(&json!({"schemaVersion": 2, "manifests": [d]}), &blobs),
        );
        h.refused(
            &format!("{label} size differs from its descriptor"),
            &p,
            &[],
            &[&["size mismatch"], &["blobs/sha256/"]],
        );
    }
    let (mut d, blobs) = oci_image(&one_layer, &layer_diff, builder::host_arch());
    d["annotations"] = named.clone();
    let manifest_hex = hex(d["digest"].as_str().unwrap()).to_string();
    d["size"] = json!(d["size"].as_u64().unwrap() - 1);
    let p = h.raw(
        "size.tar",
        &oci_layout(&json!({"schemaVersion": 2, "manifests": [d]}), &blobs),
    );
    h.refused(
        "manifest size differs from its descriptor",
        &p,
        &[],
        &[&["size mismatch"], &[&manifest_hex]],
    );

    // Non-sha256 digests: in index.json, and as a blob file name.
    let (desc, blobs) = oci_image(
        &[(builder::MT_OCI_LAYER, layer.clone())],
        &[builder::sha256_digest(&layer)],
        builder::host_arch(),
    );
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let mut d = desc.clone();
    d["digest"] = json!(sha512);
    d["annotations"] = json!({"org.opencontainers.image.ref.name": "hostile/meta:1"});
    let p = h.raw(
        "sha512.tar",
        &oci_layout(&json!({"schemaVersion": 2, "manifests": [d]}), &blobs),
    );
    h.refused("sha512 digest in index.json", &p, &[], &[&[&sha512]]);
    let mut d = desc.clone();
    d["annotations"] = json!({"org.opencontainers.image.ref.name": "hostile/meta:1"});
    let mut members = members_of_bytes(&oci_layout(
        &json!({"schemaVersion": 2, "manifests": [d]}),
        &blobs,
    ));
    members.insert(
        3,
        raw_file(&format!("blobs/sha512/{}", "ab".repeat(32)), vec![0u8; 100]),
    );
    let p = h.raw("sha512blob.tar", &tar_of(&members));
    h.refused(
        "sha512 blob file",
        &p,
        &[],
        &[&["blobs/sha512/"], &["only sha256"]],
    );

    // A multi-platform index with no linux/<host arch> manifest.
    let foreign: Vec<&str> = ["s390x", "ppc64le", "mips64le"]
        .into_iter()
        .filter(|a| *a != builder::host_arch())
        .take(2)
        .collect();
    let mut blobs = Vec::new();
    let mut platform_descs = Vec::new();
    for arch in &foreign {
        let (mut d, b) = oci_image(
            &[(builder::MT_OCI_LAYER, layer.clone())],
            &[builder::sha256_digest(&layer)],
            arch,
        );
        d["platform"] = json!({"os": "linux", "architecture": arch});
        platform_descs.push(d);
        blobs.extend(b);
    }
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": builder::MT_OCI_INDEX,
        "manifests": platform_descs,
    }))
    .unwrap();
    let nested_digest = builder::sha256_digest(&nested);
    blobs.push((nested_digest.clone(), nested.clone()));
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": builder::MT_OCI_INDEX, "digest": nested_digest, "size": nested.len(),
        "annotations": {"org.opencontainers.image.ref.name": "hostile/multi:1"},
    }]});
    let p = h.raw("multiarch.tar", &oci_layout(&index, &blobs));
    h.refused(
        "multi-platform index without this platform",
        &p,
        &[],
        &[&[&format!("linux/{}", builder::host_arch())]],
    );
    // The same, with the platform manifests listed in index.json itself.
    let mut top = platform_descs.clone();
    for d in &mut top {
        d["annotations"] = json!({"org.opencontainers.image.ref.name": "hostile/multi:1"});
    }
    let p = h.raw(
        "multiarch-top.tar",
        &oci_layout(&json!({"schemaVersion": 2, "manifests": top}), &blobs),
    );
    h.refused(
        "index.json listing only foreign platforms",
        &p,
        &[],
        &[&[&format!("linux/{}", builder::host_arch())]],
    );

    // index.json listing this platform's manifest and a foreign one under the same name: only
    // the linux/<host arch> manifest is imported, and the name points at it.
    let (mut host, host_blobs) = oci_image(
        &[(builder::MT_OCI_LAYER, layer.clone())],
        &[builder::sha256_digest(&layer)],
        builder::host_arch(),
    );
    host["platform"] = json!({"os": "linux", "architecture": builder::host_arch()});
    host["annotations"] = json!({"org.opencontainers.image.ref.name": "hostile/multi:1"});
    let host_digest = host["digest"].as_str().unwrap().to_string();
    let mut all = blobs.clone();
    all.extend(host_blobs);
    let manifests = vec![host, top[0].clone()];
    let p = h.raw(
        "multiarch-mixed.tar",
        &oci_layout(&json!({"schemaVersion": 2, "manifests": manifests}), &all),
    );
    let out = tpcm(&h.cd, &["image", "import", p.to_str().unwrap()]);
    let listed = h.cd.ctr_ok(&["images", "ls"]);
    eprintln!(
        "  index.json listing host + foreign platforms: {}",
        String::from_utf8_lossy(&out.stdout).trim_end()
    );
    let foreign_digest = top[0]["digest"].as_str().unwrap();
    if !out.status.success()
        || h.cd.images() != vec!["docker.io/hostile/multi:1".to_string()]
        || !listed.contains(&host_digest)
        || h.cd.content().iter().any(|c| c == foreign_digest)
    {
        h.failures.push(format!(
            "[index.json listing host + foreign platforms] want docker.io/hostile/multi:1 -> {host_digest} \
             (linux/{}) and nothing of {foreign_digest}\n{}\n    images: {listed}\n    content: {:?}",
            builder::host_arch(),
            common::describe(&out),
            h.cd.content()
        ));
    }
    reset(&h.cd);

    h.finish("tampered_metadata_and_bad_names_are_refused");
}

fn members_of_bytes(tar_bytes: &[u8]) -> Vec<Raw> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Raw {
                name: e.path_bytes().into_owned(),
                kind: e.header().entry_type().as_byte(),
                link: e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default(),
                data,
            }
        })
        .collect()
}

// ---- a failed import next to a good image ------------------------------------------------------

#[test]
fn a_refused_import_leaves_an_existing_image_intact() {
    let mut h = Hostile::start();
    let good_spec = builder::busybox_image(&[builder::FIXTURE_TAG]);
    let (good, _) = h.build("good.tar", &good_spec, ArchiveFormat::OciLayout, false);
    assert_ok(&tpcm(&h.cd, &["image", "import", good.to_str().unwrap()]));
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let images_before = h.cd.ctr_ok(&["images", "ls"]);
    let snapshots_before = sorted(h.cd.snapshots());
    let content_before = sorted(h.cd.content());
    assert_eq!(h.cd.images(), vec![builder::FIXTURE_REF.to_string()]);

    // Each shares the good image's base layer (same blob, same chain ID) and its name.
    let mut hostile_layer = good_spec.clone();
    hostile_layer
        .layers
        .push(Layer::new(vec![Entry::raw_file(format!("../{MARKER}-x"), "x")]));
    let mut wrong_diff = good_spec.clone();
    wrong_diff.tamper = vec![Tamper::WrongDiffId(0)];
    let mut bad_name = good_spec.clone();
    bad_name.repo_tags = vec!["UPPER/Case:tag".into()];
    let cases: Vec<(&str, ImageSpec, ArchiveFormat, &[&str])> = vec![
        (
            "shared base + hostile layer",
            hostile_layer,
            ArchiveFormat::DockerV12,
            &["'..'"],
        ),
        (
            "same image, wrong diff ID",
            wrong_diff,
            ArchiveFormat::OciLayout,
            &["diff ID"],
        ),
        (
            "same image, invalid name",
            bad_name,
            ArchiveFormat::Moby25,
            &["UPPER/Case:tag"],
        ),
    ];
    let check = |h: &mut Hostile, label: &str| {
        let mut problems = Vec::new();
        if h.cd.ctr_ok(&["images", "ls"]) != images_before {
            problems.push(format!(
                "image records changed:\n{}",
                h.cd.ctr_ok(&["images", "ls"])
            ));
        }
        if sorted(h.cd.snapshots()) != snapshots_before {
            problems.push(format!(
                "snapshots {:?} != {snapshots_before:?}",
                h.cd.snapshots()
            ));
        }
        if sorted(h.cd.content()) != content_before {
            problems.push(format!("content {:?} != {content_before:?}", h.cd.content()));
        }
        if !h.cd.leases().is_empty() {
            problems.push(format!("leases {:?}", h.cd.leases()));
        }
        if !problems.is_empty() {
            h.failures.push(format!(
                "[{label}] the good image was disturbed: {}",
                problems.join("; ")
            ));
        }
    };
    for (label, spec, format, needs) in cases {
        let (p, _) = h.build("hostile.tar", &spec, format, false);
        let args = ["image", "import", p.to_str().unwrap()];
        let out = tpcm(&h.cd, &args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("  {label}: {}", err.trim_end());
        if out.status.code() != Some(1)
            || err.lines().count() != 1
            || !err.starts_with("tpcm: error: ")
            || !needs.iter().all(|n| err.contains(n))
        {
            h.failures.push(format!(
                "[{label}] want one `tpcm: error:` line naming {needs:?}, exit 1\n{}",
                common::describe(&out)
            ));
        }
        check(&mut h, label);
        let _ = fs::remove_file(&p);
    }
    // The same good archive cut short in its layer.
    let (p, _) = h.build("trunc.tar", &good_spec, ArchiveFormat::OciLayout, false);
    let (_, off, size) = largest_member(&p);
    builder::truncate(&p, off + size / 2).unwrap();
    let out = tpcm(&h.cd, &["image", "import", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("  truncated copy of the good image: {}", err.trim_end());
    if out.status.code() != Some(1) || err.lines().count() != 1 {
        h.failures.push(format!(
            "[truncated copy] want exit 1 and one line\n{}",
            common::describe(&out)
        ));
    }
    check(&mut h, "truncated copy");
    let escapes = h.escapes();
    h.failures.extend(escapes);

    // And containerd still runs it.
    let said = run_in(&h.cd, builder::FIXTURE_REF, "echo still-$(id -u)");
    assert_eq!(said.trim(), "still-0");
    h.finish("a_refused_import_leaves_an_existing_image_intact");
}

// ---- contained, not refused --------------------------------------------------------------------

/// Contained, per docs/archive-safety.md: an entry under a lower layer's symlink lands in its own
/// layer's upper directory; a symlink to an outside path resolves inside the container at run
/// time; `trusted.overlay.*` xattrs are dropped.
#[test]
fn entries_under_a_lower_layer_symlink_are_contained() {
    let h = Hostile::start();
    let canary = h.canary_abs();
    let mut spec = builder::busybox_image(&["hostile/contained:1"]);
    // Layer 1: `lib` -> the canary (absolute) and `esc` -> the canary (for a run-time write).
    spec.layers.push(Layer::new(vec![
        Entry::symlink("lib", &canary),
        Entry::symlink("esc", &canary),
    ]));
    // Layer 2: `lib/x` under layer 1's symlink.
    spec.layers.push(Layer::new(vec![Entry::file(
        &format!("lib/{MARKER}-x"),
        0o644,
        "x\n",
    )]));
    let path = h.cd.dir().join("contained.tar");
    builder::write_archive(&spec, ArchiveFormat::OciLayout, false, &path).unwrap();
    let out = assert_ok(&tpcm(&h.cd, &["image", "import", path.to_str().unwrap()]));
    assert!(out.contains("docker.io/hostile/contained:1"), "{out}");
    assert!(h.cd.leases().is_empty(), "{:?}", h.cd.leases());
    let escapes: Vec<String> = h
        .escapes()
        .into_iter()
        // The marker file legitimately sits in layer 2's snapshot (inside containerd's root).
        .filter(|e| !e.starts_with(&format!("ESCAPE: files named {MARKER}")))
        .collect();
    assert!(escapes.is_empty(), "{escapes:?}");
    let mut found = Vec::new();
    find_marker(h.cd.dir().parent().unwrap(), &mut found);
    let snapshots =
        h.cd.containerd_root()
            .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    assert!(
        found.len() == 1 && found[0].starts_with(&snapshots),
        "lib/x belongs in layer 2's own snapshot only: {found:?}"
    );
    // Layer 2's upper directory holds a plain new directory `lib`, not a symlink.
    let lib = found[0].parent().unwrap();
    assert!(
        fs::symlink_metadata(lib).unwrap().is_dir(),
        "{} is a real directory",
        lib.display()
    );

    // What the container sees: overlayfs shows the upper directory `lib` and hides layer 1's
    // symlink of the same name (an upper non-symlink replaces a lower entry; a directory over a
    // non-directory is not merged with it). So `/lib` is a directory holding only `x`, and the
    // canary on the host stays empty.
    let said = run_in(
        &h.cd,
        "docker.io/hostile/contained:1",
        &format!(
            "test -L /lib && echo lib-is-symlink; test -d /lib && echo lib-is-dir; ls /lib; cat /lib/{MARKER}-x"
        ),
    );
    assert_eq!(said.trim(), format!("lib-is-dir\n{MARKER}-x\nx"));
    // A symlink with an absolute outside target resolves inside the container's root at run
    // time: writing through `/esc` creates the target path inside the container, not on the host.
    let said = run_in(
        &h.cd,
        "docker.io/hostile/contained:1",
        &format!(
            "test -L /esc && echo esc-is-symlink; mkdir -p {canary} && echo pwned > /esc/{MARKER}-run && cat {canary}/{MARKER}-run"
        ),
    );
    assert_eq!(said.trim(), "esc-is-symlink\npwned");
    let inside: Vec<_> = fs::read_dir(&h.canary).unwrap().collect();
    assert!(inside.is_empty(), "the host canary was written: {inside:?}");

    // Extended attributes: `trusted.overlay.*` (which could forge overlay redirects or opacity)
    // is dropped, `user.*` is kept.
    let name = format!("{MARKER}-xattr");
    let layer = tar_of(&[
        Raw {
            name: b"PaxHeaders/x".to_vec(),
            kind: b'x',
            data: [
                pax_record("SCHILY.xattr.trusted.overlay.redirect", "/etc"),
                pax_record("SCHILY.xattr.trusted.overlay.opaque", "y"),
                pax_record("SCHILY.xattr.user.keep", "yes"),
            ]
            .concat(),
            link: Vec::new(),
        },
        raw_dir(&format!("{name}/")),
    ]);
    let diff = builder::sha256_digest(&layer);
    let p = h.cd.dir().join("xattr.tar");
    fs::write(
        &p,
        oci_archive("hostile/xattr:1", &[(builder::MT_OCI_LAYER, layer)], &[diff]),
    )
    .unwrap();
    assert_ok(&tpcm(&h.cd, &["image", "import", p.to_str().unwrap()]));
    let mut found = Vec::new();
    find_marker(&snapshots, &mut found);
    let dir = found
        .iter()
        .find(|f| f.ends_with(&name))
        .unwrap_or_else(|| panic!("{name} not in any snapshot: {found:?}"));
    let attrs: Vec<String> = xattr::list(dir)
        .unwrap()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(
        attrs.iter().all(|a| !a.starts_with("trusted.overlay.")),
        "trusted.overlay.* kept on {}: {attrs:?}",
        dir.display()
    );
    assert_eq!(
        xattr::get(dir, "user.keep").unwrap().as_deref(),
        Some(&b"yes"[..]),
        "{attrs:?}"
    );
    h.finish("entries_under_a_lower_layer_symlink_are_contained");
}
