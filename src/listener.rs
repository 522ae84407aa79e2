//! Sockets: bind, accept, connection limits, PROXY protocol, the TLS
//! handshake, HTTP serving with limits, idle timeouts, graceful drain, and the
//! optional plain-HTTP listener that only redirects to https.

use crate::client_ip::ClientIp;
use crate::gate::{ConnInfo, Gate};
use crate::proxy::{self, Body};
use bytes::{Bytes, BytesMut};
use http::{header, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

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
/// connections up to a deadline.
pub struct Serving {
    stop: watch::Sender<bool>,
    tracker: TaskTracker,
}

impl Serving {
    pub async fn drain(self, deadline: Duration) -> bool {
        let _ = self.stop.send(true);
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

pub fn serve(gate: Arc<Gate>, bound: Bound) -> Serving {
    let (stop, stop_rx) = watch::channel(false);
    let tracker = TaskTracker::new();
    let limits = {
        let live = gate.live.load();
        Arc::new(ConnLimits::new(
            live.settings.server.limits.max_connections,
            live.settings.server.limits.max_connections_per_ip,
        ))
    };
    let https_port = bound
        .tls
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(443, |a| a.port());
    for listener in bound.tls {
        let accept = accept_loop(
            gate.clone(),
            listener,
            limits.clone(),
            stop_rx.clone(),
            tracker.clone(),
        );
        tracker.spawn(accept);
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
    Serving { stop, tracker }
}

async fn accept_loop(
    gate: Arc<Gate>,
    listener: TcpListener,
    limits: Arc<ConnLimits>,
    mut stop: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
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
        let gate = gate.clone();
        let limits = limits.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(gate, tcp, peer, limits, stop).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
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
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(l.header_read_timeout)
            .max_buf_size(l.max_header_bytes)
            .max_headers(l.max_headers)
            .keep_alive(true);
        let header_read_timeout = l.header_read_timeout;
        drop(live);
        let requests = Arc::new(Http1Requests::default());
        let io = Tracked {
            inner: Parkable {
                inner: tls,
                replay: Bytes::new(),
                requests: requests.clone(),
            },
            activity,
            frames: None,
            flood,
            flooded: false,
        };
        let http1 = Http1 {
            gate,
            info,
            builder,
            header_read_timeout,
            requests,
        };
        http1.serve(io, watch).await
    }
}

/// How long an HTTP/1.1 keep-alive connection waits for its next request
/// inside hyper before it is parked. Short next to the time connections
/// stay open idle (`header_read_timeout`, 10 s by default, is also the
/// HTTP/1.1 keep-alive timeout), so an idle connection holds hyper's buffers
/// for a small part of its idle life; long next to the gaps between the
/// requests of a busy client (a page and its assets, an API poller), so
/// those are served by one hyper connection and pay nothing for parking.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Most time given to sending close_notify when a parked connection is
/// closed: its send buffer is empty unless the client stopped reading, and a
/// client that does not read must not hold up a drain.
const CLOSE_NOTIFY_GRACE: Duration = Duration::from_secs(1);

/// An HTTP/1.1 connection: served by hyper while requests come, parked
/// between them.
///
/// hyper holds an 8 KiB read buffer, an 8 KiB write buffer and a header map
/// for as long as its connection lives and cannot give them back while it
/// waits (`max_buf_size` cannot go below 8 KiB); with 10 000 idle keep-alive
/// connections that was most of gatehouse's memory. So a connection waits
/// for its next request outside hyper ("parked": the TLS session and
/// nothing else) and each burst of requests is served by a fresh hyper
/// connection. hyper is asked to let go of a connection only when its state
/// is known from outside to be "between requests": no request being
/// answered, nothing read since the last response was written, no write
/// waiting on the socket, no upgrade asked for. There its `graceful_shutdown`
/// writes nothing and finishes at once (`Conn::disable_keep_alive` closes an
/// idle connection); the shutdown of the IO it then asks for is skipped
/// (`Parkable`), and `into_parts` gives back the TLS stream and any bytes
/// hyper had read but not used, which the next hyper connection reads first.
struct Http1 {
    gate: Arc<Gate>,
    info: ConnInfo,
    builder: hyper::server::conn::http1::Builder,
    header_read_timeout: Duration,
    requests: Arc<Http1Requests>,
}

type Http1Io = Tracked<Parkable<Box<tokio_rustls::server::TlsStream<TcpStream>>>>;

impl Http1 {
    /// Park and serve by turns until the connection ends. It starts parked:
    /// a client that connects and sends nothing never costs hyper's buffers.
    async fn serve(self, mut io: Http1Io, mut watch: Watch) -> io::Result<()> {
        loop {
            // hyper's header_read_timeout runs from the moment a connection
            // starts waiting for a request head: when it opened, or when the
            // last response was written. Both are the last time bytes moved
            // (a connection is parked only when nothing was read since its
            // last response), and the deadline is kept across the park, so
            // parking cannot stretch it.
            let head_deadline = watch.activity.last() + self.header_read_timeout;
            match watch.parked(&mut io, head_deadline).await {
                Parked::Request => {}
                Parked::Close(result) => {
                    // close_notify, as hyper sends when it closes an idle connection.
                    let _ = tokio::time::timeout(CLOSE_NOTIFY_GRACE, io.shutdown()).await;
                    return result;
                }
                Parked::Broken(e) => return Err(e),
            }
            let gate = self.gate.clone();
            let requests = self.requests.clone();
            let info = self.info;
            // The request's future is boxed: hyper's HTTP/1.1 dispatcher
            // keeps a box the size of the service's future for the
            // connection's whole life (`in_flight`), and the gate's request
            // future is about 7.5 KB. Boxed, that memory is taken per request
            // and given back while the connection is idle.
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let gate = gate.clone();
                let answering = Answering::start(&requests, &req);
                Box::pin(async move {
                    let resp = gate.handle(info, req).await;
                    Ok::<_, Infallible>(resp.map(|body| AnsweringBody {
                        body,
                        _answering: answering,
                    }))
                })
            });
            // Boxed so the task of a parked connection is not sized for
            // hyper's connection state.
            let conn = Box::pin(
                self.builder
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades(),
            );
            let Some((back, unread)) = watch
                .serve_http1(conn, &self.requests, head_deadline)
                .await?
            else {
                // hyper closed the connection, or handed it to an upgrade.
                return Ok(());
            };
            io = back;
            io.inner.replay_first(unread);
            if watch.closing {
                // The drain or the idle timeout came while hyper was letting go.
                let _ = tokio::time::timeout(CLOSE_NOTIFY_GRACE, io.shutdown()).await;
                return Ok(());
            }
        }
    }
}

/// The requests of one HTTP/1.1 connection as its service sees them, and
/// the serve loop's word to the IO that it is parking the connection.
#[derive(Default)]
struct Http1Requests {
    /// Request heads hyper has read (each one calls the service).
    heads: AtomicU64,
    /// Requests whose response hyper has not yet taken whole.
    open: AtomicU64,
    /// A request asked to switch protocols (a websocket upgrade, CONNECT).
    /// hyper then keeps the upgrade pending for as long as its connection
    /// lives, answered or not (`State::upgrade` is only taken when the
    /// connection is done), and hands the IO to it instead of finishing
    /// normally: such a connection is left to hyper to the end.
    upgrade: AtomicBool,
    /// hyper is letting go of the connection to park it: its shutdown of
    /// the IO is skipped.
    parking: AtomicBool,
}

impl Http1Requests {
    /// No response is being given to hyper and no upgrade was asked for.
    fn between(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0 && !self.upgrade.load(Ordering::Relaxed)
    }
}

/// A request being answered: counted in `open` from the moment hyper has
/// its head until hyper has taken the last of its response body (or
/// dropped the request).
struct Answering(Arc<Http1Requests>);

impl Answering {
    fn start<B>(requests: &Arc<Http1Requests>, req: &http::Request<B>) -> Self {
        requests.heads.fetch_add(1, Ordering::Relaxed);
        requests.open.fetch_add(1, Ordering::Relaxed);
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
        {
            requests.upgrade.store(true, Ordering::Relaxed);
        }
        Self(requests.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body on an HTTP/1.1 connection, keeping its request counted
/// as open until hyper drops it (at its end, or on error).
struct AnsweringBody {
    body: Body,
    _answering: Answering,
}

impl http_body::Body for AnsweringBody {
    type Data = Bytes;
    type Error = proxy::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, proxy::BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// How a parked connection stopped waiting.
enum Parked {
    /// Request bytes arrived (or hyper had some left unread).
    Request,
    /// Close it with close_notify; the result is the connection's.
    Close(io::Result<()>),
    /// The connection broke.
    Broken(io::Error),
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

    /// Wait, holding no hyper state, until request bytes arrive, the client
    /// closes, a timeout ends the connection or the gateway drains.
    async fn parked(&mut self, io: &mut Http1Io, head_deadline: Instant) -> Parked {
        if !io.inner.replay.is_empty() {
            return Parked::Request;
        }
        // Nothing moves while parked: both deadlines are fixed.
        let idle_deadline = self.activity.last() + self.idle;
        let readable = std::future::poll_fn(|cx| io.inner.poll_readable(cx));
        tokio::select! {
            r = readable => match r {
                Ok(true) => Parked::Request,
                Ok(false) => Parked::Close(Ok(())),
                Err(e) => Parked::Broken(e),
            },
            _ = self.stop.changed() => {
                self.closing = true;
                Parked::Close(Ok(()))
            }
            _ = tokio::time::sleep_until(idle_deadline.into()), if idle_deadline < head_deadline => {
                self.closing = true;
                Parked::Close(Ok(()))
            }
            _ = tokio::time::sleep_until(head_deadline.into()), if head_deadline <= idle_deadline => {
                Parked::Close(Err(io::Error::new(io::ErrorKind::TimedOut, "no request head within header_read_timeout")))
            }
        }
    }

    /// Drive an HTTP/1.1 connection until hyper ends it (`None`) or lets go
    /// of it to be parked (the IO and the bytes hyper read but did not use).
    /// `head_deadline` bounds the wait for its first request head.
    async fn serve_http1<S>(
        &mut self,
        mut conn: Pin<Box<hyper::server::conn::http1::UpgradeableConnection<TokioIo<Http1Io>, S>>>,
        requests: &Http1Requests,
        head_deadline: Instant,
    ) -> io::Result<Option<(Http1Io, Bytes)>>
    where
        S: hyper::service::HttpService<hyper::body::Incoming, ResBody = AnsweringBody>,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let heads = requests.heads.load(Ordering::Relaxed);
        let mut head_deadline = Some(head_deadline);
        let mut parking = false;
        let mut park_check = Instant::now();
        loop {
            let since = self.activity.at_ms();
            let last = self.activity.at(since);
            let idle_deadline = last + self.idle;
            let park_at = (last + PARK_AFTER).max(park_check);
            tokio::select! {
                res = conn.as_mut() => {
                    res.map_err(io::Error::other)?;
                    if !parking {
                        // hyper closed the connection, or handed it to an upgrade.
                        return Ok(None);
                    }
                    requests.parking.store(false, Ordering::Relaxed);
                    return Ok((*Pin::into_inner(conn))
                        .into_parts()
                        .map(|parts| (parts.io.into_inner(), parts.read_buf)));
                }
                _ = self.stop.changed(), if !self.closing => {
                    self.closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(idle_deadline.into()), if !self.closing => {
                    if self.activity.at_ms() == since {
                        self.closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = tokio::time::sleep_until(park_at.into()), if !self.closing && !parking => {
                    if self.activity.at_ms() == since {
                        if requests.between() && self.activity.settled() {
                            parking = true;
                            requests.parking.store(true, Ordering::Relaxed);
                            conn.as_mut().graceful_shutdown();
                        } else {
                            // Checked again when bytes move, or after a while.
                            park_check = Instant::now() + PARK_AFTER;
                        }
                    }
                }
                // hyper's own header timer restarted with this hyper
                // connection; the wait began earlier.
                _ = tokio::time::sleep_until(head_deadline.unwrap_or_else(Instant::now).into()), if head_deadline.is_some() => {
                    if requests.heads.load(Ordering::Relaxed) == heads {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "no request head within header_read_timeout"));
                    }
                    head_deadline = None;
                }
            }
        }
    }
}

/// The client address a trusted proxy states in a PROXY header (v1 or v2).
/// A PROXY header from anyone else closes the connection (SECURITY-TESTS 16).
async fn proxy_protocol_source(
    tcp: &mut TcpStream,
    peer_ip: IpAddr,
    peer_trusted: bool,
    enabled: bool,
) -> io::Result<ClientIp> {
    if !enabled {
        return Ok(ClientIp::Known(peer_ip));
    }
    if !peer_trusted {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        if n == 1 && (first[0] == b'P' || first[0] == b'\r') {
            return Err(io::Error::other("PROXY header from an untrusted peer"));
        }
        return Ok(ClientIp::Known(peer_ip));
    }
    let header = read_proxy_header(tcp).await?;
    parse_proxy_header(&header)
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// RFC: a v1 line is at most 107 bytes including CRLF.
const V1_MAX: usize = 107;
const V2_MAX_EXTRA: usize = 512;

/// Read exactly one PROXY header (v1 line or v2 block) and nothing after it:
/// the bytes that follow belong to the TLS handshake. Generic over the reader
/// so the framing can be fuzzed without a socket.
pub async fn read_proxy_header<R: AsyncRead + Unpin>(tcp: &mut R) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 16];
    tcp.read_exact(&mut buf[..6]).await?;
    if &buf[..6] == b"PROXY " {
        buf.truncate(6);
        // Byte by byte so nothing after the header (the ClientHello) is consumed.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(io::Error::other("PROXY v1 line too long"));
            }
            buf.push(tcp.read_u8().await?);
        }
        return Ok(buf);
    }
    tcp.read_exact(&mut buf[6..16]).await?;
    if &buf[..12] != V2_SIGNATURE {
        return Err(io::Error::other("missing PROXY header from trusted proxy"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_EXTRA {
        return Err(io::Error::other("PROXY v2 header too long"));
    }
    buf.resize(16 + len, 0);
    tcp.read_exact(&mut buf[16..]).await?;
    Ok(buf)
}

/// The client address stated in a complete PROXY header (as read by
/// [`read_proxy_header`]); IPv4-mapped IPv6 sources are IPv4.
pub fn parse_proxy_header(bytes: &[u8]) -> io::Result<ClientIp> {
    use ppp::{v1, v2, HeaderResult};
    let bad = |what: &str| io::Error::other(format!("invalid PROXY header: {what}"));
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => ClientIp::Known(IpAddr::V4(a.source_address)),
            v1::Addresses::Tcp6(a) => ClientIp::Known(IpAddr::V6(a.source_address).to_canonical()),
            v1::Addresses::Unknown => ClientIp::Unknown,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                ClientIp::Known(IpAddr::V4(a.source_address))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                ClientIp::Known(IpAddr::V6(a.source_address).to_canonical())
            }
            // LOCAL (health checks) and UNSPEC/UNIX carry no client address.
            _ => ClientIp::Unknown,
        }),
        HeaderResult::V1(Err(_)) => Err(bad("v1")),
        HeaderResult::V2(Err(_)) => Err(bad("v2")),
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

/// What a connection's IO has been doing, written by [`Tracked`] and read by
/// the serve loop: when bytes last moved (the idle timeout) and, for parking
/// HTTP/1.1 connections, whether hyper is waiting for nothing but a request.
struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch` when bytes last moved.
    at_ms: AtomicU64,
    /// Bytes were read after the last bytes written: part of a request
    /// head may be in hyper's buffer.
    read_last: AtomicBool,
    /// The last write or flush could not finish (the client is not reading).
    write_waiting: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            at_ms: AtomicU64::new(0),
            read_last: AtomicBool::new(false),
            write_waiting: AtomicBool::new(false),
        }
    }

    fn at_ms(&self) -> u64 {
        self.at_ms.load(Ordering::Relaxed)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// When bytes last moved (the connection's start if none have).
    fn last(&self) -> Instant {
        self.at(self.at_ms())
    }

    /// Nothing read since the last write, and no write waiting.
    fn settled(&self) -> bool {
        !self.read_last.load(Ordering::Relaxed) && !self.write_waiting.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    fn read(&self) {
        self.touch();
        self.read_last.store(true, Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.touch();
        self.read_last.store(false, Ordering::Relaxed);
        self.write_waiting.store(false, Ordering::Relaxed);
    }

    fn write_result<T>(&self, res: &Poll<io::Result<T>>, moved: bool) {
        match res {
            Poll::Ready(Ok(_)) if moved => self.wrote(),
            Poll::Ready(Ok(_)) => {
                // A flush that finishes after waiting has moved bytes.
                if self.write_waiting.swap(false, Ordering::Relaxed) {
                    self.touch();
                }
            }
            Poll::Pending => self.write_waiting.store(true, Ordering::Relaxed),
            Poll::Ready(Err(_)) => {}
        }
    }
}

/// An IO wrapper that records when bytes last moved, for the idle timeout
/// and parking, and on HTTP/2 connections watches for frame floods.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
    frames: Option<crate::h2_flood::FrameWatch>,
    flood: Arc<tokio::sync::Notify>,
    /// Past the frame budget: nothing more is read from this client.
    flooded: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.flooded {
            // The serve loop closes the connection shortly; until then the
            // flood stays in the kernel's buffers, unread.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
            let this = &mut *self;
            if let Some(frames) = this.frames.as_mut() {
                if frames.observe(&buf.filled()[before..]) {
                    this.flooded = true;
                    this.flood.notify_one();
                }
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        let moved = matches!(res, Poll::Ready(Ok(n)) if n > 0);
        self.activity.write_result(&res, moved);
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let moved = matches!(res, Poll::Ready(Ok(n)) if n > 0);
        self.activity.write_result(&res, moved);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.write_result(&res, false);
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.activity.write_result(&res, false);
        res
    }
}

/// The IO under hyper on an HTTP/1.1 connection, made to be taken back from
/// hyper and served again: reads first replay the bytes hyper had read but
/// not used (`Parts::read_buf`), and while the serve loop is parking the
/// connection, hyper's shutdown of the IO leaves the TLS session open.
struct Parkable<T> {
    inner: T,
    replay: Bytes,
    requests: Arc<Http1Requests>,
}

impl<T> Parkable<T> {
    /// Put bytes hyper read from this IO but did not use in front of what
    /// is still to be read.
    fn replay_first(&mut self, unread: Bytes) {
        if unread.is_empty() {
            return;
        }
        if self.replay.is_empty() {
            self.replay = unread;
            return;
        }
        // hyper read `unread` from the front of the replay, and nothing from
        // the socket while the replay lasted.
        let mut all = BytesMut::with_capacity(unread.len() + self.replay.len());
        all.extend_from_slice(&unread);
        all.extend_from_slice(&self.replay);
        self.replay = all.freeze();
    }
}

impl<T: AsyncBufRead + Unpin> Parkable<T> {
    /// Ready when bytes can be read (true) or the client has closed
    /// (false). Reads nothing: the bytes stay in the TLS session's buffer.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.replay.is_empty() {
            return Poll::Ready(Ok(true));
        }
        Pin::new(&mut self.inner)
            .poll_fill_buf(cx)
            .map_ok(|data| !data.is_empty())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Parkable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replay.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.replay.len().min(buf.remaining());
        buf.put_slice(&self.replay.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Parkable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.requests.parking.load(Ordering::Relaxed) {
            // hyper has flushed (`Buffered::poll_shutdown` flushes first);
            // the TLS session stays open for the parked connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parked_connection_reads_the_bytes_hyper_left_first_and_in_order() {
        // hyper read "he" from the front of a replay of "hello", and never
        // got to the socket's " world".
        let mut io = Parkable {
            inner: &b" world"[..],
            replay: Bytes::from_static(b"llo"),
            requests: Arc::default(),
        };
        io.replay_first(Bytes::from_static(b"he"));
        let mut out = String::new();
        io.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }

    #[test]
    fn proxy_v1_and_v2_sources_are_read() {
        let v1 = parse_proxy_header(b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\r\n").expect("v1");
        assert_eq!(v1, ClientIp::Known("203.0.113.9".parse().expect("ip")));
        let unknown = parse_proxy_header(b"PROXY UNKNOWN\r\n").expect("v1 unknown");
        assert_eq!(unknown, ClientIp::Unknown);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse_proxy_header(&local).expect("v2 local"),
            ClientIp::Unknown
        );
    }
}
