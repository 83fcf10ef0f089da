//! Integration-test harness: a private containerd per test (or per test binary), the `tpcm` binary
//! wired to it through the `TPCM_*` environment, and polling/assertion helpers.
//!
//! Use from `tests/*.rs` with `mod common;`. Tests need root (containerd, overlay mounts, cgroups);
//! `scripts/test.sh` checks that and installs the Debian packages first.
//!
//! Every wait has a deadline; nothing synchronises by sleeping a fixed time.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long containerd may take to answer after being started.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Default limit for one `tpcm` / `ctr` invocation.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(180);
/// How often polling loops look again.
pub const POLL: Duration = Duration::from_millis(50);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private containerd instance living in a temp dir, stopped and cleaned up on drop.
pub struct Containerd {
    tmp: Option<tempfile::TempDir>,
    base: PathBuf,
    sock: PathBuf,
    ns: String,
    work: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Panics unless we run as root (containerd, mounts and cgroups need it).
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("integration tests drive a real containerd and need root: run scripts/test.sh as root");
    }
}

impl Containerd {
    /// Starts containerd with its own root, state, temp dir and socket under a fresh temp dir and
    /// waits (≤ [`START_TIMEOUT`]) until `ctr version` answers.
    pub fn start() -> Containerd {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("tpcm-cd-")
            .tempdir()
            .expect("cannot create a temp dir for containerd");
        let base = fs::canonicalize(tmp.path()).expect("canonicalize temp dir");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = format!("t-{}-{}", std::process::id(), n);
        let sock = base.join("containerd.sock");
        let work = base.join("work");
        let log = base.join("containerd.log");
        for d in ["root", "state", "tmp", "work", "work/units"] {
            fs::create_dir_all(base.join(d)).expect("create containerd dirs");
        }
        let config = base.join("config.toml");
        fs::write(&config, containerd_config(&base)).expect("write containerd config");
        let logf = fs::File::create(&log).expect("create containerd log");
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log fd"))
            .stderr(logf);
        // Signals the suite's own starter ignored (a background job ignores SIGINT and SIGQUIT,
        // nohup SIGHUP) would stay ignored in every shim and container process, whose shells
        // then cannot even trap them: containers get what a switch's systemd gives them.
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start containerd ({e}): run scripts/install-deps.sh (Debian containerd, runc)")
        });
        let mut cd = Containerd {
            tmp: Some(tmp),
            base,
            sock,
            ns,
            work,
            log,
            child: Some(child),
        };
        cd.wait_ready();
        cd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "containerd exited during start-up ({status})\n{}",
                    self.log_tail(60)
                );
            }
            if self.sock.exists() {
                let out = run_with_timeout(
                    Command::new("ctr").arg("-a").arg(&self.sock).arg("version"),
                    Duration::from_secs(5),
                );
                if out.status.success() {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "containerd did not answer on {} within {START_TIMEOUT:?}\n{}",
                    self.sock.display(),
                    self.log_tail(60)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The gRPC socket (what `TPCM_CONTAINERD` / `--containerd` take).
    pub fn socket(&self) -> PathBuf {
        self.sock.clone()
    }

    /// containerd's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("containerd runs").id()
    }

    /// A namespace unique to this instance (`t-<pid>-<n>`).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Scratch dir for the test. `tpcm()` uses `store/` (TPCM_ROOT), `data/` (TPCM_DATA_ROOT) and
    /// `units/` (TPCM_SYSTEMD_DIR) under it; only `units/` exists beforehand (like
    /// /etc/systemd/system on a switch), tpcm must create the others.
    pub fn dir(&self) -> &Path {
        &self.work
    }
    pub fn store_dir(&self) -> PathBuf {
        self.work.join("store")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.work.join("data")
    }
    /// Where gNOI plugins' socket directories go (`TPCM_PLUGIN_SOCKETS`).
    pub fn plugin_sockets(&self) -> PathBuf {
        self.work.join("plugin-sockets")
    }
    pub fn units_dir(&self) -> PathBuf {
        self.work.join("units")
    }

    /// containerd's `--root` (content store, snapshots, metadata).
    pub fn containerd_root(&self) -> PathBuf {
        self.base.join("root")
    }

    /// `/sys/fs/cgroup/<controller>/<ns>/<id>/<file>` (cgroup v1 paths as containerd/runc use them).
    pub fn cgroup_file(&self, controller: &str, id: &str, file: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&self.ns)
            .join(id)
            .join(file)
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- containerd log ({}) ---\n{}",
            self.log.display(),
            all[start..].join("\n")
        )
    }

    /// `ctr -a <sock> -n <ns> <args>`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(&self.ns, args)
    }

    /// `ctr` in another namespace of this containerd.
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(&self.sock).arg("-n").arg(ns).args(args);
        run_with_timeout(&mut cmd, CMD_TIMEOUT)
    }

    /// `ctr` that must succeed; returns stdout.
    #[track_caller]
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        if !out.status.success() {
            panic!("ctr {args:?} failed\n{}", describe(&out));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ctr_lines(&self, args: &[&str]) -> Vec<String> {
        self.ctr_ok(args)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// First column of a table printed by ctr (header skipped).
    fn ctr_column(&self, args: &[&str]) -> Vec<String> {
        self.ctr_ok(args)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect()
    }

    /// Image names (`ctr images ls -q`).
    pub fn images(&self) -> Vec<String> {
        self.ctr_lines(&["images", "ls", "-q"])
    }

    /// Snapshot keys of the overlayfs snapshotter (`ctr snapshots ls`).
    pub fn snapshots(&self) -> Vec<String> {
        self.ctr_column(&["snapshots", "ls"])
    }

    /// Lease IDs (`ctr leases ls -q`).
    pub fn leases(&self) -> Vec<String> {
        self.ctr_lines(&["leases", "ls", "-q"])
    }

    /// Leases of operations (imports, pulls, upgrades): all but the TPCs' own writable-layer
    /// leases (`tpcm-layer-<name>`), which live as long as their TPC. None may outlive its
    /// operation.
    pub fn operation_leases(&self) -> Vec<String> {
        self.leases()
            .into_iter()
            .filter(|l| !l.starts_with("tpcm-layer-"))
            .collect()
    }

    /// Content digests (`ctr content ls -q`).
    pub fn content(&self) -> Vec<String> {
        self.ctr_lines(&["content", "ls", "-q"])
    }

    /// Container IDs (`ctr containers ls -q`).
    pub fn containers(&self) -> Vec<String> {
        self.ctr_lines(&["containers", "ls", "-q"])
    }

    /// Tasks as (id, pid, status) (`ctr tasks ls`).
    pub fn tasks(&self) -> Vec<(String, u32, String)> {
        self.ctr_ok(&["tasks", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((
                    it.next()?.to_string(),
                    it.next()?.parse().ok()?,
                    it.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// Panics (naming `context` and what is left) unless this namespace holds no image,
    /// snapshot, content, lease or container: what every refused or undone operation must leave.
    #[track_caller]
    pub fn assert_empty(&self, context: &str) {
        assert_eq!(self.images(), Vec::<String>::new(), "{context}: images");
        assert_eq!(self.snapshots(), Vec::<String>::new(), "{context}: snapshots");
        assert_eq!(self.content(), Vec::<String>::new(), "{context}: content");
        assert_eq!(self.leases(), Vec::<String>::new(), "{context}: leases");
        assert_eq!(self.containers(), Vec::<String>::new(), "{context}: containers");
    }

    /// Imports an archive with ctr (the reference importer) into this instance's namespace.
    #[track_caller]
    pub fn ctr_import(&self, archive: &Path) -> String {
        self.ctr_ok(&["images", "import", archive.to_str().expect("utf-8 path")])
    }

    // ---- teardown -------------------------------------------------------------------------

    fn kill_tasks(&self) -> Vec<String> {
        let quick = Duration::from_secs(10);
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(&self.sock).args(["namespaces", "ls", "-q"]);
        let out = run_with_timeout_quiet(&mut cmd, quick);
        let mut namespaces: Vec<String> = out
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        namespaces.retain(|n| !n.is_empty());
        for ns in &namespaces {
            let mut cmd = Command::new("ctr");
            cmd.arg("-a")
                .arg(&self.sock)
                .args(["-n", ns, "tasks", "ls", "-q"]);
            let Some(out) = run_with_timeout_quiet(&mut cmd, quick) else {
                continue;
            };
            for id in String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                let mut cmd = Command::new("ctr");
                cmd.arg("-a")
                    .arg(&self.sock)
                    .args(["-n", ns, "tasks", "delete", "--force", id]);
                let _ = run_with_timeout_quiet(&mut cmd, quick);
            }
        }
        namespaces
    }

    /// Releases the bridge networks of our namespaces' containers, as tpcm's janitor does for
    /// containers deleted behind its back: with the tasks gone, the containers are removed with
    /// ctr and `tpcm janitor` frees their addresses, namespaces and forwarding rules. Without
    /// this a test ending with a TPC that publishes a port leaves a DNAT rule behind, which takes
    /// that port from every later server on the host (a `tpcm serve` given it by the kernel
    /// refused every connection).
    fn release_networks(&self, namespaces: &[String]) {
        let quick = Duration::from_secs(20);
        for ns in namespaces {
            let ids = bridged_containers(ns);
            if ids.is_empty() {
                continue;
            }
            for id in &ids {
                let mut cmd = Command::new("ctr");
                cmd.arg("-a")
                    .arg(&self.sock)
                    .args(["-n", ns, "containers", "rm", id]);
                let _ = run_with_timeout_quiet(&mut cmd, quick);
            }
            let mut cmd = tpcm_cmd(self);
            cmd.env("TPCM_NAMESPACE", ns).arg("janitor");
            if run_with_timeout_quiet(&mut cmd, quick).is_none() || !bridged_containers(ns).is_empty() {
                eprintln!("warning: the bridge networks of {ns}'s containers {ids:?} were not all released");
            }
        }
    }

    fn stop_containerd(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGKILLs every process whose command line mentions our temp dir (shims), waits ≤ 5 s.
    fn kill_strays(&self) {
        let me = std::process::id();
        let needle = self.base.to_string_lossy().into_owned();
        let find = || -> Vec<i32> {
            let Ok(rd) = fs::read_dir("/proc") else {
                return Vec::new();
            };
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid as u32 != me)
                .filter(|pid| {
                    fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                        .unwrap_or(false)
                })
                .collect()
        };
        for pid in find() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        // Killed shims are reparented to init (or a subreaper) and reaped there; zombies still
        // show a cmdline of "" so they drop out of `find`.
        while !find().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills what is left in our namespaces' cgroups and removes those cgroup dirs.
    fn sweep_cgroups(&self, namespaces: &[String]) {
        let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let controllers: Vec<PathBuf> = controllers.filter_map(|e| e.ok().map(|e| e.path())).collect();
        for ns in namespaces.iter().filter(|n| n.starts_with(&self.ns)) {
            let mut dirs = Vec::new();
            for c in &controllers {
                let d = c.join(ns);
                if d.is_dir() {
                    collect_dirs(&d, &mut dirs);
                }
            }
            for d in &dirs {
                if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            // Deepest first; a cgroup dir can only be removed once its processes are gone.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            let deadline = Instant::now() + Duration::from_secs(5);
            for d in &dirs {
                while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let runc_root = Path::new("/run/containerd/runc").join(ns);
            let _ = fs::remove_dir_all(runc_root);
        }
    }

    /// Shim sockets live in /run/containerd/s/<hash>; a killed shim leaves them behind.
    fn shim_sockets(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let task_root = self.base.join("state/io.containerd.runtime.v2.task");
        for ns in fs::read_dir(&task_root).into_iter().flatten().flatten() {
            for task in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                if let Ok(addr) = fs::read_to_string(task.path().join("address"))
                    && let Some(p) = addr.trim().strip_prefix("unix://")
                    && p.starts_with("/run/containerd/s/")
                {
                    out.push(PathBuf::from(p));
                }
            }
        }
        out
    }

    fn unmount_all(&self) {
        let prefix = self.base.to_string_lossy().into_owned();
        let mut points: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
            .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        points.dedup();
        for p in points {
            if let Ok(c) = std::ffi::CString::new(p) {
                // SAFETY: c is a valid NUL-terminated path.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
        let mut namespaces = if self.child.is_some() {
            self.kill_tasks()
        } else {
            Vec::new()
        };
        if !namespaces.contains(&self.ns) {
            namespaces.push(self.ns.clone());
        }
        self.release_networks(&namespaces);
        let sockets = self.shim_sockets();
        self.stop_containerd();
        self.kill_strays();
        self.sweep_cgroups(&namespaces);
        for s in sockets {
            let _ = fs::remove_file(s);
        }
        self.unmount_all();
        if let Some(tmp) = self.tmp.take() {
            if std::env::var_os("TPCM_TEST_KEEP").is_some() {
                eprintln!("TPCM_TEST_KEEP: leaving {}", tmp.keep().display());
            } else if let Err(e) = tmp.close() {
                // Retry once after another unmount pass (a lazy unmount may still be settling).
                self.unmount_all();
                if let Err(e2) = fs::remove_dir_all(&self.base)
                    && self.base.exists()
                {
                    eprintln!("warning: cannot remove {}: {e} / {e2}", self.base.display());
                }
            }
        }
    }
}

/// The containers of containerd namespace `ns` that tpcm put on its bridge (their state files
/// name their namespace and ID).
pub fn bridged_containers(ns: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir("/run/tpcm/cni/state") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| serde_json::from_slice::<serde_json::Value>(&fs::read(e.path()).ok()?).ok())
        .filter(|state| state["namespace"] == ns)
        .filter_map(|state| state["id"].as_str().map(str::to_string))
        .collect()
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_path_buf());
    for e in fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// containerd 1.6 config: everything under `base`, CRI and unused snapshotters off.
pub fn containerd_config(base: &Path) -> String {
    let b = base.display();
    format!(
        r#"version = 2
root = "{b}/root"
state = "{b}/state"
temp = "{b}/tmp"
# CRI is not needed and slows start-up; unusable snapshotters only log errors; "opt" would create
# /opt/containerd. The v1 linux runtime must stay: containerd 1.6's tasks service requires it.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{b}/containerd.sock"

[ttrpc]
  address = "{b}/containerd.sock.ttrpc"

[debug]
  address = "{b}/debug.sock"
"#
    )
}

// ---- running commands --------------------------------------------------------------------------

/// The tpcm binary configured for `cd`: TPCM_CONTAINERD, TPCM_NAMESPACE, TPCM_ROOT=<dir>/store,
/// TPCM_DATA_ROOT=<dir>/data, TPCM_SYSTEMD_DIR=<dir>/units, TPCM_PLUGIN_SOCKETS=<dir>/plugin-sockets,
/// and TPCM_BINARY (what units run) the
/// binary under test; stdin null. Add args and run it with [`run_with_timeout`] when `tpcm()`
/// is not flexible enough.
pub fn tpcm_cmd(cd: &Containerd) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tpcm"));
    cmd.env("TPCM_BINARY", env!("CARGO_BIN_EXE_tpcm"))
        .env("TPCM_CONTAINERD", cd.socket())
        .env("TPCM_NAMESPACE", cd.namespace())
        .env("TPCM_ROOT", cd.store_dir())
        .env("TPCM_DATA_ROOT", cd.data_dir())
        .env("TPCM_SYSTEMD_DIR", cd.units_dir())
        .env("TPCM_PLUGIN_SOCKETS", cd.plugin_sockets())
        .stdin(Stdio::null());
    cmd
}

/// Runs `openssl <args>` in `dir` (the tests' certificates); panics with its output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

/// Runs `tpcm <args>` against `cd` (≤ [`CMD_TIMEOUT`]).
pub fn tpcm(cd: &Containerd, args: &[&str]) -> Output {
    run_with_timeout(tpcm_cmd(cd).args(args), CMD_TIMEOUT)
}

/// Runs `tpcm <args>` with extra environment variables.
pub fn tpcm_env(cd: &Containerd, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tpcm_cmd(cd);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, CMD_TIMEOUT)
}

/// Runs `tpcm <args>` with `input` on stdin (a pipe, not a terminal).
pub fn tpcm_stdin(cd: &Containerd, args: &[&str], input: &[u8]) -> Output {
    run_with_input(tpcm_cmd(cd).args(args), input, CMD_TIMEOUT)
}

/// Runs `cmd` (stdin null unless set), capturing stdout/stderr; panics after `timeout`, killing it.
#[track_caller]
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    match run_inner(cmd, None, timeout) {
        Ok(out) => out,
        Err(msg) => panic!("{msg}"),
    }
}

/// Like [`run_with_timeout`] with `input` written to the child's stdin.
#[track_caller]
pub fn run_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> Output {
    match run_inner(cmd, Some(input.to_vec()), timeout) {
        Ok(out) => out,
        Err(msg) => panic!("{msg}"),
    }
}

/// For teardown: never panics.
fn run_with_timeout_quiet(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    run_inner(cmd, None, timeout).ok().filter(|o| o.status.success())
}

fn run_inner(cmd: &mut Command, input: Option<Vec<u8>>, timeout: Duration) -> Result<Output, String> {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    } else {
        // Never inherit the test runner's stdin: a child waiting for input must not hang a test.
        cmd.stdin(Stdio::null());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    for (is_out, pipe) in [
        (
            true,
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send((is_out, buf));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let (stdout, stderr) = collect(&rx, Duration::from_secs(2));
                return Err(format!(
                    "{cmd:?} did not finish within {timeout:?} (killed)\n{}",
                    streams(&stdout, &stderr)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    // A descendant that inherited the pipes could keep them open forever: bound the wait.
    let (stdout, stderr) = collect(&rx, Duration::from_secs(10));
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn collect(rx: &mpsc::Receiver<(bool, Vec<u8>)>, wait: Duration) -> (Vec<u8>, Vec<u8>) {
    let deadline = Instant::now() + wait;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, b)) => out = b,
            Ok((false, b)) => err = b,
            Err(_) => break,
        }
    }
    (out, err)
}

/// Exit status, stdout and stderr, for panic messages.
pub fn describe(out: &Output) -> String {
    format!("status: {}\n{}", out.status, streams(&out.stdout, &out.stderr))
}

fn streams(stdout: &[u8], stderr: &[u8]) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    )
}

/// Panics (showing stdout/stderr) unless the command succeeded; returns stdout.
#[track_caller]
pub fn assert_ok(out: &Output) -> String {
    if !out.status.success() {
        panic!("command failed but should have succeeded\n{}", describe(out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics (showing stdout/stderr) unless the command failed; returns stderr.
#[track_caller]
pub fn assert_fails(out: &Output) -> String {
    if out.status.success() {
        panic!("command succeeded but should have failed\n{}", describe(out));
    }
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `f` every 20 ms until it returns true; panics naming `what` after `deadline`.
#[track_caller]
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (≤ `deadline`) for `child` to exit; kills it and panics if it does not.
pub fn wait_child(child: &mut Child, deadline: Duration) -> ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {deadline:?}", child.id());
        }
        std::thread::sleep(POLL);
    }
}

/// A port nothing on the host uses right now for TCP or UDP (bound on all addresses, then let
/// go), below the kernel's range of ephemeral ports: a test publishing it (a DNAT rule, which
/// catches every local address) can never take the port the kernel gives a server that asked
/// for any (`tpcm serve --listen 127.0.0.1:0`), nor an outgoing connection's.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ephemeral_low: u16 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    if ephemeral_low < 4096 {
        // No room below the range: one the kernel picks.
        return std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let low = ephemeral_low.saturating_sub(12_000).max(2048);
    let span = usize::from(ephemeral_low - low);
    // Test binaries run one at a time; the pid spreads them over the range, the counter keeps
    // one binary's threads apart.
    let start = std::process::id() as usize * 131;
    for _ in 0..span {
        let port = low + ((start + NEXT.fetch_add(1, Ordering::SeqCst)) % span) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port below {ephemeral_low}");
}

/// One HTTP GET of `/` on 127.0.0.1:`port`; the whole answer, if any.
pub fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
