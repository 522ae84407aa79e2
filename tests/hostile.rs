//! Hostile requests from ../shared/SECURITY-TESTS.md. Each test is named
//! after its item number and asserts gatehouse's answer AND what the
//! recording upstream received. Raw bytes on a TLS socket wherever a client
//! library would "fix" the request.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use std::time::{Duration, Instant};
use support::gateway::{
    attr, form_post, get, get_with, login_post, session_cookie, Config, TestGateway,
};
use support::h2raw::{self, Outcome, RawH2};
use support::upstream::{Recorder, PASSWORD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `/pub/` is public on the recording upstream; 2FA off (these tests are
/// about parsing and headers).
fn config() -> Config {
    Config::default().rest(
        "[two_factor]\nmode = \"off\"\n[login]\nanonymous_paths = [\"/login\", \"/pub/\"]\nsession_cookies = [\"APPSESSION\"]",
    )
}

async fn setup(c: Config) -> (Recorder, TestGateway) {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&c, &up.url()).await;
    (up, gw)
}

/// Send raw bytes over TLS (HTTP/1.1) and read until the server closes or 3 s pass.
async fn raw(gw: &TestGateway, bytes: &[u8]) -> String {
    let mut tls = gw
        .client()
        .connect(gw.addr(), "localhost", &[b"http/1.1"])
        .await;
    let _ = tls.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(3);
    // Until the server closes, or it has answered and gone quiet (keep-alive).
    loop {
        let wait = if out.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(300)
        };
        match tokio::time::timeout(wait, tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn upstream_header(up: &Recorder, name: &str) -> Vec<String> {
    up.last()
        .map(|s| {
            s.headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn item_12_unknown_or_duplicate_host_or_mismatched_authority_is_refused() {
    let (up, gw) = setup(config().server("hosts = [\"localhost\"]")).await;
    let other = raw(
        &gw,
        b"GET /pub/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&other), 421, "{other}");
    let dup = raw(&gw, b"GET /pub/x HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status(&dup), 400, "{dup}");
    let absolute = raw(
        &gw,
        b"GET https://localhost/pub/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&absolute), 400, "{absolute}");
    let mut h2 = Request::get("https://localhost/pub/x")
        .body(Full::new(Bytes::new()))
        .expect("req");
    h2.headers_mut()
        .insert("host", "evil.example".parse().expect("host"));
    let r = gw.client().send(gw.addr(), Version::HTTP_2, h2).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(up.seen().is_empty(), "upstream saw {:?}", up.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn item_13_untrusted_peer_cannot_claim_an_address_in_any_header() {
    let (up, gw) = setup(config()).await;
    for h in [
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "true-client-ip",
        "cf-connecting-ip",
    ] {
        let req = Request::get("/pub/x")
            .header(h, "203.0.113.9")
            .body(Full::new(Bytes::new()))
            .expect("req");
        gw.client().send(gw.addr(), Version::HTTP_11, req).await;
        let seen = up.last().expect("seen");
        let all: String = seen
            .headers
            .iter()
            .map(|(_, v)| v.to_str().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(!all.contains("203.0.113.9"), "{h} leaked through: {all}");
        assert_eq!(upstream_header(&up, "x-forwarded-for"), vec!["127.0.0.1"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item_16_proxy_header_from_untrusted_peer_or_overlong_v1_line_closes_the_connection() {
    let (up, gw) =
        setup(config().server("proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]")).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    tcp.write_all(b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "connection with an untrusted PROXY header stayed open"
    );

    let (up2, gw2) =
        setup(config().server("proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]")).await;
    let mut tcp = tokio::net::TcpStream::connect(gw2.addr())
        .await
        .expect("connect");
    let long = format!("PROXY TCP4 {} 10.0.0.1 5555 443\r\n", "1".repeat(120));
    tcp.write_all(long.as_bytes()).await.expect("write");
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "overlong PROXY v1 line was accepted");
    assert!(up.seen().is_empty() && up2.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn item_18_connection_header_cannot_remove_gatehouse_forwarding_headers() {
    let (up, gw) = setup(config()).await;
    let r = raw(&gw, b"GET /pub/x HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Forwarded-For, X-Real-IP, Forwarded\r\n\r\n").await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(upstream_header(&up, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(upstream_header(&up, "x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(upstream_header(&up, "forwarded").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn item_19_and_20_identity_and_rewrite_headers_from_clients_are_stripped() {
    let (up, gw) = setup(config()).await;
    let r = raw(
        &gw,
        b"GET /pub/x HTTP/1.1\r\nHost: localhost\r\nX-Gatehouse-User: admin@example.com\r\nX_Gatehouse_User: admin@example.com\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    let seen = up.last().expect("seen");
    for h in [
        "x-gatehouse-user",
        "x_gatehouse_user",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(seen.headers.get(h).is_none(), "{h} reached the upstream");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item_22_content_length_with_chunked_cannot_smuggle_a_second_request() {
    let (up, gw) = setup(config()).await;
    let attack = b"POST /pub/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /pub/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let r = raw(&gw, attack).await;
    let code = status(&r);
    assert!(code == 400 || code == 200, "{r}");
    assert!(
        !up.saw_prefix("/pub/smuggled"),
        "a smuggled request reached the upstream"
    );
    assert!(up.seen().len() <= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn item_23_ambiguous_framing_is_400() {
    let (up, gw) = setup(config()).await;
    let cases: &[&[u8]] = &[
        b"POST /pub/a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /pub/a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST /pub/a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST /pub/a HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /pub/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\nContent-Length: 7\r\n\r\nabcdefg",
        b"POST /pub/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: +6\r\n\r\nabcdef",
        b"POST /pub/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6, 6\r\n\r\nabcdef",
    ];
    for case in cases {
        let r = raw(&gw, case).await;
        assert_eq!(status(&r), 400, "{}\n=> {r}", String::from_utf8_lossy(case));
    }
    assert!(
        up.seen().is_empty(),
        "upstream saw {:?}",
        up.seen().iter().map(|s| &s.target).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn item_24_obs_fold_space_before_colon_bare_lf_and_control_bytes_are_400() {
    let (up, gw) = setup(config()).await;
    let cases: &[&[u8]] = &[
        b"GET /pub/a HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n  folded\r\n\r\n",
        b"GET /pub/a HTTP/1.1\r\nHost: localhost\r\nX-A : 1\r\n\r\n",
        b"GET /pub/a HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n",
        b"GET /pub/a HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n",
    ];
    for case in cases {
        let r = raw(&gw, case).await;
        assert!(
            status(&r) == 400 || r.is_empty(),
            "{:?}\n=> {r}",
            String::from_utf8_lossy(case)
        );
    }
    assert!(
        up.seen().is_empty(),
        "upstream saw {:?}",
        up.seen().iter().map(|s| &s.target).collect::<Vec<_>>()
    );

    // Bare LF line endings: hyper accepts them (RFC 9112 §2.2 allows it) and
    // offers no switch to refuse them. The danger behind the item is a
    // front/back parser disagreement; gatehouse re-frames every request with
    // CRLF, so the dashboard sees exactly one well-formed request.
    let r = raw(&gw, b"GET /pub/lf HTTP/1.1\nHost: localhost\nX-A: 1\nContent-Length: 0\n\nGET /pub/second HTTP/1.1\n\n").await;
    assert!(matches!(status(&r), 200 | 400), "{r}");
    let targets: Vec<String> = up.seen().iter().map(|s| s.target.clone()).collect();
    assert!(targets.iter().all(|t| t == "/pub/lf"), "{targets:?}");
    assert!(targets.len() <= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn item_26_websocket_upgrade_without_a_session_is_401_before_any_101() {
    let (up, gw) = setup(config()).await;
    for path in ["/ws/calls", "/pub/ws"] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let r = raw(&gw, req.as_bytes()).await;
        assert_eq!(status(&r), 401, "{path}: {r}");
    }
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn item_26_ending_a_session_closes_its_open_websocket() {
    use futures_util::StreamExt;
    let dash =
        gatehouse::demo::Dashboard::start("127.0.0.1:0".parse().expect("addr"), Default::default())
            .await
            .expect("dashboard");
    let gw = TestGateway::start(
        &Config::default().rest("[two_factor]\nmode = \"off\""),
        &dash.url(),
    )
    .await;
    let form = "username=alice%40example.com&password=Alice-pass-1";
    let login = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            support::gateway::post_form("/login", form),
        )
        .await;
    let cookie = session_cookie(&login).expect("session");
    let tls = gw
        .client()
        .connect(gw.addr(), "localhost", &[b"http/1.1"])
        .await;
    let req = Request::get("wss://localhost/ws/calls")
        .header("host", "localhost")
        .header("cookie", &cookie)
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(())
        .expect("request");
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("websocket");
    assert!(ws.next().await.is_some(), "live feed works while signed in");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    gw.handle
        .live()
        .sessions
        .logout_all(now_ms)
        .await
        .expect("log out all");
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "websocket still open {:?} after log-out-all",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn item_27_oversized_heads_and_forms_are_refused_quickly() {
    let (up, gw) = setup(config()).await;
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        &gw,
        format!("GET /pub/a HTTP/1.1\r\nHost: localhost\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(
        matches!(status(&r), 431 | 400) || r.is_empty(),
        "101+ headers: {r}"
    );
    let big = format!(
        "GET /pub/a HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = raw(&gw, big.as_bytes()).await;
    assert!(
        matches!(status(&r), 431 | 400) || r.is_empty(),
        "64 KB header: {}",
        &r[..r.len().min(80)]
    );
    let line = format!(
        "GET /pub/{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(500 * 1024)
    );
    let started = Instant::now();
    let r = raw(&gw, line.as_bytes()).await;
    assert!(
        matches!(status(&r), 414 | 431 | 400) || r.is_empty(),
        "500 KB request line"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(up.seen().is_empty());

    // A 50 MB POST to a gatehouse form: 413 from the declared length, unread.
    let login = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("alice@example.com", PASSWORD, "", &[]),
        )
        .await;
    let cookie = session_cookie(&login).expect("session");
    let head = format!(
        "POST /.gatehouse/account/reset HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 52428800\r\n\r\n"
    );
    let started = Instant::now();
    let r = raw(&gw, head.as_bytes()).await;
    assert_eq!(status(&r), 413, "{r}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let r = raw(
        &gw,
        b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 52428800\r\n\r\nusername=a",
    )
    .await;
    assert_eq!(status(&r), 413, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn item_28_slowloris_and_silent_connections_are_closed_by_timeouts() {
    let (_up, gw) = setup(
        config()
            .server("[server.limits]\nheader_read_timeout = \"1s\"\nhandshake_timeout = \"1s\""),
    )
    .await;
    // No ClientHello at all.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "handshake timeout took {:?}",
        started.elapsed()
    );
    // One byte every 700 ms of a request head.
    let mut tls = gw
        .client()
        .connect(gw.addr(), "localhost", &[b"http/1.1"])
        .await;
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /pub/slow-loris HTTP/1.1\r\nHost: localhost\r\n".iter() {
        if tls.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    if !closed {
        let mut out = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut out)).await;
        closed = matches!(n, Ok(Ok(_)) | Ok(Err(_)));
    }
    assert!(
        closed,
        "slowloris connection still open after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn item_30_two_session_cookies_in_one_request_are_refused() {
    let (up, gw) = setup(config()).await;
    let login = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("alice@example.com", PASSWORD, "", &[]),
        )
        .await;
    let cookie = session_cookie(&login).expect("session");
    let other = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("bob@example.com", PASSWORD, "", &[]),
        )
        .await;
    let bob = session_cookie(&other).expect("session");
    up.clear();
    let r = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            get_with("/home", &format!("{cookie}; {bob}"), &[]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn item_33_login_variants_are_intercepted_and_count_towards_lockout() {
    let (up, gw) = setup(config()).await;
    for path in ["/LOGIN", "/login/", "/login?next=/x", "/Login/", "/login"] {
        let mut req = login_post("alice@example.com", "wrong", "", &[]);
        *req.uri_mut() = path.parse().expect("uri");
        let r = gw.client().send(gw.addr(), Version::HTTP_11, req).await;
        assert_ne!(r.status, StatusCode::FOUND, "{path}");
    }
    up.clear();
    let r = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("alice@example.com", PASSWORD, "", &[]),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "variants were not counted as login attempts"
    );
    assert!(up.seen().is_empty());
    // Basic auth on a protected path is no way past the login.
    let r = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            get_with(
                "/home",
                "",
                &[("authorization", "Basic YWxpY2U6cmlnaHQtcGFzcw==")],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn item_39_upstream_down_during_login_makes_no_session() {
    let port = support::process::free_port();
    let gw = TestGateway::start(&config(), &format!("http://127.0.0.1:{port}")).await;
    let r = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("alice@example.com", PASSWORD, "", &[]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        session_cookie(&r).is_none(),
        "a session was made without the dashboard's answer"
    );
    let _ = get("/");
}

fn two_factor_config() -> Config {
    Config::default().server("trusted_proxies = [\"127.0.0.1\"]").rest(
        "[login]\nanonymous_paths = [\"/login\", \"/pub/\"]\n[session]\nprevent_concurrent = false",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn item_31_a_planted_session_id_is_replaced_after_the_password_and_after_two_factor() {
    let (up, gw) = setup(two_factor_config()).await;
    let send = |req| {
        let client = gw.client();
        let addr = gw.addr();
        async move { client.send(addr, Version::HTTP_11, req).await }
    };
    // A pre-login session (the dashboard set an HttpOnly cookie on a public page).
    let planted = session_cookie(&send(get("/pub/set-cookie")).await).expect("pre-login session");
    let pw = send(login_post("alice@example.com", PASSWORD, &planted, &[])).await;
    let pending = session_cookie(&pw).expect("new id after the password");
    assert_ne!(pending, planted);
    let page = send(get_with("/.gatehouse/2fa/enroll", &pending, &[]))
        .await
        .text();
    let secret = gatehouse::auth::totp::TotpSecret::from_base32(&attr(&page, "data-secret"))
        .expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let csrf = attr(&page, "name=\"csrf\" value");
    let done = send(form_post(
        &pending,
        "/.gatehouse/2fa/enroll",
        &[
            ("csrf", &csrf),
            ("code", &gatehouse::auth::totp::code_at(&secret, now)),
        ],
        &[("x-forwarded-for", "127.0.0.1")],
    ))
    .await;
    let active = session_cookie(&done).expect("new id after the second factor");
    assert_ne!(active, pending);
    up.clear();
    for dead in [&planted, &pending] {
        let r = send(get_with("/home", dead, &[])).await;
        assert_ne!(r.status, StatusCode::OK, "an old id still works");
    }
    assert!(up.seen().is_empty());
    assert_eq!(
        send(get_with("/home", &active, &[])).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn item_36_failures_over_five_sessions_and_five_addresses_share_one_counter() {
    let (up, gw) = setup(two_factor_config()).await;
    let send = |req| {
        let client = gw.client();
        let addr = gw.addr();
        async move { client.send(addr, Version::HTTP_11, req).await }
    };
    // Enroll alice once.
    let pending = session_cookie(&send(login_post("alice@example.com", PASSWORD, "", &[])).await)
        .expect("pending");
    let page = send(get_with("/.gatehouse/2fa/enroll", &pending, &[]))
        .await
        .text();
    let secret = gatehouse::auth::totp::TotpSecret::from_base32(&attr(&page, "data-secret"))
        .expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let csrf = attr(&page, "name=\"csrf\" value");
    send(form_post(
        &pending,
        "/.gatehouse/2fa/enroll",
        &[
            ("csrf", &csrf),
            ("code", &gatehouse::auth::totp::code_at(&secret, now)),
        ],
        &[("x-forwarded-for", "127.0.0.1")],
    ))
    .await;

    // Two wrong passwords and three wrong codes, each from its own address and session.
    let ips = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "198.51.100.5",
    ];
    for ip in &ips[..2] {
        send(login_post(
            "alice@example.com",
            "wrong",
            "",
            &[("x-forwarded-for", ip)],
        ))
        .await;
    }
    for ip in &ips[2..] {
        let r = send(login_post(
            "alice@example.com",
            PASSWORD,
            "",
            &[("x-forwarded-for", ip)],
        ))
        .await;
        let cookie = session_cookie(&r).expect("pending");
        let csrf = attr(
            &send(get_with(
                "/.gatehouse/2fa",
                &cookie,
                &[("x-forwarded-for", ip)],
            ))
            .await
            .text(),
            "name=\"csrf\" value",
        );
        send(form_post(
            &cookie,
            "/.gatehouse/2fa",
            &[("csrf", csrf.as_str()), ("code", "000000")],
            &[("x-forwarded-for", ip)],
        ))
        .await;
    }
    up.clear();
    let r = send(login_post(
        "alice@example.com",
        PASSWORD,
        "",
        &[("x-forwarded-for", "203.0.113.50")],
    ))
    .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "five failures across sessions and addresses did not lock"
    );
    assert!(up.seen().is_empty());
}

// ---------------------------------------------------------------------------
// Path rules (items 1–11) and client addresses (14, 15, 17). Setup of
// SECURITY-TESTS.md: `/recordings/` admits only 203.0.113.0/24 and country
// DE; the test client (127.0.0.1) is the trusted load balancer and says who
// the client is in X-Forwarded-For; the attacker is 198.51.100.7 (US) with a
// full session. Every spelling goes out as raw bytes over HTTP/1.1 and as raw
// frames over HTTP/2.

const TEST_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/test-country.mmdb");
const ATTACKER: &str = "198.51.100.7";
const OFFICE: &str = "203.0.113.9";

fn areas_config(case_insensitive: bool) -> Config {
    Config::default()
        .server("trusted_proxies = [\"127.0.0.1\"]")
        .rest(&format!(
            r#"[two_factor]
mode = "off"
[login]
anonymous_paths = ["/login"]
[geoip]
database = "{TEST_DB}"
[[access.area]]
name = "recordings"
paths = ["/recordings/"]
case_insensitive = {case_insensitive}
countries = ["DE"]
ip_restriction = true
allow = [{{ cidr = "203.0.113.0/24", note = "Office" }}]
"#
        ))
}

/// A gateway with the recordings area, and a full session for the attacker.
async fn areas_setup(case_insensitive: bool) -> (Recorder, TestGateway, String) {
    let (up, gw) = setup(areas_config(case_insensitive)).await;
    let login = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post(
                "mallory@example.com",
                PASSWORD,
                "",
                &[("x-forwarded-for", ATTACKER)],
            ),
        )
        .await;
    let cookie = session_cookie(&login).expect("the attacker has a full session");
    let home = raw_as(&gw, ATTACKER, &cookie, b"/public/x").await;
    assert_eq!(status(&home), 200, "the session is a full one: {home}");
    up.clear();
    (up, gw, cookie)
}

/// `path` (raw bytes) as `client` with `cookie`, over HTTP/1.1.
async fn raw_as(gw: &TestGateway, client: &str, cookie: &str, path: &[u8]) -> String {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(path);
    req.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: {client}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    raw(gw, &req).await
}

/// `path` (raw bytes in `:path`) as `client` with `cookie`, over HTTP/2.
async fn h2_as(gw: &TestGateway, client: &str, cookie: &str, path: &[u8]) -> Outcome {
    let mut h2 = RawH2::open(gw).await;
    h2.request(
        &h2raw::get(
            path,
            &[
                (b"x-forwarded-for", client.as_bytes()),
                (b"cookie", cookie.as_bytes()),
            ],
        ),
        None,
    )
    .await
}

/// Every path is refused with one of `h1` over HTTP/1.1 and with one of `h1`
/// or a stream error over HTTP/2, and nothing reaches the upstream.
async fn assert_refused(
    gw: &TestGateway,
    up: &Recorder,
    cookie: &str,
    paths: &[&[u8]],
    h1: &[u16],
) {
    for path in paths {
        let shown = String::from_utf8_lossy(path);
        let r = raw_as(gw, ATTACKER, cookie, path).await;
        assert!(h1.contains(&status(&r)), "HTTP/1.1 {shown}: {r}");
        let o = h2_as(gw, ATTACKER, cookie, path).await;
        assert!(o.is_refusal(h1), "HTTP/2 {shown}: {o:?}");
    }
    let seen: Vec<String> = up.seen().iter().map(|s| s.target.clone()).collect();
    assert!(seen.is_empty(), "the upstream saw {seen:?}");
}

/// From the office, `path` is admitted over both versions and the upstream
/// receives exactly `forwarded`: the rules were checked on what is forwarded.
async fn assert_forwarded_as(
    gw: &TestGateway,
    up: &Recorder,
    client: &str,
    cookie: &str,
    path: &[u8],
    forwarded: &str,
) {
    let shown = String::from_utf8_lossy(path);
    up.clear();
    let r = raw_as(gw, client, cookie, path).await;
    assert_eq!(status(&r), 200, "HTTP/1.1 {shown}: {r}");
    let o = h2_as(gw, client, cookie, path).await;
    assert_eq!(o.status(), Some(200), "HTTP/2 {shown}: {o:?}");
    let seen: Vec<String> = up.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(seen, vec![forwarded.to_string(); 2], "{shown}");
    up.clear();
}

#[tokio::test(flavor = "multi_thread")]
async fn item_01_encoded_letters_and_other_cases_of_a_protected_path_are_refused() {
    let (up, gw, cookie) = areas_setup(false).await;
    let cases: &[&[u8]] = &[b"/%72ecordings/x", b"/%72%65cordings/x", b"/recording%73/x"];
    assert_refused(&gw, &up, &cookie, cases, &[403]).await;
    assert_forwarded_as(
        &gw,
        &up,
        OFFICE,
        &cookie,
        b"/%72ecordings/x",
        "/recordings/x",
    )
    .await;

    // A case-insensitive area refuses every case, escaped or not.
    let (up, gw, cookie) = areas_setup(true).await;
    let cases: &[&[u8]] = &[
        b"/RECORDINGS/x",
        b"/Recordings/x",
        b"/rEcOrDiNgS/x",
        b"/%52ECORDINGS/x",
        b"/%72ecordings/x",
    ];
    assert_refused(&gw, &up, &cookie, cases, &[403]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_02_slashes_dots_and_the_bare_area_name_are_refused() {
    let (up, gw, cookie) = areas_setup(false).await;
    let cases: &[&[u8]] = &[
        b"//recordings/x",
        b"///recordings/x",
        b"/./recordings/x",
        b"/public/../recordings/x",
        b"/public/./../recordings/x",
        b"/recordings",
        b"/recordings/",
        b"/public/..//recordings/x",
    ];
    assert_refused(&gw, &up, &cookie, cases, &[403]).await;
    for path in [
        &b"//recordings/x"[..],
        b"/./recordings/x",
        b"/public/../recordings/x",
    ] {
        assert_forwarded_as(&gw, &up, OFFICE, &cookie, path, "/recordings/x").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item_03_encoded_dot_segments_are_refused() {
    let (up, gw, cookie) = areas_setup(false).await;
    let cases: &[&[u8]] = &[
        b"/public/%2e%2e/recordings/x",
        b"/public/.%2e/recordings/x",
        b"/public/%2e./recordings/x",
        b"/public/%2E%2E/recordings/x",
        b"/%2e/recordings/x",
    ];
    assert_refused(&gw, &up, &cookie, cases, &[403]).await;
    assert_forwarded_as(
        &gw,
        &up,
        OFFICE,
        &cookie,
        b"/public/%2e%2e/recordings/x",
        "/recordings/x",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_04_encoded_slashes_and_backslashes_are_400() {
    let (up, gw, cookie) = areas_setup(false).await;
    let cases: &[&[u8]] = &[
        b"/public%2f..%2frecordings/x",
        b"/public%2F..%2Frecordings/x",
        b"/public/..%5crecordings/x",
        b"/public/..%5Crecordings/x",
        b"/public\\..\\recordings\\x",
        b"/public/..\\recordings/x",
    ];
    assert_refused(&gw, &up, &cookie, cases, &[400]).await;
    // Not even from the office: there is no unambiguous path to admit.
    for path in cases {
        let r = raw_as(&gw, OFFICE, &cookie, path).await;
        assert_eq!(status(&r), 400, "{}", String::from_utf8_lossy(path));
    }
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn item_05_path_parameters_are_refused() {
    let (up, gw, cookie) = areas_setup(false).await;
    let cases: &[&[u8]] = &[
        b"/recordings;jsessionid=1/x",
        b"/public;/../recordings/x",
        b"/public/..;/recordings/x",
        b"/recordings;/x",
        b"/recordings%3bx/x",
        b"/public/%3B/../recordings/x",
    ];
    assert_refused(&gw, &up, &cookie, cases, &[400, 403]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_06_a_double_encoded_path_is_forwarded_exactly_as_evaluated() {
    let (up, gw, cookie) = areas_setup(false).await;
    // The attacker may reach /public/…: the %25 is never decoded a second
    // time, so the dashboard gets the very string the area was chosen on.
    for (path, forwarded) in [
        (
            &b"/public/%252e%252e/recordings/x"[..],
            "/public/%252e%252e/recordings/x",
        ),
        (
            b"/public/%252E%252E/recordings/x",
            "/public/%252E%252E/recordings/x",
        ),
        (
            b"/public/%25%32%65%25%32%65/recordings/x",
            "/public/%252e%252e/recordings/x",
        ),
    ] {
        assert_forwarded_as(&gw, &up, ATTACKER, &cookie, path, forwarded).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item_07_overlong_utf8_nul_and_invalid_utf8_are_400() {
    let (up, gw, cookie) = areas_setup(false).await;
    let cases: &[&[u8]] = &[
        b"/x%c0%af..%c0%afrecordings/x",
        b"/public/%c0%ae%c0%ae/recordings/x",
        b"/public/%e0%80%af",
        b"/recordings%00/x",
        b"/public/%00",
        b"/public/x%00.css",
        b"/public/%ff",
        b"/public/%ed%a0%80",
        b"/public/\xff",
        b"/public/\xc0\xaf",
        b"/public/\x00",
    ];
    assert_refused(&gw, &up, &cookie, cases, &[400]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_08_fullwidth_and_zero_width_look_alikes_are_never_folded() {
    let (up, gw, cookie) = areas_setup(true).await;
    // Each is a different path from /recordings/: admitted as the default
    // area, forwarded escaped exactly as evaluated, never as /recordings/.
    for (path, forwarded) in [
        // U+FF52 FULLWIDTH LATIN SMALL LETTER R
        (&b"/%ef%bd%92ecordings/x"[..], "/%EF%BD%92ecordings/x"),
        ("/ｒecordings/x".as_bytes(), "/%EF%BD%92ecordings/x"),
        // U+200B ZERO WIDTH SPACE
        (b"/re%e2%80%8bcordings/x", "/re%E2%80%8Bcordings/x"),
        ("/recordings\u{200b}/x".as_bytes(), "/recordings%E2%80%8B/x"),
        // U+FF0F FULLWIDTH SOLIDUS, U+FF0E FULLWIDTH FULL STOP
        (
            b"/public%ef%bc%8f..%ef%bc%8frecordings/x",
            "/public%EF%BC%8F..%EF%BC%8Frecordings/x",
        ),
        (
            "/public/\u{ff0e}\u{ff0e}/recordings/x".as_bytes(),
            "/public/%EF%BC%8E%EF%BC%8E/recordings/x",
        ),
        // U+0130 LATIN CAPITAL LETTER I WITH DOT ABOVE, U+212A KELVIN SIGN
        ("/RECORD\u{130}NGS/x".as_bytes(), "/RECORD%C4%B0NGS/x"),
        ("/\u{212a}/x".as_bytes(), "/%E2%84%AA/x"),
    ] {
        assert_forwarded_as(&gw, &up, ATTACKER, &cookie, path, forwarded).await;
    }
}

/// Item 9. hyper parses the request-target with the `http` crate, which
/// drops a fragment (`#…`) before gatehouse sees the request, for HTTP/1.1
/// and for HTTP/2's `:path` alike; the raw target is not kept anywhere, so
/// gatehouse cannot answer 400. The test proves the safe behaviour instead:
/// the access decision and the forwarded request use the same path, the part
/// before `#`, and nothing after `#` ever reaches the dashboard.
#[tokio::test(flavor = "multi_thread")]
async fn item_09_a_fragment_in_the_request_line_never_changes_the_decided_path() {
    let (up, gw, cookie) = areas_setup(false).await;
    let cases: &[&[u8]] = &[
        b"/recordings/x#/public/",
        b"/recordings/x#",
        b"/recordings#/../public/",
        b"/%72ecordings/x#frag",
    ];
    assert_refused(&gw, &up, &cookie, cases, &[400, 403]).await;
    for (path, forwarded) in [
        (&b"/public/#/../recordings/x"[..], "/public/"),
        (b"/public/x#/../../recordings/x", "/public/x"),
        (b"/public/x?a=1#/../recordings/x", "/public/x?a=1"),
    ] {
        assert_forwarded_as(&gw, &up, ATTACKER, &cookie, path, forwarded).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item_10_rules_match_the_path_never_the_query() {
    let (up, gw, cookie) = areas_setup(false).await;
    let cases: &[&[u8]] = &[
        b"/recordings/x?next=/public/",
        b"/recordings/x?/../../public/",
        b"/recordings?public",
        b"/recordings/x?%2f..%2fpublic",
    ];
    assert_refused(&gw, &up, &cookie, cases, &[403]).await;
    // And a query naming the protected area is only a query.
    assert_forwarded_as(
        &gw,
        &up,
        ATTACKER,
        &cookie,
        b"/public/x?next=/recordings/x",
        "/public/x?next=/recordings/x",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_11_absolute_form_has_one_authority_for_decision_and_forwarding() {
    let (up, gw) = setup(areas_config(false).server("hosts = [\"localhost\"]")).await;
    let login = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post(
                "mallory@example.com",
                PASSWORD,
                "",
                &[("x-forwarded-for", ATTACKER)],
            ),
        )
        .await;
    let cookie = session_cookie(&login).expect("session");
    up.clear();
    let req = |target: &str, host: Option<&str>| {
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        format!("GET {target} HTTP/1.1\r\n{host}X-Forwarded-For: {ATTACKER}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
    };
    // Two authorities that disagree: 400, whichever is the configured one.
    for (target, host) in [
        ("https://dash.example.com/recordings/x", Some("localhost")),
        ("https://localhost/recordings/x", Some("dash.example.com")),
        ("https://dash.example.com/public/x", Some("localhost")),
        ("https://localhost/public/x", Some("dash.example.com")),
        (
            "https://localhost@dash.example.com/public/x",
            Some("localhost"),
        ),
    ] {
        let r = raw(&gw, req(target, host).as_bytes()).await;
        assert_eq!(status(&r), 400, "{target} with Host {host:?}: {r}");
    }
    // An authority that is not ours, alone: misdirected.
    let r = raw(
        &gw,
        req("https://dash.example.com/public/x", None).as_bytes(),
    )
    .await;
    assert!(matches!(status(&r), 400 | 421), "{r}");
    // One authority: the path decides, as in origin form.
    let r = raw(
        &gw,
        req("https://localhost/recordings/x", Some("localhost")).as_bytes(),
    )
    .await;
    assert_eq!(status(&r), 403, "{r}");
    let r = raw(
        &gw,
        req("https://localhost/%72ecordings/x", None).as_bytes(),
    )
    .await;
    assert!(matches!(status(&r), 400 | 403), "{r}");
    assert!(up.seen().is_empty(), "upstream saw {:?}", up.seen());
    // …and the upstream gets that one authority and the decided path.
    let r = raw(
        &gw,
        req("https://localhost/public/./x", Some("localhost")).as_bytes(),
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    let seen = up.last().expect("forwarded");
    assert_eq!(seen.target, "/public/x");
    assert_eq!(upstream_header(&up, "host"), vec!["localhost"]);

    // HTTP/2 carries the authority in `:authority`; a `host` that differs is
    // a second authority, and a foreign `:authority` alone is misdirected.
    up.clear();
    let mut h2 = RawH2::open(&gw).await;
    let c = cookie.as_bytes();
    let x = ATTACKER.as_bytes();
    let two = h2
        .request(
            &[
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"dash.example.com"),
                (b":path", b"/public/x"),
                (b"host", b"localhost"),
                (b"cookie", c),
                (b"x-forwarded-for", x),
            ],
            None,
        )
        .await;
    assert!(two.is_refusal(&[400]), "{two:?}");
    let foreign = h2
        .request(
            &[
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"dash.example.com"),
                (b":path", b"/public/x"),
                (b"cookie", c),
                (b"x-forwarded-for", x),
            ],
            None,
        )
        .await;
    assert!(foreign.is_refusal(&[400, 421]), "{foreign:?}");
    let decided = h2
        .request(
            &h2raw::get(b"/recordings/x", &[(b"cookie", c), (b"x-forwarded-for", x)]),
            None,
        )
        .await;
    assert_eq!(decided.status(), Some(403), "{decided:?}");
    assert!(up.seen().is_empty(), "upstream saw {:?}", up.seen());
}

/// The recordings area also lists the load balancer's own address
/// (127.0.0.1, the test client): a gateway that fell back to the peer when
/// X-Forwarded-For is bad would let the attacker in, so every refusal below
/// proves the fallback never happens.
fn lb_trap_config() -> Config {
    let c = areas_config(false);
    Config {
        rest: c
            .rest
            .replace(
                "allow = [{ cidr = \"203.0.113.0/24\", note = \"Office\" }]",
                "allow = [{ cidr = \"203.0.113.0/24\", note = \"Office\" }, { ip = \"127.0.0.1\", note = \"LB\" }]",
            )
            // No session needed: these tests are about who the client is.
            .replace("anonymous_paths = [\"/login\"]", "anonymous_paths = [\"/login\", \"/recordings/\"]"),
        ..c
    }
}

/// A raw HTTP/1.1 request for `path` with these X-Forwarded-For lines.
async fn raw_xff(gw: &TestGateway, path: &str, xff_lines: &[&str]) -> String {
    let xff: String = xff_lines
        .iter()
        .map(|v| format!("X-Forwarded-For:{v}\r\n"))
        .collect();
    raw(
        gw,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{xff}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
}

/// The same over HTTP/2, each line its own `x-forwarded-for` field.
async fn h2_xff(gw: &TestGateway, path: &str, xff_lines: &[&str]) -> Outcome {
    let mut h2 = RawH2::open(gw).await;
    let extra: Vec<(&[u8], &[u8])> = xff_lines
        .iter()
        .map(|v| (&b"x-forwarded-for"[..], v.trim().as_bytes()))
        .collect();
    h2.request(&h2raw::get(path.as_bytes(), &extra), None).await
}

/// Through the load balancer with these X-Forwarded-For lines, the request
/// for a recording is refused over both versions and never forwarded.
async fn assert_xff_refused(gw: &TestGateway, up: &Recorder, lines: &[&str]) {
    let r = raw_xff(gw, "/recordings/x", lines).await;
    assert_eq!(status(&r), 403, "HTTP/1.1 XFF {lines:?}: {r}");
    let o = h2_xff(gw, "/recordings/x", lines).await;
    assert_eq!(o.status(), Some(403), "HTTP/2 XFF {lines:?}: {o:?}");
    assert!(
        up.seen().is_empty(),
        "XFF {lines:?}: upstream saw {:?}",
        up.seen()
    );
}

/// …and these are admitted, with the client named to the upstream as `client`.
async fn assert_xff_admitted(gw: &TestGateway, up: &Recorder, lines: &[&str], client: &str) {
    up.clear();
    let r = raw_xff(gw, "/recordings/x", lines).await;
    assert_eq!(status(&r), 200, "HTTP/1.1 XFF {lines:?}: {r}");
    assert_eq!(upstream_header(up, "x-forwarded-for"), vec![client]);
    let o = h2_xff(gw, "/recordings/x", lines).await;
    assert_eq!(o.status(), Some(200), "HTTP/2 XFF {lines:?}: {o:?}");
    assert_eq!(upstream_header(up, "x-forwarded-for"), vec![client]);
    assert_eq!(up.seen().len(), 2);
    up.clear();
}

#[tokio::test(flavor = "multi_thread")]
async fn item_14_forwarded_for_via_the_trusted_balancer_names_the_rightmost_client_or_nobody() {
    let c = lb_trap_config();
    let c = Config {
        server: c
            .server
            .replace("[\"127.0.0.1\"]", "[\"127.0.0.1\", \"10.0.0.0/8\"]"),
        ..c
    };
    let (up, gw) = setup(c).await;
    // The attacker appended after a forged office address: the attacker.
    assert_xff_refused(&gw, &up, &[" 203.0.113.9, 198.51.100.7"]).await;
    assert_xff_refused(&gw, &up, &[" 203.0.113.9", " 198.51.100.7"]).await;
    assert_xff_refused(&gw, &up, &[" 203.0.113.9, 198.51.100.7, 10.0.0.9"]).await;
    // Garbage, "unknown", empty: nobody, never the balancer's own address.
    for bad in [
        " garbage",
        " unknown",
        "",
        " ",
        " ,",
        " 203.0.113.9, garbage",
        " 203.0.113.9,",
        " _hidden",
    ] {
        assert_xff_refused(&gw, &up, &[bad]).await;
    }
    assert_xff_refused(&gw, &up, &[" 203.0.113.9", " unknown"]).await;
    // Controls: the right-most untrusted entry is the client.
    assert_xff_admitted(&gw, &up, &[" 198.51.100.7, 203.0.113.9"], OFFICE).await;
    assert_xff_admitted(
        &gw,
        &up,
        &[" 198.51.100.7", " 203.0.113.9, 10.0.0.9"],
        OFFICE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_15_private_and_loopback_clients_have_no_country_and_are_refused_unless_listed() {
    let (up, gw) = setup(
        Config::default()
            .server("trusted_proxies = [\"127.0.0.1\"]")
            .rest(&format!(
                r#"[two_factor]
mode = "off"
[login]
anonymous_paths = ["/login", "/de/"]
[geoip]
database = "{TEST_DB}"
[[access.area]]
name = "germany"
paths = ["/de/"]
countries = ["DE"]
allow = ["10.9.0.5"]
"#
            )),
    )
    .await;
    for ip in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.2",
        "169.254.1.1",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.1.2.3",
    ] {
        let r = raw_xff(&gw, "/de/x", &[&format!(" {ip}")]).await;
        assert_eq!(status(&r), 403, "HTTP/1.1 {ip}: {r}");
        let o = h2_xff(&gw, "/de/x", &[ip]).await;
        assert_eq!(o.status(), Some(403), "HTTP/2 {ip}: {o:?}");
    }
    // The balancer itself (loopback, talking for itself) has no country either.
    let r = raw(
        &gw,
        b"GET /de/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 403, "{r}");
    assert!(up.seen().is_empty(), "upstream saw {:?}", up.seen());
    // Listed private address and a German one: admitted.
    for ip in ["10.9.0.5", OFFICE] {
        let r = raw_xff(&gw, "/de/x", &[&format!(" {ip}")]).await;
        assert_eq!(status(&r), 200, "{ip}: {r}");
        assert_eq!(
            h2_xff(&gw, "/de/x", &[ip]).await.status(),
            Some(200),
            "{ip}"
        );
    }
    assert_eq!(up.seen().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn item_17_mapped_ipv6_is_ipv4_and_odd_address_spellings_are_invalid() {
    let (up, gw) = setup(lb_trap_config()).await;
    for odd in [
        "fe80::1%eth0",
        "203.000.113.009",
        "0313.0.113.9",
        "203.0.113.9:443",
        "[203.0.113.9]",
        "[::ffff:203.0.113.9]:443",
        "0xcb.0.113.9",
        "3405803785",
        "203.0.113.9/32",
        "203.0.113",
        " 203.0.113.9 x",
        "::ffff:203.0.113.9%1",
    ] {
        assert_xff_refused(&gw, &up, &[&format!(" {odd}")]).await;
    }
    assert_xff_admitted(&gw, &up, &[" ::ffff:203.0.113.9"], OFFICE).await;
    assert_xff_admitted(&gw, &up, &[" ::FFFF:cb00:7109"], OFFICE).await;
}

// ---------------------------------------------------------------------------
// Sessions and 2FA (items 32, 34, 35, 37), both protocol versions.

const BOTH: [Version; 2] = [Version::HTTP_11, Version::HTTP_2];

/// A gateway with 2FA required, its manual clock, and helpers to walk a
/// user through the password step and enrollment.
struct TwoFactorGate {
    up: Recorder,
    gw: TestGateway,
    clock: gatehouse::clock::ManualClock,
}

impl TwoFactorGate {
    async fn start(extra: &str) -> Self {
        let up = Recorder::start().await;
        let clock = gatehouse::clock::ManualClock::new();
        let gw = TestGateway::start_with_clock(
            &two_factor_config().rest(extra),
            &up.url(),
            Some(clock.clone()),
        )
        .await;
        Self { up, gw, clock }
    }

    async fn send(&self, v: Version, req: Request<Full<Bytes>>) -> support::gateway::Resp {
        self.gw.client().send(self.gw.addr(), v, req).await
    }

    fn code(&self, secret: &gatehouse::auth::totp::TotpSecret) -> String {
        use gatehouse::clock::Clock;
        gatehouse::auth::totp::code_at(secret, self.clock.unix())
    }

    /// The password step: a session waiting for its second factor.
    async fn pending(&self, user: &str) -> String {
        let r = self
            .send(Version::HTTP_11, login_post(user, PASSWORD, "", &[]))
            .await;
        assert!(r.status.is_redirection(), "{} {}", r.status, r.text());
        session_cookie(&r).expect("pending session")
    }

    /// The session's CSRF token, from one of its pages.
    async fn csrf(&self, cookie: &str, page: &str) -> String {
        let text = self
            .send(Version::HTTP_11, get_with(page, cookie, &[]))
            .await
            .text();
        attr(&text, "name=\"csrf\" value")
    }

    /// Enroll `user`: (active cookie, secret).
    async fn enroll(&self, user: &str) -> (String, gatehouse::auth::totp::TotpSecret) {
        let pending = self.pending(user).await;
        let page = self
            .send(
                Version::HTTP_11,
                get_with("/.gatehouse/2fa/enroll", &pending, &[]),
            )
            .await
            .text();
        let secret = gatehouse::auth::totp::TotpSecret::from_base32(&attr(&page, "data-secret"))
            .expect("secret");
        let csrf = attr(&page, "name=\"csrf\" value");
        let done = self
            .send(
                Version::HTTP_11,
                form_post(
                    &pending,
                    "/.gatehouse/2fa/enroll",
                    &[("csrf", &csrf), ("code", &self.code(&secret))],
                    &[],
                ),
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
        (session_cookie(&done).expect("active session"), secret)
    }
}

fn cookie_sent_upstream(up: &Recorder) -> String {
    upstream_header(up, "cookie").join("; ")
}

#[tokio::test(flavor = "multi_thread")]
async fn item_32_a_session_waiting_for_its_second_factor_gets_only_the_two_factor_pages() {
    let t = TwoFactorGate::start("[admin]\nusers = [\"alice@example.com\"]").await;
    let (_, _secret) = t.enroll("alice@example.com").await;
    t.clock.advance(Duration::from_secs(30));
    // The password step vaulted the dashboard's HttpOnly APPSESSION for it.
    let pending = t.pending("alice@example.com").await;
    t.up.clear();
    for v in BOTH {
        for (method, path) in [
            ("GET", "/home"),
            ("POST", "/home"),
            ("GET", "/recordings/x"),
            ("GET", "/.gatehouse/account"),
            ("GET", "/.gatehouse/admin"),
            ("GET", "/.gatehouse/2fa/enroll"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("cookie", &pending)
                .body(Full::new(Bytes::from_static(b"x=1")))
                .expect("req");
            let r = t.send(v, req).await;
            assert!(
                r.status.is_redirection(),
                "{v:?} {method} {path}: {}",
                r.status
            );
            // To the challenge (or "/", which sends it there in turn).
            assert!(
                matches!(r.header("location"), Some("/.gatehouse/2fa" | "/")),
                "{v:?} {method} {path}: {:?}",
                r.header("location")
            );
        }
        let challenge = t.send(v, get_with("/.gatehouse/2fa", &pending, &[])).await;
        assert_eq!(challenge.status, StatusCode::OK, "{v:?}");
        // A websocket upgrade is no way around it either.
        let ws = raw(
            &t.gw,
            format!("GET /ws HTTP/1.1\r\nHost: localhost\r\nCookie: {pending}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes(),
        )
        .await;
        assert_ne!(status(&ws), 101, "{ws}");
    }
    assert!(
        t.up.seen().is_empty(),
        "a session waiting for 2FA reached the dashboard: {:?}",
        t.up.seen()
    );
    // Public pages are forwarded, without the vault and without a forged
    // copy of a vaulted cookie.
    for v in BOTH {
        t.up.clear();
        let r = t
            .send(
                v,
                get_with("/pub/x", &format!("{pending}; APPSESSION=forged"), &[]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{v:?}");
        let sent = cookie_sent_upstream(&t.up);
        assert!(!sent.contains("APPSESSION"), "{v:?}: {sent}");
        assert!(!sent.contains("__Host-gatehouse"), "{v:?}: {sent}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item_34_cross_site_posts_to_every_gatehouse_form_are_403_and_no_action_is_a_get() {
    let t = TwoFactorGate::start("[admin]\nusers = [\"alice@example.com\"]").await;
    let (active, _secret) = t.enroll("alice@example.com").await;
    t.clock.advance(Duration::from_secs(30));
    let alice_pending = t.pending("alice@example.com").await;
    let bob_pending = t.pending("bob@example.com").await;
    let tokens = [
        (active.clone(), t.csrf(&active, "/.gatehouse/account").await),
        (
            alice_pending.clone(),
            t.csrf(&alice_pending, "/.gatehouse/2fa").await,
        ),
        (
            bob_pending.clone(),
            t.csrf(&bob_pending, "/.gatehouse/2fa/enroll").await,
        ),
    ];
    let token = |cookie: &str| {
        tokens
            .iter()
            .find(|(c, _)| c == cookie)
            .map(|(_, t)| t.clone())
            .expect("token")
    };
    let admin = "/.gatehouse/admin";
    let forms: Vec<(String, &str)> = vec![
        ("/.gatehouse/2fa".into(), alice_pending.as_str()),
        ("/.gatehouse/2fa/enroll".into(), bob_pending.as_str()),
        ("/.gatehouse/account/reset".into(), active.as_str()),
        ("/.gatehouse/account/disable".into(), active.as_str()),
        ("/.gatehouse/account/recovery".into(), active.as_str()),
        (
            "/.gatehouse/account/sign-out-others".into(),
            active.as_str(),
        ),
        (format!("{admin}/sessions/revoke"), active.as_str()),
        (format!("{admin}/users/logout"), active.as_str()),
        (format!("{admin}/logout-all"), active.as_str()),
        (format!("{admin}/users/unlock"), active.as_str()),
        (format!("{admin}/users/require-2fa"), active.as_str()),
        (format!("{admin}/users/disable-2fa"), active.as_str()),
        (format!("{admin}/users/reset-2fa"), active.as_str()),
        (format!("{admin}/incidents/close"), active.as_str()),
        (format!("{admin}/trusted/add"), active.as_str()),
        (format!("{admin}/trusted/remove"), active.as_str()),
    ];
    t.up.clear();
    for v in BOTH {
        for (path, cookie) in &forms {
            let good = token(cookie);
            let fields = |csrf: Option<&str>| {
                let mut f: Vec<(&str, String)> = vec![
                    ("code", "123456".to_string()),
                    ("user", "alice@example.com".to_string()),
                    ("reference", "x".to_string()),
                    ("ip", "192.0.2.1".to_string()),
                ];
                if let Some(c) = csrf {
                    f.push(("csrf", c.to_string()));
                }
                f
            };
            // (what, csrf field, extra headers)
            type Variant<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);
            let variants: [Variant; 5] = [
                ("no token", None, &[]),
                ("wrong token", Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), &[]),
                ("empty token", Some(""), &[]),
                (
                    "foreign Origin",
                    Some(&good),
                    &[("origin", "https://evil.example")],
                ),
                (
                    "cross-site fetch",
                    Some(&good),
                    &[("sec-fetch-site", "cross-site")],
                ),
            ];
            for (what, csrf, extra) in variants {
                let f = fields(csrf);
                let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = t.send(v, form_post(cookie, path, &pairs, extra)).await;
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{v:?} {path}, {what}");
            }
            // No action happens on a GET (the two 2FA pages show their form).
            if path.starts_with("/.gatehouse/2fa") {
                continue;
            }
            let r = t.send(v, get_with(path, cookie, &[])).await;
            assert!(
                matches!(r.status.as_u16(), 404 | 405) || r.status.is_redirection(),
                "{v:?} GET {path}: {}",
                r.status
            );
            assert!(
                session_cookie(&r).is_none(),
                "{v:?} GET {path} set a session"
            );
        }
    }
    assert!(t.up.seen().is_empty(), "upstream saw {:?}", t.up.seen());
    // Nothing changed: alice is still signed in (no log-out-all, reset or
    // revoke), her second sign-in still waits, bob is still not enrolled.
    let home = t
        .send(Version::HTTP_11, get_with("/home", &active, &[]))
        .await;
    assert_eq!(home.status, StatusCode::OK);
    let waiting = t
        .send(Version::HTTP_11, get_with("/home", &alice_pending, &[]))
        .await;
    assert_eq!(waiting.header("location"), Some("/.gatehouse/2fa"));
    let enroll = t
        .send(
            Version::HTTP_11,
            get_with("/.gatehouse/2fa/enroll", &bob_pending, &[]),
        )
        .await;
    assert_eq!(enroll.status, StatusCode::OK);
    // The control: the same form from this site with the token works.
    let ok = t
        .send(
            Version::HTTP_11,
            form_post(
                &active,
                "/.gatehouse/account/sign-out-others",
                &[("csrf", &token(&active))],
                &[("origin", "https://localhost")],
            ),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let ended = t
        .send(Version::HTTP_11, get_with("/home", &alice_pending, &[]))
        .await;
    assert_ne!(ended.header("location"), Some("/.gatehouse/2fa"));
}

#[tokio::test(flavor = "multi_thread")]
async fn item_35_one_code_in_twenty_parallel_requests_lets_exactly_one_in() {
    let t = TwoFactorGate::start("[lockout]\nmax_failures = 50\nip_max_failures = 100").await;
    let (_, secret) = t.enroll("alice@example.com").await;
    t.clock.advance(Duration::from_secs(30));
    let code = t.code(&secret);
    let mut pending = Vec::new();
    for _ in 0..20 {
        let cookie = t.pending("alice@example.com").await;
        let csrf = t.csrf(&cookie, "/.gatehouse/2fa").await;
        pending.push((cookie, csrf));
    }
    t.up.clear();
    // Ten over ten HTTP/1.1 connections, ten as streams of one HTTP/2 connection.
    let h2 = t.gw.client().open(t.gw.addr(), Version::HTTP_2).await;
    let support::gateway::Conn::H2(h2) = h2 else {
        panic!("not an HTTP/2 connection")
    };
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = pending
        .iter()
        .enumerate()
        .map(|(i, (cookie, csrf))| {
            let req = form_post(
                cookie,
                "/.gatehouse/2fa",
                &[("csrf", csrf), ("code", &code)],
                &[],
            );
            let client = t.gw.client();
            let addr = t.gw.addr();
            let h2 = h2.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut conn = if i % 2 == 0 {
                    client.open(addr, Version::HTTP_11).await
                } else {
                    support::gateway::Conn::H2(h2)
                };
                barrier.wait().await;
                conn.send(req).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let winners: Vec<&support::gateway::Resp> = answers
        .iter()
        .filter(|r| r.status == StatusCode::SEE_OTHER)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "statuses: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != StatusCode::SEE_OTHER) {
        assert!(r.status.is_client_error(), "{}", r.status);
        assert!(session_cookie(r).is_none(), "a refused code made a session");
    }
    assert!(t.up.seen().is_empty(), "2FA forms reached the dashboard");
    // Exactly one signed-in session came of it; the pending ones are not.
    let active = session_cookie(winners[0]).expect("the winner's new session");
    assert_eq!(
        t.send(Version::HTTP_11, get_with("/home", &active, &[]))
            .await
            .status,
        StatusCode::OK
    );
    for (cookie, _) in &pending {
        let r = t
            .send(Version::HTTP_11, get_with("/home", cookie, &[]))
            .await;
        assert_ne!(r.status, StatusCode::OK);
    }
    assert_eq!(t.up.seen().len(), 1);
}

/// Everything about an answer a client could compare, except `date`.
fn answer_shape(r: &support::gateway::Resp) -> (StatusCode, Vec<(String, String)>, Bytes) {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    headers.sort();
    (r.status, headers, r.body.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn item_37_known_unknown_and_locked_users_get_identical_answers() {
    let t = TwoFactorGate::start("[lockout]\nmax_failures = 2\nip_max_failures = 1000").await;
    let attempt = |user: &'static str, pass: &'static str, v: Version, ip: String| {
        let t = &t;
        async move {
            t.send(v, login_post(user, pass, "", &[("x-forwarded-for", &ip)]))
                .await
        }
    };
    for (i, v) in BOTH.into_iter().enumerate() {
        // A wrong password for a known and for an unknown user: the
        // dashboard's answer, passed through alike.
        t.up.clear();
        let known = attempt(
            "alice@example.com",
            "wrong",
            v,
            format!("198.51.100.{}", 10 + i),
        )
        .await;
        let unknown = attempt(
            "nobody@example.com",
            "wrong",
            v,
            format!("198.51.100.{}", 20 + i),
        )
        .await;
        assert_eq!(answer_shape(&known), answer_shape(&unknown), "{v:?}");
        assert_eq!(t.up.seen().len(), 2);
    }
    // Both are now locked (two failures each).
    for v in BOTH {
        t.up.clear();
        let mut shapes = Vec::new();
        for (user, pass) in [
            ("alice@example.com", PASSWORD),
            ("alice@example.com", "wrong"),
            ("nobody@example.com", PASSWORD),
            ("nobody@example.com", "wrong"),
        ] {
            let r = attempt(user, pass, v, "198.51.100.77".to_string()).await;
            assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{v:?} {user}");
            assert!(session_cookie(&r).is_none());
            shapes.push((user, pass, answer_shape(&r)));
        }
        for (user, pass, shape) in &shapes[1..] {
            assert_eq!(&shapes[0].2, shape, "{v:?}: {user} / {pass} differs");
        }
        assert!(
            t.up.seen().is_empty(),
            "a locked attempt reached the dashboard"
        );
    }
}

// ---------------------------------------------------------------------------
// Failure (item 38): the Redis fixture (never the machine's Redis).

/// SIGSTOP/SIGCONT for the fixture's redis-server; resumes it when dropped.
struct Paused(String);

impl Paused {
    fn pause(port: u16) -> Self {
        let info = support::redis::query(port, "INFO server").expect("INFO");
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .map(|p| p.trim().to_string())
            .expect("process_id");
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill -STOP");
        assert!(ok.success());
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

/// Protected route, sign-in, and a locked user's right password: none is
/// let through, over either version, and the dashboard sees nothing.
async fn assert_fails_closed(
    gw: &TestGateway,
    up: &Recorder,
    cookie: &str,
    state: &str,
    protected: StatusCode,
    locked: StatusCode,
) {
    up.clear();
    for v in BOTH {
        let started = Instant::now();
        let r = gw
            .client()
            .send(gw.addr(), v, get_with("/home", cookie, &[]))
            .await;
        assert_eq!(r.status, protected, "{state} {v:?}: protected route");
        // The command timeout (1 s) plus a generous margin for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(15), "{state}: hung");
        let r = gw
            .client()
            .send(
                gw.addr(),
                v,
                login_post("bob@example.com", PASSWORD, "", &[]),
            )
            .await;
        assert_eq!(r.status, locked, "{state} {v:?}: locked user");
        assert!(
            session_cookie(&r).is_none(),
            "{state}: a locked user got a session"
        );
    }
    assert!(
        up.seen().is_empty(),
        "{state}: upstream saw {:?}",
        up.seen()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn item_38_store_paused_read_only_flushed_or_stopped_never_lets_anyone_in() {
    let mut redis = support::redis::RedisServer::start();
    let up = Recorder::start().await;
    let gw = TestGateway::start(
        &config()
            .store(&redis.url())
            .rest("[lockout]\nmax_failures = 2"),
        &up.url(),
    )
    .await;
    let send = |v: Version, req: Request<Full<Bytes>>| {
        let client = gw.client();
        let addr = gw.addr();
        async move { client.send(addr, v, req).await }
    };
    let sign_in = || async {
        let r = send(
            Version::HTTP_11,
            login_post("alice@example.com", PASSWORD, "", &[]),
        )
        .await;
        session_cookie(&r)
    };
    let cookie = sign_in().await.expect("session");
    for _ in 0..2 {
        send(
            Version::HTTP_11,
            login_post("bob@example.com", "wrong", "", &[]),
        )
        .await;
    }
    let locked = send(
        Version::HTTP_11,
        login_post("bob@example.com", PASSWORD, "", &[]),
    )
    .await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);

    // Paused (SIGSTOP): every answer waits for the store, none is a guess.
    {
        let _paused = Paused::pause(redis.port());
        assert_fails_closed(
            &gw,
            &up,
            &cookie,
            "paused",
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
        for v in BOTH {
            let r = send(v, login_post("alice@example.com", PASSWORD, "", &[])).await;
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "paused {v:?}");
        }
        assert!(up.seen().is_empty());
    }
    let back = support::gateway::eventually(20, || async {
        send(Version::HTTP_11, get_with("/home", &cookie, &[]))
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(back, "the gateway did not recover after the store resumed");

    // Read-only: Redis answers reads but refuses writes (NOREPLICAS). No
    // sign-in can be written, so none happens; a failure that cannot be
    // counted is not passed on as the dashboard's answer; and from the first
    // refused write on, the gateway serves nothing that needs the store until
    // Redis takes writes again (a session that cannot be ended is not served).
    let ro = support::redis::query(redis.port(), "CONFIG SET min-replicas-to-write 1");
    assert!(ro.is_some_and(|r| r.starts_with("+OK")));
    up.clear();
    for v in BOTH {
        let r = send(v, login_post("alice@example.com", PASSWORD, "", &[])).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "read-only {v:?}");
        assert!(
            session_cookie(&r).is_none(),
            "a sign-in without a store write"
        );
        let r = send(v, login_post("carol@example.com", "wrong", "", &[])).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "read-only {v:?}");
    }
    assert!(
        up.seen()
            .iter()
            .all(|s| s.target == "/login" && s.method == http::Method::POST),
        "only the dashboard's own password check may run: {:?}",
        up.seen()
    );
    assert_fails_closed(
        &gw,
        &up,
        &cookie,
        "read-only",
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let ro = support::redis::query(redis.port(), "CONFIG SET min-replicas-to-write 0");
    assert!(ro.is_some_and(|r| r.starts_with("+OK")));
    assert_eq!(
        send(Version::HTTP_11, get_with("/home", &cookie, &[]))
            .await
            .status,
        StatusCode::OK,
        "writable again: served again"
    );

    // Flushed: the session is gone, so the browser must sign in again. A flush is not a
    // write any gateway announces: a gateway's session cache learns of it at its next lease
    // renewal (every 0.5 s), when it finds its lease gone.
    let flushed = support::redis::query(redis.port(), "FLUSHALL");
    assert!(flushed.is_some_and(|r| r.starts_with("+OK")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    up.clear();
    for v in BOTH {
        let r = send(v, get_with("/home", &cookie, &[])).await;
        assert!(
            r.status.is_redirection() || r.status == StatusCode::UNAUTHORIZED,
            "flushed {v:?}: {}",
            r.status
        );
        assert_ne!(r.status, StatusCode::OK);
    }
    assert!(
        up.seen().is_empty(),
        "flushed: upstream saw {:?}",
        up.seen()
    );
    let again = sign_in().await.expect("signing in again works");
    assert_eq!(
        send(Version::HTTP_11, get_with("/home", &again, &[]))
            .await
            .status,
        StatusCode::OK
    );
    for _ in 0..2 {
        send(
            Version::HTTP_11,
            login_post("bob@example.com", "wrong", "", &[]),
        )
        .await;
    }

    // Stopped.
    redis.stop();
    assert_fails_closed(
        &gw,
        &up,
        &again,
        "stopped",
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let r = send(
        Version::HTTP_2,
        login_post("alice@example.com", PASSWORD, "", &[]),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(up.seen().is_empty());
}
