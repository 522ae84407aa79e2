//! Fetching for the probe: one HTTP/1.1 client (hyper + rustls, the stack the
//! gateway itself uses), bounded in time, size and redirects, that never
//! leaves the origin it was given.

use super::paths::Answer;
use super::{FetchedPage, ProbeError, ProbeOptions};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;
use url::Url;

const ACCEPT: &str = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1";
const USER_AGENT: &str = concat!("gatehouse-login-probe/", env!("CARGO_PKG_VERSION"));

pub(super) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
    max_body_bytes: usize,
    max_redirects: usize,
}

impl Fetcher {
    /// `https`: load trust roots (the CA file, else the system's).
    pub(super) fn new(options: &ProbeOptions, https: bool) -> Result<Self, ProbeError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(options, https)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            timeout: options.timeout,
            max_body_bytes: options.max_body_bytes,
            max_redirects: options.max_redirects,
        })
    }

    /// GET `start` and follow redirects within its origin to the page that
    /// finally answers; read that page (HTML only, size-capped). Cookies set
    /// along the way are sent on, as a browser would.
    pub(super) async fn login_page(&self, start: &Url) -> Result<FetchedPage, ProbeError> {
        let mut url = start.clone();
        let mut jar: Vec<(String, String)> = Vec::new();
        let mut http_only: Vec<String> = Vec::new();
        let mut gatehouse_cookie = false;
        let mut redirects = 0;
        loop {
            let cookie = jar
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let fetch = async {
                let resp = self.get(&url, &cookie).await?;
                gatehouse_cookie |= take_cookies(resp.headers(), &mut jar, &mut http_only);
                let status = resp.status();
                if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                    return Ok(Step::Redirect(
                        status,
                        resp.headers().get(header::LOCATION).cloned(),
                    ));
                }
                let typed = check_page(&url, status, resp.headers())?;
                let body = self.read_body(&url, resp).await?;
                Ok::<_, ProbeError>(Step::Page(status, typed, body))
            };
            let step = tokio::time::timeout(self.timeout, fetch)
                .await
                .map_err(|_| ProbeError::Timeout {
                    url: url.to_string(),
                    after: self.timeout,
                })??;
            match step {
                Step::Page(status, typed, body) => {
                    let html = String::from_utf8_lossy(&body).into_owned();
                    if !typed && !starts_like_html(&html) {
                        return Err(ProbeError::NotHtml {
                            url: url.to_string(),
                            content_type: "none (and the body is not HTML)".into(),
                        });
                    }
                    return Ok(FetchedPage {
                        requested: start.clone(),
                        url,
                        status: status.as_u16(),
                        redirects,
                        http_only_cookies: http_only,
                        answered_by_gatehouse: gatehouse_cookie,
                        html,
                    });
                }
                Step::Redirect(status, location) => {
                    let next = location
                        .as_ref()
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| url.join(l.trim()).ok())
                        .ok_or_else(|| ProbeError::Status {
                            url: url.to_string(),
                            status: format!("{status} without a usable Location"),
                        })?;
                    if next.origin() != url.origin() {
                        return Err(ProbeError::OffOriginRedirect {
                            from: url.to_string(),
                            to: next.to_string(),
                        });
                    }
                    if redirects == self.max_redirects {
                        return Err(ProbeError::TooManyRedirects {
                            url: start.to_string(),
                            max: self.max_redirects,
                        });
                    }
                    redirects += 1;
                    url = next;
                }
            }
        }
    }

    /// One GET without cookies or redirects: how the dashboard answers a
    /// browser without a session. The body is not read.
    pub(super) async fn answer(&self, url: &Url) -> Result<Answer, ProbeError> {
        let resp = tokio::time::timeout(self.timeout, self.get(url, ""))
            .await
            .map_err(|_| ProbeError::Timeout {
                url: url.to_string(),
                after: self.timeout,
            })??;
        Ok(Answer {
            status: resp.status().as_u16(),
            location: resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string),
        })
    }

    async fn get(&self, url: &Url, cookie: &str) -> Result<Response<Incoming>, ProbeError> {
        let mut target = url.clone();
        target.set_fragment(None);
        let invalid = |reason: String| ProbeError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let uri: http::Uri = target
            .as_str()
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        let mut req = Request::get(uri)
            .header(header::ACCEPT, ACCEPT)
            .header(header::USER_AGENT, USER_AGENT)
            .body(Empty::new())
            .map_err(|e| invalid(e.to_string()))?;
        if !cookie.is_empty() {
            if let Ok(v) = HeaderValue::from_str(cookie) {
                req.headers_mut().insert(header::COOKIE, v);
            }
        }
        self.client
            .request(req)
            .await
            .map_err(|e| classify(url, &e))
    }

    async fn read_body(&self, url: &Url, resp: Response<Incoming>) -> Result<Bytes, ProbeError> {
        let too_large = || ProbeError::TooLarge {
            url: url.to_string(),
            limit: self.max_body_bytes,
        };
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(too_large());
        }
        match Limited::new(resp.into_body(), self.max_body_bytes)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(ProbeError::Http {
                url: url.to_string(),
                reason: error_chain(e.as_ref()),
            }),
        }
    }
}

enum Step {
    Redirect(StatusCode, Option<HeaderValue>),
    /// Status, whether Content-Type said HTML, body.
    Page(StatusCode, bool, Bytes),
}

/// The final answer must be the page itself: a success, or a 401/403 that
/// some dashboards send with their login form. Anything but HTML is refused
/// before its body is read. `Ok(false)`: untyped, to be judged by its body.
fn check_page(url: &Url, status: StatusCode, headers: &HeaderMap) -> Result<bool, ProbeError> {
    let form_with_refusal = matches!(status.as_u16(), 401 | 403);
    if !status.is_success() && !form_with_refusal {
        return Err(ProbeError::Status {
            url: url.to_string(),
            status: status.to_string(),
        });
    }
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(false);
    };
    let text = content_type.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "text/html" || essence == "application/xhtml+xml" {
        Ok(true)
    } else {
        Err(ProbeError::NotHtml {
            url: url.to_string(),
            content_type: format!("{text:?}"),
        })
    }
}

/// An answer without Content-Type counts as HTML when it starts with markup
/// (old dashboards' CGI scripts often send no type at all).
fn starts_like_html(body: &str) -> bool {
    body.trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('<')
}

/// Remember cookies for the next request of the redirect chain, and the
/// names of HttpOnly ones (the dashboard's pre-login session cookies).
/// gatehouse's own cookies are not the dashboard's: true when one was set
/// (the URL given is a gateway's, not the dashboard's).
fn take_cookies(
    headers: &HeaderMap,
    jar: &mut Vec<(String, String)>,
    http_only: &mut Vec<String>,
) -> bool {
    let mut gatehouse_cookie = false;
    for value in headers.get_all(header::SET_COOKIE) {
        let Some(c) = value
            .to_str()
            .ok()
            .and_then(|s| cookie::Cookie::parse(s.to_string()).ok())
        else {
            continue;
        };
        let name = c.name().to_string();
        if name.starts_with(crate::session::cookie::OWN_PREFIX) {
            gatehouse_cookie = true;
            continue;
        }
        jar.retain(|(n, _)| *n != name);
        let deleted =
            c.value().is_empty() || c.max_age().is_some_and(|age| age.whole_seconds() <= 0);
        if deleted {
            http_only.retain(|n| *n != name);
            continue;
        }
        jar.push((name.clone(), c.value().to_string()));
        if c.http_only() == Some(true) && !http_only.contains(&name) {
            http_only.push(name);
        }
    }
    gatehouse_cookie
}

/// Put a client error into words: TLS, connection, or protocol.
fn classify(url: &Url, e: &hyper_util::client::legacy::Error) -> ProbeError {
    let authority = format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    );
    if let Some(tls) = find_tls_error(e) {
        let hint = matches!(tls, rustls::Error::InvalidCertificate(_))
            .then_some(" (a certificate from a private CA? pass the CA with --ca-file)")
            .unwrap_or("");
        return ProbeError::Tls {
            authority,
            reason: format!("{tls}{hint}"),
        };
    }
    if e.is_connect() {
        // Past hyper's own "client error (Connect)": the reason itself.
        let reason = std::error::Error::source(e).map_or_else(|| e.to_string(), error_chain);
        return ProbeError::Unreachable { authority, reason };
    }
    ProbeError::Http {
        url: url.to_string(),
        reason: error_chain(e),
    }
}

/// rustls reports handshake failures inside an `io::Error` (hyper-rustls
/// wraps that in another one), and `io::Error::source()` skips the error it
/// wraps: look inside both ways.
fn find_tls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(tls) = find_tls_error(inner) {
            return Some(tls);
        }
    }
    e.source().and_then(find_tls_error)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cur = s.source();
    }
    text
}

/// Trust: the CA file given, else the system's roots (only needed for https).
fn tls_config(options: &ProbeOptions, https: bool) -> Result<rustls::ClientConfig, ProbeError> {
    crate::tls::client_config(options.ca_file.as_deref(), https).map_err(|reason| {
        ProbeError::CaFile {
            path: options.ca_file.as_ref().map_or_else(
                || "(the system's trust store)".to_string(),
                |p| p.display().to_string(),
            ),
            reason,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_html_answers_are_login_pages() {
        let url = Url::parse("http://pbx.test/login").expect("url");
        let typed = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(t).expect("value"),
            );
            h
        };
        assert!(check_page(&url, StatusCode::OK, &typed("text/html; charset=utf-8")).is_ok());
        assert!(check_page(&url, StatusCode::OK, &typed("application/xhtml+xml")).is_ok());
        assert!(check_page(&url, StatusCode::UNAUTHORIZED, &typed("text/html")).is_ok());
        assert!(matches!(
            check_page(&url, StatusCode::OK, &typed("application/json")),
            Err(ProbeError::NotHtml { .. })
        ));
        assert!(matches!(
            check_page(&url, StatusCode::NOT_FOUND, &typed("text/html")),
            Err(ProbeError::Status { .. })
        ));
        assert!(matches!(
            check_page(&url, StatusCode::OK, &HeaderMap::new()),
            Ok(false)
        ));
        assert!(starts_like_html("\u{feff}\n <!DOCTYPE html><html>"));
        assert!(!starts_like_html("{\"login\": true}"));
    }

    #[test]
    fn cookies_along_the_chain_are_kept_and_http_only_names_noted() {
        let mut h = HeaderMap::new();
        for c in [
            "PHPSESSID=abc; Path=/; HttpOnly",
            "theme=dark; Path=/",
            "old=; Max-Age=0; HttpOnly",
            "__Host-gatehouse-return=%2F; Path=/; Secure; HttpOnly",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(c));
        }
        let (mut jar, mut names) = (Vec::new(), Vec::new());
        assert!(
            take_cookies(&h, &mut jar, &mut names),
            "gatehouse's own cookie"
        );
        assert_eq!(names, ["PHPSESSID"]);
        assert_eq!(jar.len(), 2);
    }
}
