//! Raw TOML → [`Settings`]. Every problem is collected with its key path and
//! reported at once, so an operator fixes a file in one round.

use super::raw::{RawConfig, RawLimits, RawLogging, RawTls};
use super::ConfigIssue;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use http::uri::{Authority, Scheme};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod auth;
mod server;
use auth::{
    validate_lockout, validate_login, validate_password, validate_service_accounts,
    validate_session, validate_two_factor,
};
use server::{read_tls, validate_geoip, validate_limits, validate_upstream};

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub store: crate::store::StoreSettings,
    pub logging: RawLogging,
    pub login: crate::auth::login::LoginSettings,
    pub session: crate::session::SessionRules,
    pub lockout: crate::auth::lockout::LockoutSettings,
    pub two_factor: crate::auth::two_factor::TwoFactorSettings,
    /// `[[policy.user]]` service accounts.
    pub service_accounts: crate::auth::service::ServiceAccounts,
    /// `[[access.area]]`: who may enter which part of the dashboard.
    pub access: crate::access::AccessPolicy,
    /// The GeoIP database (disabled when `geoip.database` is absent).
    pub geo: crate::access::Geo,
    /// `[admin]`: console users (normalised) and path.
    pub admin_users: Vec<String>,
    pub admin_path: String,
    pub incidents: crate::incidents::IncidentSettings,
    /// `None` when `password.change_path` is empty.
    pub password: Option<crate::auth::password::PasswordPolicies>,
    /// `audit.file`: where audit lines are appended, if anywhere.
    pub audit_file: Option<PathBuf>,
    /// The metrics listener; `None` = disabled.
    pub metrics_listen: Option<SocketAddr>,
    /// The file this came from (for SIGHUP reloads); `None` when built in code.
    pub source: Option<PathBuf>,
}

/// More threads than this is a typo, not a machine.
const MAX_WORKER_THREADS: usize = 1024;

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub redirect_http: Option<SocketAddr>,
    pub hosts: Vec<String>,
    pub trusted_proxies: crate::access::IpList,
    pub proxy_protocol: bool,
    pub hsts_max_age: Option<Duration>,
    pub brand: String,
    pub drain_timeout: Duration,
    /// Threads serving connections; 0 = one per CPU core.
    pub worker_threads: usize,
    pub tls: TlsSettings,
    pub limits: Limits,
}

/// Certificates as PEM bytes, already read from disk (or generated for demo).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub default: Option<CertPem>,
    pub sni: Vec<(Vec<String>, CertPem)>,
}

#[derive(Clone)]
pub struct CertPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// Key path the certificate came from, for error messages.
    pub origin: String,
}

impl std::fmt::Debug for CertPem {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPem")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_form_bytes: usize,
    pub h2_max_concurrent_streams: u32,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub scheme: Scheme,
    pub authority: Authority,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub preserve_host: bool,
    pub pool_max_idle: usize,
    pub pool_idle_timeout: Duration,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), format_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn format_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Load a TOML file plus `GATEHOUSE_…` environment overrides (`__` separates
/// nested keys: `GATEHOUSE_SESSION__IDLE_TIMEOUT=30m`).
pub fn load_file(path: &Path) -> Result<Settings, ConfigError> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        });
    }
    let figment = Figment::from(Toml::file_exact(path)).merge(env_provider());
    let mut settings = from_figment(&figment, path.parent())?;
    settings.source = Some(path.to_path_buf());
    Ok(settings)
}

/// Load from TOML text (demo mode, tests). Relative paths resolve against `base`.
pub fn load_str(toml: &str, base: Option<&Path>) -> Result<Settings, ConfigError> {
    from_figment(&Figment::from(Toml::string(toml)), base)
}

fn env_provider() -> Env {
    Env::prefixed("GATEHOUSE_").split("__")
}

/// Deserialize section by section so that a wrong type in one section does not
/// hide an unknown key in another: serde stops at the first error per value.
fn from_figment(figment: &Figment, base: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut issues = Vec::new();
    let mut raw = RawConfig::default();
    const SECTIONS: &[&str] = &[
        "server",
        "upstream",
        "store",
        "logging",
        "login",
        "session",
        "lockout",
        "two_factor",
        "policy",
        "metrics",
        "admin",
        "access",
        "geoip",
        "audit",
        "incidents",
        "password",
    ];

    match figment.extract::<figment::value::Dict>() {
        Ok(top) => {
            for key in top.keys() {
                if !SECTIONS.contains(&key.as_str()) {
                    issues.push(ConfigIssue::new(
                        key.clone(),
                        format!("unknown section; expected one of: {}", SECTIONS.join(", ")),
                    ));
                }
            }
        }
        Err(e) => collect_figment(&mut issues, None, e),
    }
    let mut broken: Vec<&str> = Vec::new();
    macro_rules! section {
        ($name:literal, $field:ident) => {
            if figment.contains($name) {
                match figment.extract_inner($name) {
                    Ok(v) => raw.$field = v,
                    Err(e) => {
                        collect_figment(&mut issues, Some($name), e);
                        broken.push($name);
                    }
                }
            }
        };
    }
    section!("server", server);
    section!("upstream", upstream);
    section!("store", store);
    section!("logging", logging);
    section!("login", login);
    section!("session", session);
    section!("lockout", lockout);
    section!("two_factor", two_factor);
    section!("policy", policy);
    section!("metrics", metrics);
    section!("admin", admin);
    section!("audit", audit);
    section!("incidents", incidents);
    section!("password", password);
    // Access areas are deserialized by their own module's raw types.
    let mut raw_access = crate::access::RawAccess::default();
    let mut raw_geoip = crate::access::RawGeoip::default();
    if figment.contains("access") {
        match figment.extract_inner("access") {
            Ok(v) => raw_access = v,
            Err(e) => {
                collect_figment(&mut issues, Some("access"), e);
                broken.push("access");
            }
        }
    }
    if figment.contains("geoip") {
        match figment.extract_inner("geoip") {
            Ok(v) => raw_geoip = v,
            Err(e) => {
                collect_figment(&mut issues, Some("geoip"), e);
                broken.push("geoip");
            }
        }
    }

    // A section that did not parse was replaced by defaults: checking those
    // would only add noise to the real error.
    let mut semantic = Vec::new();
    let settings = validate(raw, base, &mut semantic).map(|mut s| {
        s.geo = validate_geoip(&raw_geoip, base, &mut semantic);
        match crate::access::validate(&raw_access, s.geo.is_enabled()) {
            Ok(policy) => s.access = policy,
            Err(found) => semantic.extend(found),
        }
        s
    });
    issues.extend(
        semantic
            .into_iter()
            .filter(|i| !broken.iter().any(|b| i.key.starts_with(b))),
    );
    match settings {
        Some(s) if issues.is_empty() => Ok(s),
        _ => Err(ConfigError::Invalid(issues)),
    }
}

/// figment appends the section name given to `extract_inner` after the inner
/// path (`["listen", "server"]`); rebuild it as `server.listen`.
fn collect_figment(issues: &mut Vec<ConfigIssue>, section: Option<&str>, err: figment::Error) {
    for e in err {
        let mut path = e.path.clone();
        if let Some(name) = section {
            if path.last().map(String::as_str) == Some(name) {
                path.pop();
            }
            path.insert(0, name.to_string());
        }
        let key = if path.is_empty() {
            "(top level)".to_string()
        } else {
            path.join(".")
        };
        let message = match &e.kind {
            figment::error::Kind::UnknownField(_, expected) => {
                format!("unknown key; expected one of: {}", expected.join(", "))
            }
            kind => kind.to_string(),
        };
        issues.push(ConfigIssue::new(key, message));
    }
}

/// Semantic checks on the raw structs. Returns `None` only when a value is so
/// broken that no `Settings` can be built; `issues` then says why.
fn validate(
    raw: RawConfig,
    base: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Settings> {
    let s = &raw.server;
    if s.worker_threads > MAX_WORKER_THREADS {
        issues.push(ConfigIssue::new(
            "server.worker_threads",
            format!(
                "{} is more than {MAX_WORKER_THREADS}; 0 means one per CPU core",
                s.worker_threads
            ),
        ));
    }
    let listen: Vec<SocketAddr> = s
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, a)| parse_addr(a, &format!("server.listen[{i}]"), issues))
        .collect();
    if s.listen.is_empty() {
        issues.push(ConfigIssue::new(
            "server.listen",
            "at least one listener is required",
        ));
    }
    let redirect_http = s
        .redirect_http
        .as_deref()
        .and_then(|a| parse_addr(a, "server.redirect_http", issues));
    let trusted_proxies = ip_list(&s.trusted_proxies, "server.trusted_proxies", issues);
    let hosts = s
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains(['/', ':', ' ']) {
                issues.push(ConfigIssue::new(
                    format!("server.hosts[{i}]"),
                    "a host name without scheme, port or path, e.g. \"dash.example.com\"",
                ));
                None
            } else {
                Some(h)
            }
        })
        .collect();
    if s.brand.trim().is_empty() {
        issues.push(ConfigIssue::new("server.brand", "must not be empty"));
    }
    let tls = read_tls(&s.tls, base, issues);
    if let Err(e) = crate::tls::check(&tls) {
        issues.push(ConfigIssue::new(e.key.clone(), e.to_string()));
    }
    let limits = validate_limits(&s.limits, issues);
    let upstream = validate_upstream(&raw, base, issues)?;
    let store_url = match raw.store.url.strip_prefix("file:") {
        // A relative embedded-store path is relative to the config file.
        Some(p) if !p.starts_with('/') => format!("file:{}", resolve(base, Path::new(p)).display()),
        _ => raw.store.url.clone(),
    };
    let store = crate::store::StoreSettings {
        url: store_url,
        secret_key_file: resolve(base, &raw.store.secret_key_file),
        connect_timeout: raw.store.connect_timeout.0,
        command_timeout: raw.store.command_timeout.0,
        cache_sessions: raw.store.cache_sessions,
    };
    if !matches!(raw.logging.format.as_str(), "text" | "json") {
        issues.push(ConfigIssue::new(
            "logging.format",
            "must be \"text\" or \"json\"",
        ));
    }
    if tracing_subscriber::EnvFilter::try_new(&raw.logging.level).is_err() {
        issues.push(ConfigIssue::new(
            "logging.level",
            "not a valid filter; use e.g. \"info\" or \"gatehouse=debug,info\"",
        ));
    }
    let login = validate_login(&raw.login, issues);
    let session = validate_session(&raw.session, issues);
    let lockout = validate_lockout(&raw.lockout, issues);
    let two_factor = validate_two_factor(&raw, issues);
    let service_accounts = validate_service_accounts(&raw, issues);
    let metrics_listen = match raw.metrics.listen.trim() {
        "disabled" | "off" | "" => None,
        a => parse_addr(a, "metrics.listen", issues),
    };
    let admin_path = raw.admin.path.trim_end_matches('/').to_string();
    if !admin_path.starts_with("/.gatehouse/") || admin_path.contains(['?', '#', ' ', '\\']) {
        issues.push(ConfigIssue::new(
            "admin.path",
            "must be a path under \"/.gatehouse/\", e.g. \"/.gatehouse/admin\"",
        ));
    }
    let admin_users = raw
        .admin
        .users
        .iter()
        .enumerate()
        .filter_map(|(i, u)| {
            let n = crate::auth::login::normalise_username(u);
            if n.is_none() {
                issues.push(ConfigIssue::new(
                    format!("admin.users[{i}]"),
                    "not a valid username",
                ));
            }
            n
        })
        .collect();
    let audit_file = match raw.audit.file.trim() {
        "" => None,
        f => Some(resolve(base, Path::new(f))),
    };
    let inc = &raw.incidents;
    if inc.distinct_countries < 2 {
        issues.push(ConfigIssue::new(
            "incidents.distinct_countries",
            "must be at least 2",
        ));
    }
    if inc.history == 0 || inc.history > 10_000 {
        issues.push(ConfigIssue::new(
            "incidents.history",
            "must be between 1 and 10000",
        ));
    }
    let webhook = match inc.webhook.trim() {
        "" => None,
        w => match w.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
            {
                Some(u)
            }
            _ => {
                issues.push(ConfigIssue::new(
                    "incidents.webhook",
                    "must be an http:// or https:// URL",
                ));
                None
            }
        },
    };
    let incidents = crate::incidents::IncidentSettings {
        window: inc.window.0,
        distinct_countries: inc.distinct_countries.max(2),
        history: inc.history.clamp(1, 10_000),
        webhook,
        burst_failures: inc.burst_failures,
    };
    let password = validate_password(&raw.password, issues).map(|base| {
        let mut domains = Vec::new();
        for (i, d) in raw.policy.domain.iter().enumerate() {
            let Some(o) = &d.password else { continue };
            let mut merged = raw.password.clone();
            merged.min_length = o.min_length.unwrap_or(merged.min_length);
            merged.max_length = o.max_length.unwrap_or(merged.max_length);
            merged.require_upper = o.require_upper.unwrap_or(merged.require_upper);
            merged.require_lower = o.require_lower.unwrap_or(merged.require_lower);
            merged.require_digit = o.require_digit.unwrap_or(merged.require_digit);
            merged.require_symbol = o.require_symbol.unwrap_or(merged.require_symbol);
            merged.expire_after = o.expire_after.unwrap_or(merged.expire_after);
            merged.prevent_reuse = o.prevent_reuse.unwrap_or(merged.prevent_reuse);
            merged.min_age = o.min_age.unwrap_or(merged.min_age);
            merged.expiry_action = o.expiry_action.clone().unwrap_or(merged.expiry_action);
            let mut found = Vec::new();
            if let Some(p) = validate_password(&merged, &mut found) {
                domains.push((d.domain.trim().to_ascii_lowercase(), p));
            }
            issues.extend(found.into_iter().map(|f| {
                ConfigIssue::new(
                    f.key
                        .replacen("password.", &format!("policy.domain[{i}].password."), 1),
                    f.message,
                )
            }));
        }
        crate::auth::password::PasswordPolicies { base, domains }
    });
    Some(Settings {
        service_accounts,
        password,
        incidents,
        audit_file,
        access: crate::access::AccessPolicy::default(),
        geo: crate::access::Geo::disabled(),
        admin_users,
        admin_path,
        metrics_listen,
        two_factor,
        login,
        session,
        lockout,
        server: ServerSettings {
            listen,
            redirect_http,
            hosts,
            trusted_proxies,
            proxy_protocol: s.proxy_protocol,
            hsts_max_age: s.hsts_max_age.0,
            brand: s.brand.clone(),
            drain_timeout: s.drain_timeout.0,
            worker_threads: s.worker_threads,
            tls,
            limits,
        },
        upstream,
        store,
        logging: raw.logging,
        source: None,
    })
}

fn check_path(key: &str, p: &str, issues: &mut Vec<ConfigIssue>) {
    if !p.starts_with('/') || p.contains(['?', '#', '\\', ' ']) || p.contains("//") {
        issues.push(ConfigIssue::new(
            key,
            format!("{p:?} must be a plain path starting with \"/\""),
        ));
    }
}

fn resolve(base: Option<&Path>, p: &Path) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

fn parse_addr(text: &str, key: &str, issues: &mut Vec<ConfigIssue>) -> Option<SocketAddr> {
    text.parse()
        .map_err(|_| {
            issues.push(ConfigIssue::new(
                key,
                format!("{text:?} is not an address:port such as \"0.0.0.0:443\" or \"[::]:443\""),
            ))
        })
        .ok()
}

/// A list of plain-string entries (IPs, CIDRs, ranges) as an [`IpList`].
fn ip_list(entries: &[String], key: &str, issues: &mut Vec<ConfigIssue>) -> crate::access::IpList {
    let raw: Vec<crate::access::RawIpEntry> = entries
        .iter()
        .map(|e| crate::access::RawIpEntry::Plain(e.clone()))
        .collect();
    crate::access::IpList::from_raw(&raw, key).unwrap_or_else(|found| {
        issues.extend(found);
        crate::access::IpList::default()
    })
}

#[allow(dead_code)]
fn parse_net(text: &str, key: &str, issues: &mut Vec<ConfigIssue>) -> Option<IpNet> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        if net.trunc() != net {
            issues.push(ConfigIssue::new(
                key,
                format!("{t} has host bits set; did you mean {}?", net.trunc()),
            ));
            return None;
        }
        return Some(net);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    issues.push(ConfigIssue::new(
        key,
        format!("{t:?} is not an IP address or CIDR block"),
    ));
    None
}
