//! The client side of docker's plugin protocol, as dockerd speaks it to a plugin: JSON over
//! HTTP/1.1 `POST` on the plugin's unix socket, errors as a non-200 status or a non-empty `Err`.
//! Used for volume drivers (`docker.volumedriver/1.0`: `/Plugin.Activate`,
//! `/VolumeDriver.Create|Remove|Mount|Unmount|Path|Get|List|Capabilities`).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a call waits for a plugin that is starting (its socket not there or not answering
/// yet); dockerd waits 30 s.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// Longest a plugin may take to answer one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The media type dockerd sends.
const PLUGIN_MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The longest socket path `connect(2)` takes (`sun_path` is 108 bytes with its NUL).
const SUN_PATH_MAX: usize = 107;

/// Connects to a unix socket whose path may be longer than `sun_path` holds (a socket
/// directory under a long root, a long socket name): through its directory, opened `O_PATH`,
/// as `/proc/self/fd/<fd>/<name>`.
async fn connect(socket: &Path) -> std::io::Result<tokio::net::UnixStream> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if socket.as_os_str().len() <= SUN_PATH_MAX {
        return tokio::net::UnixStream::connect(socket).await;
    }
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return tokio::net::UnixStream::connect(socket).await;
    };
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    tokio::net::UnixStream::connect(short).await
}

/// A plugin reached on its socket.
#[derive(Debug, Clone)]
pub struct PluginClient {
    socket: PathBuf,
    /// The plugin's name, for messages.
    name: String,
    /// How long a call waits for the plugin's socket to answer.
    patience: Duration,
}

impl PluginClient {
    /// The plugin `name` listening on `socket`.
    pub fn new(name: &str, socket: &Path) -> PluginClient {
        PluginClient {
            socket: socket.to_path_buf(),
            name: name.to_string(),
            patience: CONNECT_PATIENCE,
        }
    }

    /// The same client waiting at most `patience` for the socket (a call that may find the
    /// plugin stopped for good, such as an Unmount at shutdown, should not wait 30 s).
    pub fn with_patience(mut self, patience: Duration) -> PluginClient {
        self.patience = patience;
        self
    }

    /// Calls `endpoint` (`/VolumeDriver.Mount`) with `body`; the answer, or the plugin's error.
    pub async fn call(&self, endpoint: &str, body: &Value) -> Result<Value, String> {
        let fail = |why: String| format!("plugin {} {endpoint}: {why}", self.name);
        let deadline = Instant::now() + self.patience;
        let stream = loop {
            match connect(&self.socket).await {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("plugin {} not answering yet ({e})", self.name);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(fail(format!("{}: {e}", self.socket.display()))),
            }
        };
        let call = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let request = hyper::Request::post(endpoint)
                .header(hyper::header::HOST, "plugin")
                .header(hyper::header::ACCEPT, PLUGIN_MEDIA_TYPE)
                .header(hyper::header::CONTENT_TYPE, PLUGIN_MEDIA_TYPE)
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| e.to_string())?;
            let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| fail(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))?
            .map_err(fail)?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let err = answer.get("Err").and_then(Value::as_str).unwrap_or_default();
        if !status.is_success() {
            let why = if err.is_empty() {
                String::from_utf8_lossy(&bytes).trim().to_string()
            } else {
                err.to_string()
            };
            return Err(fail(format!("{status}: {why}")));
        }
        if !err.is_empty() {
            return Err(fail(err.to_string()));
        }
        Ok(answer)
    }

    /// `/Plugin.Activate`: whether the plugin implements `kind` (`VolumeDriver`).
    pub async fn implements(&self, kind: &str) -> Result<bool, String> {
        let answer = self.call("/Plugin.Activate", &serde_json::json!({})).await?;
        Ok(answer["Implements"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k.as_str() == Some(kind))))
    }

    /// A volume's mountpoint inside the plugin, from the `Mountpoint` of an answer.
    pub fn mountpoint(answer: &Value) -> Option<String> {
        answer["Mountpoint"]
            .as_str()
            .filter(|m| !m.is_empty())
            .map(str::to_string)
    }
}
