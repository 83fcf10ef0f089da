//! Where image bytes come from. Archive sources (local files, http(s), scp, sftp) yield a byte
//! stream the import engine consumes once, front to back; a registry yields documents and one
//! stream per layer. None of them knows the CLI: gNOI's remote download uses them too.

mod egress;
mod http;
mod local;
pub mod registry;
mod relay;
pub mod ssh;

pub use egress::Egress;
pub use http::{Login, is_http_url, open_http};
pub use local::open_local;

use std::io::Read;

/// How long a network source may take. A transfer may last as long as it needs, but no single
/// wait may exceed these, so a dead or stalled server fails the operation instead of hanging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for a connection (TCP, TLS or SSH handshake).
    pub connect: std::time::Duration,
    /// Longest wait for any single read once connected.
    pub idle: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: std::time::Duration::from_secs(30),
            idle: std::time::Duration::from_secs(60),
        }
    }
}

/// Errors opening or reading a source; each names the location.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A download that failed.
    #[error("cannot download {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// Why (connection, TLS, status, redirects).
        reason: String,
    },
    /// An scp or sftp transfer that failed.
    #[error("cannot fetch {location}: {reason}")]
    Ssh {
        /// `scp://user@server/path`.
        location: String,
        /// Why (unreachable, host key, authentication, no such file).
        reason: String,
    },
    /// A registry pull that failed.
    #[error("cannot pull {reference}: {reason}")]
    Registry {
        /// The image reference.
        reference: String,
        /// Why (access refused, no such tag, unreachable, unsupported content).
        reason: String,
    },
    /// A local file that cannot be opened.
    #[error("cannot read {path}: {reason}")]
    Local {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
}

/// How a source's bytes can be read.
pub enum Body {
    /// A local file: seekable, so an importer may read parts of it in parallel.
    File(std::fs::File),
    /// A stream, read once front to back (downloads).
    Stream(Box<dyn Read + Send>),
}

/// An opened source.
pub struct Source {
    /// The bytes.
    pub body: Body,
    /// Total length when known (for progress).
    pub size: Option<u64>,
    /// What to call it in messages.
    pub description: String,
}

/// A network stream whose read errors say what was interrupted and why, with every cause in the
/// chain (HTTP clients report a timeout as "error decoding response body" with the timeout as a
/// nested cause, which a bare message would lose).
pub struct Interruptible<R> {
    inner: R,
    what: String,
}

impl<R> Interruptible<R> {
    /// `what` names the transfer ("download of <url>").
    pub fn new(inner: R, what: impl Into<String>) -> Self {
        Interruptible {
            inner,
            what: what.into(),
        }
    }
}

impl<R: Read> Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{} interrupted: {}", self.what, reasons(&e))))
    }
}

/// Makes rustls usable: reqwest is built without a default crypto provider (to keep aws-lc out
/// of the binary), so every HTTP client tpcm builds needs ring installed first. Idempotent.
pub fn install_tls_provider() {
    // A second install is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Every reason in an error's chain, on one line (HTTP clients nest the useful part).
fn reasons(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}
