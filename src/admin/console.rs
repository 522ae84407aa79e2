//! The admin console under `admin.path`: served by gatehouse, never
//! forwarded. Only for `admin.users` with a session that passed the second
//! factor; every action is a POST with the session's CSRF token and an audit
//! event naming the admin.

use super::ops::Admin;
use crate::error::GateError;
use crate::own_pages::{self, Ctx};
use crate::pages::admin as view;
use crate::proxy::Body;
use crate::session::cookie as gh_cookie;
use crate::session::{Lookup, SecondFactor, Session, SessionState};
use http::{header, Method, Request, Response};
use std::collections::HashMap;

pub async fn handle(
    ctx: &Ctx<'_>,
    req: Request<Body>,
    path: &str,
    lookup: Lookup,
) -> Result<Response<Body>, GateError> {
    let settings = &ctx.live.settings;
    let base = settings.admin_path.as_str();
    let Lookup::Live(session) = lookup else {
        let mut r = own_pages::see_other(&settings.login.path);
        r.headers_mut()
            .append(header::SET_COOKIE, gh_cookie::set_return(base));
        return Ok(r);
    };
    let mut session = *session;
    let user = session.record.user.clone().unwrap_or_default();
    if session.record.state != SessionState::Active {
        return Ok(own_pages::see_other(own_pages::CHALLENGE));
    }
    if !settings.admin_users.contains(&user) {
        return Err(GateError::AdminOnly);
    }
    if !session.record.two_factor_passed {
        return step_up(ctx, &mut session, &user, base).await;
    }
    let incidents = &ctx.live.incidents;
    let admin = Admin::over(
        ctx.gate.store.clone(),
        ctx.gate.sealer.clone(),
        settings.clone(),
    );
    let sub = path.strip_prefix(base).unwrap_or("");
    let query = req.uri().query().unwrap_or("").to_string();
    let brand = settings.server.brand.as_str();
    let csrf = session.record.csrf.clone();
    let page = |notice: Option<String>| view::Frame {
        brand,
        base,
        csrf: &csrf,
        notice,
    };
    match (req.method().clone(), sub) {
        (Method::GET, "" | "/") => {
            let sessions = admin.sessions(None, None).await.map_err(admin_err)?;
            let users = admin.users().await.map_err(admin_err)?;
            let open = incidents.list(false).await.map_err(incident_err)?.len();
            Ok(view::home(
                &page(None),
                &sessions,
                &users,
                &policy_lines(ctx),
                open,
            ))
        }
        (Method::GET, "/incidents") => {
            let list = incidents.list(true).await.map_err(incident_err)?;
            let users: std::collections::BTreeSet<String> = list
                .iter()
                .filter(|i| i.open)
                .map(|i| i.user.clone())
                .collect();
            let mut history = Vec::new();
            for user in users {
                let h = incidents.history(&user, 20).await.map_err(incident_err)?;
                history.push((user, h));
            }
            Ok(view::incidents(&page(None), &list, &history))
        }
        (Method::GET, "/trusted") => {
            let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let search = q.get("q").cloned().unwrap_or_default();
            let found = incidents.search_safe(&search).await.map_err(incident_err)?;
            Ok(view::trusted(&page(None), &found, &search))
        }
        (Method::GET, "/sessions") => {
            let filter: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let wanted = filter
                .get("user")
                .map(|u| u.trim().to_lowercase())
                .filter(|u| !u.is_empty());
            let class = filter
                .get("class")
                .map(|c| c.trim().to_lowercase())
                .filter(|c| !c.is_empty());
            let sessions = admin
                .sessions(wanted.as_deref(), class.as_deref())
                .await
                .map_err(admin_err)?;
            Ok(view::sessions(
                &page(None),
                &sessions,
                wanted.as_deref().unwrap_or(""),
                class.as_deref().unwrap_or(""),
            ))
        }
        (Method::GET, "/users") => {
            let users = admin.users().await.map_err(admin_err)?;
            Ok(view::users(&page(None), &users))
        }
        (Method::GET, "/policy") => Ok(view::policy(&page(None), &policy_lines(ctx))),
        (Method::POST, action) => {
            let form = own_pages::read_form(ctx, req, &session).await?;
            let field = |k: &str| {
                form.get(k)
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            let actor = user.as_str();
            let notice = match action {
                "/sessions/revoke" => {
                    admin
                        .revoke(&field("reference"), actor)
                        .await
                        .map_err(admin_err)?;
                    "Session ended.".to_string()
                }
                "/users/logout" => {
                    let n = admin
                        .logout_user(&field("user"), actor)
                        .await
                        .map_err(admin_err)?;
                    format!("{n} session(s) ended.")
                }
                "/logout-all" => {
                    if field("confirm") != "yes" {
                        return Err(GateError::BadRequest("log out all needs confirmation"));
                    }
                    admin
                        .logout_all(ctx.now_ms, actor)
                        .await
                        .map_err(admin_err)?;
                    // The admin's own session ended too: sign in again.
                    let mut r = own_pages::see_other(&settings.login.path);
                    r.headers_mut()
                        .append(header::SET_COOKIE, gh_cookie::set_return(base));
                    return Ok(r);
                }
                "/users/unlock" => {
                    admin
                        .unlock(&field("user"), actor)
                        .await
                        .map_err(admin_err)?;
                    "Unlocked.".to_string()
                }
                "/users/require-2fa" => {
                    admin
                        .require_two_factor(&field("user"), true, actor)
                        .await
                        .map_err(admin_err)?;
                    "Two-factor is now required for this user.".to_string()
                }
                "/users/disable-2fa" => {
                    admin
                        .remove_two_factor(&field("user"), false, actor)
                        .await
                        .map_err(admin_err)?;
                    "Two-factor key removed.".to_string()
                }
                "/incidents/close" => {
                    match incidents.close(&field("id"), &field("note"), actor).await {
                        Ok(()) => "Incident closed.".to_string(),
                        Err(crate::incidents::IncidentError::NoteRequired) => {
                            "Not closed: write a note saying why.".to_string()
                        }
                        Err(e) => return Err(incident_err(e)),
                    }
                }
                "/trusted/add" => {
                    let prefix = match field("prefix").as_str() {
                        "" => None,
                        p => Some(
                            p.parse::<u8>()
                                .map_err(|_| GateError::BadRequest("prefix"))?,
                        ),
                    };
                    match incidents
                        .mark_safe(
                            &field("domain"),
                            &field("ip"),
                            prefix,
                            &field("description"),
                            actor,
                            ctx.now_ms,
                        )
                        .await
                    {
                        Ok(e) => format!("{} marked safe.", e.network),
                        Err(crate::incidents::IncidentError::Safe(why)) => {
                            format!("Not marked: {why}.")
                        }
                        Err(e) => return Err(incident_err(e)),
                    }
                }
                "/trusted/remove" => {
                    incidents
                        .remove_safe(&field("domain"), &field("network"), actor)
                        .await
                        .map_err(incident_err)?;
                    "Removed.".to_string()
                }
                "/users/reset-2fa" => {
                    admin
                        .remove_two_factor(&field("user"), true, actor)
                        .await
                        .map_err(admin_err)?;
                    "Two-factor reset: the user enrolls again at the next sign-in.".to_string()
                }
                _ => return Err(GateError::NotFound),
            };
            let users = admin.users().await.map_err(admin_err)?;
            let sessions = admin.sessions(None, None).await.map_err(admin_err)?;
            let open = incidents.list(false).await.map_err(incident_err)?.len();
            Ok(view::home(
                &page(Some(notice)),
                &sessions,
                &users,
                &policy_lines(ctx),
                open,
            ))
        }
        _ => Err(GateError::NotFound),
    }
}

/// An admin whose sign-in did not pass a second factor proves it now.
async fn step_up(
    ctx: &Ctx<'_>,
    s: &mut Session,
    user: &str,
    base: &str,
) -> Result<Response<Body>, GateError> {
    let enrolled = ctx
        .gate
        .two_factor
        .is_enrolled(user)
        .await
        .map_err(|_| GateError::StoreUnavailable)?;
    if !enrolled {
        return Ok(own_pages::see_other(own_pages::ENROLL));
    }
    let record = s.record_mut();
    record.state = SessionState::PasswordOk;
    record.second_factor = Some(SecondFactor::Challenge);
    record.return_to = Some(base.to_string());
    ctx.live
        .sessions
        .save(s, ctx.now_ms)
        .await
        .map_err(own_pages::store)?;
    Ok(own_pages::see_other(own_pages::CHALLENGE))
}

/// The effective policy, one line per setting, for the read-only view.
fn policy_lines(ctx: &Ctx<'_>) -> Vec<(String, String)> {
    let s = &ctx.live.settings;
    let d = |d: std::time::Duration| crate::config::duration::format(d);
    let mut lines = vec![
        (
            "configuration file".into(),
            s.source
                .as_ref()
                .map_or("(built in)".into(), |p| p.display().to_string()),
        ),
        ("environment overrides".into(), {
            let vars: Vec<String> = std::env::vars()
                .map(|(k, _)| k)
                .filter(|k| k.starts_with("GATEHOUSE_"))
                .collect();
            if vars.is_empty() {
                "none".into()
            } else {
                vars.join(", ")
            }
        }),
        ("two_factor.mode".into(), s.two_factor.mode.as_str().into()),
        (
            "two_factor.trusted_networks".into(),
            s.two_factor
                .trusted_networks
                .entries()
                .iter()
                .map(|e| e.spec.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "session.absolute_timeout".into(),
            d(s.session.absolute_timeout),
        ),
        (
            "session.idle_timeout".into(),
            s.session.idle_timeout.map_or("disabled".into(), d),
        ),
        (
            "session.prevent_concurrent".into(),
            s.session.prevent_concurrent.to_string(),
        ),
        (
            "session.expire_on_browser_close".into(),
            s.session.expire_on_browser_close.to_string(),
        ),
        (
            "session.prelogin_per_address".into(),
            s.session.prelogin_per_address.to_string(),
        ),
        (
            "session.prelogin_total".into(),
            s.session.prelogin_total.to_string(),
        ),
        (
            "lockout.max_failures".into(),
            s.lockout.max_failures.to_string(),
        ),
        ("lockout.lock_for".into(), d(s.lockout.lock_for)),
        ("login.path".into(), s.login.path.clone()),
        ("admin.users".into(), s.admin_users.join(", ")),
    ];
    for (domain, mode) in &s.two_factor.domains {
        lines.push((
            format!("policy.domain {domain}: two_factor"),
            mode.as_str().into(),
        ));
    }
    lines
}

fn admin_err(e: super::AdminError) -> GateError {
    match e {
        super::AdminError::NoSuchSession(_) => GateError::NotFound,
        other => {
            tracing::warn!(error = %other, "admin operation failed");
            GateError::StoreUnavailable
        }
    }
}

fn incident_err(e: crate::incidents::IncidentError) -> GateError {
    match e {
        crate::incidents::IncidentError::NotFound(_) => GateError::NotFound,
        crate::incidents::IncidentError::Safe(_) => GateError::BadRequest("invalid safe network"),
        crate::incidents::IncidentError::NoteRequired => GateError::BadRequest("note"),
        crate::incidents::IncidentError::Store(_) => GateError::StoreUnavailable,
    }
}
