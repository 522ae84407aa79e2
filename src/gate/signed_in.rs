//! Stage 6 with a signed-in session: the vault rides along, logout ends
//! the session, the change-password form meets the policy, websockets end
//! with their session.

use super::*;

impl Gate {
    /// 6b. A signed-in request: the vault rides along; logout ends the session.
    pub(super) async fn signed_in(
        &self,
        live: &Arc<Live>,
        req: Request<Body>,
        target: PathAndQuery,
        facts: &mut Facts,
        // Boxed, as the lookup gave it: this future is part of every
        // signed-in request's, and an argument's slot lasts as long as it.
        mut session: Box<Session>,
        upstream_time: &mut Option<Duration>,
    ) -> Result<Response<Body>, GateError> {
        let logout = live.settings.login.is_logout(&facts.path);
        let user = session.record.user.as_deref().unwrap_or_default();
        if let Some(policy) = live.settings.password.as_ref().map(|p| p.for_user(user)) {
            let is_change = facts.path == policy.change_path;
            if is_change && req.method() == Method::POST {
                return Box::pin(self.change_password(
                    live,
                    req,
                    target,
                    facts,
                    *session,
                    upstream_time,
                ))
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
        // The vault is read when the request is rewritten, before the future
        // is made: the answer may change it below.
        let mut resp = self
            .forward_upgradable(
                live,
                parts,
                body,
                target,
                facts,
                Some(&session.record.vault),
                on_upgrade,
                guard,
                upstream_time,
            )
            .await?;
        if logout {
            let user = session.record.user.clone();
            strip_http_only(resp.headers_mut());
            // Where the dashboard sends a signed-out user stays on this site
            // (a `?next=` on its logout must not become an open redirect).
            let made_local = resp.headers().get(header::LOCATION).map(|l| {
                let l = l.to_str().unwrap_or("/");
                login::local_location(l, &facts.host)
            });
            if let Some(local) = made_local.and_then(|l| HeaderValue::from_str(&l).ok()) {
                resp.headers_mut().insert(header::LOCATION, local);
            }
            Box::pin(
                live.sessions
                    .end(&session.digest, user.as_deref(), EndReason::Logout),
            )
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
        // Most answers set no cookie: then the record, shared with the
        // lookup's memo, is not copied.
        let (names, changed) = if resp.headers().contains_key(header::SET_COOKIE) {
            session
                .record_mut()
                .vault
                .absorb(resp.headers_mut(), &facts.path, facts.now_ms)
        } else {
            (Vec::new(), false)
        };
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
    pub(super) async fn change_password(
        &self,
        live: &Arc<Live>,
        req: Request<Body>,
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
            return Ok(password_refused(
                &settings,
                &user,
                facts.client,
                &broken,
                &policy.change_path,
            ));
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
                .record_mut()
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
            session.record_mut().password_expired &= !changed;
            live.sessions
                .save(&mut session, facts.now_ms)
                .await
                .map_err(store_down)?;
        }
        Ok(Response::from_parts(head, body))
    }
}

impl Gate {
    /// 6a. The dashboard's forgot-password form: the new password meets the
    /// policy's rules (and, for a signed-in user, reuse) but not the minimum
    /// age. Gives the request back, its body read, or the refusal page. The
    /// dashboard decides whether the reset happens; history is recorded by
    /// the change form only, where gatehouse knows whose password it is.
    pub(super) async fn check_reset(
        &self,
        live: &Arc<Live>,
        req: Request<Body>,
        facts: &Facts,
        lookup: &Lookup,
    ) -> Result<Result<Request<Body>, Response<Body>>, GateError> {
        let settings = &live.settings;
        let Some(policies) = settings.password.as_ref() else {
            return Ok(Ok(req));
        };
        let user = match lookup {
            Lookup::Live(s) if s.record.state == SessionState::Active => {
                s.record.user.clone().unwrap_or_default()
            }
            _ => String::new(),
        };
        let policy = policies.for_user(&user);
        let FormBody {
            parts,
            bytes,
            content_type,
        } = FormBody::read(req, &settings.server.limits).await?;
        let Some(new) = login::field(&content_type, &bytes, &policy.new_field) else {
            // Not the reset step itself (e.g. the "send me a link" form).
            return Ok(Ok(Request::from_parts(parts, proxy::full(bytes))));
        };
        let confirm = login::field(&content_type, &bytes, &policy.confirm_field);
        let mut broken = policy.check(&new, None, confirm.as_deref());
        if !user.is_empty() {
            let history = self.passwords.history(&user).await.map_err(store_down)?;
            let no_min_age = crate::auth::password::PasswordPolicy {
                min_age: None,
                ..policy.clone()
            };
            broken.extend(no_min_age.check_history(&history, &new, facts.now_ms));
        }
        if !broken.is_empty() {
            // Back to the form, with its token if the URL carried one.
            let form = local_target(facts);
            return Ok(Err(password_refused(
                settings,
                &user,
                facts.client,
                &broken,
                &form,
            )));
        }
        Ok(Ok(Request::from_parts(parts, proxy::full(bytes))))
    }
}

/// Closes a spliced websocket once its session is no longer live (logout,
/// log-out-all, timeouts: SECURITY-TESTS 26), or when the store cannot say.
pub(super) fn websocket_guard(
    live: Arc<Live>,
    digest: String,
    clock: SharedClock,
) -> proxy::client::Guard {
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

pub(super) fn take_upgrade(parts: &mut http::request::Parts) -> Option<hyper::upgrade::OnUpgrade> {
    if parts.version == Version::HTTP_11
        && proxy::headers::upgrade_protocol(&parts.headers).is_some()
    {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    }
}

/// The page (and audit line) for a new password that breaks the policy.
pub(super) fn password_refused(
    settings: &Settings,
    user: &str,
    client: ClientIp,
    broken: &[crate::auth::password::Violation],
    form: &str,
) -> Response<Body> {
    use crate::auth::password::Violation;
    let reason = broken
        .iter()
        .map(Violation::code)
        .collect::<Vec<_>>()
        .join(",");
    Event {
        event: "password_refused",
        user: (!user.is_empty()).then_some(user),
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
    pages::password::refused(&settings.server.brand, &messages, form)
}

/// A dashboard answer gatehouse must read (a change-password result), at
/// most 256 KiB.
pub(super) async fn read_answer(mut body: Body) -> Result<bytes::Bytes, GateError> {
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

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
