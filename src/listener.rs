//! Sockets: bind, accept, connection limits, the TLS handshake, HTTP serving
//! with limits, idle timeouts, graceful drain, and the optional plain-HTTP
//! listener that only redirects to https. HTTP/1.1 connections and their
//! parking are in `http1`, the PROXY protocol in `proxy_protocol`.

use crate::client_ip::ClientIp;
use crate::gate::{ConnInfo, Gate};
use crate::proxy::{self, Body};
use http::{header, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

mod activity;
mod http1;
mod proxy_protocol;
pub(crate) mod workers;

use activity::{Activity, Tracked};
use http1::Http1;
use proxy_protocol::proxy_protocol_source;
pub use proxy_protocol::{parse_proxy_header, read_proxy_header};
pub use workers::{count as worker_count, index as worker_index};

/// Listening sockets, bound before the gateway reports ready so tests and
/// systemd see the real ports (port 0 works).
pub struct Bound {
    pub tls: Vec<TcpListener>,
    pub redirect: Option<TcpListener>,
}

impl Bound {
    pub async fn bind(tls: &[SocketAddr], redirect: Option<SocketAddr>) -> io::Result<Self> {
        let mut out = Vec::new();
        for addr in tls {
            out.push(bind_one(*addr).await?);
        }
        let redirect = match redirect {
            Some(a) => Some(bind_one(a).await?),
            None => None,
        };
        Ok(Self { tls: out, redirect })
    }
}

async fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Running accept loops; `drain` stops accepting and waits for open
/// connections up to a deadline. Dropped, it stops accepting, and the
/// worker threads beyond the first end with whatever they still serve.
pub struct Serving {
    stop: watch::Sender<bool>,
    tracker: TaskTracker,
    spread: Arc<Vec<Worker>>,
    _threads: Vec<workers::Thread>,
}

/// How many connections each worker thread serves, readable anywhere.
#[derive(Clone)]
pub struct Loads(Arc<Vec<Worker>>);

impl Loads {
    /// Worker 0 (the thread that started the gateway) first.
    pub fn per_worker(&self) -> Vec<usize> {
        self.0
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }
}

impl Serving {
    pub fn loads(&self) -> Loads {
        Loads(self.spread.clone())
    }

    pub async fn drain(self, deadline: Duration) -> bool {
        let _ = self.stop.send(true);
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Accept on every listener, on this thread, which must be inside a tokio
/// runtime and is worker 0; connections are served there and on
/// `server.worker_threads - 1` more threads (`workers`).
pub fn serve(gate: Arc<Gate>, bound: Bound) -> io::Result<Serving> {
    let (stop, stop_rx) = watch::channel(false);
    let tracker = TaskTracker::new();
    let (limits, threads) = {
        let live = gate.live.load();
        let server = &live.settings.server;
        let limits = Arc::new(ConnLimits::new(
            server.limits.max_connections,
            server.limits.max_connections_per_ip,
        ));
        (limits, workers::count(server.worker_threads))
    };
    let https_port = bound
        .tls
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(443, |a| a.port());
    let serving = Connections {
        gate: gate.clone(),
        limits,
        stop: stop_rx.clone(),
        tracker: tracker.clone(),
    };
    let mut spread = vec![Worker {
        load: Arc::new(AtomicUsize::new(0)),
        hand_to: None,
    }];
    let mut threads_running = Vec::with_capacity(threads.saturating_sub(1));
    for index in 1..threads {
        let (hand_to, mut handed) = mpsc::unbounded_channel::<Handed>();
        let load = Arc::new(AtomicUsize::new(0));
        let take = {
            let serving = serving.clone();
            move || {
                // Ends when every accept loop has (they hold the senders).
                tokio::spawn(async move {
                    while let Some(conn) = handed.recv().await {
                        match TcpStream::from_std(conn.tcp) {
                            Ok(tcp) => serving.spawn(tcp, conn.peer, conn.permit, conn.load),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot serve a handed-over connection")
                            }
                        }
                    }
                });
            }
        };
        // A worker's runtime lives until every connection of the gateway
        // has ended after a drain (the tracker is closed only then).
        let drained = {
            let (mut stop, tracker) = (stop_rx.clone(), tracker.clone());
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
                tracker.wait().await;
            }
        };
        threads_running.push(workers::spawn(index, take, drained)?);
        spread.push(Worker {
            load,
            hand_to: Some(hand_to),
        });
    }
    let spread = Arc::new(spread);
    for listener in bound.tls {
        tracker.spawn(accept_loop(listener, spread.clone(), serving.clone()));
    }
    if let Some(listener) = bound.redirect {
        tracker.spawn(redirect_loop(
            gate.clone(),
            listener,
            https_port,
            stop_rx.clone(),
            tracker.clone(),
        ));
    }
    Ok(Serving {
        stop,
        tracker,
        spread,
        _threads: threads_running,
    })
}

/// A thread that serves connections, as the accept loops see it.
struct Worker {
    /// Connections it serves now.
    load: Arc<AtomicUsize>,
    /// None for worker 0, which serves what it accepts itself.
    hand_to: Option<mpsc::UnboundedSender<Handed>>,
}

/// An accepted connection on its way to another worker, as a std socket:
/// it is registered with the receiving thread's event loop there. The
/// channel needs no bound of its own: each connection in it holds one of
/// `server.limits.max_connections`' permits.
struct Handed {
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    load: Load,
}

/// One connection counted in its worker's load until it ends.
struct Load(Arc<AtomicUsize>);

impl Load {
    fn on(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What serving a connection needs, on any worker.
#[derive(Clone)]
struct Connections {
    gate: Arc<Gate>,
    limits: Arc<ConnLimits>,
    stop: watch::Receiver<bool>,
    tracker: TaskTracker,
}

impl Connections {
    /// Serve `tcp` on this thread's runtime.
    fn spawn(&self, tcp: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit, load: Load) {
        let (gate, limits, stop) = (self.gate.clone(), self.limits.clone(), self.stop.clone());
        self.tracker.spawn(async move {
            let _held = (permit, load);
            if let Err(e) = connection(gate, tcp, peer, limits, stop).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
    }
}

async fn accept_loop(listener: TcpListener, spread: Arc<Vec<Worker>>, serving: Connections) {
    let limits = serving.limits.clone();
    let mut stop = serving.stop.clone();
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => return,
            p = limits.total.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // The worker serving fewest connections gets it (the first of
        // equals, so a burst alternates). A connection stays on its worker.
        let Some(worker) = spread.iter().min_by_key(|w| w.load.load(Ordering::Relaxed)) else {
            return;
        };
        let load = Load::on(&worker.load);
        match &worker.hand_to {
            None => serving.spawn(tcp, peer, permit, load),
            Some(hand_to) => match tcp.into_std() {
                Ok(tcp) => {
                    let handed = Handed {
                        tcp,
                        peer,
                        permit,
                        load,
                    };
                    // A worker whose thread is gone (it never should be)
                    // must not take connections with it: served here.
                    if let Err(mpsc::error::SendError(back)) = hand_to.send(handed) {
                        tracing::error!(%peer, "a worker thread has stopped; serving on worker 0");
                        match TcpStream::from_std(back.tcp) {
                            Ok(tcp) => serving.spawn(tcp, peer, back.permit, back.load),
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "cannot serve a connection")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(%peer, error = %e, "cannot hand a connection over"),
            },
        }
    }
}

async fn connection(
    gate: Arc<Gate>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    limits: Arc<ConnLimits>,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let live = gate.live.load_full();
    let server = &live.settings.server;
    let l = &server.limits;
    let peer_ip = peer.ip().to_canonical();
    let peer_trusted = live.trusted.contains(peer_ip);

    // PROXY protocol and TLS handshake share one deadline, so a peer that
    // never sends a ClientHello is closed (SECURITY-TESTS 28). The TLS
    // session (1.2 KB) is boxed, and the handshake's future scoped to this
    // block: the slot of a value moved out of an async fn's local stays in
    // the task for the task's life, so an idle connection's task would
    // carry it twice or three times over.
    let (source, tls) = {
        let handshake = async {
            let source =
                proxy_protocol_source(&mut tcp, peer_ip, peer_trusted, server.proxy_protocol)
                    .await?;
            let acceptor = tokio_rustls::TlsAcceptor::from(live.tls.clone());
            let tls = Box::new(acceptor.accept(tcp).await?);
            Ok::<_, io::Error>((source, tls))
        };
        tokio::time::timeout(l.handshake_timeout, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timeout"))??
    };

    // Per-address cap, counted on the real client where a trusted proxy said who.
    let _ip_slot = match source {
        ClientIp::Known(ip) if !(peer_trusted && ip == peer_ip) => match limits.per_ip(ip) {
            Some(slot) => Some(slot),
            None => return Err(io::Error::other("too many connections from one address")),
        },
        _ => None,
    };

    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Arc::new(Activity::new());
    let flood = Arc::new(tokio::sync::Notify::new());
    let info = ConnInfo { peer, source };
    let watch = Watch {
        peer,
        activity: activity.clone(),
        idle: l.idle_timeout,
        flood: flood.clone(),
        stop,
        closing: false,
    };
    // ALPN decides the protocol: no h2 prior-knowledge on an http/1.1
    // session. Each protocol has its own connection type (rather than
    // hyper-util's auto-detecting one, which sniffs for the HTTP/2 preface
    // whatever it was told): no `Rewind` layer on every read, and an
    // HTTP/1.1 connection's task is not sized for HTTP/2's state.
    if h2 {
        let io = TokioIo::new(Tracked {
            inner: tls,
            activity,
            frames: Some(crate::h2_flood::FrameWatch::new()),
            flood,
            flooded: false,
        });
        let svc_gate = gate.clone();
        // The request's future is boxed, as for HTTP/1.1 below.
        let service = service_fn(move |req| {
            let gate = svc_gate.clone();
            Box::pin(async move { Ok::<_, Infallible>(gate.handle(info, req).await) })
        });
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // HTTP/2 abuse limits (SECURITY-TESTS 29), set here rather than left
        // to library defaults: streams a client opens and resets before they
        // are served (rapid reset, CVE-2023-44487) and streams gatehouse has
        // to reset because of the client's protocol errors ("MadeYouReset",
        // CVE-2025-8671) both end the connection with GOAWAY
        // ENHANCE_YOUR_CALM. No keep-alive PINGs: their answers would count
        // as activity and keep a dead connection past the idle timeout.
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(l.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            .keep_alive_interval(None);
        drop(live);
        // Boxed: HTTP/2's connection state (about 2.6 KB) would otherwise
        // size every connection's task, idle HTTP/1.1 ones included.
        Box::pin(async move {
            let conn = pin!(builder.serve_connection(io, service));
            watch.serve(conn, |c| c.graceful_shutdown()).await
        })
        .await
    } else {
        let http1 = Http1::new(gate, info, l);
        drop(live);
        let io = Tracked {
            inner: http1.io(tls),
            activity,
            frames: None,
            flood,
            flooded: false,
        };
        http1.serve(io, watch).await
    }
}

/// What ends a served connection besides the client: the idle timeout, an
/// HTTP/2 frame flood, and the gateway draining; and when an HTTP/1.1
/// connection is parked.
struct Watch {
    peer: SocketAddr,
    activity: Arc<Activity>,
    idle: Duration,
    flood: Arc<tokio::sync::Notify>,
    stop: watch::Receiver<bool>,
    /// The drain or the idle timeout has begun closing the connection.
    closing: bool,
}

impl Watch {
    /// Drive `conn` to its end; `shut_down` starts its graceful shutdown.
    async fn serve<C, E>(
        mut self,
        mut conn: Pin<&mut C>,
        shut_down: fn(Pin<&mut C>),
    ) -> io::Result<()>
    where
        C: std::future::Future<Output = Result<(), E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let peer = self.peer;
        let mut cut_off: Option<Instant> = None;
        loop {
            let since = self.activity.at_ms();
            let idle_deadline = self.activity.at(since) + self.idle;
            tokio::select! {
                res = conn.as_mut() => return res.map_err(io::Error::other),
                // A frame flood: GOAWAY, no more reading, and closed after a
                // short grace whatever its open streams are doing.
                _ = self.flood.notified(), if cut_off.is_none() => {
                    tracing::debug!(%peer, "HTTP/2 frame flood: closing the connection");
                    metrics::counter!("gatehouse_h2_floods_total").increment(1);
                    self.closing = true;
                    shut_down(conn.as_mut());
                    cut_off = Some(Instant::now() + H2_FLOOD_GRACE);
                }
                _ = tokio::time::sleep_until(cut_off.unwrap_or_else(Instant::now).into()), if cut_off.is_some() => {
                    return Err(io::Error::other("HTTP/2 frame flood"));
                }
                _ = self.stop.changed(), if !self.closing => {
                    self.closing = true;
                    shut_down(conn.as_mut());
                }
                _ = tokio::time::sleep_until(idle_deadline.into()), if !self.closing => {
                    if self.activity.at_ms() == since {
                        self.closing = true;
                        shut_down(conn.as_mut());
                    }
                }
            }
        }
    }
}

/// Counts connections in total (semaphore) and per client address.
struct ConnLimits {
    total: Arc<Semaphore>,
    per_ip_max: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

struct IpSlot<'a> {
    limits: &'a ConnLimits,
    ip: IpAddr,
}

impl ConnLimits {
    fn new(total: usize, per_ip_max: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_ip_max,
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    fn per_ip(&self, ip: IpAddr) -> Option<IpSlot<'_>> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_ip_max {
            return None;
        }
        *n += 1;
        Some(IpSlot { limits: self, ip })
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// HTTP/2: most streams a client may reset before gatehouse has taken them
/// up (h2's own default, stated so it cannot drift).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2: most streams gatehouse resets over one connection because the
/// client broke the protocol on them.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 128;
/// How long a flooding HTTP/2 connection has between GOAWAY and the close.
const H2_FLOOD_GRACE: Duration = Duration::from_secs(2);

/// Plain HTTP: every request gets a 301 to the same path on https.
async fn redirect_loop(
    gate: Arc<Gate>,
    listener: TcpListener,
    https_port: u16,
    mut stop: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r { Ok(p) => p, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
        };
        let gate = gate.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let gate = gate.clone();
                async move { Ok::<_, Infallible>(redirect_response(&gate, &req, https_port)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn redirect_response(
    gate: &Gate,
    req: &http::Request<hyper::body::Incoming>,
    https_port: u16,
) -> Response<Body> {
    let live = gate.live.load();
    let hosts = &live.settings.server.hosts;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(crate::gate::host_without_port)
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .filter(|h| hosts.is_empty() || hosts.contains(h));
    let Some(host) = host else {
        let mut r = Response::new(proxy::full("unknown host\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let mut r = Response::new(proxy::empty());
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
