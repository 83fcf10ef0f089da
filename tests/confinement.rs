//! A TPC is confined at least as docker confines a default container, checked from inside real
//! containers with a probe built here (tests/support/confinement_probe.c, linked statically):
//! docker's seccomp profile (the calls behind known escapes are EPERM, and allowed again with
//! `--security-opt seccomp=unconfined`; a profile file of one's own and no-new-privileges take
//! effect), `/proc` mounted and masked as docker's, the host's keyring out of reach, an OOM score of 0
//! whatever containerd's is, the confinement flags (`--pids-limit`, `--read-only`, `--tmpfs`,
//! `--ulimit`, `--sysctl`, `--add-host`, `--dns`, `--init`, `--oom-score-adj`), docker's
//! `--privileged`, a UTS namespace of its own on the host network, and the smaller refusals.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_fails, assert_ok, tpcm};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);
const TAG: &str = "tpcm-fixture/probe:1";

/// The probe, compiled once per test binary.
fn probe_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("tpcm-probe-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("probe");
            let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/confinement_probe.c");
            let built = std::process::Command::new("cc")
                .args(["-static", "-O2", "-o"])
                .arg(&out)
                .arg(src)
                .output()
                .expect("cc (scripts/install-deps.sh installs a C toolchain)");
            assert!(built.status.success(), "cc: {}", common::describe(&built));
            out
        })
        .clone()
}

/// The busybox fixture with the probe at /probe.
fn archive(cd: &Containerd) -> PathBuf {
    let path = cd.dir().join("probe.tar");
    let mut image = builder::busybox_image(&[TAG]);
    image
        .layers
        .push(builder::Layer::new(vec![builder::Entry::host_file(
            "probe",
            0o755,
            probe_binary(),
        )]));
    builder::write_archive(&image, builder::ArchiveFormat::DockerV12, false, &path).unwrap();
    path
}

/// Installs TPC `name` running `script` (a shell command line) with `args`; the script's
/// output goes to `/tpc/out`, and the TPC keeps running afterwards.
fn install(cd: &Containerd, archive: &Path, name: &str, args: &str, script: &str) -> String {
    let full =
        format!("{args} -- /bin/sh -c '{{ {script}; }} > /tpc/out 2>&1; echo done >> /tpc/out; sleep 1000'");
    assert_ok(&tpcm(
        cd,
        &["install", name, archive.to_str().unwrap(), "--args", &full, "-y"],
    ));
    let out = cd.data_dir().join(name).join("out");
    common::wait_until(DEADLINE, &format!("{name} to finish its script"), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.ends_with("done\n"))
    });
    std::fs::read_to_string(&out).unwrap()
}

/// `name=errno` lines.
fn results(out: &str) -> BTreeMap<String, i32> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn pid_of(cd: &Containerd, name: &str) -> u32 {
    cd.tasks()
        .into_iter()
        .find(|(id, _, s)| id == name && s == "RUNNING")
        .map(|(_, pid, _)| pid)
        .expect("the TPC runs")
}

/// Adds a key to the host's root user keyring; revoked on drop.
struct HostKey(i64);

impl HostKey {
    fn add(description: &str) -> HostKey {
        let kind = std::ffi::CString::new("user").unwrap();
        let desc = std::ffi::CString::new(description).unwrap();
        // SAFETY: valid C strings and payload; KEY_SPEC_USER_KEYRING is -4.
        let id = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                kind.as_ptr(),
                desc.as_ptr(),
                b"host secret".as_ptr(),
                11usize,
                -4i32,
            )
        };
        assert!(id > 0, "add_key on the host: {}", std::io::Error::last_os_error());
        HostKey(id)
    }
}

impl Drop for HostKey {
    fn drop(&mut self) {
        // SAFETY: KEYCTL_REVOKE (3) of a key this test made.
        unsafe { libc::syscall(libc::SYS_keyctl, 3, self.0) };
    }
}

const EPERM: i32 = libc::EPERM;

#[test]
fn docker_seccomp_blocks_the_escape_calls_and_unconfined_allows_them() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let key = format!("tpcm-test-{}", std::process::id());
    let _host_key = HostKey::add(&key);
    let confined = results(&install(
        &cd,
        &archive,
        "confined",
        "",
        &format!("/probe calls {key}"),
    ));
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid_of(&cd, "confined"))).unwrap();
    assert!(
        status.contains("Seccomp:\t2"),
        "a seccomp filter is on:\n{status}"
    );
    for call in [
        "unshare_userns_mount",
        "unshare_user",
        "keyctl",
        "keyctl_search_host_key",
        "add_key",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "personality",
    ] {
        assert_eq!(
            confined.get(call),
            Some(&EPERM),
            "{call} in a default TPC: {confined:?}"
        );
    }

    let free = results(&install(
        &cd,
        &archive,
        "unconfined",
        "--security-opt seccomp=unconfined",
        &format!("/probe calls {key}"),
    ));
    // What the filter blocked now reaches the kernel: these succeed (or fail for the kernel's
    // own reasons, never seccomp's EPERM). The host's key is found: this is what the filter
    // keeps a default TPC from.
    for call in [
        "unshare_userns_mount",
        "unshare_user",
        "keyctl",
        "keyctl_search_host_key",
        "add_key",
        "userfaultfd",
        "personality",
    ] {
        assert_eq!(free.get(call), Some(&0), "{call} unconfined: {free:?}");
    }
    for call in ["perf_event_open", "io_uring_setup"] {
        assert_ne!(free.get(call), Some(&EPERM), "{call} unconfined: {free:?}");
    }
}

#[test]
fn a_tpc_gets_oom_score_0_whatever_containerds_is() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    // Debian's containerd unit gives containerd -999, which shims and, without an explicit
    // score, containers inherit. (This sandbox may not lower a score: a raised one shows the
    // same inheritance.)
    let containerd_score = if std::fs::write(format!("/proc/{}/oom_score_adj", cd.pid()), "-999").is_ok() {
        -999
    } else {
        std::fs::write(format!("/proc/{}/oom_score_adj", cd.pid()), "700").unwrap();
        700
    };
    assert_ne!(containerd_score, 0);
    let out = install(&cd, &archive, "app", "", "cat /proc/self/oom_score_adj");
    assert!(out.starts_with("0\n"), "{out}");
    let out = install(
        &cd,
        &archive,
        "low",
        "--oom-score-adj 500",
        "cat /proc/self/oom_score_adj",
    );
    assert!(out.starts_with("500\n"), "{out}");
    // Inherited limits, as docker: not oci-spec's 1024 open files.
    let out = install(&cd, &archive, "limits", "", "ulimit -Hn");
    let hard: u64 = out.lines().next().unwrap().trim().parse().unwrap_or(u64::MAX);
    let host: u64 = std::fs::read_to_string(format!("/proc/{}/limits", cd.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).and_then(|v| v.parse().ok()))
        .unwrap_or(u64::MAX);
    assert_eq!(hard, host, "the TPC's hard open-file limit is containerd's");
}

#[test]
fn the_confinement_flags_take_effect_inside() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let args = "--network none --pids-limit 20 --read-only --tmpfs /run:size=1m --ulimit nofile=100:200 \
                --sysctl kernel.shmmax=123456 --add-host db.lab:10.9.8.7 --dns 10.1.1.1 --dns-search lab \
                --shm-size 8m --init";
    let script = "/probe forks 50; echo x > /ro 2>&1 || echo root-read-only; echo y > /tpc/w && echo tpc-writable; \
                  grep \" /run tmpfs\" /proc/mounts; ulimit -Sn; ulimit -Hn; cat /proc/sys/kernel/shmmax; \
                  cat /etc/hosts; cat /etc/resolv.conf; grep \" /dev/shm \" /proc/mounts; cat /proc/1/cmdline | tr \"\\0\" \" \"; echo";
    let out = install(&cd, &archive, "flags", args, script);
    let forked: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("forked="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(forked < 50, "--pids-limit 20 stops forks: {out}");
    assert_eq!(
        std::fs::read_to_string(cd.cgroup_file("pids", "flags", "pids.max"))
            .unwrap()
            .trim(),
        "20"
    );
    assert!(
        out.contains("root-read-only") && out.contains("tpc-writable"),
        "{out}"
    );
    assert!(
        out.contains(" /run tmpfs ") && out.contains("size=1024k"),
        "{out}"
    );
    assert!(out.contains("\n100\n200\n"), "soft and hard open files: {out}");
    assert!(out.contains("123456"), "{out}");
    assert!(out.contains("10.9.8.7\tdb.lab"), "{out}");
    assert!(
        out.contains("nameserver 10.1.1.1") && out.contains("search lab"),
        "{out}"
    );
    assert!(out.contains("size=8192k"), "/dev/shm: {out}");
    assert!(
        out.contains("/sbin/docker-init -- /bin/sh"),
        "PID 1 is the init: {out}"
    );
}

#[test]
fn a_custom_seccomp_profile_no_new_privileges_and_the_default_mounts_take_effect_inside() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    // A profile in docker's format that refuses mkdir and nothing else.
    let profile = cd.dir().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let script = "mkdir /tmp/made && echo mkdir-allowed || echo mkdir-refused; \
                  grep -E \"^(NoNewPrivs|Seccomp):\" /proc/self/status";
    let custom = install(
        &cd,
        &archive,
        "custom",
        &format!(
            "--security-opt seccomp={} --security-opt no-new-privileges",
            profile.display()
        ),
        script,
    );
    assert!(custom.contains("mkdir-refused"), "{custom}");
    assert!(
        custom.contains("NoNewPrivs:\t1") && custom.contains("Seccomp:\t2"),
        "{custom}"
    );
    // Without them: docker's profile, which allows mkdir, and privileges may be gained.
    let default = install(
        &cd,
        &archive,
        "default",
        "",
        &format!(
            "{script}; grep \" /proc proc \" /proc/mounts; \
             echo interrupts=$(wc -c < /proc/interrupts)"
        ),
    );
    assert!(default.contains("mkdir-allowed"), "{default}");
    assert!(default.contains("NoNewPrivs:\t0"), "{default}");
    // /proc as docker mounts it, and /proc/interrupts masked (the host's is not empty).
    let proc_line = default
        .lines()
        .find(|l| l.contains(" /proc proc "))
        .unwrap_or_else(|| panic!("no /proc mount: {default}"));
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(proc_line.contains(flag), "{flag}: {proc_line}");
    }
    assert!(!std::fs::read_to_string("/proc/interrupts").unwrap().is_empty());
    assert!(default.contains("interrupts=0"), "{default}");
}

#[test]
fn privileged_sees_host_devices_and_a_default_tpc_does_not() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    // A device node of the host that is not among a container's standard ones.
    let device = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            use std::os::unix::fs::FileTypeExt;
            std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_block_device())
        })
        .expect("a block device on the host");
    let dev = device.display().to_string();
    let script = format!(
        "ls {dev} && echo seen; cat /proc/self/status | grep Seccomp; touch /sys/kernel/x 2>&1; \
                          grep \" /sys sysfs\" /proc/mounts"
    );
    let privileged = install(&cd, &archive, "priv", "--privileged", &script);
    assert!(privileged.contains("seen"), "{privileged}");
    assert!(privileged.contains("Seccomp:\t0"), "{privileged}");
    assert!(privileged.contains(" /sys sysfs rw,"), "{privileged}");
    let default = install(&cd, &archive, "plain", "", &script);
    assert!(!default.contains("seen"), "{default}");
    assert!(
        default.contains("Seccomp:\t2") && default.contains(" /sys sysfs ro,"),
        "{default}"
    );
}

#[test]
fn a_host_network_tpc_has_its_own_host_name() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // With CAP_SYS_ADMIN it tries to rename the switch once told to (/tpc/go), after this test
    // has made sure it is in a UTS namespace of its own.
    let script = "-- /bin/sh -c 'hostname > /tpc/before; while [ ! -f /tpc/go ]; do sleep 0.1; done; \
                  hostname renamed-by-tpc; hostname > /tpc/after; sleep 1000'";
    assert_ok(&tpcm(
        &cd,
        &[
            "install",
            "uts",
            archive.to_str().unwrap(),
            "--args",
            &format!("--cap-add SYS_ADMIN {script}"),
            "-y",
        ],
    ));
    let data = cd.data_dir().join("uts");
    let written = |f: &str| std::fs::read_to_string(data.join(f)).is_ok_and(|s| s.ends_with('\n'));
    common::wait_until(DEADLINE, "the TPC's host name", || written("before"));
    assert_eq!(
        std::fs::read_to_string(data.join("before")).unwrap(),
        host,
        "the host's name"
    );
    let pid = pid_of(&cd, "uts");
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/uts")).unwrap(),
        std::fs::read_link("/proc/self/ns/uts").unwrap(),
        "a UTS namespace of its own"
    );
    std::fs::write(data.join("go"), "").unwrap();
    common::wait_until(DEADLINE, "the rename", || written("after"));
    assert_eq!(
        std::fs::read_to_string(data.join("after")).unwrap(),
        "renamed-by-tpc\n"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
    // --uts host shares it (not renamed here: that would rename the test machine).
    install(&cd, &archive, "shared", "--uts host", "hostname");
    let pid = pid_of(&cd, "shared");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/uts")).unwrap(),
        std::fs::read_link("/proc/self/ns/uts").unwrap()
    );
}

#[test]
fn the_stop_signal_is_sent() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    // Ignores SIGTERM: only SIGUSR1 ends it (else the stop would wait 30 s and kill it).
    let script = "--stop-signal SIGUSR1 --stop-timeout 30 -- /bin/sh -c 'trap \"echo usr1 > /tpc/sig; exit 0\" USR1; \
                  trap \"\" TERM; touch /tpc/ready; sleep 1000 & wait'";
    assert_ok(&tpcm(
        &cd,
        &[
            "install",
            "sig",
            archive.to_str().unwrap(),
            "--args",
            script,
            "-y",
        ],
    ));
    let data = cd.data_dir().join("sig");
    common::wait_until(DEADLINE, "the TPC to set its traps", || {
        data.join("ready").exists()
    });
    assert_ok(&tpcm(&cd, &["stop", "sig"]));
    assert_eq!(std::fs::read_to_string(data.join("sig")).unwrap(), "usr1\n");
    let unit = std::fs::read_to_string(cd.units_dir().join("tpc-sig.service")).unwrap();
    assert!(unit.contains("TimeoutStopSec=50\n"), "{unit}");
}

#[test]
fn the_smaller_refusals_leave_nothing() {
    let cd = Containerd::start();
    let archive = archive(&cd);
    let env_with_nul = cd.dir().join("nul.env");
    std::fs::write(&env_with_nul, b"A=x\0y\n").unwrap();
    for (args, says) in [
        ("-l io.tpcm.network.ports=[]", "tpcm's own"),
        ("-l 'a\nb=1'", "control character"),
        ("-l 'a b=1'", "whitespace"),
        (&*format!("--env-file {}", env_with_nul.display()), "NUL"),
        ("--init=maybe", "true or false"),
        ("--security-opt seccomp=/nonexistent", "No such file"),
        ("--ipc host", "docker's --ipc is not supported by tpcm"),
    ] {
        let err = assert_fails(&tpcm(
            &cd,
            &["install", "x", archive.to_str().unwrap(), "--args", args, "-y"],
        ));
        assert!(err.contains(says), "{args}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A file named by mistake as an env file is not echoed.
    let secrets = cd.dir().join("secrets.txt");
    std::fs::write(&secrets, "the password is hunter2\n").unwrap();
    let err = assert_fails(&tpcm(
        &cd,
        &[
            "install",
            "x",
            archive.to_str().unwrap(),
            "--args",
            &format!("--env-file {}", secrets.display()),
            "-y",
        ],
    ));
    assert!(err.contains("line 1") && !err.contains("hunter2"), "{err}");
    // A risky tpcm.toml value is refused with the reason, before anything is made.
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(
        cd.store_dir().join("tpcm.toml"),
        "bridge_subnet = \"127.0.0.0/16\"\n",
    )
    .unwrap();
    let err = assert_fails(&tpcm(&cd, &["install", "x", archive.to_str().unwrap(), "-y"]));
    assert!(err.contains("loopback"), "{err}");
    std::fs::remove_file(cd.store_dir().join("tpcm.toml")).unwrap();
    assert!(cd.images().is_empty() && cd.containers().is_empty());

    // An uninstall leaves no lock file behind, and neither do a command on a name that is not
    // installed, an install refused before it made anything, or one taken back.
    install(&cd, &archive, "app", "", "true");
    assert!(cd.store_dir().join("locks/app.lock").exists());
    assert_ok(&tpcm(&cd, &["uninstall", "app", "-y"]));
    assert!(!cd.store_dir().join("locks/app.lock").exists());
    assert_fails(&tpcm(&cd, &["stop", "typo"]));
    let missing = cd.dir().join("no-such-archive.tar");
    assert_fails(&tpcm(&cd, &["install", "gone", missing.to_str().unwrap(), "-y"]));
    let err = assert_fails(&tpcm(
        &cd,
        &[
            "install",
            "broken",
            archive.to_str().unwrap(),
            "--args",
            "-- /no/such/command",
            "-y",
        ],
    ));
    assert!(err.contains("/no/such/command"), "{err}");
    let locks: Vec<_> = std::fs::read_dir(cd.store_dir().join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with('_'))
        .collect();
    assert!(locks.is_empty(), "lock files left: {locks:?}");
}
