//! `tpcm upgrade` against a private containerd: hooks carry data, the health gate, rollback with
//! the old writable layer intact, a failing pre hook, the same-digest no-op, and tpcm dying at
//! every journaled point (`TPCM_CRASH_AT`) followed by the next command's recovery.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use builder::{Entry, Layer};
use common::{Containerd, assert_fails, assert_ok, tpcm, tpcm_env};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `tpcm-fixture/app:<version>`: busybox plus `/etc/version` holding the version.
fn app_archive(dir: &Path, version: &str) -> PathBuf {
    let mut spec = builder::busybox_image(&[&format!("tpcm-fixture/app:{version}")]);
    spec.layers.push(Layer::new(vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/version", 0o644, format!("{version}\n")),
    ]));
    let path = dir.join(format!("app-{version}.tar"));
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &path).unwrap();
    path
}

fn image(version: &str) -> String {
    format!("docker.io/tpcm-fixture/app:{version}")
}

/// The command every test TPC runs: records its version in /tpc, keeps state in its writable
/// layer (`/etc/state`, a random UUID created once, reported in /tpc/state-at-start on every
/// start; a fresh layer would get another UUID), and ends on SIGTERM.
const SERVICE: &str = "-- /bin/sh -c '[ -f /etc/state ] || cat /proc/sys/kernel/random/uuid > /etc/state; \
    cat /etc/state > /tpc/state-at-start; cat /etc/version > /tpc/version; \
    trap \"exit 0\" TERM; sleep 1000 & wait'";

fn install(cd: &Containerd, version: &str) {
    let archive = app_archive(cd.dir(), version);
    assert_ok(&tpcm(
        cd,
        &[
            "install",
            "app",
            archive.to_str().unwrap(),
            "--args",
            SERVICE,
            "-y",
        ],
    ));
    wait_for_file(cd, "version", &format!("{version}\n"));
    assert!(
        data(cd, "state-at-start").trim().len() == 36,
        "no state (a random UUID) in the writable layer"
    );
}

fn data(cd: &Containerd, file: &str) -> String {
    std::fs::read_to_string(cd.data_dir().join("app").join(file)).unwrap_or_default()
}

#[track_caller]
fn wait_for_file(cd: &Containerd, file: &str, content: &str) {
    common::wait_until(
        Duration::from_secs(30),
        &format!("/tpc/{file} = {content:?}"),
        || data(cd, file) == content,
    );
}

fn write_hook(cd: &Containerd, name: &str, script: &str) {
    let dir = cd.data_dir().join("app/hook");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), script).unwrap();
}

/// `tpcm upgrade app <archive> --grace 1 -y`, which must succeed; its output.
fn upgrade_ok(cd: &Containerd, archive: &Path) -> String {
    assert_ok(&tpcm(
        cd,
        &["upgrade", "app", archive.to_str().unwrap(), "--grace", "1", "-y"],
    ))
}

fn task_pid(cd: &Containerd) -> Option<u32> {
    cd.tasks()
        .into_iter()
        .find(|(id, _, status)| id == "app" && status == "RUNNING")
        .map(|(_, pid, _)| pid)
}

/// Only what one TPC on `version` needs is left: its image, its container and the lease of its
/// writable layer, no hold or pin.
#[track_caller]
fn assert_clean_on(cd: &Containerd, version: &str) {
    assert_eq!(cd.images(), vec![image(version)], "images");
    assert_eq!(cd.containers(), vec!["app".to_string()], "containers");
    // No hold or pin: only the TPC's own writable-layer lease.
    assert_eq!(cd.leases(), vec!["tpcm-layer-app".to_string()], "leases");
    // Two committed layers of the image plus the container's writable layer.
    assert_eq!(cd.snapshots().len(), 3, "snapshots: {:?}", cd.snapshots());
    assert!(!cd.store_dir().join("journal/app.json").exists(), "journal left");
    let list = assert_ok(&tpcm(cd, &["list", "--json"]));
    assert!(list.contains(&image(version)), "{list}");
}

#[test]
fn hooks_carry_data_to_the_new_version_and_the_old_image_goes() {
    let cd = Containerd::start();
    install(&cd, "1");
    write_hook(
        &cd,
        "pre.sh",
        "mkdir -p /tpc/backup && cp /etc/state /tpc/backup/state && echo saved $(cat /etc/version)\n",
    );
    write_hook(
        &cd,
        "post.sh",
        "cp /tpc/backup/state /etc/state && echo restored into $(cat /etc/version)\n",
    );
    let old_state = data(&cd, "state-at-start");
    let v2 = app_archive(cd.dir(), "2");
    let out = upgrade_ok(&cd, &v2);
    assert!(out.contains("pre.sh: saved 1"), "{out}");
    assert!(out.contains("post.sh: restored into 2"), "{out}");
    assert!(out.contains("[ SUCCESS ]"), "{out}");
    wait_for_file(&cd, "version", "2\n");
    // The state travelled: the new container's /etc/state is the old one's.
    let restored = std::process::Command::new("ctr")
        .args(["-a"])
        .arg(cd.socket())
        .args([
            "-n",
            cd.namespace(),
            "tasks",
            "exec",
            "--exec-id",
            "check",
            "app",
            "cat",
            "/etc/state",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&restored.stdout), old_state);
    assert_clean_on(&cd, "2");
}

/// `app_archive` whose image also carries `hooks`: (`pre.sh` or `post.sh`, script) under
/// `/tpc/hook/`, as SONiC's TPCM seed ships them.
fn app_archive_with_hooks(dir: &Path, version: &str, hooks: &[(&str, &str)]) -> PathBuf {
    let mut spec = builder::busybox_image(&[&format!("tpcm-fixture/app:{version}")]);
    let mut entries = vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/version", 0o644, format!("{version}\n")),
        Entry::dir("tpc", 0o755),
        Entry::dir("tpc/hook", 0o755),
    ];
    for (hook, script) in hooks {
        // Through a link, which resolves inside the image.
        entries.push(Entry::file(&format!("opt/{hook}"), 0o755, script.to_string()));
        entries.push(Entry::symlink(
            &format!("tpc/hook/{hook}"),
            &format!("/opt/{hook}"),
        ));
    }
    entries.insert(0, Entry::dir("opt", 0o755));
    spec.layers.push(Layer::new(entries));
    let path = dir.join(format!("app-{version}-hooks.tar"));
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &path).unwrap();
    path
}

#[test]
fn hooks_come_from_the_images_unless_the_data_directory_has_them_and_none_is_said() {
    let cd = Containerd::start();
    let v1 = app_archive_with_hooks(
        cd.dir(),
        "1",
        &[
            (
                "pre.sh",
                "cp /etc/state /tpc/from-image && echo pre of image $(cat /etc/version)\n",
            ),
            ("post.sh", "echo WRONG: the old image's post hook\n"),
        ],
    );
    assert_ok(&tpcm(
        &cd,
        &["install", "app", v1.to_str().unwrap(), "--args", SERVICE, "-y"],
    ));
    wait_for_file(&cd, "version", "1\n");
    let state = data(&cd, "state-at-start");
    // The image's own /tpc/hook is hidden in the container under the data directory.
    assert!(!cd.data_dir().join("app/hook").exists());

    let v2 = app_archive_with_hooks(
        cd.dir(),
        "2",
        &[
            ("pre.sh", "echo pre of image $(cat /etc/version)\n"),
            ("post.sh", "echo post of image $(cat /etc/version) as $0\n"),
        ],
    );
    let out = upgrade_ok(&cd, &v2);
    assert!(
        out.contains("Running /tpc/hook/pre.sh from the old image in the old TPC-app container"),
        "{out}"
    );
    assert!(out.contains("pre.sh: pre of image 1"), "{out}");
    assert!(
        out.contains("Running /tpc/hook/post.sh from the new image in the new TPC-app container"),
        "{out}"
    );
    assert!(
        out.contains("post.sh: post of image 2 as /tpc/hook/post.sh"),
        "{out}"
    );
    assert!(!out.contains("WRONG") && !out.contains("pre of image 2"), "{out}");
    // The old image's hook ran in the old container: it read its writable layer.
    assert_eq!(data(&cd, "from-image"), state);

    // An operator's hook in the data directory wins over the image's.
    write_hook(&cd, "pre.sh", "echo pre of the data directory\n");
    let v3 = app_archive_with_hooks(cd.dir(), "3", &[]);
    let out = upgrade_ok(&cd, &v3);
    assert!(
        out.contains("Running /tpc/hook/pre.sh from the data directory in the old TPC-app container"),
        "{out}"
    );
    assert!(out.contains("pre.sh: pre of the data directory"), "{out}");
    assert!(!out.contains("pre of image 2"), "{out}");
    assert!(
        out.contains(
            "No post hook found: neither the data directory nor the new image has /tpc/hook/post.sh"
        ),
        "{out}"
    );

    // Neither place has a hook: both are said to be absent.
    std::fs::remove_dir_all(cd.data_dir().join("app/hook")).unwrap();
    let v4 = app_archive(cd.dir(), "4");
    let out = upgrade_ok(&cd, &v4);
    assert!(
        out.contains("No pre hook found: neither the data directory nor the old image has /tpc/hook/pre.sh"),
        "{out}"
    );
    assert!(out.contains("No post hook found"), "{out}");
    wait_for_file(&cd, "version", "4\n");
}

#[test]
fn a_new_version_that_exits_before_or_during_its_post_hook_is_reported_as_its_exit() {
    let cd = Containerd::start();
    install(&cd, "1");
    // The hook outlives the new version whichever runs first.
    write_hook(&cd, "post.sh", "sleep 5\n");
    let v2 = app_archive(cd.dir(), "2");
    let err = assert_fails(&tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            v2.to_str().unwrap(),
            "--args",
            "-- /bin/sh -c 'exit 3'",
            "--grace",
            "1",
            "-y",
        ],
    ));
    assert!(
        err.contains("the new version exited with code 3") && err.contains("rolled back"),
        "{err}"
    );
    assert!(!err.contains("could not run"), "{err}");
    common::wait_until(Duration::from_secs(30), "the old version to run", || {
        task_pid(&cd).is_some() && data(&cd, "version") == "1\n"
    });
    assert_clean_on(&cd, "1");
}

#[test]
fn skip_data_runs_no_hook_and_the_same_image_is_a_no_op() {
    let cd = Containerd::start();
    install(&cd, "1");
    write_hook(&cd, "pre.sh", "touch /tpc/pre-ran\n");
    write_hook(&cd, "post.sh", "touch /tpc/post-ran\n");
    let v1 = app_archive(cd.dir(), "1");
    let pid = task_pid(&cd);
    let out = assert_ok(&tpcm(&cd, &["upgrade", "app", v1.to_str().unwrap(), "-y"]));
    assert!(out.contains("already runs this image"), "{out}");
    assert_eq!(task_pid(&cd), pid, "a no-op upgrade restarted the TPC");

    let v2 = app_archive(cd.dir(), "2");
    assert_ok(&tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            v2.to_str().unwrap(),
            "--skip_data",
            "--grace",
            "0",
            "-y",
        ],
    ));
    wait_for_file(&cd, "version", "2\n");
    assert!(!cd.data_dir().join("app/pre-ran").exists());
    assert!(!cd.data_dir().join("app/post-ran").exists());
    assert_clean_on(&cd, "2");

    let err = assert_fails(&tpcm(&cd, &["upgrade", "nosuch", v2.to_str().unwrap(), "-y"]));
    assert!(err.contains("no TPC named nosuch"), "{err}");
}

#[test]
fn a_version_that_exits_is_rolled_back_with_its_writable_layer() {
    let cd = Containerd::start();
    install(&cd, "1");
    let state = data(&cd, "state-at-start");
    let pid_before = task_pid(&cd);
    std::fs::remove_file(cd.data_dir().join("app/state-at-start")).unwrap();
    let v2 = app_archive(cd.dir(), "2");
    let out = tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            v2.to_str().unwrap(),
            "--args",
            "-- /bin/sh -c 'exit 3'",
            "--grace",
            "2",
            "-y",
        ],
    );
    let err = assert_fails(&out);
    assert!(
        err.contains("exited with code 3") && err.contains("rolled back"),
        "{err}"
    );
    // The old container was restarted (a new process) on its own writable layer: the state it
    // reports at start (the report was removed before the upgrade) is the one it wrote before;
    // a fresh layer would hold a new one.
    assert!(
        task_pid(&cd).is_some_and(|p| Some(p) != pid_before),
        "the old version is not running again"
    );
    wait_for_file(&cd, "state-at-start", &state);
    assert_eq!(data(&cd, "version"), "1\n");
    assert_clean_on(&cd, "1");
}

#[test]
fn a_failing_health_check_rolls_back() {
    let cd = Containerd::start();
    install(&cd, "1");
    let v2 = app_archive(cd.dir(), "2");
    let args = format!("--health-cmd 'test -f /nonexistent' {SERVICE}");
    let err = assert_fails(&tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            v2.to_str().unwrap(),
            "--args",
            &args,
            "--grace",
            "1",
            "-y",
        ],
    ));
    assert!(
        err.contains("health check") && err.contains("rolled back"),
        "{err}"
    );
    common::wait_until(Duration::from_secs(30), "the old version to run", || {
        task_pid(&cd).is_some() && data(&cd, "version") == "1\n"
    });
    assert_clean_on(&cd, "1");

    // A passing one is kept.
    let args = format!("--health-cmd 'test -f /etc/version' {SERVICE}");
    assert_ok(&tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            v2.to_str().unwrap(),
            "--args",
            &args,
            "--grace",
            "1",
            "-y",
        ],
    ));
    assert_clean_on(&cd, "2");

    // `tpcm events` tells both: the rollback with its reason, then the upgrade.
    let events: Vec<serde_json::Value> =
        assert_ok(&tpcm(&cd, &["events", "--since", "0", "--until", "0s", "--json"]))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &serde_json::Value| e["action"] == "rollback" || e["action"] == "upgrade")
            .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let (rollback, upgrade) = (&events[0]["attributes"], &events[1]["attributes"]);
    assert_eq!(events[0]["action"], "rollback", "{events:?}");
    assert!(
        rollback["reason"].as_str().unwrap().contains("health check"),
        "{rollback}"
    );
    assert_eq!(rollback["restored"], "true");
    assert_eq!(events[1]["action"], "upgrade", "{events:?}");
    assert_eq!(
        (upgrade["from"].as_str(), upgrade["image"].as_str()),
        (Some(image("1").as_str()), Some(image("2").as_str()))
    );
}

#[test]
fn a_failing_pre_hook_changes_nothing() {
    let cd = Containerd::start();
    install(&cd, "1");
    write_hook(&cd, "pre.sh", "echo cannot back up; exit 7\n");
    let pid = task_pid(&cd);
    let v2 = app_archive(cd.dir(), "2");
    let err = assert_fails(&tpcm(&cd, &["upgrade", "app", v2.to_str().unwrap(), "-y"]));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("pre.sh failed (exit code 7)") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(task_pid(&cd), pid, "the old container was touched");
    assert_clean_on(&cd, "1");
}

#[test]
fn the_images_an_upgrade_needs_cannot_be_removed_while_it_runs() {
    let cd = Containerd::start();
    install(&cd, "1");
    // The pre hook holds the upgrade between the import and the new container until told to go.
    write_hook(
        &cd,
        "pre.sh",
        "touch /tpc/pre-waiting; while [ ! -f /tpc/go ]; do sleep 0.1; done\n",
    );
    let v2 = app_archive(cd.dir(), "2");
    let mut upgrade = common::tpcm_cmd(&cd)
        .args(["upgrade", "app", v2.to_str().unwrap(), "--grace", "1", "-y"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until(Duration::from_secs(60), "the pre hook to run", || {
        cd.data_dir().join("app/pre-waiting").exists()
    });
    // The new image and the pin of the old manifest are the upgrade's: refused, even forced.
    let pins: Vec<String> = cd.images().into_iter().filter(|i| i.contains('@')).collect();
    assert_eq!(pins.len(), 1, "{:?}", cd.images());
    for (victim, force) in [(image("2"), false), (image("2"), true), (pins[0].clone(), true)] {
        let mut args = vec!["image", "remove", victim.as_str()];
        if force {
            args.push("--force");
        }
        let err = assert_fails(&tpcm(&cd, &args));
        assert!(
            err.contains("in use by the install or upgrade of app that has not finished"),
            "{victim} (force: {force}): {err}"
        );
    }
    // A sweep leaves everything while the upgrade's journal is open (and counts the images it
    // names as used should one open after the sweep's check: manager::janitor).
    let swept = assert_ok(&tpcm(&cd, &["janitor"]));
    assert!(swept.contains("operations in flight on app"), "{swept}");
    assert!(cd.images().contains(&image("2")), "{:?}", cd.images());
    assert!(cd.images().contains(&pins[0]), "{:?}", cd.images());

    std::fs::write(cd.data_dir().join("app/go"), "").unwrap();
    let status = common::wait_child(&mut upgrade, Duration::from_secs(120));
    assert!(status.success(), "the upgrade failed: {status}");
    wait_for_file(&cd, "version", "2\n");
    std::fs::remove_dir_all(cd.data_dir().join("app/hook")).unwrap();
    assert_clean_on(&cd, "2");
}

#[test]
fn a_crash_at_any_step_is_finished_or_rolled_back_by_the_next_command() {
    let cd = Containerd::start();
    let v2 = app_archive(cd.dir(), "2");
    // (crash point, the version the TPC runs once recovered, whether the old container was
    // stopped by then and so must come back on its own writable layer)
    let points = [
        ("upgrade:pinned", "1", false),
        ("upgrade:imported", "1", false),
        ("upgrade:pre-hook", "1", false),
        ("upgrade:held", "1", false),
        ("upgrade:old-stopped", "1", true),
        ("upgrade:detached", "1", true),
        ("upgrade:new-created", "1", true),
        ("upgrade:new-started", "1", true),
        ("upgrade:healthy", "1", true),
        ("upgrade:committed", "2", false),
    ];
    for (point, expected, restarted) in points {
        install(&cd, "1");
        let state = data(&cd, "state-at-start");
        // Only a restart of the old container writes the report again.
        std::fs::remove_file(cd.data_dir().join("app/state-at-start")).unwrap();
        let out = tpcm_env(
            &cd,
            &["upgrade", "app", v2.to_str().unwrap(), "--grace", "0", "-y"],
            &[("TPCM_CRASH_AT", point)],
        );
        assert!(!out.status.success(), "{point}: tpcm did not die");
        // The next mutating command recovers first.
        assert_ok(&tpcm(&cd, &["start", "app"]));
        common::wait_until(
            Duration::from_secs(30),
            &format!("{point}: version {expected} running"),
            || task_pid(&cd).is_some() && data(&cd, "version") == format!("{expected}\n"),
        );
        assert_clean_on(&cd, expected);
        if restarted {
            // The old version came back on its own writable layer.
            wait_for_file(&cd, "state-at-start", &state);
        }
        assert_ok(&tpcm(&cd, &["uninstall", "app", "--clean_data", "-y"]));
        assert!(
            cd.images().is_empty() && cd.snapshots().is_empty() && cd.leases().is_empty(),
            "{point}"
        );
    }
}

#[test]
fn http_and_tcp_probes_decide_like_the_health_command() {
    let cd = Containerd::start();
    install(&cd, "1");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v2 = app_archive(cd.dir(), "2");
    // The new version serves http on the host network (TPCs share it).
    let web = format!(
        "--health-http http://127.0.0.1:{port}/index.html -- /bin/sh -c 'mkdir -p /www; echo ok > /www/index.html; \
         cat /etc/version > /tpc/version; exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www'"
    );
    assert_ok(&tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            v2.to_str().unwrap(),
            "--args",
            &web,
            "--grace",
            "1",
            "-y",
        ],
    ));
    assert_clean_on(&cd, "2");

    // A TCP probe of a port nothing listens on fails: back to the web server.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v3 = app_archive(cd.dir(), "3");
    let args = format!("--health-tcp {silent} {SERVICE}");
    let err = assert_fails(&tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            v3.to_str().unwrap(),
            "--args",
            &args,
            "--grace",
            "1",
            "-y",
        ],
    ));
    assert!(
        err.contains(&format!("127.0.0.1:{silent}")) && err.contains("rolled back"),
        "{err}"
    );
    common::wait_until(Duration::from_secs(30), "the web server to be back", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert_clean_on(&cd, "2");
}
