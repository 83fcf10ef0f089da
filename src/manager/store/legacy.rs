//! Records written by tpcm before a TPC's settings were kept as a typed spec: the raw `--args`
//! text plus the container settings resolved at install. They are converted when read
//! ([`super::store::TpcRecord`]'s deserializer), without reading anything outside the record: an
//! env file named in `--args` may be gone (a SONiC image upgrade keeps only `/host`), and its
//! values are in the resolved settings already. A part of the store, so the record type and its
//! conversion do not import each other across modules.

use super::TpcRecord;
use crate::tpc_spec::{
    ContainerSettings, DeviceMapping, ImageRef, Network, PRIVATE_MOUNT, PortMapping, SHARED_MOUNT, TpcSpec,
    VolumeMount,
};
use serde::Deserialize;
use std::path::PathBuf;

/// A record as the older format wrote it.
#[derive(Debug, Deserialize)]
pub(super) struct LegacyRecord {
    name: String,
    image: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    args: String,
    container: LegacyContainer,
    running: bool,
    installed: u64,
    #[serde(default = "yes")]
    owns_image: bool,
    #[serde(default)]
    rollback_image: Option<String>,
}

fn yes() -> bool {
    true
}

/// The container settings the older format resolved at install.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LegacyContainer {
    env: Vec<String>,
    mounts: Vec<LegacyMount>,
    cpus: f64,
    memory: Option<u64>,
    memory_reservation: Option<u64>,
    cap_add: Vec<String>,
    cap_drop: Vec<String>,
    privileged: bool,
    user: Option<String>,
    workdir: Option<String>,
    entrypoint: Option<Vec<String>>,
    command: Vec<String>,
    hostname: Option<String>,
    host_network: bool,
    bridge: Option<Vec<PortMapping>>,
    devices: Vec<LegacyDevice>,
}

#[derive(Debug, Deserialize)]
struct LegacyMount {
    host: PathBuf,
    container: String,
    read_only: bool,
}

#[derive(Debug, Deserialize)]
struct LegacyDevice {
    host: PathBuf,
    container: String,
    permissions: String,
}

impl LegacyRecord {
    /// The record in the current format, marked `converted` (its container may not pin its
    /// image yet). What the older format resolved at install wins over the `--args` text; the
    /// text gives what it did not keep (labels, restart policy, health check).
    pub(super) fn convert(self) -> TpcRecord {
        let c = self.container;
        let from_text = match crate::manager::args::parse_kept_args(&self.args) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    tpc = %self.name,
                    "converting an old record: its --args no longer parse ({e}); labels, restart policy and health check are dropped"
                );
                ContainerSettings::default()
            }
        };
        let network = match (&c.bridge, c.host_network) {
            (Some(_), _) => Network::Bridge,
            (None, true) => Network::Host,
            (None, false) => Network::None,
        };
        let settings = ContainerSettings {
            env: c.env,
            volumes: c
                .mounts
                .into_iter()
                .filter(|m| m.container != PRIVATE_MOUNT && m.container != SHARED_MOUNT)
                .map(|m| VolumeMount {
                    host: m.host,
                    container: m.container,
                    read_only: m.read_only,
                })
                .collect(),
            cpus: from_text.cpus,
            memory: c.memory,
            memory_reservation: c.memory_reservation,
            cap_add: c.cap_add,
            cap_drop: c.cap_drop,
            privileged: c.privileged,
            user: c.user,
            workdir: c.workdir,
            entrypoint: c.entrypoint,
            hostname: c.hostname,
            network,
            ports: c.bridge.unwrap_or_default(),
            devices: c
                .devices
                .into_iter()
                .map(|d| DeviceMapping {
                    host: d.host,
                    container: d.container,
                    permissions: d.permissions,
                })
                .collect(),
            labels: from_text.labels,
            restart: from_text.restart,
            health: from_text.health,
            no_healthcheck: from_text.no_healthcheck,
            command: c.command,
            // Settings the older format had no flags for.
            ..ContainerSettings::default()
        };
        TpcRecord {
            name: self.name,
            spec: TpcSpec {
                image: ImageRef {
                    reference: self.image,
                    digest: self.digest.unwrap_or_default(),
                },
                settings,
            },
            args: self.args,
            cpus: c.cpus,
            base_digest: None,
            running: self.running,
            installed: self.installed,
            owns_image: self.owns_image,
            rollback_image: self.rollback_image,
            converted: true,
            plugin: None,
            // Read from the image at the TPC's next upgrade.
            image_health: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpc_spec::{HealthCheck, RestartPolicy};

    /// A record exactly as the tpcm before typed specs wrote it (an install with an env file
    /// that no longer exists, a label, a restart policy, a volume and a published port).
    const OLD: &str = r#"{
  "name": "app1",
  "image": "docker.io/acme/app:1.0",
  "digest": "sha256:050e0000000000000000000000000000000000000000000000000000000000aa",
  "args": "--env-file /gone/app.env -e MODE=prod -l team=noc --restart on-failure:3 --health-tcp 8080 -v /host/etc/app:/etc/app:ro --network bridge -p 8080:80 --cpus 0.5",
  "container": {
    "id": "app1",
    "image": "docker.io/acme/app:1.0",
    "env": ["SECRET=from-the-file", "MODE=prod"],
    "mounts": [
      {"host": "/host/tpc/app1", "container": "/tpc", "read_only": false},
      {"host": "/host/tpcm/shared", "container": "/tpc-shared", "read_only": false},
      {"host": "/host/etc/app", "container": "/etc/app", "read_only": true}
    ],
    "cpus": 0.5,
    "memory": null,
    "memory_reservation": null,
    "cap_add": [],
    "cap_drop": [],
    "privileged": false,
    "user": null,
    "workdir": null,
    "entrypoint": null,
    "command": [],
    "hostname": null,
    "host_network": false,
    "bridge": [{"host": 8080, "container": 80, "protocol": "tcp"}],
    "devices": []
  },
  "running": true,
  "installed": 1765000000,
  "owns_image": true,
  "rollback_image": null
}"#;

    #[test]
    fn an_old_record_converts_without_reading_its_env_file() {
        let r: TpcRecord = serde_json::from_str(OLD).unwrap();
        assert!(r.converted);
        assert_eq!(r.image(), "docker.io/acme/app:1.0");
        assert!(r.spec.image.digest.starts_with("sha256:050e"));
        let s = &r.spec.settings;
        assert_eq!(s.env, ["SECRET=from-the-file", "MODE=prod"]);
        assert_eq!(s.volumes.len(), 1, "tpcm's own mounts are not settings");
        assert_eq!(s.volumes[0].container, "/etc/app");
        assert_eq!(s.network, Network::Bridge);
        assert_eq!(s.ports[0].host, 8080);
        assert_eq!(s.labels.get("team").map(String::as_str), Some("noc"));
        assert_eq!(s.restart, RestartPolicy::OnFailure { max_retries: Some(3) });
        assert_eq!(s.health, Some(HealthCheck::Tcp(8080)));
        assert_eq!(s.cpus, Some(0.5));
        assert_eq!(r.cpus, 0.5);
        // Written back, it is the current format and reads the same.
        let again: TpcRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn args_that_no_longer_parse_keep_what_was_resolved() {
        let old = OLD.replace("--restart on-failure:3", "--no-such-flag");
        let r: TpcRecord = serde_json::from_str(&old).unwrap();
        assert_eq!(r.spec.settings.env.len(), 2);
        assert_eq!(r.spec.settings.restart, RestartPolicy::No);
    }
}
