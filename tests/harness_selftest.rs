//! Proves the test harness and the fixture builder: a private containerd starts, ctr (the reference
//! importer) imports our archives, containers run, and teardown leaves nothing behind.

mod common;

#[path = "../fixtures/builder.rs"]
mod builder;

use std::time::Duration;

use builder::{ArchiveFormat, FIXTURE_REF, FIXTURE_TAG};
use common::{Containerd, assert_ok, wait_until};

#[test]
fn harness_runs_ctr_imported_fixture_and_cleans_up() {
    let cd = Containerd::start();
    let archive = cd.dir().join("busybox-v12.tar");
    let info = builder::write_archive(
        &builder::busybox_image(&[FIXTURE_TAG]),
        ArchiveFormat::DockerV12,
        false,
        &archive,
    )
    .unwrap();
    cd.ctr_import(&archive);
    assert!(
        cd.images().iter().any(|i| i == FIXTURE_REF),
        "images: {:?}",
        cd.images()
    );
    assert!(
        cd.snapshots().iter().any(|s| s == info.top_chain_id()),
        "snapshots: {:?}",
        cd.snapshots()
    );
    assert!(
        cd.content().contains(&info.config_digest),
        "content: {:?}",
        cd.content()
    );

    let out = cd.ctr(&["run", "--rm", FIXTURE_REF, "selftest-echo", "/bin/echo", "hello"]);
    assert_eq!(assert_ok(&out).trim(), "hello");

    // Leave a running container and a leftover cgroup behind: Drop must clean them up.
    cd.ctr_ok(&["run", "-d", FIXTURE_REF, "selftest-sleeper", "/bin/sleep", "600"]);
    wait_until(Duration::from_secs(10), "sleeper task running", || {
        cd.tasks()
            .iter()
            .any(|(id, _, status)| id == "selftest-sleeper" && status == "RUNNING")
    });
    let sleeper_pid = cd
        .tasks()
        .into_iter()
        .find(|t| t.0 == "selftest-sleeper")
        .unwrap()
        .1;
    let base = cd.dir().parent().unwrap().to_path_buf();
    let ns = cd.namespace().to_string();
    drop(cd);

    assert!(!base.exists(), "{} left behind", base.display());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(base.to_str().unwrap()),
        "mounts left under {}",
        base.display()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{sleeper_pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{sleeper_pid}/cmdline"))
                .unwrap()
                .is_empty(),
        "container process {sleeper_pid} survived teardown"
    );
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/cpu").join(&ns).exists(),
        "cgroup of {ns} left behind"
    );
}

#[test]
fn two_layer_fixture_has_overlay_semantics_in_every_format() {
    let cd = Containerd::start();
    let spec = builder::busybox_two_layer(&["tpcm-fixture/two:1"]);
    for (i, format) in [
        ArchiveFormat::DockerV12,
        ArchiveFormat::Moby25,
        ArchiveFormat::OciLayout,
    ]
    .into_iter()
    .enumerate()
    {
        let ns = format!("{}-{i}", cd.namespace());
        let archive = cd.dir().join(format!("two-{i}.tar"));
        builder::write_archive(&spec, format, false, &archive).unwrap();
        assert_ok(&cd.ctr_in(&ns, &["images", "import", archive.to_str().unwrap()]));
        // ctr names plain OCI archives by the ref.name annotation verbatim (not normalized).
        let image = assert_ok(&cd.ctr_in(&ns, &["images", "ls", "-q"]))
            .lines()
            .next()
            .unwrap()
            .to_string();
        let script = "ls /data; cat /etc/version; test -e /etc/motd && echo motd; \
                      [ $(stat -c %i /etc/layer2) = $(stat -c %i /etc/layer2-link) ] && echo linked";
        let out = cd.ctr_in(&ns, &["run", "--rm", &image, "two", "/bin/sh", "-c", script]);
        assert_eq!(assert_ok(&out), "new\n2\nlinked\n", "format {format:?}");
    }
}

#[test]
fn gzip_outer_wraps_the_same_archive() {
    let dir = tempfile::tempdir().unwrap();
    let spec = builder::busybox_image(&[FIXTURE_TAG]);
    let plain = dir.path().join("a.tar");
    let gz = dir.path().join("a.tar.gz");
    let a = builder::write_archive(&spec, ArchiveFormat::OciLayout, false, &plain).unwrap();
    let b = builder::write_archive(&spec, ArchiveFormat::OciLayout, true, &gz).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    let mut inner = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()),
        &mut inner,
    )
    .unwrap();
    assert_eq!(inner, std::fs::read(&plain).unwrap());
    // Reproducible: same spec, same bytes.
    let again = dir.path().join("b.tar");
    builder::write_archive(&spec, ArchiveFormat::OciLayout, false, &again).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&plain).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "temp layer files left: {leftovers:?}");
}

#[test]
fn teardown_releases_the_network_of_a_tpc_left_publishing_a_port() {
    let cd = Containerd::start();
    let archive = cd.dir().join("busybox.tar");
    builder::write_archive(
        &builder::busybox_image(&[FIXTURE_TAG]),
        ArchiveFormat::DockerV12,
        false,
        &archive,
    )
    .unwrap();
    let port = common::free_port();
    let args = format!("--network bridge -p {port}:8080 -- /bin/sleep 600");
    assert_ok(&common::tpcm(
        &cd,
        &["install", "web", archive.to_str().unwrap(), "--args", &args, "-y"],
    ));
    let ns = cd.namespace().to_string();
    assert_eq!(common::bridged_containers(&ns), ["web"]);
    drop(cd);
    // A forwarding rule left behind would take the port from every later server on the host.
    let rules = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains(&format!("--dport {port} ")), "{rules}");
    assert!(common::bridged_containers(&ns).is_empty());
    assert!(!std::path::Path::new(&format!("/run/netns/tpcm-{ns}-web")).exists());
}
