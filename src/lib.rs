//! tpcm: third-party container manager for SONiC switches.
//!
//! The crate is layered so that each layer only calls the one below it (see `docs/architecture.md`):
//!
//! * [`source`] turns a user-given location into a byte stream;
//! * [`archive`] understands image archives (docker-save, OCI layout) and extracts layer tars safely;
//! * [`runtime`] is the one trait through which everything above reaches a container runtime;
//! * [`containerd`] is that runtime's only backend, and the only module that knows containerd's API;
//! * [`manager`] holds the operations a front end asks for;
//! * [`cli`] is the `tpcm` command line, a front end over `manager`;
//! * [`containerz`] is the gNOI containerz server, the other front end over `manager`;
//! * [`systemd`] writes the unit text the manager installs for each TPC;
//! * [`tpc_spec`] is what a TPC is (image and settings), at the bottom: every layer reads it;
//! * [`crash`] lets the recovery tests kill tpcm at named points.

pub mod archive;
pub mod cli;
pub mod config;
pub mod containerd;
pub mod containerz;
pub mod crash;
pub mod manager;
pub mod runtime;
pub mod source;
pub mod systemd;
pub mod tpc_spec;

/// An error and its sources as one line (`outer: inner: innermost`): transport errors (TLS,
/// connect) say what went wrong only in their sources.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
