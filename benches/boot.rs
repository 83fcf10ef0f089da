//! Boot-restore benchmark: 20 small TPCs (`TPCM_BENCH_TPCS`), saved with `tpcm migrate save`,
//! restored by `tpcm boot` into a second, empty containerd (a SONiC image upgrade), and, in the
//! same run, started again by `tpcm boot` after a simulated reboot (every task killed and
//! deleted). Reports the time from `tpcm boot` to all TPCs running (boot returns once every task
//! it starts runs). Not a test: nothing here asserts a time.
//!
//! Run: `cargo bench --bench boot` (as root; see docs/performance.md).

#[path = "../fixtures/builder.rs"]
mod builder;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::time::Instant;
use support::env_or;

const SERVICE: &str = "-- /bin/sh -c 'echo state > /etc/state; trap \"exit 0\" TERM; sleep 100000 & wait'";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("boot benchmark skipped: run it with `cargo bench --bench boot`");
        return;
    }
    let n: usize = env_or("TPCM_BENCH_TPCS", 20);
    let old = common::Containerd::start();
    let archive = old.dir().join("app.tar");
    builder::write_archive(
        &builder::busybox_image(&["tpcm-bench/app:1"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &archive,
    )
    .expect("fixture");
    let names: Vec<String> = (0..n).map(|i| format!("tpc{i}")).collect();
    for name in &names {
        common::assert_ok(&common::tpcm(
            &old,
            &[
                "install",
                name,
                archive.to_str().unwrap(),
                "--args",
                SERVICE,
                "-y",
            ],
        ));
    }
    let all_running =
        |cd: &common::Containerd| cd.tasks().iter().filter(|(_, _, s)| s == "RUNNING").count() == n;

    // A reboot: every task gone, containerd's state kept.
    for name in &names {
        let _ = old.ctr(&["tasks", "kill", "--signal", "SIGKILL", name]);
    }
    common::wait_until(std::time::Duration::from_secs(60), "tasks to die", || {
        old.tasks().iter().all(|(_, _, s)| s != "RUNNING")
    });
    for name in &names {
        old.ctr_ok(&["tasks", "delete", name]);
    }
    let t = Instant::now();
    common::assert_ok(&common::tpcm(&old, &["boot"]));
    let reboot = t.elapsed();
    assert!(all_running(&old));

    // An image upgrade: save, then boot against an empty containerd with the same store.
    let t = Instant::now();
    common::assert_ok(&common::tpcm(&old, &["migrate", "save"]));
    let save = t.elapsed();
    let new = common::Containerd::start();
    let env = [
        ("TPCM_ROOT", old.store_dir().to_str().unwrap().to_string()),
        ("TPCM_DATA_ROOT", old.data_dir().to_str().unwrap().to_string()),
        (
            "TPCM_SYSTEMD_DIR",
            new.dir().join("units").to_str().unwrap().to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = Instant::now();
    common::assert_ok(&common::tpcm_env(&new, &["boot"], &env));
    let restore = t.elapsed();
    assert!(all_running(&new));
    println!("{n} TPCs, busybox image, 2 cores");
    println!(
        "tpcm boot after a reboot           : {:.2} s",
        reboot.as_secs_f64()
    );
    println!("tpcm migrate save                  : {:.2} s", save.as_secs_f64());
    println!(
        "tpcm boot restoring a migration    : {:.2} s",
        restore.as_secs_f64()
    );
}
