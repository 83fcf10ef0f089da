//! The containerd backend: the only module that knows containerd's gRPC API and its generated
//! protobuf types. Everything above reaches it through [`crate::runtime::Runtime`].
//!
//! Every request carries the `containerd-namespace` header; work that creates content or
//! snapshots also carries `containerd-lease` so containerd's garbage collector cannot remove
//! half-imported objects (design §4).

mod attach;
mod backend;
mod cni;
mod containers;
mod content;
mod detach;
mod events;
mod exec;
mod export;
mod image_view;
mod images;
mod import;
mod leases;
mod metrics;
mod snapshots;
mod users;

use crate::error_chain;
use containerd_client::services::v1::{
    content_client::ContentClient, images_client::ImagesClient, leases_client::LeasesClient,
    snapshots::snapshots_client::SnapshotsClient, version_client::VersionClient,
};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

pub use import::import_archive;
pub use leases::Lease;

/// The snapshotter every tpcm image is unpacked into (the one SONiC's containerd uses).
pub const SNAPSHOTTER: &str = "overlayfs";

/// Errors from talking to containerd. Each names the operation and, where it matters, the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket is missing or nothing answers on it.
    #[error(
        "cannot reach containerd at {socket}: {reason} (is containerd running? set TPCM_CONTAINERD or --containerd)"
    )]
    Unreachable {
        /// The socket path tried.
        socket: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The socket is there but this user may not open it.
    #[error("cannot open containerd's socket {socket}: permission denied (run tpcm as root)")]
    Forbidden {
        /// The socket path tried.
        socket: PathBuf,
    },
    /// A call failed.
    #[error("containerd {op} failed: {status}")]
    Rpc {
        /// What we asked for.
        op: String,
        /// containerd's status (code and message).
        status: Box<tonic::Status>,
    },
    /// containerd answered with something we cannot use.
    #[error("unexpected answer from containerd to {op}: {detail}")]
    Unexpected {
        /// What we asked for.
        op: String,
        /// What was wrong.
        detail: String,
    },
    /// No such image.
    #[error("no image named {0}")]
    ImageNotFound(String),
    /// The OCI runtime (runc) refused an operation for a reason of its own, e.g. the kernel
    /// refusing a memory limit below what a container uses: its reason, without the wrapping
    /// of containerd's answer.
    #[error("{op}: {reason}")]
    Refused {
        /// Who refused what.
        op: String,
        /// runc's reason.
        reason: String,
    },
}

impl Error {
    pub(crate) fn rpc(op: impl Into<String>) -> impl FnOnce(tonic::Status) -> Error {
        let op = op.into();
        move |status| Error::Rpc {
            op,
            status: Box::new(status),
        }
    }
}

/// A connection to one containerd, scoped to one namespace.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    /// Where bridged containers get their addresses (tpcm.toml `bridge_subnet`).
    bridge_subnet: String,
}

impl Containerd {
    /// Connects and checks that containerd answers (a `Version` call), so a dead socket is
    /// reported up front with its path rather than as a failure halfway through an import.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Containerd, Error> {
        let unreachable = |reason: String| Error::Unreachable {
            socket: socket.to_path_buf(),
            reason,
        };
        // Opening a socket needs write permission on it and search permission on its
        // directories; as another user than root that is what usually fails.
        match nix::unistd::access(socket, nix::unistd::AccessFlags::W_OK) {
            Ok(()) => {}
            Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => {
                return Err(Error::Forbidden {
                    socket: socket.to_path_buf(),
                });
            }
            Err(_) if !socket.exists() => return Err(unreachable("no such socket".into())),
            Err(_) => {}
        }
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let cd = Containerd {
            channel,
            namespace: namespace.to_string(),
            bridge_subnet: cni::DEFAULT_SUBNET.to_string(),
        };
        VersionClient::new(cd.channel.clone())
            .version(())
            .await
            .map_err(|s| unreachable(s.message().to_string()))?;
        Ok(cd)
    }

    /// Bridged containers get their addresses from `subnet` (an IPv4 network in CIDR form,
    /// checked by the caller) instead of the default range.
    pub fn with_bridge_subnet(mut self, subnet: String) -> Containerd {
        self.bridge_subnet = subnet;
        self
    }

    /// The namespace this connection works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Wraps a message with the namespace header and, when given, the lease header.
    fn request<T>(&self, msg: T, lease: Option<&Lease>) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        let md = req.metadata_mut();
        md.insert(
            "containerd-namespace",
            self.namespace.parse().expect("namespace is ASCII"),
        );
        if let Some(lease) = lease {
            md.insert("containerd-lease", lease.id().parse().expect("lease id is ASCII"));
        }
        req
    }

    fn content(&self) -> ContentClient<Channel> {
        // containerd's default receive limit is 16 MiB; our chunks stay at 1 MiB, reads may be larger.
        ContentClient::new(self.channel.clone()).max_decoding_message_size(32 << 20)
    }

    fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
}
