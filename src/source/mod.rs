//! Where image bytes come from. Every source yields a plain byte stream that the import engine
//! consumes once, front to back; later sources (http(s), scp, sftp, registry) plug in here.

mod http;
mod local;

pub use http::{is_http_url, open_http};
pub use local::open_local;

use std::io::Read;

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
