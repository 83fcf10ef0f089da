//! The plugin RPCs (StartPlugin, StopPlugin, ListPlugins, RemovePlugin, and Deploy with
//! `is_plugin`). Upstream's plugins are Docker-managed plugins (volume and network drivers run
//! by dockerd); containerd has no equivalent, so each answers UNIMPLEMENTED and says why.

use tonic::Status;

/// The UNIMPLEMENTED status for plugin call `rpc`.
pub(super) fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc}: plugins are Docker-managed and this device runs containerd, which has no plugins; deploy the plugin as a container instead"
    ))
}
