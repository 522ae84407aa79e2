//! gatehouse's own pages: server-rendered, compiled in, every dynamic value
//! escaped, no JavaScript needed. `pages` renders and never decides.

pub mod admin;
pub mod password;
pub mod qr;
pub mod two_factor;

use crate::proxy::{full, Body};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const STYLE: &str = include_str!("style.css");

/// The stylesheet is inlined and allowed by its hash, so the strict CSP needs
/// neither 'unsafe-inline' nor a second request.
static CSP: LazyLock<String> = LazyLock::new(|| {
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// Escape text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body_html` (which must already be escaped).
pub fn layout(brand: &str, title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{title} · {brand}</title><style>{STYLE}</style></head>\
         <body><main><header>{brand}</header><h1>{title}</h1>{body_html}</main></body></html>",
        title = esc(title),
        brand = esc(brand),
    )
}

/// An HTML response with the headers every gatehouse page carries.
pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut resp = Response::new(full(page));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&CSP) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// What an error page says: what happened, what the user can do, and a
/// reference id support can find in the logs. Never internal details.
pub struct ErrorPage<'a> {
    pub status: StatusCode,
    pub title: &'a str,
    pub message: &'a str,
    pub advice: &'a str,
    pub reference: Option<&'a str>,
}

pub fn error(brand: &str, page: ErrorPage<'_>) -> Response<Body> {
    let reference = page
        .reference
        .map(|r| {
            format!(
                "<p class=\"ref\">Reference: <span class=\"mono\">{}</span></p>",
                esc(r)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<p>{}</p><p>{}</p>{reference}",
        esc(page.message),
        esc(page.advice)
    );
    html(page.status, layout(brand, page.title, &body))
}

/// Too many failed sign-ins. Deliberately identical for every username,
/// known or not, locked or throttled (SECURITY-TESTS 37).
pub fn locked(brand: &str) -> Response<Body> {
    error(
        brand,
        ErrorPage {
            status: StatusCode::TOO_MANY_REQUESTS,
            title: "Sign-in temporarily locked",
            message: "There were too many failed sign-in attempts.",
            advice: "Wait a while before trying again, or ask your administrator to unlock your account.",
            reference: None,
        },
    )
}

/// Why the browser was signed out, with a way back in.
pub fn signed_out(brand: &str, why: SignedOut, sign_in: &str) -> Response<Body> {
    let (title, message) = match why {
        SignedOut::Expired => (
            "Your session expired",
            "For your security you were signed out after a period of time.",
        ),
        SignedOut::Elsewhere => (
            "You signed in elsewhere",
            "Your account was signed in from another browser or device, so this session was closed.",
        ),
        SignedOut::Ended => (
            "You were signed out",
            "Your session was ended by an administrator or from another device.",
        ),
    };
    let body = format!(
        "<p>{}</p><p><a href=\"{}\">Sign in again</a> to continue where you were.</p>",
        esc(message),
        esc(sign_in)
    );
    html(StatusCode::UNAUTHORIZED, layout(brand, title, &body))
}

/// What a signed-out page explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedOut {
    Expired,
    Elsewhere,
    Ended,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
