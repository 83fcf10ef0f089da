//! Registry pull benchmark: `tpcm image import <ref>` against `ctr images pull --plain-http` of the
//! same reference (both fetch and unpack), from a private distribution registry on 127.0.0.1, each
//! into a freshly started, empty containerd, alternating, in one run. The image is pushed with
//! skopeo twice: layers gzip'd (as `docker push` stores them) and zstd'd (OCI `+zstd`), so the run
//! also compares zstd with gzip pulls. Reports medians, their ratios and tpcm's peak RSS. Not a
//! test: nothing here asserts a time.
//!
//! Run: `cargo bench --bench pull` (as root; see docs/performance.md).
//! Knobs: `TPCM_BENCH_MB` (uncompressed payload, default 1000), `TPCM_BENCH_RUNS` (per tool,
//! default 3), `TPCM_BENCH_SRC` (directory the files come from, default /usr).

#[path = "../fixtures/builder.rs"]
mod builder;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/registry.rs"]
mod registry;
#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use support::{build_archive, cold_cache, env_or, median, timed};

fn main() {
    // `cargo test --all-targets` also runs harness-less benches; only `cargo bench` (which passes
    // `--bench`) should spend minutes measuring.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pull benchmark skipped: run it with `cargo bench --bench pull`");
        return;
    }
    let mb: u64 = env_or("TPCM_BENCH_MB", 1000);
    let runs: usize = env_or("TPCM_BENCH_RUNS", 3);
    let src: PathBuf = env_or("TPCM_BENCH_SRC", PathBuf::from("/usr"));
    let work = tempfile::tempdir().expect("tempdir");
    let archive = build_archive(work.path(), mb, false, &src);
    let reg = registry::Registry::start(None);
    reg.push("docker-archive", &archive, "bench/payload:1");
    reg.push_with(
        "docker-archive",
        &archive,
        "bench/payload:zstd",
        &["--format", "oci", "--dest-compress-format", "zstd"],
    );
    std::fs::remove_file(&archive).expect("remove the bench archive");
    let mut medians = Vec::new();
    for (tag, what) in [("1", "gzip"), ("zstd", "zstd")] {
        let reference = reg.reference(&format!("bench/payload:{tag}"));
        let (_, manifest) = reg.manifest("bench/payload", tag);
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest json");
        let layers = manifest["layers"].as_array().expect("layers");
        let compressed: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap_or(0)).sum();
        println!(
            "pull benchmark: {reference}, {} layers, {} MB {what} ({mb} MB of files), {runs} runs each",
            layers.len(),
            compressed / 1_000_000
        );
        let (o, t) = compare(&reference, runs);
        medians.push((what, o, t));
    }
    if let [(_, gz, gz_ctr), (_, zs, zs_ctr)] = medians.as_slice() {
        println!(
            "zstd/gzip pull time: tpcm {:.2}x, ctr {:.2}x",
            zs.as_secs_f64() / gz.as_secs_f64(),
            zs_ctr.as_secs_f64() / gz_ctr.as_secs_f64()
        );
    }
}

/// Alternates ctr's and tpcm's pull of `reference`; returns the medians (tpcm, ctr).
fn compare(reference: &str, runs: usize) -> (std::time::Duration, std::time::Duration) {
    let tpcm = env!("CARGO_BIN_EXE_tpcm");
    let (mut ours, mut theirs, mut rss) = (Vec::new(), Vec::new(), 0i64);
    let mut cold = true;
    for _ in 0..runs {
        let cd = common::Containerd::start();
        cold &= cold_cache();
        let (t, _) = timed(Command::new("ctr").args(["-a"]).arg(cd.socket()).args([
            "-n",
            cd.namespace(),
            "images",
            "pull",
            "--plain-http",
            reference,
        ]));
        theirs.push(t);
        drop(cd);

        let cd = common::Containerd::start();
        cold &= cold_cache();
        let (t, peak) = timed(
            Command::new(tpcm)
                .env("TPCM_CONTAINERD", cd.socket())
                .env("TPCM_NAMESPACE", cd.namespace())
                .args(["image", "import", reference]),
        );
        ours.push(t);
        rss = rss.max(peak);
        drop(cd);
    }
    let (o, t) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "  ctr images pull   : median {:.2} s  (runs: {theirs:.2?})",
        t.as_secs_f64()
    );
    println!(
        "  tpcm image import : median {:.2} s  (runs: {ours:.2?})",
        o.as_secs_f64()
    );
    println!("  ratio ctr/tpcm    : {:.2}x", t.as_secs_f64() / o.as_secs_f64());
    println!("  tpcm peak RSS     : {} MiB", rss / 1024);
    println!("  page cache dropped before each run: {cold}");
    (o, t)
}
