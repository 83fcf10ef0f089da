//! A private distribution registry (Debian `docker-registry`) on 127.0.0.1 (or on an address in
//! a test's network namespace), with its config,
//! storage and optional htpasswd file in a temp dir; fixtures are pushed with skopeo. Stopped on
//! drop. Shared by the registry tests and the pull benchmark: include with
//! `#[path = "support/registry.rs"] mod registry;` (from `tests/`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the registry may take to answer after being started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Registry {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// User and password, when the registry requires them.
    pub credentials: Option<(String, String)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

impl Registry {
    /// Starts a registry; with `credentials`, every request needs them (htpasswd, bcrypt).
    pub fn start(credentials: Option<(&str, &str)>) -> Registry {
        Registry::start_at(format!("127.0.0.1:{}", free_port()), None, credentials)
    }

    /// Starts a registry listening on `addr` (`ip:port`), inside the network namespace `netns`
    /// if given (run with `ip netns exec`); it then logs every request with the address it came
    /// from ([`Registry::log`]).
    pub fn start_at(addr: String, netns: Option<&str>, credentials: Option<(&str, &str)>) -> Registry {
        let tmp = tempfile::Builder::new()
            .prefix("tpcm-registry-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let level = if netns.is_some() { "info" } else { "warn" };
        let mut config = format!(
            "version: 0.1\nlog:\n  level: {level}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: tpcm-test\n",
            dir.join("data").display()
        );
        if let Some((user, password)) = credentials {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) is installed by scripts/install-deps.sh");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: tpcm-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, "docker-registry"]);
                cmd
            }
            None => Command::new("docker-registry"),
        };
        let child = cmd
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed by scripts/install-deps.sh");
        let registry = Registry {
            _tmp: tmp,
            dir,
            child,
            addr,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let end = Instant::now() + START_TIMEOUT;
        // Any HTTP answer to /v2/ (200, or 401 with auth) means it serves.
        while registry.get("/v2/").is_err() {
            assert!(
                Instant::now() < end,
                "the registry did not answer within {START_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(registry.dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn client() -> reqwest::blocking::Client {
        // tpcm's reqwest is built without a default TLS provider; the test's client shares it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    fn authed(&self, req: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.credentials {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// GETs a registry path (with the credentials), returning the status.
    pub fn get(&self, path: &str) -> reqwest::Result<reqwest::StatusCode> {
        let url = format!("http://{}{path}", self.addr);
        Ok(self.authed(Self::client().get(url)).send()?.status())
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// `<addr>/<repo>:<tag>` or `<addr>/<repo>@<digest>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// Pushes an archive (`docker-archive` or `oci-archive`) as `<addr>/<repo_and_tag>` with
    /// skopeo, which stores layers gzip'd as `docker push` does.
    pub fn push(&self, transport: &str, archive: &Path, repo_and_tag: &str) {
        self.push_with(transport, archive, repo_and_tag, &[]);
    }

    /// Like [`Registry::push`] with more `skopeo copy` options (e.g. zstd layers:
    /// `--format oci --dest-compress-format zstd`).
    pub fn push_with(&self, transport: &str, archive: &Path, repo_and_tag: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra);
        if let Some((u, p)) = &self.credentials {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("{transport}:{}", archive.display()))
            .arg(format!("docker://{}", self.reference(repo_and_tag)));
        let out = cmd
            .output()
            .expect("skopeo is installed by scripts/install-deps.sh");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The digest the registry gives for a manifest.
    pub fn manifest_digest(&self, repo: &str, tag: &str) -> String {
        let url = format!("http://{}/v2/{repo}/manifests/{tag}", self.addr);
        let resp = self
            .authed(Self::client().head(url))
            .header(
                "Accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json",
            )
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "HEAD {repo}:{tag}: {}", resp.status());
        resp.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string()
    }

    /// The raw manifest bytes and their media type.
    pub fn manifest(&self, repo: &str, reference: &str) -> (String, Vec<u8>) {
        let url = format!("http://{}/v2/{repo}/manifests/{reference}", self.addr);
        let resp = self
            .authed(Self::client().get(url))
            .header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .unwrap();
        assert!(
            resp.status().is_success(),
            "GET manifest {repo}:{reference}: {}",
            resp.status()
        );
        let media_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        (media_type, resp.bytes().unwrap().to_vec())
    }

    /// Uploads a manifest or index document under `reference` (a tag).
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: Vec<u8>) {
        let url = format!("http://{}/v2/{repo}/manifests/{reference}", self.addr);
        let resp = self
            .authed(Self::client().put(url))
            .header("Content-Type", media_type)
            .body(body)
            .send()
            .unwrap();
        assert!(
            resp.status().is_success(),
            "PUT manifest {repo}:{reference}: {} {}",
            resp.status(),
            resp.text().unwrap_or_default()
        );
    }

    /// Where the registry keeps a blob's bytes (to damage it in tests).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
