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
    pub login: RawLogin,
    pub session: RawSession,
    pub lockout: RawLockout,
    pub two_factor: RawTwoFactor,
    pub policy: RawPolicy,
    pub metrics: RawMetrics,
    pub admin: RawAdmin,
    pub audit: RawAudit,
    pub incidents: RawIncidents,
    pub password: RawPassword,
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
    /// Threads serving connections; 0 = one per CPU core. Each is an event
    /// loop of its own (`listener::workers`), as nginx's worker processes
    /// are. Read at start only.
    pub worker_threads: usize,
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
            worker_threads: 0,
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
    /// Time to open a connection to the upstream: TCP and, for https, the
    /// TLS handshake.
    pub connect_timeout: Dur,
    /// Time from sending the request until the upstream's response head.
    pub response_timeout: Dur,
    /// Forward the client's Host header (true) or the upstream's authority.
    pub preserve_host: bool,
    /// Idle upstream connections kept per gateway, shared out among the
    /// worker threads (each reuses only the ones it opened).
    pub pool_max_idle: usize,
    /// An idle upstream connection unused this long is closed.
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
    /// Keep session records in memory between requests.
    pub cache_sessions: bool,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: "file:/var/lib/gatehouse/state.redb".into(),
            secret_key_file: "/var/lib/gatehouse/secret.key".into(),
            connect_timeout: Dur(Duration::from_secs(2)),
            command_timeout: Dur(Duration::from_secs(1)),
            cache_sessions: true,
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

/// `[login]`: how the dashboard's own login looks, so gatehouse can watch it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogin {
    /// Path of the login form's POST target.
    pub path: String,
    /// Field holding the username: a form field name, or a JSON pointer
    /// (starting with "/", e.g. "/user/name") for JSON logins.
    pub username_field: String,
    /// For a dashboard whose login form has only a password (single-user
    /// appliances, Jupyter): every login attempt at `path` counts as this
    /// user (lockout, 2FA, sessions) and `username_field` is not read.
    /// Empty = the form names its user.
    pub fixed_username: String,
    /// Field holding the password (form field or JSON pointer). Only read to
    /// re-check a password during 2FA enrollment; never stored or logged.
    pub password_field: String,
    /// What a successful login answer looks like.
    pub success: RawLoginSuccess,
    /// Requests to these paths end the gatehouse session after forwarding.
    pub logout_paths: Vec<String>,
    /// Path prefixes reachable without a gatehouse session (login page, assets).
    pub anonymous_paths: Vec<String>,
    /// Names of the dashboard's session cookies. gatehouse also learns every
    /// HttpOnly cookie the dashboard sets; listing them here makes several
    /// gateways strip them from the first request on.
    pub session_cookies: Vec<String>,
    /// The dashboard's JSON login APIs (mobile/desktop apps, integrations).
    /// A sign-in there that needs a second factor gets a JSON answer with a
    /// challenge id instead of a redirect to a page (see docs/api.md).
    pub api: Vec<RawLoginApi>,
}

/// `[[login.api]]`: a JSON login endpoint of the dashboard.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoginApi {
    /// Path of the POST target, e.g. "/api/login".
    pub path: String,
    /// JSON pointer to the username, e.g. "/username".
    #[serde(default = "default_api_username")]
    pub username_field: String,
    /// Status codes of a successful answer.
    #[serde(default = "default_api_status")]
    pub status: Vec<u16>,
    /// A cookie a successful answer must set (empty = not checked).
    #[serde(default)]
    pub set_cookie: String,
    /// A JSON pointer into a successful answer and the value (as JSON) it
    /// holds there (empty = not checked).
    #[serde(default)]
    pub json_pointer: String,
    #[serde(default)]
    pub json_equals: String,
}

fn default_api_username() -> String {
    "/username".into()
}

fn default_api_status() -> Vec<u16> {
    vec![200]
}

impl Default for RawLogin {
    fn default() -> Self {
        Self {
            path: "/login".into(),
            username_field: "username".into(),
            fixed_username: String::new(),
            password_field: "password".into(),
            success: RawLoginSuccess::default(),
            logout_paths: vec!["/logout".into()],
            anonymous_paths: vec!["/login".into(), "/static/".into()],
            session_cookies: Vec::new(),
            api: Vec::new(),
        }
    }
}

/// `[login.success]`: every condition given must hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLoginSuccess {
    /// Status codes of a successful login answer.
    pub status: Vec<u16>,
    /// A redirect whose Location path starts with this means failure
    /// (dashboards that redirect back to the form). Empty = not used.
    pub location_not: String,
    /// A cookie the answer must set. Empty = not used.
    pub set_cookie: String,
    /// For JSON logins that answer with one status either way: a JSON
    /// pointer into the answer ("/ok"); empty = not used. With `json_equals`.
    pub json_pointer: String,
    /// The value a success has at `json_pointer`, written as JSON: `true`,
    /// `'"ok"'`, `1`.
    pub json_equals: String,
}

impl Default for RawLoginSuccess {
    fn default() -> Self {
        Self {
            status: vec![302, 303],
            location_not: "/login".into(),
            set_cookie: String::new(),
            json_pointer: String::new(),
            json_equals: String::new(),
        }
    }
}

/// `[session]`: how long a sign-in lasts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    /// A session ends this long after sign-in, whatever happens.
    pub absolute_timeout: Dur,
    /// A session ends after this long without a request, or "disabled".
    pub idle_timeout: OptDuration,
    /// Cookie without Max-Age: the session ends when the browser closes.
    pub expire_on_browser_close: bool,
    /// One session per user: the newest sign-in wins; older browsers see
    /// "you signed in elsewhere".
    pub prevent_concurrent: bool,
    /// Client classes with their own session length, matched in order; a
    /// request matching none is "web".
    pub class: Vec<RawClientClass>,
    /// Pre-sign-in sessions (they keep the cookies the dashboard sets before
    /// sign-in) one client address may start per 15 minutes, an IPv6
    /// address counting as its /64. Past it the address gets 429: each would
    /// be a record in the store for 15 minutes. A browser reuses its own.
    pub prelogin_per_address: u32,
    /// Pre-sign-in sessions all addresses together may start per 15
    /// minutes: the bound on the store when a flood comes from many
    /// addresses (an IPv6 /48 holds 65 536 /64s). Past it, new visitors get
    /// 429 until the window ends; signed-in users are not affected.
    pub prelogin_total: u32,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            absolute_timeout: Dur(Duration::from_secs(24 * 3600)),
            idle_timeout: OptDuration(None),
            expire_on_browser_close: false,
            prevent_concurrent: true,
            class: Vec::new(),
            prelogin_per_address: 300,
            prelogin_total: 100_000,
        }
    }
}

/// `[[session.class]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientClass {
    /// "mobile" or "desktop".
    pub name: String,
    /// Substrings of the User-Agent that identify the class.
    #[serde(default)]
    pub user_agent: Vec<String>,
    /// Path prefixes that identify the class (e.g. an app's API).
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// The class's own absolute timeout; "disabled" = the session's.
    #[serde(default)]
    pub expire_after: OptDuration,
    /// Whether the second factor applies: "inherit" (the user's rule), "off",
    /// "required" or "outside_trusted". An area's own rule wins. The class is
    /// chosen by the client (User-Agent, path), so "off" is a convenience for
    /// trusted deployments, not a protection.
    #[serde(default)]
    pub two_factor: Option<String>,
}

/// `[lockout]`: failed sign-ins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLockout {
    /// Consecutive failures (passwords and 2FA codes together) that lock a username.
    pub max_failures: u32,
    /// How long a username stays locked.
    pub lock_for: Dur,
    /// Failed attempts from one client address, across usernames, before
    /// that address is throttled (password spraying).
    pub ip_max_failures: u32,
    /// The window for `ip_max_failures`.
    pub ip_window: Dur,
}

impl Default for RawLockout {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lock_for: Dur(Duration::from_secs(15 * 60)),
            ip_max_failures: 20,
            ip_window: Dur(Duration::from_secs(15 * 60)),
        }
    }
}

/// `[two_factor]`: TOTP after the dashboard accepted the password.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTwoFactor {
    /// "off", "optional" (users may enroll), "required", or
    /// "outside_trusted" (required unless the client is in trusted_networks).
    pub mode: String,
    /// Networks where "outside_trusted" asks for no code: IPs, CIDRs, ranges.
    pub trusted_networks: Vec<String>,
    /// The account's issuer name in authenticator apps.
    pub issuer: String,
    /// Enrollment also asks for the dashboard password (checked by replaying
    /// it to the dashboard's login; never stored).
    pub confirm_password: bool,
}

impl Default for RawTwoFactor {
    fn default() -> Self {
        Self {
            mode: "required".into(),
            trusted_networks: Vec::new(),
            issuer: "gatehouse".into(),
            confirm_password: false,
        }
    }
}

/// `[policy]`: rules per email domain of the username.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub domain: Vec<RawDomainPolicy>,
    /// Service accounts: integration users with their own rules.
    pub user: Vec<RawUserPolicy>,
}

/// `[[policy.user]]`: a service account (a CRM, billing or provisioning
/// integration signing in through the dashboard's login API).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserPolicy {
    /// The username as it signs in to the dashboard.
    pub name: String,
    /// Its second-factor mode; default "off" (a script cannot type codes).
    #[serde(default)]
    pub two_factor: Option<String>,
    /// Required: the only addresses (IPs, CIDRs, ranges) it may sign in and
    /// use its sessions from; checked on every request.
    pub allow: Vec<String>,
    /// Its sessions' absolute timeout; absent = `session.absolute_timeout`.
    #[serde(default)]
    pub absolute_timeout: Option<Dur>,
}

/// `[[policy.domain]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomainPolicy {
    /// The part after "@", e.g. "example.com".
    pub domain: String,
    /// Overrides two_factor.mode for this domain's users.
    pub two_factor: Option<String>,
    /// Overrides of `[password]` rules for this domain's users.
    pub password: Option<RawPasswordOverride>,
}

/// `[policy.domain.password]`: any of the `[password]` rules.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPasswordOverride {
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub require_upper: Option<bool>,
    pub require_lower: Option<bool>,
    pub require_digit: Option<bool>,
    pub require_symbol: Option<bool>,
    pub expire_after: Option<OptDuration>,
    pub prevent_reuse: Option<usize>,
    pub min_age: Option<OptDuration>,
    pub expiry_action: Option<String>,
}

/// `[metrics]`: Prometheus metrics, /healthz and /readyz.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Address of the metrics listener (keep it off the public network),
    /// or "disabled".
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9813".into(),
        }
    }
}

/// `[admin]`: who may use the admin console.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Usernames (as they sign in to the dashboard) allowed into the console.
    /// They need a session that passed the second factor.
    pub users: Vec<String>,
    /// Where the console lives; must be under "/.gatehouse/".
    pub path: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            path: "/.gatehouse/admin".into(),
        }
    }
}

/// `[audit]`: security events as JSON lines.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// Append audit lines to this file too ("" = only the log output).
    /// Reopened on SIGHUP, for logrotate.
    pub file: String,
}

/// `[incidents]`: who signs in from where.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIncidents {
    /// The window in which sign-ins from several countries are an incident.
    pub window: Dur,
    /// Distinct countries (unknown counts as one) that make an incident (≥ 2).
    pub distinct_countries: usize,
    /// Sign-in attempts kept per user.
    pub history: usize,
    /// POST each new incident as JSON to this URL ("" = none).
    pub webhook: String,
    /// More failed attempts than this on one user within the window is an
    /// incident too (0 = off).
    pub burst_failures: usize,
}

impl Default for RawIncidents {
    fn default() -> Self {
        Self {
            window: Dur(Duration::from_secs(24 * 3600)),
            distinct_countries: 2,
            history: 200,
            webhook: String::new(),
            burst_failures: 0,
        }
    }
}

/// `[password]`: policy on the dashboard's change-password form.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPassword {
    /// Path of the change-password form's POST target ("" = not intercepted).
    pub change_path: String,
    /// Path of the dashboard's forgot-password (reset) form's POST target
    /// ("" = none). Its new password meets the same rules, except the
    /// minimum age: someone locked out of their account must get back in.
    pub forgot_path: String,
    pub current_field: String,
    pub new_field: String,
    pub confirm_field: String,
    /// What a successful change answer looks like.
    pub success: RawPasswordSuccess,
    /// 6 to 64.
    pub min_length: usize,
    /// 10 to 64, at least min_length.
    pub max_length: usize,
    pub require_upper: bool,
    pub require_lower: bool,
    pub require_digit: bool,
    pub require_symbol: bool,
    /// Passwords expire this long after they were set, or "disabled".
    pub expire_after: OptDuration,
    /// Refuse the last N passwords (0 = off, else 5 to 10).
    pub prevent_reuse: usize,
    /// A change is possible only this long after the last one, or "disabled".
    pub min_age: OptDuration,
    /// "notice" (a page after sign-in) or "enforce" (every dashboard page
    /// leads to the notice until the password is changed).
    pub expiry_action: String,
}

impl Default for RawPassword {
    fn default() -> Self {
        Self {
            change_path: "/profile/password".into(),
            forgot_path: String::new(),
            current_field: "current_password".into(),
            new_field: "new_password".into(),
            confirm_field: "confirm_password".into(),
            success: RawPasswordSuccess::default(),
            min_length: 8,
            max_length: 24,
            require_upper: true,
            require_lower: true,
            require_digit: true,
            require_symbol: false,
            expire_after: OptDuration(None),
            prevent_reuse: 0,
            min_age: OptDuration(Some(Duration::from_secs(24 * 3600))),
            expiry_action: "notice".into(),
        }
    }
}

/// `[password.success]`: every condition given must hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPasswordSuccess {
    pub status: Vec<u16>,
    /// Text the answer's body must contain ("" = unused).
    pub body_contains: String,
}

impl Default for RawPasswordSuccess {
    fn default() -> Self {
        Self {
            status: vec![200, 302, 303],
            body_contains: String::new(),
        }
    }
}
