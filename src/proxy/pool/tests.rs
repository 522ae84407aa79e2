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
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
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
