//! A private OpenSSH server (Debian `openssh-server`) on 127.0.0.1 (or on an address in a test's
//! network namespace): its own config file, host key, pid file and authorized_keys in a temp dir,
//! and one test user with a password. Stopped on drop. Include with
//! `#[path = "support/sshd.rs"] mod sshd;` (from `tests/`).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The system user the tests log in as (created on first use, kept: creating users is not free).
pub const USER: &str = "tpcm-ssh-test";
/// Its password (set on first use in each test run).
pub const PASSWORD: &str = "tpcm-Test-pw1";

const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Sshd {
    tmp: tempfile::TempDir,
    child: Child,
    pub port: u16,
    /// The address it listens on.
    pub addr: IpAddr,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates the test user once per test binary and sets its password.
fn ensure_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let exists = Command::new("id")
            .arg(USER)
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            run(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", USER]));
        }
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        use std::io::Write;
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{USER}:{PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
    });
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Makes a fresh ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tpcm-test", "-f"])
        .arg(path));
}

impl Sshd {
    /// Starts sshd; `authorized_key` (a public key file) may log in as [`USER`] besides the password.
    pub fn start(authorized_key: Option<&Path>) -> Sshd {
        Sshd::start_at(IpAddr::V4(Ipv4Addr::LOCALHOST), None, authorized_key)
    }

    /// Starts sshd on `addr`, inside the network namespace `netns` if given (run with
    /// `ip netns exec`). Its log ([`Sshd::log`]) names the address each login came from.
    pub fn start_at(addr: IpAddr, netns: Option<&str>, authorized_key: Option<&Path>) -> Sshd {
        ensure_user();
        let tmp = tempfile::Builder::new().prefix("tpcm-sshd-").tempdir().unwrap();
        let dir = tmp.path();
        // The test user reads archives from here.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        keygen(&dir.join("host_key"));
        let authorized = dir.join("authorized_keys");
        match authorized_key {
            Some(k) => std::fs::copy(k, &authorized).map(|_| ()).unwrap(),
            None => std::fs::write(&authorized, "").unwrap(),
        }
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress {addr}\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin no\n\
             AllowUsers {USER}\nSubsystem sftp internal-sftp\nLogLevel INFO\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        // Privilege separation needs this directory, which only a booted system creates.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, "/usr/sbin/sshd"]);
                cmd
            }
            None => Command::new("/usr/sbin/sshd"),
        };
        let child = cmd
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("sshd is installed by scripts/install-deps.sh (openssh-server)");
        let sshd = Sshd {
            tmp,
            child,
            port,
            addr,
        };
        let end = Instant::now() + START_TIMEOUT;
        while TcpStream::connect((addr, port)).is_err() {
            assert!(
                Instant::now() < end,
                "sshd did not listen within {START_TIMEOUT:?}: {}",
                std::fs::read_to_string(sshd.dir().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `<addr>:<port>`, as `--server` takes it.
    pub fn server(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    /// What sshd logged (at INFO: each login, with the address it came from).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }

    /// Copies `file` where the test user can read it; returns the remote path.
    pub fn publish(&self, file: &Path, name: &str) -> PathBuf {
        let target = self.dir().join(name);
        std::fs::copy(file, &target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        target
    }

    /// The server's host public key line (`ssh-ed25519 AAAA… comment`).
    pub fn host_public_key(&self) -> String {
        std::fs::read_to_string(self.dir().join("host_key.pub")).unwrap()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
