//! Where downloads leave from: `--source-vrf` / `--source-address`, tpcm.toml's `source_vrf` /
//! `source_address`, and a gNOI Deploy's `RemoteDownload.source_vrf` / `source_address`, for
//! http, sftp, scp and registry sources. The servers (a small HTTP server written here, OpenSSH,
//! the distribution registry) run in a network namespace each test makes, reached through veth
//! pairs (support/netns.rs): routing would connect from `host_a`, so a server that sees `host_b`
//! proves the device binding (a VRF master device is bound with the same SO_BINDTODEVICE; this
//! kernel has no VRF driver), and one that sees `host_a2` proves the address binding. Unusable
//! values are refused with one error (exit 1 / INVALID_ARGUMENT) before any connection, and
//! nothing is imported.

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;
#[path = "support/gnoi.rs"]
mod gnoi;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/registry.rs"]
mod registry;
#[path = "support/sshd.rs"]
mod sshd;

use common::{Containerd, assert_fails, assert_ok, tpcm_env};
use netns::TestNet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use tonic::Code;

const REF: &str = "docker.io/tpcm-fixture/busybox:1.0";
const HTTP_PORT: u16 = 8080;

fn fixture(dir: &Path) -> PathBuf {
    let path = dir.join("busybox.tar");
    builder::write_archive(
        &builder::busybox_image(&["tpcm-fixture/busybox:1.0"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &path,
    )
    .unwrap();
    path
}

/// An HTTP/1.1 server in the namespace on `ns_a`: every path is the archive; the address each
/// connection came from is recorded, in order.
fn serve_http(net: &TestNet, archive: Vec<u8>) -> Arc<Mutex<Vec<IpAddr>>> {
    let listener = net.listen(SocketAddr::new(net.ns_a, HTTP_PORT));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if let Ok(peer) = stream.peer_addr() {
                seen.lock().unwrap().push(peer.ip());
            }
            let archive = archive.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    archive.len()
                );
                let _ = stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&archive));
            });
        }
    });
    peers
}

/// Runs tpcm with HOME in the test's directory (the SSH tests' keys and known_hosts are its own).
fn tpcm(cd: &Containerd, args: &[&str]) -> Output {
    let home = cd.dir().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    tpcm_env(cd, args, &[("HOME", home.to_str().unwrap())])
}

/// The command failed with exit code 1 and one error line, which is returned.
#[track_caller]
fn refused(out: &Output) -> String {
    let stderr = assert_fails(out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tpcm: error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

fn write_config(cd: &Containerd, text: &str) {
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(cd.store_dir().join("tpcm.toml"), text).unwrap();
}

/// The values a download may not leave from, each with what its error names: a device this host
/// does not have, an address of the namespace (not this host's), and an address that is this
/// host's but not on the device given with it.
fn unusable(net: &TestNet) -> Vec<(Vec<String>, String)> {
    let s = |v: &str| v.to_string();
    vec![
        (vec![s("--source-vrf"), s("tpcm-no-vrf")], s("tpcm-no-vrf")),
        (
            vec![s("--source-address"), net.ns_a.to_string()],
            format!("{} is not an address of this host", net.ns_a),
        ),
        (
            vec![
                s("--source-vrf"),
                net.dev_b.clone(),
                s("--source-address"),
                net.host_a2.to_string(),
            ],
            format!("{} is on {}", net.host_a2, net.dev_a),
        ),
    ]
}

#[test]
fn http_downloads_leave_from_the_chosen_device_and_address() {
    let net = TestNet::new();
    let cd = Containerd::start();
    let peers = serve_http(&net, std::fs::read(fixture(cd.dir())).unwrap());
    let url = format!("http://{}:{HTTP_PORT}/busybox.tar", net.ns_a);
    let last_peer = || *peers.lock().unwrap().last().expect("a connection");

    // Routing's own choice, for contrast: dev_a's primary address.
    assert_ok(&tpcm(&cd, &["image", "import", &url]));
    assert_eq!(last_peer(), net.host_a);
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));

    assert_ok(&tpcm(&cd, &["image", "import", &url, "--source-vrf", &net.dev_b]));
    assert_eq!(last_peer(), net.host_b, "bound to {}", net.dev_b);
    assert_eq!(cd.images(), vec![REF.to_string()]);
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));

    let address = net.host_a2.to_string();
    assert_ok(&tpcm(
        &cd,
        &["image", "import", &url, "--source-address", &address],
    ));
    assert_eq!(last_peer(), net.host_a2);
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));

    // tpcm.toml's default applies to install (and a flag overrides it).
    write_config(&cd, &format!("source_vrf = {:?}\n", net.dev_b));
    let command = "-- /bin/sh -c 'trap \"exit 0\" TERM; sleep 1000 & wait'";
    assert_ok(&tpcm(&cd, &["install", "web", &url, "--args", command, "-y"]));
    assert_eq!(last_peer(), net.host_b, "tpcm.toml's source_vrf");
    let out = tpcm(
        &cd,
        &[
            "upgrade",
            "web",
            &url,
            "--source-vrf",
            &net.dev_a,
            "--grace",
            "1",
            "-y",
        ],
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_eq!(last_peer(), net.host_a, "--source-vrf over tpcm.toml");
    assert_ok(&tpcm(&cd, &["uninstall", "web", "-y"]));
    cd.assert_empty("after uninstall");

    // A default naming a missing device is an error that says where it comes from.
    write_config(&cd, "source_vrf = \"tpcm-no-vrf\"\n");
    let err = refused(&tpcm(&cd, &["image", "import", &url]));
    assert!(err.contains("tpcm-no-vrf") && err.contains("tpcm.toml"), "{err}");
    // ... and plays no part for a local archive.
    let local = fixture(cd.dir());
    assert_ok(&tpcm(&cd, &["image", "import", local.to_str().unwrap()]));
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));
    std::fs::remove_file(cd.store_dir().join("tpcm.toml")).unwrap();

    let connections = peers.lock().unwrap().len();
    for (options, named) in unusable(&net) {
        for command in [vec!["image", "import", &url], vec!["install", "web", &url, "-y"]] {
            let mut args: Vec<&str> = command.clone();
            args.extend(options.iter().map(String::as_str));
            let err = refused(&tpcm(&cd, &args));
            assert!(err.contains(&named), "{args:?}: {err}");
        }
    }
    let err = refused(&tpcm(
        &cd,
        &[
            "image",
            "import",
            local.to_str().unwrap(),
            "--source-vrf",
            &net.dev_b,
        ],
    ));
    assert!(err.contains("--source-vrf"), "{err}");
    assert_eq!(
        peers.lock().unwrap().len(),
        connections,
        "a refused download connected"
    );
    cd.assert_empty("after refused downloads");
}

/// The address each login in sshd's log came from, in order.
fn ssh_logins(server: &sshd::Sshd) -> Vec<String> {
    server
        .log()
        .lines()
        .filter_map(|l| {
            let rest = l
                .split(&format!("Accepted password for {} from ", sshd::USER))
                .nth(1)?;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .collect()
}

#[test]
fn sftp_and_scp_leave_from_the_chosen_device_and_address() {
    let net = TestNet::new();
    let cd = Containerd::start();
    let server = sshd::Sshd::start_at(net.ns_a, Some(&net.ns), None);
    let remote = server.publish(&fixture(cd.dir()), "busybox.tar");
    let fetch = |protocol: &str, extra: &[&str]| {
        let mut args = vec!["image", "import", "--protocol", protocol, "--server"];
        let server_arg = server.server();
        args.push(&server_arg);
        args.extend(["--username", sshd::USER, "--password", sshd::PASSWORD, "-y"]);
        args.push(remote.to_str().unwrap());
        args.extend(extra);
        tpcm(&cd, &args)
    };

    assert_ok(&fetch("sftp", &["--source-vrf", &net.dev_b]));
    assert_eq!(ssh_logins(&server), vec![net.host_b.to_string()]);
    assert_eq!(cd.images(), vec![REF.to_string()]);
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));

    let address = net.host_a2.to_string();
    assert_ok(&fetch("scp", &["--source-address", &address]));
    assert_eq!(ssh_logins(&server).last(), Some(&address));
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));

    // tpcm.toml's default, for contrast with routing's choice (dev_a's primary address).
    write_config(&cd, &format!("source_vrf = {:?}\n", net.dev_b));
    assert_ok(&fetch("scp", &[]));
    assert_eq!(ssh_logins(&server).last(), Some(&net.host_b.to_string()));
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));
    std::fs::remove_file(cd.store_dir().join("tpcm.toml")).unwrap();
    assert_ok(&fetch("sftp", &[]));
    assert_eq!(ssh_logins(&server).last(), Some(&net.host_a.to_string()));
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));

    let logins = ssh_logins(&server).len();
    for (options, named) in unusable(&net) {
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        let err = refused(&fetch("sftp", &options));
        assert!(err.contains(&named), "{options:?}: {err}");
    }
    assert_eq!(ssh_logins(&server).len(), logins);
    cd.assert_empty("after refused transfers");
}

/// Every address the registry logged a request from.
fn registry_peers(reg: &registry::Registry) -> Vec<String> {
    reg.log()
        .split("http.request.remoteaddr=")
        .skip(1)
        .filter_map(|rest| {
            let addr = rest.trim_start_matches('"').split([' ', '"']).next()?;
            Some(addr.rsplit_once(':').map_or(addr, |(ip, _)| ip).to_string())
        })
        .collect()
}

#[test]
fn registry_pulls_leave_from_the_chosen_device_and_address() {
    let net = TestNet::new();
    let cd = Containerd::start();
    let addr = format!("{}:5000", net.ns_a);
    let reg = registry::Registry::start_at(addr.clone(), Some(&net.ns), None);
    reg.push("docker-archive", &fixture(cd.dir()), "tpcm/busybox:1.0");
    let reference = reg.reference("tpcm/busybox:1.0");
    // Not on loopback: plain HTTP only when listed.
    write_config(&cd, &format!("insecure_registries = [{addr:?}]\n"));
    let seen_since = |before: usize| registry_peers(&reg)[before..].to_vec();

    let before = registry_peers(&reg).len();
    assert_ok(&tpcm(
        &cd,
        &["image", "import", &reference, "--source-vrf", &net.dev_b],
    ));
    let peers = seen_since(before);
    assert!(!peers.is_empty(), "the registry logged no request");
    assert!(peers.iter().all(|p| *p == net.host_b.to_string()), "{peers:?}");
    assert_eq!(cd.images(), vec![reference.clone()]);
    assert_ok(&tpcm(&cd, &["image", "remove", &reference]));

    let before = registry_peers(&reg).len();
    let address = net.host_a2.to_string();
    assert_ok(&tpcm(
        &cd,
        &["image", "import", &reference, "--source-address", &address],
    ));
    let peers = seen_since(before);
    assert!(
        !peers.is_empty() && peers.iter().all(|p| *p == address),
        "{peers:?}"
    );
    assert_ok(&tpcm(&cd, &["image", "remove", &reference]));

    // Routing's own choice, for contrast.
    let before = registry_peers(&reg).len();
    assert_ok(&tpcm(&cd, &["image", "import", &reference]));
    let peers = seen_since(before);
    assert!(
        !peers.is_empty() && peers.iter().all(|p| *p == net.host_a.to_string()),
        "{peers:?}"
    );
    assert_ok(&tpcm(&cd, &["image", "remove", &reference]));

    // A registry that cannot be reached from there: the error says where from and why.
    let dead = format!("{}:5001/tpcm/busybox:1.0", net.ns_a);
    let err = refused(&tpcm(
        &cd,
        &["image", "import", &dead, "--source-vrf", &net.dev_b],
    ));
    assert!(
        err.contains(&format!("{}:5001", net.ns_a)) && err.contains(&net.dev_b) && err.contains("refused"),
        "{err}"
    );

    let before = registry_peers(&reg).len();
    for (options, named) in unusable(&net) {
        let mut args = vec!["image", "import", reference.as_str()];
        args.extend(options.iter().map(String::as_str));
        let err = refused(&tpcm(&cd, &args));
        assert!(err.contains(&named), "{args:?}: {err}");
    }
    assert_eq!(
        registry_peers(&reg).len(),
        before,
        "a refused pull reached the registry"
    );
    cd.assert_empty("after refused pulls");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn succeeded(answers: &[gnoi::proto::DeployResponse]) -> bool {
    matches!(
        answers.last().and_then(|a| a.response.as_ref()),
        Some(gnoi::proto::deploy_response::Response::ImageTransferSuccess(_))
    )
}

#[test]
fn deploy_remote_downloads_leave_from_the_source_vrf_and_address() {
    use gnoi::proto;
    use proto::gnoi::common::{RemoteDownload, remote_download::Protocol};
    use proto::gnoi::types::{Credentials, credentials::Password};
    let net = TestNet::new();
    let cd = Containerd::start();
    let archive = fixture(cd.dir());
    let peers = serve_http(&net, std::fs::read(&archive).unwrap());
    let ssh = sshd::Sshd::start_at(net.ns_a, Some(&net.ns), None);
    let remote = ssh.publish(&archive, "busybox.tar");
    // The device knows the server's host key (tpcm serve does not accept new ones by default).
    write_config(&cd, "");
    std::fs::write(
        cd.store_dir().join("known_hosts"),
        format!("[{}]:{} {}", net.ns_a, ssh.port, ssh.host_public_key()),
    )
    .unwrap();
    let server = gnoi::Server::start(&cd, &[]);
    let deploy = |tag: &str, remote: RemoteDownload| {
        vec![proto::DeployRequest {
            request: Some(proto::deploy_request::Request::ImageTransfer(
                proto::ImageTransfer {
                    name: "fetched".into(),
                    tag: tag.into(),
                    remote_download: Some(remote),
                    ..Default::default()
                },
            )),
        }]
    };
    let http = |vrf: &str, address: &str| RemoteDownload {
        path: format!("{}:{HTTP_PORT}/busybox.tar", net.ns_a),
        protocol: Protocol::Http as i32,
        source_vrf: vrf.into(),
        source_address: address.into(),
        ..Default::default()
    };
    let ssh_download = |protocol: Protocol, vrf: &str, address: &str| RemoteDownload {
        path: format!("{}:{}", ssh.server(), remote.display()),
        protocol: protocol as i32,
        credentials: Some(Credentials {
            username: sshd::USER.into(),
            password: Some(Password::Cleartext(sshd::PASSWORD.into())),
        }),
        source_vrf: vrf.into(),
        source_address: address.into(),
    };
    let last_peer = || *peers.lock().unwrap().last().expect("a connection");
    rt().block_on(async {
        let mut c = server.client("ops-robot").await.unwrap();
        let answers = gnoi::deploy_messages(&mut c, deploy("vrf", http(&net.dev_b, "")))
            .await
            .unwrap();
        assert!(succeeded(&answers), "{answers:?}");
        assert_eq!(last_peer(), net.host_b);
        let answers = gnoi::deploy_messages(&mut c, deploy("address", http("", &net.host_a2.to_string())))
            .await
            .unwrap();
        assert!(succeeded(&answers), "{answers:?}");
        assert_eq!(last_peer(), net.host_a2);

        let answers = gnoi::deploy_messages(
            &mut c,
            deploy("sftp", ssh_download(Protocol::Sftp, &net.dev_b, "")),
        )
        .await
        .unwrap();
        assert!(succeeded(&answers), "{answers:?}");
        assert_eq!(ssh_logins(&ssh), vec![net.host_b.to_string()]);
        let address = net.host_a2.to_string();
        let answers = gnoi::deploy_messages(&mut c, deploy("scp", ssh_download(Protocol::Scp, "", &address)))
            .await
            .unwrap();
        assert!(succeeded(&answers), "{answers:?}");
        assert_eq!(ssh_logins(&ssh).last(), Some(&address));

        // Unusable values: INVALID_ARGUMENT before any connection; nothing imported.
        let connections = peers.lock().unwrap().len();
        let logins = ssh_logins(&ssh).len();
        let foreign = net.ns_a.to_string();
        let cases = [
            (http("tpcm-no-vrf", ""), "tpcm-no-vrf"),
            (http("", &foreign), "not an address of this host"),
            (http(&net.dev_b, &address), "is on"),
            (ssh_download(Protocol::Sftp, "tpcm-no-vrf", ""), "tpcm-no-vrf"),
            (
                ssh_download(Protocol::Scp, "", &foreign),
                "not an address of this host",
            ),
        ];
        for (remote, named) in cases {
            let e = gnoi::deploy_messages(&mut c, deploy("refused", remote))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(named), "{e:?}");
        }
        assert_eq!(
            peers.lock().unwrap().len(),
            connections,
            "a refused Deploy connected"
        );
        assert_eq!(ssh_logins(&ssh).len(), logins);
    });
    let tags: Vec<String> = cd.images();
    assert_eq!(tags.len(), 4, "{tags:?}");
    assert!(!tags.iter().any(|t| t.ends_with(":refused")), "{tags:?}");
}
