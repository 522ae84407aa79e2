//! Stage 4 of the flow: gatehouse's own pages under `/.gatehouse/` — the
//! second-factor challenge, enrollment and the account page. They are served
//! by gatehouse itself and never forwarded. Decisions come from `auth` and
//! `session`; HTML from `pages`; this module only wires a form to them.

use crate::audit::Event;
use crate::auth::lockout::LockState;
use crate::auth::totp::{self, TotpError, TotpSecret};
use crate::auth::two_factor::{CodeCheck, TwoFactorError};
use crate::client_ip::ClientIp;
use crate::error::GateError;
use crate::gate::{Gate, Live};
use crate::pages::{self, two_factor as view};
use crate::proxy::{self, Body};
use crate::session::cookie::{self as gh_cookie, SessionId};
use crate::session::{EndReason, Lookup, SecondFactor, Session, SessionState};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

mod account;
mod api;

use account::{account_action, account_page};

pub const PREFIX: &str = "/.gatehouse";
pub const CHALLENGE: &str = "/.gatehouse/2fa";
pub const ENROLL: &str = "/.gatehouse/2fa/enroll";
pub const ACCOUNT: &str = "/.gatehouse/account";
pub const PASSWORD_EXPIRED: &str = "/.gatehouse/password-expired";
/// Where a JSON client posts the code of a challenge it got from a JSON login.
pub const API_CHALLENGE: &str = "/.gatehouse/api/2fa";

/// Is this path one of gatehouse's own?
pub fn is_own(path: &str) -> bool {
    path == PREFIX || path.starts_with("/.gatehouse/")
}

/// What the flow established before this stage.
pub struct Ctx<'a> {
    pub gate: &'a Gate,
    pub live: &'a Arc<Live>,
    pub client: ClientIp,
    pub host: &'a str,
    pub now_ms: u64,
}

impl Ctx<'_> {
    fn brand(&self) -> &str {
        &self.live.settings.server.brand
    }
    fn now_unix(&self) -> u64 {
        self.now_ms / 1000
    }
    fn audit<'e>(&self, event: &'e str, user: &'e str, session: &'e Session) -> Event<'e> {
        Event {
            event,
            user: Some(user),
            ip: Some(self.client.to_string()),
            session: Some(gh_cookie::short_ref(&session.digest)),
            ..Event::default()
        }
    }
}

pub async fn handle(
    ctx: &Ctx<'_>,
    req: Request<Body>,
    path: &str,
    lookup: Lookup,
) -> Result<Response<Body>, GateError> {
    let admin = ctx.live.settings.admin_path.as_str();
    if path == admin
        || path
            .strip_prefix(admin)
            .is_some_and(|rest| rest.starts_with('/'))
    {
        return crate::admin::console::handle(ctx, req, path, lookup).await;
    }
    if path == API_CHALLENGE {
        // Authenticated by the challenge id in the body, not by a cookie.
        return api::api_challenge_submit(ctx, req).await;
    }
    let session = match lookup {
        Lookup::Live(s) => Some(*s),
        _ => None,
    };
    let Some(session) = session.filter(|s| s.record.user.is_some()) else {
        // No signed-in (or half signed-in) session: start at the dashboard's login.
        return match path {
            CHALLENGE | ENROLL | ACCOUNT => Ok(see_other(&ctx.live.settings.login.path)),
            _ => Err(GateError::NotFound),
        };
    };
    let method = req.method().clone();
    match (method, path) {
        (Method::GET, CHALLENGE) => challenge_page(ctx, &session, None),
        (Method::POST, CHALLENGE) => {
            let form = read_form(ctx, req, &session).await?;
            challenge_submit(ctx, session, &form).await
        }
        (Method::GET, ENROLL) => enroll_page(ctx, session, None).await,
        (Method::POST, ENROLL) => {
            let form = read_form(ctx, req, &session).await?;
            enroll_submit(ctx, session, &form).await
        }
        (Method::GET, ACCOUNT) => account_page(ctx, &session, None, None).await,
        (Method::GET, PASSWORD_EXPIRED) => {
            let user = session.record.user.clone().unwrap_or_default();
            let Some(policy) = ctx
                .live
                .settings
                .password
                .as_ref()
                .map(|p| p.for_user(&user))
            else {
                return Err(GateError::NotFound);
            };
            let later = (!policy.enforce_expiry).then_some("/");
            Ok(pages::password::expired(
                ctx.brand(),
                &policy.change_path,
                later,
            ))
        }
        (Method::POST, p) if p.starts_with("/.gatehouse/account/") => {
            let action = p.trim_start_matches("/.gatehouse/account/").to_string();
            let form = read_form(ctx, req, &session).await?;
            account_action(ctx, session, &action, &form).await
        }
        (_, CHALLENGE | ENROLL | ACCOUNT) => Err(GateError::MethodNotAllowed),
        _ => Err(GateError::NotFound),
    }
}

fn challenge_page(
    ctx: &Ctx<'_>,
    s: &Session,
    error: Option<&str>,
) -> Result<Response<Body>, GateError> {
    match (s.record.state, s.record.second_factor) {
        (SessionState::PasswordOk, Some(SecondFactor::Challenge)) => {
            Ok(view::challenge(ctx.brand(), &s.record.csrf, error))
        }
        (SessionState::PasswordOk, Some(SecondFactor::Enroll)) => Ok(see_other(ENROLL)),
        _ => Ok(see_other("/")),
    }
}

async fn challenge_submit(
    ctx: &Ctx<'_>,
    s: Session,
    form: &HashMap<String, String>,
) -> Result<Response<Body>, GateError> {
    if !(s.record.state == SessionState::PasswordOk
        && s.record.second_factor == Some(SecondFactor::Challenge))
    {
        return Ok(see_other("/"));
    }
    let user = s.record.user.clone().unwrap_or_default();
    let ip = ctx.client.to_string();
    if ctx.live.lockout.check(&user, &ip).await.map_err(store)? != LockState::Open {
        return locked_out(ctx, &s, &user).await;
    }
    let code = form.get("code").map(String::as_str).unwrap_or("");
    let check = ctx
        .gate
        .two_factor
        .check(&user, code, ctx.now_unix())
        .await
        .map_err(two_factor)?;
    match check {
        CodeCheck::Accepted | CodeCheck::RecoveryCodeUsed { .. } => {
            let event = if check == CodeCheck::Accepted {
                "two_factor_ok"
            } else {
                "recovery_code_used"
            };
            ctx.audit(event, &user, &s).emit();
            complete_sign_in(ctx, s, &user).await
        }
        CodeCheck::Refused(e) => {
            if wrong_code(ctx, &s, &user, &ip, e).await? {
                return locked_out(ctx, &s, &user).await;
            }
            challenge_page(
                ctx,
                &s,
                Some("That code did not work. Check your authenticator and try again."),
            )
        }
    }
}

/// A refused code, from the page or the JSON step alike: audited, in the
/// user's sign-in history, and counted towards the shared lockout.
/// `true` = this failure locked the user.
async fn wrong_code(
    ctx: &Ctx<'_>,
    s: &Session,
    user: &str,
    ip: &str,
    e: TotpError,
) -> Result<bool, GateError> {
    let mut ev = ctx.audit("two_factor_failed", user, s);
    ev.reason = Some(refusal(e));
    ev.emit();
    let rec = crate::incidents::history::LoginRecord {
        ts_ms: ctx.now_ms,
        user: user.to_string(),
        ip: ip.to_string(),
        country: s.record.country.clone().unwrap_or_else(|| "unknown".into()),
        user_agent: s.record.user_agent.clone(),
        result: crate::incidents::history::LoginResult::BadCode,
    };
    if let Err(e) = ctx.live.incidents.record(rec).await {
        tracing::warn!(error = %e, "cannot record the sign-in attempt");
    }
    let locked = ctx
        .live
        .lockout
        .record_failure(user, ip)
        .await
        .map_err(store)?;
    if locked {
        ctx.audit("user_locked", user, s).emit();
    }
    Ok(locked)
}

async fn enroll_page(
    ctx: &Ctx<'_>,
    mut s: Session,
    error: Option<&str>,
) -> Result<Response<Body>, GateError> {
    let user = s.record.user.clone().unwrap_or_default();
    if !may_enroll(ctx, &s, &user).await? {
        return Ok(see_other("/"));
    }
    let secret = match &s.record.pending_seed {
        Some(sealed) => ctx.gate.two_factor.unseal(sealed).map_err(two_factor)?,
        None => {
            let secret = TotpSecret::generate();
            s.record_mut().pending_seed =
                Some(ctx.gate.two_factor.seal(&secret).map_err(two_factor)?);
            if !ctx
                .live
                .sessions
                .save(&mut s, ctx.now_ms)
                .await
                .map_err(store)?
            {
                return Ok(see_other(ENROLL));
            }
            secret
        }
    };
    let uri = totp::otpauth_uri(&secret, &ctx.live.settings.two_factor.issuer, &user);
    let qr =
        pages::qr::svg(&uri).map_err(|_| GateError::BadRequest("cannot render the QR code"))?;
    Ok(view::enroll(
        ctx.brand(),
        &s.record.csrf,
        &qr,
        &secret.to_base32(),
        ctx.live.settings.two_factor.confirm_password,
        error,
    ))
}

/// Enrollment is for a session told to enroll, or a signed-in user without
/// an authenticator where the policy lets them choose.
async fn may_enroll(ctx: &Ctx<'_>, s: &Session, user: &str) -> Result<bool, GateError> {
    match (s.record.state, s.record.second_factor) {
        (SessionState::PasswordOk, Some(SecondFactor::Enroll)) => Ok(true),
        (SessionState::Active, _) => Ok(!ctx
            .gate
            .two_factor
            .is_enrolled(user)
            .await
            .map_err(two_factor)?),
        _ => Ok(false),
    }
}

async fn enroll_submit(
    ctx: &Ctx<'_>,
    s: Session,
    form: &HashMap<String, String>,
) -> Result<Response<Body>, GateError> {
    let user = s.record.user.clone().unwrap_or_default();
    if !may_enroll(ctx, &s, &user).await? {
        return Ok(see_other("/"));
    }
    let Some(pending) = s.record.pending_seed.clone() else {
        return Ok(see_other(ENROLL));
    };
    let code = form.get("code").map(String::as_str).unwrap_or("");
    if ctx.live.settings.two_factor.confirm_password {
        let password = form.get("password").map(String::as_str).unwrap_or("");
        if !dashboard_accepts(ctx, &user, password).await? {
            let mut ev = ctx.audit("login_failed", &user, &s);
            ev.reason = Some("enrollment_password");
            ev.emit();
            if ctx
                .live
                .lockout
                .record_failure(&user, &ctx.client.to_string())
                .await
                .map_err(store)?
            {
                return locked_out(ctx, &s, &user).await;
            }
            return enroll_page(ctx, s, Some("That password is not right.")).await;
        }
    }
    let confirmed = ctx
        .gate
        .two_factor
        .confirm_enrollment(&user, &pending, code, ctx.now_unix(), ctx.now_ms)
        .await;
    let codes = match confirmed {
        Ok(Ok(codes)) => codes,
        Ok(Err(e)) => {
            let mut ev = ctx.audit("two_factor_failed", &user, &s);
            ev.reason = Some(refusal(e));
            ev.emit();
            let ip = ctx.client.to_string();
            if ctx
                .live
                .lockout
                .record_failure(&user, &ip)
                .await
                .map_err(store)?
            {
                return locked_out(ctx, &s, &user).await;
            }
            return enroll_page(
                ctx,
                s,
                Some("That code did not match. Scan the code again and enter the current code."),
            )
            .await;
        }
        Err(TwoFactorError::AlreadyEnrolled) => return Ok(see_other(CHALLENGE)),
        Err(e) => return Err(two_factor(e)),
    };
    ctx.audit("two_factor_enrolled", &user, &s).emit();
    let continue_to = s.record.return_to.clone().unwrap_or_else(|| "/".into());
    if s.record.state == SessionState::Active {
        let mut s = s;
        let record = s.record_mut();
        record.pending_seed = None;
        record.two_factor_passed = true;
        ctx.live
            .sessions
            .save(&mut s, ctx.now_ms)
            .await
            .map_err(store)?;
        return Ok(view::recovery_codes(ctx.brand(), &codes, ACCOUNT));
    }
    // Show the codes once, then continue where the user was going.
    let signed_in = complete_sign_in(ctx, s, &user).await?;
    let mut page = view::recovery_codes(ctx.brand(), &codes, &continue_to);
    for v in signed_in.headers().get_all(header::SET_COOKIE) {
        page.headers_mut().append(header::SET_COOKIE, v.clone());
    }
    Ok(page)
}

/// Re-check a password by replaying it to the dashboard's own login (it
/// keeps the passwords). The answer's cookies are discarded: only the verdict
/// counts, judged by the same `[login.success]` rule as every sign-in.
async fn dashboard_accepts(ctx: &Ctx<'_>, user: &str, password: &str) -> Result<bool, GateError> {
    let login = &ctx.live.settings.login;
    if password.is_empty() {
        return Ok(false);
    }
    let (content_type, body) = if login.username_field.starts_with('/') {
        let mut doc = serde_json::Value::Null;
        for (pointer, value) in [
            (&login.username_field, user),
            (&login.password_field, password),
        ] {
            set_pointer(&mut doc, pointer, value);
        }
        ("application/json", doc.to_string())
    } else {
        let mut form = form_urlencoded::Serializer::new(String::new());
        if login.fixed_username.is_none() {
            form.append_pair(&login.username_field, user);
        }
        let body = form.append_pair(&login.password_field, password).finish();
        ("application/x-www-form-urlencoded", body)
    };
    let req = Request::post(login.path.as_str())
        .header(header::CONTENT_TYPE, content_type)
        .body(proxy::full(body))
        .map_err(|_| GateError::BadRequest("cannot build the password check"))?;
    let path = http::uri::PathAndQuery::try_from(login.path.as_str())
        .map_err(|_| GateError::BadRequest("login.path"))?;
    let resp = ctx
        .live
        .upstream
        .forward(
            req,
            proxy::client::Forward {
                path_and_query: path,
                host: ctx.host,
                client: ctx.client,
            },
            None,
            None,
        )
        .await?;
    Ok(login.succeeded(resp.status(), resp.headers()))
}

/// Write `value` at a JSON pointer such as "/user/name", creating objects.
fn set_pointer(doc: &mut serde_json::Value, pointer: &str, value: &str) {
    let mut cur = doc;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = serde_json::Value::Object(serde_json::Map::new());
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert(
                (*part).to_string(),
                serde_json::Value::String(value.to_string()),
            );
            return;
        }
        cur = map
            .entry((*part).to_string())
            .or_insert(serde_json::Value::Null);
    }
}

/// The second factor passed: the session becomes active under a new id
/// (SECURITY-TESTS 31), older sessions end if concurrent ones are prevented.
async fn complete_sign_in(
    ctx: &Ctx<'_>,
    old: Session,
    user: &str,
) -> Result<Response<Body>, GateError> {
    let live = ctx.live;
    let mut record = crate::session::SessionRecord::clone(&old.record);
    record.state = SessionState::Active;
    record.two_factor_passed = true;
    record.second_factor = None;
    record.pending_seed = None;
    record.api_challenge = false;
    record.csrf = SessionId::generate().as_cookie_value().to_string();
    record.last_seen_ms = ctx.now_ms;
    let mut return_to = record.return_to.take().unwrap_or_else(|| "/".into());
    if record.password_expired {
        return_to = PASSWORD_EXPIRED.to_string();
    }
    let (id, session) = live
        .sessions
        .start(record, ctx.now_ms, Some(&old))
        .await
        .map_err(store)?;
    if live.sessions.rules.prevent_concurrent {
        live.sessions
            .end_user_sessions(user, &session.digest, EndReason::Replaced)
            .await
            .map_err(store)?;
    }
    live.lockout.record_success(user).await.map_err(store)?;
    ctx.gate
        .two_factor
        .note_sign_in(user, ctx.now_ms)
        .await
        .map_err(two_factor)?;
    let mut resp = see_other(&crate::auth::login::safe_return_to(&return_to));
    let max_age = (!live.sessions.rules.expire_on_browser_close)
        .then(|| live.sessions.rules.lifetime(&session.record.class));
    resp.headers_mut()
        .append(header::SET_COOKIE, gh_cookie::set_session(&id, max_age));
    Ok(resp)
}

async fn locked_out(ctx: &Ctx<'_>, s: &Session, user: &str) -> Result<Response<Body>, GateError> {
    ctx.live
        .sessions
        .end(&s.digest, Some(user), EndReason::Revoked)
        .await
        .map_err(store)?;
    let mut resp = pages::locked(ctx.brand());
    resp.headers_mut()
        .append(header::SET_COOKIE, gh_cookie::clear_session());
    Ok(resp)
}
/// Read a gatehouse form: bounded size, and only from this site with this
/// session's token (SECURITY-TESTS 27, 34).
pub(crate) async fn read_form(
    ctx: &Ctx<'_>,
    req: Request<Body>,
    s: &Session,
) -> Result<HashMap<String, String>, GateError> {
    let headers = req.headers().clone();
    let from_elsewhere = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o != "null" && !o.eq_ignore_ascii_case(&format!("https://{}", ctx.host)))
        || headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site");
    let limits = &ctx.live.settings.server.limits;
    let body = crate::gate::read_bounded(
        req.into_body(),
        &headers,
        limits.max_form_bytes,
        limits.header_read_timeout,
    )
    .await?;
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    let token_ok: bool = token.as_bytes().ct_eq(s.record.csrf.as_bytes()).into();
    if from_elsewhere || !token_ok || token.is_empty() {
        return Err(GateError::Forbidden);
    }
    Ok(form)
}

fn refusal(e: TotpError) -> &'static str {
    match e {
        TotpError::Malformed => "malformed",
        TotpError::Wrong => "wrong_code",
        TotpError::Replayed => "replayed_code",
    }
}

pub(crate) fn see_other(to: &str) -> Response<Body> {
    let mut r = Response::new(proxy::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn store(e: crate::store::StoreError) -> GateError {
    tracing::debug!(error = %e, "store error: failing closed");
    GateError::StoreUnavailable
}

fn two_factor(e: TwoFactorError) -> GateError {
    match e {
        TwoFactorError::Store(_) => GateError::StoreUnavailable,
        other => {
            tracing::error!(error = %other, "second factor unavailable");
            GateError::StoreUnavailable
        }
    }
}

pub(crate) fn format_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
