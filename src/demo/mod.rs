//! A sample legacy PBX dashboard, used by `gatehouse demo` and by the tests as
//! the upstream. It behaves like a real old dashboard and knows nothing about
//! gatehouse: its own login form, an HttpOnly `PBXSESSID` cookie, a websocket
//! live view, large WAV downloads, a change-password form and a JSON API.

mod pages;

use crate::proxy::{self, Body};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{self, Message};

/// Demo accounts: (username, password).
pub const USERS: &[(&str, &str)] = &[
    ("alice@example.com", "Alice-pass-1"),
    ("bob@example.com", "Bob-pass-22"),
    ("crm@example.com", "Crm-pass-333"),
];

/// The dashboard's own API key for integrations (`Authorization: Bearer …`),
/// which it judges itself — as legacy dashboards with API keys do.
pub const API_TOKEN: &str = "pbx-demo-api-token";

/// Name of the large streamed recording.
pub const BIG_RECORDING: &str = "big-meeting.wav";

#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// Size of `/recordings/big-meeting.wav` in bytes.
    pub big_recording_bytes: u64,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            big_recording_bytes: 1 << 30,
        }
    }
}

/// A running dashboard.
pub struct Dashboard {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Dashboard {
    pub async fn start(addr: SocketAddr, options: DashboardOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            options,
            passwords: Mutex::new(
                USERS
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect(),
            ),
            sessions: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    options: DashboardOptions,
    passwords: Mutex<HashMap<String, String>>,
    /// PBXSESSID → username.
    sessions: Mutex<HashMap<String, String>>,
}

impl State {
    fn user(&self, req: &Request<Incoming>) -> Option<String> {
        let sid = cookie_value(req, "PBXSESSID")?;
        lock(&self.sessions).get(&sid).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let user = state.user(&req);
    match (req.method().clone(), path.as_str(), user) {
        (Method::GET, "/login", _) => html(StatusCode::OK, pages::login(None)),
        (Method::POST, "/login", _) => login(&state, req).await,
        (Method::POST, "/api/login", _) => api_login(&state, req).await,
        (_, "/logout", _) => logout(&state, &req),
        (Method::GET, "/static/pbx.css", _) => {
            let mut r = Response::new(proxy::full(pages::CSS));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css"));
            r
        }
        (Method::GET, "/api/status", None) if bearer(&req) == Some(API_TOKEN) => json(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "active_calls": 3, "user": "api-key"}).to_string(),
        ),
        (Method::GET, "/api/status", None) => json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"not logged in"}"#.into(),
        ),
        (Method::GET, "/api/status", Some(u)) => json(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "active_calls": 3, "user": u}).to_string(),
        ),
        (_, _, None) => redirect("/login"),
        (Method::GET, "/", Some(u)) => html(StatusCode::OK, pages::home(&u)),
        (Method::GET, "/calls", Some(_)) => html(StatusCode::OK, pages::calls()),
        (Method::GET, "/ws/calls", Some(_)) => websocket(req),
        (Method::GET, "/recordings" | "/recordings/", Some(_)) => html(
            StatusCode::OK,
            pages::recordings(state.options.big_recording_bytes),
        ),
        (Method::POST, "/recordings/upload", Some(_)) => upload(req).await,
        (Method::GET, p, Some(_)) if p.starts_with("/recordings/") => recording(&state, p),
        (Method::GET, "/profile/password", Some(_)) => {
            html(StatusCode::OK, pages::password_form(None, false))
        }
        (Method::POST, "/profile/password", Some(u)) => change_password(&state, &u, req).await,
        _ => html(StatusCode::NOT_FOUND, pages::not_found()),
    }
}

async fn read_form(req: Request<Incoming>) -> HashMap<String, String> {
    let limited = http_body_util::Limited::new(req.into_body(), 64 * 1024);
    let bytes = limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    form_urlencoded::parse(&bytes).into_owned().collect()
}

async fn login(state: &State, req: Request<Incoming>) -> Response<Body> {
    let form = read_form(req).await;
    let user = form.get("username").map(|u| u.trim().to_lowercase());
    let pass = form.get("password");
    let ok = match (&user, pass) {
        (Some(u), Some(p)) => lock(&state.passwords).get(u) == Some(p),
        _ => false,
    };
    let Some(user) = user.filter(|_| ok) else {
        return html(
            StatusCode::OK,
            pages::login(Some("Invalid username or password.")),
        );
    };
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let sid = hex::encode(raw);
    lock(&state.sessions).insert(sid.clone(), user);
    let mut r = redirect("/");
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("PBXSESSID={sid}; Path=/; HttpOnly")) {
        h.append(header::SET_COOKIE, v);
    }
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_static("pbx_lang=en; Path=/"),
    );
    r
}

/// The apps' login: `{"username": …, "password": …}` → JSON and a session cookie.
async fn api_login(state: &State, req: Request<Incoming>) -> Response<Body> {
    let limited = http_body_util::Limited::new(req.into_body(), 64 * 1024);
    let bytes = limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let user = body["username"].as_str().map(|u| u.trim().to_lowercase());
    let pass = body["password"].as_str();
    let ok = match (&user, pass) {
        (Some(u), Some(p)) => lock(&state.passwords).get(u).map(String::as_str) == Some(p),
        _ => false,
    };
    let Some(user) = user.filter(|_| ok) else {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid credentials"}"#.into(),
        );
    };
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let sid = hex::encode(raw);
    lock(&state.sessions).insert(sid.clone(), user.clone());
    let mut r = json(
        StatusCode::OK,
        serde_json::json!({"ok": true, "user": user}).to_string(),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("PBXSESSID={sid}; Path=/; HttpOnly")) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn logout(state: &State, req: &Request<Incoming>) -> Response<Body> {
    if let Some(sid) = cookie_value(req, "PBXSESSID") {
        lock(&state.sessions).remove(&sid);
    }
    let mut r = redirect("/login");
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("PBXSESSID=; Path=/; Max-Age=0; HttpOnly"),
    );
    r
}

async fn change_password(state: &State, user: &str, req: Request<Incoming>) -> Response<Body> {
    let form = read_form(req).await;
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (current, new, confirm) = (
        get("current_password"),
        get("new_password"),
        get("confirm_password"),
    );
    let mut passwords = lock(&state.passwords);
    let error = if passwords.get(user) != Some(&current) {
        Some("Current password is wrong.")
    } else if new != confirm {
        Some("The new passwords do not match.")
    } else if new.is_empty() {
        Some("The new password must not be empty.")
    } else {
        None
    };
    match error {
        Some(e) => html(StatusCode::OK, pages::password_form(Some(e), false)),
        None => {
            passwords.insert(user.to_string(), new);
            html(StatusCode::OK, pages::password_form(None, true))
        }
    }
}

/// Streams a deterministic WAV file of any size in 64 KiB chunks, never
/// holding more than one chunk.
fn recording(state: &State, path: &str) -> Response<Body> {
    let name = path.trim_start_matches("/recordings/");
    let size = match name {
        BIG_RECORDING => state.options.big_recording_bytes,
        "2026-11-20-reception.wav" => 48_044,
        "2026-11-21-sales-call.wav" => 320_044,
        _ => return html(StatusCode::NOT_FOUND, pages::not_found()),
    };
    let stream = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= size {
            return None;
        }
        let n = (size - sent).min(64 * 1024) as usize;
        let mut chunk = vec![0u8; n];
        fill_wav(&mut chunk, sent, size);
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))),
            sent + n as u64,
        ))
    });
    let body = http_body_util::StreamBody::new(stream);
    let mut r = Response::new(proxy::stream(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    if let Ok(v) = HeaderValue::from_str(&size.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    r
}

/// The byte at `offset` of a WAV file of `size` bytes: a 44-byte header, then
/// a pattern derived from the offset so downloads can be checked end to end.
pub fn wav_byte(offset: u64, size: u64) -> u8 {
    if offset < 44 {
        let data_len = size.saturating_sub(44) as u32;
        let mut header = [0u8; 44];
        header[..4].copy_from_slice(b"RIFF");
        header[4..8].copy_from_slice(&(data_len + 36).to_le_bytes());
        header[8..16].copy_from_slice(b"WAVEfmt ");
        header[16..20].copy_from_slice(&16u32.to_le_bytes());
        header[20..22].copy_from_slice(&1u16.to_le_bytes());
        header[22..24].copy_from_slice(&1u16.to_le_bytes());
        header[24..28].copy_from_slice(&8000u32.to_le_bytes());
        header[28..32].copy_from_slice(&8000u32.to_le_bytes());
        header[32..34].copy_from_slice(&1u16.to_le_bytes());
        header[34..36].copy_from_slice(&8u16.to_le_bytes());
        header[36..40].copy_from_slice(b"data");
        header[40..44].copy_from_slice(&data_len.to_le_bytes());
        return header[offset as usize];
    }
    (offset.wrapping_mul(31) ^ (offset >> 9)) as u8
}

fn fill_wav(chunk: &mut [u8], start: u64, size: u64) {
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = wav_byte(start + i as u64, size);
    }
}

/// Accepts a streamed upload and answers its size and SHA-256.
async fn upload(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    hasher.update(d);
                    total += d.len() as u64;
                }
            }
            Err(_) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"upload broken"}"#.into(),
                )
            }
        }
    }
    json(
        StatusCode::OK,
        serde_json::json!({"bytes": total, "sha256": hex::encode(hasher.finalize())}).to_string(),
    )
}

/// The live call feed: a JSON event per second, and an echo of what the
/// browser sends.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return html(StatusCode::BAD_REQUEST, pages::not_found());
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut tx, mut rx) = ws.split();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    n += 1;
                    let event = serde_json::json!({"event": "calls", "seq": n, "active": 3, "queue": n % 4});
                    if tx.send(Message::text(event.to_string())).await.is_err() { return; }
                }
                msg = rx.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if tx.send(Message::text(format!("echo:{}", t.as_str()))).await.is_err() { return; }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                }
            }
        }
    });
    let mut r = Response::new(proxy::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

fn cookie_value(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut r = Response::new(proxy::full(page));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(proxy::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut r = Response::new(proxy::empty());
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}
