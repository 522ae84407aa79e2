//! Idle HTTP/1.1 keep-alive connections: between requests a connection is
//! parked outside hyper (only its TLS session is kept) and served again by
//! a fresh hyper connection when the client sends. Every test here waits
//! past the parking delay (one second) on real TLS sockets and proves that
//! nothing the client sees has changed: requests in pieces, pipelined
//! requests, websockets, the timeouts and the graceful drain.
//!
//! Nothing signals that a connection has been parked, so these tests sleep
//! past the delay ([`PARKED`]) where other tests would await a signal.

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use support::gateway::{post_form, Config, TestGateway};
use support::upstream::Recorder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Longer than the listener's parking delay (1 s) with room for a busy machine.
const PARKED: Duration = Duration::from_millis(1600);

/// A gateway whose `/pub/` is reachable without signing in.
fn public() -> Config {
    Config::default().rest("[login]\nanonymous_paths = [\"/login\", \"/pub/\"]")
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// One HTTP/1.1 response as it came over the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// 200 with the recording upstream's body for `path`, and the connection
    /// kept open.
    fn assert_served(&self, path: &str) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.body, format!("upstream saw {path}"), "{self:?}");
        assert!(
            !self.head.to_ascii_lowercase().contains("connection: close"),
            "{self:?}"
        );
    }
}

/// An HTTP/1.1 client connection written byte by byte, so a test decides
/// exactly what goes over the wire and when.
struct Wire {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Wire {
    async fn open(gw: &TestGateway) -> Self {
        let tls = gw
            .client()
            .connect(gw.addr(), "localhost", &[b"http/1.1"])
            .await;
        Self {
            tls,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.expect("write");
        self.tls.flush().await.expect("flush");
    }

    /// Read more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.tls.read(&mut chunk))
            .await
            .expect("the gateway answers within 10 s")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response (Content-Length or chunked body).
    async fn answer(&mut self) -> Answer {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill().await, "connection closed before a response");
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().expect("length"));
        let body = if let Some(length) = length {
            while self.buf.len() < length {
                assert!(self.fill().await, "connection closed in a body");
            }
            self.buf.drain(..length).collect::<Vec<u8>>()
        } else if lower.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "connection closed in a chunk");
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill().await, "connection closed in a chunk");
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            Vec::new()
        };
        Answer {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Wait up to `limit` for the gateway to close the connection. Returns
    /// when it closed (measured from the call) and whether it sent a TLS
    /// close_notify first (rustls reports a bare TCP close as an error).
    async fn closed_within(&mut self, limit: Duration) -> Option<(Duration, bool)> {
        let started = Instant::now();
        let mut chunk = [0u8; 256];
        let read = tokio::time::timeout(limit, self.tls.read(&mut chunk)).await;
        match read {
            Err(_) => None,
            Ok(Ok(0)) => Some((started.elapsed(), true)),
            Ok(Ok(n)) => panic!(
                "unexpected bytes on an idle connection: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Ok(Err(_)) => Some((started.elapsed(), false)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parked_keep_alive_connection_serves_its_next_request() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let mut wire = Wire::open(&gw).await;
    for round in 0..3 {
        wire.send(get(&format!("/pub/round-{round}")).as_bytes())
            .await;
        wire.answer()
            .await
            .assert_served(&format!("/pub/round-{round}"));
        tokio::time::sleep(PARKED).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_request_after_a_silent_start_is_served() {
    // A new connection waits for its first request parked too.
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let mut wire = Wire::open(&gw).await;
    tokio::time::sleep(PARKED).await;
    wire.send(get("/pub/first").as_bytes()).await;
    wire.answer().await.assert_served("/pub/first");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_head_sent_in_pieces_around_the_parking_delay_is_served() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let mut wire = Wire::open(&gw).await;
    // The first request of a connection, in pieces with pauses longer than
    // the parking delay between them.
    for piece in [
        &b"GET /pub/pie"[..],
        b"ces-1 HTTP/1.1\r\nHo",
        b"st: localhost\r\n",
        b"\r\n",
    ] {
        wire.send(piece).await;
        tokio::time::sleep(PARKED).await;
    }
    wire.answer().await.assert_served("/pub/pieces-1");
    // The next one, begun after the connection was parked.
    tokio::time::sleep(PARKED).await;
    for piece in [
        &b"G"[..],
        b"ET /pub/pieces-2 HTTP/1.1\r\nHost: localhost\r\n\r",
    ] {
        wire.send(piece).await;
        tokio::time::sleep(PARKED).await;
    }
    wire.send(b"\n").await;
    wire.answer().await.assert_served("/pub/pieces-2");
    // And a POST whose body follows its head after a pause.
    tokio::time::sleep(PARKED).await;
    wire.send(
        b"POST /pub/form HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n",
    )
    .await;
    tokio::time::sleep(PARKED).await;
    wire.send(b"hello there").await;
    wire.answer().await.assert_served("/pub/form");
    let seen = up.last().expect("upstream saw the POST");
    assert_eq!(seen.body, Bytes::from_static(b"hello there"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_on_a_parked_connection_are_answered_in_order() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let mut wire = Wire::open(&gw).await;
    wire.send(get("/pub/warm-up").as_bytes()).await;
    assert_eq!(wire.answer().await.status, 200);
    tokio::time::sleep(PARKED).await;
    let mut burst = String::new();
    for i in 0..5 {
        burst.push_str(&get(&format!("/pub/pipelined-{i}")));
    }
    wire.send(burst.as_bytes()).await;
    for i in 0..5 {
        wire.answer()
            .await
            .assert_served(&format!("/pub/pipelined-{i}"));
    }
    // A burst whose last request is cut short, finished after a pause.
    tokio::time::sleep(PARKED).await;
    let mut burst = get("/pub/pipelined-a") + &get("/pub/pipelined-b");
    burst.push_str("GET /pub/pipelined-c HTTP/1.1\r\n");
    wire.send(burst.as_bytes()).await;
    for name in ["a", "b"] {
        wire.answer()
            .await
            .assert_served(&format!("/pub/pipelined-{name}"));
    }
    tokio::time::sleep(PARKED).await;
    wire.send(b"Host: localhost\r\n\r\n").await;
    wire.answer().await.assert_served("/pub/pipelined-c");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_sent_as_the_connection_parks_is_served() {
    // Each connection sends its next request at a slightly different moment
    // around the parking delay, so some land just before, at and just after
    // the moment the gateway takes the connection from hyper.
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let mut clients = Vec::new();
    for offset in (0..16u64).map(|i| 960 + i * 5) {
        let mut wire = Wire::open(&gw).await;
        clients.push(tokio::spawn(async move {
            for round in 0..3 {
                let path = format!("/pub/race-{offset}-{round}");
                wire.send(get(&path).as_bytes()).await;
                wire.answer().await.assert_served(&path);
                tokio::time::sleep(Duration::from_millis(offset)).await;
            }
        }));
    }
    for c in clients {
        c.await.expect("every request answered");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn response_slower_than_the_parking_delay_keeps_the_connection_alive() {
    // The recording upstream takes 3 s over `…slow…`: the connection is busy
    // all that time and must not be taken from hyper.
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let mut wire = Wire::open(&gw).await;
    wire.send(get("/pub/slow").as_bytes()).await;
    wire.answer().await.assert_served("/pub/slow");
    wire.send(get("/pub/after-slow").as_bytes()).await;
    wire.answer().await.assert_served("/pub/after-slow");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_whose_websocket_upgrade_was_refused_keeps_serving_past_the_parking_delay() {
    // A websocket handshake without a session is refused (SECURITY-TESTS
    // 26) and the connection stays HTTP/1.1, with hyper still holding the
    // upgrade it was asked for. Its next request after a pause must be
    // served.
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let mut wire = Wire::open(&gw).await;
    wire.send(
        b"GET /pub/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let refused = wire.answer().await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        !refused
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{refused:?}"
    );
    tokio::time::sleep(PARKED).await;
    wire.send(get("/pub/after-upgrade").as_bytes()).await;
    wire.answer().await.assert_served("/pub/after-upgrade");
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_timeout_closes_a_parked_connection_with_close_notify() {
    // For HTTP/1.1 the header read timeout is the keep-alive timeout.
    let up = Recorder::start().await;
    let gw = TestGateway::start(
        &public().server("[server.limits]\nheader_read_timeout = \"3s\""),
        &up.url(),
    )
    .await;
    let mut wire = Wire::open(&gw).await;
    wire.send(get("/pub/one").as_bytes()).await;
    assert_eq!(wire.answer().await.status, 200);
    let (after, close_notify) = wire
        .closed_within(Duration::from_secs(8))
        .await
        .expect("the idle connection is closed");
    assert!(
        after > Duration::from_millis(2500) && after < Duration::from_millis(4500),
        "closed {after:?} after the response, not at the 3 s timeout"
    );
    assert!(close_notify, "closed without a TLS close_notify");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_closes_a_parked_connection_with_close_notify() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(
        &public().server("[server.limits]\nidle_timeout = \"3s\"\nheader_read_timeout = \"30s\""),
        &up.url(),
    )
    .await;
    let mut wire = Wire::open(&gw).await;
    wire.send(get("/pub/one").as_bytes()).await;
    assert_eq!(wire.answer().await.status, 200);
    let (after, close_notify) = wire
        .closed_within(Duration::from_secs(8))
        .await
        .expect("the idle connection is closed");
    assert!(
        after > Duration::from_millis(2500) && after < Duration::from_millis(4500),
        "closed {after:?} after the response, not at the 3 s idle timeout"
    );
    assert!(close_notify, "closed without a TLS close_notify");
}

#[tokio::test(flavor = "multi_thread")]
async fn header_read_timeout_counts_from_the_last_response_across_the_park() {
    // A client that starts its next request head after the connection was
    // parked gets no more time than it had before parking existed: the
    // timer runs from the end of the last response, not from the new bytes.
    let up = Recorder::start().await;
    let gw = TestGateway::start(
        &public().server("[server.limits]\nheader_read_timeout = \"3s\""),
        &up.url(),
    )
    .await;
    let mut wire = Wire::open(&gw).await;
    wire.send(get("/pub/one").as_bytes()).await;
    assert_eq!(wire.answer().await.status, 200);
    let answered = Instant::now();
    tokio::time::sleep(PARKED).await;
    wire.send(b"GET /pub/never-finished HTTP/1.1\r\n").await;
    let closed = wire.closed_within(Duration::from_secs(8)).await;
    assert!(
        closed.is_some(),
        "the half-sent request was never timed out"
    );
    let after = answered.elapsed();
    assert!(
        after < Duration::from_millis(4500),
        "closed {after:?} after the last response: the 3 s timer restarted"
    );
    assert!(!up.saw_prefix("/pub/never-finished"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_head_on_a_fresh_connection_is_closed_at_the_header_read_timeout() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(
        &public().server("[server.limits]\nheader_read_timeout = \"3s\""),
        &up.url(),
    )
    .await;
    let mut wire = Wire::open(&gw).await;
    let opened = Instant::now();
    // One piece of a head every 1.2 s: each pause is longer than the
    // parking delay, the whole is longer than the timeout.
    let mut closed = false;
    for piece in [
        &b"GET /pub/"[..],
        b"slow",
        b"loris",
        b" HTTP/1.1\r\n",
        b"Host",
    ] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        if wire.tls.write_all(piece).await.is_err() || wire.tls.flush().await.is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        closed = wire.closed_within(Duration::from_secs(3)).await.is_some();
    }
    assert!(closed, "slow head still open after {:?}", opened.elapsed());
    assert!(
        opened.elapsed() < Duration::from_millis(6500),
        "closed only after {:?}",
        opened.elapsed()
    );
    assert!(!up.saw_prefix("/pub/slowloris"));
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_drain_closes_parked_connections_promptly() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let mut parked = Wire::open(&gw).await;
    parked.send(get("/pub/one").as_bytes()).await;
    assert_eq!(parked.answer().await.status, 200);
    let mut never_asked = Wire::open(&gw).await;
    tokio::time::sleep(PARKED).await;
    let started = Instant::now();
    let drained = tokio::spawn(gw.handle.shutdown(Duration::from_secs(20)));
    for wire in [&mut parked, &mut never_asked] {
        let (_, close_notify) = wire
            .closed_within(Duration::from_secs(5))
            .await
            .expect("a parked connection is closed by the drain");
        assert!(close_notify, "closed without a TLS close_notify");
    }
    assert!(drained.await.expect("drain"), "drain reached its deadline");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drain took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_on_a_parked_connection_stays_open_past_the_parking_delay() {
    let dash = gatehouse::demo::Dashboard::start(
        "127.0.0.1:0".parse().expect("addr"),
        gatehouse::demo::DashboardOptions {
            big_recording_bytes: 1024,
        },
    )
    .await
    .expect("dashboard");
    let gw = TestGateway::start(
        &Config::default().rest("[two_factor]\nmode = \"off\""),
        &dash.url(),
    )
    .await;
    let signed_in = gw
        .client()
        .send(
            gw.addr(),
            http::Version::HTTP_11,
            post_form(
                "/login",
                "username=alice%40example.com&password=Alice-pass-1",
            ),
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::FOUND, "{}", signed_in.text());
    let cookie = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ");

    let tls = gw
        .client()
        .connect(gw.addr(), "localhost", &[b"http/1.1"])
        .await;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
            .await
            .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    let plain = Request::get("/login")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(
        send.send_request(plain).await.expect("response").status(),
        StatusCode::OK
    );
    tokio::time::sleep(PARKED).await;
    let upgrade = Request::get("/ws/calls")
        .header("host", "localhost")
        .header("cookie", &cookie)
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(upgrade).await.expect("response");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(resp).await.expect("upgraded");
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    for round in 0..3 {
        let text = format!("hello {round}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let want = format!("echo:{text}");
        let echoed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(msg) = ws.next().await {
                if msg.expect("frame").to_text().unwrap_or_default() == want {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(echoed, "round {round}: no echo through the gateway");
        tokio::time::sleep(PARKED).await;
    }
}
