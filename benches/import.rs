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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Regular files under `src`, sorted, until `budget` bytes are collected (files over 64 MiB are
/// skipped so the layers stay a mix of sizes, as real images are).
fn collect_files(src: &Path, budget: u64) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                if len > 64 << 20 || std::fs::File::open(e.path()).is_err() {
                    continue;
                }
                total += len;
                out.push((e.path(), len));
                if total >= budget {
                    return out;
                }
            }
        }
    }
    out
}

fn build_archive(dir: &Path, mb: u64, gzip: bool, src: &Path) -> PathBuf {
    let files = collect_files(src, mb << 20);
    let total: u64 = files.iter().map(|f| f.1).sum();
    let per_layer = total / 3 + 1;
    let mut layers = vec![builder::Layer { entries: vec![] }];
    let mut in_layer = 0u64;
    for (path, len) in files {
        if in_layer >= per_layer && layers.len() < 3 {
            layers.push(builder::Layer { entries: vec![] });
            in_layer = 0;
        }
        let rel = path
            .strip_prefix("/")
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        layers.last_mut().unwrap().entries.push(builder::Entry::HostFile {
            path: rel,
            mode: 0o644,
            src: path,
        });
        in_layer += len;
    }
    let mut spec = builder::busybox_image(&["tpcm-bench/payload:1"]);
    spec.layers.extend(layers);
    spec.gzip_layers = gzip;
    let out = dir.join("bench.tar");
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &out)
        .expect("build bench archive");
    out
}

/// Runs a command, returning its wall time and peak RSS (KiB) from wait4.
fn timed(cmd: &mut Command) -> (Duration, i64) {
    let start = Instant::now();
    let child = cmd.stdout(std::process::Stdio::null()).spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `usage` is a valid out-pointer.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: status {status}"
    );
    std::mem::forget(child);
    (elapsed, usage.ru_maxrss)
}

/// Flushes dirty pages and drops the page cache so each run starts cold. Returns whether the
/// cache could be dropped (not in every sandbox).
fn cold_cache() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

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
