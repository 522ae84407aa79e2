//! THE request flow. Every request passes these numbered stages in order; a
//! stage either passes the request on or finishes the response. This is the
//! only place that knows the order.

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
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            upstream: Upstream::new(&settings.upstream)?,
            trusted: TrustedProxies::new(settings.server.trusted_proxies.clone()),
            _geo_watcher: settings
                .geo
                .spawn_watcher(Duration::from_secs(2))
                .map(crate::AbortOnDrop),
            sessions: Sessions::new(store.clone(), settings.session.clone()),
            lockout: Lockout::new(store.clone(), settings.lockout.clone()),
            incidents: crate::incidents::Incidents::new(store.clone(), settings.incidents.clone()),
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
        metrics::counter!("gatehouse_requests_total", "status" => resp.status().as_u16().to_string()).increment(1);
        if let Some(t) = upstream_time {
            metrics::histogram!("gatehouse_upstream_seconds").record(t.as_secs_f64());
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
        req: Request<Incoming>,
        facts: &mut Facts,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let settings = &live.settings;

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
        facts.path = path.as_str().to_string();
        facts.query = target.query().map(str::to_string);

        // 3. access: the area's address and country rules.
        let area = live.settings.access.area_for(&facts.host, &path);
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
            // A refused sign-in attempt still belongs in the user's history.
            if settings.login.is_login(req.method(), &facts.path) {
                if let Ok(FormBody {
                    parts,
                    bytes,
                    content_type,
                }) = FormBody::read(req, &settings.server.limits).await
                {
                    let user = login::field(&content_type, &bytes, &settings.login.username_field)
                        .and_then(|u| login::normalise_username(&u));
                    if let Some(user) = user {
                        let agent = headers_user_agent(&parts.headers);
                        self.note_attempt(
                            live,
                            facts,
                            &user,
                            &agent,
                            crate::incidents::history::LoginResult::RefusedByArea,
                        )
                        .await;
                    }
                }
            }
            return Err(GateError::AccessDenied {
                reason: reason.to_string(),
                reference,
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
            return own_pages::handle(&ctx, req, &path, lookup).await;
        }

        // 6. auth: login interception, then what the session allows.
        let login = &settings.login;
        if login.is_login(req.method(), &facts.path) {
            let prior = match lookup {
                Lookup::Live(s) => Some(*s),
                _ => None,
            };
            return self
                .login(live, req, target, facts, prior, upstream_time)
                .await;
        }
        match lookup {
            Lookup::Live(session) if session.record.state == SessionState::Active => {
                facts.user = session.record.user.clone();
                self.signed_in(live, req, target, facts, *session, upstream_time)
                    .await
            }
            Lookup::Live(session) if session.record.state == SessionState::Anonymous => {
                self.anonymous(live, req, target, facts, Some(*session), upstream_time)
                    .await
            }
            Lookup::Live(session) => {
                // Second factor pending: only gatehouse's 2FA pages (and the
                // public ones, without the vault) until it is passed.
                facts.user = session.record.user.clone();
                if login.is_anonymous(&facts.path)
                    || proxy::headers::upgrade_protocol(req.headers()).is_some()
                {
                    return self
                        .anonymous(live, req, target, facts, None, upstream_time)
                        .await;
                }
                Ok(redirect(StatusCode::SEE_OTHER, "/.gatehouse/2fa"))
            }
            Lookup::Ended(reason) => {
                if login.is_anonymous(&facts.path) {
                    let mut resp = self
                        .anonymous(live, req, target, facts, None, upstream_time)
                        .await?;
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
                self.anonymous(live, req, target, facts, None, upstream_time)
                    .await
            }
        }
    }

    /// 6a. A login attempt: lockout first, then the dashboard judges the
    /// password; success starts a new session holding the dashboard's cookies.
    async fn login(
        &self,
        live: &Arc<Live>,
        req: Request<Incoming>,
        target: PathAndQuery,
        facts: &mut Facts,
        prior: Option<Session>,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let settings = &live.settings;
        let brand = &settings.server.brand;
        let return_to = gh_cookie::read_return(req.headers()).map(|r| login::safe_return_to(&r));
        let FormBody {
            mut parts,
            bytes,
            content_type,
        } = FormBody::read(req, &settings.server.limits).await?;
        let user = login::field(&content_type, &bytes, &settings.login.username_field)
            .and_then(|u| login::normalise_username(&u));
        let ip = facts.client.to_string();
        let Some(user) = user else {
            // No username, nothing to count or lock: the dashboard answers
            // its own form error, and no session can come of it.
            let prior_vault = prior.as_ref().map(|p| p.record.vault.clone());
            let mut resp = self
                .forward(
                    live,
                    parts,
                    proxy::full(bytes),
                    target,
                    facts,
                    prior_vault.as_ref(),
                    None,
                    upstream_time,
                )
                .await?;
            strip_http_only(resp.headers_mut());
            return Ok(resp);
        };
        facts.user = Some(user.clone());
        let audit = |event: &'static str| Event {
            event,
            user: Some(&user),
            ip: Some(ip.clone()),
            ..Event::default()
        };

        match live.lockout.check(&user, &ip).await.map_err(store_down)? {
            LockState::Open => {}
            state => {
                let mut e = audit("login_locked");
                e.reason = Some(if state == LockState::UserLocked {
                    "user_locked"
                } else {
                    "ip_throttled"
                });
                e.emit();
                self.note_attempt(
                    live,
                    facts,
                    &user,
                    &headers_user_agent(&parts.headers),
                    crate::incidents::history::LoginResult::Locked,
                )
                .await;
                return Ok(pages::locked(brand));
            }
        }

        let prior_vault = prior
            .as_ref()
            .map(|p| p.record.vault.clone())
            .unwrap_or_default();
        parts.headers.remove(header::CONTENT_LENGTH);
        let mut resp = self
            .forward(
                live,
                parts,
                proxy::full(bytes),
                target,
                facts,
                Some(&prior_vault),
                None,
                upstream_time,
            )
            .await?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        let mut answer_vault = Vault::default();
        let (names, _) = answer_vault.absorb(resp.headers_mut(), &facts.path, facts.now_ms);
        self.vaulted.learn(names.iter().map(String::as_str));

        if !settings.login.succeeded(status, &headers) {
            audit("login_failed").emit();
            self.note_attempt(
                live,
                facts,
                &user,
                &headers_user_agent(&headers),
                crate::incidents::history::LoginResult::BadPassword,
            )
            .await;
            if live
                .lockout
                .record_failure(&user, &ip)
                .await
                .map_err(store_down)?
            {
                audit("user_locked").emit();
            }
            // Keep the pre-login cookies the failed answer set server-side too.
            self.keep_anonymous_cookies(live, &mut resp, facts, prior, answer_vault)
                .await?;
            return Ok(resp);
        }

        // Which second factor, if any, this sign-in still needs.
        let tf = &self.two_factor;
        let profile = tf
            .profile(&user)
            .await
            .map_err(|_| GateError::StoreUnavailable)?;
        let enrolled = tf
            .is_enrolled(&user)
            .await
            .map_err(|_| GateError::StoreUnavailable)?;
        let mode = settings
            .two_factor
            .mode_for(&user, profile.two_factor_required);
        let step = settings
            .two_factor
            .next_step(mode, enrolled, facts.client.addr());
        if step.is_none() {
            live.lockout
                .record_success(&user)
                .await
                .map_err(store_down)?;
            tf.note_sign_in(&user, facts.now_ms)
                .await
                .map_err(|_| GateError::StoreUnavailable)?;
        }
        let expiry = settings
            .password
            .as_ref()
            .map(|p| p.for_user(&user))
            .filter(|p| p.expire_after.is_some())
            .cloned();
        let password_expired = match expiry {
            Some(policy) => {
                let history = self.passwords.history(&user).await.map_err(store_down)?;
                let first_seen = if profile.first_seen_ms > 0 {
                    profile.first_seen_ms
                } else {
                    facts.now_ms
                };
                policy.expired(&history, first_seen, facts.now_ms)
            }
            None => false,
        };
        let user_agent = headers_user_agent(&headers);
        self.note_attempt(
            live,
            facts,
            &user,
            &user_agent,
            crate::incidents::history::LoginResult::Ok,
        )
        .await;
        let record = SessionRecord {
            user: Some(user.clone()),
            state: if step.is_some() {
                SessionState::PasswordOk
            } else {
                SessionState::Active
            },
            created_ms: facts.now_ms,
            last_seen_ms: facts.now_ms,
            class: live.sessions.rules.classify(&user_agent, &facts.path),
            client_ip: ip.clone(),
            country: facts.country.map(|c| c.to_string()),
            user_agent,
            vault: prior_vault.merged(answer_vault),
            csrf: SessionId::generate().as_cookie_value().to_string(),
            return_to: return_to.clone(),
            second_factor: step,
            pending_seed: None,
            two_factor_passed: false,
            password_expired,
        };
        let (id, session) = live
            .sessions
            .start(record, facts.now_ms, prior.as_ref())
            .await
            .map_err(store_down)?;
        if let Some(step) = step {
            // Password accepted, second factor pending: the dashboard's answer
            // is not shown; only readable cookies of it pass on.
            let mut e = audit("login_password_ok");
            e.session = Some(gh_cookie::short_ref(&session.digest));
            e.emit();
            let to = match step {
                SecondFactor::Challenge => own_pages::CHALLENGE,
                SecondFactor::Enroll => own_pages::ENROLL,
            };
            let mut r = redirect(StatusCode::SEE_OTHER, to);
            for v in resp.headers().get_all(header::SET_COOKIE) {
                r.headers_mut().append(header::SET_COOKIE, v.clone());
            }
            r.headers_mut()
                .append(header::SET_COOKIE, gh_cookie::set_session(&id, None));
            return Ok(r);
        }
        if live.sessions.rules.prevent_concurrent {
            live.sessions
                .end_user_sessions(&user, &session.digest, EndReason::Replaced)
                .await
                .map_err(store_down)?;
        }
        let mut e = audit("login_ok");
        e.session = Some(gh_cookie::short_ref(&session.digest));
        e.emit();

        let h = resp.headers_mut();
        let max_age = (!live.sessions.rules.expire_on_browser_close)
            .then(|| live.sessions.rules.lifetime(&session.record.class));
        h.append(header::SET_COOKIE, gh_cookie::set_session(&id, max_age));
        h.append(header::SET_COOKIE, gh_cookie::clear_return());
        // An expired password first; then where the user was going; an
        // off-site redirect never.
        let notice = password_expired.then(|| own_pages::PASSWORD_EXPIRED.to_string());
        let location = notice.or(return_to).or_else(|| {
            h.get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(|l| local_location(l, &facts.host))
        });
        if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            if resp.status().is_redirection() {
                resp.headers_mut().insert(header::LOCATION, loc);
            }
        }
        Ok(resp)
    }

    /// 6b. A signed-in request: the vault rides along; logout ends the session.
    async fn signed_in(
        &self,
        live: &Arc<Live>,
        req: Request<Incoming>,
        target: PathAndQuery,
        facts: &mut Facts,
        mut session: Session,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let logout = live.settings.login.is_logout(&facts.path);
        let user = session.record.user.clone().unwrap_or_default();
        if let Some(policy) = live.settings.password.as_ref().map(|p| p.for_user(&user)) {
            let is_change = facts.path == policy.change_path;
            if is_change && req.method() == Method::POST {
                return self
                    .change_password(live, req, target, facts, session, upstream_time)
                    .await;
            }
            if session.record.password_expired
                && policy.enforce_expiry
                && !is_change
                && !logout
                && !live.settings.login.is_anonymous(&facts.path)
            {
                return Ok(redirect(StatusCode::SEE_OTHER, own_pages::PASSWORD_EXPIRED));
            }
        }
        let (mut parts, body) = req.into_parts();
        let on_upgrade = take_upgrade(&mut parts);
        let guard = on_upgrade.as_ref().map(|_| {
            let live = live.clone();
            let digest = session.digest.clone();
            let clock = self.clock.clone();
            websocket_guard(live, digest, clock)
        });
        let vault = session.record.vault.clone();
        let mut resp = self
            .forward_upgradable(
                live,
                parts,
                proxy::stream(body),
                target,
                facts,
                Some(&vault),
                on_upgrade,
                guard,
                upstream_time,
            )
            .await?;
        let user = session.record.user.clone();
        if logout {
            strip_http_only(resp.headers_mut());
            live.sessions
                .end(&session.digest, user.as_deref(), EndReason::Logout)
                .await
                .map_err(store_down)?;
            resp.headers_mut()
                .append(header::SET_COOKIE, gh_cookie::clear_session());
            Event {
                event: "session_ended",
                user: user.as_deref(),
                ip: Some(facts.client.to_string()),
                session: Some(gh_cookie::short_ref(&session.digest)),
                reason: Some(EndReason::Logout.as_str()),
                ..Event::default()
            }
            .emit();
            return Ok(resp);
        }
        let (names, changed) =
            session
                .record
                .vault
                .absorb(resp.headers_mut(), &facts.path, facts.now_ms);
        self.vaulted.learn(names.iter().map(String::as_str));
        if changed {
            // A lost race with a concurrent end (logout, revoke) must not
            // resurrect the session: compare-and-set decides.
            live.sessions
                .save(&mut session, facts.now_ms)
                .await
                .map_err(store_down)?;
        }
        Ok(resp)
    }

    /// 6b'. The dashboard's change-password form: a new password that breaks
    /// the policy never reaches the dashboard; a confirmed change is kept as
    /// an argon2id hash for reuse and age checks.
    #[allow(clippy::too_many_arguments)]
    async fn change_password(
        &self,
        live: &Arc<Live>,
        req: Request<Incoming>,
        target: PathAndQuery,
        facts: &mut Facts,
        mut session: Session,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let settings = live.settings.clone();
        let owner = session.record.user.clone().unwrap_or_default();
        let Some(policy) = settings.password.as_ref().map(|p| p.for_user(&owner)) else {
            return Err(GateError::NotFound);
        };
        let FormBody {
            parts,
            bytes,
            content_type,
        } = FormBody::read(req, &settings.server.limits).await?;
        let user = session.record.user.clone().unwrap_or_default();
        let new = login::field(&content_type, &bytes, &policy.new_field).unwrap_or_default();
        let current = login::field(&content_type, &bytes, &policy.current_field);
        let confirm = login::field(&content_type, &bytes, &policy.confirm_field);
        let mut broken = policy.check(&new, current.as_deref(), confirm.as_deref());
        let history = self.passwords.history(&user).await.map_err(store_down)?;
        broken.extend(policy.check_history(&history, &new, facts.now_ms));
        if !broken.is_empty() {
            return Ok(password_refused(&settings, &user, facts.client, &broken));
        }
        let vault = session.record.vault.clone();
        let resp = self
            .forward(
                live,
                parts,
                proxy::full(bytes),
                target,
                facts,
                Some(&vault),
                None,
                upstream_time,
            )
            .await?;
        let (mut head, body) = resp.into_parts();
        let ok_status = policy.success_status.contains(&head.status.as_u16());
        let marker = policy.success_body_contains.clone().filter(|_| ok_status);
        // The body is read only when the success rule needs it, and bounded.
        let (changed, body) = match marker {
            Some(marker) => {
                let bytes = read_answer(body).await?;
                head.headers.remove(header::CONTENT_LENGTH);
                (contains(&bytes, marker.as_bytes()), proxy::full(bytes))
            }
            None => (ok_status, body),
        };
        let (names, vault_changed) =
            session
                .record
                .vault
                .absorb(&mut head.headers, &facts.path, facts.now_ms);
        self.vaulted.learn(names.iter().map(String::as_str));
        if changed {
            self.passwords
                .record_change(&user, &new, facts.now_ms)
                .await
                .map_err(store_down)?;
            Event {
                event: "password_changed",
                user: Some(&user),
                ip: Some(facts.client.to_string()),
                ..Event::default()
            }
            .emit();
        }
        if changed && session.record.password_expired || vault_changed {
            session.record.password_expired &= !changed;
            live.sessions
                .save(&mut session, facts.now_ms)
                .await
                .map_err(store_down)?;
        }
        Ok(Response::from_parts(head, body))
    }

    /// 6c. Without a signed-in session: public paths pass (their HttpOnly
    /// cookies kept server-side in a pre-login session), everything else goes
    /// to the dashboard's login.
    async fn anonymous(
        &self,
        live: &Arc<Live>,
        req: Request<Incoming>,
        target: PathAndQuery,
        facts: &mut Facts,
        prior: Option<Session>,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let login = &live.settings.login;
        // No websockets before sign-in: 401 before any 101 (SECURITY-TESTS 26).
        if proxy::headers::upgrade_protocol(req.headers()).is_some() {
            return Err(GateError::Unauthorized);
        }
        if !login.is_anonymous(&facts.path) {
            return Ok(self.to_sign_in(live, &req, facts));
        }
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(header::UPGRADE);
        let vault = prior.as_ref().map(|p| p.record.vault.clone());
        let mut resp = self
            .forward(
                live,
                parts,
                proxy::stream(body),
                target,
                facts,
                vault.as_ref(),
                None,
                upstream_time,
            )
            .await?;
        let mut fresh = Vault::default();
        let (names, _) = fresh.absorb(resp.headers_mut(), &facts.path, facts.now_ms);
        self.vaulted.learn(names.iter().map(String::as_str));
        if !fresh.is_empty() {
            self.keep_anonymous_cookies(live, &mut resp, facts, prior, fresh)
                .await?;
        }
        Ok(resp)
    }

    /// Put cookies the dashboard set before sign-in into a pre-login session
    /// (creating one, with a cookie, when the browser has none).
    async fn keep_anonymous_cookies(
        &self,
        live: &Arc<Live>,
        resp: &mut Response<Body>,
        facts: &Facts,
        prior: Option<Session>,
        fresh: Vault,
    ) -> Result<(), GateError> {
        if fresh.is_empty() {
            return Ok(());
        }
        match prior {
            Some(mut s) if s.record.state == SessionState::Anonymous => {
                s.record.vault = std::mem::take(&mut s.record.vault).merged(fresh);
                live.sessions
                    .save(&mut s, facts.now_ms)
                    .await
                    .map_err(store_down)?;
            }
            _ => {
                let record = SessionRecord {
                    user: None,
                    state: SessionState::Anonymous,
                    created_ms: facts.now_ms,
                    last_seen_ms: facts.now_ms,
                    class: "web".into(),
                    client_ip: facts.client.to_string(),
                    country: None,
                    user_agent: String::new(),
                    vault: fresh,
                    csrf: SessionId::generate().as_cookie_value().to_string(),
                    return_to: None,
                    second_factor: None,
                    pending_seed: None,
                    two_factor_passed: false,
                    password_expired: false,
                };
                let (id, _) = live
                    .sessions
                    .start(record, facts.now_ms, None)
                    .await
                    .map_err(store_down)?;
                resp.headers_mut()
                    .append(header::SET_COOKIE, gh_cookie::set_session(&id, None));
            }
        }
        Ok(())
    }

    /// A protected page without a session: browsers go to the dashboard's
    /// login (remembering where they were going); API clients get 401 JSON.
    fn to_sign_in(&self, live: &Live, req: &Request<Incoming>, facts: &Facts) -> Response<Body> {
        if wants_json(req.headers()) {
            let mut r = Response::new(proxy::full(r#"{"error":"authentication_required"}"#));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Cookie realm=\"gatehouse\""),
            );
            return r;
        }
        let mut r = redirect(StatusCode::FOUND, &live.settings.login.path);
        if req.method() == Method::GET && is_navigation(req.headers()) {
            r.headers_mut().append(
                header::SET_COOKIE,
                gh_cookie::set_return(&local_target(facts)),
            );
        }
        r
    }

    /// Stage 7, proxy: forward to the dashboard with the session's vault
    /// cookies and nothing a browser may not send.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        live: &Live,
        parts: http::request::Parts,
        body: Body,
        target: PathAndQuery,
        facts: &Facts,
        vault: Option<&Vault>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        self.forward_upgradable(
            live,
            parts,
            body,
            target,
            facts,
            vault,
            upgrade,
            None,
            upstream_time,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward_upgradable(
        &self,
        live: &Live,
        mut parts: http::request::Parts,
        body: Body,
        target: PathAndQuery,
        facts: &Facts,
        vault: Option<&Vault>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        guard: Option<proxy::client::Guard>,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let inject = vault
            .map(|v| v.pairs_for(&facts.path, facts.now_ms))
            .unwrap_or_default();
        let is_vaulted =
            |n: &str| self.vaulted.contains(n) || vault.is_some_and(|v| v.names().any(|x| x == n));
        vault::rewrite_request_cookies(&mut parts.headers, OWN_PREFIX, &is_vaulted, &inject);
        let req = Request::from_parts(parts, body);
        let sent = Instant::now();
        let resp = live
            .upstream
            .forward(
                req,
                proxy::client::Forward {
                    path_and_query: target,
                    host: &facts.host,
                    client: facts.client,
                },
                upgrade,
                guard,
            )
            .await?;
        *upstream_time = Some(sent.elapsed());
        let mut resp = resp.map(proxy::stream);
        strip_own_set_cookies(resp.headers_mut());
        Ok(resp)
    }
}

impl Gate {
    /// Sign-in history and incident detection. A failure here is logged,
    /// never a reason to change the sign-in's outcome (the decision is made).
    async fn note_attempt(
        &self,
        live: &Live,
        facts: &Facts,
        user: &str,
        user_agent: &str,
        result: crate::incidents::history::LoginResult,
    ) {
        let rec = crate::incidents::history::LoginRecord {
            ts_ms: facts.now_ms,
            user: user.to_string(),
            ip: facts.client.to_string(),
            country: facts
                .country
                .map_or_else(|| "unknown".to_string(), |c| c.to_string()),
            user_agent: user_agent.to_string(),
            result,
        };
        if let Err(e) = live.incidents.record(rec).await {
            tracing::warn!(error = %e, "cannot record the sign-in attempt");
        }
    }
}

/// Closes a spliced websocket once its session is no longer live (logout,
/// log-out-all, timeouts: SECURITY-TESTS 26), or when the store cannot say.
fn websocket_guard(live: Arc<Live>, digest: String, clock: SharedClock) -> proxy::client::Guard {
    Box::pin(async move {
        loop {
            tokio::time::sleep(WEBSOCKET_RECHECK).await;
            let now_ms = clock
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            if !live
                .sessions
                .still_live(&digest, now_ms)
                .await
                .unwrap_or(false)
            {
                return;
            }
        }
    })
}

fn take_upgrade(parts: &mut http::request::Parts) -> Option<hyper::upgrade::OnUpgrade> {
    if parts.version == Version::HTTP_11
        && proxy::headers::upgrade_protocol(&parts.headers).is_some()
    {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    }
}

fn store_down(e: StoreError) -> GateError {
    metrics::counter!("gatehouse_store_errors_total").increment(1);
    tracing::debug!(error = %e, "store error: failing closed");
    GateError::StoreUnavailable
}

/// A request whose small body gatehouse reads whole (a login attempt, the
/// change-password form), with its content type.
struct FormBody {
    parts: http::request::Parts,
    bytes: bytes::Bytes,
    content_type: String,
}

impl FormBody {
    async fn read(
        req: Request<Incoming>,
        limits: &crate::config::validate::Limits,
    ) -> Result<Self, GateError> {
        let (parts, body) = req.into_parts();
        let bytes = read_bounded(
            body,
            &parts.headers,
            limits.max_form_bytes,
            limits.header_read_timeout,
        )
        .await?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok(Self {
            parts,
            bytes,
            content_type,
        })
    }
}

/// Read a body gatehouse must see whole (login attempts, its own forms):
/// refused on its declared length before reading, bounded while reading, and
/// with a deadline so a trickled body cannot hold a request open
/// (SECURITY-TESTS 27, 28).
pub(crate) async fn read_bounded(
    body: Incoming,
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
    let collect = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(deadline, collect).await {
        Err(_) => Err(GateError::RequestTimeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(GateError::PayloadTooLarge)
        }
        Ok(Err(_)) => Err(GateError::BadRequest("request body could not be read")),
    }
}

/// The page (and audit line) for a new password that breaks the policy.
fn password_refused(
    settings: &Settings,
    user: &str,
    client: ClientIp,
    broken: &[crate::auth::password::Violation],
) -> Response<Body> {
    use crate::auth::password::Violation;
    let reason = broken
        .iter()
        .map(Violation::code)
        .collect::<Vec<_>>()
        .join(",");
    Event {
        event: "password_refused",
        user: Some(user),
        ip: Some(client.to_string()),
        reason: Some(&reason),
        ..Event::default()
    }
    .emit();
    let messages: Vec<String> = broken
        .iter()
        .map(|v| match v {
            Violation::TooSoon { possible_at_ms } => format!(
                "{} You can change it again after {}.",
                v.message(),
                own_pages::format_ms(*possible_at_ms)
            ),
            _ => v.message(),
        })
        .collect();
    let form = settings
        .password
        .as_ref()
        .map_or("/", |p| p.base.change_path.as_str());
    pages::password::refused(&settings.server.brand, &messages, form)
}

/// A dashboard answer gatehouse must read (a change-password result), at
/// most 256 KiB.
async fn read_answer(mut body: Body) -> Result<bytes::Bytes, GateError> {
    const LIMIT: usize = 256 * 1024;
    let too_large =
        || GateError::Upstream(proxy::ProxyError::Unreachable("answer too large".into()));
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| too_large())?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > LIMIT {
                return Err(too_large());
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The dashboard's HttpOnly cookies never reach a browser without a session
/// to hold them.
fn strip_http_only(headers: &mut HeaderMap) {
    let mut dropped = Vault::default();
    dropped.absorb(headers, "/", 0);
}

/// The dashboard may not set gatehouse's own cookies.
fn strip_own_set_cookies(headers: &mut HeaderMap) {
    let values: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if values
        .iter()
        .any(|v| v.as_bytes().starts_with(OWN_PREFIX.as_bytes()))
    {
        headers.remove(header::SET_COOKIE);
        for v in values
            .into_iter()
            .filter(|v| !v.as_bytes().starts_with(OWN_PREFIX.as_bytes()))
        {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

fn headers_user_agent(h: &HeaderMap) -> String {
    h.get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect())
        .unwrap_or_default()
}

/// A top-level page load (not an image, script or favicon fetched in the
/// background): only those may set where to return after sign-in.
fn is_navigation(h: &HeaderMap) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    match (get("sec-fetch-mode"), get("sec-fetch-dest")) {
        (Some(mode), _) => mode == "navigate",
        (None, Some(dest)) => dest == "document",
        (None, None) => get("accept").is_some_and(|a| a.contains("text/html")),
    }
}

fn wants_json(h: &HeaderMap) -> bool {
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// The local path and query the browser asked for (for return-to).
fn local_target(facts: &Facts) -> String {
    let t = match &facts.query {
        Some(q) => format!("{}?{q}", facts.path),
        None => facts.path.clone(),
    };
    login::safe_return_to(&t)
}

/// A Location from the dashboard made local: same-host absolute URLs become
/// paths, anything off-site becomes "/".
fn local_location(location: &str, host: &str) -> String {
    for scheme in ["https://", "http://"] {
        if let Some(rest) = location.strip_prefix(scheme) {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if host_without_port(authority) == host_without_port(host) {
                return login::safe_return_to(if path.is_empty() { "/" } else { path });
            }
            return "/".to_string();
        }
    }
    login::safe_return_to(location)
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
fn request_host(req: &Request<Incoming>) -> Result<String, GateError> {
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
fn forwarded_target(req: &Request<Incoming>) -> Result<PathAndQuery, GateError> {
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
}
