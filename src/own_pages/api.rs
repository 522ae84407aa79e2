//! The JSON second-factor step for apps that log in through the
//! dashboard's JSON API and cannot show a challenge page (docs/api.md).

use super::*;

/// The JSON 2FA step (docs/api.md): `{"challenge": "<id>", "code": "123456"}`
/// → 200 `{"ok": true}` with the session cookie, or a JSON error. The id is
/// the pending session's, found by its SHA-256 digest (no comparison of
/// secrets in variable time), dead after a success (the session moves to a
/// new id), at lockout and after 15 minutes. Wrong codes count towards the
/// same lockout as wrong passwords. No cookie authenticates this request,
/// so it needs no CSRF token; it must be JSON all the same.
pub(super) async fn api_challenge_submit(
    ctx: &Ctx<'_>,
    req: Request<Body>,
) -> Result<Response<Body>, GateError> {
    use crate::gate::json_error;
    if req.method() != Method::POST {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(r);
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let headers = req.headers().clone();
    let limits = &ctx.live.settings.server.limits;
    let body = crate::gate::read_bounded(
        req.into_body(),
        &headers,
        limits.max_form_bytes,
        limits.header_read_timeout,
    )
    .await?;
    #[derive(serde::Deserialize)]
    struct Submission {
        challenge: String,
        code: String,
    }
    let Some(sub) = is_json
        .then(|| serde_json::from_slice::<Submission>(&body).ok())
        .flatten()
    else {
        return Ok(json_error(StatusCode::BAD_REQUEST, "bad_request"));
    };
    let invalid = || json_error(StatusCode::UNAUTHORIZED, "invalid_challenge");
    let Some(id) = SessionId::parse(sub.challenge.trim()) else {
        return Ok(invalid());
    };
    let lookup = ctx
        .live
        .sessions
        .lookup(&id, ctx.now_ms)
        .await
        .map_err(store)?;
    let s = match lookup {
        Lookup::Live(s)
            if s.record.api_challenge
                && s.record.state == SessionState::PasswordOk
                && s.record.second_factor == Some(SecondFactor::Challenge) =>
        {
            *s
        }
        _ => return Ok(invalid()),
    };
    let user = s.record.user.clone().unwrap_or_default();
    let ip = ctx.client.to_string();
    if !ctx
        .live
        .settings
        .service_accounts
        .admits(&user, ctx.client.addr())
    {
        return Ok(json_error(StatusCode::FORBIDDEN, "address_not_allowed"));
    }
    if ctx.live.lockout.check(&user, &ip).await.map_err(store)? != LockState::Open {
        return api_locked_out(ctx, &s, &user).await;
    }
    let check = ctx
        .gate
        .two_factor
        .check(&user, sub.code.trim(), ctx.now_unix())
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
            let redirect = complete_sign_in(ctx, s, &user).await?;
            let mut r = Response::new(proxy::full(r#"{"ok":true}"#));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            for v in redirect.headers().get_all(header::SET_COOKIE) {
                h.append(header::SET_COOKIE, v.clone());
            }
            Ok(r)
        }
        CodeCheck::Refused(e) => {
            if wrong_code(ctx, &s, &user, &ip, e).await? {
                return api_locked_out(ctx, &s, &user).await;
            }
            Ok(json_error(StatusCode::UNAUTHORIZED, "wrong_code"))
        }
    }
}

async fn api_locked_out(
    ctx: &Ctx<'_>,
    s: &Session,
    user: &str,
) -> Result<Response<Body>, GateError> {
    ctx.live
        .sessions
        .end(&s.digest, Some(user), EndReason::Revoked)
        .await
        .map_err(store)?;
    Ok(crate::gate::json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "locked",
    ))
}
