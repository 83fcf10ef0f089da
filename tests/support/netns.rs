//! A private network namespace joined to this host by two veth pairs, for tests of where
//! downloads leave from. Servers run inside it on `ns_a`; routing reaches `ns_a` through `dev_a`
//! from `host_a`, so a connection that arrives from `host_b` was bound to `dev_b` (with no route
//! there, the kernel takes the destination as on-link of the bound device, as a VRF device's own
//! table would route it), and one from `host_a2` (a secondary address of `dev_a`, never routing's
//! choice) was bound to that address. Only these namespace-side addresses are ever contacted.
//!
//! Names and addresses are unique per test process and per test; everything is removed on drop,
//! also when a test fails. Include with `#[path = "support/netns.rs"] mod netns;`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct TestNet {
    /// The namespace (`ip netns` name).
    pub ns: String,
    /// Host side of pair A, the one routing uses to reach the namespace.
    pub dev_a: String,
    /// Host side of pair B.
    pub dev_b: String,
    /// `dev_a`'s primary address (routing's source for `ns_a`).
    pub host_a: IpAddr,
    /// `dev_a`'s secondary address.
    pub host_a2: IpAddr,
    /// `dev_b`'s address.
    pub host_b: IpAddr,
    /// The namespace's address on pair A, where its servers listen.
    pub ns_a: IpAddr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) is installed by scripts/install-deps.sh");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether any address of this host lies in `net.0/28` (another run's test network).
fn in_use(net: [u8; 3], base: u8) -> bool {
    let out = Command::new("ip").args(["-4", "-o", "addr"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse::<Ipv4Addr>().ok())
        .any(|a| {
            let o = a.octets();
            o[..3] == net && o[3] & 0xf0 == base
        })
}

impl TestNet {
    /// Makes the namespace and both pairs, addressed and up.
    pub fn new() -> TestNet {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        // 10.240.0.0/12, one /24 per process (by pid), one /28 per test.
        let net = [10, 240 + ((pid >> 8) & 0x0f) as u8, (pid & 0xff) as u8];
        let (n, base) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            assert!(n < 16, "more test networks than one process has room for");
            let base = (n as u8) << 4;
            if !in_use(net, base) {
                break (n, base);
            }
        };
        let addr = |last: u8| IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], base + last));
        // Constructed first, so whatever was made is removed if a step below fails.
        let t = TestNet {
            ns: format!("tpcm-egress-{pid}-{n}"),
            dev_a: format!("te{pid}x{n}a"),
            dev_b: format!("te{pid}x{n}b"),
            host_a: addr(1),
            host_a2: addr(3),
            ns_a: addr(2),
            host_b: addr(9),
        };
        let ns_b = addr(10);
        ip(&["netns", "add", &t.ns]);
        ip(&[
            "link", "add", &t.dev_a, "type", "veth", "peer", "name", "pa", "netns", &t.ns,
        ]);
        ip(&[
            "link", "add", &t.dev_b, "type", "veth", "peer", "name", "pb", "netns", &t.ns,
        ]);
        let cidr = |a: IpAddr| format!("{a}/29");
        ip(&["addr", "add", &cidr(t.host_a), "dev", &t.dev_a]);
        ip(&["addr", "add", &cidr(t.host_a2), "dev", &t.dev_a]);
        ip(&["addr", "add", &cidr(t.host_b), "dev", &t.dev_b]);
        ip(&["link", "set", &t.dev_a, "up"]);
        ip(&["link", "set", &t.dev_b, "up"]);
        ip(&["-n", &t.ns, "addr", "add", &cidr(t.ns_a), "dev", "pa"]);
        ip(&["-n", &t.ns, "addr", "add", &cidr(ns_b), "dev", "pb"]);
        for dev in ["lo", "pa", "pb"] {
            ip(&["-n", &t.ns, "link", "set", dev, "up"]);
        }
        t
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// A listening socket inside the namespace (made on a thread that joined it; the socket
    /// stays there wherever it is used from).
    pub fn listen(&self, addr: SocketAddr) -> TcpListener {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on an open namespace file; it affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            TcpListener::bind(addr).unwrap()
        })
        .join()
        .unwrap()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting a host end deletes its pair; the namespace goes with its name.
        for dev in [&self.dev_a, &self.dev_b] {
            let _ = Command::new("ip").args(["link", "del", dev]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
