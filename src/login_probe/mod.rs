//! `gatehouse login-probe URL`: fetch a dashboard's login page and guess the
//! `[login]` section that lets gatehouse watch it — form action, field names,
//! success signal, logout path, the paths a signed-out browser needs — as a
//! TOML fragment with a comment on each guess.
//!
//! The probe only reads: it GETs the page (following redirects within the
//! origin given), then GETs a few logout candidates without any cookie, so
//! nobody can be logged out by it. It never submits the form.

mod fetch;
pub mod page;
pub mod paths;
mod render;

pub use page::{read_login_page, LoginForm, LoginPage, NotAFormLogin, UsernameHint};
pub use paths::{AnonymousPaths, Answer, LogoutFinding};

use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// How the probe fetches.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// PEM file of the CA(s) that sign the dashboard's certificate; absent =
    /// the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// Longest wait to connect, and for each request from sending it to the
    /// last byte of its body.
    pub timeout: Duration,
    /// Largest login page read.
    pub max_body_bytes: usize,
    /// Most redirects followed from the URL given to the login page.
    pub max_redirects: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            ca_file: None,
            timeout: Duration::from_secs(10),
            max_body_bytes: 2 * 1024 * 1024,
            max_redirects: 10,
        }
    }
}

/// Why there is no `[login]` section to print.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url:?} is not a URL to probe: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot connect to {authority}: {reason}")]
    Unreachable { authority: String, reason: String },
    #[error("TLS handshake with {authority} failed: {reason}")]
    Tls { authority: String, reason: String },
    #[error("{url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{from} redirects to {to}, another origin (scheme, host and port): gatehouse fronts one origin; if that one is the dashboard, probe it directly")]
    OffOriginRedirect { from: String, to: String },
    #[error("{url} redirects more than {max} times")]
    TooManyRedirects { url: String, max: usize },
    #[error("{url} answered {status}")]
    Status { url: String, status: String },
    #[error("{url} is not an HTML page (Content-Type {content_type})")]
    NotHtml { url: String, content_type: String },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("no login form on {url}: {reason}")]
    NotAFormLogin { url: String, reason: NotAFormLogin },
    #[error("the login page {url} has a path gatehouse refuses to forward ({reason})")]
    UnusablePagePath { url: String, reason: String },
}

impl ProbeError {
    /// 1: a page was found but it is not a form login gatehouse can watch;
    /// 2: the page could not be probed at all.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotAFormLogin { .. } | Self::UnusablePagePath { .. } => 1,
            _ => 2,
        }
    }

    /// For a page that is not a form login: comment lines for the output
    /// saying so, and what the operator can do instead.
    pub fn advice(&self) -> Option<String> {
        match self {
            Self::NotAFormLogin { url, reason } => Some(render::not_a_form_login(url, reason)),
            _ => None,
        }
    }
}

/// The login page as fetched.
#[derive(Debug, Clone)]
pub struct FetchedPage {
    /// The URL the operator gave.
    pub requested: Url,
    /// Where the redirects led: the login page.
    pub url: Url,
    pub status: u16,
    pub redirects: usize,
    /// Names of HttpOnly cookies set on the way to and by the login page.
    pub http_only_cookies: Vec<String>,
    /// A gatehouse answered (it set its own cookie): the URL given is a
    /// gateway in front of the dashboard, not the dashboard itself.
    pub answered_by_gatehouse: bool,
    pub html: String,
}

/// Everything the probe found: what `[login]` should say and why.
#[derive(Debug, Clone)]
pub struct LoginGuess {
    pub fetched: FetchedPage,
    /// The login page's path in normal spelling (where the form lives).
    pub page_path: String,
    pub page: LoginPage,
    pub anonymous: AnonymousPaths,
    /// `Missing` until [`probe`] has tried the candidates.
    pub logout: LogoutFinding,
}

impl LoginGuess {
    /// Read a fetched login page (no network).
    pub fn from_page(fetched: FetchedPage) -> Result<Self, ProbeError> {
        let page = read_login_page(&fetched.html, &fetched.url).map_err(|reason| {
            ProbeError::NotAFormLogin {
                url: fetched.url.to_string(),
                reason,
            }
        })?;
        let page_path = crate::access::normalise(fetched.url.path())
            .map_err(|e| ProbeError::UnusablePagePath {
                url: fetched.url.to_string(),
                reason: e.to_string(),
            })?
            .into_string();
        let anonymous = paths::anonymous_paths(&page_path, &page.assets);
        Ok(Self {
            fetched,
            page_path,
            page,
            anonymous,
            logout: LogoutFinding::Missing { tried: Vec::new() },
        })
    }

    /// Where to look for the logout, most likely first.
    pub fn logout_candidates(&self) -> Vec<String> {
        paths::logout_candidates(&[&self.page.form.path, &self.page_path])
    }

    /// The `[login]` and `[login.success]` sections, commented.
    pub fn to_toml(&self) -> String {
        render::login_section(self)
    }
}

/// Probe the dashboard at `url` (its login page, or a page that redirects
/// there).
pub async fn probe(url: &str, options: &ProbeOptions) -> Result<LoginGuess, ProbeError> {
    let start = start_url(url)?;
    let fetcher = fetch::Fetcher::new(options, start.scheme() == "https")?;
    let fetched = fetcher.login_page(&start).await?;
    let mut guess = LoginGuess::from_page(fetched)?;
    guess.logout = find_logout(&fetcher, &guess).await;
    Ok(guess)
}

fn start_url(text: &str) -> Result<Url, ProbeError> {
    let invalid = |reason: &str| ProbeError::InvalidUrl {
        url: text.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(text.trim()).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            invalid("give the whole URL, e.g. https://pbx.example.com/")
        }
        e => invalid(&e.to_string()),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid("only http:// and https:// URLs with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials in the URL are not sent; the probe needs none",
        ));
    }
    Ok(url)
}

/// GET each candidate without cookies: a 404 means absent, anything else
/// (a 405 too: POST-only) present — unless a made-up path next to it gets
/// the same answer, as on dashboards that send every unknown path to their
/// login; then it stays unconfirmed and the next candidate is tried.
async fn find_logout(fetcher: &fetch::Fetcher, guess: &LoginGuess) -> LogoutFinding {
    use rand::RngCore;
    let mut raw = [0u8; 6];
    rand::rng().fill_bytes(&mut raw);
    let nonce = hex::encode(raw);
    let origin = &guess.fetched.url;
    let candidates = guess.logout_candidates();
    let mut made_up_answers: Vec<(String, Option<Answer>)> = Vec::new();
    let mut unconfirmed = None;
    for candidate in &candidates {
        let Ok(url) = origin.join(candidate) else {
            continue;
        };
        let Ok(answer) = fetcher.answer(&url).await else {
            continue;
        };
        if answer.status == 404 {
            continue;
        }
        let made_up = paths::made_up_sibling(candidate, &nonce);
        let made_up_answer = match made_up_answers.iter().find(|(p, _)| *p == made_up) {
            Some((_, a)) => a.clone(),
            None => {
                let a = match origin.join(&made_up) {
                    Ok(u) => fetcher.answer(&u).await.ok(),
                    Err(_) => None,
                };
                made_up_answers.push((made_up.clone(), a.clone()));
                a
            }
        };
        match paths::judge(
            candidate,
            &answer,
            made_up_answer.as_ref().map(|a| (made_up.as_str(), a)),
        ) {
            Some(found @ LogoutFinding::Found { .. }) => return found,
            Some(maybe) => {
                unconfirmed.get_or_insert(maybe);
            }
            None => {}
        }
    }
    unconfirmed.unwrap_or(LogoutFinding::Missing { tried: candidates })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_url_must_be_whole_http_and_without_credentials() {
        assert!(start_url("https://pbx.example.com/").is_ok());
        assert!(start_url(" http://127.0.0.1:8080/admin/ ").is_ok());
        for bad in [
            "pbx.example.com/login",
            "ftp://pbx.example.com/",
            "http://user:pw@pbx.example.com/",
            "file:///etc/passwd",
        ] {
            let e = start_url(bad).expect_err(bad);
            assert_eq!(e.exit_code(), 2, "{e}");
        }
    }

    #[test]
    fn a_page_without_a_form_login_exits_1_and_says_why() {
        let url = Url::parse("http://pbx.test/x").expect("url");
        let e = LoginGuess::from_page(FetchedPage {
            requested: url.clone(),
            url,
            status: 200,
            redirects: 0,
            http_only_cookies: Vec::new(),
            answered_by_gatehouse: false,
            html: "<p>hello</p>".into(),
        })
        .expect_err("no form");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "no login form on http://pbx.test/x: no <input type=password>"
        );
        assert!(e
            .advice()
            .is_some_and(|a| a.lines().all(|l| l.starts_with('#'))));
    }
}
