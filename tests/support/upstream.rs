//! A test upstream that records every request it receives, so tests can
//! assert what reached the dashboard (or that nothing did).
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query exactly as received on the wire.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Whether the body arrived whole (false: the connection broke off mid-body).
    pub complete: bool,
}

/// Routes: `POST /login` is a dashboard login (password [`PASSWORD`] →
/// 302 to `/home` with an HttpOnly `APPSESSION` and a readable `theme`
/// cookie; anything else → 200 form error); `…slow…` waits 3 s;
/// `…set-cookie…` answers with cookies; `/logout?next=X` redirects to X
/// as given; everything else answers 200
/// `upstream saw <target>`.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(answer(log, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen().last().cloned()
    }

    pub fn clear(&self) {
        self.seen.lock().expect("lock").clear();
    }

    /// Did any request reach a path starting with `prefix`?
    pub fn saw_prefix(&self, prefix: &str) -> bool {
        self.seen().iter().any(|s| s.target.starts_with(prefix))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(log: Arc<Mutex<Vec<Seen>>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.map(|c| c.to_bytes());
    let complete = collected.is_ok();
    let body = collected.unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/".into(), |p| p.to_string());
    log.lock().expect("lock").push(Seen {
        method: parts.method.clone(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        complete,
    });
    if parts.method == Method::POST && target.starts_with("/login") {
        return login(&body);
    }
    if parts.method == Method::POST && target.starts_with("/json-login") {
        return json_login(&body);
    }
    if let Some(next) = target.strip_prefix("/logout?next=") {
        // A dashboard whose logout follows `next` blindly (an open redirect).
        let to = percent_encoding::percent_decode(next.as_bytes()).collect::<Vec<u8>>();
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::FOUND;
        if let Ok(v) = http::HeaderValue::from_bytes(&to) {
            resp.headers_mut().insert("location", v);
        }
        return resp;
    }
    if let Some(to) = target.split_once("/redirect?to=").map(|(_, to)| to) {
        // A dashboard that writes absolute redirects with whatever address it has.
        let to = percent_encoding::percent_decode(to.as_bytes()).collect::<Vec<u8>>();
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::FOUND;
        if let Ok(v) = http::HeaderValue::from_bytes(&to) {
            resp.headers_mut().insert("location", v);
        }
        return resp;
    }
    if target.contains("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from(format!("upstream saw {target}"))));
    if target.contains("set-cookie") {
        let h = resp.headers_mut();
        h.append(
            "set-cookie",
            "APPSESSION=secret123; Path=/; HttpOnly"
                .parse()
                .expect("cookie"),
        );
        h.append("set-cookie", "theme=dark; Path=/".parse().expect("cookie"));
    }
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// A JSON login that answers 200 either way: `{"ok": true|false}`, and
/// the session cookie only on success.
fn json_login(body: &[u8]) -> Response<Full<Bytes>> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let ok = v.pointer("/password").and_then(|p| p.as_str()) == Some(PASSWORD);
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::json!({ "ok": ok }).to_string(),
    )));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().expect("type"));
    if ok {
        resp.headers_mut().append(
            "set-cookie",
            "APPSESSION=json1; Path=/; HttpOnly"
                .parse()
                .expect("cookie"),
        );
    }
    resp
}

/// The password every user has on the recording upstream.
pub const PASSWORD: &str = "right-pass";

fn login(body: &[u8]) -> Response<Full<Bytes>> {
    let ok = form_urlencoded::parse(body).any(|(k, v)| k == "password" && v == PASSWORD);
    if !ok {
        return Response::new(Full::new(Bytes::from_static(b"bad credentials")));
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    h.insert("location", "/home".parse().expect("location"));
    h.append(
        "set-cookie",
        format!("APPSESSION=s{n}; Path=/; HttpOnly")
            .parse()
            .expect("cookie"),
    );
    h.append("set-cookie", "theme=dark; Path=/".parse().expect("cookie"));
    resp
}
