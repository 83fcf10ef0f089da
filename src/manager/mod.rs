//! The operations front ends ask for. The manager talks to the runtime only through
//! [`crate::runtime::Runtime`], and to the outside world only through [`crate::source`].

pub mod args;
pub mod boot;
mod images;
pub mod journal;
pub mod migrate;
pub mod recovery;
pub mod store;
pub mod tpc;
pub mod upgrade;

pub use images::{ImageSource, Progress, import_image, list_images, remove_image};

/// Errors of manager operations: the layers below, converted at this boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source could not be read.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// The runtime (or the archive it was given) failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    /// The TPCM store failed or is busy.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
}
