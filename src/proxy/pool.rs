//! Keep-alive HTTP/1.1 connections to the one upstream, over TCP or TLS.
//!
//! gatehouse talks to exactly one upstream, so the idle connections are one
//! stack behind a mutex per worker thread: no map keyed by scheme and
//! authority, no channel to a pool task, no task per request waiting for the
//! connection to come back (what hyper-util's legacy client does, about a
//! tenth of the user-space instructions of a proxied request). A connection
//! goes back on the stack when its response body has been read to the end.
//!
//! Each worker thread (`listener::workers`) takes from and returns to its
//! own stack: an upstream connection's task runs on the worker that opened
//! it, and a request from another worker would wake that thread twice.

use super::Body;
use crate::config::validate::UpstreamSettings;
use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why the pool could not be built, or a request not sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("not a TLS server name: {0}")]
    ServerName(String),
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("connect")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake")]
    Tls(#[source] std::io::Error),
    #[error("HTTP/1.1 handshake")]
    Handshake(#[source] hyper::Error),
    #[error("request")]
    Request(#[source] hyper::Error),
}

/// The upstream's idle connections, most recently used on top.
pub struct Pool {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Per worker's stack.
    max_idle: usize,
    /// One stack per worker thread, indexed by `listener::worker_index`.
    idle: Box<[Mutex<Vec<Idle>>]>,
    sweeping: AtomicBool,
}

/// A response body from the upstream. Read to its end, it puts its
/// connection back in the pool; dropped before, it takes the connection with
/// it (the rest of the body would stand before the next response).
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl Pool {
    /// `workers`: how many threads serve connections (each has a stack;
    /// `upstream.pool_max_idle` is shared out among them).
    pub fn new(
        settings: &UpstreamSettings,
        tls: rustls::ClientConfig,
        workers: usize,
    ) -> Result<Arc<Self>, PoolError> {
        let workers = workers.max(1);
        // `[::1]` in a URL is `::1` to the resolver and in a certificate.
        let host = settings
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = settings.scheme == Scheme::HTTPS;
        let port = settings
            .authority
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let tls = match https {
            true => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| PoolError::ServerName(e.to_string()))?;
                Some((TlsConnector::from(Arc::new(tls)), name))
            }
            false => None,
        };
        Ok(Arc::new(Self {
            host,
            port,
            tls,
            connect_timeout: settings.connect_timeout,
            idle_timeout: settings.pool_idle_timeout,
            max_idle: settings.pool_max_idle.div_ceil(workers),
            idle: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
            sweeping: AtomicBool::new(false),
        }))
    }

    /// Send `req` (origin-form target, Host set) on an idle connection, else
    /// on a new one.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        let Some(mut sender) = self.take(Instant::now()) else {
            return Box::pin(self.send_on_new(req)).await;
        };
        let unsent = match sender.try_send_request(req).await {
            Ok(resp) => return Ok(self.lease(resp, sender)),
            // hyper hands the request back only when none of it was written:
            // the upstream closed the idle connection just before. Sending
            // it again cannot repeat anything the upstream saw. Once, and on
            // a new connection: the other idle ones may be closed as well.
            Err(mut e) => e
                .take_message()
                .ok_or_else(|| PoolError::Request(e.into_error()))?,
        };
        Box::pin(self.send_on_new(unsent)).await
    }

    /// Boxed by its callers: the TLS handshake's state is kilobytes that
    /// every request's future would carry otherwise, and copy as it moves,
    /// though few requests connect.
    async fn send_on_new(
        self: &Arc<Self>,
        req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        let mut sender = self.connect().await?;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(self.lease(resp, sender)),
            Err(e) => Err(PoolError::Request(e.into_error())),
        }
    }

    /// The most recently used idle connection still open, if any.
    fn take(&self, now: Instant) -> Option<SendRequest<Body>> {
        let mut idle = lock(self.own());
        let mut expired = Vec::new();
        let found = loop {
            match idle.pop() {
                None => break None,
                Some(entry) if now.saturating_duration_since(entry.since) >= self.idle_timeout => {
                    // Pushed in the order they fell idle: the rest are older.
                    expired = std::mem::take(&mut *idle);
                    expired.push(entry);
                    break None;
                }
                Some(entry) if entry.sender.is_ready() => break Some(entry.sender),
                // Closed by the upstream while idle; its connection task is
                // gone, so dropping it here under the lock wakes nobody.
                Some(_closed) => {}
            }
        };
        // Dropping an open connection wakes its task: not under the lock.
        drop(idle);
        drop(expired);
        found
    }

    fn lease(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        sender: SendRequest<Body>,
    ) -> Response<UpstreamBody> {
        // After a 101 the connection belongs to the websocket splice.
        let lease =
            (resp.status() != StatusCode::SWITCHING_PROTOCOLS && self.max_idle > 0).then(|| {
                Lease {
                    sender,
                    pool: self.clone(),
                }
            });
        resp.map(|body| UpstreamBody { body, lease })
    }

    /// Back on the stack once the connection task has seen the response end
    /// and asks for the next request.
    fn put_when_ready(self: Arc<Self>, mut sender: SendRequest<Body>) {
        if sender.is_ready() {
            self.put(sender, Instant::now());
        } else if !sender.is_closed() {
            // The connection task runs on another worker and has not yet
            // caught up with the end of the response the reader saw.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if sender.ready().await.is_ok() {
                        self.put(sender, Instant::now());
                    }
                });
            }
        }
    }

    fn put(self: &Arc<Self>, sender: SendRequest<Body>, now: Instant) {
        let mut idle = lock(self.own());
        if idle.len() < self.max_idle {
            idle.push(Idle { sender, since: now });
        }
        drop(idle);
        // Started by the first connection back rather than in `new`, which
        // need not run inside a runtime.
        if !self.sweeping.load(Ordering::Relaxed) && !self.sweeping.swap(true, Ordering::Relaxed) {
            self.start_sweeping();
        }
    }

    /// Without traffic nothing is taken, so nothing would expire: a sweep
    /// closes what idled past the timeout, as the setting promises the
    /// upstream. It ends with the pool (a configuration reload).
    fn start_sweeping(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool: Weak<Self> = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(50));
        rt.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.sweep(Instant::now());
            }
        });
    }

    fn sweep(&self, now: Instant) {
        for stack in &self.idle {
            let mut idle = lock(stack);
            let stale: Vec<Idle> = idle
                .extract_if(.., |e| {
                    now.saturating_duration_since(e.since) >= self.idle_timeout
                        || e.sender.is_closed()
                })
                .collect();
            drop(idle);
            drop(stale);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, PoolError> {
        // One deadline for TCP and TLS, as nginx's proxy_connect_timeout.
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let late = |_| PoolError::ConnectTimeout(self.connect_timeout);
        let tcp = tokio::time::timeout_at(
            deadline,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(late)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => PoolError::ConnectTimeout(self.connect_timeout),
            _ => PoolError::Connect(e),
        })?;
        // Heads and bodies are written whole; Nagle would only hold them back.
        tcp.set_nodelay(true).map_err(PoolError::Connect)?;
        match &self.tls {
            None => handshake(tcp).await,
            Some((tls, name)) => {
                let stream = tokio::time::timeout_at(deadline, tls.connect(name.clone(), tcp))
                    .await
                    .map_err(late)?
                    .map_err(PoolError::Tls)?;
                handshake(stream).await
            }
        }
    }

    /// This worker's stack.
    fn own(&self) -> &Mutex<Vec<Idle>> {
        &self.idle[crate::listener::worker_index() % self.idle.len()]
    }
}

fn lock(stack: &Mutex<Vec<Idle>>) -> MutexGuard<'_, Vec<Idle>> {
    // The list stays valid whatever panicked while holding it.
    stack.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

struct Lease {
    sender: SendRequest<Body>,
    pool: Arc<Pool>,
}

async fn handshake<T>(io: T) -> Result<SendRequest<Body>, PoolError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(PoolError::Handshake)?;
    tokio::spawn(async move {
        // with_upgrades: after a 101 the socket goes to `hyper::upgrade::on`.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

impl UpstreamBody {
    fn give_back(&mut self) {
        if let Some(Lease { sender, pool }) = self.lease.take() {
            pool.put_when_ready(sender);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            // Readers stop asking once a body says it has ended, and after
            // trailers, which come last.
            Some(Ok(f)) if !f.is_trailers() && !this.body.is_end_stream() => {}
            Some(Ok(_)) | None => this.give_back(),
            Some(Err(_)) => this.lease = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("body", &self.body)
            .field("leased", &self.lease.is_some())
            .finish()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body with nothing left (204, 304, HEAD, the last byte read)
        // needs no reading to free its connection.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
impl Pool {
    fn idle_len(&self) -> usize {
        self.idle.iter().map(|stack| lock(stack).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, Notify};

    /// An HTTP/1.1 upstream on port 0 that counts the connections it
    /// accepts and reports each one that ends. `/upgrade` switches to an
    /// echo protocol, `/empty` answers 204, anything else `hello`.
    struct TestUpstream {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
        ended: mpsc::UnboundedReceiver<()>,
        hang_up: Arc<Notify>,
        task: tokio::task::JoinHandle<()>,
    }

    impl TestUpstream {
        async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let accepted = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(AtomicUsize::new(0));
            let hang_up = Arc::new(Notify::new());
            let (ended_tx, ended) = mpsc::unbounded_channel();
            let (count, hang, asked) = (accepted.clone(), hang_up.clone(), requests.clone());
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let (hang, ended_tx, asked) = (hang.clone(), ended_tx.clone(), asked.clone());
                    tokio::spawn(async move {
                        let hung_up = hang.notified();
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(
                                TokioIo::new(tcp),
                                service_fn(move |req| {
                                    asked.fetch_add(1, Ordering::SeqCst);
                                    answer(req)
                                }),
                            )
                            .with_upgrades();
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = hung_up => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                        let _ = ended_tx.send(());
                    });
                }
            });
            Self {
                addr,
                accepted,
                requests,
                ended,
                hang_up,
                task,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        async fn connection_ended(&mut self) {
            tokio::time::timeout(Duration::from_secs(5), self.ended.recv())
                .await
                .expect("a connection ended in time")
                .expect("upstream running");
        }
    }

    impl Drop for TestUpstream {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn answer(
        mut req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"hello")));
        match req.uri().path() {
            "/upgrade" => {
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(up) = upgrade.await {
                        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(up));
                        let _ = tokio::io::copy(&mut rd, &mut wr).await;
                    }
                });
                *resp.body_mut() = Full::default();
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                resp.headers_mut()
                    .insert("connection", http::HeaderValue::from_static("upgrade"));
                resp.headers_mut()
                    .insert("upgrade", http::HeaderValue::from_static("echo"));
            }
            "/empty" => {
                *resp.body_mut() = Full::default();
                *resp.status_mut() = StatusCode::NO_CONTENT;
            }
            _ => {}
        }
        Ok(resp)
    }

    fn pool(addr: SocketAddr, max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        pool_for_workers(addr, max_idle, idle_timeout, 1)
    }

    fn pool_for_workers(
        addr: SocketAddr,
        max_idle: usize,
        idle_timeout: Duration,
        workers: usize,
    ) -> Arc<Pool> {
        let settings = UpstreamSettings {
            scheme: Scheme::HTTP,
            authority: addr.to_string().parse().expect("authority"),
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            preserve_host: false,
            pool_max_idle: max_idle,
            pool_idle_timeout: idle_timeout,
        };
        let tls = crate::tls::client_config(None, false).expect("tls");
        Pool::new(&settings, tls, workers).expect("pool")
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path)
            .header(http::header::HOST, "upstream.test")
            .body(crate::proxy::empty())
            .expect("request")
    }

    async fn read(resp: Response<UpstreamBody>) -> Bytes {
        resp.into_body().collect().await.expect("body").to_bytes()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, MINUTE);
        for _ in 0..3 {
            let resp = pool.send(get("/")).await.expect("response");
            assert_eq!(read(resp).await, "hello");
        }
        assert_eq!(up.accepted(), 1);
    }

    #[tokio::test]
    async fn connection_not_ready_when_its_body_ends_comes_back_once_ready() {
        let up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, MINUTE);
        // Fresh from the handshake, its connection task not yet run: what a
        // reader on another worker thread can see when a body ends.
        let sender = pool.connect().await.expect("connect");
        assert!(!sender.is_ready() && !sender.is_closed());
        pool.clone().put_when_ready(sender);
        assert_eq!(pool.idle_len(), 0);
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.idle_len() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("back in the pool");
        let resp = pool.send(get("/")).await.expect("response");
        assert_eq!(read(resp).await, "hello");
        assert_eq!(up.accepted(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_connection_comes_back_when_reader_and_connection_run_on_two_threads() {
        let up = TestUpstream::start().await;
        let pool = pool(up.addr, 64, MINUTE);
        for _ in 0..50 {
            let resp = pool.send(get("/")).await.expect("response");
            assert_eq!(read(resp).await, "hello");
        }
        // A body can end before its connection task asks for the next
        // request; such a connection comes back a moment later.
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.idle_len() != up.accepted() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every connection back in the pool");
        assert!(up.accepted() < 50, "no reuse: {}", up.accepted());
    }

    /// An upstream connection's task runs on the worker thread that opened
    /// it; another worker reusing it would wake that thread for each
    /// request.
    #[tokio::test]
    async fn each_worker_thread_reuses_only_the_upstream_connections_it_opened() {
        let up = TestUpstream::start().await;
        let pool = pool_for_workers(up.addr, 4, Duration::from_secs(60), 2);
        read(pool.send(get("/")).await.expect("send")).await;
        assert_eq!(up.accepted(), 1);

        let (done, on_worker_1) = tokio::sync::oneshot::channel();
        let worker_pool = pool.clone();
        let _thread = crate::listener::workers::spawn(
            1,
            move || {
                tokio::spawn(async move {
                    for _ in 0..2 {
                        read(worker_pool.send(get("/")).await.expect("send")).await;
                    }
                    let _ = done.send(crate::listener::worker_index());
                });
            },
            std::future::pending(),
        )
        .expect("worker thread");
        assert_eq!(on_worker_1.await.expect("worker 1 done"), 1);
        assert_eq!(
            up.accepted(),
            2,
            "worker 1 opened one of its own, then reused it"
        );

        read(pool.send(get("/")).await.expect("send")).await;
        assert_eq!(up.accepted(), 2, "worker 0 reused the one it opened");
        assert_eq!(up.requests(), 4);
        assert_eq!(pool.idle_len(), 2);
    }

    #[tokio::test]
    async fn connection_whose_body_was_not_read_is_not_reused() {
        let mut up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, MINUTE);
        let unread = pool.send(get("/")).await.expect("response");
        drop(unread);
        up.connection_ended().await;
        assert_eq!(pool.idle_len(), 0);
        let resp = pool.send(get("/")).await.expect("response");
        assert_eq!(read(resp).await, "hello");
        assert_eq!(up.accepted(), 2);
    }

    #[tokio::test]
    async fn connection_of_a_response_without_body_is_reused_unread() {
        let up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, MINUTE);
        let resp = pool.send(get("/empty")).await.expect("response");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        drop(resp);
        let resp = pool.send(get("/")).await.expect("response");
        assert_eq!(read(resp).await, "hello");
        assert_eq!(up.accepted(), 1);
    }

    #[tokio::test]
    async fn idle_connection_closed_by_the_upstream_is_not_handed_out() {
        let mut up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, MINUTE);
        let resp = pool.send(get("/")).await.expect("response");
        assert_eq!(read(resp).await, "hello");
        up.hang_up.notify_waiters();
        up.connection_ended().await;
        // Once its connection task has seen the close, the pool passes the
        // connection over (the test below covers the moment before).
        tokio::time::timeout(Duration::from_secs(5), async {
            while !lock(pool.own()).iter().all(|e| e.sender.is_closed()) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("close seen");
        let resp = pool.send(get("/")).await.expect("a new connection answers");
        assert_eq!(read(resp).await, "hello");
        assert_eq!(up.accepted(), 2);
    }

    /// Reads one request head from a blocking socket.
    fn read_head(s: &mut std::net::TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    fn answer_with(s: &mut std::net::TcpStream, body: &str) {
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).expect("answer");
    }

    /// A socket that reads as closed once told to, without waking anyone:
    /// the upstream's FIN has arrived and the connection task not yet run.
    struct HangUp {
        tcp: TcpStream,
        closed: Arc<AtomicBool>,
    }

    impl AsyncRead for HangUp {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.closed.load(Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            Pin::new(&mut self.tcp).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for HangUp {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.tcp).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.tcp).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn request_handed_back_unsent_by_a_closed_pooled_connection_goes_to_a_new_one() {
        let up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, MINUTE);
        let closed = Arc::new(AtomicBool::new(false));
        let tcp = TcpStream::connect(up.addr).await.expect("connect");
        let mut stale = handshake(HangUp {
            tcp,
            closed: closed.clone(),
        })
        .await
        .expect("handshake");
        stale.ready().await.expect("ready");
        pool.put(stale, Instant::now());
        closed.store(true, Ordering::SeqCst);

        let resp = pool.send(get("/")).await.expect("sent on a new connection");
        assert_eq!(read(resp).await, "hello");
        assert_eq!(up.accepted(), 2);
        assert_eq!(up.requests(), 1, "the upstream saw the request twice");
    }

    #[tokio::test]
    async fn request_written_before_the_upstream_hung_up_is_not_sent_again() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (check, told) = std::sync::mpsc::channel::<()>();
        let upstream = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            read_head(&mut conn);
            answer_with(&mut conn, "first");
            let second = read_head(&mut conn);
            drop(conn);
            told.recv().expect("told to check");
            listener.set_nonblocking(true).expect("nonblocking");
            let another = listener.accept().is_ok();
            (second, another)
        });
        let pool = pool(addr, 8, MINUTE);
        let resp = pool.send(get("/one")).await.expect("response");
        assert_eq!(read(resp).await, "first");
        let err = pool
            .send(get("/two"))
            .await
            .expect_err("the upstream hung up without answering");
        assert!(matches!(err, PoolError::Request(_)), "{err:?}");
        check.send(()).expect("tell");
        let (second, another) = upstream.join().expect("upstream thread");
        assert!(second.starts_with("GET /two "), "{second}");
        assert!(!another, "the request was sent again");
    }

    #[tokio::test]
    async fn connection_idle_past_the_timeout_is_not_reused() {
        let mut up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, MINUTE);
        let resp = pool.send(get("/")).await.expect("response");
        assert_eq!(read(resp).await, "hello");
        assert_eq!(pool.idle_len(), 1);
        assert!(pool.take(Instant::now() + MINUTE).is_none());
        assert_eq!(pool.idle_len(), 0);
        up.connection_ended().await;
        let resp = pool.send(get("/")).await.expect("response");
        assert_eq!(read(resp).await, "hello");
        assert_eq!(up.accepted(), 2);
    }

    #[tokio::test]
    async fn idle_connection_is_closed_after_the_timeout_without_traffic() {
        let mut up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, Duration::from_millis(100));
        let resp = pool.send(get("/")).await.expect("response");
        assert_eq!(read(resp).await, "hello");
        up.connection_ended().await;
        assert_eq!(pool.idle_len(), 0);
    }

    #[tokio::test]
    async fn no_more_than_max_idle_connections_are_kept() {
        let mut up = TestUpstream::start().await;
        let pool = pool(up.addr, 1, MINUTE);
        // Two responses unread at once hold two connections.
        let a = pool.send(get("/")).await.expect("response");
        let b = pool.send(get("/")).await.expect("response");
        assert_eq!(up.accepted(), 2);
        assert_eq!(read(a).await, "hello");
        assert_eq!(read(b).await, "hello");
        assert_eq!(pool.idle_len(), 1);
        up.connection_ended().await;
        for _ in 0..2 {
            let resp = pool.send(get("/")).await.expect("response");
            assert_eq!(read(resp).await, "hello");
        }
        assert_eq!(up.accepted(), 2);
    }

    #[tokio::test]
    async fn upgraded_connection_carries_the_new_protocol_and_is_never_pooled() {
        let up = TestUpstream::start().await;
        let pool = pool(up.addr, 8, MINUTE);
        let mut req = get("/upgrade");
        req.headers_mut()
            .insert("connection", http::HeaderValue::from_static("upgrade"));
        req.headers_mut()
            .insert("upgrade", http::HeaderValue::from_static("echo"));
        let resp = pool.send(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut io = TokioIo::new(hyper::upgrade::on(resp).await.expect("upgraded"));
        io.write_all(b"ping").await.expect("write");
        let mut echo = [0u8; 4];
        io.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping");
        assert_eq!(pool.idle_len(), 0);
        let resp = pool.send(get("/")).await.expect("response");
        assert_eq!(read(resp).await, "hello");
        assert_eq!(up.accepted(), 2);
    }
}
