//! Where a download's connections leave from: a network device and/or a local address.
//!
//! SONiC operators keep management traffic in a management VRF (`mgmt`); a download asked to leave
//! through it must not take the default routing table. Binding a socket to a VRF master device is
//! the same `SO_BINDTODEVICE` as binding to any interface: the kernel then routes the connection
//! with that device's (the VRF's) table. A local address is bound with `bind(2)` before
//! `connect(2)`.
//!
//! An [`Egress`] is checked when it is made — the device exists, the address is one of this host's
//! and, with both, sits on that device or on a device enslaved to it — so a typo fails before
//! anything is fetched, with one line naming it. Host names are still resolved by the system
//! resolver (as `ip vrf exec` would not change either: resolv.conf names the servers).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// Where outbound connections leave from. The default leaves it to the routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    device: Option<String>,
    address: Option<IpAddr>,
}

/// Where the kernel lists network devices (and each one's VRF master, as `master`).
const NET_CLASS: &str = "/sys/class/net";

impl Egress {
    /// Checks a device name (a VRF such as `mgmt`, or any interface) and a local address, each
    /// optional. An unknown device, a string that is not an address, an address that is not
    /// this host's, or one outside the device's VRF is an error saying which.
    pub fn new(device: Option<&str>, address: Option<&str>) -> Result<Egress, String> {
        let device = match device {
            None => None,
            Some(name) => {
                check_device_name(name)?;
                if !Path::new(NET_CLASS).join(name).exists() {
                    return Err(format!(
                        "source VRF {name:?}: this host has no network device of that name"
                    ));
                }
                Some(name.to_string())
            }
        };
        let address = match address {
            None => None,
            Some(text) => {
                let ip: IpAddr = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("source address {text:?} is not an IP address"))?;
                let owners = devices_with_address(ip)?;
                if owners.is_empty() {
                    return Err(format!("source address {ip} is not an address of this host"));
                }
                if let Some(dev) = &device
                    && !owners
                        .iter()
                        .any(|o| o == dev || master_of(o).as_deref() == Some(dev))
                {
                    return Err(format!(
                        "source address {ip} is on {}, which is neither {dev} nor a device in VRF {dev}",
                        owners.join(", ")
                    ));
                }
                Some(ip)
            }
        };
        Ok(Egress { device, address })
    }

    /// The device sockets are bound to (`SO_BINDTODEVICE`), if any.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// The local address sockets are bound to, if any.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// Whether anything is asked beyond the routing table's choice.
    pub fn is_set(&self) -> bool {
        self.device.is_some() || self.address.is_some()
    }

    /// Whether a destination can be reached from here: with a source address, only one of the
    /// same family can (the other family would leave unbound, from an address nobody chose).
    pub fn reaches(&self, destination: IpAddr) -> bool {
        self.address.is_none_or(|a| a.is_ipv4() == destination.is_ipv4())
    }

    /// ` from <device>, <address>`, for messages; empty by default.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .device
            .iter()
            .map(|d| format!("VRF/device {d}"))
            .chain(self.address.iter().map(|a| format!("address {a}")))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" from {}", parts.join(" and "))
        }
    }

    /// The addresses `host` resolves to that can be reached from here.
    pub async fn resolve(&self, host: &str, port: u16, limit: Duration) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = tokio::time::timeout(limit, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| format!("cannot resolve {host}: no answer within {} s", limit.as_secs()))?
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        let usable: Vec<SocketAddr> = found.iter().copied().filter(|a| self.reaches(a.ip())).collect();
        match (usable.is_empty(), self.address) {
            (true, Some(source)) => Err(format!(
                "{host} has no {} address to reach from source address {source}",
                if source.is_ipv4() { "IPv4" } else { "IPv6" }
            )),
            (true, None) => Err(format!("{host} resolves to no address")),
            (false, _) => Ok(usable),
        }
    }

    /// A TCP connection to `host:port` leaving from here: each address `host` resolves to is
    /// tried in turn, each within `limit`. The error names the last address tried and why.
    pub async fn connect(&self, host: &str, port: u16, limit: Duration) -> Result<TcpStream, String> {
        let mut why = String::new();
        for addr in self.resolve(host, port, limit).await? {
            match tokio::time::timeout(limit, self.connect_to(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => why = format!("{addr}{}: {e}", self.describe()),
                Err(_) => {
                    why = format!(
                        "{addr}{}: no answer within {} s",
                        self.describe(),
                        limit.as_secs()
                    )
                }
            }
        }
        Err(why)
    }

    async fn connect_to(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(device) = &self.device {
            socket
                .bind_device(Some(device.as_bytes()))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to device {device}: {e}")))?;
        }
        if let Some(address) = self.address {
            socket
                .bind(SocketAddr::new(address, 0))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to address {address}: {e}")))?;
        }
        socket.connect(addr).await
    }
}

/// Linux's rule for interface names (dev_valid_name): 1 to 15 bytes, no `/`, `:` or whitespace,
/// not `.` or `..`. Checked first so that a name can never walk out of /sys/class/net.
fn check_device_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(format!("source VRF {name:?} is not a network device name"));
    }
    Ok(())
}

/// The devices that carry `ip`.
fn devices_with_address(ip: IpAddr) -> Result<Vec<String>, String> {
    let all = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list this host's addresses: {e}"))?;
    let mut owners = Vec::new();
    for entry in all {
        let Some(address) = entry.address else { continue };
        let found = address
            .as_sockaddr_in()
            .map(|a| IpAddr::V4(a.ip()))
            .or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())));
        if found == Some(ip) && !owners.contains(&entry.interface_name) {
            owners.push(entry.interface_name);
        }
    }
    Ok(owners)
}

/// The VRF (or bridge, bond) a device is enslaved to.
fn master_of(device: &str) -> Option<String> {
    let link = std::fs::read_link(Path::new(NET_CLASS).join(device).join("master")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_binds_nothing() {
        let e = Egress::new(None, None).unwrap();
        assert_eq!(e, Egress::default());
        assert!(!e.is_set());
        assert_eq!(e.describe(), "");
        assert!(e.reaches("192.0.2.1".parse().unwrap()));
        assert!(e.reaches("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn loopback_is_a_device_and_an_address_of_every_host() {
        let e = Egress::new(Some("lo"), Some("127.0.0.1")).unwrap();
        assert_eq!(e.device(), Some("lo"));
        assert_eq!(e.address(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(e.describe(), " from VRF/device lo and address 127.0.0.1");
        // Only IPv4 destinations can be reached from an IPv4 address.
        assert!(e.reaches("127.0.0.2".parse().unwrap()));
        assert!(!e.reaches("::1".parse().unwrap()));
    }

    #[test]
    fn unknown_devices_and_foreign_addresses_are_refused_by_name() {
        let err = Egress::new(Some("tpcm-no-dev"), None).unwrap_err();
        assert!(
            err.contains("tpcm-no-dev") && err.contains("no network device"),
            "{err}"
        );
        for bad in ["", "../lo", "a/b", "has space", "sixteen-chars-xx"] {
            let err = Egress::new(Some(bad), None).unwrap_err();
            assert!(err.contains("not a network device name"), "{bad:?}: {err}");
        }
        // TEST-NET-3 is never assigned to a host.
        let err = Egress::new(None, Some("203.0.113.77")).unwrap_err();
        assert!(
            err.contains("203.0.113.77") && err.contains("not an address of this host"),
            "{err}"
        );
        let err = Egress::new(None, Some("mgmt")).unwrap_err();
        assert!(err.contains("not an IP address"), "{err}");
    }

    #[tokio::test]
    async fn connections_are_made_from_the_bound_device_and_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let egress = Egress::new(Some("lo"), Some("127.0.0.1")).unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().1 });
        let stream = egress
            .connect("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(accept.await.unwrap(), stream.local_addr().unwrap());
        // (Whether the binding decides where a connection leaves from is shown in
        // tests/source_egress.rs, with devices in a network namespace.)
        let err = egress
            .connect("::1", port, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("::1 has no IPv4 address"), "{err}");
    }
}
