//! A TPC owns its image and its settings, against a real containerd: a moved tag or a removed
//! image name does not take a running TPC's image (its container pins the manifest), migration
//! keeps the TPC's image name (in `tpcm list` and gNOI ListContainer), an image already in containerd installs without a registry, a
//! mistyped file name is "no such file", an env file is read once, units name the installed
//! binary, records and logs are root's only, and records of the older format are converted.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/gnoi.rs"]
mod gnoi;

use common::{Containerd, assert_fails, assert_ok, tpcm, tpcm_cmd, tpcm_env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);
const TAG: &str = "acme/app:1.0";
const REF: &str = "docker.io/acme/app:1.0";
/// Reports its environment's SECRET and the image it runs from at each start, then serves.
const SERVICE: &str = "-- /bin/sh -c 'echo \"$SECRET\" > /tpc/secret; cat /etc/version > /tpc/image 2>&1; \
    trap \"exit 0\" TERM; sleep 1000 & wait'";

/// v1 (one layer) or v1b (a rebuild: two layers), both tagged `acme/app:1.0`.
fn archive(dir: &Path, rebuilt: bool) -> PathBuf {
    let path = dir.join(if rebuilt { "app-v1b.tar" } else { "app-v1.tar" });
    let image = if rebuilt {
        builder::busybox_two_layer(&[TAG])
    } else {
        builder::busybox_image(&[TAG])
    };
    builder::write_archive(&image, builder::ArchiveFormat::DockerV12, false, &path).unwrap();
    path
}

fn running(cd: &Containerd, name: &str) -> bool {
    cd.tasks().iter().any(|(id, _, s)| id == name && s == "RUNNING")
}

fn list(cd: &Containerd, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let out = assert_ok(&tpcm_env(cd, &["list", "--json"], env));
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn digest_of(tpcs: &[serde_json::Value], name: &str) -> String {
    tpcs.iter().find(|t| t["name"] == name).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every image `ctr images check` lists is complete.
fn all_complete(cd: &Containerd) {
    let check = cd.ctr_ok(&["images", "check"]);
    for line in check.lines().skip(1) {
        assert!(line.contains("complete ("), "{check}");
        assert!(!line.contains("incomplete"), "{check}");
    }
}

#[test]
fn a_moved_tag_leaves_running_tpcs_on_their_image_and_migration_keeps_their_names() {
    let old = Containerd::start();
    let v1 = archive(old.dir(), false);
    let v1b = archive(old.dir(), true);
    for name in ["h1", "h2"] {
        assert_ok(&tpcm(
            &old,
            &["install", name, v1.to_str().unwrap(), "--args", SERVICE, "-y"],
        ));
    }
    let before = list(&old, &[]);
    let d1 = digest_of(&before, "h1");
    // The rebuilt archive carries the same tag: installing it moves the tag, and says so.
    let out = assert_ok(&tpcm(
        &old,
        &["install", "h3", v1b.to_str().unwrap(), "--args", SERVICE, "-y"],
    ));
    assert!(
        out.contains(&format!("{REF} now names")) && out.contains("h1, h2 keep running"),
        "{out}"
    );
    let after = list(&old, &[]);
    let d2 = digest_of(&after, "h3");
    assert_ne!(d1, d2);
    assert_eq!(digest_of(&after, "h1"), d1);
    assert!(running(&old, "h1") && running(&old, "h2"));
    all_complete(&old);
    // The old manifest is no image any more, yet h2 restarts on it.
    assert_ok(&tpcm(&old, &["restart", "h2"]));
    common::wait_until(DEADLINE, "h2 to run again", || running(&old, "h2"));

    assert_ok(&tpcm(&old, &["migrate", "save"]));

    let new = Containerd::start();
    let units = new.dir().join("new-units");
    let env = [
        ("TPCM_ROOT", old.store_dir()),
        ("TPCM_DATA_ROOT", old.data_dir()),
        ("TPCM_SYSTEMD_DIR", units),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.to_str().unwrap())).collect();
    assert_ok(&tpcm_env(&new, &["boot"], &env));
    common::wait_until(DEADLINE, "the three TPCs in the new containerd", || {
        ["h1", "h2", "h3"].iter().all(|n| running(&new, n))
    });
    // Their names and digests are what they were installed from; the saved images were an
    // implementation detail and are no images of their own.
    let restored = list(&new, &env);
    for (name, digest) in [("h1", &d1), ("h2", &d1), ("h3", &d2)] {
        let t = restored.iter().find(|t| t["name"] == name).unwrap();
        assert_eq!(t["image"], REF, "{name}");
        assert_eq!(&t["digest"], digest.as_str(), "{name}");
    }
    assert!(
        !new.ctr_ok(&["images", "ls"]).contains("tpcm-migrated"),
        "{}",
        new.ctr_ok(&["images", "ls"])
    );
    // gNOI ListContainer says the same: the familiar name and the manifest digest.
    let pki = new.dir().join("pki");
    gnoi::Pki::new(&pki, &["dashboard"]);
    let server = gnoi::Server::start_command(&new, &pki, &[], |c| {
        c.envs(env.iter().copied());
    });
    let listed = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = server.client("dashboard").await.unwrap();
        gnoi::containers(&mut c).await
    });
    for (name, digest) in [("h1", &d1), ("h2", &d1), ("h3", &d2)] {
        let c = listed.iter().find(|c| c.name == name).expect(name);
        assert_eq!(c.image_name, TAG, "{name}");
        let hash = c.hash.as_ref().expect("a hash").hash.clone();
        assert_eq!(format!("sha256:{}", hex::encode(hash)), *digest, "{name}");
    }
    drop(server);
    // h1 still runs its own image (one layer, no /etc/version) and h3 the rebuild.
    let image_of = |n: &str| std::fs::read_to_string(old.data_dir().join(n).join("image")).unwrap();
    common::wait_until(DEADLINE, "h1 and h3 to report their image", || {
        image_of("h3") == "2\n" && image_of("h1").contains("No such file")
    });
    // And a second save after the restore works from the pinned saved images.
    assert_ok(&tpcm_env(&new, &["migrate", "save"], &env));
}

#[test]
fn removing_an_image_a_tpc_runs_is_refused_unless_forced() {
    let cd = Containerd::start();
    let v1 = archive(cd.dir(), false);
    assert_ok(&tpcm(
        &cd,
        &["install", "app", v1.to_str().unwrap(), "--args", SERVICE, "-y"],
    ));
    let err = assert_fails(&tpcm(&cd, &["image", "remove", TAG]));
    assert!(err.contains("is used by app") && err.contains("force"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(cd.images(), [REF]);
    let out = assert_ok(&tpcm(&cd, &["image", "remove", TAG, "--force"]));
    assert!(out.contains("keep running"), "{out}");
    assert!(cd.images().is_empty());
    assert!(running(&cd, "app"));
    assert_ok(&tpcm(&cd, &["restart", "app"]));
    common::wait_until(DEADLINE, "app to run again", || running(&cd, "app"));
    assert_ok(&tpcm(&cd, &["migrate", "save"]));
    // Uninstalling the TPC frees the content its container pinned.
    assert_ok(&tpcm(&cd, &["uninstall", "app", "-y"]));
    cd.ctr_ok(&["content", "prune", "references"]);
    common::wait_until(DEADLINE, "the content to go", || cd.content().is_empty());
}

#[test]
fn concurrent_import_and_remove_leave_a_whole_image_or_none() {
    let cd = Containerd::start();
    let v1 = archive(cd.dir(), false);
    for round in 0..10 {
        assert_ok(&tpcm(&cd, &["image", "import", v1.to_str().unwrap()]));
        let import = tpcm_cmd(&cd)
            .args(["image", "import", v1.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let remove = tpcm_cmd(&cd)
            .args(["image", "remove", TAG])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for mut child in [import, remove] {
            common::wait_until(DEADLINE, "import and remove to end", || {
                child.try_wait().unwrap().is_some()
            });
        }
        let check = cd.ctr_ok(&["images", "check"]);
        assert!(!check.contains("incomplete"), "round {round}: {check}");
        if !cd.images().is_empty() {
            // A whole image: a TPC runs from it (its layers' snapshots are all there).
            let name = format!("r{round}");
            assert_ok(&tpcm(&cd, &["install", &name, REF, "--args", SERVICE, "-y"]));
            assert_ok(&tpcm(&cd, &["uninstall", &name, "-y"]));
        }
        let _ = tpcm(&cd, &["image", "remove", TAG]);
    }
}

#[test]
fn an_imported_image_installs_without_a_registry_and_a_mistyped_file_is_no_such_file() {
    let cd = Containerd::start();
    let v1 = archive(cd.dir(), false);
    assert_ok(&tpcm(&cd, &["image", "import", v1.to_str().unwrap()]));
    // No registry is reachable here: the image that is there is used.
    assert_ok(&tpcm(&cd, &["install", "app2", REF, "--args", SERVICE, "-y"]));
    assert_ok(&tpcm(&cd, &["install", "app3", TAG, "--args", SERVICE, "-y"]));
    assert!(running(&cd, "app2") && running(&cd, "app3"));
    // The TPCs do not own an image imported on its own: it stays when they go.
    assert_ok(&tpcm(&cd, &["uninstall", "app2", "-y"]));
    assert_ok(&tpcm(&cd, &["uninstall", "app3", "-y"]));
    assert_eq!(cd.images(), [REF]);

    for typo in ["./app-v1.tr.tar", "/nowhere/app.tar", "../app.tgz", "app-v1.zst"] {
        let err = assert_fails(&tpcm(&cd, &["install", "x", typo, "-y"]));
        assert!(err.contains("No such file"), "{typo}: {err}");
    }
    let err = assert_fails(&tpcm(&cd, &["install", "x", "app-v1.tr", "-y"]));
    assert!(err.contains("no local file named app-v1.tr exists"), "{err}");
    assert!(cd.containers().is_empty());
    assert!(!cd.store_dir().join("tpcs/x.json").exists());
}

#[test]
fn an_env_file_is_read_at_install_and_not_needed_at_boot() {
    let cd = Containerd::start();
    let v1 = archive(cd.dir(), false);
    let env_file = cd.dir().join("app.env");
    std::fs::write(&env_file, "SECRET=from-the-file\n").unwrap();
    let args = format!("--env-file {} {SERVICE}", env_file.display());
    assert_ok(&tpcm(
        &cd,
        &["install", "app", v1.to_str().unwrap(), "--args", &args, "-y"],
    ));
    let secret = cd.data_dir().join("app/secret");
    common::wait_until(DEADLINE, "the secret at the first start", || {
        std::fs::read_to_string(&secret).is_ok_and(|s| s == "from-the-file\n")
    });
    // A SONiC image upgrade keeps only /host: the file is gone.
    std::fs::remove_file(&env_file).unwrap();
    std::fs::remove_file(&secret).unwrap();
    // What systemd runs at boot.
    assert_ok(&tpcm(&cd, &["unit-stop", "app"]));
    let mut unit_run = tpcm_cmd(&cd)
        .args(["unit-run", "app"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until(DEADLINE, "unit-run to start the TPC again", || {
        std::fs::read_to_string(&secret).is_ok_and(|s| s == "from-the-file\n")
    });
    assert_ok(&tpcm(&cd, &["unit-stop", "app"]));
    common::wait_until(DEADLINE, "unit-run to end", || {
        unit_run.try_wait().unwrap().is_some()
    });
    std::fs::remove_file(&secret).unwrap();
    // And the boot unit's command.
    assert_ok(&tpcm(&cd, &["boot"]));
    common::wait_until(DEADLINE, "boot to start the TPC", || {
        std::fs::read_to_string(&secret).is_ok_and(|s| s == "from-the-file\n")
    });
    // The listing never shows environment values.
    let listing = assert_ok(&tpcm(&cd, &["list", "--json"]));
    assert!(!listing.contains("from-the-file"), "{listing}");
}

#[test]
fn units_name_the_installed_binary_and_boot_rewrites_those_that_do_not() {
    let cd = Containerd::start();
    let v1 = archive(cd.dir(), false);
    assert_ok(&tpcm(
        &cd,
        &["install", "app", v1.to_str().unwrap(), "--args", SERVICE, "-y"],
    ));
    let unit = cd.units_dir().join("tpc-app.service");
    let exe = env!("CARGO_BIN_EXE_tpcm");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!("ExecStart={exe} unit-run app\n")),
        "{text}"
    );
    // A unit written by a tpcm that lived elsewhere.
    std::fs::write(&unit, text.replace(exe, "/old/place/tpcm")).unwrap();
    let out = assert_ok(&tpcm(&cd, &["boot"]));
    assert!(out.contains("tpc-app.service"), "{out}");
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), text);
    assert_eq!(
        std::fs::read_to_string(cd.store_dir().join("units/tpc-app.service")).unwrap(),
        text
    );
    // Without an override, units name /usr/bin/tpcm, or tpcm.toml's tpcm_binary.
    let boot_with = |binary: Option<&str>| {
        let mut cmd = tpcm_cmd(&cd);
        cmd.env_remove("TPCM_BINARY").arg("boot");
        if let Some(b) = binary {
            std::fs::write(cd.store_dir().join("tpcm.toml"), format!("tpcm_binary = {b:?}\n")).unwrap();
        }
        assert_ok(&common::run_with_timeout(&mut cmd, common::CMD_TIMEOUT));
        std::fs::read_to_string(&unit).unwrap()
    };
    assert!(boot_with(None).contains("ExecStart=/usr/bin/tpcm unit-run app\n"));
    assert!(boot_with(Some("/opt/tpcm/bin/tpcm")).contains("ExecStart=/opt/tpcm/bin/tpcm unit-run app\n"));
}

#[test]
fn records_logs_and_the_store_are_root_only() {
    let cd = Containerd::start();
    let v1 = archive(cd.dir(), false);
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::set_permissions(cd.store_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_ok(&tpcm(
        &cd,
        &[
            "install",
            "app",
            v1.to_str().unwrap(),
            "--args",
            &format!("-e SECRET=hunter2 {SERVICE}"),
            "-y",
        ],
    ));
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(cd.store_dir()), 0o700);
    assert_eq!(mode(cd.store_dir().join("tpcs/app.json")), 0o600);
    let log = cd.store_dir().join("logs/app.log");
    common::wait_until(DEADLINE, "the log file", || log.exists());
    assert_eq!(mode(log), 0o600);
    assert_eq!(mode(cd.store_dir().join("logs")), 0o700);
    assert!(!assert_ok(&tpcm(&cd, &["list", "--json"])).contains("hunter2"));
    // A journal (left by an install killed after its import) is root's only too.
    let killed = tpcm_env(
        &cd,
        &["install", "other", v1.to_str().unwrap(), "--args", SERVICE, "-y"],
        &[("TPCM_CRASH_AT", "install:imported")],
    );
    assert!(!killed.status.success());
    assert_eq!(mode(cd.store_dir().join("journal/other.json")), 0o600);
    assert_eq!(mode(cd.store_dir().join("journal")), 0o700);
    // The next command on it takes the install back.
    assert_fails(&tpcm(&cd, &["start", "other"]));
    assert!(!cd.store_dir().join("journal/other.json").exists());
}

#[test]
fn a_record_of_the_older_format_is_converted_and_its_container_pinned() {
    let cd = Containerd::start();
    let v1 = archive(cd.dir(), false);
    let env_file = cd.dir().join("gone.env");
    std::fs::write(&env_file, "SECRET=s1\n").unwrap();
    let args = format!("--env-file {} --restart always {SERVICE}", env_file.display());
    assert_ok(&tpcm(
        &cd,
        &["install", "app", v1.to_str().unwrap(), "--args", &args, "-y"],
    ));
    let path = cd.store_dir().join("tpcs/app.json");
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The record as the tpcm before typed specs wrote it, for a container made then (no pin).
    let old = serde_json::json!({
        "name": "app",
        "image": REF,
        "digest": record["spec"]["image"]["digest"],
        "args": args,
        "container": {
            "id": "app", "image": REF, "env": ["SECRET=s1"],
            "mounts": [
                {"host": cd.data_dir().join("app"), "container": "/tpc", "read_only": false},
                {"host": cd.store_dir().join("shared"), "container": "/tpc-shared", "read_only": false}
            ],
            "cpus": 0.4, "memory": null, "memory_reservation": null, "cap_add": [], "cap_drop": [],
            "privileged": false, "user": null, "workdir": null, "entrypoint": null,
            "command": record["spec"]["settings"]["command"], "hostname": null, "host_network": true,
            "bridge": null, "devices": []
        },
        "running": true, "installed": 1765000000, "owns_image": true, "rollback_image": null
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    std::fs::remove_file(&env_file).unwrap();
    cd.ctr_ok(&[
        "containers",
        "label",
        "app",
        "containerd.io/gc.ref.content.tpcm.image=",
    ]);
    assert!(
        !cd.ctr_ok(&["containers", "info", "app"])
            .contains("gc.ref.content.tpcm.image")
    );

    let tpcs = list(&cd, &[]);
    assert_eq!(tpcs[0]["image"], REF);
    // A command on the TPC completes the conversion: the container pins its image again.
    assert_ok(&tpcm(&cd, &["restart", "app"]));
    common::wait_until(DEADLINE, "app to run again", || running(&cd, "app"));
    assert!(
        cd.ctr_ok(&["containers", "info", "app"])
            .contains("gc.ref.content.tpcm.image")
    );
    let converted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        converted["spec"]["settings"]["env"],
        serde_json::json!(["SECRET=s1"])
    );
    assert_eq!(converted["spec"]["settings"]["restart"], "always");
    assert!(converted.get("converted").is_none(), "{converted}");
}

#[test]
fn a_bad_namespace_is_one_line() {
    let cd = Containerd::start();
    for bad in ["tpcm/x", "ü", "a..b", "-x"] {
        let out = tpcm(&cd, &[&format!("--namespace={bad}"), "list"]);
        let err = assert_fails(&out);
        assert!(err.contains("is not a containerd namespace"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
