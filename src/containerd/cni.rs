//! Bridge networking for containers that publish ports, through the standard CNI plugins
//! (Debian `containernetworking-plugins`): `loopback`, `bridge` with `host-local` addresses and
//! outbound NAT, and `portmap` for the published ports (DNAT, including from 127.0.0.1).
//!
//! containerd 1.6 does not network containers itself (only its CRI plugin does), so the backend
//! drives the plugins as the CNI specification describes: each is an executable that gets
//! `CNI_*` variables and its JSON configuration on stdin, and answers with a JSON result. We
//! invoke them directly: the Rust CNI client crates we looked at read configuration from fixed
//! system directories and drop plugin errors, and an error here must reach the user.
//!
//! Lifetimes: the network namespace (`/run/netns/tpcm-<namespace>-<id>`), its addresses and
//! forwarding rules exist from the container's first start until it is deleted or detached
//! for an upgrade; all of it lives under `/run`, so a reboot clears it and the next start makes
//! it anew. A state file per container remembers the ports, so a teardown needs nothing else.

use super::Error;
use crate::tpc_spec::PortMapping;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian installs the plugins; `TPCM_CNI_PATH` overrides it.
const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";
/// The Linux bridge bridged containers are attached to, with the default subnet.
const DEFAULT_BRIDGE: &str = "tpcm0";
/// Addresses handed out on the bridge unless tpcm.toml's `bridge_subnet` names others (the
/// gateway is the subnet's first address).
pub(crate) const DEFAULT_SUBNET: &str = "10.213.0.0/16";
/// Where the host-local plugin records its allocations, and tpcm its state files.
const RUN_DIR: &str = "/run/tpcm/cni";
/// The CNI specification version of our configurations.
const CNI_VERSION: &str = "1.0.0";
/// Network name in the configurations (also part of portmap's iptables chain names).
const NETWORK: &str = "tpcm";
/// Container label that marks a bridged container; its value is the JSON list of ports.
pub(crate) const NETWORK_LABEL: &str = "io.tpcm.network.ports";

fn plugin_dir() -> PathBuf {
    std::env::var_os("TPCM_CNI_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_PLUGIN_DIR.into())
}

/// The network namespace name of container `id` in containerd namespace `namespace`.
fn netns_name(namespace: &str, id: &str) -> String {
    format!("tpcm-{namespace}-{id}")
}

/// The path a bridged container's spec joins.
pub(crate) fn netns_path(namespace: &str, id: &str) -> PathBuf {
    Path::new("/run/netns").join(netns_name(namespace, id))
}

fn state_path(namespace: &str, id: &str) -> PathBuf {
    Path::new(RUN_DIR)
        .join("state")
        .join(format!("{}.json", netns_name(namespace, id)))
}

/// Made once every plugin's ADD succeeded, removed first by a detach: a state file and a
/// namespace without it are what a crash in the middle of either leaves.
fn ready_path(namespace: &str, id: &str) -> PathBuf {
    Path::new(RUN_DIR)
        .join("state")
        .join(format!("{}.ready", netns_name(namespace, id)))
}

/// What a state file holds: whose network it is (file names alone are ambiguous, since both a
/// namespace and an id may contain `-`) and the ports a teardown needs.
#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    namespace: String,
    id: String,
    ports: Vec<PortMapping>,
}

/// The ports a state file records, in today's format or the bare list earlier versions wrote.
fn read_state(path: &Path) -> Option<(Option<State>, Vec<PortMapping>)> {
    let bytes = std::fs::read(path).ok()?;
    if let Ok(state) = serde_json::from_slice::<State>(&bytes) {
        let ports = state.ports.clone();
        return Some((Some(state), ports));
    }
    serde_json::from_slice(&bytes).ok().map(|ports| (None, ports))
}

fn write_state(path: &Path, namespace: &str, id: &str, ports: &[PortMapping]) -> Result<(), Error> {
    let bytes = serde_json::to_vec(&State {
        namespace: namespace.to_string(),
        id: id.to_string(),
        ports: ports.to_vec(),
    })
    .expect("a state serializes");
    std::fs::write(path, bytes).map_err(|e| network_error(id, format!("{}: {e}", path.display())))
}

/// The containers of `namespace` that have a bridge network now (a state file). Files written
/// by versions that did not record their owner are not counted: they cannot be told apart
/// from another namespace's.
pub(crate) fn attached(namespace: &str) -> Vec<String> {
    let prefix = format!("tpcm-{namespace}-");
    let Ok(entries) = std::fs::read_dir(Path::new(RUN_DIR).join("state")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".json")
        })
        .filter_map(|e| read_state(&e.path())?.0)
        .filter(|state| state.namespace == namespace)
        .map(|state| state.id)
        .collect();
    ids.sort();
    ids
}

fn network_error(id: &str, what: impl std::fmt::Display) -> Error {
    Error::Unexpected {
        op: format!("bridge network for {id}"),
        detail: what.to_string(),
    }
}

/// Runs `ip netns <args>`.
fn ip_netns(id: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .arg("netns")
        .args(args)
        .output()
        .map_err(|e| network_error(id, format!("cannot run ip (iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(network_error(
            id,
            format!(
                "ip netns {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// The CNI variables and stdin for one plugin call.
struct Call<'a> {
    command: &'a str,
    container_id: String,
    netns: PathBuf,
    config: serde_json::Value,
}

/// Runs one plugin; returns its result JSON (empty for DEL).
fn invoke(id: &str, call: &Call<'_>) -> Result<serde_json::Value, Error> {
    let plugin = call.config["type"].as_str().unwrap_or_default().to_string();
    let exe = plugin_dir().join(&plugin);
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", &call.container_id)
        .env("CNI_NETNS", &call.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            network_error(
                id,
                format!(
                    "cannot run the CNI plugin {} ({e}); install containernetworking-plugins",
                    exe.display()
                ),
            )
        })?;
    let input = serde_json::to_vec(&call.config).expect("JSON serializes");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| network_error(id, format!("CNI plugin {plugin}: {e}")))?;
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    if out.status.success() {
        return Ok(parsed);
    }
    let msg = parsed["msg"].as_str().map(str::to_string).unwrap_or_else(|| {
        let err = String::from_utf8_lossy(&out.stderr);
        let outp = String::from_utf8_lossy(&out.stdout);
        format!("{} {}", outp.trim(), err.trim())
    });
    Err(network_error(
        id,
        format!("CNI plugin {plugin} {} failed: {}", call.command, msg.trim()),
    ))
}

fn loopback_config() -> serde_json::Value {
    serde_json::json!({"cniVersion": CNI_VERSION, "name": NETWORK, "type": "loopback"})
}

/// The bridge for `subnet`: one per subnet, because the bridge plugin refuses to give a bridge
/// a second IPv4 address. So a changed `bridge_subnet` takes effect for containers attached
/// afterwards, while those running keep their addresses on the old bridge until they restart.
fn bridge_name(subnet: &str) -> String {
    use sha2::Digest as _;
    if subnet == DEFAULT_SUBNET {
        return DEFAULT_BRIDGE.to_string();
    }
    // "tpcm" + 8 hex digits: within the 15 characters an interface name may have.
    format!(
        "tpcm{}",
        hex::encode(&sha2::Sha256::digest(subnet.as_bytes())[..4])
    )
}

fn bridge_config(subnet: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "bridge",
        "bridge": bridge_name(subnet),
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": format!("{RUN_DIR}/ipam"),
        },
    })
}

fn portmap_config(ports: &[PortMapping], prev: Option<serde_json::Value>) -> serde_json::Value {
    let maps: Vec<_> = ports
        .iter()
        .map(
            |p| serde_json::json!({"hostPort": p.host, "containerPort": p.container, "protocol": p.protocol}),
        )
        .collect();
    let mut c = serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "snat": true,
        "runtimeConfig": {"portMappings": maps},
    });
    if let Some(prev) = prev {
        c["prevResult"] = prev;
    }
    c
}

/// Gives container `id` its network namespace on the bridge with `ports` forwarded and an
/// address from `subnet`, unless it has it already. Nothing is left when it fails.
pub(crate) fn attach(namespace: &str, id: &str, ports: &[PortMapping], subnet: &str) -> Result<(), Error> {
    let state = state_path(namespace, id);
    let ready = ready_path(namespace, id);
    // Attached before (a stopped container keeps its namespace): reuse it.
    if ready.exists() && state.exists() && netns_path(namespace, id).exists() {
        // A state file from a tpcm that did not record the owner gets it now, so the janitor
        // can tell whose it is once the container is gone.
        if let Some((None, ports)) = read_state(&state) {
            write_state(&state, namespace, id, &ports)?;
        }
        return Ok(());
    }
    // Anything less is what a reboot (state without its namespace) or a crash halfway through an
    // attach or a detach leaves: clear its remains first.
    detach(namespace, id, subnet)?;
    std::fs::create_dir_all(state.parent().expect("state files live in a directory"))
        .map_err(|e| network_error(id, format!("cannot create {RUN_DIR}: {e}")))?;
    ip_netns(id, &["add", &netns_name(namespace, id)])?;
    let attached = (|| {
        // Written first, so a failure halfway is torn down like a finished attach.
        write_state(&state, namespace, id, ports)?;
        let call = |config| Call {
            command: "ADD",
            container_id: format!("{namespace}-{id}"),
            netns: netns_path(namespace, id),
            config,
        };
        invoke(id, &call(loopback_config()))?;
        let result = invoke(id, &call(bridge_config(subnet)))?;
        if !ports.is_empty() {
            invoke(id, &call(portmap_config(ports, Some(result))))?;
        }
        std::fs::write(&ready, b"").map_err(|e| network_error(id, format!("{}: {e}", ready.display())))
    })();
    if attached.is_err() {
        let _ = detach(namespace, id, subnet);
    }
    attached
}

/// Takes container `id` off the bridge: forwarding rules, address, interfaces, namespace.
/// Idempotent; a container that never had a bridge is fine. `subnet` only makes the plugins'
/// configuration valid: the address is released by container, whatever range it came from.
pub(crate) fn detach(namespace: &str, id: &str, subnet: &str) -> Result<(), Error> {
    let state = state_path(namespace, id);
    let netns = netns_path(namespace, id);
    // First, so a detach cut short is not taken for a finished attach.
    match std::fs::remove_file(ready_path(namespace, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(network_error(
                id,
                format!("{}: {e}", ready_path(namespace, id).display()),
            ));
        }
        _ => {}
    }
    let ports = read_state(&state).map(|(_, ports)| ports);
    if let Some(ports) = &ports {
        let call = |config| Call {
            command: "DEL",
            container_id: format!("{namespace}-{id}"),
            netns: netns.clone(),
            config,
        };
        // In the reverse order of ADD; DEL must succeed on a half-made attach, so an error here
        // is real (iptables or the namespace refused).
        if !ports.is_empty() {
            invoke(id, &call(portmap_config(ports, None)))?;
        }
        invoke(id, &call(bridge_config(subnet)))?;
        invoke(id, &call(loopback_config()))?;
    }
    // The namespace is empty now but still there: the next attach must not reuse it.
    crate::crash::point("cni:interfaces-removed");
    if netns.exists() {
        ip_netns(id, &["delete", &netns_name(namespace, id)])?;
    }
    match std::fs::remove_file(&state) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(network_error(id, format!("{}: {e}", state.display()))),
    }
}

/// Sets the network namespace of a spec to container `id`'s bridge namespace.
pub(crate) fn join_netns(spec: &mut oci_spec::runtime::Spec, namespace: &str, id: &str) {
    use oci_spec::runtime::LinuxNamespaceType;
    let path = netns_path(namespace, id);
    if let Some(linux) = spec.linux_mut()
        && let Some(namespaces) = linux.namespaces_mut()
    {
        for ns in namespaces.iter_mut() {
            if ns.typ() == LinuxNamespaceType::Network {
                ns.set_path(Some(path.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subnet_has_its_own_bridge_with_a_valid_interface_name() {
        assert_eq!(bridge_name(DEFAULT_SUBNET), "tpcm0");
        let other = bridge_name("10.214.7.0/24");
        assert!(other.starts_with("tpcm") && other.len() <= 15, "{other}");
        assert_ne!(other, bridge_name("10.214.8.0/24"));
        assert_eq!(bridge_config("10.214.7.0/24")["bridge"], other.as_str());
        assert_eq!(
            bridge_config("10.214.7.0/24")["ipam"]["ranges"][0][0]["subnet"],
            "10.214.7.0/24"
        );
    }

    #[test]
    fn the_portmap_configuration_carries_the_ports_and_the_previous_result() {
        let ports = vec![PortMapping {
            host: 8080,
            container: 80,
            protocol: "tcp".into(),
        }];
        let c = portmap_config(&ports, Some(serde_json::json!({"ips": []})));
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["containerPort"], 80);
        assert_eq!(c["prevResult"]["ips"], serde_json::json!([]));
        assert!(portmap_config(&ports, None).get("prevResult").is_none());
        assert_eq!(netns_path("tpcm", "web"), Path::new("/run/netns/tpcm-tpcm-web"));
    }

    #[test]
    fn state_files_name_their_owner_and_earlier_ones_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tpcm-a-b-c.json");
        let ports = vec![PortMapping {
            host: 8080,
            container: 80,
            protocol: "tcp".into(),
        }];
        write_state(&path, "a-b", "c", &ports).unwrap();
        let (owner, read) = read_state(&path).unwrap();
        let owner = owner.unwrap();
        assert_eq!((owner.namespace.as_str(), owner.id.as_str()), ("a-b", "c"));
        assert_eq!(read, ports);
        // What earlier versions wrote: the ports alone.
        std::fs::write(&path, serde_json::to_vec(&ports).unwrap()).unwrap();
        let (owner, read) = read_state(&path).unwrap();
        assert!(owner.is_none());
        assert_eq!(read, ports);
        std::fs::write(&path, b"{broken").unwrap();
        assert!(read_state(&path).is_none());
    }
}
