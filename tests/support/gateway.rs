//! Test gateways on 127.0.0.1:0 with a fresh self-signed certificate, and a
//! real rustls + hyper client that speaks HTTP/1.1 or HTTP/2 to them.
#![allow(dead_code)]

use bytes::Bytes;
use gatehouse::config::validate::{self, CertPem, Settings};
use gatehouse::{Gateway, Handle};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A configuration under construction: sections are TOML fragments.
#[derive(Default, Clone)]
pub struct Config {
    pub server: String,
    pub upstream: String,
    /// Whole further sections (`[login]` …), appended verbatim.
    pub rest: String,
    /// `store.url`; default an embedded file in the test directory.
    pub store_url: Option<String>,
    /// `metrics.listen`; default port 0 (tests run many gateways at once).
    pub metrics: Option<String>,
}

impl Config {
    pub fn server(mut self, toml: &str) -> Self {
        self.server.push_str(toml);
        self.server.push('\n');
        self
    }
    pub fn upstream(mut self, toml: &str) -> Self {
        self.upstream.push_str(toml);
        self.upstream.push('\n');
        self
    }
    pub fn store(mut self, url: &str) -> Self {
        self.store_url = Some(url.to_string());
        self
    }
    pub fn rest(mut self, toml: &str) -> Self {
        self.rest.push_str(toml);
        self.rest.push('\n');
        self
    }

    /// Render a whole file for `upstream_url`, with the certificate files in `dir`.
    pub fn render(&self, upstream_url: &str, listen: &str) -> String {
        format!(
            "[server]\nlisten = [\"{listen}\"]\n{}\n[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n\
             [upstream]\nurl = \"{upstream_url}\"\n{}\n[store]\nurl = \"{}\"\nsecret_key_file = \"secret.key\"\n\n\
             [metrics]\nlisten = \"{}\"\n\n{}",
            self.server,
            self.upstream,
            self.store_url.as_deref().unwrap_or("file:state.redb"),
            self.metrics.as_deref().unwrap_or("127.0.0.1:0"),
            self.rest
        )
    }
}

/// A directory holding a certificate, a key and (when written) a config file.
pub struct TestDir {
    pub dir: TempDir,
    pub cert: CertPem,
}

impl TestDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, _) =
            gatehouse::tls::self_signed(&["localhost", "127.0.0.1", "gw.test"]).expect("cert");
        std::fs::write(dir.path().join("cert.pem"), &cert.cert).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), &cert.key).expect("write key");
        Self { dir, cert }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn settings(&self, config: &Config, upstream_url: &str) -> Settings {
        let text = config.render(upstream_url, "127.0.0.1:0");
        validate::load_str(&text, Some(self.path())).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    pub fn write_config(
        &self,
        config: &Config,
        upstream_url: &str,
        listen: &str,
    ) -> std::path::PathBuf {
        let path = self.path().join("gatehouse.toml");
        std::fs::write(&path, config.render(upstream_url, listen)).expect("write config");
        path
    }

    pub fn client(&self) -> Client {
        Client::trusting(&[&self.cert])
    }
}

/// A gateway started in-process.
pub struct TestGateway {
    pub handle: Handle,
    pub dir: TestDir,
}

impl TestGateway {
    pub async fn start(config: &Config, upstream_url: &str) -> Self {
        Self::start_with_clock(config, upstream_url, None).await
    }

    /// A gateway whose timeouts follow `clock` (tests move time, never sleep).
    pub async fn start_with_clock(
        config: &Config,
        upstream_url: &str,
        clock: Option<gatehouse::clock::ManualClock>,
    ) -> Self {
        let dir = TestDir::new();
        let settings = dir.settings(config, upstream_url);
        let mut gw = Gateway::new(settings);
        if let Some(c) = clock {
            gw = gw.with_clock(std::sync::Arc::new(c));
        }
        let handle = gw.start().await.expect("gateway starts");
        Self { handle, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    pub fn client(&self) -> Client {
        self.dir.client()
    }
}

/// What a response looked like, body fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real TLS client (rustls) trusting the given certificates.
#[derive(Clone)]
pub struct Client {
    roots: Arc<rustls::RootCertStore>,
}

impl Client {
    pub fn trusting(certs: &[&CertPem]) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            for der in CertificateDer::pem_slice_iter(&c.cert) {
                roots.add(der.expect("pem")).expect("root");
            }
        }
        Self {
            roots: Arc::new(roots),
        }
    }

    pub fn config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(c)
    }

    /// Open a TLS connection with SNI `name`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        name: &str,
        alpn: &[&[u8]],
    ) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let connector = tokio_rustls::TlsConnector::from(self.config(alpn));
        let server_name = ServerName::try_from(name.to_string()).expect("server name");
        connector
            .connect(server_name, tcp)
            .await
            .expect("tls handshake")
    }

    /// One request on a fresh connection.
    pub async fn send(
        &self,
        addr: SocketAddr,
        version: Version,
        req: Request<Full<Bytes>>,
    ) -> Resp {
        let mut conn = self.open(addr, version).await;
        conn.send(req).await
    }

    pub async fn open(&self, addr: SocketAddr, version: Version) -> Conn {
        let alpn: &[&[u8]] = if version == Version::HTTP_2 {
            &[b"h2"]
        } else {
            &[b"http/1.1"]
        };
        let tls = self.connect(addr, "localhost", alpn).await;
        Conn::over(tls, version).await
    }

    pub async fn get(&self, addr: SocketAddr, path: &str) -> Resp {
        self.send(addr, Version::HTTP_11, get(path)).await
    }
}

/// An open HTTP connection (either version) for several requests.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    pub async fn over<IO>(io: IO, version: Version) -> Self
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if version == Version::HTTP_2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Conn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn.with_upgrades());
            Conn::H1(send)
        }
    }

    pub async fn send(&mut self, mut req: Request<Full<Bytes>>) -> Resp {
        let resp = match self {
            Conn::H1(s) => {
                if !req.headers().contains_key("host") {
                    req.headers_mut()
                        .insert("host", "localhost".parse().expect("host"));
                }
                s.ready().await.expect("h1 ready");
                s.send_request(req).await.expect("h1 response")
            }
            Conn::H2(s) => {
                if req.uri().authority().is_none() {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map_or("/".to_string(), |p| p.to_string());
                    *req.uri_mut() = format!("https://localhost{pq}").parse().expect("uri");
                }
                *req.version_mut() = Version::HTTP_2;
                s.ready().await.expect("h2 ready");
                s.send_request(req).await.expect("h2 response")
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        }
    }
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

pub fn post_form(path: &str, form: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.to_string())))
        .expect("request")
}

/// Poll `check` until it holds or `secs` pass (for conditions signalled by
/// another process, where there is nothing to await).
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// The gatehouse session cookie (`name=value`) a response set, if any.
pub fn session_cookie(resp: &Resp) -> Option<String> {
    resp.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with("__Host-gatehouse=") && !v.starts_with("__Host-gatehouse=;"))
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .next()
}

/// Every cookie name a response sets.
pub fn set_cookie_names(resp: &Resp) -> Vec<String> {
    resp.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split('=').next())
        .map(str::to_string)
        .collect()
}

/// A GET with a Cookie header (and optional extra headers).
pub fn get_with(path: &str, cookie: &str, extra: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path);
    if !cookie.is_empty() {
        b = b.header("cookie", cookie);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

/// A login form POST with optional cookie and extra headers.
pub fn login_post(
    user: &str,
    pass: &str,
    cookie: &str,
    extra: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("username", user)
        .append_pair("password", pass)
        .finish();
    let mut b = Request::post("/login").header("content-type", "application/x-www-form-urlencoded");
    if !cookie.is_empty() {
        b = b.header("cookie", cookie);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(form))).expect("request")
}

/// The value of the attribute written `marker="…"` in a page (first match).
pub fn attr(text: &str, marker: &str) -> String {
    let start = text
        .find(&format!("{marker}=\""))
        .unwrap_or_else(|| panic!("{marker} not in page"))
        + marker.len()
        + 2;
    text[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A form POST with a Cookie header and extra headers.
pub fn form_post(
    cookie: &str,
    path: &str,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut b = Request::post(path)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body))).expect("request")
}
