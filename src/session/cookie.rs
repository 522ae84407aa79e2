//! gatehouse's own cookies. The session cookie is `__Host-` prefixed, so
//! browsers only accept it Secure, host-only and Path=/ — a sibling domain
//! cannot plant one (SECURITY-TESTS 30).

use http::header::{self, HeaderMap, HeaderValue};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

pub const SESSION_COOKIE: &str = "__Host-gatehouse";
pub const RETURN_COOKIE: &str = "__Host-gatehouse-return";
/// Every gatehouse cookie starts with this; none is ever forwarded upstream.
pub const OWN_PREFIX: &str = "__Host-gatehouse";

/// A session id: 256 random bits, base64url. Only its SHA-256 is stored, so
/// read access to the store does not hand out live sessions.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Self {
        use base64::Engine;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    }

    /// Accept only values of the exact shape we issue.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 43
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(text.to_string()))
    }

    /// The store key material: hex SHA-256 of the id.
    pub fn digest(&self) -> String {
        // Lowercase hex, as `hex::encode` writes it, into an array copied
        // once: pushed char by char into a String it cost about 750
        // instructions, and this runs on every request.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(self.0.as_bytes());
        let mut hex = [0u8; 64];
        for (pair, b) in hex.chunks_exact_mut(2).zip(digest) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0x0f)];
        }
        match std::str::from_utf8(&hex) {
            Ok(text) => text.to_owned(),
            // Never: the table is ASCII.
            Err(_) => hex::encode(digest),
        }
    }

    pub fn as_cookie_value(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(…)")
    }
}

/// A short, non-secret reference to a session for logs and admin views.
pub fn short_ref(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Why the request's cookies cannot be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CookieError {
    #[error("more than one gatehouse session cookie")]
    Duplicate,
}

/// The session id the browser sent: none, one, or an error for two (a planted
/// second cookie is a fixation attempt: refuse rather than guess).
pub fn read_session(headers: &HeaderMap) -> Result<Option<SessionId>, CookieError> {
    let mut found = None;
    for (name, value) in cookie_pairs(headers) {
        if name == SESSION_COOKIE {
            if found.is_some() {
                return Err(CookieError::Duplicate);
            }
            found = Some(SessionId::parse(value));
        }
    }
    Ok(found.flatten())
}

/// The return-to path stored before sign-in, if any.
pub fn read_return(headers: &HeaderMap) -> Option<String> {
    cookie_pairs(headers)
        .find(|(n, _)| *n == RETURN_COOKIE)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
}

fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// `Set-Cookie` for a session; `max_age: None` = ends with the browser.
pub fn set_session(id: &SessionId, max_age: Option<Duration>) -> HeaderValue {
    let age = max_age.map_or(String::new(), |d| format!("; Max-Age={}", d.as_secs()));
    header_value(&format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax{age}",
        id.as_cookie_value()
    ))
}

pub fn clear_session() -> HeaderValue {
    header_value(&format!(
        "{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
}

pub fn set_return(path: &str) -> HeaderValue {
    let enc = percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC);
    header_value(&format!(
        "{RETURN_COOKIE}={enc}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=900"
    ))
}

pub fn clear_return() -> HeaderValue {
    header_value(&format!(
        "{RETURN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
}

fn header_value(text: &str) -> HeaderValue {
    // Everything above is ASCII we built; the fallback is unreachable in practice.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_session_cookies_are_refused() {
        let id = SessionId::generate();
        let mut h = HeaderMap::new();
        let v = format!(
            "{SESSION_COOKIE}={}; {SESSION_COOKIE}={}",
            id.as_cookie_value(),
            id.as_cookie_value()
        );
        h.insert(header::COOKIE, HeaderValue::from_str(&v).expect("v"));
        assert_eq!(read_session(&h), Err(CookieError::Duplicate));
    }

    #[test]
    fn malformed_ids_are_ignored_and_debug_hides_the_id() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-gatehouse=short"),
        );
        assert_eq!(read_session(&h), Ok(None));
        let id = SessionId::generate();
        assert!(!format!("{id:?}").contains(id.as_cookie_value()));
        assert_eq!(id.digest().len(), 64);
        assert_eq!(
            id.digest(),
            hex::encode(Sha256::digest(id.as_cookie_value().as_bytes()))
        );
    }
}
