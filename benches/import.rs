//! Import benchmark: `tpcm image import` against `ctr images import` of the same archive, each
//! into a freshly started, empty containerd, alternating, in one run. Reports medians, their
//! ratio and tpcm's peak RSS. Not a test: nothing here asserts a time.
//!
//! Run: `cargo bench --bench import` (as root; see docs/performance.md).
//! Knobs: `TPCM_BENCH_MB` (archive payload, default 300), `TPCM_BENCH_RUNS` (per tool, default 3),
//! `TPCM_BENCH_GZIP=1` (gzip layers), `TPCM_BENCH_SRC` (directory the files come from, default /usr),
//! `TPCM_BENCH_ARCHIVE` (keep the archive at this path, or reuse it if it exists).

#[path = "../fixtures/builder.rs"]
mod builder;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use support::{build_archive, cold_cache, env_or, median, timed};

fn main() {
    // `cargo test --all-targets` also runs harness-less benches; only `cargo bench` (which passes
    // `--bench`) should spend minutes measuring.
    if !std::env::args().any(|a| a == "--bench") {
        println!("import benchmark skipped: run it with `cargo bench --bench import`");
        return;
    }
    let mb: u64 = env_or("TPCM_BENCH_MB", 300);
    let runs: usize = env_or("TPCM_BENCH_RUNS", 3);
    let gzip = env_or("TPCM_BENCH_GZIP", 0u8) == 1;
    let src: PathBuf = env_or("TPCM_BENCH_SRC", PathBuf::from("/usr"));
    let work = tempfile::tempdir().expect("tempdir");
    // TPCM_BENCH_ARCHIVE keeps the archive for profiling: built there once, reused after.
    let archive = match std::env::var_os("TPCM_BENCH_ARCHIVE").map(PathBuf::from) {
        Some(p) if p.exists() => p,
        Some(p) => {
            let built = build_archive(work.path(), mb, gzip, &src);
            std::fs::copy(&built, &p).expect("keep the bench archive");
            p
        }
        None => build_archive(work.path(), mb, gzip, &src),
    };
    let size = std::fs::metadata(&archive).unwrap().len();
    let tpcm = env!("CARGO_BIN_EXE_tpcm");
    println!(
        "import benchmark: {} MB docker-save archive, 4 layers ({}), {runs} runs each",
        size / 1_000_000,
        if gzip { "gzip" } else { "uncompressed" }
    );
    let (mut ours, mut theirs, mut rss) = (Vec::new(), Vec::new(), 0i64);
    let mut cold = true;
    for _ in 0..runs {
        let cd = common::Containerd::start();
        cold &= cold_cache();
        let (t, _) = timed(
            Command::new("ctr")
                .args(["-a"])
                .arg(cd.socket())
                .args(["-n", cd.namespace(), "images", "import"])
                .arg(&archive),
        );
        theirs.push(t);
        drop(cd);

        let cd = common::Containerd::start();
        cold &= cold_cache();
        let (t, peak) = timed(
            Command::new(tpcm)
                .env("TPCM_CONTAINERD", cd.socket())
                .env("TPCM_NAMESPACE", cd.namespace())
                .args(["image", "import"])
                .arg(&archive),
        );
        ours.push(t);
        rss = rss.max(peak);
        drop(cd);
    }
    let (o, t) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "ctr images import : median {:.2} s  (runs: {theirs:.2?})",
        t.as_secs_f64()
    );
    println!(
        "tpcm image import : median {:.2} s  (runs: {ours:.2?})",
        o.as_secs_f64()
    );
    println!("ratio ctr/tpcm    : {:.2}x", t.as_secs_f64() / o.as_secs_f64());
    println!("tpcm peak RSS     : {} MiB", rss / 1024);
    println!("page cache dropped before each run: {cold}");
}
