//! `tpcm boot` after a simulated reboot (every task killed and deleted, containerd's state kept):
//! TPCs that were running run again, a stopped one stays stopped, an interrupted upgrade is rolled
//! back, and a broken TPC is reported without holding up the others.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_fails, assert_ok, tpcm, tpcm_env};
use std::time::Duration;

const SERVICE: &str = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";

fn running(cd: &Containerd, name: &str) -> bool {
    cd.tasks().iter().any(|(id, _, s)| id == name && s == "RUNNING")
}

/// What a reboot does to containers: every process dies and no task is left.
fn reboot(cd: &Containerd) {
    for (id, _, _) in cd.tasks() {
        let _ = cd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
        common::wait_until(Duration::from_secs(30), &format!("{id} to die"), || {
            !running(cd, &id)
        });
        cd.ctr_ok(&["tasks", "delete", &id]);
    }
    assert!(cd.tasks().is_empty());
}

#[test]
fn boot_restores_what_ran_and_keeps_what_was_stopped() {
    let cd = Containerd::start();
    let v1 = cd.dir().join("v1.tar");
    builder::write_archive(
        &builder::busybox_image(&["tpcm-fixture/app:1"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &v1,
    )
    .unwrap();
    let v2 = cd.dir().join("v2.tar");
    builder::write_archive(
        &builder::busybox_two_layer(&["tpcm-fixture/app:2"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &v2,
    )
    .unwrap();
    for name in ["one", "two", "three", "broken", "lost"] {
        assert_ok(&tpcm(
            &cd,
            &["install", name, v1.to_str().unwrap(), "--args", SERVICE, "-y"],
        ));
    }
    assert_ok(&tpcm(&cd, &["stop", "two"]));
    // "three" is in the middle of an upgrade when the power goes.
    let out = tpcm_env(
        &cd,
        &["upgrade", "three", v2.to_str().unwrap(), "--grace", "0", "-y"],
        &[("TPCM_CRASH_AT", "upgrade:new-started")],
    );
    assert!(!out.status.success());
    // "lost" lost its container behind tpcm's back: boot makes it again. "broken" lost its
    // container and its image's content: nothing can bring it back.
    reboot(&cd);
    cd.ctr_ok(&["containers", "delete", "lost"]);
    cd.ctr_ok(&["containers", "delete", "broken"]);
    let record = cd.store_dir().join("tpcs/broken.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    r["spec"]["image"]["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    std::fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();

    let out = tpcm(&cd, &["boot"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = assert_fails(&out);
    assert!(err.contains("broken"), "{err}");
    assert!(stdout.contains("TPC-broken: FAILED"), "{stdout}");
    assert!(stdout.contains("TPC-two: stopped by the operator"), "{stdout}");
    assert!(
        stdout.contains("TPC lost's container was missing") && stdout.contains("TPC-lost: running"),
        "{stdout}"
    );
    assert!(running(&cd, "lost"), "{stdout}");
    assert!(running(&cd, "one"), "{stdout}");
    assert!(running(&cd, "three"), "{stdout}");
    assert!(!running(&cd, "two"));
    let list = assert_ok(&tpcm(&cd, &["list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let three = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "three")
        .unwrap();
    assert_eq!(
        three["image"], "docker.io/tpcm-fixture/app:1",
        "the upgrade was rolled back"
    );
    assert!(!cd.store_dir().join("journal/three.json").exists());
    // Only the TPCs' own writable-layer leases stay.
    let leases = cd.operation_leases();
    assert!(leases.is_empty(), "{leases:?}");

    // With the broken TPC gone, boot succeeds and is idempotent.
    assert_ok(&tpcm(&cd, &["uninstall", "broken", "-y"]));
    assert_ok(&tpcm(&cd, &["boot"]));
    assert!(running(&cd, "one") && running(&cd, "three") && !running(&cd, "two"));
}
