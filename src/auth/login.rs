//! Login interception: recognise a login attempt, read its username, judge
//! the dashboard's answer. Pure functions over bytes and headers.

use http::{header, HeaderMap, Method, StatusCode};

/// The validated `[login]` section.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    pub path: String,
    pub username_field: String,
    /// `login.fixed_username`: the one user of a password-only login form.
    pub fixed_username: Option<String>,
    pub password_field: String,
    pub success_status: Vec<u16>,
    pub location_not: Option<String>,
    pub set_cookie: Option<String>,
    /// `json_pointer` + `json_equals`: a value the answer's JSON must hold.
    pub json: Option<JsonSuccess>,
    pub logout_paths: Vec<String>,
    pub anonymous_paths: Vec<String>,
    pub session_cookies: Vec<String>,
    /// `[[login.api]]`: JSON login endpoints.
    pub api: Vec<ApiLogin>,
}

/// A JSON login endpoint of the dashboard (`[[login.api]]`).
#[derive(Debug, Clone)]
pub struct ApiLogin {
    pub path: String,
    /// JSON pointer.
    pub username_field: String,
    pub success_status: Vec<u16>,
    pub set_cookie: Option<String>,
    pub json: Option<JsonSuccess>,
}

/// For dashboards whose JSON login answers with one status either way
/// (`200 {"ok": false}`): where in the answer to look, and what a success
/// has there.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonSuccess {
    /// JSON pointer, e.g. "/ok" or "/result/status".
    pub pointer: String,
    pub equals: serde_json::Value,
}

impl JsonSuccess {
    /// Does this answer body hold the success value? Anything that is not
    /// JSON, or lacks the pointer, is a failure.
    pub fn holds(&self, body: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .is_some_and(|v| v.pointer(&self.pointer) == Some(&self.equals))
    }
}

/// The largest login answer gatehouse reads to judge it by its JSON body.
pub const MAX_JUDGED_ANSWER: usize = 1 << 20;

/// Longest username gatehouse accepts (keys and audit lines stay bounded).
pub const MAX_USERNAME: usize = 256;

impl LoginSettings {
    /// Is this request a login attempt? Case and a trailing slash are
    /// ignored so `/LOGIN` and `/login/` cannot slip past the interception
    /// (SECURITY-TESTS 33); any method but GET/HEAD counts.
    pub fn is_login(&self, method: &Method, path: &str) -> bool {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return false;
        }
        same_path(path, &self.path) || self.api_login(path).is_some()
    }

    /// The JSON login endpoint `path` is (same spelling rules as `is_login`).
    pub fn api_login(&self, path: &str) -> Option<&ApiLogin> {
        self.api.iter().find(|a| same_path(path, &a.path))
    }

    /// The username field of the login at `path`.
    pub fn username_field_for(&self, path: &str) -> &str {
        self.api_login(path)
            .map_or(self.username_field.as_str(), |a| a.username_field.as_str())
    }

    /// Whose login attempt a POST to the login at `path` is, normalised; None
    /// when the body names nobody. A password-only form (single-user
    /// dashboards) always names `fixed_username`; JSON logins (`[[login.api]]`)
    /// always name their own user.
    pub fn attempt_user(&self, path: &str, content_type: &str, body: &[u8]) -> Option<String> {
        if let (None, Some(fixed)) = (self.api_login(path), &self.fixed_username) {
            return Some(fixed.clone());
        }
        field(content_type, body, self.username_field_for(path))
            .and_then(|u| normalise_username(&u))
    }

    /// Did the dashboard accept the password at the login `path`? `body` is
    /// the answer's body when [`Self::judges_body`] asked for it.
    pub fn succeeded_at(
        &self,
        path: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&[u8]>,
    ) -> bool {
        let json_holds = |rule: &Option<JsonSuccess>| {
            rule.as_ref()
                .is_none_or(|j| body.is_some_and(|b| j.holds(b)))
        };
        match self.api_login(path) {
            None => self.succeeded(status, headers) && json_holds(&self.json),
            Some(api) => {
                api.success_status.contains(&status.as_u16())
                    && api
                        .set_cookie
                        .as_deref()
                        .is_none_or(|name| sets_cookie(headers, name))
                    && json_holds(&api.json)
            }
        }
    }

    /// Must the answer of the login at `path` be read to judge it?
    pub fn judges_body(&self, path: &str) -> bool {
        match self.api_login(path) {
            None => self.json.is_some(),
            Some(api) => api.json.is_some(),
        }
    }

    pub fn is_logout(&self, path: &str) -> bool {
        self.logout_paths.iter().any(|p| segment_prefix(path, p))
    }

    /// Reachable without a session: the login page and its assets.
    pub fn is_anonymous(&self, path: &str) -> bool {
        self.anonymous_paths.iter().any(|p| segment_prefix(path, p))
    }

    /// Did the dashboard accept the password? Every configured condition must hold.
    pub fn succeeded(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        if !self.success_status.contains(&status.as_u16()) {
            return false;
        }
        if let Some(bad) = &self.location_not {
            let location = headers
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("");
            if location_path(location).starts_with(bad.as_str()) {
                return false;
            }
        }
        if let Some(name) = &self.set_cookie {
            if !sets_cookie(headers, name) {
                return false;
            }
        }
        true
    }
}

/// Case and a trailing slash are ignored (SECURITY-TESTS 33).
fn same_path(a: &str, b: &str) -> bool {
    let norm = |p: &str| p.trim_end_matches('/').to_ascii_lowercase();
    norm(a) == norm(b)
}

/// Does the answer set cookie `name` to a non-empty value?
fn sets_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split_once('=')
                .is_some_and(|(n, rest)| n.trim() == name && !rest.starts_with(';'))
        })
}

/// A prefix match on whole segments: "/static/" matches "/static/x";
/// "/login" matches "/login" and "/login/x" but not "/loginx".
pub fn segment_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix) || path == prefix.trim_end_matches('/')
    } else {
        path == prefix
            || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
    }
}

/// The path of a Location value (absolute URLs included).
fn location_path(location: &str) -> &str {
    match location.find("://") {
        Some(i) => {
            let rest = &location[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => location,
    }
}

/// Read a field from a login body: form-encoded, or JSON when the field is
/// a JSON pointer ("/user/name") or the body is JSON.
pub fn field(content_type: &str, body: &[u8], field: &str) -> Option<String> {
    let is_json = content_type.contains("json") || field.starts_with('/');
    if is_json {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let pointer = if field.starts_with('/') {
            field.to_string()
        } else {
            format!("/{field}")
        };
        return v.pointer(&pointer)?.as_str().map(str::to_string);
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.into_owned())
}

/// Usernames are compared trimmed and lower-cased everywhere. Control
/// characters and overlong names are refused (they would only serve log
/// injection or key bloat).
pub fn normalise_username(raw: &str) -> Option<String> {
    let u = raw.trim().to_lowercase();
    let ok = !u.is_empty() && u.len() <= MAX_USERNAME && !u.chars().any(char::is_control);
    ok.then_some(u)
}

/// The email domain of a username, for per-domain policy.
pub fn email_domain(user: &str) -> Option<&str> {
    user.rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

/// A return-to target made safe: a local absolute path, never `//host`,
/// `/\host`, a scheme, or anything with control characters or whitespace
/// tricks (SECURITY-TESTS 21). Anything else becomes "/".
pub fn safe_return_to(raw: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let candidates = [raw, decoded.as_ref()];
    // Visible ASCII only: anything else cannot go into a Location header
    // as it is, and must not be "fixed" into something else by a browser.
    let ok = raw.bytes().all(|b| (0x21..0x7f).contains(&b))
        && candidates.iter().all(|t| {
            t.starts_with('/')
                && !t.starts_with("//")
                && !t.starts_with("/\\")
                && !t.contains('\\')
                && !t
                    .chars()
                    .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
                && !t.contains("/./\\")
        })
        && raw.len() <= 2048;
    if ok {
        raw.to_string()
    } else {
        "/".to_string()
    }
}

/// A Location from the dashboard made local: same-host absolute URLs become
/// paths, anything off-site becomes "/".
pub fn local_location(location: &str, host: &str) -> String {
    use crate::gate::host_without_port;
    for scheme in ["https://", "http://"] {
        if let Some(rest) = location.strip_prefix(scheme) {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if host_without_port(authority) == host_without_port(host) {
                return safe_return_to(if path.is_empty() { "/" } else { path });
            }
            return "/".to_string();
        }
    }
    safe_return_to(location)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn dashboard_redirects_stay_on_this_host() {
        assert_eq!(
            local_location("https://pbx.example.com:8443/home", "pbx.example.com:8443"),
            "/home"
        );
        assert_eq!(
            local_location("https://evil.example/x", "pbx.example.com"),
            "/"
        );
        assert_eq!(local_location("//evil.example/x", "pbx.example.com"), "/");
        assert_eq!(local_location("/calls", "pbx.example.com"), "/calls");
    }

    fn settings() -> LoginSettings {
        LoginSettings {
            path: "/login".into(),
            username_field: "username".into(),
            fixed_username: None,
            password_field: "password".into(),
            success_status: vec![302, 303],
            location_not: Some("/login".into()),
            set_cookie: None,
            json: None,
            logout_paths: vec!["/logout".into()],
            anonymous_paths: vec!["/login".into(), "/static/".into()],
            session_cookies: vec![],
            api: vec![ApiLogin {
                path: "/api/login".into(),
                username_field: "/username".into(),
                success_status: vec![200],
                set_cookie: Some("PBXSESSID".into()),
                json: None,
            }],
        }
    }

    #[test]
    fn a_json_answer_succeeds_only_with_the_configured_value_at_the_pointer() {
        let mut s = settings();
        s.success_status = vec![200];
        s.location_not = None;
        s.json = Some(JsonSuccess {
            pointer: "/result/ok".into(),
            equals: serde_json::json!(true),
        });
        let h = HeaderMap::new();
        assert!(s.judges_body("/login"));
        assert!(!s.judges_body("/api/login"));
        let ok = |body: &[u8]| s.succeeded_at("/login", StatusCode::OK, &h, Some(body));
        assert!(ok(br#"{"result": {"ok": true}, "user": "a"}"#));
        for failure in [
            &br#"{"result": {"ok": false}}"#[..],
            br#"{"result": {"ok": "true"}}"#,
            br#"{"result": {}}"#,
            br#"{"ok": true}"#,
            b"<html>ok</html>",
            b"",
        ] {
            assert!(!ok(failure), "{}", String::from_utf8_lossy(failure));
        }
        assert!(!s.succeeded_at("/login", StatusCode::OK, &h, None));
        assert!(!s.succeeded_at(
            "/login",
            StatusCode::UNAUTHORIZED,
            &h,
            Some(br#"{"result": {"ok": true}}"#)
        ));
    }

    #[test]
    fn a_password_only_form_is_always_the_fixed_users_attempt() {
        let mut s = settings();
        s.fixed_username = Some("jupyter".into());
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            s.attempt_user("/login", form, b"password=x&username=mallory")
                .as_deref(),
            Some("jupyter"),
            "a username sent along must not pick another user's lockout and 2FA"
        );
        assert_eq!(
            s.attempt_user("/login", form, b"password=x").as_deref(),
            Some("jupyter")
        );
        // JSON logins keep naming their own users.
        assert_eq!(
            s.attempt_user("/api/login", "application/json", br#"{"username":"Bob"}"#)
                .as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn json_login_api_is_intercepted_and_judged_by_its_own_rule() {
        let s = settings();
        assert!(s.is_login(&Method::POST, "/API/login/"));
        assert_eq!(s.username_field_for("/api/login"), "/username");
        assert_eq!(s.username_field_for("/login"), "username");
        let mut h = HeaderMap::new();
        assert!(!s.succeeded_at("/api/login", StatusCode::OK, &h, None));
        h.insert(
            header::SET_COOKIE,
            "PBXSESSID=abc; HttpOnly".parse().expect("header"),
        );
        assert!(s.succeeded_at("/api/login", StatusCode::OK, &h, None));
        assert!(!s.succeeded_at("/api/login", StatusCode::UNAUTHORIZED, &h, None));
        assert!(!s.succeeded_at("/login", StatusCode::OK, &h, None));
    }

    #[test]
    fn login_variants_are_all_intercepted() {
        let s = settings();
        for p in ["/login", "/LOGIN", "/login/", "/Login/"] {
            assert!(s.is_login(&Method::POST, p), "{p}");
        }
        assert!(!s.is_login(&Method::GET, "/login"));
        assert!(!s.is_login(&Method::POST, "/loginx"));
    }

    #[test]
    fn success_needs_status_and_a_location_away_from_the_form() {
        let s = settings();
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("/"));
        assert!(s.succeeded(StatusCode::FOUND, &h));
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("https://pbx.example.com/login?err=1"),
        );
        assert!(!s.succeeded(StatusCode::FOUND, &h));
        assert!(!s.succeeded(StatusCode::OK, &HeaderMap::new()));
    }

    #[test]
    fn usernames_come_from_forms_and_json_pointers() {
        assert_eq!(
            field(
                "application/x-www-form-urlencoded",
                b"username=Alice%40Example.com&password=x",
                "username"
            )
            .as_deref(),
            Some("Alice@Example.com")
        );
        assert_eq!(
            field(
                "application/json",
                br#"{"user":{"name":"bob"}}"#,
                "/user/name"
            )
            .as_deref(),
            Some("bob")
        );
        assert_eq!(
            normalise_username("  Alice@Example.COM ").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(normalise_username("a\r\nb"), None);
    }

    #[test]
    fn return_to_only_allows_local_paths() {
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "/%09/evil.com",
            "/./\\evil.com",
            "https:evil.com",
            "https://dash.example.com@evil.com",
            "https://dash.example.com.evil.com",
            "javascript:alert(1)",
            "/%0d%0aSet-Cookie:%20x=y",
            "/%2F%2Fevil.com",
            "",
        ] {
            assert_eq!(safe_return_to(bad), "/", "{bad}");
        }
        assert_eq!(safe_return_to("/recordings/?page=2"), "/recordings/?page=2");
    }

    #[test]
    fn segment_prefixes_do_not_match_longer_names() {
        assert!(segment_prefix("/static/a.css", "/static/"));
        assert!(segment_prefix("/login", "/login"));
        assert!(!segment_prefix("/loginx", "/login"));
        assert!(!segment_prefix("/staticx", "/static/"));
    }
}
