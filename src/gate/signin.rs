//! Stage 6 without a signed-in session: login attempts (lockout, the
//! dashboard's verdict, a new session), public pages, and the way to sign in.

use super::*;

impl Gate {
    /// 6a. A login attempt: lockout first, then the dashboard judges the
    /// password; success starts a new session holding the dashboard's cookies.
    pub(super) async fn login(
        &self,
        live: &Arc<Live>,
        req: Request<Body>,
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
        let user = settings
            .login
            .attempt_user(&facts.path, &content_type, &bytes);
        let api_login = settings.login.api_login(&facts.path).is_some();
        let from_script = is_script(&parts.headers);
        let ip = facts.client.to_string();
        // The browser's, not the dashboard answer's: it classifies the session.
        let user_agent = headers_user_agent(&parts.headers);
        let Some(user) = user else {
            // No username, nothing to count or lock: the dashboard answers
            // its own form error, and no session can come of it. Single-page
            // apps also POST here to ask "who is signed in?" (no credentials):
            // a signed-in session's vault rides along and keeps what the
            // answer refreshes; a session still waiting for its second factor
            // sends none (its vault holds a signed-in dashboard session).
            let area_rule = settings
                .access
                .area(&facts.area)
                .map(|a| a.two_factor)
                .unwrap_or_default();
            let mut session = prior.filter(|p| match p.record.state {
                SessionState::Anonymous => true,
                // As every signed-in request: good in this area only if its
                // second factor was passed or is not asked for here.
                SessionState::Active => {
                    p.record.two_factor_passed
                        || settings.two_factor.admits_without_code(
                            area_rule,
                            p.record.two_factor_waived_by_area,
                            facts.client.addr(),
                        )
                }
                _ => false,
            });
            let prior_vault = session.as_ref().map(|p| p.record.vault.clone());
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
            match session.as_mut() {
                Some(s) => {
                    let (names, changed) =
                        s.record_mut()
                            .vault
                            .absorb(resp.headers_mut(), &facts.path, facts.now_ms);
                    self.vaulted.learn(names.iter().map(String::as_str));
                    if changed {
                        live.sessions
                            .save(s, facts.now_ms)
                            .await
                            .map_err(store_down)?;
                    }
                }
                None => strip_http_only(resp.headers_mut()),
            }
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
                    &user_agent,
                    crate::incidents::history::LoginResult::Locked,
                )
                .await;
                if api_login || is_machine(&parts.headers) {
                    return Ok(json_error(StatusCode::TOO_MANY_REQUESTS, "locked"));
                }
                return Ok(pages::locked(brand));
            }
        }

        // A service account signs in from its own addresses only; the
        // dashboard never sees the attempt from anywhere else.
        if !settings.service_accounts.admits(&user, facts.client.addr()) {
            let mut e = audit("login_refused");
            e.reason = Some("service_account_address");
            e.emit();
            self.note_attempt(
                live,
                facts,
                &user,
                &user_agent,
                crate::incidents::history::LoginResult::RefusedByArea,
            )
            .await;
            return Ok(json_error(StatusCode::FORBIDDEN, "address_not_allowed"));
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
        // A JSON login judged by its body: read it (bounded) and pass it on.
        let answer_body = if settings.login.judges_body(&facts.path) {
            let (parts, body) = resp.into_parts();
            let bytes = read_bounded(
                body,
                &parts.headers,
                login::MAX_JUDGED_ANSWER,
                settings.upstream.response_timeout,
            )
            .await
            .map_err(|_| {
                GateError::Upstream(proxy::ProxyError::Unreachable(
                    "the login answer could not be read whole".into(),
                ))
            })?;
            resp = Response::from_parts(parts, proxy::full(bytes.clone()));
            Some(bytes)
        } else {
            None
        };
        let mut answer_vault = Vault::default();
        let (names, _) = answer_vault.absorb(resp.headers_mut(), &facts.path, facts.now_ms);
        self.vaulted.learn(names.iter().map(String::as_str));

        if !settings
            .login
            .succeeded_at(&facts.path, status, &headers, answer_body.as_deref())
        {
            audit("login_failed").emit();
            self.note_attempt(
                live,
                facts,
                &user,
                &user_agent,
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
        // The area's rule, then the client class's, then the user's.
        let service = settings.service_accounts.get(&user);
        let class = match service {
            Some(_) => crate::auth::service::SERVICE_CLASS.to_string(),
            None => live.sessions.rules.classify(&user_agent, &facts.path),
        };
        let area_rule = settings
            .access
            .area(&facts.area)
            .map(|a| a.two_factor)
            .unwrap_or_default();
        let tfs = &settings.two_factor;
        let user_mode = tfs.mode_for(&user, profile.two_factor_required);
        let class_mode = live.sessions.rules.class_two_factor(&class);
        let mode = tfs.mode_in(area_rule, class_mode, user_mode);
        let step = tfs.next_step(mode, enrolled, facts.client.addr());
        // Skipped only because this area says "off"? Then the session is
        // good only in areas that say so too (another host may ask for it).
        let two_factor_waived_by_area = step.is_none()
            && tfs
                .next_step(
                    tfs.mode_in(crate::access::AreaTwoFactor::Inherit, class_mode, user_mode),
                    enrolled,
                    facts.client.addr(),
                )
                .is_some();
        if api_login && step == Some(SecondFactor::Enroll) {
            // An app cannot show the enrollment page: enroll in a browser first.
            audit("login_enroll_required").emit();
            return Ok(json_error(
                StatusCode::FORBIDDEN,
                "two_factor_enrollment_required",
            ));
        }
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
            class,
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
            area: facts.area.clone(),
            two_factor_waived_by_area,
            lifetime_ms: service
                .and_then(|a| a.absolute_timeout)
                .map(|d| d.as_millis() as u64),
            api_challenge: api_login && step.is_some(),
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
            if api_login {
                // A JSON client gets the challenge id in the body instead of
                // a cookie and a page (docs/api.md); the dashboard's answer
                // and its cookies stay in the vault until the code is right.
                return Ok(json_answer(
                    StatusCode::OK,
                    &serde_json::json!({
                        "two_factor_required": true,
                        "challenge": id.as_cookie_value(),
                    }),
                ));
            }
            let to = match step {
                SecondFactor::Challenge => own_pages::CHALLENGE,
                SecondFactor::Enroll => own_pages::ENROLL,
            };
            let mut r = if from_script {
                // A single-page app's script signed in: a redirect to a page
                // would be followed inside its fetch and read as a broken
                // answer. It gets a success it can parse (the dashboard's own
                // answer stays in the vault with its tokens) and shows the
                // app, whose next page load gatehouse sends to `location`.
                json_answer(
                    StatusCode::OK,
                    &serde_json::json!({ "two_factor_required": true, "location": to }),
                )
            } else {
                redirect(StatusCode::SEE_OTHER, to)
            };
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
                .map(|l| login::local_location(l, &facts.host))
        });
        if resp.status().is_redirection() {
            let loc = location
                .and_then(|l| HeaderValue::from_str(&l).ok())
                .unwrap_or(HeaderValue::from_static("/"));
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        Ok(resp)
    }

    /// 6c. Without a signed-in session: public paths and areas that need no
    /// session (`open_area`) pass (their HttpOnly cookies kept server-side in
    /// a pre-login session), everything else goes to the dashboard's login.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn anonymous(
        &self,
        live: &Arc<Live>,
        req: Request<Body>,
        target: PathAndQuery,
        facts: &mut Facts,
        prior: Option<Session>,
        open_area: bool,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        // Boxed here, once: the signed-in request's future would otherwise
        // be sized for this path at each of the gate's calls.
        Box::pin(self.serve_anonymous(live, req, target, facts, prior, open_area, upstream_time))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve_anonymous(
        &self,
        live: &Arc<Live>,
        req: Request<Body>,
        target: PathAndQuery,
        facts: &mut Facts,
        prior: Option<Session>,
        open_area: bool,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let login = &live.settings.login;
        // No websockets before sign-in: 401 before any 101 (SECURITY-TESTS 26).
        if proxy::headers::upgrade_protocol(req.headers()).is_some() {
            return Err(GateError::Unauthorized);
        }
        if !open_area && !login.is_anonymous(&facts.path) {
            return Ok(self.to_sign_in(live, &req, facts));
        }
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(header::UPGRADE);
        let vault = prior.as_ref().map(|p| p.record.vault.clone());
        let mut resp = self
            .forward(
                live,
                parts,
                body,
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
    pub(super) async fn keep_anonymous_cookies(
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
                let record = s.record_mut();
                record.vault = std::mem::take(&mut record.vault).merged(fresh);
                live.sessions
                    .save(&mut s, facts.now_ms)
                    .await
                    .map_err(store_down)?;
            }
            _ => {
                if !live
                    .sessions
                    .admit_prelogin(facts.client)
                    .await
                    .map_err(store_down)?
                {
                    tracing::debug!(client = %facts.client, "pre-sign-in sessions: over the address's or the total cap");
                    return Err(GateError::TooManyNewVisits);
                }
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
                    area: facts.area.clone(),
                    two_factor_waived_by_area: false,
                    lifetime_ms: None,
                    api_challenge: false,
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
    pub(super) fn to_sign_in(
        &self,
        live: &Live,
        req: &Request<Body>,
        facts: &Facts,
    ) -> Response<Body> {
        if is_machine(req.headers()) {
            let mut r = json_error(StatusCode::UNAUTHORIZED, "authentication_required");
            r.headers_mut().insert(
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

    /// Sign-in history and incident detection. A failure here is logged,
    /// never a reason to change the sign-in's outcome (the decision is made).
    pub(super) async fn note_attempt(
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

/// A request whose small body gatehouse reads whole (a login attempt, the
/// change-password form), with its content type.
pub(super) struct FormBody {
    pub(super) parts: http::request::Parts,
    pub(super) bytes: bytes::Bytes,
    pub(super) content_type: String,
}

impl FormBody {
    pub(super) async fn read(
        req: Request<Body>,
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

/// The dashboard's HttpOnly cookies never reach a browser without a session
/// to hold them.
pub(super) fn strip_http_only(headers: &mut HeaderMap) {
    let mut dropped = Vault::default();
    dropped.absorb(headers, "/", 0);
}

pub(super) fn headers_user_agent(h: &HeaderMap) -> String {
    h.get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect())
        .unwrap_or_default()
}

/// A top-level page load (not an image, script or favicon fetched in the
/// background): only those may set where to return after sign-in.
pub(super) fn is_navigation(h: &HeaderMap) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    match (get("sec-fetch-mode"), get("sec-fetch-dest")) {
        (Some(mode), _) => mode == "navigate",
        (None, Some(dest)) => dest == "document",
        (None, None) => get("accept").is_some_and(|a| a.contains("text/html")),
    }
}

/// A page's script (fetch/XHR) rather than a form navigation, by what only
/// scripts send: a fetch mode other than "navigate", `X-Requested-With`, a
/// JSON body or a JSON-only Accept. A client that says nothing (curl, old
/// browsers) is taken for a form.
pub(super) fn is_script(h: &HeaderMap) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    get("sec-fetch-mode").is_some_and(|m| m != "navigate")
        || h.contains_key("x-requested-with")
        || get("content-type").is_some_and(|c| c.contains("json"))
        || wants_json(h)
}

/// A client that is no browser page load: it asked for JSON (not HTML), or
/// is a script's request (`X-Requested-With`). It gets JSON answers, never a
/// page or a redirect to a form. (A client that states no Accept at all
/// keeps getting the redirect, as before: it is harmless to a script.)
pub(crate) fn is_machine(h: &HeaderMap) -> bool {
    if wants_json(h) {
        return true;
    }
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !accept.contains("text/html") && !is_navigation(h) && h.contains_key("x-requested-with")
}

/// A small JSON error answer `{"error": code}`.
pub(crate) fn json_error(status: StatusCode, code: &str) -> Response<Body> {
    json_answer(status, &serde_json::json!({ "error": code }))
}

/// A JSON answer of gatehouse's own, never cached.
fn json_answer(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(proxy::full(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn wants_json(h: &HeaderMap) -> bool {
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/html")
}

/// The local path and query the browser asked for (for return-to).
pub(super) fn local_target(facts: &Facts) -> String {
    let t = match &facts.query {
        Some(q) => format!("{}?{q}", facts.path),
        None => facts.path.clone(),
    };
    login::safe_return_to(&t)
}
