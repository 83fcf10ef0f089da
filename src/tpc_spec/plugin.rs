//! What a TPC that is a gNOI containerz plugin is besides its settings: the tarball it came
//! from, its ID, and docker's plugin config (v1) it runs with. The parsing and the rules that
//! turn a config into settings are the manager's (`manager::plugins::config`).

use serde::{Deserialize, Serialize};

/// A plugin TPC's own facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginSpec {
    /// The tarball it was started from (the Deploy name).
    pub tar: String,
    /// That tarball's digest.
    pub tar_digest: String,
    /// Its ID (64 hex digits, as docker's): names its socket directory on the host.
    pub id: String,
    /// The config it runs with (the tarball's with the request's settings, or the request's).
    pub config: PluginConfig,
}

/// A plugin's config as docker reads it (keys lowercased).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginConfig {
    /// What it is.
    pub description: String,
    /// Where it is documented.
    pub documentation: String,
    /// The program and its first arguments.
    pub entrypoint: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// More arguments.
    pub args: Args,
    /// Environment.
    pub env: Vec<Env>,
    /// Bind mounts (and tmpfs ones).
    pub mounts: Vec<PluginMount>,
    /// Capabilities and devices.
    pub linux: Linux,
    /// Which network namespace.
    pub network: PluginNetwork,
    /// A path inside the plugin mounted rshared, so mounts it makes there reach the host.
    pub propagatedmount: String,
    /// Its socket and the interfaces it implements.
    pub interface: Interface,
    /// The user it runs as.
    pub user: User,
    /// Share the host's IPC namespace (not supported).
    pub ipchost: bool,
    /// Share the host's PID namespace (not supported).
    pub pidhost: bool,
}

/// `args`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Args {
    /// Its name (for settings).
    pub name: String,
    /// Its value: words after the entrypoint.
    pub value: Vec<String>,
    /// Which fields a request may set (`value`).
    pub settable: Vec<String>,
}

/// One environment variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Env {
    /// Its name.
    pub name: String,
    /// Its value; none: not set.
    pub value: Option<String>,
    /// Which fields a request may set (`value`).
    pub settable: Vec<String>,
}

/// One mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginMount {
    /// Its name (for settings).
    pub name: String,
    /// Host path.
    pub source: Option<String>,
    /// Path inside the plugin.
    pub destination: String,
    /// `bind` or `tmpfs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Mount options (`rbind`, `ro`, ...).
    pub options: Vec<String>,
    /// Which fields a request may set (`source`).
    pub settable: Vec<String>,
}

/// `linux`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Linux {
    /// Capabilities added to docker's default set.
    pub capabilities: Vec<String>,
    /// Every device (not supported: name the devices).
    pub allowalldevices: bool,
    /// Host devices.
    pub devices: Vec<Device>,
}

/// One host device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Device {
    /// Its name (for settings).
    pub name: String,
    /// Host path (also the path inside).
    pub path: Option<String>,
    /// Which fields a request may set (`path`).
    pub settable: Vec<String>,
}

/// `network`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginNetwork {
    /// `host`, `bridge`, `none` or empty (its own namespace).
    #[serde(rename = "type")]
    pub kind: String,
}

/// `interface`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Interface {
    /// The socket's file name in `/run/docker/plugins`.
    pub socket: String,
    /// Implemented interfaces (`docker.volumedriver/1.0`, ...).
    pub types: Vec<String>,
}

/// `user`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    /// User ID.
    pub uid: Option<u32>,
    /// Group ID.
    pub gid: Option<u32>,
}
