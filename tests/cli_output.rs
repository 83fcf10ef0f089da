//! What the CLI prints, against a private containerd: `tpcm list` and `tpcm image list` keep
//! their columns in line whatever the length of a name (a TPC name may be 76 characters), a
//! memory limit reads in the binary units it was given in, and an upgrade from a local archive
//! says it imports, not that it downloads.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_ok, tpcm};
use std::path::PathBuf;

/// A docker-save archive of the busybox fixture named `name`.
fn archive(cd: &Containerd, file: &str, name: &str) -> PathBuf {
    let path = cd.dir().join(file);
    builder::write_archive(
        &builder::busybox_image(&[name]),
        builder::ArchiveFormat::DockerV12,
        false,
        &path,
    )
    .unwrap();
    path
}

const SERVICE: &str = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";

/// The offset at which each of `cells` starts on `line`, searched left to right.
fn starts(line: &str, cells: &[&str]) -> Vec<usize> {
    let mut from = 0;
    cells
        .iter()
        .map(|c| {
            let at = from
                + line[from..]
                    .find(c)
                    .unwrap_or_else(|| panic!("{c:?} not in {line:?}"));
            from = at + c.len();
            at
        })
        .collect()
}

fn line_with<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in\n{out}"))
}

#[test]
fn list_columns_fit_a_76_character_name_and_memory_is_in_binary_units() {
    let cd = Containerd::start();
    let long = format!("tpc-{}", "x".repeat(72));
    assert_eq!(long.len(), 76);
    let image = "tpcm-fixture/an-image-with-a-rather-long-repository-name-for-its-column:1.0";
    let a = archive(&cd, "long.tar", image);
    let args = format!("--memory 512m --cpus 0.5 {SERVICE}");
    assert_ok(&tpcm(
        &cd,
        &["install", &long, a.to_str().unwrap(), "--args", &args, "-y"],
    ));
    let b = archive(&cd, "short.tar", "tpcm-fixture/b:1");
    let args = format!("--memory 1536m {SERVICE}");
    assert_ok(&tpcm(
        &cd,
        &["install", "b", b.to_str().unwrap(), "--args", &args, "-y"],
    ));

    let out = assert_ok(&tpcm(&cd, &["list"]));
    let header = starts(
        line_with(&out, "NAME"),
        &["NAME", "IMAGE", "STATUS", "CPUS", "MEMORY", "UPTIME"],
    );
    let full_image = format!("docker.io/{image}");
    let row = starts(
        line_with(&out, &long),
        &[&long, &full_image, "running", "0.50", "512 MiB"],
    );
    assert_eq!(row, header[..5], "columns out of line:\n{out}");
    let short = starts(
        line_with(&out, "b "),
        &["b", "docker.io/tpcm-fixture/b:1", "running"],
    );
    assert_eq!(short, header[..3], "columns out of line:\n{out}");
    assert!(line_with(&out, "b ").contains(" 1.5 GiB "), "{out}");
    assert!(!out.contains("MB"), "memory in decimal units:\n{out}");

    let out = assert_ok(&tpcm(&cd, &["image", "list"]));
    let header = starts(line_with(&out, "NAME"), &["NAME", "DIGEST", "SIZE", "CREATED"]);
    let row = starts(line_with(&out, &full_image), &[&full_image, "sha256:"]);
    assert_eq!(row, header[..2], "columns out of line:\n{out}");
    let short = starts(
        line_with(&out, "docker.io/tpcm-fixture/b:1"),
        &["docker.io/tpcm-fixture/b:1", "sha256:"],
    );
    assert_eq!(short, header[..2], "columns out of line:\n{out}");
}

#[test]
fn an_upgrade_from_a_local_archive_imports_without_downloading() {
    let cd = Containerd::start();
    let v1 = archive(&cd, "v1.tar", "tpcm-fixture/app:1");
    assert_ok(&tpcm(
        &cd,
        &["install", "app", v1.to_str().unwrap(), "--args", SERVICE, "-y"],
    ));
    // Another image (one more layer), so the upgrade has something to do.
    let mut spec = builder::busybox_image(&["tpcm-fixture/app:2"]);
    spec.layers.push(builder::Layer::new(vec![
        builder::Entry::dir("etc", 0o755),
        builder::Entry::file("etc/version", 0o644, "2\n".to_string()),
    ]));
    let v2 = cd.dir().join("v2.tar");
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &v2).unwrap();
    let out = assert_ok(&tpcm(
        &cd,
        &["upgrade", "app", v2.to_str().unwrap(), "--grace", "0", "-y"],
    ));
    assert!(out.contains("Importing the new TPC-app image"), "{out}");
    assert!(!out.contains("Downloading"), "{out}");
}
