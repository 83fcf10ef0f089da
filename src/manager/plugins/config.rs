//! Docker's managed-plugin configuration (`config.json`, plugin config v1): what a plugin runs,
//! with which environment, mounts, devices, capabilities and network, where its socket is and
//! which interfaces it implements. docker reads it with Go's case-insensitive JSON matching
//! (real configs say `propagatedMount`, `propagatedmount` and `PropagatedMount` alike), so keys
//! are lowercased before they are read here.
//!
//! A plugin tarball in docker's `plugin create` layout carries its own config; the one a
//! StartPlugin request gives then only sets what that config marks settable (docker's
//! `plugin set` rules: an env's value, a mount's source, a device's path, the args' value).
//! Without one, the request's config is the plugin's config (what the reference server does).

pub use crate::tpc_spec::plugin::PluginConfig;
use crate::tpc_spec::{
    self, ContainerSettings, DeviceMapping, Network, RestartPolicy, SettingError, VolumeMount,
};
use std::path::PathBuf;

/// The interface a volume plugin implements.
pub const VOLUME_DRIVER: &str = "docker.volumedriver/1.0";

/// Lowercases every object key, recursively (Go's case-insensitive field matching).
fn lowercase_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), lowercase_keys(v)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(lowercase_keys).collect())
        }
        other => other,
    }
}

/// Parses a config as docker does (keys in any case).
pub fn parse(json: &str) -> Result<PluginConfig, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the plugin config is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("the plugin config is not a JSON object".into());
    }
    serde_json::from_value(lowercase_keys(value))
        .map_err(|e| format!("the plugin config is not docker's: {e}"))
}

/// `base` with the settable values `request` gives (docker's `plugin set`): an env's value, a
/// mount's source, a device's path, the args' value. Naming something that is not in `base`,
/// or a value `base` does not mark settable, is refused, naming it; so is any other field the
/// request sets to something else than `base` has (the entrypoint, the capabilities, …).
pub fn merge(base: &PluginConfig, request: &PluginConfig) -> Result<PluginConfig, String> {
    unsettable_field(base, request)?;
    let mut out = base.clone();
    let settable = |list: &[String], field: &str| list.iter().any(|s| s.eq_ignore_ascii_case(field));
    for e in &request.env {
        let Some(b) = out.env.iter_mut().find(|b| b.name == e.name) else {
            return Err(format!(
                "setting {:?} not found in the plugin's configuration",
                e.name
            ));
        };
        if e.value != b.value {
            if !settable(&b.settable, "value") {
                return Err(format!("env {}.value is not settable", e.name));
            }
            b.value = e.value.clone();
        }
    }
    for m in &request.mounts {
        let Some(b) = out.mounts.iter_mut().find(|b| b.name == m.name) else {
            return Err(format!(
                "setting {:?} not found in the plugin's configuration",
                m.name
            ));
        };
        if m.source != b.source {
            if !settable(&b.settable, "source") {
                return Err(format!("mount {}.source is not settable", m.name));
            }
            b.source = m.source.clone();
        }
    }
    for d in &request.linux.devices {
        let Some(b) = out.linux.devices.iter_mut().find(|b| b.name == d.name) else {
            return Err(format!(
                "setting {:?} not found in the plugin's configuration",
                d.name
            ));
        };
        if d.path != b.path {
            if !settable(&b.settable, "path") {
                return Err(format!("device {}.path is not settable", d.name));
            }
            b.path = d.path.clone();
        }
    }
    if !request.args.value.is_empty() && request.args.value != out.args.value {
        if !settable(&out.args.settable, "value") {
            return Err(format!("args {}.value is not settable", out.args.name));
        }
        out.args.value = request.args.value.clone();
    }
    Ok(out)
}

/// The first field outside docker's settable ones that `request` gives and `base` does not
/// have so, as an error naming it.
fn unsettable_field(base: &PluginConfig, request: &PluginConfig) -> Result<(), String> {
    // The settable parts are merge's; what is left must be absent or as in `base`.
    let rest = |c: &PluginConfig| {
        let mut c = c.clone();
        c.env.clear();
        c.mounts.clear();
        c.linux.devices.clear();
        c.args.value.clear();
        serde_json::to_value(c).expect("configs serialize")
    };
    let (base, request, unset) = (rest(base), rest(request), rest(&PluginConfig::default()));
    let (Some(base), Some(request), Some(unset)) = (base.as_object(), request.as_object(), unset.as_object())
    else {
        return Ok(());
    };
    for (key, value) in request {
        if Some(value) != unset.get(key) && Some(value) != base.get(key) {
            return Err(format!(
                "{key} cannot be set: the tarball carries its own config, of which a request sets only env values, mount sources, device paths and the args' value"
            ));
        }
    }
    Ok(())
}

/// The container settings a plugin with this config runs with. A bind mount without a source
/// is left out (nothing was set for it: docker's sshfs plugin declares its key directory so);
/// what docker plugins may ask for and tpcm cannot give (the host's PID or IPC namespace, every
/// device) is refused, naming it.
pub fn settings(config: &PluginConfig) -> Result<ContainerSettings, String> {
    let setting = |e: SettingError| e.to_string();
    if config.entrypoint.is_empty() {
        return Err("the plugin config has no entrypoint".into());
    }
    if config.pidhost || config.ipchost {
        return Err("a plugin sharing the host's PID or IPC namespace is not supported".into());
    }
    if config.linux.allowalldevices {
        return Err("linux.allowAllDevices is not supported: name each device in linux.devices".into());
    }
    let mut s = ContainerSettings {
        entrypoint: Some(config.entrypoint.clone()),
        command: config.args.value.clone(),
        workdir: Some(config.workdir.clone()).filter(|w| !w.is_empty()),
        network: match config.network.kind.as_str() {
            "host" => Network::Host,
            "bridge" => Network::Bridge,
            "" | "none" => Network::None,
            other => {
                return Err(format!(
                    "network type {other:?} is not supported (host, bridge or none)"
                ));
            }
        },
        // Back after a reboot, and after a crash: a volume driver must answer.
        restart: RestartPolicy::UnlessStopped,
        ..ContainerSettings::default()
    };
    if let Some(w) = &s.workdir
        && !w.starts_with('/')
    {
        return Err(format!("workdir {w:?} is not absolute"));
    }
    for e in &config.env {
        tpc_spec::check_env_name(&e.name).map_err(setting)?;
        if let Some(v) = &e.value {
            tpc_spec::check_env_value(&e.name, v).map_err(setting)?;
            s.env.push(format!("{}={v}", e.name));
        }
    }
    for cap in &config.linux.capabilities {
        let cap = tpc_spec::capability_name("linux.capabilities", cap).map_err(setting)?;
        if !s.cap_add.contains(&cap) {
            s.cap_add.push(cap);
        }
    }
    for d in &config.linux.devices {
        let path = d
            .path
            .clone()
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| format!("device {:?} has no absolute path", d.name))?;
        s.devices.push(DeviceMapping {
            host: PathBuf::from(&path),
            container: path,
            permissions: "rwm".into(),
        });
    }
    for m in &config.mounts {
        if !m.destination.starts_with('/') {
            return Err(format!(
                "mount {:?}: destination {:?} is not absolute",
                m.name, m.destination
            ));
        }
        match m.kind.as_str() {
            "bind" | "" => {
                let Some(source) = m.source.clone().filter(|s| !s.is_empty()) else {
                    continue;
                };
                if !source.starts_with('/') {
                    return Err(format!("mount {:?}: source {source:?} is not absolute", m.name));
                }
                s.volumes.push(VolumeMount {
                    host: source.into(),
                    container: m.destination.clone(),
                    read_only: m.options.iter().any(|o| o == "ro"),
                });
            }
            "tmpfs" => {
                s.tmpfs.insert(
                    m.destination.clone(),
                    m.options.iter().filter(|o| *o != "tmpfs").cloned().collect(),
                );
            }
            other => return Err(format!("mount {:?}: type {other:?} is not supported", m.name)),
        }
    }
    if let Some(uid) = config.user.uid {
        s.user = Some(format!("{uid}:{}", config.user.gid.unwrap_or(uid)));
    }
    if !config.propagatedmount.is_empty() && !config.propagatedmount.starts_with('/') {
        return Err(format!(
            "propagatedMount {:?} is not absolute",
            config.propagatedmount
        ));
    }
    let socket = config.interface.socket.as_str();
    if socket.is_empty() || socket == "." || socket == ".." || socket.contains(['/', '\0']) {
        return Err(format!(
            "interface.socket {:?} is not a file name",
            config.interface.socket
        ));
    }
    s.check().map_err(setting)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// featureprofiles' test config for the sshfs plugin (CNTR-1.7), keys as it writes them.
    const SSHFS: &str = r#"{
      "description": "sshFS plugin for Docker (Test Configuration)",
      "documentation": "https://docs.docker.com/engine/extend/plugins/",
      "entrypoint": ["/docker-volume-sshfs"],
      "env": [
        {"name": "DEBUG", "settable": ["value"], "value": "0"},
        {"name": "SSH_HOST", "settable": ["value"], "value": "localhost"}
      ],
      "interface": {"socket": "sshfs.sock", "types": ["docker.volumedriver/1.0"]},
      "linux": {"capabilities": ["CAP_SYS_ADMIN"], "devices": [{"path": "/dev/fuse"}]},
      "mounts": [
        {"destination": "/mnt/state", "options": ["rbind"], "name": "state", "source": "/tmp", "settable": ["source"], "type": "bind"},
        {"destination": "/root/.ssh", "options": ["rbind"], "name": "sshkey", "source": "", "settable": ["source"], "type": "bind"}
      ],
      "network": {"type": "host"},
      "propagatedmount": "/mnt/volumes"
    }"#;

    #[test]
    fn featureprofiles_sshfs_config_reads_as_docker_reads_it() {
        let c = parse(SSHFS).unwrap();
        assert_eq!(c.propagatedmount, "/mnt/volumes");
        assert_eq!(c.interface.types, [VOLUME_DRIVER]);
        let s = settings(&c).unwrap();
        assert_eq!(
            s.entrypoint.as_deref(),
            Some(&["/docker-volume-sshfs".to_string()][..])
        );
        assert_eq!(s.env, ["DEBUG=0", "SSH_HOST=localhost"]);
        assert_eq!(s.cap_add, ["CAP_SYS_ADMIN"]);
        assert_eq!(s.network, Network::Host);
        assert_eq!(s.devices[0].container, "/dev/fuse");
        assert_eq!(s.volumes.len(), 1, "the mount without a source is left out");
        assert_eq!(s.volumes[0].container, "/mnt/state");
        // Keys in docker's own case read the same.
        let pascal = SSHFS
            .replace("propagatedmount", "PropagatedMount")
            .replace("\"entrypoint\"", "\"Entrypoint\"");
        assert_eq!(parse(&pascal).unwrap(), c);
    }

    #[test]
    fn a_request_sets_only_what_is_settable() {
        let base = parse(SSHFS).unwrap();
        let request = parse(
            r#"{"env":[{"name":"DEBUG","value":"1"}],"mounts":[{"name":"sshkey","source":"/root/keys"}]}"#,
        )
        .unwrap();
        let merged = merge(&base, &request).unwrap();
        assert_eq!(merged.env[0].value.as_deref(), Some("1"));
        assert_eq!(merged.mounts[1].source.as_deref(), Some("/root/keys"));
        let unknown = parse(r#"{"env":[{"name":"NOPE","value":"1"}]}"#).unwrap();
        assert!(merge(&base, &unknown).unwrap_err().contains("not found"));
        let mut fixed = base.clone();
        fixed.env[0].settable.clear();
        assert!(merge(&fixed, &request).unwrap_err().contains("not settable"));
        // Anything else: only as the tarball has it (a whole copy of its config is fine).
        assert!(merge(&base, &base).is_ok());
        let entry = parse(r#"{"entrypoint":["/bin/sh"]}"#).unwrap();
        assert!(
            merge(&base, &entry)
                .unwrap_err()
                .starts_with("entrypoint cannot be set")
        );
        let caps = parse(r#"{"linux":{"capabilities":["CAP_SYS_MODULE"]}}"#).unwrap();
        assert!(
            merge(&base, &caps)
                .unwrap_err()
                .starts_with("linux cannot be set")
        );
    }

    #[test]
    fn what_tpcm_cannot_give_is_refused() {
        for bad in [
            r#"{"entrypoint":["/p"],"pidhost":true,"interface":{"socket":"p.sock"}}"#,
            r#"{"entrypoint":["/p"],"linux":{"allowAllDevices":true},"interface":{"socket":"p.sock"}}"#,
            r#"{"interface":{"socket":"p.sock"}}"#,
            r#"{"entrypoint":["/p"],"interface":{"socket":"../p.sock"}}"#,
            r#"{"entrypoint":["/p"],"interface":{"socket":".."}}"#,
            r#"{"entrypoint":["/p"],"interface":{"socket":"p.sock"},"mounts":[{"name":"m","type":"nfs","destination":"/x"}]}"#,
        ] {
            let c = parse(bad).unwrap();
            assert!(settings(&c).is_err(), "{bad}");
        }
        assert!(parse("[]").is_err() && parse("{").is_err());
    }
}
