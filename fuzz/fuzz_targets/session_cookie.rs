//! gatehouse's own cookies (`session::cookie`): decoding the session id and
//! the return-to path from Cookie fields, and the return-to check.
//!
//! Input: the first line is a candidate id / return path; the other lines are
//! Cookie field values. Checked: an id is accepted only in the issued shape
//! and only when exactly one session cookie was sent; what gatehouse sets
//! (session id, return path) reads back unchanged; a planted second session
//! cookie is always refused; the return-to path used for redirects is local.
#![no_main]

use gatehouse::auth::login::safe_return_to;
use gatehouse::session::cookie::{
    read_return, read_session, set_return, set_session, CookieError, SESSION_COOKIE,
};
use gatehouse::session::SessionId;
use http::header::{HeaderMap, HeaderValue, COOKIE};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let candidate = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut headers = HeaderMap::new();
    for line in lines.take(16) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, value);
        }
    }

    // How many session cookies did the browser send? (Same pair syntax as the
    // decoder: `;`-separated, trimmed, `name=value`.)
    let sent: Vec<&str> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .filter(|(n, _)| n.trim() == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
        .collect();
    match read_session(&headers) {
        Err(CookieError::Duplicate) => assert!(sent.len() > 1, "duplicate of {sent:?}"),
        Ok(Some(id)) => {
            assert_eq!(sent, [id.as_cookie_value()]);
            assert_issued_shape(id.as_cookie_value());
            let digest = id.digest();
            assert_eq!(digest.len(), 64);
            assert!(digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        }
        Ok(None) => assert!(
            sent.len() <= 1 && sent.iter().all(|v| SessionId::parse(v).is_none()),
            "session cookie {sent:?} ignored"
        ),
    }

    // What gatehouse sets comes back unchanged, and a planted second one is refused.
    if let Some(id) = SessionId::parse(&candidate) {
        assert_issued_shape(&candidate);
        let set = set_session(&id, Some(Duration::from_secs(3600)));
        let mut echoed = HeaderMap::new();
        echoed.insert(COOKIE, as_cookie_field(&set));
        assert_eq!(read_session(&echoed), Ok(Some(id.clone())));
        let mut planted = headers.clone();
        planted.append(COOKIE, as_cookie_field(&set));
        match read_session(&planted) {
            Ok(Some(got)) => assert!(sent.is_empty() && got == id),
            Ok(None) => panic!("our own cookie was ignored next to {sent:?}"),
            Err(CookieError::Duplicate) => assert!(!sent.is_empty()),
        }
    } else {
        assert!(
            candidate.len() != 43
                || !candidate
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{candidate:?} has the issued shape but was refused"
        );
    }
    let set = set_return(&candidate);
    let mut echoed = HeaderMap::new();
    echoed.insert(COOKIE, as_cookie_field(&set));
    assert_eq!(read_return(&echoed).as_deref(), Some(candidate.as_str()));

    // The redirect after sign-in stays on this site, whatever the cookie says.
    if let Some(raw) = read_return(&headers) {
        let to = safe_return_to(&raw);
        assert!(to == "/" || to == raw, "{raw:?} -> {to:?}");
        let decoded = percent_decode(&to);
        for t in [to.as_str(), decoded.as_str()] {
            assert!(t.starts_with('/'), "{raw:?} -> {t:?}");
            assert!(
                !t.starts_with("//") && !t.starts_with("/\\"),
                "{raw:?} -> {t:?}"
            );
            assert!(!t.contains('\\'), "{raw:?} -> {t:?}");
            assert!(
                !t.chars().any(|c| c.is_control() || c.is_whitespace()),
                "{raw:?} -> {t:?}"
            );
        }
    }
});

fn assert_issued_shape(value: &str) {
    assert_eq!(value.len(), 43, "{value:?}");
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{value:?}"
    );
}

/// `name=value` of a Set-Cookie, as the browser sends it back.
fn as_cookie_field(set_cookie: &HeaderValue) -> HeaderValue {
    let text = set_cookie.to_str().expect("Set-Cookie we build is ASCII");
    let pair = text.split(';').next().unwrap_or_default();
    HeaderValue::from_str(pair).expect("a prefix of a valid value")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
