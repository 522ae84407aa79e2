//! The cookie vault (`session::vault`): absorbing the dashboard's Set-Cookie
//! fields, merging the login page's vault into the signed-in session's, and
//! rebuilding the Cookie field sent upstream.
//!
//! Input: two responses and one request, separated by lines `--`. Each
//! response is its request path (normalised, as the gate does), then Set-Cookie values; the request is
//! Cookie values. Checked: a vault never holds two cookies of one name and
//! path, nor more than its cap; no HttpOnly cookie reaches the browser; the
//! last value set wins; a merge keeps every newer cookie and every older one
//! not replaced; upstream never receives gatehouse's cookies or a vaulted name
//! from the browser, only the vault's own values.
#![no_main]

use gatehouse::access::normalise;
use gatehouse::session::cookie::OWN_PREFIX;
use gatehouse::session::vault::{rewrite_request_cookies, Vault};
use http::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

/// `vault::MAX_COOKIES`.
const MAX_COOKIES: usize = 50;
const NOW_MS: u64 = 1_800_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    name: String,
    value: String,
    path: String,
    expires_ms: Option<u64>,
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut sections = text.split("\n--\n");
    let (older, _) = absorbed(sections.next().unwrap_or_default());
    let (newer, newer_path) = absorbed(sections.next().unwrap_or_default());

    let merged = older.clone().merged(newer.clone());
    let (old_held, new_held, merged_held) = (held(&older), held(&newer), held(&merged));
    check_vault(&merged_held, "merged");
    for c in &new_held {
        assert!(merged_held.contains(c), "merge lost newer {c:?}");
    }
    for c in &old_held {
        let replaced = new_held
            .iter()
            .any(|n| n.name == c.name && n.path == c.path);
        assert!(
            replaced || merged_held.contains(c) || merged_held.len() == MAX_COOKIES,
            "merge lost older {c:?}"
        );
    }

    // The request upstream for the newer response's path.
    let mut headers = HeaderMap::new();
    for line in sections.next().unwrap_or_default().lines().take(16) {
        if let Ok(v) = HeaderValue::from_str(line) {
            headers.append(COOKIE, v);
        }
    }
    let inject = merged.pairs_for(&newer_path, NOW_MS);
    for (name, value) in &inject {
        assert!(
            merged_held.iter().any(|c| c.name == *name
                && c.value == *value
                && c.expires_ms.is_none_or(|e| e > NOW_MS)),
            "injected {name}={value} is not a live vault cookie"
        );
    }
    let vaulted: HashSet<String> = merged.names().map(str::to_string).collect();
    rewrite_request_cookies(&mut headers, OWN_PREFIX, &|n| vaulted.contains(n), &inject);
    let sent: Vec<&HeaderValue> = headers.get_all(COOKIE).iter().collect();
    assert!(sent.len() <= 1, "several Cookie fields upstream");
    let Some(sent) = sent.first() else {
        return;
    };
    let sent = sent.to_str().expect("visible ASCII in, visible ASCII out");
    let pairs: Vec<&str> = sent.split(';').map(str::trim).collect();
    assert!(pairs.len() >= inject.len(), "{sent:?}");
    let (browser, ours) = pairs.split_at(pairs.len() - inject.len());
    for (got, (name, value)) in ours.iter().zip(&inject) {
        assert_eq!(*got, format!("{name}={value}").trim(), "{sent:?}");
    }
    for pair in browser {
        let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
        assert!(
            !name.starts_with(OWN_PREFIX),
            "gatehouse cookie upstream: {sent:?}"
        );
        assert!(
            !vaulted.contains(name),
            "browser's {name} upstream: {sent:?}"
        );
    }
});

/// A vault filled from one response section; returns it and the request path.
fn absorbed(section: &str) -> (Vault, String) {
    let mut lines = section.lines();
    // The gate hands the vault the normalised request path.
    let path = normalise(lines.next().unwrap_or("/"))
        .map_or_else(|_| "/".to_string(), |p| p.into_string());
    let mut headers = HeaderMap::new();
    for line in lines.take(120) {
        if let Ok(v) = HeaderValue::from_str(line) {
            headers.append(SET_COOKIE, v);
        }
    }
    let set: Vec<cookie::Cookie<'static>> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| cookie::Cookie::parse(v.to_str().ok()?.to_string()).ok())
        .collect();
    let http_only = set.iter().filter(|c| c.http_only() == Some(true)).count();

    let mut vault = Vault::default();
    let (names, _) = vault.absorb(&mut headers, &path, NOW_MS);
    assert_eq!(names.len(), http_only, "vaulted names");
    for left in headers.get_all(SET_COOKIE) {
        let c = left
            .to_str()
            .ok()
            .and_then(|s| cookie::Cookie::parse(s).ok());
        assert!(
            c.is_none_or(|c| c.http_only() != Some(true)),
            "HttpOnly cookie left for the browser: {left:?}"
        );
    }
    let held_now = held(&vault);
    check_vault(&held_now, "absorbed");
    // The last Set-Cookie of a name wins (paths as the vault resolved them).
    for c in &held_now {
        let last = set
            .iter()
            .filter(|s| s.http_only() == Some(true) && s.name() == c.name)
            .filter(|s| match s.path() {
                Some(p) if p.starts_with('/') => p == c.path,
                _ => true,
            })
            .next_back()
            .expect("a held cookie was set");
        if last.path().is_some_and(|p| p == c.path) {
            assert_eq!(last.value(), c.value, "{c:?} is not the last value set");
        }
    }
    (vault, path)
}

fn check_vault(cookies: &[Held], what: &str) {
    assert!(
        cookies.len() <= MAX_COOKIES,
        "{what} vault holds {}",
        cookies.len()
    );
    let mut seen = HashSet::new();
    for c in cookies {
        assert!(c.path.starts_with('/'), "{what}: {c:?}");
        assert!(
            seen.insert((c.name.as_str(), c.path.as_str())),
            "{what} vault holds {} for {} twice",
            c.name,
            c.path
        );
    }
}

/// The vault's cookies, read through its serialised form (the fields are private).
fn held(vault: &Vault) -> Vec<Held> {
    let json = serde_json::to_value(vault).expect("a vault serialises");
    json["cookies"]
        .as_array()
        .expect("cookies array")
        .iter()
        .map(|c| Held {
            name: c["name"].as_str().expect("name").to_string(),
            value: c["value"].as_str().expect("value").to_string(),
            path: c["path"].as_str().expect("path").to_string(),
            expires_ms: c["expires_ms"].as_u64(),
        })
        .collect()
}
