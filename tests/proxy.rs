//! Proxy core: TLS, HTTP/1.1 and HTTP/2, websockets, streaming, forwarding
//! headers, upstream failures, reloads, config checking, demo mode.

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gatehouse::demo::{wav_byte, Dashboard, DashboardOptions, BIG_RECORDING};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::gateway::{get, post_form, Client, Config, TestDir, TestGateway};
use support::process::{free_port, gateway, Proc};
use support::upstream::Recorder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn demo_dashboard(big: u64) -> Dashboard {
    Dashboard::start(
        "127.0.0.1:0".parse().expect("addr"),
        DashboardOptions {
            big_recording_bytes: big,
        },
    )
    .await
    .expect("dashboard")
}

/// A gateway config whose `/pub/` is reachable without signing in (the
/// recording upstream has no login of its own).
fn public() -> Config {
    Config::default().rest("[login]\nanonymous_paths = [\"/login\", \"/pub/\"]")
}

/// The demo dashboard without gatehouse's second factor (these tests are
/// about the proxy, not about 2FA).
fn no_2fa() -> Config {
    Config::default().rest("[two_factor]\nmode = \"off\"")
}

/// Sign in through the gateway; returns the Cookie header the browser would send.
async fn sign_in(client: &Client, addr: std::net::SocketAddr, user: &str, pass: &str) -> String {
    let form = format!("username={}&password={}", urlencode(user), urlencode(pass));
    let resp = client
        .send(addr, Version::HTTP_11, post_form("/login", &form))
        .await;
    assert_eq!(
        resp.status,
        StatusCode::FOUND,
        "sign-in failed: {}",
        resp.text()
    );
    resp.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_and_http2_requests_reach_the_demo_dashboard() {
    let dash = demo_dashboard(1024).await;
    let gw = TestGateway::start(&Config::default(), &dash.url()).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let resp = gw.client().send(gw.addr(), version, get("/login")).await;
        assert_eq!(resp.status, StatusCode::OK, "{version:?}");
        assert_eq!(resp.version, version);
        assert!(
            resp.text().contains("Sign in"),
            "{version:?}: {}",
            resp.text()
        );
        assert!(resp.header("strict-transport-security").is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_certificate_configured_for_the_name() {
    let up = Recorder::start().await;
    let dir = TestDir::new();
    let (pbx, _) = gatehouse::tls::self_signed(&["pbx.example.test"]).expect("cert");
    std::fs::write(dir.path().join("pbx.pem"), &pbx.cert).expect("write");
    std::fs::write(dir.path().join("pbx.key"), &pbx.key).expect("write");
    let config = Config::default().rest(
        "[[server.tls.sni]]\nnames = [\"pbx.example.test\"]\ncert = \"pbx.pem\"\nkey = \"pbx.key\"\n",
    );
    // [[server.tls.sni]] must sit under [server]: render and move it.
    let text = config.render(&up.url(), "127.0.0.1:0");
    let settings =
        gatehouse::config::validate::load_str(&text, Some(dir.path())).expect("settings");
    let handle = gatehouse::Gateway::new(settings)
        .start()
        .await
        .expect("start");
    let client = Client::trusting(&[&dir.cert, &pbx]);
    for (name, expected) in [("pbx.example.test", &pbx), ("gw.test", &dir.cert)] {
        let tls = client.connect(handle.addr(), name, &[b"http/1.1"]).await;
        let leaf = tls.get_ref().1.peer_certificates().expect("certs")[0].clone();
        let want = rustls_pki_types::pem::PemObject::from_pem_slice(&expected.cert)
            .map(|c: rustls_pki_types::CertificateDer<'static>| c)
            .expect("pem");
        assert_eq!(
            leaf.as_ref(),
            want.as_ref(),
            "SNI {name} got the wrong certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_1_client_is_refused() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&Config::default(), &up.url()).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    tcp.write_all(&tls11_client_hello())
        .await
        .expect("send hello");
    let mut buf = vec![0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("server answers")
        .unwrap_or(0);
    // Either an alert record (0x15) or a closed connection; never a ServerHello.
    assert!(
        n == 0 || buf[0] == 0x15,
        "server answered a TLS 1.1 hello with {:x?}",
        &buf[..n]
    );
    assert!(up.seen().is_empty());
}

/// A ClientHello offering only TLS 1.1 and its CBC suites, as an old client sends.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    let suites: &[u16] = &[0x002f, 0x0035, 0xc013, 0xc014, 0x000a];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_message_round_trips_through_the_gateway() {
    let dash = demo_dashboard(1024).await;
    let gw = TestGateway::start(&no_2fa(), &dash.url()).await;
    let cookie = sign_in(&gw.client(), gw.addr(), "alice@example.com", "Alice-pass-1").await;
    let tls = gw
        .client()
        .connect(gw.addr(), "localhost", &[b"http/1.1"])
        .await;
    let req = Request::get("wss://localhost/ws/calls")
        .header("host", "localhost")
        .header("cookie", cookie)
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(())
        .expect("request");
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("hello pbx")).await.expect("send");
    let mut echoed = false;
    for _ in 0..5 {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("message in time")
            .expect("stream open")
            .expect("frame");
        if msg.to_text().unwrap_or_default() == "echo:hello pbx" {
            echoed = true;
            break;
        }
    }
    assert!(echoed, "the echo never came back through the gateway");
}

/// A streamed request body fed from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples a process's RSS every 50 ms until dropped; returns the maximum.
struct RssSampler(
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
);

impl RssSampler {
    fn start(pid: u32) -> Self {
        let max = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let m = max.clone();
        let task = tokio::spawn(async move {
            loop {
                m.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self(task, max)
    }
    fn max(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_download_and_upload_pass_intact_with_bounded_gateway_memory() {
    const SIZE: u64 = 192 * 1024 * 1024;
    let dash = demo_dashboard(SIZE).await;
    let dir = TestDir::new();
    let port = free_port();
    let gw = gateway(&dir, &no_2fa(), &dash.url(), port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let client = dir.client();
    let cookie = sign_in(&client, addr, "alice@example.com", "Alice-pass-1").await;
    let baseline = rss_kib(gw.pid());
    let sampler = RssSampler::start(gw.pid());

    // Download, hashing as it streams.
    let tls = client.connect(addr, "localhost", &[b"http/1.1"]).await;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("/recordings/{BIG_RECORDING}"))
        .header("host", "localhost")
        .header("cookie", &cookie)
        .body(Full::new(Bytes::new()))
        .expect("req");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let (mut got, mut want) = (Sha256::new(), Sha256::new());
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.expect("frame").data_ref() {
            got.update(d);
            let expected: Vec<u8> = (offset..offset + d.len() as u64)
                .map(|o| wav_byte(o, SIZE))
                .collect();
            want.update(&expected);
            offset += d.len() as u64;
        }
    }
    assert_eq!(offset, SIZE);
    assert_eq!(got.finalize(), want.finalize(), "download corrupted");

    // Upload a streamed body of the same size.
    let tls = client.connect(addr, "localhost", &[b"http/1.1"]).await;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, ChannelBody>(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let feeder = tokio::spawn(async move {
        let chunk = Bytes::from((0..65536u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let mut h = Sha256::new();
        for _ in 0..(SIZE / 65536) {
            h.update(&chunk);
            if tx.send(chunk.clone()).await.is_err() {
                break;
            }
        }
        h.finalize()
    });
    let req = Request::post("/recordings/upload")
        .header("host", "localhost")
        .header("cookie", &cookie)
        .header("content-length", SIZE.to_string())
        .body(ChannelBody(rx))
        .expect("req");
    let resp = send.send_request(req).await.expect("upload response");
    let answer = resp.into_body().collect().await.expect("body").to_bytes();
    let sent_hash = feeder.await.expect("feeder");
    let v: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(v["bytes"].as_u64(), Some(SIZE));
    assert_eq!(
        v["sha256"].as_str(),
        Some(hex::encode(sent_hash).as_str()),
        "upload corrupted"
    );

    let max_rss = sampler.max();
    assert!(
        max_rss > 0 && baseline > 0,
        "could not read the gateway's RSS"
    );
    // What streaming adds, not the debug binary's own size (about 48 MiB
    // here; the release binary's absolute RSS is measured by bench/run):
    // 192 MiB each way must move through a few buffers, not pile up.
    let grown = max_rss.saturating_sub(baseline);
    assert!(
        grown < 32 * 1024,
        "gateway RSS grew by {grown} KiB (from {baseline} to {max_rss} KiB) while streaming {SIZE} bytes each way"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn x_forwarded_for_from_untrusted_peer_is_replaced() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public(), &up.url()).await;
    let req = Request::get("/pub/x")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .body(Full::new(Bytes::new()))
        .expect("req");
    for version in [Version::HTTP_11, Version::HTTP_2] {
        up.clear();
        let resp = gw.client().send(gw.addr(), version, req.clone()).await;
        assert_eq!(resp.status, StatusCode::OK);
        let seen = up.last().expect("upstream saw the request");
        let h = |n: &str| {
            seen.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(h("x-forwarded-for"), "127.0.0.1", "{version:?}");
        assert_eq!(h("x-real-ip"), "127.0.0.1");
        assert_eq!(h("x-forwarded-proto"), "https");
        assert_eq!(h("x-forwarded-host"), "localhost");
        assert!(
            h("forwarded").starts_with("for=127.0.0.1;"),
            "{}",
            h("forwarded")
        );
        assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_redirects_to_the_dashboards_own_address_point_at_the_gateway() {
    let up = Recorder::start().await;
    let own = up.url(); // http://127.0.0.1:PORT, as the dashboard knows itself
    for (preserve_host, host) in [(false, "localhost"), (true, "gw.test")] {
        let gw = TestGateway::start(
            &public().upstream(&format!("preserve_host = {preserve_host}")),
            &up.url(),
        )
        .await;
        for (location, expected) in [
            (
                format!("{own}/home?tab=1"),
                format!("https://{host}/home?tab=1"),
            ),
            (
                format!("http://{host}/calls"),
                format!("https://{host}/calls"),
            ),
            (
                "https://sso.example.com/x".to_string(),
                "https://sso.example.com/x".to_string(),
            ),
            ("/relative".to_string(), "/relative".to_string()),
        ] {
            let req = Request::get(format!("/pub/redirect?to={}", urlencode(&location)))
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .expect("req");
            let resp = gw.client().send(gw.addr(), Version::HTTP_11, req).await;
            assert_eq!(resp.status, StatusCode::FOUND, "{location}");
            assert_eq!(
                resp.header("location"),
                Some(expected.as_str()),
                "preserve_host = {preserve_host}: {location}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxy_makes_rightmost_untrusted_address_the_client() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(
        &public().server("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]"),
        &up.url(),
    )
    .await;
    let req = Request::get("/pub/x")
        .header("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.9")
        .body(Full::new(Bytes::new()))
        .expect("req");
    gw.client().send(gw.addr(), Version::HTTP_11, req).await;
    let seen = up.last().expect("seen");
    assert_eq!(
        seen.headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok()),
        Some("198.51.100.7")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_gives_502_slow_gives_504_and_the_gateway_keeps_serving() {
    let closed_port = free_port();
    let down = TestGateway::start(&public(), &format!("http://127.0.0.1:{closed_port}")).await;
    let resp = down.client().get(down.addr(), "/pub/").await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert!(
        resp.text().contains("dashboard is unavailable"),
        "{}",
        resp.text()
    );
    assert!(
        !resp.text().contains(&closed_port.to_string()),
        "502 page leaks internals"
    );

    let up = Recorder::start().await;
    let gw = TestGateway::start(&public().upstream("response_timeout = \"1s\""), &up.url()).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let resp = gw.client().send(gw.addr(), version, get("/pub/slow")).await;
        assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT, "{version:?}");
        assert!(resp.text().contains("not answering"));
        let ok = gw.client().send(gw.addr(), version, get("/pub/fine")).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
}

/// An https dashboard with a certificate of its own, counting the TCP
/// connections it accepts; answers `tls upstream saw <path>`.
async fn https_upstream(
    cert: &gatehouse::config::validate::CertPem,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&cert.cert)
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&cert.key).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let text = format!("tls upstream saw {}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(text),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_trusted_through_ca_file_is_reached_over_one_kept_alive_connection() {
    let (cert, _) = gatehouse::tls::self_signed(&["127.0.0.1"]).expect("cert");
    let (addr, accepted) = https_upstream(&cert).await;
    let ca = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &cert.cert).expect("write ca");
    // One worker thread: each worker keeps upstream connections of its own.
    let config = public()
        .upstream(&format!("ca_file = \"{}\"", ca_file.display()))
        .server("worker_threads = 1");
    let gw = TestGateway::start(&config, &format!("https://{addr}")).await;
    for path in ["/pub/a", "/pub/b", "/pub/c"] {
        let resp = gw.client().get(gw.addr(), path).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.text(), format!("tls upstream saw {path}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_whose_certificate_ca_file_does_not_sign_gives_502() {
    let (cert, _) = gatehouse::tls::self_signed(&["127.0.0.1"]).expect("cert");
    let (other, _) = gatehouse::tls::self_signed(&["127.0.0.1"]).expect("cert");
    let (addr, accepted) = https_upstream(&cert).await;
    let ca = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.path().join("other-ca.pem");
    std::fs::write(&ca_file, &other.cert).expect("write ca");
    let config = public().upstream(&format!("ca_file = \"{}\"", ca_file.display()));
    let gw = TestGateway::start(&config, &format!("https://{addr}")).await;
    let resp = gw.client().get(gw.addr(), "/pub/a").await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the TCP connection was made"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_listener_only_redirects_to_https() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(
        &Config::default().server("redirect_http = \"127.0.0.1:0\""),
        &up.url(),
    )
    .await;
    let addr = gw.handle.redirect_addr().expect("redirect listener");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /recordings/?a=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 301"), "{out}");
    let want = format!(
        "location: https://localhost:{}/recordings/?a=1",
        gw.addr().port()
    );
    assert!(out.to_lowercase().contains(&want), "{out}");
    assert!(up.seen().is_empty());
}

/// `server.worker_threads = 1` serves every connection on the one event loop
/// that started the gateway (what `bench/run` measures against one nginx
/// worker): HTTP/1.1
/// and HTTP/2 clients served at once, each stream of a connection its own
/// task on the one thread.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_on_one_thread_serves_many_http1_and_http2_clients_at_once() {
    let up = Recorder::start().await;
    let dir = TestDir::new();
    let port = free_port();
    let config = public().server("worker_threads = 1");
    let _gw = gateway(&dir, &config, &up.url(), port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let client = dir.client();
    let mut clients = Vec::new();
    for (i, version) in [Version::HTTP_11, Version::HTTP_2]
        .into_iter()
        .cycle()
        .take(16)
        .enumerate()
    {
        let client = client.clone();
        clients.push(tokio::spawn(async move {
            let mut conn = client.open(addr, version).await;
            let mut statuses = Vec::new();
            for n in 0..10 {
                statuses.push(conn.send(get(&format!("/pub/{i}/{n}"))).await.status);
            }
            statuses
        }));
    }
    for c in clients {
        let statuses = c.await.expect("client task");
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
    }
    assert_eq!(
        up.seen().len(),
        160,
        "every request reached the upstream once"
    );
}

/// Connections are spread over `server.worker_threads` event loops, each
/// to the one serving fewest, and stay there; a drain lets the requests in
/// flight on every worker finish.
#[tokio::test(flavor = "multi_thread")]
async fn connections_spread_over_the_worker_threads_and_a_drain_finishes_each_ones_requests() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&public().server("worker_threads = 3"), &up.url()).await;
    let client = gw.client();
    let mut conns = Vec::new();
    for version in [Version::HTTP_11, Version::HTTP_2]
        .into_iter()
        .cycle()
        .take(6)
    {
        let mut conn = client.open(gw.addr(), version).await;
        let n = conns.len();
        assert_eq!(
            conn.send(get(&format!("/pub/{n}"))).await.status,
            StatusCode::OK
        );
        conns.push(conn);
    }
    assert_eq!(gw.handle.connections_per_worker(), vec![2, 2, 2]);

    let in_flight: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(n, mut conn)| {
            tokio::spawn(async move { conn.send(get(&format!("/pub/slow/{n}"))).await })
        })
        .collect();
    let seen_all = support::gateway::eventually(10, || async {
        up.seen()
            .iter()
            .filter(|s| s.target.starts_with("/pub/slow/"))
            .count()
            == 6
    })
    .await;
    assert!(seen_all, "every slow request reached the upstream");
    assert!(
        gw.handle.shutdown(Duration::from_secs(20)).await,
        "drain reached its deadline"
    );
    for (n, request) in in_flight.into_iter().enumerate() {
        let resp = request.await.expect("client task");
        assert_eq!(resp.status, StatusCode::OK, "request {n}");
        assert_eq!(resp.text(), format!("upstream saw /pub/slow/{n}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_open_ones() {
    let up = Recorder::start().await;
    let dir = TestDir::new();
    let port = free_port();
    let mut gw = gateway(&dir, &public(), &up.url(), port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

    let (new_cert, _) = gatehouse::tls::self_signed(&["localhost"]).expect("cert");
    let both = Client::trusting(&[&dir.cert, &new_cert]);
    let leaf = |tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        tls.get_ref().1.peer_certificates().expect("certs")[0]
            .as_ref()
            .to_vec()
    };
    let pem_der = |pem: &[u8]| -> Vec<u8> {
        let c: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(pem).expect("pem");
        c.as_ref().to_vec()
    };
    let old_tls = both.connect(addr, "localhost", &[b"http/1.1"]).await;
    assert_eq!(leaf(&old_tls), pem_der(&dir.cert.cert));
    let mut old_conn = support::gateway::Conn::over(old_tls, Version::HTTP_11).await;
    assert_eq!(
        old_conn.send(get("/pub/before")).await.status,
        StatusCode::OK
    );

    std::fs::write(dir.path().join("cert.pem"), &new_cert.cert).expect("write");
    std::fs::write(dir.path().join("key.pem"), &new_cert.key).expect("write");
    gw.signal("HUP");
    assert!(
        gw.wait_for("configuration reloaded", Duration::from_secs(10))
            .is_some(),
        "{:?}",
        gw.log
    );
    let new_tls = both.connect(addr, "localhost", &[b"http/1.1"]).await;
    assert_eq!(
        leaf(&new_tls),
        pem_der(&new_cert.cert),
        "new connection still gets the old certificate"
    );
    assert_eq!(
        old_conn.send(get("/pub/after")).await.status,
        StatusCode::OK,
        "open connection broke on reload"
    );

    // A broken config is refused and the running one stays.
    std::fs::write(dir.path().join("gatehouse.toml"), "[server]\nlisten = 5\n").expect("write");
    gw.signal("HUP");
    assert!(
        gw.wait_for("reload refused", Duration::from_secs(10))
            .is_some(),
        "{:?}",
        gw.log
    );
    let still = both.send(addr, Version::HTTP_11, get("/pub/still")).await;
    assert_eq!(still.status, StatusCode::OK);

    gw.signal("TERM");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(10)),
        Some(0),
        "SIGTERM must drain and exit 0"
    );
}

#[test]
fn check_config_reports_wrong_type_and_unknown_key_with_their_paths() {
    let dir = TestDir::new();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = 5\n[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\nbogus = true\n",
    )
    .expect("write");
    let out = std::process::Command::new(support::process::BIN)
        .args(["check-config", file.to_str().expect("path")])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("server.listen"), "{stderr}");
    assert!(stderr.contains("upstream.bogus"), "{stderr}");

    let good = dir.write_config(&Config::default(), "http://127.0.0.1:1", "127.0.0.1:0");
    let out = std::process::Command::new(support::process::BIN)
        .args(["check-config", good.to_str().expect("path")])
        .output()
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or(""),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_mode_serves_the_login_page_within_ten_seconds() {
    let dir = tempfile::tempdir().expect("dir");
    let started = std::time::Instant::now();
    let mut demo = Proc::spawn(
        &[
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--big-recording-mib",
            "1",
        ],
        dir.path(),
    );
    let line = demo
        .wait_for("open:", Duration::from_secs(10))
        .expect("demo banner");
    let url = line.split_whitespace().last().expect("url").to_string();
    let addr: std::net::SocketAddr = url
        .trim_start_matches("https://")
        .trim_end_matches("/login")
        .parse()
        .expect("addr");
    // The demo's certificate is self-signed: trust it by reading it back.
    let state = demo
        .wait_for("state:", Duration::from_secs(1))
        .expect("state line");
    let state_dir = state.split_whitespace().last().expect("dir").to_string();
    let cert = std::fs::read(format!("{state_dir}/cert.pem")).expect("demo cert");
    let pem = gatehouse::config::validate::CertPem {
        cert,
        key: vec![],
        origin: "demo".into(),
    };
    let resp = Client::trusting(&[&pem]).get(addr, "/login").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.text().contains("Sign in"));
    assert!(started.elapsed() < Duration::from_secs(10));
    demo.signal("TERM");
    assert_eq!(demo.wait_exit(Duration::from_secs(10)), Some(0));
}
