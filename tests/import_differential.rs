//! Differential import test: archives written by real tools (buildah, podman, skopeo, umoci, GNU
//! tar, docker.io; `tests/differential/corpus.sh`) are imported by `ctr images import`
//! (containerd's own unpacker) and by `tpcm image import` into two namespaces of one containerd,
//! and everything they produced is compared: image records (name, target media type, digest,
//! size, annotations), content (digests, sizes, labels), snapshots (chain IDs, parents, labels),
//! each layer's own directory and the merged root filesystem (path, type, mode, owner, size,
//! content, link target, hard-link groups, device numbers, xattrs, mtime and atime to the
//! nanosecond). Any difference fails the test, listing every one.
//!
//! Two differences are by design and normalized before comparing: tpcm names images by their
//! normalized reference (`docker.io/library/foo:1`) where ctr keeps what the archive says
//! (`foo:1`), and times that are "now" (directories the layer did not list, whiteouts, the
//! layer root) are compared as "set during the import" on both sides.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, describe, run_with_timeout, tpcm_cmd};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// When an import ran: times inside it are "now" for that importer.
#[derive(Clone, Copy)]
struct Window(i128, i128);

impl Window {
    fn contains(&self, t: i128) -> bool {
        // Filesystem timestamps are taken from a coarser clock than SystemTime.
        const SLACK: i128 = 20_000_000;
        t >= self.0 - SLACK && t <= self.1 + SLACK
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: u64,
    link: Option<Vec<u8>>,
    content: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
    mtime: i128,
    atime: i128,
    ino: u64,
    nlink: u64,
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

/// Every entry under `root` (itself as ""), metadata taken before any content is read, so
/// reading does not disturb the access times compared.
fn walk(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(PathBuf::new(), std::fs::symlink_metadata(root).unwrap())];
    while let Some((rel, md)) = todo.pop() {
        let full = root.join(&rel);
        let mut xattrs = BTreeMap::new();
        for name in xattr::list(&full).unwrap() {
            let v = xattr::get(&full, &name).unwrap().unwrap_or_default();
            xattrs.insert(name.to_string_lossy().into_owned(), v);
        }
        let kind = kind_of(md.file_type());
        if kind == "dir" {
            let mut children: Vec<_> = std::fs::read_dir(&full).unwrap().map(|e| e.unwrap()).collect();
            children.sort_by_key(|e| e.file_name());
            for c in children {
                todo.push((
                    rel.join(c.file_name()),
                    std::fs::symlink_metadata(c.path()).unwrap(),
                ));
            }
        }
        out.insert(
            rel.as_os_str().as_bytes().to_vec(),
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == "dir" { 0 } else { md.size() },
                rdev: md.rdev(),
                link: (kind == "symlink")
                    .then(|| std::fs::read_link(&full).unwrap().as_os_str().as_bytes().to_vec()),
                content: None,
                xattrs,
                mtime: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
                atime: md.atime() as i128 * 1_000_000_000 + md.atime_nsec() as i128,
                ino: md.ino(),
                nlink: md.nlink(),
            },
        );
    }
    for (rel, node) in out.iter_mut() {
        if node.kind == "file" {
            let bytes = std::fs::read(root.join(std::ffi::OsStr::from_bytes(rel))).unwrap();
            node.content = Some(builder::sha256_digest(&bytes));
        }
    }
    out
}

fn shown(p: &[u8]) -> String {
    if p.is_empty() {
        "/".into()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

/// Compares two trees; `atime` only where both were read first.
fn compare_trees(
    what: &str,
    ctr: &BTreeMap<Vec<u8>, Node>,
    ours: &BTreeMap<Vec<u8>, Node>,
    windows: (Window, Window),
    atime: bool,
    diffs: &mut Vec<String>,
) {
    let keys: BTreeSet<&Vec<u8>> = ctr.keys().chain(ours.keys()).collect();
    let time_ok = |c: i128, o: i128| {
        if windows.0.contains(c) {
            windows.1.contains(o)
        } else {
            c == o
        }
    };
    for k in keys {
        let p = shown(k);
        match (ctr.get(k), ours.get(k)) {
            (Some(_), None) => diffs.push(format!("{what}: {p} only in ctr's")),
            (None, Some(_)) => diffs.push(format!("{what}: {p} only in tpcm's")),
            (Some(c), Some(o)) => {
                let strip = |n: &Node| Node {
                    mtime: 0,
                    atime: 0,
                    ino: 0,
                    nlink: if n.kind == "dir" { 0 } else { n.nlink },
                    ..n.clone()
                };
                if strip(c) != strip(o) {
                    diffs.push(format!(
                        "{what}: {p} differs:\n    ctr  {:?}\n    tpcm {:?}",
                        strip(c),
                        strip(o)
                    ));
                }
                if !time_ok(c.mtime, o.mtime) {
                    diffs.push(format!("{what}: {p} mtime ctr {} tpcm {}", c.mtime, o.mtime));
                }
                if atime && !time_ok(c.atime, o.atime) {
                    diffs.push(format!("{what}: {p} atime ctr {} tpcm {}", c.atime, o.atime));
                }
            }
            (None, None) => unreachable!(),
        }
    }
    // Hard-link groups: the same sets of paths share an inode.
    let groups = |t: &BTreeMap<Vec<u8>, Node>| {
        let mut by_ino: HashMap<u64, BTreeSet<Vec<u8>>> = HashMap::new();
        for (k, n) in t {
            if n.kind != "dir" && n.nlink > 1 {
                by_ino.entry(n.ino).or_default().insert(k.clone());
            }
        }
        by_ino
            .into_values()
            .filter(|g| g.len() > 1)
            .collect::<BTreeSet<_>>()
    };
    if groups(ctr) != groups(ours) {
        diffs.push(format!(
            "{what}: hard-link groups differ: ctr {:?} tpcm {:?}",
            groups(ctr),
            groups(ours)
        ));
    }
}

/// Image records of a namespace through the API (ctr does not print annotations).
fn records(cd: &Containerd, ns: &str) -> BTreeMap<String, (String, String, i64, BTreeMap<String, String>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = containerd_client::connect(cd.socket()).await.unwrap();
        let mut client = containerd_client::services::v1::images_client::ImagesClient::new(channel);
        let mut req =
            tonic::Request::new(containerd_client::services::v1::ListImagesRequest { filters: vec![] });
        req.metadata_mut()
            .insert("containerd-namespace", ns.parse().unwrap());
        let images = client.list(req).await.unwrap().into_inner().images;
        images
            .into_iter()
            .map(|i| {
                let t = i.target.unwrap_or_default();
                (
                    tpcm::archive::normalize_pinned_reference(&i.name).unwrap_or(i.name),
                    (
                        t.media_type,
                        t.digest,
                        t.size,
                        t.annotations.into_iter().collect(),
                    ),
                )
            })
            .collect()
    })
}

fn ctr_in_ok(cd: &Containerd, ns: &str, args: &[&str]) -> String {
    let out = cd.ctr_in(ns, args);
    assert!(out.status.success(), "ctr -n {ns} {args:?}\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Content as `digest size labels`, after a synchronous collection (a lease deleted with
/// `--sync`), so what ctr's import left for the collector is gone on both sides.
fn content(cd: &Containerd, ns: &str) -> BTreeSet<String> {
    let lease = ctr_in_ok(cd, ns, &["leases", "create"]);
    let id = lease.split_whitespace().next().unwrap().to_string();
    ctr_in_ok(cd, ns, &["leases", "delete", "--sync", &id]);
    ctr_in_ok(cd, ns, &["content", "ls"])
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mut labels: Vec<&str> = f.last().unwrap().split(',').collect();
            labels.sort();
            format!("{} {} {}", f[0], f[1], labels.join(","))
        })
        .collect()
}

/// Snapshots as `key parent kind labels`.
fn snapshots(cd: &Containerd, ns: &str) -> BTreeMap<String, String> {
    ctr_in_ok(cd, ns, &["snapshots", "ls"])
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (key, parent, kind) = match f.as_slice() {
                [k, kind] => (*k, "", *kind),
                [k, p, kind] => (*k, *p, *kind),
                _ => panic!("snapshot line {l:?}"),
            };
            let info: serde_json::Value =
                serde_json::from_str(&ctr_in_ok(cd, ns, &["snapshots", "info", key])).unwrap();
            let labels = info["Labels"].to_string();
            (
                key.to_string(),
                format!("parent={parent} kind={kind} labels={labels}"),
            )
        })
        .collect()
}

/// The directories of a committed snapshot's view: its own first, then its parents'.
fn layer_dirs(cd: &Containerd, ns: &str, chain: &str) -> Vec<PathBuf> {
    let key = format!("view-{}", &chain[7..19]);
    let out = ctr_in_ok(cd, ns, &["snapshots", "view", "--mounts", &key, chain]);
    let mounts: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // ctr made the view under a lease of its own, which is gone now: the view may be collected
    // already. The directories listed are the committed snapshots', which stay.
    let _ = cd.ctr_in(ns, &["snapshots", "rm", &key]);
    let m = &mounts[0];
    let opts: Vec<String> = m["Options"]
        .as_array()
        .map(|a| a.iter().map(|o| o.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    match opts.iter().find_map(|o| o.strip_prefix("lowerdir=")) {
        Some(l) => l.split(':').map(PathBuf::from).collect(),
        None => vec![PathBuf::from(m["Source"].as_str().unwrap())],
    }
}

/// The merged root filesystem of a chain, mounted read-only at `at`.
fn mount_merged(dirs: &[PathBuf], at: &Path) -> bool {
    std::fs::create_dir_all(at).unwrap();
    if dirs.len() == 1 {
        let ok = Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(&dirs[0])
            .arg(at)
            .status()
            .unwrap()
            .success();
        return ok;
    }
    let lower = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &format!("ro,lowerdir={lower}")])
        .arg(at)
        .status()
        .unwrap()
        .success()
}

fn umount(at: &Path) {
    let _ = Command::new("umount").arg(at).status();
}

fn build_corpus(dir: &Path) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/corpus.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg(dir).arg(builder::busybox_path());
    let out = run_with_timeout(&mut cmd, Duration::from_secs(600));
    assert!(
        out.status.success(),
        "building the corpus failed\n{}",
        describe(&out)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn tpcm_unpacks_exactly_what_ctr_unpacks() {
    let cd = Containerd::start();
    let corpus = cd.dir().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let names = build_corpus(&corpus);
    // The tools this suite is about must all have produced their archives (docker is optional:
    // it needs a daemon that may not start in every sandbox).
    for required in [
        "buildah-docker",
        "buildah-oci-zstd",
        "podman-oci",
        "skopeo-zstd",
        "umoci-baretags",
        "gnutar-docker",
        "gnutar-oldsparse",
        "buildah-multi",
        "buildah-foreign",
        "skopeo-siblings",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "corpus lacks {required}: {names:?}"
        );
    }
    let mut diffs: Vec<String> = Vec::new();
    let mut compared = 0;
    for (i, name) in names.iter().enumerate() {
        let archive = corpus.join(format!("{name}.tar"));
        let archive = archive.to_str().unwrap();
        let ns_ctr = format!("{}-ctr{i}", cd.namespace());
        let ns_ours = format!("{}-tpcm{i}", cd.namespace());
        let t0 = now_ns();
        let theirs = cd.ctr_in(&ns_ctr, &["images", "import", archive]);
        let ctr_window = Window(t0, now_ns());
        let t2 = now_ns();
        let mut cmd = tpcm_cmd(&cd);
        cmd.env("TPCM_NAMESPACE", &ns_ours)
            .args(["image", "import", archive]);
        let ours = run_with_timeout(&mut cmd, common::CMD_TIMEOUT);
        let our_window = Window(t2, now_ns());
        eprintln!(
            "{name}: ctr {}, tpcm {}",
            theirs.status.success(),
            ours.status.success()
        );
        if name == "gnutar-oldsparse" {
            // Both must refuse it, for the entry type.
            let (c, o) = (describe(&theirs), describe(&ours));
            assert!(c.contains("unhandled tar header type 83"), "{c}");
            assert!(o.contains("unsupported tar type S"), "{o}");
        }
        match (theirs.status.success(), ours.status.success()) {
            (true, true) => {}
            (false, false) => continue,
            (c, o) => {
                diffs.push(format!(
                    "{name}: ctr {} but tpcm {}\n--- ctr ---\n{}\n--- tpcm ---\n{}",
                    if c { "imports it" } else { "refuses it" },
                    if o { "imports it" } else { "refuses it" },
                    describe(&theirs),
                    describe(&ours)
                ));
                continue;
            }
        }
        let windows = (ctr_window, our_window);
        let (rc, ro) = (records(&cd, &ns_ctr), records(&cd, &ns_ours));
        if rc != ro {
            diffs.push(format!(
                "{name}: image records differ:\n    ctr  {rc:?}\n    tpcm {ro:?}"
            ));
        }
        let (cc, co) = (content(&cd, &ns_ctr), content(&cd, &ns_ours));
        if cc != co {
            diffs.push(format!(
                "{name}: content differs:\n    ctr  {cc:?}\n    tpcm {co:?}"
            ));
        }
        let (sc, so) = (snapshots(&cd, &ns_ctr), snapshots(&cd, &ns_ours));
        if sc != so {
            diffs.push(format!(
                "{name}: snapshots differ:\n    ctr  {sc:?}\n    tpcm {so:?}"
            ));
        }
        // Each layer's own directory, bottom up (atimes included: nothing has read them yet).
        let mut chains: Vec<&String> = sc.keys().filter(|k| so.contains_key(*k)).collect();
        chains.sort_by_key(|k| sc[*k].len());
        let mut tops = Vec::new();
        let mut trees = Vec::new();
        for chain in &chains {
            let (dc, dt) = (layer_dirs(&cd, &ns_ctr, chain), layer_dirs(&cd, &ns_ours, chain));
            let (wc, wt) = (walk(&dc[0]), walk(&dt[0]));
            compare_trees(
                &format!("{name} layer {}", &chain[..19]),
                &wc,
                &wt,
                windows,
                true,
                &mut diffs,
            );
            compared += wc.len();
            trees.push(wc);
            tops.push((dc, dt));
        }
        // The comparison itself must see differences where there are some: two different
        // layers of ctr's own never compare equal.
        if let [a, b, ..] = trees.as_slice() {
            let mut seen = Vec::new();
            compare_trees("self-check", a, b, windows, true, &mut seen);
            assert!(
                !seen.is_empty(),
                "{name}: the tree comparison found two different layers equal"
            );
        }
        // The merged root filesystem of every chain that no other one extends.
        for (chain, (dc, dt)) in chains.iter().zip(&tops) {
            if sc.values().any(|v| v.contains(&format!("parent={chain} "))) {
                continue;
            }
            let (mc, mt) = (
                cd.dir().join(format!("m-ctr-{i}")),
                cd.dir().join(format!("m-tpcm-{i}")),
            );
            assert!(
                mount_merged(dc, &mc) && mount_merged(dt, &mt),
                "{name}: cannot mount {chain}"
            );
            compare_trees(
                &format!("{name} rootfs {}", &chain[..19]),
                &walk(&mc),
                &walk(&mt),
                windows,
                false,
                &mut diffs,
            );
            umount(&mc);
            umount(&mt);
        }
        eprintln!(
            "{name}: compared {} records, {} blobs, {} snapshots",
            rc.len(),
            cc.len(),
            sc.len()
        );
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    // Every archive's layers were looked at, entry by entry.
    assert!(compared > 500, "only {compared} layer entries compared");
}
