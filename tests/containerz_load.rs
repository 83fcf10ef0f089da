//! `tpcm serve` under hostile load, driven by a small load client on loopback (bounded in count
//! and time): half-open TLS handshakes, connections over the caps, idle and oversized Deploys, a
//! TPC printing a 12 MB line, revoked client certificates and a SIGHUP that revokes one more,
//! idle connections, and a server killed in the middle of a Deploy. Through all of it a reader
//! must be served.
//!
//! The hostile connections come from their own loopback addresses (127.0.x.y; Linux routes all
//! of 127/8 to lo), so the per-address cap is tested apart from the total one, and the reader
//! (from 127.0.0.1) is a different client, as on a switch's management network.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/gnoi.rs"]
mod gnoi;

use common::{Containerd, assert_ok, tpcm};
use gnoi::{ContainerzClient, Server, containers, eventually, proto};
use proto::deploy_request::Request as In;
use proto::deploy_response::Response as Out;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);
/// The server's defaults, as `docs/containerz.md` states them.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const OPEN_FILES_WANTED: u64 = 256 + 2048;
/// A piece of a long log line, its newline included.
const MAX_LINE: usize = 16 << 10;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `tpcm-fixture/app:1` as a docker-save archive.
fn archive(dir: &Path) -> PathBuf {
    let path = dir.join("app.tar");
    builder::write_archive(
        &builder::busybox_image(&["tpcm-fixture/app:1"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &path,
    )
    .unwrap();
    path
}

fn addr(server: &Server) -> SocketAddr {
    server.addr.parse().unwrap()
}

/// A TCP connection from `source` that sends the first 5 bytes of a TLS ClientHello and
/// nothing more: a handshake left half-open, as a client without credentials can leave it.
async fn half_open(server: SocketAddr, source: Ipv4Addr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
    let mut s = socket.connect(server).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8]).await.unwrap();
    s
}

/// Whether the server has closed `s` (end of stream or reset), without waiting.
fn is_closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Waits until the server closes `s`; false if it has not by `deadline`.
async fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Open files of a process.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The soft limit on open files of a process (`/proc/<pid>/limits`).
fn open_files_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Established TCP connections whose local port is `port` (the server's ends), from
/// /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().unwrap();
            u16::from_str_radix(local_port, 16).unwrap() == port && fields[3] == "01"
        })
        .count()
}

async fn list_ok(client: &mut ContainerzClient<Channel>) -> Result<usize, tonic::Status> {
    let mut s = client
        .list_container(proto::ListContainerRequest {
            all: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0;
    while s.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[test]
fn half_open_handshakes_are_closed_within_the_timeout_while_a_reader_is_served() {
    let cd = Containerd::start();
    // Started with 64 open files, as an inherited `ulimit -n 64` would leave it: the server
    // raises the limit itself, or the 200 connections below would exhaust it.
    let pki = cd.dir().join("pki");
    gnoi::Pki::new(&pki, &["ops-robot", "dashboard", "stranger"]);
    let server = Server::start_command(&cd, &pki, &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit(2) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 64,
                    rlim_max: 4096,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    assert_eq!(open_files_limit(server.pid()), OPEN_FILES_WANTED);
    let baseline = open_files(server.pid());
    rt().block_on(async {
        let target = addr(&server);
        // 200 half-open handshakes, 10 from each of 20 addresses (the per-address cap is 16).
        let opened = Instant::now();
        let mut flood = Vec::new();
        for a in 1..=20u8 {
            for _ in 0..10 {
                flood.push(half_open(target, Ipv4Addr::new(127, 0, 1, a)).await);
            }
        }
        eventually(
            Duration::from_secs(10),
            "the server to hold the 200 connections",
            || {
                let n = open_files(server.pid());
                async move { n >= baseline + 200 }
            },
        )
        .await;
        // Meanwhile a reader connects and is answered.
        let mut reader = server.client("dashboard").await.expect("the reader connects");
        list_ok(&mut reader)
            .await
            .expect("ListContainer answers during the flood");
        let still_open = flood.iter().filter(|s| !is_closed(s)).count();
        assert!(
            still_open > 0 || opened.elapsed() >= DEFAULT_HANDSHAKE_TIMEOUT,
            "the flood was over before the reader was answered"
        );
        // Every half-open connection is closed once the handshake timeout has passed.
        let deadline = opened + DEFAULT_HANDSHAKE_TIMEOUT + Duration::from_secs(10);
        for (i, s) in flood.iter_mut().enumerate() {
            assert!(
                closed_by(s, deadline).await,
                "half-open connection {i} still open {:?} after it was made",
                opened.elapsed()
            );
        }
        drop(flood);
        eventually(
            Duration::from_secs(10),
            "the server's open files to fall back",
            || {
                let n = open_files(server.pid());
                async move { n <= baseline + 2 }
            },
        )
        .await;
        list_ok(&mut reader).await.expect("ListContainer after the flood");
    });
}

#[test]
fn connections_over_the_caps_are_refused_before_the_handshake_and_the_server_keeps_serving() {
    let cd = Containerd::start();
    // A handshake timeout far beyond the waits below: a connection closed within them was
    // refused by a cap, not timed out.
    let server = Server::start(
        &cd,
        &[
            "--max-connections",
            "12",
            "--max-connections-per-address",
            "4",
            "--handshake-timeout",
            "120",
        ],
    );
    rt().block_on(async {
        let target = addr(&server);
        let mut reader = server.client("dashboard").await.unwrap();
        list_ok(&mut reader).await.unwrap();
        let soon = || Instant::now() + Duration::from_secs(10);

        // Per address: 4 held, the 5th closed at once.
        let one = Ipv4Addr::new(127, 0, 2, 1);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(half_open(target, one).await);
        }
        let mut fifth = half_open(target, one).await;
        assert!(
            closed_by(&mut fifth, soon()).await,
            "a 5th connection from one address was not refused"
        );
        // In all: with the reader and those 4, 7 more fill the 12; the 13th is refused.
        for a in 1..=7u8 {
            held.push(half_open(target, Ipv4Addr::new(127, 0, 3, a)).await);
        }
        let mut thirteenth = half_open(target, Ipv4Addr::new(127, 0, 3, 99)).await;
        assert!(
            closed_by(&mut thirteenth, soon()).await,
            "a connection over max_connections was not refused"
        );
        assert!(
            held.iter().all(|s| !is_closed(s)),
            "connections within the caps were closed"
        );
        // The reader's connection was made before: it is served.
        list_ok(&mut reader)
            .await
            .expect("the established reader is served");
        // A new connection cannot get in while the caps are full...
        let refused = match gnoi::connect(&server.addr, &server.pki_dir, Some("dashboard")).await {
            Err(_) => true,
            Ok(mut c) => list_ok(&mut c).await.is_err(),
        };
        assert!(refused, "a connection over max_connections was served");
        // ...and gets in once the hostile ones are gone.
        drop(held);
        eventually(WAIT, "a new reader to be served", || async {
            match gnoi::connect(&server.addr, &server.pki_dir, Some("dashboard")).await {
                Ok(mut c) => list_ok(&mut c).await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        assert!(
            server.log().contains("max_connections_per_address")
                && server.log().contains("(max_connections)"),
            "the refusals are logged: {}",
            server.log()
        );
    });
}

/// A Deploy opened with an ImageTransfer announcing `size`: the request sender and the answers,
/// ImageTransferReady already taken; or the status the server refused it with.
async fn open_deploy(
    client: &mut ContainerzClient<Channel>,
    name: &str,
    size: u64,
) -> Result<
    (
        tokio::sync::mpsc::Sender<proto::DeployRequest>,
        tonic::Streaming<proto::DeployResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(proto::DeployRequest {
        request: Some(In::ImageTransfer(proto::ImageTransfer {
            name: name.into(),
            tag: "1".into(),
            image_size: size,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut answers = client
        .deploy(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match answers.message().await? {
        Some(proto::DeployResponse {
            response: Some(Out::ImageTransferReady(_)),
        }) => Ok((tx, answers)),
        other => panic!("expected ImageTransferReady, got {other:?}"),
    }
}

/// Waits for the status a Deploy's answers end with (progress messages skipped).
async fn ending(answers: &mut tonic::Streaming<proto::DeployResponse>) -> tonic::Status {
    loop {
        match answers.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return tonic::Status::ok("ended"),
            Err(s) => return s,
        }
    }
}

fn free_space(dir: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(dir).unwrap();
    stat.blocks_available() as u64 * stat.fragment_size() as u64
}

fn active_ingests(cd: &Containerd) -> String {
    let out = cd.ctr(&["content", "active"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn deploys_are_capped_reserve_their_space_and_are_cancelled_when_idle() {
    let cd = Containerd::start();
    let idle = Duration::from_secs(3);
    let server = Server::start(&cd, &["--max-deploys", "2", "--deploy-idle-timeout", "3"]);
    let tar = archive(cd.dir());
    let bytes = std::fs::read(&tar).unwrap();
    let size = bytes.len() as u64;
    rt().block_on(async {
        let mut writer = server.client("ops-robot").await.unwrap();
        let mut reader = server.client("dashboard").await.unwrap();

        // Two Deploys in flight; a third is over the cap. Readers are served meanwhile.
        let (a_tx, mut a) = open_deploy(&mut writer, "a", size).await.unwrap();
        let (b_tx, mut b) = open_deploy(&mut writer, "b", size).await.unwrap();
        let started = Instant::now();
        let e = open_deploy(&mut writer, "c", size)
            .await
            .expect_err("a 3rd Deploy");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("max_deploys"), "{}", e.message());
        list_ok(&mut reader)
            .await
            .expect("ListContainer while Deploys hold every slot");
        reader
            .list_image(proto::ListImageRequest::default())
            .await
            .expect("ListImage while Deploys hold every slot");

        // `a` sends half its archive, then nothing; `b` nothing at all. Both are cancelled
        // after the idle timeout, and what `a` had written is gone.
        for chunk in bytes[..bytes.len() / 2].chunks(256 << 10) {
            a_tx.send(proto::DeployRequest {
                request: Some(In::Content(chunk.to_vec().into())),
            })
            .await
            .unwrap();
        }
        for answers in [&mut a, &mut b] {
            let status = ending(answers).await;
            assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
            assert!(
                status.message().contains("deploy_idle_timeout"),
                "{}",
                status.message()
            );
        }
        assert!(
            started.elapsed() >= idle,
            "cancelled before the idle timeout: {:?}",
            started.elapsed()
        );
        drop((a_tx, b_tx));
        cd.assert_empty("after idle Deploys were cancelled");
        assert_eq!(active_ingests(&cd), "", "ingests left");

        // Their slots are free again: a whole Deploy goes through.
        let answers = gnoi::deploy(&mut writer, &tar, "app", "1", None)
            .await
            .expect("a Deploy after the idle ones");
        assert!(matches!(
            answers.last().and_then(|m| m.response.as_ref()),
            Some(Out::ImageTransferSuccess(_))
        ));

        // Two Deploys that each fit but together do not: the second is refused while the
        // first is in flight, and fits again once it has gone.
        let each = free_space(&cd.containerd_root()) * 3 / 10;
        let (first_tx, first) = open_deploy(&mut writer, "big1", each).await.unwrap();
        let e = open_deploy(&mut writer, "big2", each)
            .await
            .expect_err("a 2nd big Deploy");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("reserved by Deploys in flight"),
            "{}",
            e.message()
        );
        drop((first_tx, first));
        eventually(
            WAIT,
            "the reservation of a cancelled Deploy to be given back",
            || {
                let mut w = writer.clone();
                async move {
                    match open_deploy(&mut w, "big3", each).await {
                        Ok(_) => true,
                        Err(e) if e.code() == Code::ResourceExhausted => false,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            },
        )
        .await;
        // A Deploy that never sends its ImageTransfer holds a slot only for the idle timeout.
        let (silent_tx, rx) = tokio::sync::mpsc::channel::<proto::DeployRequest>(1);
        let silent = writer
            .deploy(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        match silent {
            Err(s) => assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}"),
            Ok(r) => {
                let status = ending(&mut r.into_inner()).await;
                assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
            }
        }
        drop(silent_tx);
    });
    eventually_empty_of_leases(&cd);
}

fn eventually_empty_of_leases(cd: &Containerd) {
    common::wait_until(WAIT, "no lease left", || cd.leases().is_empty());
}

#[test]
fn a_killed_servers_leases_are_collected_when_the_next_server_starts() {
    let cd = Containerd::start();
    let mut server = Server::start(&cd, &[]);
    let tar = archive(cd.dir());
    let bytes = std::fs::read(&tar).unwrap();
    rt().block_on(async {
        let mut writer = server.client("ops-robot").await.unwrap();
        let (tx, _answers) = open_deploy(&mut writer, "app", bytes.len() as u64).await.unwrap();
        for chunk in bytes[..bytes.len() / 2].chunks(256 << 10) {
            tx.send(proto::DeployRequest {
                request: Some(In::Content(chunk.to_vec().into())),
            })
            .await
            .unwrap();
        }
        eventually(WAIT, "the Deploy's import to hold a lease", || {
            let n = cd.leases().len();
            async move { n > 0 }
        })
        .await;
        server.kill();
    });
    assert!(!cd.leases().is_empty(), "the dead server's lease outlives it");
    let _next = Server::start(&cd, &[]);
    // Collected before the new server listens.
    cd.assert_empty("after the next server started");
}

#[test]
fn a_12_mb_line_reaches_log_and_tpcm_logs_in_16_kib_pieces_and_idle_connections_close() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &["--connection-idle-timeout", "2"]);
    let tar = archive(cd.dir());
    const LONG: usize = 12_000_000;
    rt().block_on(async {
        let mut writer = server.client("ops-robot").await.unwrap();
        gnoi::deploy(&mut writer, &tar, "app", "1", None).await.unwrap();
        writer
            .start_container(proto::StartContainerRequest {
                image_name: "app".into(),
                tag: "1".into(),
                instance_name: "long".into(),
                cmd: format!(
                    "sh -c 'head -c {LONG} /dev/zero | busybox tr \"\\0\" a; echo; echo after; \
                     while true; do echo tick; sleep 0.3; done'"
                ),
                ..Default::default()
            })
            .await
            .unwrap();
        let log = |c: &ContainerzClient<Channel>, follow: bool| {
            let mut c = c.clone();
            async move {
                c.log(proto::LogRequest {
                    instance_name: "long".into(),
                    follow,
                })
                .await
                .unwrap()
                .into_inner()
            }
        };
        let mut reader = server.client("dashboard").await.unwrap();
        // Wait for the line to be written whole.
        eventually(WAIT, "the long line and what follows it in the log", || {
            let read = log(&reader, false);
            async move {
                let mut s = read.await;
                let mut saw = false;
                while let Ok(Some(m)) = s.message().await {
                    saw |= m.msg == "after\n";
                }
                saw
            }
        })
        .await;

        let mut messages = Vec::new();
        let mut s = log(&reader, false).await;
        while let Some(m) = s.message().await.expect("Log answers despite the long line") {
            messages.push(m.msg);
        }
        let full = LONG / (MAX_LINE - 1);
        let rest = LONG - full * (MAX_LINE - 1);
        let sizes: Vec<usize> = messages.iter().take(full + 2).map(String::len).collect();
        assert!(sizes[..full].iter().all(|&n| n == MAX_LINE), "{:?}", &sizes[..5]);
        assert_eq!(sizes[full], rest + 1);
        assert_eq!(messages[full + 1], "after\n");
        assert!(messages.iter().all(|m| m.len() <= MAX_LINE));
        let line: String = messages[..=full]
            .iter()
            .map(|m| m.trim_end_matches('\n'))
            .collect();
        assert_eq!(line.len(), LONG);
        assert!(line.bytes().all(|b| b == b'a'));

        // `tpcm logs` prints the same pieces.
        let out = tpcm(&cd, &["logs", "long"]);
        assert_ok(&out);
        let printed: Vec<&[u8]> = out.stdout.split_inclusive(|&b| b == b'\n').collect();
        assert!(printed.iter().all(|l| l.len() <= MAX_LINE));
        let logged: Vec<&[u8]> = messages.iter().map(|m| m.as_bytes()).collect();
        assert_eq!(
            printed[..full + 2],
            logged[..full + 2],
            "tpcm logs and Log differ"
        );

        // Followed, the same pieces come, and the ticks after them.
        let mut followed = log(&reader, true).await;
        let mut pieces = 0;
        while let Some(m) = followed.message().await.unwrap() {
            assert!(m.msg.len() <= MAX_LINE);
            pieces += 1;
            if m.msg == "after\n" {
                break;
            }
        }
        assert_eq!(pieces, full + 2);

        // Idle connections: the writer's (no call open) is closed after 2 s; the follower's
        // stays while its call is open, and the writer reconnects for its next call.
        let port = addr(&server).port();
        eventually(WAIT, "the idle connections to be closed", || async move {
            established_to(port) == 1
        })
        .await;
        let ticks_before = Instant::now();
        let mut ticks = 0;
        while ticks_before.elapsed() < Duration::from_secs(3) {
            let m = followed.message().await.unwrap().expect("the follow goes on");
            ticks += usize::from(m.msg == "tick\n");
        }
        assert!(ticks > 0, "no tick arrived on the followed log");
        assert_eq!(established_to(port), 1, "the follower's connection was closed");
        list_ok(&mut writer).await.expect("an idle client reconnects");
        assert_eq!(containers(&mut reader).await.len(), 1);
    });
}

/// The test CA as an `openssl ca` database, to revoke certificates and issue CRLs.
struct CrlIssuer {
    dir: PathBuf,
}

impl CrlIssuer {
    fn new(dir: &Path) -> CrlIssuer {
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = tests\n[tests]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
             default_md = sha256\ndefault_crl_days = 2\n",
        )
        .unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        CrlIssuer {
            dir: dir.to_path_buf(),
        }
    }

    fn ca(&self, args: &[&str]) {
        let mut all = vec!["ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem"];
        all.extend_from_slice(args);
        common::openssl(&self.dir, &all);
    }

    fn revoke(&self, cert: &str) {
        self.ca(&["-revoke", cert]);
    }

    /// Writes the CRL (every revocation so far) to `crl.pem`.
    fn issue(&self) -> PathBuf {
        self.ca(&["-gencrl", "-out", "crl.pem.new"]);
        std::fs::rename(self.dir.join("crl.pem.new"), self.dir.join("crl.pem")).unwrap();
        self.dir.join("crl.pem")
    }
}

#[test]
fn asynchronous_updates_are_capped_and_readers_are_served_while_the_cap_is_reached() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(cd.store_dir().join("tpcm.toml"), "upgrade_grace_secs = 1\n").unwrap();
    let v1 = archive(cd.dir());
    let v2 = cd.dir().join("app-2.tar");
    // Another manifest than version 1's (the same content would make the update a no-op).
    let mut spec = builder::busybox_image(&["tpcm-fixture/app:2"]);
    spec.env.push("VERSION=2".into());
    builder::write_archive(&spec, builder::ArchiveFormat::DockerV12, false, &v2).unwrap();
    let cap = tpcm::containerz::MAX_ASYNC_UPDATES;
    let names: Vec<String> = (0..=cap).map(|i| format!("u{i}")).collect();
    rt().block_on(async {
        let mut writer = server.client("ops-robot").await.unwrap();
        gnoi::deploy(&mut writer, &v1, "app", "1", None).await.unwrap();
        gnoi::deploy(&mut writer, &v2, "app", "2", None).await.unwrap();
        let request = |name: &str, tag: &str| proto::StartContainerRequest {
            image_name: "app".into(),
            tag: tag.into(),
            instance_name: name.into(),
            cmd: "sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'".into(),
            ..Default::default()
        };
        for name in &names {
            writer.start_container(request(name, "1")).await.unwrap();
            // Each update waits in its pre hook until the test lets it go.
            let hook = cd.data_dir().join(name).join("hook");
            std::fs::create_dir_all(&hook).unwrap();
            std::fs::write(
                hook.join("pre.sh"),
                "touch /tpc/waiting; while [ ! -f /tpc/go ]; do sleep 0.1; done\n",
            )
            .unwrap();
        }
        let update = |name: &str| {
            let mut c = writer.clone();
            let request = proto::UpdateContainerRequest {
                instance_name: name.into(),
                image_name: "app".into(),
                image_tag: "2".into(),
                params: Some(request(name, "2")),
                r#async: true,
            };
            async move { c.update_container(request).await }
        };
        for name in &names[..cap] {
            let answer = update(name).await.unwrap().into_inner();
            assert!(
                matches!(answer.response, Some(proto::update_container_response::Response::UpdateOk(ref ok)) if ok.is_async),
                "{answer:?}"
            );
        }
        eventually(WAIT, "every update in its pre hook", || async {
            names[..cap]
                .iter()
                .all(|n| cd.data_dir().join(n).join("waiting").exists())
        })
        .await;
        // One more is refused while they run, and a reader is served meanwhile.
        let e = update(&names[cap]).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("wait for one to finish"), "{}", e.message());
        let mut reader = server.client("dashboard").await.unwrap();
        assert_eq!(list_ok(&mut reader).await.unwrap(), names.len());

        for name in &names[..cap] {
            std::fs::write(cd.data_dir().join(name).join("go"), "").unwrap();
        }
        eventually(WAIT, "every update to finish", || {
            let mut reader = reader.clone();
            async move {
                let listed = containers(&mut reader).await;
                listed
                    .iter()
                    .filter(|c| c.labels.get("io.tpcm.update").is_some_and(|l| l == "updated"))
                    .count()
                    == cap
            }
        })
        .await;
        // Room again.
        std::fs::write(cd.data_dir().join(&names[cap]).join("go"), "").unwrap();
        update(&names[cap]).await.unwrap();
        eventually(WAIT, "the last update to finish", || {
            let mut reader = reader.clone();
            async move {
                containers(&mut reader)
                    .await
                    .iter()
                    .all(|c| c.image_name == "app:2")
            }
        })
        .await;
    });
}

#[test]
fn a_message_over_8_mib_is_refused_and_one_under_it_reaches_the_server() {
    let cd = Containerd::start();
    let server = Server::start(&cd, &[]);
    rt().block_on(async {
        // A client that would send more than the server takes.
        let c = server
            .client("ops-robot")
            .await
            .unwrap()
            .max_encoding_message_size(32 << 20);
        let start = |cmd_bytes: usize| proto::StartContainerRequest {
            image_name: "app".into(),
            tag: "1".into(),
            instance_name: "big".into(),
            cmd: "x".repeat(cmd_bytes),
            ..Default::default()
        };
        let e = c.clone().start_container(start(9 << 20)).await.unwrap_err();
        assert!(
            matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{e:?}"
        );
        // Just under the limit: decoded, and answered for what it says (no such image).
        let e = c
            .clone()
            .start_container(start((8 << 20) - 4096))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{}", e.message());
        // The connection serves on.
        assert_eq!(list_ok(&mut c.clone()).await.unwrap(), 0);
        assert!(cd.containers().is_empty());
    });
}

/// Whether a fresh connection with `identity`'s certificate gets a ListContainer answered.
async fn served(server: &Server, identity: &str) -> bool {
    match server.client(identity).await {
        Ok(mut c) => list_ok(&mut c).await.is_ok(),
        Err(_) => false,
    }
}

#[test]
fn the_client_crl_of_the_serve_table_in_tpcm_toml_is_in_force() {
    let cd = Containerd::start();
    let pki = cd.dir().join("pki");
    gnoi::Pki::new(&pki, &["ops-robot", "dashboard"]);
    let issuer = CrlIssuer::new(&pki);
    issuer.revoke("dashboard.pem");
    let crl = issuer.issue();
    std::fs::write(pki.join("authz.toml"), gnoi::AUTHZ).unwrap();
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(
        cd.store_dir().join("tpcm.toml"),
        format!(
            "[serve]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n\
             client_crl = {:?}\nauthz = {:?}\ncontent_root = {:?}\n",
            pki.join("server.pem"),
            pki.join("server.key"),
            pki.join("ca.pem"),
            crl,
            pki.join("authz.toml"),
            cd.containerd_root(),
        ),
    )
    .unwrap();
    // As the shipped unit starts it: no flag at all.
    let server = Server::start_from_config(&cd, &pki);
    rt().block_on(async {
        assert!(served(&server, "ops-robot").await);
        assert!(
            !served(&server, "dashboard").await,
            "a certificate the file's CRL revokes was served"
        );
    });
}

#[test]
fn revoked_certificates_are_refused_and_sighup_revokes_more_without_dropping_followed_logs() {
    let cd = Containerd::start();
    let pki = cd.dir().join("pki");
    let certs = gnoi::Pki::new(&pki, &["ops-robot", "dashboard", "stranger"]);
    // A second certificate with the name ops-robot: revoking it must not lock the first out.
    certs.sign(
        "old-robot",
        "ca",
        "ops-robot",
        "subjectAltName=DNS:ops-robot\nextendedKeyUsage=clientAuth\n",
    );
    let issuer = CrlIssuer::new(&pki);
    issuer.revoke("old-robot.pem");
    let crl = issuer.issue();

    // A CRL of another CA (of the same name) is refused at start, in one line.
    let other = cd.dir().join("other");
    std::fs::create_dir_all(&other).unwrap();
    gnoi::Pki::new(&other, &[]);
    let foreign = CrlIssuer::new(&other).issue();
    let mut cmd = common::tpcm_cmd(&cd);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(pki.join("server.pem"))
        .arg("--tls-key")
        .arg(pki.join("server.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.pem"))
        .arg("--authz")
        .arg(pki.join("authz.toml"))
        .arg("--client-crl")
        .arg(&foreign);
    std::fs::write(pki.join("authz.toml"), gnoi::AUTHZ).unwrap();
    let out = common::run_with_timeout(&mut cmd, Duration::from_secs(30));
    let err = common::assert_fails(&out);
    assert!(err.contains("is not signed by a client CA"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let server = Server::start_with(&cd, &pki, &["--client-crl", crl.to_str().unwrap()]);
    let tar = archive(cd.dir());
    rt().block_on(async {
        assert!(
            !served(&server, "old-robot").await,
            "a revoked certificate was served"
        );
        assert!(
            served(&server, "ops-robot").await,
            "the name's other certificate is refused"
        );
        assert!(served(&server, "dashboard").await);
        assert!(!served(&server, "stranger").await, "stranger has no scope yet");

        let mut writer = server.client("ops-robot").await.unwrap();
        gnoi::deploy(&mut writer, &tar, "app", "1", None).await.unwrap();
        writer
            .start_container(proto::StartContainerRequest {
                image_name: "app".into(),
                tag: "1".into(),
                instance_name: "ticker".into(),
                cmd: "sh -c 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done'".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut dashboard = server.client("dashboard").await.unwrap();
        list_ok(&mut dashboard).await.unwrap();
        let mut followed = writer
            .log(proto::LogRequest {
                instance_name: "ticker".into(),
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        followed.message().await.unwrap().expect("a first tick");

        // Revoke the dashboard's certificate, give stranger the read scope, and SIGHUP.
        issuer.revoke("dashboard.pem");
        issuer.issue();
        std::fs::write(
            pki.join("authz.toml"),
            format!("{}\"stranger\" = [\"read\"]\n", gnoi::AUTHZ),
        )
        .unwrap();
        server.hangup();
        eventually(WAIT, "the server to reload", || {
            let reloaded = server.log().contains("reloaded the TLS certificates");
            async move { reloaded }
        })
        .await;
        assert!(
            !served(&server, "dashboard").await,
            "a certificate revoked on SIGHUP was served"
        );
        let e = list_ok(&mut dashboard)
            .await
            .expect_err("the revoked client's open connection");
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("no longer accepted"), "{}", e.message());
        assert!(
            served(&server, "stranger").await,
            "the reloaded authz file is not in force"
        );
        assert!(served(&server, "ops-robot").await);
        // The followed log went on through the reload.
        let after_reload = Instant::now();
        while after_reload.elapsed() < Duration::from_secs(1) {
            let m = followed
                .message()
                .await
                .unwrap()
                .expect("the follow goes on after SIGHUP");
            assert!(m.msg.starts_with("tick "), "{m:?}");
        }

        // A broken CRL file: the reload fails, the settings in use stay.
        std::fs::write(&crl, "not a CRL\n").unwrap();
        server.hangup();
        eventually(WAIT, "the failed reload to be reported", || {
            let failed = server.log().contains("reload failed");
            async move { failed }
        })
        .await;
        assert!(server.log().contains("holds no PEM CRL"), "{}", server.log());
        assert!(served(&server, "ops-robot").await);
        assert!(!served(&server, "dashboard").await);
        followed
            .message()
            .await
            .unwrap()
            .expect("the follow goes on after a failed reload");
    });
}

#[test]
fn sighup_rotates_the_servers_certificate_for_new_connections() {
    let cd = Containerd::start();
    let old = cd.dir().join("pki");
    gnoi::Pki::new(&old, &["ops-robot"]);
    let server = Server::start_with(&cd, &old, &[]);
    // A new server certificate from a new CA, written over the files the server was started with;
    // the clients keep their certificates (the client CA is unchanged).
    let new = cd.dir().join("pki-new");
    gnoi::Pki::new(&new, &[]);
    for client_file in ["ops-robot.pem", "ops-robot.key"] {
        std::fs::copy(old.join(client_file), new.join(client_file)).unwrap();
    }
    rt().block_on(async {
        let mut before = server.client("ops-robot").await.unwrap();
        for file in ["server.pem", "server.key"] {
            std::fs::copy(new.join(file), old.join(file)).unwrap();
        }
        server.hangup();
        eventually(WAIT, "the server to reload", || {
            let reloaded = server.log().contains("reloaded the TLS certificates");
            async move { reloaded }
        })
        .await;
        // New connections get the new certificate: trusted through the new CA only.
        let mut after = gnoi::connect(&server.addr, &new, Some("ops-robot"))
            .await
            .expect("a client trusting the new CA");
        assert!(containers(&mut after).await.is_empty());
        assert!(
            gnoi::connect(&server.addr, &old, Some("ops-robot"))
                .await
                .is_err(),
            "a new connection still got the old certificate"
        );
        // The connection opened before goes on.
        assert!(containers(&mut before).await.is_empty());
    });
}
