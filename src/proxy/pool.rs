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
mod tests;
