//! `tpcm client` (the containerz client library) against two real `tpcm serve` instances, each
//! with its own containerd and store, standing in for two switches: the startup client
//! (`deploy`) and the update client (`upgrade`, with the device's and the client's own
//! rollback), one target down, and certificates the devices refuse.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/gnoi.rs"]
mod gnoi;
#[path = "support/registry.rs"]
mod registry;

use builder::{Entry, Layer};
use common::{Containerd, run_with_timeout};
use gnoi::{Pki, Server};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// `fleet/app:<version>` whose own command is `cmd` (an upgrade keeps the instance's settings,
/// so each version brings its behaviour in its image).
fn app(dir: &Path, version: &str, cmd: &str) -> PathBuf {
    let mut spec = builder::busybox_image(&[&format!("fleet/app:{version}")]);
    spec.layers.push(Layer::new(vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/version", 0o644, format!("{version}\n")),
    ]));
    spec.cmd = Some(vec!["/bin/sh".into(), "-c".into(), cmd.into()]);
    let path = dir.join(format!("app-{version}.tar"));
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &path).unwrap();
    path
}

const SERVICE: &str = "echo version $(cat /etc/version); trap 'exit 0' TERM; sleep 1000 & wait";

/// Two devices sharing one PKI (the fleet's CA); each server's health gate is 1 s.
struct Fleet {
    devices: Vec<(Containerd, Server)>,
    pki: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        Pki::new(&pki, &["ops-robot", "dashboard", "stranger"]);
        let devices = (0..2)
            .map(|_| {
                let cd = Containerd::start();
                std::fs::create_dir_all(cd.store_dir()).unwrap();
                std::fs::write(cd.store_dir().join("tpcm.toml"), "upgrade_grace_secs = 1\n").unwrap();
                let server = Server::start_with(&cd, &pki, &[]);
                (cd, server)
            })
            .collect();
        Fleet {
            devices,
            pki,
            _dir: dir,
        }
    }

    fn targets(&self) -> Vec<String> {
        self.devices.iter().map(|(_, s)| s.addr.clone()).collect()
    }

    /// `tpcm client --target … <args>` as `identity`.
    fn client(&self, targets: &[String], identity: &str, args: &[&str]) -> Output {
        let mut cmd = common::tpcm_cmd(&self.devices[0].0);
        cmd.arg("client");
        for t in targets {
            cmd.arg("--target").arg(t);
        }
        cmd.arg("--ca-cert")
            .arg(self.pki.join("ca.pem"))
            .arg("--cert")
            .arg(self.pki.join(format!("{identity}.pem")))
            .arg("--key")
            .arg(self.pki.join(format!("{identity}.key")))
            .args(args);
        run_with_timeout(&mut cmd, Duration::from_secs(180))
    }

    /// The image and status of `instance` on every device, as ListContainer says.
    fn states(&self, instance: &str) -> Vec<(String, String)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut out = Vec::new();
            for (_, server) in &self.devices {
                let mut c = server.client("dashboard").await.unwrap();
                let found = gnoi::containers(&mut c)
                    .await
                    .into_iter()
                    .find(|l| l.name == instance);
                out.push(match found {
                    Some(l) => (l.image_name.clone(), l.status().as_str_name().to_string()),
                    None => (String::new(), "NOT_FOUND".into()),
                });
            }
            out
        })
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn deploy_and_upgrade_across_two_switches_with_rollback() {
    let fleet = Fleet::start();
    let dir = fleet._dir.path();
    let targets = fleet.targets();
    let v1 = app(dir, "1", SERVICE);
    let v2 = app(dir, "2", SERVICE);
    let crash = app(dir, "crash", "echo crashing; exit 3");
    let late = app(dir, "late", "echo up for a moment; sleep 3; exit 1");
    let running = |tag: &str| vec![(format!("fleet/app:{tag}"), "RUNNING".to_string()); 2];

    let out = fleet.client(
        &targets,
        "ops-robot",
        &[
            "deploy",
            v1.to_str().unwrap(),
            "--name",
            "fleet/app",
            "--tag",
            "1",
            "--instance",
            "app",
        ],
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    for t in &targets {
        assert!(
            stdout(&out).contains(&format!("{t}: deployed fleet/app:1 as app, started")),
            "{}",
            stdout(&out)
        );
    }
    assert_eq!(fleet.states("app"), running("1"));

    let out = fleet.client(
        &targets,
        "ops-robot",
        &[
            "upgrade",
            v2.to_str().unwrap(),
            "--name",
            "fleet/app",
            "--tag",
            "2",
            "--instance",
            "app",
            "--health-timeout",
            "3",
        ],
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_eq!(
        stdout(&out)
            .matches("upgraded app from fleet/app:1 to fleet/app:2")
            .count(),
        2,
        "{}",
        stdout(&out)
    );
    assert_eq!(fleet.states("app"), running("2"));

    // Exits at once: each device's own health gate rolls it back.
    let out = fleet.client(
        &targets,
        "ops-robot",
        &[
            "upgrade",
            crash.to_str().unwrap(),
            "--name",
            "fleet/app",
            "--tag",
            "crash",
            "--instance",
            "app",
        ],
    );
    assert!(
        !out.status.success(),
        "a failed upgrade exited 0: {}",
        common::describe(&out)
    );
    assert_eq!(stdout(&out).matches("FAILED").count(), 2, "{}", stdout(&out));
    assert_eq!(
        stdout(&out)
            .matches("rolled back to the previous version")
            .count(),
        2,
        "{}",
        stdout(&out)
    );
    assert_eq!(fleet.states("app"), running("2"));

    // Passes the device's 1 s gate, dies within the client's watch: the client rolls it back.
    let out = fleet.client(
        &targets,
        "ops-robot",
        &[
            "--json",
            "upgrade",
            late.to_str().unwrap(),
            "--name",
            "fleet/app",
            "--tag",
            "late",
            "--instance",
            "app",
            "--health-timeout",
            "8",
        ],
    );
    assert!(!out.status.success(), "{}", common::describe(&out));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["ok"], false, "{r}");
        let e = r["error"].as_str().unwrap();
        assert!(
            e.contains("rolled back to the previous version") && e.contains("STOPPED"),
            "{e}"
        );
    }
    assert_eq!(fleet.states("app"), running("2"));

    // Passes the gate (1 s up, then a passing probe), keeps running, and turns unhealthy by
    // its image's HEALTHCHECK 6 s after its start (the device runs the check, and says so in
    // ListContainer's io.tpcm.health): the client rolls it back.
    let sick = {
        let mut spec = builder::busybox_image(&["fleet/app:sick"]);
        spec.healthcheck = Some(serde_json::json!({
            "Test": ["CMD-SHELL", "test ! -f /tmp/broken"],
            "Interval": 200_000_000,
            "Retries": 1
        }));
        spec.cmd = Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "(sleep 6; touch /tmp/broken) & trap 'exit 0' TERM; sleep 1000 & wait".into(),
        ]);
        let path = dir.join("app-sick.tar");
        builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &path).unwrap();
        path
    };
    let out = fleet.client(
        &targets,
        "ops-robot",
        &[
            "upgrade",
            sick.to_str().unwrap(),
            "--name",
            "fleet/app",
            "--tag",
            "sick",
            "--instance",
            "app",
            "--health-timeout",
            "20",
        ],
    );
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert_eq!(
        stdout(&out)
            .matches("the new version is unhealthy on fleet/app:sick")
            .count(),
        2,
        "{}",
        stdout(&out)
    );
    assert_eq!(fleet.states("app"), running("2"));
}

#[test]
fn the_update_client_rolls_a_cli_install_pinned_by_digest_back_to_that_image() {
    let fleet = Fleet::start();
    let dir = fleet._dir.path();
    let reg = registry::Registry::start(None);
    reg.push("docker-archive", &app(dir, "1", SERVICE), "fleet/app:1");
    let pinned = reg.reference(&format!("fleet/app@{}", reg.manifest_digest("fleet/app", "1")));
    let (cd, _) = &fleet.devices[0];
    // A CLI install owns its image; pulled by digest, ListContainer shows it without a tag.
    common::assert_ok(&common::tpcm(cd, &["install", "app", &pinned, "-y"]));
    let device = vec![fleet.targets()[0].clone()];
    assert_eq!(
        fleet.states("app")[0],
        (reg.reference("fleet/app"), "RUNNING".to_string())
    );

    // Passes the device's gate, then dies: the client goes back to the pinned image, which the
    // device kept although the install owned it.
    let late = app(dir, "late", "echo up for a moment; sleep 3; exit 1");
    let out = fleet.client(
        &device,
        "ops-robot",
        &[
            "upgrade",
            late.to_str().unwrap(),
            "--name",
            "fleet/app",
            "--tag",
            "late",
            "--instance",
            "app",
            "--health-timeout",
            "8",
        ],
    );
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert!(
        stdout(&out).contains("rolled back to the previous version"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        fleet.states("app")[0],
        (reg.reference("fleet/app"), "RUNNING".to_string())
    );
    let listed: serde_json::Value =
        serde_json::from_str(&common::assert_ok(&common::tpcm(cd, &["list", "--json"]))).unwrap();
    assert_eq!(listed[0]["image"], pinned.as_str(), "{listed}");
}

#[test]
fn one_target_down_does_not_stop_the_others_and_bad_certificates_are_named() {
    let fleet = Fleet::start();
    let dir = fleet._dir.path();
    let live = fleet.devices[0].1.addr.clone();
    let dead = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let v1 = app(dir, "1", SERVICE);
    let out = fleet.client(
        &[live.clone(), dead.clone()],
        "ops-robot",
        &[
            "deploy",
            v1.to_str().unwrap(),
            "--name",
            "fleet/app",
            "--tag",
            "1",
            "--instance",
            "app",
        ],
    );
    assert!(!out.status.success(), "{}", common::describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{live}: deployed fleet/app:1 as app, started")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{dead}: FAILED: cannot connect to {dead}")),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&dead),
        "{}",
        common::describe(&out)
    );
    assert_eq!(
        fleet.states("app")[0],
        ("fleet/app:1".to_string(), "RUNNING".to_string())
    );

    // A switch that accepts the connection and then says nothing: failed after --timeout, the
    // live one answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = silent.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || silent.accept().map(|(s, _)| s));
    let out = fleet.client(
        &[live.clone(), hung.clone()],
        "dashboard",
        &["--timeout", "3", "image", "list"],
    );
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert!(
        stdout(&out).contains(&format!("{hung}: FAILED: no result within 3 s")),
        "{}",
        common::describe(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{live}: fleet/app:1 sha256:")),
        "{}",
        common::describe(&out)
    );
    drop(held);

    // Logs and volumes on one device.
    let live_only = std::slice::from_ref(&live);
    common::wait_until(Duration::from_secs(30), "the instance's first output", || {
        stdout(&fleet.client(live_only, "dashboard", &["container", "logs", "app"]))
            .contains(&format!("{live}: version 1"))
    });
    let out = fleet.client(
        live_only,
        "ops-robot",
        &["volume", "create", "cfg", "-o", "o=bind,ro"],
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    let out = fleet.client(live_only, "dashboard", &["volume", "list"]);
    assert!(
        stdout(&out).contains(&format!("{live}: cfg local")),
        "{}",
        common::describe(&out)
    );
    let out = fleet.client(
        live_only,
        "ops-robot",
        &["volume", "create", "bad", "-o", "size=1g"],
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("size=1g"),
        "{}",
        common::describe(&out)
    );

    // Listings across the fleet, as JSON.
    let out = fleet.client(
        &fleet.targets(),
        "dashboard",
        &["--json", "container", "list", "--all"],
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<usize> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_array().unwrap().len())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec![0, 1], "{results}");

    // A read-only identity cannot deploy; a certificate from another CA cannot even connect.
    let out = fleet.client(
        std::slice::from_ref(&live),
        "dashboard",
        &["container", "stop", "app"],
    );
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("lacks the write scope"),
        "{}",
        common::describe(&out)
    );
    let out = fleet.client(std::slice::from_ref(&live), "stranger", &["image", "list"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("not in the authz file"),
        "{}",
        common::describe(&out)
    );
    let out = fleet.client(std::slice::from_ref(&live), "rogue", &["image", "list"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains(&format!("{live}: FAILED")),
        "{}",
        common::describe(&out)
    );
    // Missing TLS settings: one line naming the flag, before any device is contacted.
    let mut cmd = common::tpcm_cmd(&fleet.devices[0].0);
    cmd.args(["client", "--target", &live, "image", "list"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca-cert"),
        "{}",
        common::describe(&out)
    );
}

#[test]
fn devices_pull_from_a_registry_with_the_credentials_given() {
    let fleet = Fleet::start();
    let reg = registry::Registry::start(Some(("fleet", "s3cret")));
    let v1 = app(fleet._dir.path(), "1", SERVICE);
    reg.push("docker-archive", &v1, "fleet/app:1");
    let reference = reg.reference("fleet/app:1");
    let targets = fleet.targets();
    let out = fleet.client(
        &targets,
        "ops-robot",
        &[
            "image",
            "pull",
            &reference,
            "--username",
            "fleet",
            "--password",
            "s3cret",
        ],
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_eq!(
        stdout(&out)
            .matches(&format!("pulled {}:1", reg.reference("fleet/app")))
            .count(),
        2,
        "{}",
        stdout(&out)
    );
    let out = fleet.client(&targets, "dashboard", &["image", "list"]);
    assert_eq!(
        stdout(&out)
            .matches(&format!("{}:1 sha256:", reg.reference("fleet/app")))
            .count(),
        2,
        "{}",
        stdout(&out)
    );
    // A wrong password fails on every device and imports nothing more.
    let out = fleet.client(
        &targets,
        "ops-robot",
        &[
            "image",
            "pull",
            &reg.reference("fleet/app:1"),
            "--username",
            "fleet",
            "--password",
            "wrong",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(stdout(&out).matches("FAILED").count(), 2, "{}", stdout(&out));
    for (cd, _) in &fleet.devices {
        assert_eq!(cd.images().len(), 1, "{:?}", cd.images());
    }
}

#[test]
fn pushes_draw_one_progress_bar_per_target_on_a_terminal_only() {
    let fleet = Fleet::start();
    let archive = app(fleet._dir.path(), "1", SERVICE);
    let targets = fleet.targets();
    // Piped: result lines on stdout, nothing on stderr.
    let out = fleet.client(
        &targets,
        "ops-robot",
        &[
            "image",
            "push",
            archive.to_str().unwrap(),
            "--name",
            "fleet/app",
            "--tag",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    assert!(out.stderr.is_empty(), "{}", common::describe(&out));
    // On a terminal (script(1) gives the command a pty): a bar per target, named by it.
    let pki = &fleet.pki;
    let mut line = format!("'{}' client", env!("CARGO_BIN_EXE_tpcm"));
    for t in &targets {
        line.push_str(&format!(" --target {t}"));
    }
    line.push_str(&format!(
        " --ca-cert '{}' --cert '{}' --key '{}' image push '{}' --name fleet/app --tag 2",
        pki.join("ca.pem").display(),
        pki.join("ops-robot.pem").display(),
        pki.join("ops-robot.key").display(),
        archive.display()
    ));
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qefc", &line, "/dev/null"])
        .env("TPCM_ROOT", fleet._dir.path().join("store"));
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{}", common::describe(&out));
    let screen = stdout(&out);
    for t in &targets {
        assert!(screen.contains(&format!("{t}: pushed fleet/app:2")), "{screen:?}");
        assert!(
            screen
                .lines()
                .any(|l| l.contains(t.as_str()) && l.contains(" [") && l.contains("MiB")),
            "no bar for {t} in {screen:?}"
        );
    }
}
