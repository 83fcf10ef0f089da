//! SONiC image-upgrade migration: TPCs saved with `tpcm migrate save`, then a second containerd
//! with an empty root (what a new SONiC image brings), the same TPCM store and data root and an
//! empty unit directory: `tpcm boot` brings every TPC back with its written state.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_fails, assert_ok, tpcm, tpcm_env};
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// Writes state into its writable layer once (`/etc/state`) and reports it in /tpc at each start.
const SERVICE: &str = "-- /bin/sh -c '[ -f /etc/state ] || cat /proc/sys/kernel/random/uuid > /etc/state; \
    cat /etc/state > /tpc/state-at-start; trap \"exit 0\" TERM; sleep 1000 & wait'";

fn running(cd: &Containerd, name: &str) -> bool {
    cd.tasks().iter().any(|(id, _, s)| id == name && s == "RUNNING")
}

fn archive(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("app.tar");
    builder::write_archive(
        &builder::busybox_two_layer(&["tpcm-fixture/app:1"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &path,
    )
    .unwrap();
    path
}

fn state(cd: &Containerd, name: &str) -> String {
    std::fs::read_to_string(cd.data_dir().join(name).join("state-at-start")).unwrap_or_default()
}

#[test]
fn tpcs_survive_a_new_containerd_with_their_state() {
    let old = Containerd::start();
    let archive = archive(old.dir());
    for name in ["a", "b", "c"] {
        assert_ok(&tpcm(
            &old,
            &[
                "install",
                name,
                archive.to_str().unwrap(),
                "--args",
                SERVICE,
                "-y",
            ],
        ));
    }
    common::wait_until(DEADLINE, "states written", || {
        ["a", "b", "c"].iter().all(|n| !state(&old, n).is_empty())
    });
    let states: Vec<String> = ["a", "b", "c"].iter().map(|n| state(&old, n)).collect();
    std::fs::write(old.data_dir().join("a/data"), "kept in /tpc\n").unwrap();
    assert_ok(&tpcm(&old, &["stop", "c"]));

    let out = assert_ok(&tpcm(&old, &["migrate", "save"]));
    assert!(out.contains("3 TPC(s) saved"), "{out}");
    let status = assert_ok(&tpcm(&old, &["migrate", "status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 3);

    // Stored once and compressed: the image's two layers (shared by the three TPCs), three
    // writable layers, three configs and three manifests.
    let blobs = old.store_dir().join("migration/blobs/sha256");
    let files: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(files.len(), 2 + 3 + 3 + 3, "blobs: {files:?}");
    let export: u64 = files.iter().sum();
    let image = std::fs::metadata(&archive).unwrap().len();
    eprintln!("export: {export} bytes for 3 TPCs of one {image}-byte (uncompressed) image");
    assert!(
        export < image,
        "the export ({export}) is not smaller than one uncompressed copy ({image})"
    );

    // The new SONiC image: an empty containerd and unit directory, the same /host.
    let new = Containerd::start();
    let units = new.dir().join("new-units");
    let env = [
        ("TPCM_ROOT", old.store_dir()),
        ("TPCM_DATA_ROOT", old.data_dir()),
        ("TPCM_SYSTEMD_DIR", units.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.to_str().unwrap())).collect();
    for n in ["a", "b", "c"] {
        std::fs::remove_file(old.data_dir().join(n).join("state-at-start")).unwrap();
    }
    let out = tpcm_env(&new, &["boot"], &env);
    let stdout = assert_ok(&out);
    assert!(stdout.contains("TPC-c: stopped by the operator"), "{stdout}");
    common::wait_until(DEADLINE, "a and b to run in the new containerd", || {
        running(&new, "a") && running(&new, "b")
    });
    assert!(!running(&new, "c"));
    // The writable layers came back: each reports the state it wrote before the upgrade.
    for (i, n) in ["a", "b"].iter().enumerate() {
        common::wait_until(DEADLINE, &format!("{n}'s state"), || state(&old, n) == states[i]);
    }
    assert_eq!(
        std::fs::read_to_string(old.data_dir().join("a/data")).unwrap(),
        "kept in /tpc\n"
    );
    // c's state is back too, once the operator starts it.
    assert_ok(&tpcm_env(&new, &["start", "c"], &env));
    common::wait_until(DEADLINE, "c's state", || state(&old, "c") == states[2]);
    for n in ["a", "b", "c"] {
        assert!(
            units.join(format!("tpc-{n}.service")).is_file(),
            "unit of {n} not reinstalled"
        );
    }
    assert!(
        !old.store_dir().join("migration").exists(),
        "the export was not deleted"
    );
    // Only the TPCs' own writable-layer leases (`tpcm-layer-<name>`) stay.
    let leases = new.operation_leases();
    assert!(leases.is_empty(), "{leases:?}");
    // A second boot finds nothing more to do.
    assert_ok(&tpcm_env(&new, &["boot"], &env));

    // A restored TPC upgrades: its hooks are looked for in the image it runs on (the saved one;
    // the original image's manifest is not in the new containerd).
    let v2 = old.dir().join("app-2.tar");
    builder::write_archive(
        &builder::busybox_image(&["tpcm-fixture/app:2"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &v2,
    )
    .unwrap();
    let out = tpcm_env(
        &new,
        &["upgrade", "a", v2.to_str().unwrap(), "--grace", "1", "-y"],
        &env,
    );
    let stdout = assert_ok(&out);
    assert!(stdout.contains("No pre hook found"), "{stdout}");
    assert!(stdout.contains("[ SUCCESS ]"), "{stdout}");
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_save_that_does_not_fit_is_refused_up_front() {
    let cd = Containerd::start();
    let small = cd.dir().join("small-store");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount a tmpfs");
    let _guard = Tmpfs(small.clone());
    let env = [("TPCM_ROOT", small.to_str().unwrap())];
    let archive = archive(cd.dir());
    assert_ok(&tpcm_env(
        &cd,
        &["install", "a", archive.to_str().unwrap(), "--args", SERVICE, "-y"],
        &env,
    ));
    let err = assert_fails(&tpcm_env(&cd, &["migrate", "save"], &env));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("nothing was saved") && err.contains("MB free"),
        "{err}"
    );
    assert!(
        !small.join("migration").exists(),
        "a refused save wrote something"
    );
}
