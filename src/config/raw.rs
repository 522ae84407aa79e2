//! The configuration exactly as operators write it in TOML (and `GATEHOUSE_…`
//! environment overrides). Every field is documented here and in
//! `config/gatehouse.example.toml`; the `Default` impls are the single source of
//! defaults. Unknown keys are errors (`deny_unknown_fields`) so a typo never
//! silently turns a protection off.

use super::duration::{Dur, OptDuration};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub store: RawStore,
    pub logging: RawLogging,
}

/// `[server]`: listeners, TLS, who may speak for clients, limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// TLS listeners, `host:port`.
    pub listen: Vec<String>,
    /// Optional plain-HTTP listener that only answers 301 to https.
    pub redirect_http: Option<String>,
    /// Public host names the gateway answers for (without port). Empty = any
    /// host. Requests for other hosts get 421.
    pub hosts: Vec<String>,
    /// Peers allowed to state the client address (X-Forwarded-For, PROXY
    /// protocol): single IPs, CIDRs or ranges.
    pub trusted_proxies: Vec<String>,
    /// Expect a PROXY protocol (v1 or v2) header from trusted proxies on every
    /// TLS listener.
    pub proxy_protocol: bool,
    /// `Strict-Transport-Security` max-age, or "disabled".
    pub hsts_max_age: OptDuration,
    /// Name shown on gatehouse's own pages.
    pub brand: String,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub drain_timeout: Dur,
    pub tls: RawTls,
    pub limits: RawLimits,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:443".into()],
            redirect_http: None,
            hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            hsts_max_age: OptDuration(Some(Duration::from_secs(365 * 86_400))),
            brand: "gatehouse".into(),
            drain_timeout: Dur(Duration::from_secs(30)),
            tls: RawTls::default(),
            limits: RawLimits::default(),
        }
    }
}

/// `[server.tls]`: the default certificate, plus certificates chosen by SNI.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// PEM certificate chain (leaf first).
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: Option<PathBuf>,
    /// Further certificates, chosen when the client's SNI matches `names`.
    pub sni: Vec<RawSniCert>,
}

/// `[[server.tls.sni]]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSniCert {
    /// Host names this certificate serves (exact, or `*.example.com`).
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[server.limits]`: bounds against abuse. Defaults are safe for a dashboard.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest request head (request line + headers) in bytes; at least 8192.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Time a client has to send a complete request head (slowloris guard).
    /// For HTTP/1.1 the timer also runs while a keep-alive connection waits
    /// for its next request, so it is the idle timeout of HTTP/1.1 too.
    pub header_read_timeout: Dur,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Dur,
    /// A connection with no bytes in either direction for this long is
    /// closed (HTTP/2 and keep-alive; open websockets are not affected).
    pub idle_timeout: Dur,
    /// Most open client connections in total.
    pub max_connections: usize,
    /// Most open client connections from one client address.
    pub max_connections_per_ip: usize,
    /// Largest body accepted by gatehouse's own forms (bytes).
    pub max_form_bytes: usize,
    /// HTTP/2: most concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            header_read_timeout: Dur(Duration::from_secs(10)),
            handshake_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::from_secs(120)),
            max_connections: 20_000,
            max_connections_per_ip: 512,
            max_form_bytes: 64 * 1024,
            h2_max_concurrent_streams: 128,
        }
    }
}

/// `[upstream]`: the dashboard behind the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// `http://host:port` or `https://host:port` (no path).
    pub url: String,
    /// PEM file with the CA(s) that sign an https upstream's certificate;
    /// absent = the system's roots.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Dur,
    /// Time from sending the request until the upstream's response head.
    pub response_timeout: Dur,
    /// Forward the client's Host header (true) or the upstream's authority.
    pub preserve_host: bool,
    /// Idle upstream connections kept per gateway.
    pub pool_max_idle: usize,
    pub pool_idle_timeout: Dur,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            ca_file: None,
            connect_timeout: Dur(Duration::from_secs(5)),
            response_timeout: Dur(Duration::from_secs(60)),
            preserve_host: true,
            pool_max_idle: 256,
            pool_idle_timeout: Dur(Duration::from_secs(90)),
        }
    }
}

/// `[store]`: where sessions, counters and 2FA seeds live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `file:/path/state.redb` (embedded, one gateway) or `redis://…`,
    /// `rediss://…`, `redis+sentinel://…`, `redis-cluster://…`.
    pub url: String,
    /// Key file for secrets at rest (created with mode 0600 if absent).
    pub secret_key_file: PathBuf,
    pub connect_timeout: Dur,
    /// Longest wait for one store operation; past it the request fails closed.
    pub command_timeout: Dur,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: "file:/var/lib/gatehouse/state.redb".into(),
            secret_key_file: "/var/lib/gatehouse/secret.key".into(),
            connect_timeout: Dur(Duration::from_secs(2)),
            command_timeout: Dur(Duration::from_secs(1)),
        }
    }
}

/// `[logging]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogging {
    /// "text" or "json".
    pub format: String,
    /// tracing filter, e.g. "info" or "gatehouse=debug,info".
    pub level: String,
    /// One line per request (method, path without query, status, client, user, timings).
    pub access_log: bool,
}

impl Default for RawLogging {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
            access_log: true,
        }
    }
}
