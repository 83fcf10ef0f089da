//! Archives on an SSH server, fetched with sftp or scp (russh, pure Rust; sftp by russh-sftp).
//!
//! Host keys are checked against the given known_hosts files (the user's and the TPCM store's,
//! which survives a SONiC image upgrade): a known key is accepted, a *changed* key is always
//! refused, and an unknown key is accepted only when the caller's policy says so (the CLI asks, or
//! takes `-y`); it is then recorded in the last file of the list.
//!
//! Authentication tries the given identity file (or, without one, the user's default keys that
//! exist), then a password: the given one, or one the caller's prompt supplies.
//!
//! scp has no Rust implementation to reuse (russh leaves it out), so its source side is spoken
//! here: it is the small "scp -f" exchange of OpenSSH's scp(1), one regular file, no recursion.

use super::{Body, Egress, Error, Source, Timeouts};
use russh::client::{self, Handle};
use russh::keys::{self, HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle as Runtime;
use tokio_util::io::SyncIoBridge;

/// Keepalives keep a healthy but quiet session alive; one that receives nothing for the idle
/// timeout is dropped (a stalled server fails the download instead of hanging it).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How the file is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshProtocol {
    /// OpenSSH's scp ("scp -f" on the server).
    Scp,
    /// The sftp subsystem.
    Sftp,
}

impl std::fmt::Display for SshProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SshProtocol::Scp => "scp",
            SshProtocol::Sftp => "sftp",
        })
    }
}

/// A host key no known_hosts file lists, shown to the caller's policy.
#[derive(Debug, Clone)]
pub struct UnknownHostKey {
    /// `host` or `[host]:port`, as known_hosts writes it.
    pub host: String,
    /// Key algorithm (`ssh-ed25519`, …).
    pub algorithm: String,
    /// OpenSSH-style fingerprint (`SHA256:…`).
    pub fingerprint: String,
}

/// Decides whether to trust an unknown host key (it is then recorded).
pub type HostKeyPolicy = Arc<dyn Fn(&UnknownHostKey) -> bool + Send + Sync>;
/// Supplies a password when no key was accepted and none was given; `Err` says why not.
pub type PasswordPrompt = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// A file to fetch over SSH.
#[derive(Clone)]
pub struct SshRequest {
    /// scp or sftp.
    pub protocol: SshProtocol,
    /// `host`, `host:port` or `[v6addr]:port`.
    pub server: String,
    /// Remote user.
    pub username: String,
    /// Password, if given.
    pub password: Option<String>,
    /// Private key file; `None` tries the user's default keys.
    pub identity: Option<PathBuf>,
    /// The remote file.
    pub path: String,
    /// known_hosts files to check, in order; unknown keys that are accepted go into the last.
    pub known_hosts: Vec<PathBuf>,
    /// Whether to trust an unknown host key.
    pub accept_host_key: HostKeyPolicy,
    /// Asked for a password when needed and none was given.
    pub ask_password: Option<PasswordPrompt>,
    /// Handshake and idle timeouts.
    pub timeouts: Timeouts,
    /// Where the connection leaves from.
    pub egress: Egress,
}

impl SshRequest {
    /// `scp://user@server/path`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}://{}@{}{}{}",
            self.protocol,
            self.username,
            self.server,
            if self.path.starts_with('/') { "" } else { "/" },
            self.path
        )
    }
}

/// Splits `host[:port]` (IPv6 in brackets); the port defaults to 22.
pub fn parse_server(server: &str) -> Result<(String, u16), String> {
    let bad = || format!("--server {server}: expected host or host:port");
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(bad()),
        }
    } else {
        match server.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => (server, None), // a bare IPv6 address
            None => (server, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => 22,
    };
    Ok((host.to_string(), port))
}

/// Connects, authenticates and starts reading the file. Blocking: call it from a thread that
/// may block; the returned stream is read from such threads too.
pub fn open_ssh(request: &SshRequest, runtime: &Runtime) -> Result<Source, Error> {
    let fail = |reason: String| Error::Ssh {
        location: request.describe(),
        reason,
    };
    let (host, port) = parse_server(&request.server).map_err(&fail)?;
    let session = runtime.block_on(connect(request, &host, port)).map_err(&fail)?;
    let (reader, size) = match request.protocol {
        SshProtocol::Sftp => runtime.block_on(open_sftp(&session, &request.path)),
        SshProtocol::Scp => open_scp(&session, &request.path, runtime),
    }
    .map_err(&fail)?;
    Ok(Source {
        body: Body::Stream(Box::new(super::Interruptible::new(
            KeepSession {
                reader,
                _session: session,
            },
            format!("{} transfer", request.protocol),
        ))),
        size: Some(size),
        description: request.describe(),
    })
}

/// Keeps the SSH connection open as long as its file is being read.
struct KeepSession {
    reader: Box<dyn Read + Send>,
    _session: Handle<HostKeyCheck>,
}

impl Read for KeepSession {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Checks the server's host key during the handshake.
struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: Vec<PathBuf>,
    policy: HostKeyPolicy,
    /// Why the key was refused, for the error message (the handshake error itself is generic).
    refusal: Arc<std::sync::Mutex<Option<String>>>,
}

impl HostKeyCheck {
    fn check(&self, key: &keys::PublicKey) -> Result<(), String> {
        for file in &self.known_hosts {
            match keys::check_known_hosts_path(&self.host, self.port, key, file) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(keys::Error::KeyChanged { line }) => {
                    return Err(format!(
                        "the host key of {} has CHANGED (it differs from line {line} of {}); refusing \
                         to connect. If the server was really re-keyed, remove that line",
                        self.host,
                        file.display()
                    ));
                }
                Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
            }
        }
        let unknown = UnknownHostKey {
            host: if self.port == 22 {
                self.host.clone()
            } else {
                format!("[{}]:{}", self.host, self.port)
            },
            algorithm: key.algorithm().to_string(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        };
        // The policy may ask on the terminal: let it block without stalling the runtime.
        let accepted = tokio::task::block_in_place(|| (self.policy)(&unknown));
        if !accepted {
            return Err(format!(
                "the host key of {} is unknown ({} {}); confirm it, or pass -y to accept and record it",
                unknown.host, unknown.algorithm, unknown.fingerprint
            ));
        }
        if let Some(record) = self.known_hosts.last() {
            if let Some(dir) = record.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            keys::known_hosts::learn_known_hosts_path(&self.host, self.port, key, record)
                .map_err(|e| format!("cannot record the host key in {}: {e}", record.display()))?;
        }
        Ok(())
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        match self.check(&server_key.public_key()) {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.refusal.lock().expect("lock is never poisoned") = Some(why);
                Ok(false)
            }
        }
    }
}

/// The user's default private keys that exist, as OpenSSH tries them.
fn default_identities() -> Vec<PathBuf> {
    let Some(home) = std::env::home_dir() else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .filter(|p| p.is_file())
        .collect()
}

async fn connect(request: &SshRequest, host: &str, port: u16) -> Result<Handle<HostKeyCheck>, String> {
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(request.timeouts.idle),
        keepalive_interval: Some(KEEPALIVE_INTERVAL.min(request.timeouts.idle / 2)),
        ..Default::default()
    });
    let refusal = Arc::new(std::sync::Mutex::new(None));
    let checker = HostKeyCheck {
        host: host.to_string(),
        port,
        known_hosts: request.known_hosts.clone(),
        policy: request.accept_host_key.clone(),
        refusal: refusal.clone(),
    };
    let limit = request.timeouts.connect;
    // The TCP connection is made here (russh would connect from wherever routing says), then
    // handed to russh for the handshake; the limit covers both.
    let connecting = async {
        let stream = request.egress.connect(host, port, limit).await?;
        client::connect_stream(config, stream, checker)
            .await
            .map_err(|e| {
                let refused = refusal.lock().expect("lock is never poisoned").take();
                refused.unwrap_or_else(|| super::reasons(&e))
            })
    };
    let mut session = match tokio::time::timeout(limit, connecting).await {
        Err(_) => return Err(format!("no answer within {} s", limit.as_secs())),
        Ok(result) => result?,
    };
    let user = request.username.as_str();

    let (identities, explicit) = match &request.identity {
        Some(path) => (vec![path.clone()], true),
        None => (default_identities(), false),
    };
    for path in identities {
        let key = match keys::load_secret_key(&path, None) {
            Ok(k) => k,
            // A default key that cannot be used (passphrase, odd format) is skipped, as ssh does
            // when no agent can unlock it; an explicit one is an error.
            Err(e) if explicit => return Err(format!("cannot use the identity {}: {e}", path.display())),
            Err(e) => {
                tracing::debug!("skipping {}: {e}", path.display());
                continue;
            }
        };
        let hash = session
            .best_supported_rsa_hash()
            .await
            .map_err(|e| e.to_string())?
            .flatten();
        let result = session
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| e.to_string())?;
        if result.success() {
            return Ok(session);
        }
        if explicit && request.password.is_none() && request.ask_password.is_none() {
            return Err(format!(
                "the server refused the key {} for user {user}",
                path.display()
            ));
        }
    }
    let password = match (&request.password, &request.ask_password) {
        (Some(p), _) => p.clone(),
        (None, Some(ask)) => {
            let prompt = format!("{user}@{host}'s password: ");
            tokio::task::block_in_place(|| ask(&prompt))?
        }
        (None, None) => {
            return Err(format!(
                "no key was accepted for user {user}; give --password or --identity"
            ));
        }
    };
    let result = session
        .authenticate_password(user, password)
        .await
        .map_err(|e| e.to_string())?;
    if !result.success() {
        return Err(format!("permission denied for user {user}: wrong password"));
    }
    Ok(session)
}

async fn open_sftp(
    session: &Handle<HostKeyCheck>,
    path: &str,
) -> Result<(Box<dyn Read + Send>, u64), String> {
    let channel = session.channel_open_session().await.map_err(|e| e.to_string())?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| format!("the server offers no sftp: {e}"))?;
    let sftp = russh_sftp::client::SftpSession::new(channel.into_stream())
        .await
        .map_err(|e| format!("sftp: {e}"))?;
    let meta = sftp.metadata(path).await.map_err(|e| format!("{path}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{path} is a directory, not an image archive"));
    }
    let file = sftp.open(path).await.map_err(|e| format!("{path}: {e}"))?;
    let reader = SyncIoBridge::new(file);
    // The session object owns the sftp channel's request loop: keep it with the file.
    Ok((Box::new(KeepSftp { reader, _sftp: sftp }), meta.len()))
}

struct KeepSftp<R> {
    reader: R,
    _sftp: russh_sftp::client::SftpSession,
}

impl<R: Read> Read for KeepSftp<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Starts `scp -f <path>` on the server and reads the file header; the returned reader yields
/// exactly the file's bytes and checks the server's final status.
fn open_scp(
    session: &Handle<HostKeyCheck>,
    path: &str,
    runtime: &Runtime,
) -> Result<(Box<dyn Read + Send>, u64), String> {
    let channel = runtime
        .block_on(session.channel_open_session())
        .map_err(|e| e.to_string())?;
    // The command goes through the remote user's shell: quote the path.
    let command = format!("scp -f -- {}", shell_words::quote(path));
    runtime
        .block_on(channel.exec(true, command))
        .map_err(|e| e.to_string())?;
    let mut stream = SyncIoBridge::new_with_handle(channel.into_stream(), runtime.clone());
    let size = scp_header(&mut stream, path)?;
    Ok((
        Box::new(ScpFile {
            stream,
            remaining: size,
            finished: false,
        }),
        size,
    ))
}

/// The sink side of scp's handshake up to the file's data: ready (`\0`), then one `C` record
/// (`C<mode> <size> <name>\n`), acknowledged. Any other record is refused.
fn scp_header<S: Read + Write>(stream: &mut S, path: &str) -> Result<u64, String> {
    let io_err = |e: io::Error| format!("scp: {e}");
    stream
        .write_all(b"\0")
        .and_then(|()| stream.flush())
        .map_err(io_err)?;
    let line = read_line(stream).map_err(io_err)?;
    // The record type is the first byte; the rest is text (a non-ASCII first byte must not split
    // a character).
    let rest = line.get(1..).unwrap_or("");
    match line.as_bytes().first() {
        Some(b'C') => {}
        // 1 = warning, 2 = fatal: the server's message names the problem (no such file, …).
        Some(1 | 2) => return Err(format!("the server says: {}", rest.trim())),
        Some(b'D') => return Err(format!("{path} is a directory, not an image archive")),
        None => {
            return Err(format!(
                "the server closed the connection (is scp installed there, and {path} readable?)"
            ));
        }
        Some(_) => return Err(format!("unexpected scp record {line:?}")),
    }
    let mut fields = rest.splitn(3, ' ');
    let (_mode, size, _name) = (fields.next(), fields.next(), fields.next());
    let size = size
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("malformed scp header {line:?}"))?;
    stream
        .write_all(b"\0")
        .and_then(|()| stream.flush())
        .map_err(io_err)?;
    Ok(size)
}

/// Reads one `\n`-terminated record (at most 4 KiB) byte by byte, so no file data is consumed.
fn read_line<R: Read>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        if r.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The data part of an scp transfer: `remaining` bytes, then the server's status byte.
struct ScpFile<S> {
    stream: S,
    remaining: u64,
    finished: bool,
}

impl<S: Read + Write> Read for ScpFile<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            if !self.finished {
                self.finished = true;
                let mut status = [0u8; 1];
                self.stream.read_exact(&mut status)?;
                if status[0] != 0 {
                    let message = read_line(&mut self.stream)?;
                    return Err(io::Error::other(format!(
                        "scp: the server says: {}",
                        message.trim()
                    )));
                }
                self.stream.write_all(b"\0")?;
                self.stream.flush()?;
            }
            return Ok(0);
        }
        let want = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "scp: the transfer was cut short",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_and_without_ports() {
        assert_eq!(parse_server("h").unwrap(), ("h".into(), 22));
        assert_eq!(
            parse_server("127.0.0.1:2222").unwrap(),
            ("127.0.0.1".into(), 2222)
        );
        assert_eq!(parse_server("[::1]:2222").unwrap(), ("::1".into(), 2222));
        assert_eq!(parse_server("::1").unwrap(), ("::1".into(), 22));
        assert!(parse_server("h:0").is_err());
        assert!(parse_server("h:x").is_err());
        assert!(parse_server("").is_err());
    }

    /// Plays the server's side of `scp -f` from a script of bytes and records what the client sent.
    struct Scripted {
        from_server: io::Cursor<Vec<u8>>,
        to_server: Vec<u8>,
    }
    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.from_server.read(buf)
        }
    }
    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.to_server.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn scripted(bytes: &[u8]) -> Scripted {
        Scripted {
            from_server: io::Cursor::new(bytes.to_vec()),
            to_server: Vec::new(),
        }
    }

    #[test]
    fn scp_yields_exactly_the_file_and_acknowledges_each_step() {
        let mut s = scripted(b"C0644 5 a.tar\nhello\0");
        let size = scp_header(&mut s, "a.tar").unwrap();
        assert_eq!(size, 5);
        let mut file = ScpFile {
            stream: s,
            remaining: size,
            finished: false,
        };
        let mut got = Vec::new();
        file.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(file.stream.to_server, b"\0\0\0");
    }

    #[test]
    fn scp_server_errors_are_reported() {
        let mut s = scripted(b"\x01scp: /x: No such file or directory\n");
        let err = scp_header(&mut s, "/x").unwrap_err();
        assert!(err.contains("No such file"), "{err}");
        let mut s = scripted(b"D0755 0 dir\n");
        assert!(scp_header(&mut s, "dir").unwrap_err().contains("directory"));
        let mut s = scripted(b"");
        assert!(scp_header(&mut s, "x").unwrap_err().contains("closed"));
        let mut s = scripted("é0644 5 x\n".as_bytes());
        assert!(scp_header(&mut s, "x").unwrap_err().contains("unexpected"));
    }

    #[test]
    fn a_cut_or_failed_scp_transfer_is_an_error() {
        let mut short = ScpFile {
            stream: scripted(b"hel"),
            remaining: 5,
            finished: false,
        };
        let mut got = Vec::new();
        assert!(short.read_to_end(&mut got).is_err());
        let mut failed = ScpFile {
            stream: scripted(b"hello\x02read error\n"),
            remaining: 5,
            finished: false,
        };
        let err = failed.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("read error"), "{err}");
    }
}
