//! gNOI test support: a test PKI made with `openssl` (a CA, the server's certificate for
//! 127.0.0.1, client certificates per identity, and a certificate from a CA the server does not
//! trust), `tpcm serve` on a loopback port against a test's private containerd, and typed
//! clients connected with a chosen client certificate.
#![allow(dead_code)]

use super::common::{self, Containerd};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
pub use tpcm::containerz::proto;
pub use tpcm::containerz::proto::containerz_client::ContainerzClient;

/// Identities the test authz file knows: `ops-robot` may read and write, `dashboard` may read.
pub const AUTHZ: &str = "[scopes]\n\"ops-robot\" = [\"read\", \"write\"]\n\"dashboard\" = [\"read\"]\n";

/// A CA and certificates signed by it, in a directory.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Makes the CA (`ca.pem`), the server certificate (`server.pem`/`server.key`, SAN
    /// 127.0.0.1 and localhost), a client certificate per name in `clients`
    /// (`<name>.pem`/`<name>.key`, CN and DNS SAN = name), and `rogue.pem`/`rogue.key`: CN
    /// `ops-robot` but signed by another CA.
    pub fn new(dir: &Path, clients: &[&str]) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = |name: &str| {
            common::openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={name}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            )
        };
        ca("ca");
        ca("other-ca");
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.sign(
            "server",
            "ca",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        for c in clients {
            pki.sign(
                c,
                "ca",
                c,
                &format!("subjectAltName=DNS:{c}\nextendedKeyUsage=clientAuth\n"),
            );
        }
        pki.sign(
            "rogue",
            "other-ca",
            "ops-robot",
            "subjectAltName=DNS:ops-robot\nextendedKeyUsage=clientAuth\n",
        );
        pki
    }

    /// Signs `<file>.pem`/`<file>.key` with `<ca>.pem`, subject CN `cn`, extensions `ext`.
    pub fn sign(&self, file: &str, ca: &str, cn: &str, ext: &str) {
        let dir = &self.dir;
        common::openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{file}.key"),
                "-out",
                &format!("{file}.csr"),
            ],
        );
        std::fs::write(dir.join(format!("{file}.ext")), ext).unwrap();
        common::openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{file}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{file}.ext"),
                "-out",
                &format!("{file}.pem"),
            ],
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// `tpcm serve` on 127.0.0.1 (a free port) for a test's containerd; killed on drop (SIGKILL:
/// the containers must survive the manager's death too).
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub pki_dir: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with the test PKI under `<dir>/pki` and the [`AUTHZ`] file; extra
    /// arguments go to `tpcm serve`. Waits (≤ 20 s) for its "listening on" line.
    pub fn start(cd: &Containerd, extra: &[&str]) -> Server {
        let pki_dir = cd.dir().join("pki");
        if !pki_dir.join("ca.pem").exists() {
            Pki::new(&pki_dir, &["ops-robot", "dashboard", "stranger"]);
        }
        Server::start_with(cd, &pki_dir, extra)
    }

    /// Like [`Server::start`] with an existing PKI directory.
    pub fn start_with(cd: &Containerd, pki_dir: &Path, extra: &[&str]) -> Server {
        Server::start_command(cd, pki_dir, extra, |_| {})
    }

    /// Like [`Server::start_with`], with `adjust` applied to the command before it runs.
    pub fn start_command(
        cd: &Containerd,
        pki_dir: &Path,
        extra: &[&str],
        adjust: impl FnOnce(&mut std::process::Command),
    ) -> Server {
        let authz = pki_dir.join("authz.toml");
        std::fs::write(&authz, AUTHZ).unwrap();
        let mut cmd = common::tpcm_cmd(cd);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--tls-cert")
            .arg(pki_dir.join("server.pem"))
            .arg("--tls-key")
            .arg(pki_dir.join("server.key"))
            .arg("--client-ca")
            .arg(pki_dir.join("ca.pem"))
            .arg("--authz")
            .arg(&authz)
            .arg("--content-root")
            .arg(cd.containerd_root())
            .args(extra);
        adjust(&mut cmd);
        Server::spawn(cmd, pki_dir)
    }

    /// `tpcm serve` without a single flag, as the shipped unit runs it: everything from the
    /// `[serve]` table of the test store's tpcm.toml. `pki_dir` is where the clients' keys are.
    pub fn start_from_config(cd: &Containerd, pki_dir: &Path) -> Server {
        let mut cmd = common::tpcm_cmd(cd);
        cmd.arg("serve");
        Server::spawn(cmd, pki_dir)
    }

    /// Runs `cmd` (a `tpcm serve`) and waits (≤ 20 s) for its "listening on" line.
    fn spawn(mut cmd: std::process::Command, pki_dir: &Path) -> Server {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start tpcm serve");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("tpcm serve: listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                keep.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "tpcm serve did not listen within 20 s:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child: Some(child),
            addr,
            pki_dir: pki_dir.to_path_buf(),
            stderr: lines,
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGHUP (what `systemctl reload` sends).
    pub fn hangup(&self) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGHUP);
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (what systemd sends) and waits up to `deadline` for the server to exit;
    /// returns whether it exited successfully in time.
    pub fn terminate(&mut self, deadline: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let end = std::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if std::time::Instant::now() >= end {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client authenticated as `identity` (a certificate in the PKI directory).
    pub async fn client(&self, identity: &str) -> Result<ContainerzClient<Channel>, tonic::transport::Error> {
        let connected = connect(&self.addr, &self.pki_dir, Some(identity)).await;
        if let Err(e) = &connected {
            // Shown with a failing test's output: why the server did not answer, if it said.
            eprintln!(
                "connecting to tpcm serve at {} as {identity} failed: {e}\n--- tpcm serve log ---\n{}",
                self.addr,
                self.log()
            );
        }
        connected
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Connects to `addr` trusting the PKI's CA, presenting `<identity>.pem` if given.
pub async fn connect(
    addr: &str,
    pki: &Path,
    identity: Option<&str>,
) -> Result<ContainerzClient<Channel>, tonic::transport::Error> {
    let ca = Certificate::from_pem(std::fs::read(pki.join("ca.pem")).unwrap());
    let mut tls = ClientTlsConfig::new().ca_certificate(ca).domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(pki.join(format!("{id}.pem"))).unwrap(),
            std::fs::read(pki.join(format!("{id}.key"))).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .initial_stream_window_size(Some(tpcm::containerz::FLOW_WINDOW))
        .initial_connection_window_size(Some(2 * tpcm::containerz::FLOW_WINDOW))
        .connect()
        .await?;
    Ok(ContainerzClient::new(channel)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20))
}

/// Deploys an archive file announcing `announced` bytes (the file's size when `None`), as a
/// client should: the ImageTransfer, then — once the server said ImageTransferReady — the file
/// read from disk in pieces of the chunk size it asked for, then ImageTransferEnd. Returns
/// every server message, or the status the stream ended with.
pub async fn deploy(
    client: &mut ContainerzClient<Channel>,
    archive: &Path,
    name: &str,
    tag: &str,
    announced: Option<u64>,
) -> Result<Vec<proto::DeployResponse>, tonic::Status> {
    use proto::deploy_request::Request as In;
    use proto::deploy_response::Response as Out;
    let size = announced.unwrap_or(std::fs::metadata(archive).unwrap().len());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(proto::DeployRequest {
        request: Some(In::ImageTransfer(proto::ImageTransfer {
            name: name.into(),
            tag: tag.into(),
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
    let mut out = Vec::new();
    let ready = answers.message().await?.expect("an answer to the ImageTransfer");
    let Some(Out::ImageTransferReady(r)) = &ready.response else {
        panic!("the first answer is not ImageTransferReady: {ready:?}")
    };
    let chunk = r.chunk_size as usize;
    out.push(ready);
    let file = std::fs::File::open(archive).unwrap();
    let sender = tokio::task::spawn_blocking(move || tpcm::containerz::client::send_file(file, chunk, tx));
    let result = async {
        while let Some(m) = answers.message().await? {
            out.push(m);
        }
        Ok(out)
    }
    .await;
    sender.abort();
    result
}

/// Sends these Deploy messages and collects the answers until the stream ends.
pub async fn deploy_messages(
    client: &mut ContainerzClient<Channel>,
    messages: Vec<proto::DeployRequest>,
) -> Result<Vec<proto::DeployResponse>, tonic::Status> {
    let mut stream = client.deploy(tokio_stream::iter(messages)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// Deploys a plugin tarball as the featureprofiles client does: an ImageTransfer with
/// `is_plugin` and tag `latest`, the file in 1 MiB chunks, ImageTransferEnd. Returns the
/// success message, or the status the stream ended with.
pub async fn deploy_plugin(
    client: &mut ContainerzClient<Channel>,
    tarball: &Path,
    name: &str,
) -> Result<proto::ImageTransferSuccess, tonic::Status> {
    use proto::deploy_request::Request as In;
    use proto::deploy_response::Response as Out;
    let bytes = std::fs::read(tarball).unwrap();
    let mut messages = vec![proto::DeployRequest {
        request: Some(In::ImageTransfer(proto::ImageTransfer {
            name: name.into(),
            tag: "latest".into(),
            image_size: bytes.len() as u64,
            is_plugin: true,
            ..Default::default()
        })),
    }];
    messages.extend(bytes.chunks(1 << 20).map(|c| proto::DeployRequest {
        request: Some(In::Content(c.to_vec().into())),
    }));
    messages.push(proto::DeployRequest {
        request: Some(In::ImageTransferEnd(proto::ImageTransferEnd {})),
    });
    let answers = deploy_messages(client, messages).await?;
    match answers.last().and_then(|a| a.response.clone()) {
        Some(Out::ImageTransferSuccess(s)) => Ok(s),
        other => panic!("a plugin Deploy ended without success: {other:?}"),
    }
}

/// Every ListContainer entry (`all`).
pub async fn containers(client: &mut ContainerzClient<Channel>) -> Vec<proto::ListContainerResponse> {
    let mut s = client
        .list_container(proto::ListContainerRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        out.push(m);
    }
    out
}

/// The listed status of one instance (NOT_FOUND when absent).
pub async fn status_of(
    client: &mut ContainerzClient<Channel>,
    name: &str,
) -> proto::list_container_response::Status {
    containers(client)
        .await
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| c.status())
        .unwrap_or(proto::list_container_response::Status::NotFound)
}

/// Polls `f` every 100 ms until it is true; panics after `deadline` naming `what`.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + deadline;
    loop {
        if f().await {
            return;
        }
        if std::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
