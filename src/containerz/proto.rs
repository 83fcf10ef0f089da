//! The generated gNOI types and service stubs (`build.rs` compiles `proto/`). The module tree
//! mirrors the protobuf packages, because generated code refers to other packages by relative
//! paths (`super::common::RemoteDownload`, `super::super::google::rpc::Status`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `gnoi.*` packages.
pub mod gnoi {
    /// `gnoi.common`: the remote download description Deploy accepts.
    pub mod common {
        tonic::include_proto!("gnoi.common");
    }
    /// `gnoi.types`: hashes and credentials.
    pub mod types {
        tonic::include_proto!("gnoi.types");
    }
    /// `gnoi.containerz`: the service itself.
    pub mod containerz {
        tonic::include_proto!("gnoi.containerz");
    }
}

/// `google.rpc.Status`, the error message Deploy's response can carry.
pub mod google {
    /// `google.rpc`.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub use gnoi::containerz::*;
