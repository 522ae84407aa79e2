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

fn validate_login(
    l: &super::raw::RawLogin,
    issues: &mut Vec<ConfigIssue>,
) -> crate::auth::login::LoginSettings {
    check_path("login.path", &l.path, issues);
    for (i, p) in l.logout_paths.iter().enumerate() {
        check_path(&format!("login.logout_paths[{i}]"), p, issues);
    }
    for (i, p) in l.anonymous_paths.iter().enumerate() {
        check_path(&format!("login.anonymous_paths[{i}]"), p, issues);
        if p == "/" {
            issues.push(ConfigIssue::new(
                format!("login.anonymous_paths[{i}]"),
                "\"/\" would make the whole dashboard reachable without signing in",
            ));
        }
    }
    let fixed_username = match l.fixed_username.trim() {
        "" => None,
        raw => {
            let user = crate::auth::login::normalise_username(raw);
            if user.is_none() {
                issues.push(ConfigIssue::new(
                    "login.fixed_username",
                    "not a usable username (control characters or over 256 bytes)",
                ));
            }
            user
        }
    };
    if l.username_field.trim().is_empty() && fixed_username.is_none() {
        issues.push(ConfigIssue::new(
            "login.username_field",
            "must not be empty (for a password-only form set login.fixed_username)",
        ));
    }
    if l.password_field.trim().is_empty() {
        issues.push(ConfigIssue::new(
            "login.password_field",
            "must not be empty",
        ));
    }
    if l.success.status.is_empty() {
        issues.push(ConfigIssue::new(
            "login.success.status",
            "list at least one status code",
        ));
    }
    for (i, s) in l.success.status.iter().enumerate() {
        if !(100..=599).contains(s) {
            issues.push(ConfigIssue::new(
                format!("login.success.status[{i}]"),
                "not an HTTP status code",
            ));
        }
    }
    let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let json_rule = |key: &str, pointer: &str, equals: &str, issues: &mut Vec<ConfigIssue>| match (
        pointer.trim(),
        equals.trim(),
    ) {
        ("", "") => None,
        (p, _) if !p.starts_with('/') => {
            issues.push(ConfigIssue::new(
                format!("{key}.json_pointer"),
                "a JSON pointer such as \"/ok\" or \"/result/status\"",
            ));
            None
        }
        (_, "") => {
            issues.push(ConfigIssue::new(
                format!("{key}.json_equals"),
                "give the value a success has at json_pointer (as JSON: true, '\"ok\"', 1)",
            ));
            None
        }
        (p, e) => match serde_json::from_str(e) {
            Ok(equals) => Some(crate::auth::login::JsonSuccess {
                pointer: p.to_string(),
                equals,
            }),
            Err(_) => {
                issues.push(ConfigIssue::new(
                    format!("{key}.json_equals"),
                    "not JSON: write true, 1, or a string in quotes ('\"ok\"')",
                ));
                None
            }
        },
    };
    let mut api = Vec::new();
    for (i, a) in l.api.iter().enumerate() {
        let key = format!("login.api[{i}]");
        check_path(&format!("{key}.path"), &a.path, issues);
        if a.path
            .trim_end_matches('/')
            .eq_ignore_ascii_case(l.path.trim_end_matches('/'))
        {
            issues.push(ConfigIssue::new(
                format!("{key}.path"),
                "is login.path already; a JSON login needs its own path",
            ));
        }
        if !a.username_field.starts_with('/') {
            issues.push(ConfigIssue::new(
                format!("{key}.username_field"),
                "a JSON pointer such as \"/username\" or \"/user/name\"",
            ));
        }
        if a.status.is_empty() || a.status.iter().any(|s| !(100..=599).contains(s)) {
            issues.push(ConfigIssue::new(
                format!("{key}.status"),
                "list HTTP status codes of a successful login",
            ));
        }
        api.push(crate::auth::login::ApiLogin {
            path: a.path.clone(),
            username_field: a.username_field.clone(),
            success_status: a.status.clone(),
            set_cookie: opt(&a.set_cookie),
            json: json_rule(&key, &a.json_pointer, &a.json_equals, issues),
        });
    }
    crate::auth::login::LoginSettings {
        api,
        path: l.path.clone(),
        username_field: l.username_field.clone(),
        fixed_username,
        password_field: l.password_field.clone(),
        success_status: l.success.status.clone(),
        location_not: opt(&l.success.location_not),
        set_cookie: opt(&l.success.set_cookie),
        json: json_rule(
            "login.success",
            &l.success.json_pointer,
            &l.success.json_equals,
            issues,
        ),
        logout_paths: l.logout_paths.clone(),
        anonymous_paths: l.anonymous_paths.clone(),
        session_cookies: l.session_cookies.clone(),
    }
}

fn validate_session(
    s: &super::raw::RawSession,
    issues: &mut Vec<ConfigIssue>,
) -> crate::session::SessionRules {
    if s.absolute_timeout.0.is_zero() {
        issues.push(ConfigIssue::new(
            "session.absolute_timeout",
            "must be longer than 0",
        ));
    }
    if let Some(idle) = s.idle_timeout.0 {
        if idle >= s.absolute_timeout.0 {
            issues.push(ConfigIssue::new(
                "session.idle_timeout",
                "must be shorter than session.absolute_timeout (or \"disabled\")",
            ));
        }
    }
    let mut classes = Vec::new();
    for (i, c) in s.class.iter().enumerate() {
        if !matches!(c.name.as_str(), "mobile" | "desktop") {
            issues.push(ConfigIssue::new(
                format!("session.class[{i}].name"),
                "must be \"mobile\" or \"desktop\"",
            ));
        }
        if c.user_agent.is_empty() && c.path_prefixes.is_empty() {
            issues.push(ConfigIssue::new(
                format!("session.class[{i}]"),
                "set user_agent or path_prefixes, or the class never matches",
            ));
        }
        let two_factor = match c.two_factor.as_deref() {
            None | Some("inherit") => None,
            Some(m) => match crate::auth::two_factor::Mode::parse(m) {
                Some(crate::auth::two_factor::Mode::Optional) | None => {
                    issues.push(ConfigIssue::new(
                        format!("session.class[{i}].two_factor"),
                        "must be \"inherit\", \"off\", \"required\" or \"outside_trusted\"",
                    ));
                    None
                }
                m => m,
            },
        };
        classes.push(crate::session::rules::ClientClass {
            two_factor,
            name: c.name.clone(),
            user_agent: c.user_agent.clone(),
            path_prefixes: c.path_prefixes.clone(),
            expire_after: c.expire_after.0,
        });
    }
    crate::session::SessionRules {
        absolute_timeout: s.absolute_timeout.0,
        idle_timeout: s.idle_timeout.0,
        expire_on_browser_close: s.expire_on_browser_close,
        prevent_concurrent: s.prevent_concurrent,
        classes,
    }
}

fn validate_lockout(
    l: &super::raw::RawLockout,
    issues: &mut Vec<ConfigIssue>,
) -> crate::auth::lockout::LockoutSettings {
    if l.max_failures == 0 {
        issues.push(ConfigIssue::new(
            "lockout.max_failures",
            "must be at least 1",
        ));
    }
    if l.ip_max_failures == 0 {
        issues.push(ConfigIssue::new(
            "lockout.ip_max_failures",
            "must be at least 1",
        ));
    }
    if l.lock_for.0.is_zero() {
        issues.push(ConfigIssue::new(
            "lockout.lock_for",
            "must be longer than 0",
        ));
    }
    crate::auth::lockout::LockoutSettings {
        max_failures: l.max_failures,
        lock_for: l.lock_for.0,
        ip_max_failures: l.ip_max_failures,
        ip_window: l.ip_window.0,
    }
}

fn validate_two_factor(
    raw: &RawConfig,
    issues: &mut Vec<ConfigIssue>,
) -> crate::auth::two_factor::TwoFactorSettings {
    use crate::auth::two_factor::{Mode, TwoFactorSettings};
    let t = &raw.two_factor;
    let mode = Mode::parse(&t.mode).unwrap_or_else(|| {
        issues.push(ConfigIssue::new(
            "two_factor.mode",
            "must be \"off\", \"optional\", \"required\" or \"outside_trusted\"",
        ));
        Mode::Required
    });
    let trusted_networks = ip_list(&t.trusted_networks, "two_factor.trusted_networks", issues);
    if mode == Mode::OutsideTrusted && trusted_networks.is_empty() {
        issues.push(ConfigIssue::new(
            "two_factor.trusted_networks",
            "\"outside_trusted\" needs at least one trusted network",
        ));
    }
    if t.issuer.trim().is_empty() || t.issuer.contains(':') {
        issues.push(ConfigIssue::new(
            "two_factor.issuer",
            "must be a non-empty name without \":\"",
        ));
    }
    let mut domains = Vec::new();
    for (i, d) in raw.policy.domain.iter().enumerate() {
        let name = d.domain.trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(['@', '/', ' ']) {
            issues.push(ConfigIssue::new(
                format!("policy.domain[{i}].domain"),
                "a domain such as \"example.com\"",
            ));
        }
        let m = match d.two_factor.as_deref().map(Mode::parse) {
            None => None,
            Some(Some(m)) => Some(m),
            Some(None) => {
                issues.push(ConfigIssue::new(
                    format!("policy.domain[{i}].two_factor"),
                    "must be \"off\", \"optional\", \"required\" or \"outside_trusted\"",
                ));
                None
            }
        };
        if let Some(m) = m {
            domains.push((name, m));
        }
    }
    let mut users = Vec::new();
    for (i, u) in raw.policy.user.iter().enumerate() {
        let Some(name) = crate::auth::login::normalise_username(&u.name) else {
            continue; // reported by validate_service_accounts
        };
        match u.two_factor.as_deref().map(Mode::parse) {
            None => users.push((name, Mode::Off)),
            Some(Some(m)) => users.push((name, m)),
            Some(None) => issues.push(ConfigIssue::new(
                format!("policy.user[{i}].two_factor"),
                "must be \"off\", \"optional\", \"required\" or \"outside_trusted\"",
            )),
        }
    }
    if users.iter().any(|(_, m)| *m == Mode::OutsideTrusted) && trusted_networks.is_empty() {
        issues.push(ConfigIssue::new(
            "two_factor.trusted_networks",
            "\"outside_trusted\" needs at least one trusted network",
        ));
    }
    TwoFactorSettings {
        users,
        mode,
        trusted_networks,
        issuer: t.issuer.trim().to_string(),
        domains,
        confirm_password: t.confirm_password,
    }
}

fn validate_service_accounts(
    raw: &RawConfig,
    issues: &mut Vec<ConfigIssue>,
) -> crate::auth::service::ServiceAccounts {
    let mut out = Vec::new();
    for (i, u) in raw.policy.user.iter().enumerate() {
        let key = format!("policy.user[{i}]");
        let name = crate::auth::login::normalise_username(&u.name);
        if name.is_none() {
            issues.push(ConfigIssue::new(
                format!("{key}.name"),
                "not a valid username",
            ));
        }
        if let Some(n) = &name {
            if out
                .iter()
                .any(|a: &crate::auth::service::ServiceAccount| &a.name == n)
            {
                issues.push(ConfigIssue::new(format!("{key}.name"), "listed twice"));
            }
        }
        if u.allow.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{key}.allow"),
                "required: the addresses this service account signs in from",
            ));
        }
        let allow = ip_list(&u.allow, &format!("{key}.allow"), issues);
        let absolute_timeout = u.absolute_timeout.map(|d| d.0);
        if absolute_timeout.is_some_and(|d| d.is_zero()) {
            issues.push(ConfigIssue::new(
                format!("{key}.absolute_timeout"),
                "must be longer than 0",
            ));
        }
        if let Some(name) = name {
            out.push(crate::auth::service::ServiceAccount {
                name,
                allow,
                absolute_timeout,
            });
        }
    }
    crate::auth::service::ServiceAccounts(out)
}

fn validate_password(
    p: &super::raw::RawPassword,
    issues: &mut Vec<ConfigIssue>,
) -> Option<crate::auth::password::PasswordPolicy> {
    if p.change_path.trim().is_empty() {
        return None;
    }
    check_path("password.change_path", &p.change_path, issues);
    let forgot_path = (!p.forgot_path.trim().is_empty()).then(|| p.forgot_path.clone());
    if let Some(f) = &forgot_path {
        check_path("password.forgot_path", f, issues);
        if *f == p.change_path {
            issues.push(ConfigIssue::new(
                "password.forgot_path",
                "must differ from password.change_path",
            ));
        }
    }
    if !(6..=64).contains(&p.min_length) {
        issues.push(ConfigIssue::new(
            "password.min_length",
            "must be between 6 and 64",
        ));
    }
    if !(10..=64).contains(&p.max_length) || p.max_length < p.min_length {
        issues.push(ConfigIssue::new(
            "password.max_length",
            "must be between 10 and 64 and at least min_length",
        ));
    }
    if p.prevent_reuse != 0 && !(5..=10).contains(&p.prevent_reuse) {
        issues.push(ConfigIssue::new(
            "password.prevent_reuse",
            "must be 0 (off) or between 5 and 10",
        ));
    }
    let enforce = match p.expiry_action.as_str() {
        "notice" => false,
        "enforce" => true,
        _ => {
            issues.push(ConfigIssue::new(
                "password.expiry_action",
                "must be \"notice\" or \"enforce\"",
            ));
            false
        }
    };
    for (key, v) in [
        ("current_field", &p.current_field),
        ("new_field", &p.new_field),
        ("confirm_field", &p.confirm_field),
    ] {
        if v.trim().is_empty() {
            issues.push(ConfigIssue::new(
                format!("password.{key}"),
                "must not be empty",
            ));
        }
    }
    Some(crate::auth::password::PasswordPolicy {
        change_path: p.change_path.clone(),
        forgot_path,
        current_field: p.current_field.clone(),
        new_field: p.new_field.clone(),
        confirm_field: p.confirm_field.clone(),
        success_status: p.success.status.clone(),
        success_body_contains: (!p.success.body_contains.trim().is_empty())
            .then(|| p.success.body_contains.clone()),
        min_length: p.min_length,
        max_length: p.max_length,
        require_upper: p.require_upper,
        require_lower: p.require_lower,
        require_digit: p.require_digit,
        require_symbol: p.require_symbol,
        expire_after: p.expire_after.0,
        prevent_reuse: p.prevent_reuse,
        min_age: p.min_age.0,
        enforce_expiry: enforce,
    })
}

fn validate_limits(l: &RawLimits, issues: &mut Vec<ConfigIssue>) -> Limits {
    // hyper refuses a read buffer below 8 KiB.
    if l.max_header_bytes < 8192 {
        issues.push(ConfigIssue::new(
            "server.limits.max_header_bytes",
            "must be at least 8192",
        ));
    }
    for (key, v) in [
        ("max_headers", l.max_headers),
        ("max_connections", l.max_connections),
        ("max_connections_per_ip", l.max_connections_per_ip),
        ("max_form_bytes", l.max_form_bytes),
        (
            "h2_max_concurrent_streams",
            l.h2_max_concurrent_streams as usize,
        ),
    ] {
        if v == 0 {
            issues.push(ConfigIssue::new(
                format!("server.limits.{key}"),
                "must be greater than 0",
            ));
        }
    }
    Limits {
        max_header_bytes: l.max_header_bytes.max(8192),
        max_headers: l.max_headers,
        header_read_timeout: l.header_read_timeout.0,
        handshake_timeout: l.handshake_timeout.0,
        idle_timeout: l.idle_timeout.0,
        max_connections: l.max_connections,
        max_connections_per_ip: l.max_connections_per_ip,
        max_form_bytes: l.max_form_bytes,
        h2_max_concurrent_streams: l.h2_max_concurrent_streams,
    }
}

fn validate_upstream(
    raw: &RawConfig,
    base: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<UpstreamSettings> {
    let u = &raw.upstream;
    let parsed = u.url.parse::<http::Uri>().ok();
    let (scheme, authority) = match parsed {
        Some(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none() =>
        {
            (uri.scheme().cloned(), uri.authority().cloned())
        }
        _ => {
            issues.push(ConfigIssue::new(
                "upstream.url",
                "must be http://host:port or https://host:port without a path",
            ));
            (None, None)
        }
    };
    let ca_file = u.ca_file.as_ref().map(|p| resolve(base, p));
    if let Some(p) = &ca_file {
        if std::fs::metadata(p).is_err() {
            issues.push(ConfigIssue::new(
                "upstream.ca_file",
                format!("cannot read {}", p.display()),
            ));
        }
    }
    Some(UpstreamSettings {
        scheme: scheme.unwrap_or(Scheme::HTTP),
        authority: authority.unwrap_or_else(|| Authority::from_static("127.0.0.1")),
        ca_file,
        connect_timeout: u.connect_timeout.0,
        response_timeout: u.response_timeout.0,
        preserve_host: u.preserve_host,
        pool_max_idle: u.pool_max_idle,
        pool_idle_timeout: u.pool_idle_timeout.0,
    })
}

fn read_tls(raw: &RawTls, base: Option<&Path>, issues: &mut Vec<ConfigIssue>) -> TlsSettings {
    let mut out = TlsSettings::default();
    match (&raw.cert, &raw.key) {
        (Some(c), Some(k)) => {
            out.default = read_pair(c, k, "server.tls", base, issues);
        }
        (None, None) if raw.sni.is_empty() => issues.push(ConfigIssue::new(
            "server.tls",
            "a certificate is required: set cert and key (or [[server.tls.sni]])",
        )),
        (None, None) => {}
        _ => issues.push(ConfigIssue::new(
            "server.tls",
            "cert and key must be set together",
        )),
    }
    for (i, sni) in raw.sni.iter().enumerate() {
        let key = format!("server.tls.sni[{i}]");
        if sni.names.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{key}.names"),
                "list at least one host name",
            ));
        }
        if let Some(pem) = read_pair(&sni.cert, &sni.key, &key, base, issues) {
            let names = sni.names.iter().map(|n| n.to_ascii_lowercase()).collect();
            out.sni.push((names, pem));
        }
    }
    out
}

fn read_pair(
    cert: &Path,
    key: &Path,
    at: &str,
    base: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<CertPem> {
    let read = |p: &Path, k: &str, issues: &mut Vec<ConfigIssue>| {
        let p = resolve(base, p);
        std::fs::read(&p)
            .map_err(|e| {
                issues.push(ConfigIssue::new(
                    format!("{at}.{k}"),
                    format!("cannot read {}: {e}", p.display()),
                ))
            })
            .ok()
    };
    let c = read(cert, "cert", issues);
    let k = read(key, "key", issues);
    Some(CertPem {
        cert: c?,
        key: k?,
        origin: at.to_string(),
    })
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

fn validate_geoip(
    raw: &crate::access::RawGeoip,
    base: Option<&Path>,
    issues: &mut Vec<ConfigIssue>,
) -> crate::access::Geo {
    let path = match crate::access::config::validate_geoip(raw) {
        Ok(p) => p.map(|p| resolve(base, &p)),
        Err(found) => {
            issues.extend(found);
            None
        }
    };
    crate::access::Geo::from_config(path.as_deref()).unwrap_or_else(|e| {
        issues.push(e.to_config_issue());
        crate::access::Geo::disabled()
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
