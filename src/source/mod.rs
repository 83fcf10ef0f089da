//! Where image bytes come from. Every source yields a plain byte stream that the import engine
//! consumes once, front to back; later sources (http(s), scp, sftp, registry) plug in here.

mod local;

pub use local::open_local;

use std::io::Read;

/// Errors opening or reading a source; each names the location.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file that cannot be opened.
    #[error("cannot read {path}: {reason}")]
    Local {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
}

/// An opened source.
pub struct Source {
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
    /// Total length when known (for progress).
    pub size: Option<u64>,
    /// What to call it in messages.
    pub description: String,
}
