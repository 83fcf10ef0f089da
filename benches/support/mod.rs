//! What the benchmarks share: the payload image they build from files on this host, running a
//! command for its wall time and peak RSS, dropping the page cache, medians. Include with
//! `#[path = "support/mod.rs"] mod support;` next to `builder` (fixtures/builder.rs).
#![allow(dead_code)]

use super::builder;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Regular files under `src`, sorted, until `budget` bytes are collected (files over 64 MiB are
/// skipped so the layers stay a mix of sizes, as real images are).
pub fn collect_files(src: &Path, budget: u64) -> Vec<(PathBuf, u64)> {
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

/// [`build_archive`] from several directories: each gets an equal share of the budget, and what
/// one cannot fill passes to the next (so `/usr/share/locale:/usr/bin` gives all the small
/// locale files and binaries for the rest).
pub fn build_archive_from(dir: &Path, mb: u64, gzip: bool, srcs: &[PathBuf]) -> PathBuf {
    let mut files = Vec::new();
    let mut left = mb << 20;
    for (i, src) in srcs.iter().enumerate() {
        let share = left / (srcs.len() - i) as u64;
        let got = collect_files(src, share);
        left -= got.iter().map(|f| f.1).sum::<u64>().min(left);
        files.extend(got);
    }
    archive_of(dir, files, gzip)
}

pub fn build_archive(dir: &Path, mb: u64, gzip: bool, src: &Path) -> PathBuf {
    archive_of(dir, collect_files(src, mb << 20), gzip)
}

fn archive_of(dir: &Path, files: Vec<(PathBuf, u64)>, gzip: bool) -> PathBuf {
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
pub fn timed(cmd: &mut Command) -> (Duration, i64) {
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
pub fn cold_cache() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
