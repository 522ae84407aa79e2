//! THE request flow. Every request passes these numbered stages in order; a
//! stage either passes the request on or finishes the response. This is the
//! only place that knows the order.

use crate::access::AreaAuth;
use crate::audit::Event;
use crate::auth::lockout::{LockState, Lockout};
use crate::auth::login;
use crate::auth::two_factor::TwoFactor;
use crate::client_ip::{self, ClientIp, TrustedProxies};
use crate::clock::SharedClock;
use crate::config::validate::Settings;
use crate::error::GateError;
use crate::own_pages;
use crate::pages::{self, SignedOut};
use crate::proxy::{self, Body, Upstream};
use crate::session::cookie::{self as gh_cookie, SessionId, OWN_PREFIX};
use crate::session::vault::{self, Vault, VaultedNames};
use crate::session::{
    EndReason, Lookup, SecondFactor, Session, SessionRecord, SessionState, Sessions,
};
use crate::store::{Store, StoreError};
use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

mod forward;
mod signed_in;
mod signin;

pub(crate) use signin::json_error;
use signin::{headers_user_agent, local_target, strip_http_only, FormBody};

/// Everything a request needs that a SIGHUP may replace, swapped atomically:
/// a request sees either the old or the new configuration, never a mix.
pub struct Live {
    pub settings: Arc<Settings>,
    pub tls: Arc<rustls::ServerConfig>,
    pub upstream: Upstream,
    pub trusted: TrustedProxies,
    pub sessions: Sessions,
    pub lockout: Lockout,
    pub incidents: crate::incidents::Incidents,
    /// Per-request metrics, registered once.
    metrics: RequestMetrics,
    /// Re-reads the GeoIP file when it changes; ends with this configuration.
    _geo_watcher: Option<crate::AbortOnDrop>,
}

/// Why a configuration could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("TLS: {key}: {message}", key = .0.key, message = .0.message)]
    Tls(#[from] crate::tls::TlsError),
    #[error("upstream: {0}")]
    Upstream(#[from] proxy::ProxyError),
}

impl Live {
    pub fn build(settings: Settings, store: &Arc<dyn Store>) -> Result<Self, LiveError> {
        Ok(Self {
            tls: crate::tls::build(&settings.server.tls)?,
            upstream: Upstream::new(
                &settings.upstream,
                crate::listener::worker_count(settings.server.worker_threads),
            )?,
            trusted: TrustedProxies::new(settings.server.trusted_proxies.clone()),
            _geo_watcher: settings
                .geo
                .spawn_watcher(Duration::from_secs(2))
                .map(crate::AbortOnDrop),
            sessions: Sessions::new(store.clone(), settings.session.clone()),
            lockout: Lockout::new(store.clone(), settings.lockout.clone()),
            incidents: crate::incidents::Incidents::new(store.clone(), settings.incidents.clone()),
            metrics: RequestMetrics::new(),
            settings: Arc::new(settings),
        })
    }
}

/// The gateway's shared state.
pub struct Gate {
    pub live: ArcSwap<Live>,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    /// Dashboard cookie names never accepted from a browser.
    pub vaulted: VaultedNames,
    /// Authenticators and recovery codes (sealed in the store).
    pub two_factor: TwoFactor,
    /// Password histories (argon2id hashes).
    pub passwords: crate::auth::password::Passwords,
    /// The key that seals secrets at rest.
    pub sealer: Arc<crate::store::Sealer>,
}

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client address stated by a trusted PROXY protocol header, else the peer.
    pub source: ClientIp,
}

/// The metrics every request records. Registering a labelled metric hashes
/// and compares its key and allocates its labels; done per request with the
/// Prometheus recorder on, that was about 2 % of a proxied request's
/// instructions. Handles are registered once per (area, status) and reused.
struct RequestMetrics {
    upstream_seconds: metrics::Histogram,
    /// `gatehouse_requests_total` by status, then area (both bounded: areas
    /// come from the configuration, statuses are three digits).
    requests: RwLock<foldhash::HashMap<u16, foldhash::HashMap<String, metrics::Counter>>>,
}

impl RequestMetrics {
    fn new() -> Self {
        Self {
            upstream_seconds: metrics::histogram!("gatehouse_upstream_seconds"),
            requests: RwLock::new(foldhash::HashMap::default()),
        }
    }

    fn requests(&self, area: &str, status: u16) -> metrics::Counter {
        let known = self
            .requests
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&status)
            .and_then(|by_area| by_area.get(area))
            .cloned();
        known.unwrap_or_else(|| {
            let counter = metrics::counter!(
                "gatehouse_requests_total",
                "area" => area.to_string(),
                "status" => status.to_string()
            );
            self.requests
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(status)
                .or_default()
                .insert(area.to_string(), counter.clone());
            counter
        })
    }
}

/// Facts established about a request as it passes the stages.
struct Facts {
    client: ClientIp,
    host: String,
    path: String,
    query: Option<String>,
    user: Option<String>,
    area: String,
    country: Option<crate::access::Country>,
    now_ms: u64,
}

/// How often an open websocket re-checks that its session is still live.
const WEBSOCKET_RECHECK: Duration = Duration::from_secs(2);

impl Gate {
    pub async fn handle(&self, conn: ConnInfo, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        // Boxed once here, so a stage that must read a body (a password
        // form) can hand the request on whole to the next.
        let req = req.map(proxy::stream);
        let live = self.live.load_full();
        let method = req.method().clone();
        let mut facts = Facts {
            client: ClientIp::Unknown,
            host: String::new(),
            path: req.uri().path().to_string(),
            query: None,
            user: None,
            area: String::new(),
            country: None,
            now_ms: self.now_ms(),
        };
        let mut upstream_time = None;
        let mut resp = match self
            .stages(&live, conn, req, &mut facts, &mut upstream_time)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                match &e {
                    GateError::Upstream(_) => tracing::warn!(error = %e, "upstream request failed"),
                    GateError::StoreUnavailable => {}
                    _ => tracing::debug!(error = %e, "request refused"),
                }
                e.into_response(&live.settings.server.brand)
            }
        };
        finish_headers(&live.settings, &mut resp);
        live.metrics
            .requests(&facts.area, resp.status().as_u16())
            .increment(1);
        if let Some(t) = upstream_time {
            live.metrics.upstream_seconds.record(t.as_secs_f64());
        }
        if live.settings.logging.access_log {
            tracing::info!(
                target: "gatehouse::access",
                method = %method,
                path = ?facts.path,
                status = resp.status().as_u16(),
                client = %facts.client,
                area = %facts.area,
                user = ?facts.user.as_deref().unwrap_or("-"),
                ms = started.elapsed().as_secs_f64() * 1000.0,
                upstream_ms = upstream_time.map(|d: Duration| d.as_secs_f64() * 1000.0),
            );
        }
        resp
    }

    fn now_ms(&self) -> u64 {
        self.clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    async fn stages(
        &self,
        live: &Arc<Live>,
        conn: ConnInfo,
        req: Request<Body>,
        facts: &mut Facts,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let settings = &live.settings;
        // The branches off the signed-in path (own pages, sign-in, password
        // checks; anonymous requests box themselves) are boxed where they
        // are awaited: a future is as large as its largest branch, and this
        // one is moved, whole, with every request.

        // 1. client_ip: the only address any later stage uses.
        facts.client = client_ip::resolve(conn.source, req.headers(), &live.trusted);

        // 2. route: one authority for decision and forwarding, one path.
        facts.host = request_host(&req)?;
        let hosts = &settings.server.hosts;
        if !hosts.is_empty() && !hosts.contains(&host_without_port(&facts.host)) {
            return Err(GateError::Misdirected);
        }
        let raw_target = forwarded_target(&req)?;
        // The path is normalised once; the area is chosen on it and exactly
        // it is forwarded, so what was checked is what is served.
        let path = crate::access::normalise(raw_target.path())
            .map_err(|_| GateError::BadRequest("ambiguous path"))?;
        let target = match raw_target.query() {
            Some(q) => PathAndQuery::try_from(format!("{}?{q}", path.as_str())),
            None => PathAndQuery::try_from(path.as_str().to_string()),
        }
        .map_err(|_| GateError::BadRequest("invalid request target"))?;
        facts.query = target.query().map(str::to_string);

        // 3. access: the area's address and country rules.
        let area = live.settings.access.area_for(&facts.host, &path);
        facts.path = path.into_string();
        facts.area = area.name.clone();
        facts.country = facts
            .client
            .addr()
            .and_then(|ip| live.settings.geo.lookup(ip));
        let refusal = match facts.client.addr() {
            Some(ip) => match crate::access::decide(
                area,
                &crate::access::ClientFacts {
                    ip,
                    country: facts.country,
                },
            ) {
                crate::access::Decision::Allow => None,
                crate::access::Decision::Deny(reason) => Some(reason.code()),
            },
            // A client a trusted proxy could not name is on no list and in no country.
            None if area.ip_restriction || area.needs_country() => Some("unknown_client"),
            None => None,
        };
        if let Some(reason) = refusal {
            let reference = hex::encode(rand::random::<[u8; 6]>());
            let country = facts.country.map(|c| c.to_string());
            Event {
                event: "access_denied",
                ip: Some(facts.client.to_string()),
                country: country.as_deref(),
                area: Some(&area.name),
                reason: Some(reason),
                reference: Some(&reference),
                ..Event::default()
            }
            .emit();
            metrics::counter!("gatehouse_access_denied_total", "area" => area.name.clone(), "reason" => reason)
                .increment(1);
            let json = area.auth.serves_machines() || signin::is_machine(req.headers());
            // A refused sign-in attempt still belongs in the user's history.
            if settings.login.is_login(req.method(), &facts.path) {
                if let Ok(FormBody {
                    parts,
                    bytes,
                    content_type,
                }) = FormBody::read(req, &settings.server.limits).await
                {
                    let user = settings
                        .login
                        .attempt_user(&facts.path, &content_type, &bytes);
                    if let Some(user) = user {
                        let agent = headers_user_agent(&parts.headers);
                        Box::pin(self.note_attempt(
                            live,
                            facts,
                            &user,
                            &agent,
                            crate::incidents::history::LoginResult::RefusedByArea,
                        ))
                        .await;
                    }
                }
            }
            return Err(GateError::AccessDenied {
                reason: reason.to_string(),
                reference,
                json,
            });
        }

        // 4. session: the browser's cookie → a stored session (one round trip).
        let sid = gh_cookie::read_session(req.headers())
            .map_err(|_| GateError::BadRequest("duplicate session cookie"))?;
        let lookup = match &sid {
            Some(id) => live
                .sessions
                .lookup(id, facts.now_ms)
                .await
                .map_err(store_down)?,
            None => Lookup::None,
        };
        if let Lookup::Live(s) = &lookup {
            facts.user = s.record.user.clone();
        }

        // 5. gatehouse's own pages (2FA, account) are never forwarded.
        if own_pages::is_own(&facts.path) {
            let ctx = own_pages::Ctx {
                gate: self,
                live,
                client: facts.client,
                host: &facts.host,
                now_ms: facts.now_ms,
            };
            let path = facts.path.clone();
            return Box::pin(own_pages::handle(&ctx, req, &path, lookup)).await;
        }

        // 6. auth: the forgot-password form's new password meets the policy
        // first, then login interception, then what the session allows.
        let req = match settings
            .password
            .as_ref()
            .and_then(|p| p.base.forgot_path.as_ref())
        {
            Some(forgot) if *forgot == facts.path && req.method() == Method::POST => {
                match Box::pin(self.check_reset(live, req, facts, &lookup)).await? {
                    Ok(req) => req,
                    Err(refused) => return Ok(refused),
                }
            }
            _ => req,
        };
        let login = &settings.login;
        if login.is_login(req.method(), &facts.path) {
            let prior = match lookup {
                Lookup::Live(s) => Some(*s),
                _ => None,
            };
            return Box::pin(self.login(live, req, target, facts, prior, upstream_time)).await;
        }
        // The area may admit requests without a session: always (`none`), or
        // with an Authorization header for the dashboard to judge, from the
        // area's own addresses only (`session_or_token`).
        let open_area = match area.auth {
            AreaAuth::Session => false,
            AreaAuth::None => true,
            AreaAuth::SessionOrToken => {
                req.headers().contains_key(header::AUTHORIZATION)
                    && facts
                        .client
                        .addr()
                        .is_some_and(|ip| area.allow.contains(ip.to_canonical()))
            }
        };
        let signed_in =
            matches!(&lookup, Lookup::Live(s) if s.record.state == SessionState::Active);
        if open_area && !signed_in {
            let prior = match lookup {
                Lookup::Live(s) if s.record.state == SessionState::Anonymous => Some(*s),
                _ => None,
            };
            return self
                .anonymous(live, req, target, facts, prior, true, upstream_time)
                .await;
        }
        match lookup {
            Lookup::Live(session) if session.record.state == SessionState::Active => {
                let user = session.record.user.as_deref().unwrap_or_default();
                let refuse = |reason: &'static str| {
                    Event {
                        event: "session_refused",
                        user: Some(user),
                        ip: Some(facts.client.to_string()),
                        area: Some(&area.name),
                        reason: Some(reason),
                        session: Some(gh_cookie::short_ref(&session.digest)),
                        ..Event::default()
                    }
                    .emit();
                };
                // A service account's session works from its addresses only,
                // on every request (a copied cookie is useless elsewhere).
                if !settings.service_accounts.admits(user, facts.client.addr()) {
                    refuse("service_account_address");
                    return Ok(signin::json_error(
                        StatusCode::FORBIDDEN,
                        "address_not_allowed",
                    ));
                }
                // A session that skipped the challenge is no session in an
                // area that asks for one: sign in here (and pass it).
                if !session.record.two_factor_passed
                    && !settings.two_factor.admits_without_code(
                        area.two_factor,
                        session.record.two_factor_waived_by_area,
                        facts.client.addr(),
                    )
                {
                    refuse("two_factor_required_in_area");
                    return self
                        .anonymous(live, req, target, facts, None, open_area, upstream_time)
                        .await;
                }
                self.signed_in(live, req, target, facts, session, upstream_time)
                    .await
            }
            Lookup::Live(session) if session.record.state == SessionState::Anonymous => {
                self.anonymous(
                    live,
                    req,
                    target,
                    facts,
                    Some(*session),
                    false,
                    upstream_time,
                )
                .await
            }
            Lookup::Live(_) => {
                // Second factor pending: only gatehouse's 2FA pages (and the
                // public ones, without the vault) until it is passed.
                if login.is_anonymous(&facts.path)
                    || proxy::headers::upgrade_protocol(req.headers()).is_some()
                {
                    return self
                        .anonymous(live, req, target, facts, None, false, upstream_time)
                        .await;
                }
                if signin::is_machine(req.headers()) {
                    return Ok(signin::json_error(
                        StatusCode::UNAUTHORIZED,
                        "two_factor_required",
                    ));
                }
                Ok(redirect(StatusCode::SEE_OTHER, "/.gatehouse/2fa"))
            }
            Lookup::Ended(reason) => {
                if login.is_anonymous(&facts.path) {
                    let mut resp = self
                        .anonymous(live, req, target, facts, None, false, upstream_time)
                        .await?;
                    resp.headers_mut()
                        .append(header::SET_COOKIE, gh_cookie::clear_session());
                    return Ok(resp);
                }
                if signin::is_machine(req.headers()) {
                    let mut resp = self.to_sign_in(live, &req, facts);
                    resp.headers_mut()
                        .append(header::SET_COOKIE, gh_cookie::clear_session());
                    return Ok(resp);
                }
                let why = match reason {
                    EndReason::Replaced => SignedOut::Elsewhere,
                    EndReason::Timeout | EndReason::Idle => SignedOut::Expired,
                    _ => SignedOut::Ended,
                };
                let mut resp = pages::signed_out(&settings.server.brand, why, &login.path);
                let h = resp.headers_mut();
                h.append(header::SET_COOKIE, gh_cookie::clear_session());
                h.append(
                    header::SET_COOKIE,
                    gh_cookie::set_return(&local_target(facts)),
                );
                Ok(resp)
            }
            Lookup::None => {
                self.anonymous(live, req, target, facts, None, false, upstream_time)
                    .await
            }
        }
    }
}

fn store_down(e: StoreError) -> GateError {
    metrics::counter!("gatehouse_store_errors_total").increment(1);
    tracing::debug!(error = %e, "store error: failing closed");
    GateError::StoreUnavailable
}

/// Read a body gatehouse must see whole (login attempts, its own forms):
/// refused on its declared length before reading, bounded while reading, and
/// with a deadline so a trickled body cannot hold a request open
/// (SECURITY-TESTS 27, 28).
pub(crate) async fn read_bounded(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: Duration,
) -> Result<bytes::Bytes, GateError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GateError::PayloadTooLarge);
    }
    let collect = async move {
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| GateError::BadRequest("request body could not be read"))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(GateError::PayloadTooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(deadline, collect)
        .await
        .map_err(|_| GateError::RequestTimeout)?
}

fn redirect(status: StatusCode, to: &str) -> Response<Body> {
    let mut r = Response::new(proxy::empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The authority the client addressed. HTTP/1.1 must carry exactly one Host;
/// when the request-target is absolute (or HTTP/2 sends `:authority`) and a
/// Host is present too, they must agree (SECURITY-TESTS 11, 12).
fn request_host(req: &Request<Body>) -> Result<String, GateError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(GateError::BadRequest("duplicate Host header"));
    }
    let host_header = host_header
        .map(|h| {
            h.to_str()
                .map_err(|_| GateError::BadRequest("Host is not ASCII"))
        })
        .transpose()?;
    let uri_authority = req.uri().authority().map(|a| a.as_str());
    let host = match (uri_authority, host_header) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err(GateError::BadRequest(
                "request-target authority differs from Host",
            ));
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err(GateError::BadRequest("missing Host")),
    };
    if host.contains('@') {
        return Err(GateError::BadRequest("userinfo in authority"));
    }
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return Err(GateError::BadRequest("invalid Host"));
    }
    Ok(host.to_ascii_lowercase())
}

pub(crate) fn host_without_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    host.rsplit_once(':')
        .map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .to_ascii_lowercase()
}

/// The path and query forwarded upstream: exactly what the stages checked.
fn forwarded_target(req: &Request<Body>) -> Result<PathAndQuery, GateError> {
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !pq.path().starts_with('/') {
        return Err(GateError::BadRequest("request-target must be a path"));
    }
    Ok(pq)
}

/// Headers every response leaves with.
fn finish_headers(settings: &Settings, resp: &mut Response<Body>) {
    if let Some(max_age) = settings.server.hsts_max_age {
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={}", max_age.as_secs())) {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_ignored_for_host_matching() {
        assert_eq!(
            host_without_port("dash.example.com:8443"),
            "dash.example.com"
        );
        assert_eq!(host_without_port("[::1]:8443"), "::1");
        assert_eq!(host_without_port("dash.example.com"), "dash.example.com");
    }
}
