//! tpcm killed (`TPCM_CRASH_AT`, an abort with no cleanup, as `kill -9`) at every journaled
//! point of install and uninstall, and in the middle of an import: the next command that changes
//! the TPC takes the install back or finishes the uninstall, and nothing is leaked in containerd
//! (image, container, snapshot, content, lease) or in the store (record, unit, journal).
//! The upgrade's crash points are tested in `upgrade.rs`.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_fails, assert_ok, tpcm, tpcm_env};
use std::path::PathBuf;

const SERVICE: &str = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";
/// Longest wait for a container to answer.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn archive(cd: &Containerd) -> PathBuf {
    let path = cd.dir().join("busybox.tar");
    builder::write_archive(
        &builder::busybox_two_layer(&["tpcm-fixture/app:1"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &path,
    )
    .unwrap();
    path
}

#[track_caller]
fn assert_nothing_left(cd: &Containerd, point: &str) {
    cd.assert_empty(point);
    for file in ["tpcs/app.json", "journal/app.json", "units/tpc-app.service"] {
        assert!(!cd.store_dir().join(file).exists(), "{point}: {file} left");
    }
    assert!(
        !cd.units_dir().join("tpc-app.service").exists(),
        "{point}: unit left"
    );
}

#[test]
fn an_install_killed_at_any_point_is_taken_back() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let install = [
        "install",
        "app",
        archive.to_str().unwrap(),
        "--args",
        SERVICE,
        "-y",
    ];
    for point in [
        "install:journaled",
        "import:staged",
        "install:imported",
        "install:created",
        "install:recorded",
        "install:unit",
        "install:started",
    ] {
        let out = tpcm_env(&cd, &install, &[("TPCM_CRASH_AT", point)]);
        assert!(!out.status.success(), "{point}: tpcm did not die");
        // The next command on the TPC takes the install back first; there is then no TPC.
        let err = assert_fails(&tpcm(&cd, &["stop", "app"]));
        assert!(err.contains("no TPC named app"), "{point}: {err}");
        assert_nothing_left(&cd, point);
    }
    // And a clean install works afterwards.
    assert_ok(&tpcm(&cd, &install));
    assert!(cd.tasks().iter().any(|(id, _, s)| id == "app" && s == "RUNNING"));
}

#[test]
fn an_uninstall_killed_at_any_point_is_finished() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let install = [
        "install",
        "app",
        archive.to_str().unwrap(),
        "--args",
        SERVICE,
        "-y",
    ];
    for point in [
        "uninstall:stopped",
        "uninstall:deleted",
        "uninstall:image-removed",
    ] {
        assert_ok(&tpcm(&cd, &install));
        let out = tpcm_env(&cd, &["uninstall", "app", "-y"], &[("TPCM_CRASH_AT", point)]);
        assert!(!out.status.success(), "{point}: tpcm did not die");
        let err = assert_fails(&tpcm(&cd, &["start", "app"]));
        assert!(err.contains("no TPC named app"), "{point}: {err}");
        assert_nothing_left(&cd, point);
    }
}

#[test]
fn a_crash_while_a_container_leaves_the_bridge_does_not_leave_it_without_network() {
    let cd = Containerd::start();
    let v1 = archive(&cd);
    let v2 = cd.dir().join("app-2.tar");
    let mut spec = builder::busybox_two_layer(&["tpcm-fixture/app:2"]);
    spec.layers.push(builder::Layer::new(vec![
        builder::Entry::dir("etc", 0o755),
        builder::Entry::file("etc/version", 0o644, "2\n"),
    ]));
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &v2).unwrap();
    let port = common::free_port();
    let args = format!(
        "--network bridge -p {port}:8080 -- /bin/sh -c 'mkdir -p /www; echo up > /www/index.html; \
         exec httpd -f -p 8080 -h /www'"
    );
    assert_ok(&tpcm(
        &cd,
        &["install", "app", v1.to_str().unwrap(), "--args", &args, "-y"],
    ));
    let answers = || common::http_get(port).is_some_and(|a| a.contains("up"));
    common::wait_until(WAIT, "the published port to answer", answers);
    // The upgrade dies once the old container's interfaces left the bridge, before its
    // namespace and state file went.
    let out = tpcm_env(
        &cd,
        &["upgrade", "app", v2.to_str().unwrap(), "-y"],
        &[("TPCM_CRASH_AT", "cni:interfaces-removed")],
    );
    assert_fails(&out);
    // The next command rolls the upgrade back; the old version gets a working network again.
    assert_ok(&tpcm(&cd, &["start", "app"]));
    common::wait_until(WAIT, "the port to answer after the rollback", answers);
    assert_ok(&tpcm(&cd, &["uninstall", "app", "-y"]));
}
