//! The TPC lifecycle against a real containerd: install, list, stop, start, restart, uninstall,
//! and refusals that must leave nothing behind.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_fails, assert_ok, tpcm, wait_until};
use std::path::PathBuf;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn archive(cd: &Containerd) -> PathBuf {
    let path = cd.dir().join("busybox.tar");
    builder::write_archive(
        &builder::busybox_image(&["tpcm-fixture/busybox:1.0"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &path,
    )
    .expect("build fixture");
    path
}

fn list(cd: &Containerd) -> Vec<serde_json::Value> {
    let out = assert_ok(&tpcm(cd, &["list", "--json"]));
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("list --json is JSON")
        .as_array()
        .unwrap()
        .clone()
}

fn state(cd: &Containerd, name: &str) -> String {
    list(cd)
        .iter()
        .find(|t| t["name"] == name)
        .map(|t| t["status"]["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn cpu_quota(cd: &Containerd, name: &str) -> i64 {
    let path = cd.cgroup_file("cpu", name, "cpu.cfs_quota_us");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn install_runs_the_tpc_with_its_settings_and_uninstall_leaves_nothing() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    // The process ends on SIGTERM, as a well-behaved service does, so stop takes no grace period.
    let args = "-e FOO=bar -- /bin/sh -c 'trap \"exit 0\" TERM; echo hello-$FOO; echo $FOO > /tpc/out; \
                touch /tpc-shared/seen; sleep 1000 & wait'";
    let out = assert_ok(&tpcm(
        &cd,
        &["install", "tpc1", archive.to_str().unwrap(), "--args", args, "-y"],
    ));
    assert!(out.contains("Installing the TPC-tpc1 image"), "{out}");
    assert!(out.contains("[ SUCCESS ]"), "{out}");

    // The unit is in the store and the unit directory, and systemd accepts it.
    let unit = cd.units_dir().join("tpc-tpc1.service");
    assert_eq!(
        std::fs::read(&unit).unwrap(),
        std::fs::read(cd.store_dir().join("units/tpc-tpc1.service")).unwrap()
    );
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !complaints.contains("tpc-tpc1"),
        "systemd-analyze verify: {}",
        common::describe(&verify)
    );

    // /tpc is the host's <data root>/<name>, writable from inside; env reached the process.
    let written = cd.data_dir().join("tpc1/out");
    wait_until(DEADLINE, "the TPC to write /tpc/out", || {
        std::fs::read_to_string(&written).is_ok_and(|s| s == "bar\n")
    });
    assert!(
        cd.store_dir().join("shared/seen").exists(),
        "/tpc-shared is the store's shared dir"
    );
    let log = cd.store_dir().join("logs/tpc1.log");
    wait_until(DEADLINE, "the TPC's output in its log", || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("hello-bar"))
    });

    // The container ID is the TPC name, in the configured namespace; 20 % of the host's CPUs.
    assert_eq!(cd.containers(), vec!["tpc1".to_string()]);
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    assert_eq!(cpu_quota(&cd, "tpc1"), (0.20 * cpus * 100_000.0).round() as i64);

    let tpcs = list(&cd);
    assert_eq!(tpcs.len(), 1);
    // Host network by default, as every SONiC container.
    let pid = tpcs[0]["status"]["pid"].as_u64().unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap()
    );
    assert_eq!(tpcs[0]["image"], "docker.io/tpcm-fixture/busybox:1.0");
    assert_eq!(tpcs[0]["status"]["state"], "running");
    assert!(tpcs[0]["uptime"].as_u64().is_some());
    let table = assert_ok(&tpcm(&cd, &["list"]));
    assert!(table.lines().nth(1).unwrap().starts_with("tpc1 "), "{table}");

    assert_ok(&tpcm(&cd, &["stop", "tpc1"]));
    assert_eq!(state(&cd, "tpc1"), "stopped");
    assert_ok(&tpcm(&cd, &["start", "tpc1"]));
    assert_eq!(state(&cd, "tpc1"), "running");
    let pid_before = list(&cd)[0]["status"]["pid"].as_u64().unwrap();
    assert_ok(&tpcm(&cd, &["restart", "tpc1"]));
    let pid_after = list(&cd)[0]["status"]["pid"].as_u64().unwrap();
    assert_ne!(pid_before, pid_after, "restart runs a new process");

    let out = assert_ok(&tpcm(&cd, &["uninstall", "tpc1", "-y"]));
    assert!(out.contains("[ SUCCESS ]"), "{out}");
    assert!(cd.containers().is_empty());
    assert!(cd.images().is_empty(), "{:?}", cd.images());
    assert!(cd.snapshots().is_empty(), "{:?}", cd.snapshots());
    assert!(list(&cd).is_empty());
    assert!(
        written.exists(),
        "the data directory is kept without --clean_data"
    );
}

#[test]
fn cpus_in_args_override_the_default_and_clean_data_removes_the_data() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    // `sleep` as PID 1 ignores SIGTERM: uninstall must fall back to SIGKILL after the grace period.
    assert_ok(&tpcm(
        &cd,
        &[
            "install",
            "app",
            archive.to_str().unwrap(),
            "--args",
            "--cpus 0.5 -- sleep 1000",
            "-y",
        ],
    ));
    assert_eq!(cpu_quota(&cd, "app"), 50_000);
    assert!(cd.data_dir().join("app").is_dir());
    assert_ok(&tpcm(&cd, &["uninstall", "app", "--clean_data", "-y"]));
    assert!(!cd.data_dir().join("app").exists());
}

#[test]
fn bad_requests_are_refused_before_anything_is_made() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let a = archive.to_str().unwrap();
    let nothing_made = |what: &str| {
        assert!(cd.images().is_empty(), "{what}: {:?}", cd.images());
        assert!(cd.containers().is_empty(), "{what}");
        assert!(cd.snapshots().is_empty(), "{what}: {:?}", cd.snapshots());
        assert!(
            !cd.store_dir().join("tpcs").exists()
                || std::fs::read_dir(cd.store_dir().join("tpcs"))
                    .unwrap()
                    .next()
                    .is_none(),
            "{what}"
        );
        // Neither the data directory nor a log file of the refused TPC.
        assert!(!cd.data_dir().join("ok").exists(), "{what}: data directory left");
        assert!(
            !cd.store_dir().join("logs").join("ok.log").exists(),
            "{what}: log file left"
        );
    };
    // One past containerd's identifier limit.
    let long_name = "n".repeat(77);
    for (args, expect) in [
        (vec!["install", "a..b", a, "-y"], "a..b"),
        (vec!["install", &long_name, a, "-y"], "76"),
        (vec!["install", "../x", a, "-y"], "../x"),
        (vec!["install", "ok", a, "--args", "--bogus 1", "-y"], "--bogus"),
        (
            vec!["install", "ok", a, "--args", "--memory lots", "-y"],
            "--memory",
        ),
        (vec!["install", "ok", "/no/such.tar", "-y"], "/no/such.tar"),
        // A user the image does not have is refused before anything is made.
        (vec!["install", "ok", a, "--args", "-u nosuch", "-y"], "nosuch"),
        // No -y and no terminal: refuse rather than hang.
        (vec!["install", "ok", a], "-y"),
        (vec!["uninstall", "nothere", "-y"], "nothere"),
        (vec!["start", "nothere"], "nothere"),
    ] {
        let err = assert_fails(&tpcm(&cd, &args));
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        nothing_made(&format!("{args:?}"));
    }
    // A broken archive: the import refuses it and nothing is made.
    let truncated = cd.dir().join("truncated.tar");
    std::fs::write(&truncated, &std::fs::read(&archive).unwrap()[..600_000]).unwrap();
    let err = assert_fails(&tpcm(&cd, &["install", "ok", truncated.to_str().unwrap(), "-y"]));
    assert!(err.contains("cut short") || err.contains("truncated"), "{err}");
    assert!(
        err.contains(truncated.to_str().unwrap()),
        "the archive is named: {err}"
    );
    nothing_made("truncated archive");
    // An image whose process cannot start: the install fails and takes everything back.
    let err = assert_fails(&tpcm(
        &cd,
        &["install", "ok", a, "--args", "-- /no/such/binary", "-y"],
    ));
    assert!(err.contains("tpcm: error:"), "{err}");
    nothing_made("failed start");
    // A data directory that was there before (an uninstall without --clean_data kept it) is
    // not the failed install's to take back.
    let kept = cd.data_dir().join("keep");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("state"), "precious").unwrap();
    assert_fails(&tpcm(
        &cd,
        &["install", "keep", a, "--args", "-- /no/such/binary", "-y"],
    ));
    assert_eq!(std::fs::read_to_string(kept.join("state")).unwrap(), "precious");
    std::fs::remove_dir_all(&kept).unwrap();

    // Installing a name twice is refused and leaves the first one running.
    assert_ok(&tpcm(
        &cd,
        &["install", "one", a, "--args", "-- sleep 1000", "-y"],
    ));
    let err = assert_fails(&tpcm(&cd, &["install", "one", a, "-y"]));
    assert!(err.contains("already installed"), "{err}");
    assert_eq!(state(&cd, "one"), "running");
}

#[test]
fn logs_show_output_follow_it_and_stay_bounded_on_disk() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    // 60 MB of output, then a marker: more than the 4 x 10 MiB a TPC may keep.
    let args = "-- /bin/sh -c '/bin/busybox yes 0123456789abcdef | head -c 60000000; echo done-writing; \
                echo to-stderr >&2; trap \"echo last-words; exit 0\" TERM; while true; do echo tick; sleep 0.2; done'";
    assert_ok(&tpcm(
        &cd,
        &[
            "install",
            "chatty",
            archive.to_str().unwrap(),
            "--args",
            args,
            "-y",
        ],
    ));
    wait_until(DEADLINE, "the marker in tpcm logs", || {
        String::from_utf8_lossy(&tpcm(&cd, &["logs", "chatty"]).stdout).contains("done-writing")
    });
    let logs = cd.store_dir().join("logs");
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let total: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(files.len() <= 4, "{files:?}");
    assert!(
        total <= 40 * 1024 * 1024 + 64 * 1024,
        "{total} bytes kept in {files:?}"
    );
    assert!(total > 30 * 1024 * 1024, "rotated files are kept: {total}");

    let tail = assert_ok(&tpcm(&cd, &["logs", "chatty", "--tail", "2"]));
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l == "tick" || l == "done-writing"), "{tail}");

    // The TPC's stderr goes to stderr, as with docker logs; -t prefixes each line's time. Lines
    // are kept in the order tpcm read them: the stderr line comes before the stdout lines that
    // still sat in the pipe when it was written (up to 64 KiB of them).
    let out = tpcm(&cd, &["logs", "chatty", "--tail", "10000", "-t"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("to-stderr"), "{stdout}");
    let stamped = stderr
        .lines()
        .find(|l| l.ends_with(" to-stderr"))
        .unwrap_or_else(|| panic!("no stamped to-stderr line in {stderr:?}"));
    let (time, _) = stamped.split_once(' ').unwrap();
    let written = humantime::parse_rfc3339(time).expect(time);
    let age = std::time::SystemTime::now().duration_since(written).unwrap();
    assert!(age < DEADLINE * 2, "stamped {time}, {age:?} ago");
    // --since and --until split the output at a time.
    let cut = (written + std::time::Duration::from_millis(1))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .to_string();
    let before = tpcm(&cd, &["logs", "chatty", "--until", &cut, "--tail", "10000"]);
    assert!(String::from_utf8_lossy(&before.stderr).contains("to-stderr"));
    let before = String::from_utf8_lossy(&before.stdout).into_owned();
    assert!(before.contains("0123456789abcdef"));
    wait_until(DEADLINE, "a tick after the cut", || {
        let after = tpcm(&cd, &["logs", "chatty", "--since", &cut]);
        after.stderr.is_empty() && String::from_utf8_lossy(&after.stdout).contains("tick")
    });
    let err = assert_fails(&tpcm(&cd, &["logs", "chatty", "--since", "yesterday"]));
    assert!(err.contains("--since") && err.contains("yesterday"), "{err}");

    // -f prints what arrives after it started, and ends with the TPC's process, after what it
    // wrote last (as docker logs -f).
    let mut follow = common::tpcm_cmd(&cd)
        .args(["logs", "chatty", "-f", "--tail", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Everything -f printed, once it ends; its first piece as soon as there is one.
    let printed = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
            if all.is_empty() {
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let got = rx.recv_timeout(DEADLINE).expect("logs -f printed nothing new");
    assert!(got.starts_with("tick"), "{got:?}");
    assert_ok(&tpcm(&cd, &["stop", "chatty"]));
    let status = common::wait_child(&mut follow, DEADLINE);
    assert!(status.success(), "logs -f: {status}");
    let all = printed.join().unwrap();
    assert!(all.ends_with("tick\nlast-words\n"), "{all:?}");
    // Of a TPC that does not run, -f prints its log and returns.
    let stopped = assert_ok(&common::run_with_timeout(
        common::tpcm_cmd(&cd).args(["logs", "chatty", "-f", "--tail", "1"]),
        DEADLINE,
    ));
    assert_eq!(stopped, "last-words\n");

    let err = assert_fails(&tpcm(&cd, &["logs", "nothere"]));
    assert!(err.contains("nothere"), "{err}");
    assert_ok(&tpcm(&cd, &["uninstall", "chatty", "-y"]));
    assert_eq!(
        std::fs::read_dir(&logs).unwrap().count(),
        0,
        "uninstall removes the logs"
    );
}

#[test]
fn every_archive_format_installs_and_the_config_file_sets_the_default_cpu_share() {
    let cd = Containerd::start();
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(cd.store_dir().join("tpcm.toml"), "default_cpu_share = 0.5\n").unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    let mut gz_layers = builder::busybox_image(&["tpcm-fixture/busybox:1.0"]);
    gz_layers.gzip_layers = true;
    let plain = builder::busybox_image(&["tpcm-fixture/busybox:1.0"]);
    let cases = [
        ("v12.tar.gz", &plain, builder::ArchiveFormat::DockerV12, true),
        ("moby25.tar", &gz_layers, builder::ArchiveFormat::Moby25, false),
        ("oci.tgz", &plain, builder::ArchiveFormat::OciLayout, true),
    ];
    for (file, spec, format, gzip) in cases {
        let path = cd.dir().join(file);
        builder::write_archive(spec, format, gzip, &path).unwrap();
        let args = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";
        assert_ok(&tpcm(
            &cd,
            &["install", "fmt", path.to_str().unwrap(), "--args", args, "-y"],
        ));
        assert_eq!(state(&cd, "fmt"), "running", "{file}");
        assert_eq!(
            cpu_quota(&cd, "fmt"),
            (0.5 * cpus * 100_000.0).round() as i64,
            "{file}"
        );
        assert_ok(&tpcm(&cd, &["uninstall", "fmt", "-y"]));
        assert!(cd.images().is_empty() && cd.snapshots().is_empty(), "{file}");
    }
    std::fs::write(cd.store_dir().join("tpcm.toml"), "default_cpu_share = 3\n").unwrap();
    let err = assert_fails(&tpcm(
        &cd,
        &["install", "fmt", cd.dir().join("oci.tgz").to_str().unwrap(), "-y"],
    ));
    assert!(err.contains("tpcm.toml"), "{err}");
}

#[test]
fn a_missing_v_host_directory_is_created_and_said_as_docker_does() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let host = cd.dir().join("made/by/tpcm");
    let args = format!(
        "-v {}:/x -- /bin/sh -c 'touch /x/seen; trap \"exit 0\" TERM; sleep 1000 & wait'",
        host.display()
    );
    let out = assert_ok(&tpcm(
        &cd,
        &["install", "vol", archive.to_str().unwrap(), "--args", &args, "-y"],
    ));
    assert!(
        out.contains(&format!("Created the host directory {}", host.display())),
        "{out}"
    );
    wait_until(DEADLINE, "the TPC to write into the new directory", || {
        host.join("seen").exists()
    });
    // As docker does at every start: gone again (a tmpfs after a reboot), made again.
    assert_ok(&tpcm(&cd, &["stop", "vol"]));
    std::fs::remove_dir_all(cd.dir().join("made")).unwrap();
    assert_ok(&tpcm(&cd, &["start", "vol"]));
    wait_until(DEADLINE, "the TPC to write into the directory made again", || {
        host.join("seen").exists()
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&host).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "docker's mode, whatever the umask");
    // A host path that cannot be a directory is refused before anything is made.
    let blocker = cd.dir().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let args = format!("-v {}/sub:/x", blocker.display());
    let err = assert_fails(&tpcm(
        &cd,
        &["install", "bad", archive.to_str().unwrap(), "--args", &args, "-y"],
    ));
    assert!(
        err.starts_with(&format!("tpcm: error: -v {}/sub:/x: ", blocker.display())),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Refused before the import: nothing of "bad" exists.
    assert_eq!(cd.containers(), vec!["vol".to_string()]);
    assert_eq!(cd.images().len(), 1, "{:?}", cd.images());
    assert!(!cd.data_dir().join("bad").exists());
    assert!(!cd.store_dir().join("tpcs/bad.json").exists());
    assert!(!cd.store_dir().join("logs/bad.log").exists());
}

#[test]
fn an_unprivileged_user_is_told_to_run_tpcm_as_root() {
    use std::os::unix::process::CommandExt;
    let cd = Containerd::start();
    let as_nobody = || {
        let mut cmd = common::tpcm_cmd(&cd);
        cmd.args(["list"]).uid(65534).gid(65534);
        common::run_with_timeout(&mut cmd, common::CMD_TIMEOUT)
    };
    // Before tpcm ever ran, only containerd's socket (root's) stops `nobody`.
    let err = assert_fails(&as_nobody());
    assert!(
        err.contains("containerd's socket") && err.contains("permission denied (run tpcm as root)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Once it has, the store (0700, as /host/tpcm on a switch) stops it first: same advice.
    assert_ok(&tpcm(&cd, &["list"]));
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(cd.store_dir().join("tpcm.toml"), "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cd.store_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = assert_fails(&as_nobody());
    assert!(
        err.contains("tpcm.toml: permission denied (run tpcm as root)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn user_names_resolve_in_the_images_own_passwd() {
    let cd = Containerd::start();
    let mut spec = builder::busybox_image(&["tpcm-fixture/busybox:1.0"]);
    spec.layers.push(builder::Layer::new(vec![
        builder::Entry::file(
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        ),
        builder::Entry::file("etc/group", 0o644, "root:x:0:\napp:x:1001:\nstaff:x:50:\n"),
    ]));
    let path = cd.dir().join("users.tar");
    builder::write_archive(&spec, builder::ArchiveFormat::OciLayout, false, &path).unwrap();
    let args =
        "-u app:staff -- /bin/sh -c 'echo uid=$(id -u):$(id -g); trap \"exit 0\" TERM; sleep 1000 & wait'";
    assert_ok(&tpcm(
        &cd,
        &["install", "users", path.to_str().unwrap(), "--args", args, "-y"],
    ));
    wait_until(DEADLINE, "the uid in the log", || {
        String::from_utf8_lossy(&tpcm(&cd, &["logs", "users"]).stdout).contains("uid=1000:50")
    });
    assert!(
        cd.snapshots().iter().all(|s| !s.contains("tpcm-view")),
        "the view is removed: {:?}",
        cd.snapshots()
    );
    assert_ok(&tpcm(&cd, &["uninstall", "users", "-y"]));

    // A passwd that is a symlink would be read on the host: refused, nothing left.
    let mut hostile = builder::busybox_image(&["tpcm-fixture/busybox:1.0"]);
    hostile
        .layers
        .push(builder::Layer::new(vec![builder::Entry::symlink(
            "etc/passwd",
            "/etc/passwd",
        )]));
    let path = cd.dir().join("hostile-users.tar");
    builder::write_archive(&hostile, builder::ArchiveFormat::OciLayout, false, &path).unwrap();
    let err = assert_fails(&tpcm(
        &cd,
        &[
            "install",
            "evil",
            path.to_str().unwrap(),
            "--args",
            "-u root",
            "-y",
        ],
    ));
    assert!(err.contains("symlink"), "{err}");
    assert!(
        cd.images().is_empty() && cd.containers().is_empty() && cd.snapshots().is_empty(),
        "{:?}",
        cd.snapshots()
    );
}

#[test]
fn bridged_tpcs_take_their_addresses_from_the_configured_subnet() {
    let cd = Containerd::start();
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    let config = cd.store_dir().join("tpcm.toml");
    // Not a network address: refused by name before anything is made.
    std::fs::write(&config, "bridge_subnet = \"10.214.7.9/24\"\n").unwrap();
    let archive = archive(&cd);
    let port = common::free_port();
    let args = format!(
        "--network bridge -p {port}:8080 -- /bin/sh -c 'busybox ip -o -4 addr show eth0; mkdir -p /www; \
         echo up > /www/index.html; exec busybox httpd -f -p 8080 -h /www'"
    );
    let install = ["install", "web", archive.to_str().unwrap(), "--args", &args, "-y"];
    let err = assert_fails(&tpcm(&cd, &install));
    assert!(
        err.contains("bridge_subnet") && err.contains("10.214.7.0/24"),
        "{err}"
    );
    assert!(cd.containers().is_empty() && cd.images().is_empty());

    std::fs::write(&config, "bridge_subnet = \"10.214.7.0/24\"\n").unwrap();
    assert_ok(&tpcm(&cd, &install));
    wait_until(
        DEADLINE,
        "the container to print an address of the subnet",
        || String::from_utf8_lossy(&tpcm(&cd, &["logs", "web"]).stdout).contains("inet 10.214.7."),
    );
    wait_until(DEADLINE, "the published port to answer", || {
        common::http_get(port).is_some_and(|a| a.contains("up"))
    });
    assert_ok(&tpcm(&cd, &["uninstall", "web", "-y"]));
}

/// The host's NAT rules that forward `port` (`iptables-save -t nat`).
fn forwarding_rules(port: u16) -> Vec<String> {
    let out = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("--dport {port} ")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_janitor_gives_back_the_port_of_a_tpc_deleted_behind_tpcms_back() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let port = common::free_port();
    let args = format!(
        "--network bridge -p {port}:8080 -- /bin/sh -c 'mkdir -p /www; echo up > /www/index.html; \
         exec busybox httpd -f -p 8080 -h /www'"
    );
    let install = ["install", "web", archive.to_str().unwrap(), "--args", &args, "-y"];
    assert_ok(&tpcm(&cd, &install));
    wait_until(DEADLINE, "the published port to answer", || {
        common::http_get(port).is_some_and(|a| a.contains("up"))
    });
    // Someone removes the container with ctr: its forwarding rules stay, claiming the port.
    cd.ctr_ok(&["tasks", "kill", "-s", "KILL", "web"]);
    wait_until(DEADLINE, "the task to die", || {
        cd.tasks()
            .iter()
            .all(|(id, _, status)| id != "web" || status == "STOPPED")
    });
    cd.ctr_ok(&["tasks", "delete", "web"]);
    cd.ctr_ok(&["containers", "rm", "web"]);
    assert!(!forwarding_rules(port).is_empty());
    assert_eq!(common::bridged_containers(cd.namespace()), ["web"]);

    let out = assert_ok(&tpcm(&cd, &["janitor"]));
    assert!(out.contains("released the network of container web"), "{out}");
    assert_eq!(forwarding_rules(port), Vec::<String>::new());
    assert!(common::bridged_containers(cd.namespace()).is_empty());
    let netns = format!("/run/netns/tpcm-{}-web", cd.namespace());
    assert!(!std::path::Path::new(&netns).exists(), "{netns} left");
    // The port is the host's again: a server listening on it is reached.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let connected = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    );
    assert!(connected.is_ok(), "{connected:?}");
    listener.accept().unwrap();
    // A second sweep has nothing left to release; the TPC is listed as missing.
    let out = assert_ok(&tpcm(&cd, &["janitor"]));
    assert!(!out.contains("released"), "{out}");
    assert_eq!(state(&cd, "web"), "missing");
}
