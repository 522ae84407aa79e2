//! The account page: the signed-in user's sessions and second factor, and
//! what they may do there: sign out their other sessions, and, with a valid
//! code, reset or turn off 2FA or renew their recovery codes.

use super::*;

pub(super) async fn account_page(
    ctx: &Ctx<'_>,
    s: &Session,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response<Body>, GateError> {
    if s.record.state != SessionState::Active {
        return Ok(see_other(CHALLENGE));
    }
    let user = s.record.user.clone().unwrap_or_default();
    let tf = &ctx.gate.two_factor;
    let enrolled = tf.is_enrolled(&user).await.map_err(two_factor)?;
    let profile = tf.profile(&user).await.map_err(two_factor)?;
    let mode = ctx
        .live
        .settings
        .two_factor
        .mode_for(&user, profile.two_factor_required);
    let sessions = ctx
        .live
        .sessions
        .of_user(&user)
        .await
        .map_err(store)?
        .into_iter()
        .filter(|o| o.record.state == SessionState::Active)
        .map(|o| {
            (
                gh_cookie::short_ref(&o.digest).to_string(),
                o.record.class.clone(),
                o.record.client_ip.clone(),
                format_ms(o.record.created_ms),
                o.digest == s.digest,
            )
        })
        .collect();
    let recent = ctx
        .live
        .incidents
        .history(&user, 10)
        .await
        .map_err(|_| GateError::StoreUnavailable)?
        .into_iter()
        .map(|r| (format_ms(r.ts_ms), r.ip, r.country, r.result.as_str()))
        .collect();
    Ok(view::account(
        ctx.brand(),
        &view::AccountView {
            user: &user,
            enrolled,
            may_disable: ctx.live.settings.two_factor.may_disable(mode),
            csrf: &s.record.csrf,
            sessions,
            notice,
            error,
            recent,
        },
    ))
}

pub(super) async fn account_action(
    ctx: &Ctx<'_>,
    s: Session,
    action: &str,
    form: &HashMap<String, String>,
) -> Result<Response<Body>, GateError> {
    if s.record.state != SessionState::Active {
        return Ok(see_other(CHALLENGE));
    }
    let user = s.record.user.clone().unwrap_or_default();
    let live = ctx.live;
    let tf = &ctx.gate.two_factor;
    if action == "sign-out-others" {
        let n = live
            .sessions
            .end_user_sessions(&user, &s.digest, EndReason::Revoked)
            .await
            .map_err(store)?;
        ctx.audit("sessions_ended", &user, &s).emit();
        let note = format!("Signed out {n} other session(s).");
        return account_page(ctx, &s, Some(&note), None).await;
    }
    if !matches!(action, "reset" | "disable" | "recovery") {
        return Err(GateError::NotFound);
    }
    // Every change to the second factor needs a valid current code.
    let code = form.get("code").map(String::as_str).unwrap_or("");
    match tf.check(&user, code, ctx.now_unix()).await {
        Ok(CodeCheck::Accepted) | Ok(CodeCheck::RecoveryCodeUsed { .. }) => {}
        Ok(CodeCheck::Refused(e)) => {
            let mut ev = ctx.audit("two_factor_failed", &user, &s);
            ev.reason = Some(refusal(e));
            ev.emit();
            if live
                .lockout
                .record_failure(&user, &ctx.client.to_string())
                .await
                .map_err(store)?
            {
                return locked_out(ctx, &s, &user).await;
            }
            return account_page(ctx, &s, None, Some("That code did not work.")).await;
        }
        Err(TwoFactorError::NotEnrolled) => return Ok(see_other(ENROLL)),
        Err(e) => return Err(two_factor(e)),
    }
    match action {
        "recovery" => {
            let codes = tf.new_recovery_codes(&user).await.map_err(two_factor)?;
            ctx.audit("recovery_codes_renewed", &user, &s).emit();
            Ok(view::recovery_codes(ctx.brand(), &codes, ACCOUNT))
        }
        "disable" => {
            let profile = tf.profile(&user).await.map_err(two_factor)?;
            let mode = live
                .settings
                .two_factor
                .mode_for(&user, profile.two_factor_required);
            if !live.settings.two_factor.may_disable(mode) {
                return account_page(ctx, &s, None, Some("Your organisation requires two-factor authentication; it cannot be turned off.")).await;
            }
            tf.remove(&user).await.map_err(two_factor)?;
            let mut ev = ctx.audit("two_factor_disabled", &user, &s);
            ev.actor = Some(&user);
            ev.emit();
            account_page(ctx, &s, Some("Two-factor authentication is off."), None).await
        }
        _ => {
            // Reset: a new key at the next sign-in; every session ends now.
            tf.remove(&user).await.map_err(two_factor)?;
            live.sessions
                .end_user_sessions(&user, "", EndReason::TwoFactorReset)
                .await
                .map_err(store)?;
            let mut ev = ctx.audit("two_factor_reset", &user, &s);
            ev.actor = Some(&user);
            ev.emit();
            let mut resp = see_other(&live.settings.login.path);
            resp.headers_mut()
                .append(header::SET_COOKIE, gh_cookie::clear_session());
            Ok(resp)
        }
    }
}
