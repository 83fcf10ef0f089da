//! Import benchmark: `tpcm image import` (durable: it syncs what it unpacked before naming the
//! image) against `ctr images import` and Debian docker.io's `docker load` of the same
//! docker-save archive, each into a freshly started, empty daemon, in turns, in one run. The same
//! run measures the physical limit on this machine (GNU tar extracting the archive's layers one
//! after the other, then `sync`) and tpcm without its sync (the cost of durability). Reports
//! medians, ratios and tpcm's peak RSS. Not a test: nothing here asserts a time.
//!
//! Run: `cargo bench --bench import` (as root; see docs/performance.md).
//! Knobs: `TPCM_BENCH_MB` (archive payload, default 300), `TPCM_BENCH_RUNS` (per tool, default 3),
//! `TPCM_BENCH_GZIP=1` (gzip layers), `TPCM_BENCH_SRC` (`:`-separated directories the files come
//! from, default `/usr/share/locale:/usr/bin`: thousands of small files), `TPCM_BENCH_ARCHIVE`
//! (keep the archive at this path, or reuse it if it exists), `TPCM_BENCH_DOCKER=0` (skip docker).

#[path = "../fixtures/builder.rs"]
mod builder;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{build_archive_from, cold_cache, env_or, median, timed};

/// A private dockerd (its own data root, exec root and socket), stopped on drop.
struct Dockerd {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    child: Child,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        let dir = tempfile::Builder::new()
            .prefix("tpcm-bench-docker-")
            .tempdir()
            .ok()?;
        let sock = dir.path().join("docker.sock");
        let child = Command::new("/usr/sbin/dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            .args([
                "--containerd-namespace",
                "tpcm-bench",
                "--containerd-plugins-namespace",
                "tpcm-bench-p",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let d = Dockerd {
            _dir: dir,
            sock,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if d.docker()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("/usr/bin/docker");
        c.arg("-H").arg(format!("unix://{}", self.sock.display()));
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        // Mounts dockerd left under its directories (overlay2) go before the directory does.
        let root = self._dir.path().display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| m.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
    }
}

/// The archive's layer tars, unpacked once (untimed) for the physical-limit runs.
fn layer_tars(archive: &Path, into: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(into).unwrap();
    let ok = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cannot unpack the bench archive");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(into.join("manifest.json")).unwrap()).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| into.join(l.as_str().unwrap()))
        .collect()
}

/// GNU tar extracting each layer into its own directory, one after the other, then `sync`:
/// what any unpacker has to do at least (no hashing, no content store).
fn physical(layers: &[PathBuf], dest: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(dest);
    let start = Instant::now();
    for (i, l) in layers.iter().enumerate() {
        let d = dest.join(i.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let ok = Command::new("tar")
            .arg("-xf")
            .arg(l)
            .arg("-C")
            .arg(&d)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar -x {} failed", l.display());
    }
    assert!(Command::new("sync").status().unwrap().success());
    let t = start.elapsed();
    let _ = std::fs::remove_dir_all(dest);
    t
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
    let with_docker = env_or("TPCM_BENCH_DOCKER", 1u8) == 1;
    let srcs: Vec<PathBuf> = env_or("TPCM_BENCH_SRC", "/usr/share/locale:/usr/bin".to_string())
        .split(':')
        .map(PathBuf::from)
        .collect();
    let work = tempfile::tempdir().expect("tempdir");
    // TPCM_BENCH_ARCHIVE keeps the archive for profiling: built there once, reused after.
    let archive = match std::env::var_os("TPCM_BENCH_ARCHIVE").map(PathBuf::from) {
        Some(p) if p.exists() => p,
        Some(p) => {
            let built = build_archive_from(work.path(), mb, gzip, &srcs);
            std::fs::copy(&built, &p).expect("keep the bench archive");
            p
        }
        None => build_archive_from(work.path(), mb, gzip, &srcs),
    };
    let size = std::fs::metadata(&archive).unwrap().len();
    let layers = layer_tars(&archive, &work.path().join("layers"));
    let files: usize = layers
        .iter()
        .map(|l| {
            let out = Command::new("tar").arg("-tf").arg(l).output().unwrap();
            out.stdout
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
        })
        .sum();
    let tpcm = env!("CARGO_BIN_EXE_tpcm");
    println!(
        "import benchmark: {} MB docker-save archive, {} layers, {files} entries ({}), {runs} runs each",
        size / 1_000_000,
        layers.len(),
        if gzip { "gzip" } else { "uncompressed" }
    );
    let mut times: [Vec<Duration>; 5] = Default::default();
    let (mut rss, mut cold) = (0i64, true);
    let import = |cd: &common::Containerd, sync: bool| {
        timed(
            Command::new(tpcm)
                .env("TPCM_CONTAINERD", cd.socket())
                .env("TPCM_NAMESPACE", cd.namespace())
                .env("TPCM_IMPORT_SYNC", if sync { "1" } else { "0" })
                .args(["image", "import"])
                .arg(&archive),
        )
    };
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
        times[0].push(t);
        drop(cd);

        let cd = common::Containerd::start();
        cold &= cold_cache();
        let (t, peak) = import(&cd, true);
        times[1].push(t);
        rss = rss.max(peak);
        drop(cd);

        let cd = common::Containerd::start();
        cold &= cold_cache();
        times[2].push(import(&cd, false).0);
        drop(cd);

        cold &= cold_cache();
        times[3].push(physical(&layers, &work.path().join("untar")));

        if with_docker && let Some(d) = Dockerd::start() {
            cold &= cold_cache();
            let (t, _) = timed(d.docker().arg("load").arg("-i").arg(&archive));
            times[4].push(t);
        }
    }
    let names = [
        "ctr images import",
        "tpcm image import (durable)",
        "tpcm image import (no sync)",
        "physical limit (tar -x + sync)",
        "docker load",
    ];
    let tpcm_median = median(times[1].clone()).as_secs_f64();
    for (name, t) in names.iter().zip(&times) {
        if t.is_empty() {
            println!("{name:32}: not run");
            continue;
        }
        let m = median(t.clone()).as_secs_f64();
        println!(
            "{name:32}: median {m:.2} s  ({:.2}x tpcm's time; runs: {t:.2?})",
            m / tpcm_median
        );
    }
    println!("tpcm peak RSS                   : {} MiB", rss / 1024);
    println!("page cache dropped before each run: {cold}");
}
