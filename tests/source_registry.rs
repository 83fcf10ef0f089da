//! Pulling from a registry: the real distribution registry (Debian `docker-registry`) on
//! 127.0.0.1 with htpasswd auth, fixtures pushed with skopeo (which stores layers gzip'd, as
//! `docker push` does), and a private containerd per test.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/registry.rs"]
mod registry;

use base64::Engine;
use common::{Containerd, assert_fails, assert_ok, tpcm, tpcm_env};
use registry::Registry;
use std::path::{Path, PathBuf};

const USER: &str = "tester";
const PASSWORD: &str = "s3cret";

fn archive(dir: &Path, spec: builder::ImageSpec, name: &str) -> PathBuf {
    let path = dir.join(name);
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &path).unwrap();
    path
}

/// A registry with the busybox fixture pushed as `tpcm/busybox:1.0`.
fn registry_with_busybox(dir: &Path) -> Registry {
    let reg = Registry::start(Some((USER, PASSWORD)));
    let tar = archive(
        dir,
        builder::busybox_image(&["tpcm-fixture/busybox:1.0"]),
        "busybox.tar",
    );
    reg.push("docker-archive", &tar, "tpcm/busybox:1.0");
    reg
}

#[test]
fn install_by_tag_runs_the_pulled_image() {
    let cd = Containerd::start();
    let reg = registry_with_busybox(cd.dir());
    let reference = reg.reference("tpcm/busybox:1.0");
    let command = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";
    let out = assert_ok(&tpcm(
        &cd,
        &[
            "install",
            "app",
            &reference,
            "--username",
            USER,
            "--password",
            PASSWORD,
            "--args",
            command,
            "-y",
        ],
    ));
    assert!(out.contains("[ SUCCESS ]"), "{out}");
    assert!(cd.images().contains(&reference), "{:?}", cd.images());
    // The image record points at the registry's manifest, byte for byte.
    let digest = reg.manifest_digest("tpcm/busybox", "1.0");
    assert!(cd.ctr_ok(&["images", "ls"]).contains(&digest));
    let tasks = cd.tasks();
    assert!(
        tasks
            .iter()
            .any(|(id, _, status)| id == "app" && status == "RUNNING"),
        "{tasks:?}"
    );
    // The TPC's own writable-layer lease is not a leftover of the pull.
    let leases = cd.operation_leases();
    assert_eq!(leases, Vec::<String>::new(), "leases left after the pull");
    // containerd itself can use what was pulled.
    let snapshot_check = cd.ctr_ok(&["images", "check"]);
    assert!(snapshot_check.contains("complete"), "{snapshot_check}");

    // Upgrade from the same registry to another tag.
    let v2 = archive(
        cd.dir(),
        builder::busybox_two_layer(&["tpcm-fixture/busybox:2.0"]),
        "v2.tar",
    );
    reg.push("docker-archive", &v2, "tpcm/busybox:2.0");
    let reference2 = reg.reference("tpcm/busybox:2.0");
    let out = assert_ok(&tpcm(
        &cd,
        &[
            "upgrade",
            "app",
            &reference2,
            "--username",
            USER,
            "--password",
            PASSWORD,
            "--grace",
            "1",
            "-y",
        ],
    ));
    assert!(out.contains("[ SUCCESS ]"), "{out}");
    assert_eq!(cd.images(), vec![reference2.clone()], "the old image is removed");
    let digest2 = reg.manifest_digest("tpcm/busybox", "2.0");
    assert!(cd.ctr_ok(&["images", "ls"]).contains(&digest2));
    let tasks = cd.tasks();
    assert!(
        tasks
            .iter()
            .any(|(id, _, status)| id == "app" && status == "RUNNING"),
        "{tasks:?}"
    );
}

#[test]
fn a_digest_reference_and_docker_config_credentials_work() {
    let cd = Containerd::start();
    let reg = registry_with_busybox(cd.dir());
    let digest = reg.manifest_digest("tpcm/busybox", "1.0");
    let by_digest = reg.reference(&format!("tpcm/busybox@{digest}"));
    // Credentials come from $DOCKER_CONFIG/config.json when no flag gives them.
    let docker_config = cd.dir().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let out = assert_ok(&tpcm_env(
        &cd,
        &["image", "import", &by_digest],
        &[("DOCKER_CONFIG", docker_config.to_str().unwrap())],
    ));
    assert!(out.contains(&digest), "{out}");
    assert!(cd.images().contains(&by_digest), "{:?}", cd.images());
}

#[test]
fn refused_credentials_and_missing_tags_change_nothing() {
    let cd = Containerd::start();
    let reg = registry_with_busybox(cd.dir());
    let reference = reg.reference("tpcm/busybox:1.0");
    let empty_config = cd.dir().join("no-docker-config");
    let env = [("DOCKER_CONFIG", empty_config.to_str().unwrap())];

    let wrong = tpcm_env(
        &cd,
        &[
            "install",
            "app",
            &reference,
            "--username",
            USER,
            "--password",
            "wrong",
            "-y",
        ],
        &env,
    );
    let err = assert_fails(&wrong);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("401") && err.contains("password"), "{err}");

    let anonymous = tpcm_env(&cd, &["image", "import", &reference], &env);
    let err = assert_fails(&anonymous);
    assert!(err.contains("401"), "{err}");

    let missing = reg.reference("tpcm/busybox:2.0");
    let out = tpcm(
        &cd,
        &[
            "install",
            "app",
            &missing,
            "--username",
            USER,
            "--password",
            PASSWORD,
            "-y",
        ],
    );
    let err = assert_fails(&out);
    assert!(
        err.contains("no such image or tag") && err.contains("tpcm/busybox:2.0"),
        "{err}"
    );

    // A registry that is not there: one line naming it.
    let out = tpcm(&cd, &["image", "import", "127.0.0.1:1/tpcm/busybox:1.0"]);
    let err = assert_fails(&out);
    assert!(err.contains("127.0.0.1:1/tpcm/busybox:1.0"), "{err}");

    cd.assert_empty("after the refusals");
    assert!(!cd.store_dir().join("tpcs/app.json").exists());
}

#[test]
fn a_multi_arch_index_yields_the_host_platform() {
    let cd = Containerd::start();
    let reg = Registry::start(Some((USER, PASSWORD)));
    let host = archive(cd.dir(), builder::busybox_image(&["a/host:1"]), "host.tar");
    let other = archive(cd.dir(), builder::busybox_two_layer(&["a/other:1"]), "other.tar");
    reg.push("docker-archive", &host, "tpcm/app:host");
    reg.push("docker-archive", &other, "tpcm/app:other");
    let entry = |tag: &str, arch: &str| {
        let (media_type, bytes) = reg.manifest("tpcm/app", tag);
        serde_json::json!({
            "mediaType": media_type,
            "digest": builder::sha256_digest(&bytes),
            "size": bytes.len(),
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let foreign_arch = if builder::host_arch() == "arm64" {
        "s390x"
    } else {
        "arm64"
    };
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": list_type,
        "manifests": [entry("other", foreign_arch), entry("host", builder::host_arch())],
    });
    reg.put_manifest(
        "tpcm/app",
        "multi",
        list_type,
        serde_json::to_vec(&index).unwrap(),
    );
    let foreign_only = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": list_type,
        "manifests": [entry("other", foreign_arch)],
    });
    reg.put_manifest(
        "tpcm/app",
        "foreign",
        list_type,
        serde_json::to_vec(&foreign_only).unwrap(),
    );

    let creds = ["--username", USER, "--password", PASSWORD];
    let foreign = reg.reference("tpcm/app:foreign");
    let err = assert_fails(&tpcm(&cd, &[&["image", "import", &foreign][..], &creds].concat()));
    assert!(err.contains(builder::host_arch()), "{err}");
    cd.assert_empty("an index without the host platform");

    let multi = reg.reference("tpcm/app:multi");
    assert_ok(&tpcm(&cd, &[&["image", "import", &multi][..], &creds].concat()));
    // As `ctr images pull`: the record points at the index; the listing (and a TPC's pin) is the
    // host's manifest.
    let host_digest = reg.manifest_digest("tpcm/app", "host");
    let index_digest = reg.manifest_digest("tpcm/app", "multi");
    let listing = cd.ctr_ok(&["images", "ls"]);
    assert!(listing.contains(&index_digest), "{listing}");
    let ours = assert_ok(&tpcm(&cd, &["image", "list", "--json"]));
    assert!(ours.contains(&host_digest), "{ours}");
    // Only the host image's single layer was pulled and unpacked.
    assert_eq!(cd.snapshots().len(), 1, "{:?}", cd.snapshots());
}

#[test]
fn a_damaged_layer_in_the_registry_is_refused() {
    let cd = Containerd::start();
    let reg = registry_with_busybox(cd.dir());
    let (_, manifest) = reg.manifest("tpcm/busybox", "1.0");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    // Same size, different bytes: only the digest check can tell.
    let blob = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let reference = reg.reference("tpcm/busybox:1.0");
    let out = tpcm(
        &cd,
        &[
            "install",
            "app",
            &reference,
            "--username",
            USER,
            "--password",
            PASSWORD,
            "-y",
        ],
    );
    let err = assert_fails(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&layer[7..19]), "the error names the layer: {err}");
    cd.assert_empty("a damaged layer");
}

#[test]
fn an_upgrade_to_a_moved_tag_rolls_back_to_the_old_digest() {
    let cd = Containerd::start();
    let reg = registry_with_busybox(cd.dir());
    let reference = reg.reference("tpcm/busybox:1.0");
    let old_digest = reg.manifest_digest("tpcm/busybox", "1.0");
    let creds = ["--username", USER, "--password", PASSWORD];
    let service = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";
    assert_ok(&tpcm(
        &cd,
        &[
            &["install", "app", &reference, "--args", service, "-y"][..],
            &creds,
        ]
        .concat(),
    ));
    // The same tag now names another image.
    let v2 = archive(
        cd.dir(),
        builder::busybox_two_layer(&["tpcm-fixture/busybox:1.0"]),
        "v2.tar",
    );
    reg.push("docker-archive", &v2, "tpcm/busybox:1.0");
    let new_digest = reg.manifest_digest("tpcm/busybox", "1.0");
    assert_ne!(old_digest, new_digest);

    let failing = [
        &[
            "upgrade",
            "app",
            &reference,
            "--args",
            "-- /bin/sh -c 'exit 3'",
            "--grace",
            "1",
            "-y",
        ][..],
        &creds,
    ]
    .concat();
    let err = assert_fails(&tpcm(&cd, &failing));
    assert!(err.contains("rolled back"), "{err}");
    // The tag points at the old image again, and no pin is left.
    assert_eq!(cd.images(), vec![reference.clone()]);
    let listing = cd.ctr_ok(&["images", "ls"]);
    assert!(listing.contains(&old_digest), "{listing}");
    assert_eq!(cd.ctr_ok(&["images", "check"]).matches("complete").count(), 1);

    assert_ok(&tpcm(
        &cd,
        &[&["upgrade", "app", &reference, "--grace", "1", "-y"][..], &creds].concat(),
    ));
    assert_eq!(cd.images(), vec![reference.clone()]);
    let listing = cd.ctr_ok(&["images", "ls"]);
    assert!(listing.contains(&new_digest), "{listing}");
    let leases = cd.operation_leases();
    assert!(leases.is_empty(), "{leases:?}");
}

#[test]
fn a_tpc_installed_by_digest_keeps_its_image_through_a_rollback() {
    let cd = Containerd::start();
    let reg = registry_with_busybox(cd.dir());
    let digest = reg.manifest_digest("tpcm/busybox", "1.0");
    let by_digest = reg.reference(&format!("tpcm/busybox@{digest}"));
    let creds = ["--username", USER, "--password", PASSWORD];
    let service = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";
    assert_ok(&tpcm(
        &cd,
        &[
            &["install", "app", &by_digest, "--args", service, "-y"][..],
            &creds,
        ]
        .concat(),
    ));
    let v2 = archive(
        cd.dir(),
        builder::busybox_two_layer(&["tpcm-fixture/busybox:2.0"]),
        "v2.tar",
    );
    reg.push("docker-archive", &v2, "tpcm/busybox:2.0");
    let v2_reference = reg.reference("tpcm/busybox:2.0");
    let failing = [
        &[
            "upgrade",
            "app",
            &v2_reference,
            "--args",
            "-- /bin/sh -c 'exit 3'",
            "--grace",
            "1",
            "-y",
        ][..],
        &creds,
    ]
    .concat();
    let err = assert_fails(&tpcm(&cd, &failing));
    assert!(err.contains("rolled back"), "{err}");
    // The digest-named image is its own pin: the rollback must not remove it.
    assert_eq!(cd.images(), vec![by_digest.clone()]);
    assert!(cd.tasks().iter().any(|(id, _, s)| id == "app" && s == "RUNNING"));
    assert_ok(&tpcm(&cd, &["restart", "app"]));
}

#[test]
fn zstd_layers_pull_and_unpack_as_ctr_pulls_them() {
    let cd = Containerd::start();
    let reg = Registry::start(Some((USER, PASSWORD)));
    let tar = archive(cd.dir(), builder::busybox_two_layer(&["a/z:1"]), "z.tar");
    reg.push_with(
        "docker-archive",
        &tar,
        "tpcm/z:1",
        &["--format", "oci", "--dest-compress-format", "zstd"],
    );
    let (_, manifest) = reg.manifest("tpcm/z", "1");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        assert!(l["mediaType"].as_str().unwrap().ends_with("+zstd"), "{l}");
    }
    let reference = reg.reference("tpcm/z:1");
    let creds = ["--username", USER, "--password", PASSWORD];
    assert_ok(&tpcm(
        &cd,
        &[&["image", "import", &reference][..], &creds].concat(),
    ));
    let said = cd.ctr_ok(&[
        "run",
        "--rm",
        &reference,
        "probe",
        "/bin/sh",
        "-c",
        "cat /etc/version",
    ]);
    assert_eq!(said.trim(), "2");
    // ctr's own pull of the same image makes the same snapshots (chain IDs from the diff IDs,
    // which tpcm verified on the decompressed stream).
    let other = "ctr-pull";
    let out = cd.ctr_in(
        other,
        &[
            "images",
            "pull",
            "--plain-http",
            "--user",
            &format!("{USER}:{PASSWORD}"),
            &reference,
        ],
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    let theirs: Vec<String> = String::from_utf8_lossy(&cd.ctr_in(other, &["snapshots", "ls"]).stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    let mut ours = cd.snapshots();
    ours.sort();
    let mut theirs = theirs;
    theirs.sort();
    assert_eq!(ours, theirs);
}
