//! Installing and importing from http and https URLs: real servers on 127.0.0.1 (a small one
//! written here for http, `openssl s_server` for https with a CA trusted through the system store).

#[path = "../fixtures/builder.rs"]
mod builder;
mod common;

use common::{Containerd, assert_fails, assert_ok, tpcm};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const REF: &str = "docker.io/tpcm-fixture/busybox:1.0";

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

/// A tiny HTTP/1.1 server: `/busybox.tar` is the fixture, `/cut.tar` announces it whole but
/// stops halfway, `/stall.tar` does too but keeps the connection open without sending more, `/loop` redirects to itself, anything else is 404. Serves until the test ends.
fn serve_http(archive: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let archive = archive.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = match path.as_str() {
                    "/busybox.tar" => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                archive.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&archive)),
                    "/cut.tar" => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                archive.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&archive[..archive.len() / 2])),
                    // Half the body, then silence until the client gives up and closes.
                    "/stall.tar" => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                archive.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&archive[..archive.len() / 2]))
                        .and_then(|()| {
                            let mut rest = Vec::new();
                            reader.read_to_end(&mut rest).map(|_| ())
                        }),
                    "/loop" => stream
                        .write_all(b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                    _ => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            });
        }
    });
    port
}

#[test]
fn http_downloads_stream_into_import_and_install() {
    let cd = Containerd::start();
    let port = serve_http(std::fs::read(fixture(cd.dir())).unwrap());
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");

    assert_ok(&tpcm(&cd, &["image", "import", &url("/busybox.tar")]));
    assert_eq!(cd.images(), vec![REF.to_string()]);
    assert_ok(&tpcm(&cd, &["image", "remove", REF]));

    let args = "-- /bin/sh -c 'trap \"exit 0\" TERM; echo downloaded > /tpc/ok; sleep 1000 & wait'";
    assert_ok(&tpcm(
        &cd,
        &["install", "web", &url("/busybox.tar"), "--args", args, "-y"],
    ));
    common::wait_until(Duration::from_secs(30), "the TPC to run", || {
        cd.data_dir().join("web/ok").exists()
    });
    assert_ok(&tpcm(&cd, &["uninstall", "web", "-y"]));
    cd.assert_empty("after uninstall");

    // Upgrade a TPC installed from a local archive (another image) to the download.
    let local = cd.dir().join("two-layer.tar");
    builder::write_archive(
        &builder::busybox_two_layer(&["tpcm-fixture/other:1"]),
        builder::ArchiveFormat::DockerV12,
        false,
        &local,
    )
    .unwrap();
    assert_ok(&tpcm(
        &cd,
        &["install", "web", local.to_str().unwrap(), "--args", args, "-y"],
    ));
    std::fs::remove_file(cd.data_dir().join("web/ok")).unwrap();
    let out = assert_ok(&tpcm(
        &cd,
        &["upgrade", "web", &url("/busybox.tar"), "--grace", "1", "-y"],
    ));
    assert!(out.contains("[ SUCCESS ]"), "{out}");
    assert_eq!(cd.images(), vec![REF.to_string()]);
    common::wait_until(Duration::from_secs(30), "the upgraded TPC to run", || {
        cd.data_dir().join("web/ok").exists()
    });
    assert_ok(&tpcm(&cd, &["uninstall", "web", "-y"]));
    cd.assert_empty("after the second uninstall");

    for (path, expect) in [
        ("/missing.tar", "404"),
        ("/loop", "redirect"),
        ("/cut.tar", "tpcm: error:"),
    ] {
        let err = assert_fails(&tpcm(&cd, &["install", "web", &url(path), "-y"]));
        assert!(err.contains(expect), "{path}: {err}");
        assert!(
            err.contains(&url(path)) || path == "/cut.tar",
            "{path}: the URL is named: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{path}: {err}");
        cd.assert_empty(path);
    }
}

#[test]
fn a_stalled_download_times_out_as_configured() {
    let cd = Containerd::start();
    let port = serve_http(std::fs::read(fixture(cd.dir())).unwrap());
    std::fs::create_dir_all(cd.store_dir()).unwrap();
    std::fs::write(cd.store_dir().join("tpcm.toml"), "network_timeout_secs = 2\n").unwrap();
    let url = format!("http://127.0.0.1:{port}/stall.tar");
    let err = assert_fails(&tpcm(&cd, &["install", "web", &url, "-y"]));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("timed out"), "{err}");
    cd.assert_empty("after a stalled download");
}

/// Removes the test CA from the system store again, whatever happens.
struct SystemCa(PathBuf);

impl Drop for SystemCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = Command::new("update-ca-certificates")
            .arg("--fresh")
            .stdout(Stdio::null())
            .status();
    }
}

#[test]
fn https_trusts_a_ca_added_to_the_system_store_and_nothing_else() {
    let cd = Containerd::start();
    let dir = cd.dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    fixture(&dir);
    common::openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tpcm test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    common::openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    common::openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server: Child = Command::new("openssl")
        .current_dir(&dir)
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "server.crt",
            "-key",
            "server.key",
            "-WWW",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    common::wait_until(Duration::from_secs(20), "openssl s_server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let url = format!("https://127.0.0.1:{port}/busybox.tar");

    // Not trusted yet: refused, naming the URL, nothing made.
    let err = assert_fails(&tpcm(&cd, &["image", "import", &url]));
    assert!(
        err.contains(&url) && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    cd.assert_empty("untrusted");

    // Trusted through the system store, as curl would.
    let installed = PathBuf::from(format!(
        "/usr/local/share/ca-certificates/tpcm-test-{}-{port}.crt",
        std::process::id()
    ));
    std::fs::copy(dir.join("ca.crt"), &installed).unwrap();
    let _ca = SystemCa(installed);
    let status = Command::new("update-ca-certificates")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_ok(&tpcm(&cd, &["image", "import", &url]));
    assert_eq!(cd.images(), vec![REF.to_string()]);
}
