//! A SOCKS5 relay on loopback whose outbound connections leave from an [`Egress`].
//!
//! oci-client (0.18) builds its own HTTP client and offers no way to bind its sockets: no local
//! address, no interface, no client of ours. It does take a proxy, and reqwest speaks SOCKS5 to
//! one for http and https alike. So a registry pull that must leave from a VRF or an address is
//! sent through this relay, which makes every connection with [`Egress::connect`]. TLS stays end
//! to end (the relay passes bytes; names are resolved here, `socks5h`), and so do redirects to
//! other hosts (blob storage, token servers): each is one more relayed connection.
//!
//! The relay serves one pull: it listens on 127.0.0.1 and takes only clients that know the user
//! name and password made for it, so no other local process can borrow the VRF through it. It
//! stops when dropped; connections already relayed end with their client.

use super::Egress;
use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A running relay; see the module docs.
pub struct Relay {
    url: String,
    accepting: tokio::task::JoinHandle<()>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Relay {
    /// Starts relaying on a free loopback port; each outbound connection leaves from `egress`
    /// and must be made within `limit`.
    pub async fn start(egress: Egress, limit: Duration) -> Result<Relay, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot start the relay for a source VRF/address: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (user, password) = (secret()?, secret()?);
        let failure = Arc::new(Mutex::new(None));
        let accepting = tokio::spawn({
            let (user, password, failure) = (user.clone(), password.clone(), failure.clone());
            let egress = Arc::new(egress);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (egress, failure) = (egress.clone(), failure.clone());
                    let (user, password) = (user.clone(), password.clone());
                    tokio::spawn(async move {
                        if let Err(why) = relay(client, &user, &password, &egress, limit, &failure).await {
                            tracing::debug!("relay: {why}");
                        }
                    });
                }
            }
        });
        Ok(Relay {
            url: format!("socks5h://{user}:{password}@127.0.0.1:{port}"),
            accepting,
            failure,
        })
    }

    /// The proxy URL to give the HTTP client (it carries the relay's credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Why the last relayed connection failed, if one did: the client only hears a SOCKS reply
    /// code ("host unreachable"), this says which address and why.
    pub fn last_failure(&self) -> Option<String> {
        self.failure.lock().expect("never poisoned").clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// 128 random bits, hex.
fn secret() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom(&mut bytes).map_err(|e| format!("cannot make the relay's password: {e}"))?;
    Ok(hex::encode(bytes))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(())
}

/// One client connection: authenticate, read its CONNECT, connect from the egress, then pass
/// bytes both ways until either side closes.
/// A failed outbound connection is also recorded in `failure`.
async fn relay(
    client: TcpStream,
    user: &str,
    password: &str,
    egress: &Egress,
    limit: Duration,
    failure: &Mutex<Option<String>>,
) -> Result<(), String> {
    // A client without the credentials is refused here (and told so, as RFC 1929 says).
    let (proto, _) = Socks5ServerProtocol::accept_password_auth(client, |u, p| u == user && p == password)
        .await
        .map_err(|e| format!("a client failed the handshake: {e}"))?;
    let (proto, command, target) = proto
        .read_command()
        .await
        .map_err(|e| format!("a client sent a bad request: {e}"))?;
    if command != Socks5Command::TCPConnect {
        let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
        return Err(format!("a client asked for {command:?}, not a connection"));
    }
    let (host, port) = match &target {
        TargetAddr::Ip(addr) => (addr.ip().to_string(), addr.port()),
        TargetAddr::Domain(name, port) => (name.clone(), *port),
    };
    let mut outbound = match egress.connect(&host, port, limit).await {
        Ok(stream) => stream,
        Err(why) => {
            let _ = proto.reply_error(&ReplyError::HostUnreachable).await;
            // `why` names the address tried; a name is worth adding.
            let why = match &target {
                TargetAddr::Ip(_) => format!("cannot connect to {why}"),
                TargetAddr::Domain(..) => format!("cannot connect to {host}:{port}: {why}"),
            };
            *failure.lock().expect("never poisoned") = Some(why.clone());
            return Err(why);
        }
    };
    let local = outbound.local_addr().map_err(|e| e.to_string())?;
    let mut inbound = proto
        .reply_success(local)
        .await
        .map_err(|e| format!("cannot answer the client: {e}"))?;
    // Either side closing (or failing) ends the relay; the HTTP client reports its own errors.
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    Ok(())
}
