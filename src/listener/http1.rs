//! HTTP/1.1 connections: served by hyper while requests come, parked
//! between them (hyper's buffers given back while a connection is idle).

use super::*;
use crate::config::validate::Limits;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncWriteExt};

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
pub(super) struct Http1 {
    gate: Arc<Gate>,
    info: ConnInfo,
    builder: hyper::server::conn::http1::Builder,
    header_read_timeout: Duration,
    requests: Arc<Http1Requests>,
}

type Http1Io = Tracked<Parkable<Box<tokio_rustls::server::TlsStream<TcpStream>>>>;

impl Http1 {
    pub(super) fn new(gate: Arc<Gate>, info: ConnInfo, limits: &Limits) -> Self {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        Self {
            gate,
            info,
            builder,
            header_read_timeout: limits.header_read_timeout,
            requests: Arc::new(Http1Requests::default()),
        }
    }

    /// The connection's TLS session as hyper's IO.
    pub(super) fn io(
        &self,
        tls: Box<tokio_rustls::server::TlsStream<TcpStream>>,
    ) -> Parkable<Box<tokio_rustls::server::TlsStream<TcpStream>>> {
        Parkable {
            inner: tls,
            replay: Bytes::new(),
            requests: self.requests.clone(),
        }
    }

    /// Park and serve by turns until the connection ends. It starts parked:
    /// a client that connects and sends nothing never costs hyper's buffers.
    pub(super) async fn serve(self, mut io: Http1Io, mut watch: Watch) -> io::Result<()> {
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

impl Watch {
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

/// The IO under hyper on an HTTP/1.1 connection, made to be taken back from
/// hyper and served again: reads first replay the bytes hyper had read but
/// not used (`Parts::read_buf`), and while the serve loop is parking the
/// connection, hyper's shutdown of the IO leaves the TLS session open.
pub(super) struct Parkable<T> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

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
}
