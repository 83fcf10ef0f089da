//! `scripts/demo.sh`'s clean-up of leftover processes (`kill_demo_processes`), run as the script
//! runs it (bash, `set -euo pipefail`) against a /proc that holds a process which ended between
//! the glob and the read: it says nothing about it, kills the demo's containerd and spares
//! everything else.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The text of a shell function of the script, from `name() {` to the first `}` line.
fn function(script: &str, name: &str) -> String {
    let start = script
        .find(&format!("\n{name}() {{\n"))
        .unwrap_or_else(|| panic!("{name} is not in the script"));
    let body = &script[start + 1..];
    let end = body.find("\n}\n").expect("the function's end") + 3;
    body[..end].to_string()
}

fn proc_entry(fake: &Path, pid: u32, cmdline: &[&str]) {
    let dir = fake.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = Vec::new();
    for arg in cmdline {
        bytes.extend_from_slice(arg.as_bytes());
        bytes.push(0);
    }
    std::fs::write(dir.join("cmdline"), bytes).unwrap();
}

#[test]
fn leftover_processes_are_killed_quietly_when_some_are_gone_before_they_are_read() {
    common::require_root();
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh")).unwrap();
    let kill = function(&script, "kill_demo_processes");
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let sock = demo.join("containerd.sock");
    let config = format!("{}/config.toml", demo.display());

    // Two real processes: one stands for the demo's containerd, one for anything else.
    let mut leftover = Sleeper::spawn();
    let mut bystander = Sleeper::spawn();
    let fake = tmp.path().join("proc");
    proc_entry(&fake, leftover.id(), &["containerd", "--config", &config]);
    proc_entry(
        &fake,
        bystander.id(),
        &["containerd", "--config", "/etc/containerd/config.toml"],
    );
    // A process that ended after the glob listed it: its cmdline cannot be opened.
    std::fs::create_dir_all(fake.join("4194301")).unwrap();
    symlink("/nonexistent/cmdline", fake.join("4194301/cmdline")).unwrap();

    // The function reads /proc by that name; a private mount namespace shows it the fake one.
    let shell = format!(
        "set -euo pipefail\nmount --bind {fake} /proc\nDEMO={demo}\nSOCK={sock}\n{kill}kill_demo_processes\necho done\n",
        fake = fake.display(),
        demo = demo.display(),
        sock = sock.display(),
    );
    let out = common::run_with_timeout(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash", "-c", &shell])
            .stdin(Stdio::null()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    assert!(
        out.stderr.is_empty(),
        "kill_demo_processes complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut status = None;
    common::wait_until(Duration::from_secs(10), "the leftover to be killed", || {
        status = leftover.0.try_wait().unwrap();
        status.is_some()
    });
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.unwrap().signal(), Some(libc::SIGKILL));
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "another containerd was killed"
    );
}

/// A `sleep` child, killed and reaped when dropped (also when the test fails).
struct Sleeper(std::process::Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
