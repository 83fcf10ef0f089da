//! The systemd units: the generated per-TPC unit and the shipped boot unit pass
//! `systemd-analyze verify` (systemd is not PID 1 here), and what the units run behaves as the
//! units need: `unit-run` waits for the container and exits with its code, leaves a TPC the
//! operator stopped alone, and `unit-stop` (also run at shutdown) does not turn a running TPC into
//! a stopped one. `tpcm boot` reinstalls a unit the unit directory lost.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_ok, tpcm, tpcm_cmd};
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn verify(unit: &Path) {
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    let name = unit.file_name().unwrap().to_string_lossy();
    assert!(
        out.status.success() && !complaints.contains(name.as_ref()),
        "systemd-analyze verify {name}: {}",
        common::describe(&out)
    );
}

fn running(cd: &Containerd) -> bool {
    cd.tasks().iter().any(|(id, _, s)| id == "app" && s == "RUNNING")
}

fn record_running(cd: &Containerd) -> bool {
    let text = std::fs::read_to_string(cd.store_dir().join("tpcs/app.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["running"] == true
}

/// Runs `tpcm unit-run app` as systemd would, in the background.
fn spawn_unit_run(cd: &Containerd) -> std::process::Child {
    tpcm_cmd(cd)
        .args(["unit-run", "app"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `tpcm unit-stop app` (what systemctl stop runs), and the unit's `unit-run` ends with it.
fn unit_stop_ends(cd: &Containerd, unit_run: &mut std::process::Child) {
    assert_ok(&tpcm(cd, &["unit-stop", "app"]));
    common::wait_until(DEADLINE, "unit-run to end", || {
        unit_run.try_wait().unwrap().is_some()
    });
}

/// A docker-save archive of the busybox fixture, named `tpcm-fixture/app:1`.
fn busybox_archive(cd: &Containerd) -> std::path::PathBuf {
    let archive = cd.dir().join("busybox.tar");
    builder::write_archive(
        &builder::busybox_image(&["tpcm-fixture/app:1"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &archive,
    )
    .unwrap();
    archive
}

#[test]
fn the_shipped_boot_unit_verifies() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/tpcm.service")).unwrap();
    assert!(shipped.contains("ExecStart=/usr/bin/tpcm boot\n"), "{shipped}");
    assert!(shipped.contains("After=containerd.service"));
    // Verified with the binary at the path the copy names (this build's tpcm).
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("tpcm.service");
    std::fs::write(
        &unit,
        shipped.replace("/usr/bin/tpcm", env!("CARGO_BIN_EXE_tpcm")),
    )
    .unwrap();
    verify(&unit);
}

#[test]
fn the_shipped_serve_unit_verifies_and_runs_what_it_says() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/tpcm-serve.service")).unwrap();
    // No flags: everything comes from [serve] in tpcm.toml.
    assert!(shipped.contains("ExecStart=/usr/bin/tpcm serve\n"), "{shipped}");
    assert!(
        shipped.contains("After=containerd.service tpcm.service"),
        "{shipped}"
    );
    assert!(shipped.contains("Restart=on-failure\n"), "{shipped}");
    assert!(
        shipped.contains("ExecReload=/bin/kill -HUP $MAINPID\n"),
        "{shipped}"
    );
    let limit: u64 = shipped
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE=")
        .parse()
        .unwrap();
    // The server wants one file per connection plus a reserve of 2048 (containerz.md).
    assert!(
        limit >= tpcm::containerz::serve::DEFAULT_MAX_CONNECTIONS as u64 + 2048,
        "LimitNOFILE={limit}"
    );
    // Verified next to the boot unit it is ordered after, with this build's binary.
    let dir = tempfile::tempdir().unwrap();
    let boot = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/tpcm.service")).unwrap();
    for (name, text) in [("tpcm.service", &boot), ("tpcm-serve.service", &shipped)] {
        std::fs::write(
            dir.path().join(name),
            text.replace("/usr/bin/tpcm", env!("CARGO_BIN_EXE_tpcm")),
        )
        .unwrap();
    }
    verify(&dir.path().join("tpcm-serve.service"));
}

#[test]
fn unit_run_tracks_the_container_and_respects_the_operator() {
    let cd = Containerd::start();
    let archive = busybox_archive(&cd);
    // Exits with 4 once /tpc/stop appears; ends on SIGTERM too.
    let args = "--restart on-failure:3 -- /bin/sh -c 'trap \"exit 0\" TERM; \
                while [ ! -f /tpc/stop ]; do sleep 0.1; done; exit 4'";
    assert_ok(&tpcm(
        &cd,
        &["install", "app", archive.to_str().unwrap(), "--args", args, "-y"],
    ));
    let unit = cd.units_dir().join("tpc-app.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("Restart=on-failure\n") && text.contains("StartLimitBurst=4\n"),
        "{text}"
    );
    assert!(
        text.contains("ExecStart=") && text.contains(" unit-run app\n"),
        "{text}"
    );
    verify(&unit);

    // The unit's main process lives as long as the container and ends with its exit code.
    let mut unit_run = spawn_unit_run(&cd);
    common::wait_until(DEADLINE, "the container to run", || running(&cd));
    assert!(
        unit_run.try_wait().unwrap().is_none(),
        "unit-run returned while the container runs"
    );
    std::fs::write(cd.data_dir().join("app/stop"), "").unwrap();
    let mut status = None;
    common::wait_until(DEADLINE, "unit-run to end with the container", || {
        status = unit_run.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(4));
    std::fs::remove_file(cd.data_dir().join("app/stop")).unwrap();

    // unit-run starts it again (what Restart= does) ...
    let mut unit_run = spawn_unit_run(&cd);
    common::wait_until(DEADLINE, "the container to run again", || running(&cd));
    // ... and unit-stop (systemctl stop, shutdown) stops it without recording an operator stop.
    unit_stop_ends(&cd, &mut unit_run);
    assert!(!running(&cd));
    assert!(record_running(&cd), "unit-stop recorded a stop");

    // After an operator's stop, unit-run leaves the TPC alone (exit 99: not restarted by systemd).
    assert_ok(&tpcm(&cd, &["stop", "app"]));
    let out = common::run_with_timeout(tpcm_cmd(&cd).args(["unit-run", "app"]), DEADLINE);
    assert_eq!(out.status.code(), Some(99), "{}", common::describe(&out));
    assert!(!running(&cd));

    // boot reinstalls a unit the unit directory lost (a new SONiC image has an empty one).
    std::fs::remove_file(&unit).unwrap();
    assert_ok(&tpcm(&cd, &["boot"]));
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), text);
    assert!(!running(&cd), "boot started a TPC the operator stopped");
}

#[test]
fn unit_run_refuses_a_published_port_a_host_service_took_while_the_tpc_was_stopped() {
    let cd = Containerd::start();
    let archive = busybox_archive(&cd);
    let port = common::free_port();
    let args = format!(
        "--network bridge -p {port}:8080 -- /bin/sh -c 'trap \"exit 0\" TERM; while true; do sleep 0.1; done'"
    );
    assert_ok(&tpcm(
        &cd,
        &["install", "app", archive.to_str().unwrap(), "--args", &args, "-y"],
    ));
    // A shutdown stops it (the operator still wants it running); a host service takes the port.
    assert_ok(&tpcm(&cd, &["unit-stop", "app"]));
    assert!(!running(&cd) && record_running(&cd));
    let service = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    let out = common::run_with_timeout(tpcm_cmd(&cd).args(["unit-run", "app"]), DEADLINE);
    assert!(!out.status.success(), "{}", common::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("host port {port}/tcp is in use")),
        "{stderr}"
    );
    assert!(!running(&cd), "the TPC started over the host's service");
    // Once the port is free again, the unit starts it.
    drop(service);
    let mut unit_run = spawn_unit_run(&cd);
    common::wait_until(DEADLINE, "the container to run", || running(&cd));
    unit_stop_ends(&cd, &mut unit_run);
    assert_ok(&tpcm(&cd, &["uninstall", "app", "-y"]));
}
