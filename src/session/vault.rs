//! The cookie vault: the dashboard's HttpOnly cookies stay on the server,
//! inside the gatehouse session, and are added to forwarded requests only
//! while that session is usable. So the dashboard's session lives exactly as
//! long as gatehouse's, and ending a gatehouse session really ends access.

use http::header::{self, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::RwLock;

/// Cookies held for one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vault {
    cookies: Vec<VaultCookie>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct VaultCookie {
    pub(super) name: String,
    pub(super) value: String,
    pub(super) path: String,
    pub(super) expires_ms: Option<u64>,
}

/// Most cookies one session may hold: a dashboard setting hundreds would
/// otherwise grow every session record without bound.
const MAX_COOKIES: usize = 50;

impl Vault {
    /// The cookies as stored (for the record codec).
    pub(super) fn cookies(&self) -> &[VaultCookie] {
        &self.cookies
    }

    pub(super) fn from_cookies(cookies: Vec<VaultCookie>) -> Self {
        Self { cookies }
    }

    /// Move every HttpOnly `Set-Cookie` of an upstream response into the vault
    /// (honouring Path, Max-Age/Expires and deletion); the browser keeps
    /// receiving cookies JavaScript may read. Returns the names vaulted, and
    /// whether the vault changed.
    pub fn absorb(
        &mut self,
        headers: &mut HeaderMap,
        request_path: &str,
        now_ms: u64,
    ) -> (Vec<String>, bool) {
        let mut keep = Vec::new();
        let mut vaulted = Vec::new();
        let mut changed = false;
        for value in headers.get_all(header::SET_COOKIE) {
            let parsed = value
                .to_str()
                .ok()
                .and_then(|s| cookie::Cookie::parse(s.to_string()).ok());
            let Some(c) = parsed.filter(|c| c.http_only() == Some(true)) else {
                keep.push(value.clone());
                continue;
            };
            vaulted.push(c.name().to_string());
            let path = c
                .path()
                .filter(|p| p.starts_with('/'))
                .map_or_else(|| default_path(request_path), str::to_string);
            let expires_ms = expiry_ms(&c, now_ms);
            let gone = expires_ms.is_some_and(|e| e <= now_ms);
            let before = self.cookies.len();
            self.cookies
                .retain(|v| !(v.name == c.name() && v.path == path));
            changed |= self.cookies.len() != before;
            if !gone && self.cookies.len() < MAX_COOKIES {
                self.cookies.push(VaultCookie {
                    name: c.name().to_string(),
                    value: c.value().to_string(),
                    path,
                    expires_ms,
                });
                changed = true;
            }
        }
        if !vaulted.is_empty() {
            headers.remove(header::SET_COOKIE);
            for v in keep {
                headers.append(header::SET_COOKIE, v);
            }
        }
        (vaulted, changed)
    }

    /// `name=value` pairs to send upstream for `path` (RFC 6265 §5.1.4 path
    /// match), skipping expired cookies.
    pub fn pairs_for(&self, path: &str, now_ms: u64) -> Vec<(&str, &str)> {
        self.cookies
            .iter()
            .filter(|c| c.expires_ms.is_none_or(|e| e > now_ms))
            .filter(|c| path_matches(path, &c.path))
            .map(|c| (c.name.as_str(), c.value.as_str()))
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.cookies.iter().map(|c| c.name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// Carry cookies over into a new session (sign-in keeps what the login
    /// page set, then adds what the login answer set).
    pub fn merged(mut self, newer: Vault) -> Vault {
        for c in newer.cookies {
            self.cookies
                .retain(|v| !(v.name == c.name && v.path == c.path));
            self.cookies.push(c);
        }
        // The cap holds for merged vaults too; otherwise a vault over it could
        // never take a new value again (`absorb` would drop every update).
        // The newer cookies sit at the end and are the ones kept.
        let excess = self.cookies.len().saturating_sub(MAX_COOKIES);
        self.cookies.drain(..excess);
        self
    }
}

/// Every cookie name that must never come from a browser: configured names
/// plus every name the dashboard was ever seen to set HttpOnly.
#[derive(Debug, Default)]
pub struct VaultedNames {
    names: RwLock<HashSet<String>>,
}

impl VaultedNames {
    pub fn new(configured: &[String]) -> Self {
        Self {
            names: RwLock::new(configured.iter().cloned().collect()),
        }
    }

    pub fn learn<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let new: Vec<&str> = {
            let known = self.names.read().unwrap_or_else(|p| p.into_inner());
            names.into_iter().filter(|n| !known.contains(*n)).collect()
        };
        if !new.is_empty() {
            let mut known = self.names.write().unwrap_or_else(|p| p.into_inner());
            known.extend(new.into_iter().map(str::to_string));
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}

/// Rebuild the request's Cookie header for the upstream: drop gatehouse's own
/// cookies and every vaulted name the browser sent (a forged or stale
/// dashboard session must not ride along), then add the vault's cookies.
pub fn rewrite_request_cookies(
    headers: &mut HeaderMap,
    own_prefix: &str,
    is_vaulted: &dyn Fn(&str) -> bool,
    inject: &[(&str, &str)],
) {
    // One string, built in place: this runs on every forwarded request.
    let mut out = String::new();
    let add = |pair: &str, out: &mut String| {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(pair);
    };
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
            if name.starts_with(own_prefix) || is_vaulted(name) {
                continue;
            }
            add(pair, &mut out);
        }
    }
    for (n, v) in inject {
        add(n, &mut out);
        out.push('=');
        out.push_str(v);
    }
    headers.remove(header::COOKIE);
    if !out.is_empty() {
        if let Ok(v) = HeaderValue::try_from(out) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// RFC 6265 §5.1.4.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request.as_bytes().get(cookie.len()) == Some(&b'/')))
}

/// RFC 6265 §5.1.4 default-path: the request path up to its last '/'.
fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => request_path[..i].to_string(),
    }
}

fn expiry_ms(c: &cookie::Cookie<'_>, now_ms: u64) -> Option<u64> {
    if let Some(age) = c.max_age() {
        let secs = age.whole_seconds();
        return Some(if secs <= 0 {
            0
        } else {
            // Saturating: `Max-Age=18446744073709552` would otherwise wrap
            // to a few milliseconds (and an empty Max-Age parses as i64::MAX).
            now_ms.saturating_add((secs as u64).saturating_mul(1000))
        });
    }
    c.expires_datetime().map(|t| {
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(ms).unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::SET_COOKIE, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn http_only_cookies_are_vaulted_and_readable_ones_pass() {
        let mut v = Vault::default();
        let mut h = set_cookies(&["PBXSESSID=abc; Path=/; HttpOnly", "pbx_lang=en; Path=/"]);
        let (names, changed) = v.absorb(&mut h, "/login", 0);
        assert!(changed);
        assert_eq!(names, vec!["PBXSESSID"]);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, vec!["pbx_lang=en; Path=/"]);
        assert_eq!(v.pairs_for("/recordings/", 0), vec![("PBXSESSID", "abc")]);
    }

    #[test]
    fn path_expiry_and_deletion_are_honoured() {
        let mut v = Vault::default();
        let mut h = set_cookies(&[
            "A=1; Path=/admin; HttpOnly",
            "B=2; Max-Age=10; HttpOnly; Path=/",
        ]);
        v.absorb(&mut h, "/", 1_000);
        assert_eq!(v.pairs_for("/", 1_000), vec![("B", "2")]);
        assert_eq!(v.pairs_for("/admin/x", 1_000), vec![("A", "1"), ("B", "2")]);
        assert_eq!(v.pairs_for("/adminx", 1_000), vec![("B", "2")]);
        assert_eq!(v.pairs_for("/", 11_000), vec![]);
        let mut del = set_cookies(&["A=; Path=/admin; Max-Age=0; HttpOnly"]);
        v.absorb(&mut del, "/", 2_000);
        assert_eq!(v.pairs_for("/admin/x", 2_000), vec![("B", "2")]);
    }

    #[test]
    fn huge_max_age_keeps_the_cookie_instead_of_overflowing() {
        // Found by the vault_merge fuzz target: seconds * 1000 overflowed
        // (a panic in debug builds, an expiry a few ms away in release).
        let mut v = Vault::default();
        let mut h = set_cookies(&[
            "A=1; Path=/; HttpOnly; Max-Age=18446744073709552",
            "B=2; Path=/; HttpOnly; Max-Age=",
        ]);
        v.absorb(&mut h, "/", 1_000);
        let hour_later = 1_000 + 3_600_000;
        assert_eq!(v.pairs_for("/", hour_later), vec![("A", "1"), ("B", "2")]);
    }

    #[test]
    fn merged_vault_keeps_the_cap_and_every_newer_cookie() {
        // Found by the vault_merge fuzz target: 30 + 30 cookies merged into 60.
        let fill = |prefix: &str| {
            let values: Vec<String> = (0..30)
                .map(|i| format!("{prefix}{i}=1; Path=/; HttpOnly"))
                .collect();
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let mut v = Vault::default();
            v.absorb(&mut set_cookies(&values), "/", 0);
            v
        };
        let merged = fill("old").merged(fill("new"));
        assert_eq!(merged.names().count(), MAX_COOKIES);
        assert_eq!(merged.names().filter(|n| n.starts_with("new")).count(), 30);
    }

    #[test]
    fn forged_vaulted_names_and_gatehouse_cookies_never_reach_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-gatehouse=s; PBXSESSID=forged; pbx_lang=en"),
        );
        rewrite_request_cookies(
            &mut h,
            "__Host-gatehouse",
            &|n| n == "PBXSESSID",
            &[("PBXSESSID", "real")],
        );
        assert_eq!(
            h.get(header::COOKIE).expect("cookie"),
            "pbx_lang=en; PBXSESSID=real"
        );
    }
}
