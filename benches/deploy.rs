//! Deploy benchmark (containerz): a gNOI Deploy of a docker-save archive through `tpcm serve`
//! over mutual TLS on loopback, against `tpcm image import` of the same archive, each into a
//! freshly started, empty containerd, alternating, in one run. Reports medians and their ratio
//! (target: Deploy ≥ 0.8× the local import's speed). Not a test: nothing here asserts a time.
//!
//! Run: `cargo bench --bench deploy` (as root; see docs/performance.md).
//! Knobs: `TPCM_BENCH_MB` (archive payload, default 300), `TPCM_BENCH_RUNS` (per side, default 3),
//! `TPCM_BENCH_SRC` (directory the files come from, default /usr).

#[path = "../fixtures/builder.rs"]
mod builder;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/gnoi.rs"]
mod gnoi;
#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Instant;
use support::{build_archive, cold_cache, env_or, median, timed};

fn main() {
    // `cargo test --all-targets` also runs harness-less benches; only `cargo bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        println!("deploy benchmark skipped: run it with `cargo bench --bench deploy`");
        return;
    }
    let mb: u64 = env_or("TPCM_BENCH_MB", 300);
    let runs: usize = env_or("TPCM_BENCH_RUNS", 3);
    let src: PathBuf = env_or("TPCM_BENCH_SRC", PathBuf::from("/usr"));
    let work = tempfile::tempdir().expect("tempdir");
    let archive = build_archive(work.path(), mb, false, &src);
    let size = std::fs::metadata(&archive).unwrap().len();
    let pki = work.path().join("pki");
    gnoi::Pki::new(&pki, &["ops-robot"]);
    println!(
        "deploy benchmark: {} MB docker-save archive, {runs} runs each",
        size / 1_000_000
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut deploys, mut imports) = (Vec::new(), Vec::new());
    let mut cold = true;
    for _ in 0..runs {
        let cd = common::Containerd::start();
        cold &= cold_cache();
        let (t, _) = timed(
            common::tpcm_cmd(&cd)
                .args(["image", "import", "--tag", "bench:1"])
                .arg(&archive),
        );
        imports.push(t);
        drop(cd);

        let cd = common::Containerd::start();
        let server = gnoi::Server::start_with(&cd, &pki, &[]);
        cold &= cold_cache();
        let t = rt.block_on(async {
            let mut client = server.client("ops-robot").await.expect("connect");
            let start = Instant::now();
            gnoi::deploy(&mut client, &archive, "bench", "1", None)
                .await
                .expect("deploy");
            start.elapsed()
        });
        deploys.push(t);
        drop(server);
        drop(cd);
    }
    let (d, i) = (median(deploys.clone()), median(imports.clone()));
    println!(
        "tpcm image import : median {:.2} s  (runs: {imports:.2?})",
        i.as_secs_f64()
    );
    println!(
        "gNOI Deploy       : median {:.2} s  (runs: {deploys:.2?})",
        d.as_secs_f64()
    );
    println!(
        "speed Deploy/import: {:.2}x (target >= 0.8x)",
        i.as_secs_f64() / d.as_secs_f64()
    );
    println!("page cache dropped before each run: {cold}");
}
