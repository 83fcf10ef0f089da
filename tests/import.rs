//! Import into a real containerd: every archive format, interop with `ctr`, overlay semantics,
//! naming, idempotence and clean-up. Hostile archives are in `tests/import_hostile.rs`.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use builder::{ArchiveFormat, ImageSpec};
use common::{Containerd, assert_fails, assert_ok, tpcm};
use std::path::{Path, PathBuf};

const REF: &str = "docker.io/tpcm-fixture/busybox:1.0";

fn write(
    dir: &Path,
    name: &str,
    spec: &ImageSpec,
    format: ArchiveFormat,
    gzip_outer: bool,
) -> (PathBuf, builder::ArchiveInfo) {
    let path = dir.join(name);
    let info = builder::write_archive(spec, format, gzip_outer, &path).expect("build fixture");
    (path, info)
}

/// Runs a command in a throwaway container from `image` and returns its stdout.
fn run_in(cd: &Containerd, image: &str, script: &str) -> String {
    cd.ctr_ok(&["run", "--rm", image, "probe", "/bin/sh", "-c", script])
}

#[test]
fn every_archive_format_imports_and_ctr_runs_the_result() {
    let cd = Containerd::start();
    let tags = ["tpcm-fixture/busybox:1.0"];
    let plain = builder::busybox_image(&tags);
    let mut gz_layers = builder::busybox_image(&tags);
    gz_layers.gzip_layers = true;
    let cases = [
        ("v12.tar", &plain, ArchiveFormat::DockerV12, false),
        ("v12.tar.gz", &plain, ArchiveFormat::DockerV12, true),
        ("v12-gzlayers.tar", &gz_layers, ArchiveFormat::DockerV12, false),
        ("moby25.tar", &plain, ArchiveFormat::Moby25, false),
        ("moby25.tgz", &gz_layers, ArchiveFormat::Moby25, true),
        ("oci.tar", &plain, ArchiveFormat::OciLayout, false),
        ("oci-gzlayers.tar", &gz_layers, ArchiveFormat::OciLayout, false),
        // The name says nothing: compression is detected from content.
        ("oci-gzip-named.tar", &plain, ArchiveFormat::OciLayout, true),
    ];
    for (name, spec, format, gzip) in cases {
        let (path, info) = write(cd.dir(), name, spec, format, gzip);
        let out = assert_ok(&tpcm(&cd, &["image", "import", path.to_str().unwrap()]));
        assert!(out.contains(REF), "{name}: {out}");
        assert_eq!(cd.images(), vec![REF.to_string()], "{name}");
        // The interop proof: containerd runs what we imported.
        let said = run_in(&cd, REF, "echo hello-$(id -u); test -x /bin/busybox && echo ok");
        assert_eq!(said.trim(), "hello-0\nok", "{name}");
        // The committed snapshot carries the top chain ID, as containerd's own unpacker names it.
        let top = info.chain_ids.last().unwrap();
        assert!(
            cd.snapshots().contains(top),
            "{name}: {:?} lacks {top}",
            cd.snapshots()
        );
        if let Some(digest) = &info.manifest_digest {
            // OCI manifests are kept byte for byte.
            assert!(out.contains(digest.as_str()), "{name}: {out}");
        }
        assert_ok(&tpcm(&cd, &["image", "remove", REF]));
        assert!(cd.images().is_empty(), "{name}");
        assert!(
            cd.snapshots().is_empty(),
            "{name}: remove left {:?}",
            cd.snapshots()
        );
        assert!(
            cd.leases().is_empty(),
            "{name}: import left leases {:?}",
            cd.leases()
        );
    }
}

#[test]
fn result_matches_what_ctr_import_makes() {
    let cd = Containerd::start();
    let spec = builder::busybox_two_layer(&["tpcm-fixture/busybox:1.0"]);
    let (path, _) = write(cd.dir(), "two.tar", &spec, ArchiveFormat::OciLayout, false);
    assert_ok(&tpcm(&cd, &["image", "import", path.to_str().unwrap()]));
    let ours_snapshots = cd.snapshots();
    let ours_content = cd.content();
    let other = "ctr-reference";
    let out = cd.ctr_in(other, &["images", "import", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let theirs = |args: &[&str]| {
        let o = cd.ctr_in(other, args);
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        v.retain(|s| s.starts_with("sha256:"));
        v.sort();
        v
    };
    let mut ours = ours_snapshots.clone();
    ours.sort();
    assert_eq!(ours, theirs(&["snapshots", "ls"]), "same chain IDs as ctr");
    // The same blobs, except that ctr also stores the archive's index.json, which its garbage
    // collector may or may not have removed yet when we look.
    let theirs_c = theirs(&["content", "ls"]);
    let extra: Vec<_> = theirs_c.iter().filter(|d| !ours_content.contains(d)).collect();
    assert!(
        ours_content.iter().all(|d| theirs_c.contains(d)),
        "ours {ours_content:?} vs ctr {theirs_c:?}"
    );
    assert!(
        extra.len() <= 1,
        "ctr has more than the index besides ours: {extra:?}"
    );
    // And the same labels on the config: the one that ties the snapshot to the image.
    let info = cd.ctr_ok(&["content", "ls"]);
    assert!(
        info.contains("containerd.io/gc.ref.snapshot.overlayfs="),
        "{info}"
    );
    assert!(info.contains("containerd.io/uncompressed="), "{info}");
    assert!(info.contains("containerd.io/gc.ref.content.l.1="), "{info}");
}

#[test]
fn overlay_whiteouts_opaque_dirs_and_hardlinks_behave_in_a_container() {
    let cd = Containerd::start();
    let spec = builder::busybox_two_layer(&["tpcm-fixture/busybox:1.0"]);
    for (name, format, gzip) in [
        ("two-v12.tar", ArchiveFormat::DockerV12, false),
        ("two-oci.tgz", ArchiveFormat::OciLayout, true),
    ] {
        let (path, _) = write(cd.dir(), name, &spec, format, gzip);
        assert_ok(&tpcm(&cd, &["image", "import", path.to_str().unwrap()]));
        let said = run_in(
            &cd,
            REF,
            "test -e /etc/motd && echo motd-visible; ls /data; cat /etc/version; \
             [ $(stat -c %i /etc/layer2) = $(stat -c %i /etc/layer2-link) ] && echo same-inode",
        );
        assert_eq!(said.trim(), "new\n2\nsame-inode", "{name}");
        assert_ok(&tpcm(&cd, &["image", "remove", REF]));
    }
}

#[test]
fn a_layer_that_repeats_in_the_stack_is_unpacked_at_each_place() {
    let cd = Containerd::start();
    let mut spec = builder::busybox_image(&["tpcm-fixture/busybox:1.0"]);
    let marker = builder::Layer::new(vec![builder::Entry::file("marker", 0o644, "m\n")]);
    let middle = builder::Layer::new(vec![builder::Entry::whiteout("marker")]);
    spec.layers.extend([marker.clone(), middle, marker]);
    // docker-save writes the repeated layer.tar as an archive-internal symlink.
    let (path, info) = write(cd.dir(), "repeat.tar", &spec, ArchiveFormat::DockerV12, false);
    assert_ok(&tpcm(&cd, &["image", "import", path.to_str().unwrap()]));
    assert_eq!(run_in(&cd, REF, "cat /marker").trim(), "m");
    for chain in &info.chain_ids {
        assert!(cd.snapshots().contains(chain), "missing snapshot {chain}");
    }
}

#[test]
fn tag_renames_and_missing_names_are_explained() {
    let cd = Containerd::start();
    let untagged = builder::busybox_image(&[]);
    let (path, _) = write(
        cd.dir(),
        "untagged.tar",
        &untagged,
        ArchiveFormat::OciLayout,
        false,
    );
    let p = path.to_str().unwrap();
    let err = assert_fails(&tpcm(&cd, &["image", "import", p]));
    assert!(err.contains("--tag"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(cd.images().is_empty());
    assert!(cd.snapshots().is_empty(), "{:?}", cd.snapshots());
    assert!(cd.content().is_empty(), "{:?}", cd.content());

    let err = assert_fails(&tpcm(&cd, &["image", "import", p, "--tag", "Not A Name"]));
    assert!(err.contains("Not A Name"), "{err}");

    assert_ok(&tpcm(&cd, &["image", "import", p, "--tag", "mine/app:2"]));
    assert_eq!(cd.images(), vec!["docker.io/mine/app:2".to_string()]);
    // Re-importing is idempotent and still one image.
    assert_ok(&tpcm(&cd, &["image", "import", p, "--tag", "mine/app:2"]));
    assert_eq!(cd.images(), vec!["docker.io/mine/app:2".to_string()]);
    assert!(cd.leases().is_empty(), "{:?}", cd.leases());
}

#[test]
fn list_json_describes_each_image() {
    let cd = Containerd::start();
    let (path, info) = write(
        cd.dir(),
        "oci.tar",
        &builder::busybox_image(&["tpcm-fixture/busybox:1.0"]),
        ArchiveFormat::OciLayout,
        false,
    );
    assert_ok(&tpcm(&cd, &["image", "import", path.to_str().unwrap()]));
    let out = assert_ok(&tpcm(&cd, &["image", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("list --json is JSON");
    let arr = v.as_array().expect("an array");
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["name"], REF);
    assert_eq!(arr[0]["digest"], info.manifest_digest.clone().unwrap().as_str());
    let expected = info.manifest_size.unwrap() + info.config_size + info.layer_sizes.iter().sum::<u64>();
    assert_eq!(arr[0]["size"], expected);
    assert!(arr[0]["created"].as_u64().unwrap() > 1_600_000_000);
    let table = assert_ok(&tpcm(&cd, &["image", "list"]));
    assert!(table.lines().nth(1).unwrap().starts_with(REF), "{table}");
}

#[test]
fn removing_an_unknown_image_is_an_error_that_names_it() {
    let cd = Containerd::start();
    let err = assert_fails(&tpcm(&cd, &["image", "remove", "nothing/here:1"]));
    assert!(err.contains("docker.io/nothing/here:1"), "{err}");
}

#[test]
fn a_dead_containerd_socket_is_named_in_the_error() {
    let cd = Containerd::start();
    let dead = cd.dir().join("no-such.sock");
    let mut cmd = common::tpcm_cmd(&cd);
    cmd.env("TPCM_CONTAINERD", &dead).args(["image", "list"]);
    let out = common::run_with_timeout(&mut cmd, common::CMD_TIMEOUT);
    let err = assert_fails(&out);
    assert!(err.contains(dead.to_str().unwrap()), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A socket file nobody listens on.
    let stale = cd.dir().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut cmd = common::tpcm_cmd(&cd);
    cmd.env("TPCM_CONTAINERD", &stale)
        .args(["image", "import", "/nonexistent.tar"]);
    let err = assert_fails(&common::run_with_timeout(&mut cmd, common::CMD_TIMEOUT));
    assert!(err.contains(stale.to_str().unwrap()), "{err}");
}

#[test]
fn a_progress_bar_is_drawn_on_a_terminal_and_nowhere_else() {
    let cd = Containerd::start();
    let (path, _) = write(
        cd.dir(),
        "oci.tar",
        &builder::busybox_image(&["tpcm-fixture/busybox:1.0"]),
        ArchiveFormat::OciLayout,
        false,
    );
    let archive = path.to_str().unwrap();
    // Piped: results on stdout, nothing at all on stderr.
    let out = tpcm(&cd, &["image", "import", archive]);
    assert_ok(&out);
    assert!(out.stderr.is_empty(), "{}", common::describe(&out));
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));
    // On a terminal (script(1) gives the command a pty): the bar names the archive and counts bytes.
    let line = format!("'{}' image import '{archive}'", env!("CARGO_BIN_EXE_tpcm"));
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qefc", &line, "/dev/null"])
        .env("TPCM_CONTAINERD", cd.socket())
        .env("TPCM_NAMESPACE", cd.namespace())
        .env("TPCM_ROOT", cd.store_dir())
        .env("TPCM_DATA_ROOT", cd.data_dir())
        .env("TPCM_SYSTEMD_DIR", cd.units_dir());
    let out = common::run_with_timeout(&mut cmd, common::CMD_TIMEOUT);
    let screen = assert_ok(&out);
    assert!(screen.contains(&format!("{archive} [")), "no bar in {screen:?}");
    assert!(screen.contains("MiB"), "no byte count in {screen:?}");
    assert!(
        screen.contains("Imported docker.io/tpcm-fixture/busybox:1.0"),
        "{screen:?}"
    );
}

/// The `syncfs` calls `cmd` makes (strace, with the path of each call's file descriptor).
fn syncfs_calls(cd: &Containerd, args: &[&str], sync: bool) -> Vec<String> {
    let trace = cd.dir().join(format!("syncfs-{sync}.trace"));
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-y", "-e", "trace=syncfs", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_tpcm"))
        .args(args);
    for (k, v) in common::tpcm_cmd(cd).get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    if !sync {
        cmd.env("TPCM_IMPORT_SYNC", "0");
    }
    common::assert_ok(&common::run_with_timeout(&mut cmd, common::CMD_TIMEOUT));
    std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("syncfs("))
        .map(str::to_string)
        .collect()
}

#[test]
fn an_import_syncs_the_filesystem_of_the_snapshots_it_unpacked() {
    let cd = Containerd::start();
    let (archive, _) = write(
        cd.dir(),
        "a.tar",
        &builder::busybox_image(&["tpcm-fixture/busybox:1.0"]),
        ArchiveFormat::DockerV12,
        false,
    );
    let archive = archive.to_str().unwrap();
    // The switch off (for measuring its cost only) shows what the test would see without it.
    let unsynced = syncfs_calls(&cd, &["image", "import", archive], false);
    assert!(unsynced.is_empty(), "{unsynced:?}");
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));
    let snapshots = cd
        .containerd_root()
        .join("io.containerd.snapshotter.v1.overlayfs");
    let synced = syncfs_calls(&cd, &["image", "import", archive], true);
    assert!(
        synced
            .iter()
            .any(|l| l.contains(snapshots.to_str().unwrap()) && l.trim_end().ends_with("= 0")),
        "no successful syncfs of a snapshot under {}: {synced:?}",
        snapshots.display()
    );
    assert!(cd.images().iter().any(|i| i == REF));
}
