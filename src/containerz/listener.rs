//! What stands between the network and the gRPC service: `tpcm serve` accepts TCP and runs the
//! TLS handshakes itself, so that nobody — authenticated or not — can hold the server's files,
//! threads or calls without bound.
//!
//! - **Connections**: at most `max_connections` open at once, and `max_connections_per_address`
//!   from one client address; a connection over either cap is closed as soon as it is accepted,
//!   before any TLS work.
//! - **Handshakes** must finish within `handshake_timeout`, or the connection is closed.
//! - **Idle connections**: one on which no call has been open for `idle_timeout` is closed (the
//!   client reconnects when it next calls). HTTP/2 keepalive pings (`serve.rs`) notice peers that
//!   vanished.
//! - **Write calls** (all but the listing and log calls, and Deploy, which has caps of its own in
//!   `images.rs`) run at most [`MAX_WRITE_CALLS`] at a time; more wait their turn without holding
//!   a thread. Each holds a blocking thread while it runs, so a write client cannot take the
//!   threads readers, the janitor and the restart supervisor need.
//!
//! The TLS settings are swapped as a whole on SIGHUP ([`TlsHandle::replace`]); connections
//! already open keep theirs.

use super::tls::Tls;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// Default time a client has to finish its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on open connections (handshaking or established).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default cap on open connections from one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 16;
/// Default time a connection may stay without a call before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Write calls running at once (Deploy aside); more wait for one to end.
pub const MAX_WRITE_CALLS: usize = 16;
/// The calls that only read (`auth.rs` gives them the read scope); Deploy is bounded by its
/// own caps. Every other method, known or not, counts as a write call.
const UNBOUNDED_CALLS: [&str; 6] = [
    "ListImage",
    "ListContainer",
    "Log",
    "ListVolume",
    "ListPlugins",
    "Deploy",
];
/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per this period about refused connections or failed accepts.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The connection limits (`tpcm serve` flags and `[serve]` keys).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one address at most.
    pub max_per_address: usize,
    /// Longest time without a call before a connection is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// The TLS settings new connections get; replaced on SIGHUP.
#[derive(Clone)]
pub struct TlsHandle(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl TlsHandle {
    /// A handle on `tls`'s settings.
    pub fn new(tls: &Tls) -> TlsHandle {
        TlsHandle(Arc::new(RwLock::new(tls.config.clone())))
    }

    /// New connections get `tls`'s settings from now on.
    pub fn replace(&self, tls: &Tls) {
        *self.0.write().expect("never poisoned") = tls.config.clone();
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.0.read().expect("never poisoned").clone()
    }
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Table {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One place in the [`Table`], given back when the connection closes.
struct Slot {
    table: Arc<Mutex<Table>>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.lock().expect("never poisoned");
        t.total -= 1;
        if let Some(n) = t.per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                t.per_address.remove(&self.address);
            }
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Total,
    PerAddress,
}

fn admit(table: &Arc<Mutex<Table>>, limits: &ConnectionLimits, address: IpAddr) -> Result<Slot, Refusal> {
    let mut t = table.lock().expect("never poisoned");
    if t.total >= limits.max_connections {
        return Err(Refusal::Total);
    }
    let from_address = t.per_address.entry(address).or_default();
    if *from_address >= limits.max_per_address {
        return Err(Refusal::PerAddress);
    }
    *from_address += 1;
    t.total += 1;
    Ok(Slot {
        table: table.clone(),
        address,
    })
}

/// A warning that is logged at most once per [`WARN_EVERY`] (a flood must not flood the log).
#[derive(Default)]
struct RareWarning(Mutex<Option<Instant>>);

impl RareWarning {
    fn warn(&self, message: impl FnOnce() -> String) {
        let mut last = self.0.lock().expect("never poisoned");
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!("{}", message());
        }
    }
}

/// Accepts connections on `listener` until the returned stream is dropped: each one admitted
/// by the caps and through its TLS handshake in time comes out of the stream (for tonic's
/// `serve_with_incoming`).
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: TlsHandle,
    calls: Arc<Calls>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Conn, io::Error>> {
    // Established connections wait here for the server to take them; few, since it takes them
    // at once.
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let table = Arc::new(Mutex::new(Table::default()));
        let (over_total, over_address, failing) = (
            RareWarning::default(),
            RareWarning::default(),
            RareWarning::default(),
        );
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        failing.warn(|| format!("cannot accept connections: {e}"));
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let address = peer.ip().to_canonical();
            let slot = match admit(&table, &limits, address) {
                Ok(slot) => slot,
                Err(why) => {
                    drop(tcp);
                    match why {
                        Refusal::Total => over_total.warn(|| {
                            format!(
                                "refusing connections: {} are open (max_connections)",
                                limits.max_connections
                            )
                        }),
                        Refusal::PerAddress => over_address.warn(|| {
                            format!(
                                "refusing connections from {address}: {} are open from it \
                                 (max_connections_per_address)",
                                limits.max_per_address
                            )
                        }),
                    }
                    continue;
                }
            };
            let (tx, config, calls) = (tx.clone(), tls.current(), calls.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let idle = limits
                            .idle_timeout
                            .map(|timeout| Idle::new(&calls, peer, timeout));
                        let conn = Conn {
                            tls: stream,
                            _slot: slot,
                            idle,
                        };
                        // Fails only when the server stopped; the connection is then closed.
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// An established connection: the TLS stream, its place under the caps, and its idle watch.
pub struct Conn {
    tls: TlsStream<TcpStream>,
    _slot: Slot,
    idle: Option<Idle>,
}

impl Connected for Conn {
    // What tonic's own TLS gives: `Request::peer_certs` reads it.
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tls.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(idle) = &mut this.idle
            && idle.expired(cx)
        {
            // An end of stream: the HTTP/2 connection ends as if the client had closed it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

/// The calls open on one connection, and since when none is.
struct ConnCalls {
    open: std::sync::atomic::AtomicUsize,
    since: Mutex<Instant>,
    /// The connection's reader, woken when its last call ends so it starts the idle clock.
    reader: Mutex<Option<Waker>>,
}

/// Every open connection's [`ConnCalls`], by the client's address and port (what a call's
/// request says about its connection), and the write calls' turns.
pub struct Calls {
    connections: Mutex<HashMap<SocketAddr, Arc<ConnCalls>>>,
    writes: Arc<Semaphore>,
}

impl Calls {
    /// No connection yet; [`MAX_WRITE_CALLS`] write calls at once.
    pub fn new() -> Arc<Calls> {
        Arc::new(Calls {
            connections: Mutex::default(),
            writes: Arc::new(Semaphore::new(MAX_WRITE_CALLS)),
        })
    }

    fn of(&self, peer: SocketAddr) -> Option<Arc<ConnCalls>> {
        self.connections
            .lock()
            .expect("never poisoned")
            .get(&peer)
            .cloned()
    }
}

/// A connection's idle clock.
struct Idle {
    calls: Arc<Calls>,
    peer: SocketAddr,
    state: Arc<ConnCalls>,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl Idle {
    fn new(calls: &Arc<Calls>, peer: SocketAddr, timeout: Duration) -> Idle {
        let state = Arc::new(ConnCalls {
            open: Default::default(),
            since: Mutex::new(Instant::now()),
            reader: Mutex::default(),
        });
        calls
            .connections
            .lock()
            .expect("never poisoned")
            .insert(peer, state.clone());
        Idle {
            calls: calls.clone(),
            peer,
            state,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
        }
    }

    /// Whether the connection has been without a call for the timeout; otherwise arranges to
    /// be polled again when it will have been.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        {
            let mut reader = self.state.reader.lock().expect("never poisoned");
            if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *reader = Some(cx.waker().clone());
            }
        }
        if self.state.open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return false;
        }
        let since = *self.state.since.lock().expect("never poisoned");
        let deadline = tokio::time::Instant::from_std(since + self.timeout);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.expired = self.sleep.as_mut().poll(cx).is_ready();
        if self.expired {
            tracing::debug!(peer = %self.peer, "closing a connection idle for {:?}", self.timeout);
        }
        self.expired
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        let mut connections = self.calls.connections.lock().expect("never poisoned");
        // A new connection may have the same address and port already (after a quick reconnect).
        if connections
            .get(&self.peer)
            .is_some_and(|s| Arc::ptr_eq(s, &self.state))
        {
            connections.remove(&self.peer);
        }
    }
}

/// One open call: counted on its connection from the request until the response body ends.
struct CallGuard(Option<Arc<ConnCalls>>);

impl CallGuard {
    fn new(state: Option<Arc<ConnCalls>>) -> CallGuard {
        if let Some(s) = &state {
            s.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        CallGuard(state)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let Some(s) = &self.0 else { return };
        if s.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            *s.since.lock().expect("never poisoned") = Instant::now();
            if let Some(w) = s.reader.lock().expect("never poisoned").take() {
                w.wake();
            }
        }
    }
}

/// A response body that keeps its call counted until it is finished or dropped.
struct GuardedBody {
    body: Body,
    _call: CallGuard,
}

impl HttpBody for GuardedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The gRPC service wrapped to count calls per connection (the idle policy) and to bound write
/// calls.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    calls: Arc<Calls>,
}

impl<S> Tracked<S> {
    /// `inner` with its calls counted in `calls`.
    pub fn new(inner: S, calls: Arc<Calls>) -> Tracked<S> {
        Tracked { inner, calls }
    }
}

impl<S: NamedService> NamedService for Tracked<S> {
    const NAME: &'static str = S::NAME;
}

/// Whether a call of this path runs under the write-call bound.
fn bounded(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    !UNBOUNDED_CALLS.contains(&method)
}

impl<S> Service<Request<Body>> for Tracked<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let peer = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.get_ref().remote_addr());
        let call = CallGuard::new(peer.and_then(|p| self.calls.of(p)));
        let writes = bounded(request.uri().path()).then(|| self.calls.writes.clone());
        // The clone that was polled ready serves this call (tower's rule); a fresh one waits.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let _turn = match writes {
                Some(w) => Some(w.acquire_owned().await.expect("never closed")),
                None => None,
            };
            // A unary call's work is done when its response is; streaming calls are not bounded.
            let response = inner.call(request).await?;
            Ok(response.map(|body| Body::new(GuardedBody { body, _call: call })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_count_connections_in_all_and_per_address() {
        let table = Arc::new(Mutex::new(Table::default()));
        let limits = ConnectionLimits {
            max_connections: 3,
            max_per_address: 2,
            ..Default::default()
        };
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.3".parse::<IpAddr>().unwrap().to_canonical();
        let a1 = admit(&table, &limits, a).unwrap();
        let _a2 = admit(&table, &limits, a).unwrap();
        assert_eq!(admit(&table, &limits, a).err(), Some(Refusal::PerAddress));
        let _b1 = admit(&table, &limits, b).unwrap();
        assert_eq!(admit(&table, &limits, b).err(), Some(Refusal::Total));
        drop(a1);
        let _a3 = admit(&table, &limits, a).unwrap();
        assert_eq!(table.lock().unwrap().per_address[&a], 2);
        assert_eq!(table.lock().unwrap().total, 3);
    }

    /// A service whose calls wait for `gate`, counting how many run at once.
    #[derive(Clone)]
    struct Gated {
        gate: Arc<Semaphore>,
        running: Arc<std::sync::atomic::AtomicUsize>,
        most: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Service<Request<Body>> for Gated {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            use std::sync::atomic::Ordering::SeqCst;
            let this = self.clone();
            Box::pin(async move {
                let n = this.running.fetch_add(1, SeqCst) + 1;
                this.most.fetch_max(n, SeqCst);
                let _pass = this.gate.acquire().await.unwrap();
                this.running.fetch_sub(1, SeqCst);
                Ok(Response::new(Body::empty()))
            })
        }
    }

    #[tokio::test]
    async fn write_calls_run_at_most_16_at_once_and_reads_pass_them() {
        use std::sync::atomic::Ordering::SeqCst;
        let gated = Gated {
            gate: Arc::new(Semaphore::new(0)),
            running: Default::default(),
            most: Default::default(),
        };
        let tracked = Tracked::new(gated.clone(), Calls::new());
        let call = |method: &str| {
            let mut t = tracked.clone();
            let request = Request::builder()
                .uri(format!("/gnoi.containerz.Containerz/{method}"))
                .body(Body::empty())
                .unwrap();
            tokio::spawn(async move { t.call(request).await })
        };
        let mut calls: Vec<_> = (0..40).map(|_| call("StopContainer")).collect();
        calls.extend((0..5).map(|_| call("ListContainer")));
        let deadline = Instant::now() + Duration::from_secs(10);
        while gated.running.load(SeqCst) < MAX_WRITE_CALLS + 5 {
            assert!(
                Instant::now() < deadline,
                "{} running",
                gated.running.load(SeqCst)
            );
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gated.running.load(SeqCst), MAX_WRITE_CALLS + 5);
        gated.gate.add_permits(1000);
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert_eq!(gated.most.load(SeqCst), MAX_WRITE_CALLS + 5);
    }

    #[test]
    fn only_reads_and_deploy_escape_the_write_bound() {
        assert!(!bounded("/gnoi.containerz.Containerz/ListContainer"));
        assert!(!bounded("/gnoi.containerz.Containerz/Log"));
        assert!(!bounded("/gnoi.containerz.Containerz/Deploy"));
        assert!(bounded("/gnoi.containerz.Containerz/StartContainer"));
        assert!(bounded("/gnoi.containerz.Containerz/SomethingNew"));
    }
}
