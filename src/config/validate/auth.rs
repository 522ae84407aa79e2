//! `[login]`, `[session]`, `[lockout]`, `[two_factor]`, `[[policy.user]]`
//! and `[password]`: who may sign in, and how.

use super::*;

pub(super) fn validate_login(
    l: &crate::config::raw::RawLogin,
    issues: &mut Vec<ConfigIssue>,
) -> crate::auth::login::LoginSettings {
    check_path("login.path", &l.path, issues);
    for (i, p) in l.logout_paths.iter().enumerate() {
        check_path(&format!("login.logout_paths[{i}]"), p, issues);
    }
    for (i, p) in l.anonymous_paths.iter().enumerate() {
        check_path(&format!("login.anonymous_paths[{i}]"), p, issues);
        if p == "/" {
            issues.push(ConfigIssue::new(
                format!("login.anonymous_paths[{i}]"),
                "\"/\" would make the whole dashboard reachable without signing in",
            ));
        }
    }
    let fixed_username = match l.fixed_username.trim() {
        "" => None,
        raw => {
            let user = crate::auth::login::normalise_username(raw);
            if user.is_none() {
                issues.push(ConfigIssue::new(
                    "login.fixed_username",
                    "not a usable username (control characters or over 256 bytes)",
                ));
            }
            user
        }
    };
    if l.username_field.trim().is_empty() && fixed_username.is_none() {
        issues.push(ConfigIssue::new(
            "login.username_field",
            "must not be empty (for a password-only form set login.fixed_username)",
        ));
    }
    if l.password_field.trim().is_empty() {
        issues.push(ConfigIssue::new(
            "login.password_field",
            "must not be empty",
        ));
    }
    if l.success.status.is_empty() {
        issues.push(ConfigIssue::new(
            "login.success.status",
            "list at least one status code",
        ));
    }
    for (i, s) in l.success.status.iter().enumerate() {
        if !(100..=599).contains(s) {
            issues.push(ConfigIssue::new(
                format!("login.success.status[{i}]"),
                "not an HTTP status code",
            ));
        }
    }
    let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let json_rule = |key: &str, pointer: &str, equals: &str, issues: &mut Vec<ConfigIssue>| match (
        pointer.trim(),
        equals.trim(),
    ) {
        ("", "") => None,
        (p, _) if !p.starts_with('/') => {
            issues.push(ConfigIssue::new(
                format!("{key}.json_pointer"),
                "a JSON pointer such as \"/ok\" or \"/result/status\"",
            ));
            None
        }
        (_, "") => {
            issues.push(ConfigIssue::new(
                format!("{key}.json_equals"),
                "give the value a success has at json_pointer (as JSON: true, '\"ok\"', 1)",
            ));
            None
        }
        (p, e) => match serde_json::from_str(e) {
            Ok(equals) => Some(crate::auth::login::JsonSuccess {
                pointer: p.to_string(),
                equals,
            }),
            Err(_) => {
                issues.push(ConfigIssue::new(
                    format!("{key}.json_equals"),
                    "not JSON: write true, 1, or a string in quotes ('\"ok\"')",
                ));
                None
            }
        },
    };
    let mut api = Vec::new();
    for (i, a) in l.api.iter().enumerate() {
        let key = format!("login.api[{i}]");
        check_path(&format!("{key}.path"), &a.path, issues);
        if a.path
            .trim_end_matches('/')
            .eq_ignore_ascii_case(l.path.trim_end_matches('/'))
        {
            issues.push(ConfigIssue::new(
                format!("{key}.path"),
                "is login.path already; a JSON login needs its own path",
            ));
        }
        if !a.username_field.starts_with('/') {
            issues.push(ConfigIssue::new(
                format!("{key}.username_field"),
                "a JSON pointer such as \"/username\" or \"/user/name\"",
            ));
        }
        if a.status.is_empty() || a.status.iter().any(|s| !(100..=599).contains(s)) {
            issues.push(ConfigIssue::new(
                format!("{key}.status"),
                "list HTTP status codes of a successful login",
            ));
        }
        api.push(crate::auth::login::ApiLogin {
            path: a.path.clone(),
            username_field: a.username_field.clone(),
            success_status: a.status.clone(),
            set_cookie: opt(&a.set_cookie),
            json: json_rule(&key, &a.json_pointer, &a.json_equals, issues),
        });
    }
    crate::auth::login::LoginSettings {
        api,
        path: l.path.clone(),
        username_field: l.username_field.clone(),
        fixed_username,
        password_field: l.password_field.clone(),
        success_status: l.success.status.clone(),
        location_not: opt(&l.success.location_not),
        set_cookie: opt(&l.success.set_cookie),
        json: json_rule(
            "login.success",
            &l.success.json_pointer,
            &l.success.json_equals,
            issues,
        ),
        logout_paths: l.logout_paths.clone(),
        anonymous_paths: l.anonymous_paths.clone(),
        session_cookies: l.session_cookies.clone(),
    }
}

pub(super) fn validate_session(
    s: &crate::config::raw::RawSession,
    issues: &mut Vec<ConfigIssue>,
) -> crate::session::SessionRules {
    if s.absolute_timeout.0.is_zero() {
        issues.push(ConfigIssue::new(
            "session.absolute_timeout",
            "must be longer than 0",
        ));
    }
    if let Some(idle) = s.idle_timeout.0 {
        if idle >= s.absolute_timeout.0 {
            issues.push(ConfigIssue::new(
                "session.idle_timeout",
                "must be shorter than session.absolute_timeout (or \"disabled\")",
            ));
        }
    }
    let mut classes = Vec::new();
    for (i, c) in s.class.iter().enumerate() {
        if !matches!(c.name.as_str(), "mobile" | "desktop") {
            issues.push(ConfigIssue::new(
                format!("session.class[{i}].name"),
                "must be \"mobile\" or \"desktop\"",
            ));
        }
        if c.user_agent.is_empty() && c.path_prefixes.is_empty() {
            issues.push(ConfigIssue::new(
                format!("session.class[{i}]"),
                "set user_agent or path_prefixes, or the class never matches",
            ));
        }
        let two_factor = match c.two_factor.as_deref() {
            None | Some("inherit") => None,
            Some(m) => match crate::auth::two_factor::Mode::parse(m) {
                Some(crate::auth::two_factor::Mode::Optional) | None => {
                    issues.push(ConfigIssue::new(
                        format!("session.class[{i}].two_factor"),
                        "must be \"inherit\", \"off\", \"required\" or \"outside_trusted\"",
                    ));
                    None
                }
                m => m,
            },
        };
        classes.push(crate::session::rules::ClientClass {
            two_factor,
            name: c.name.clone(),
            user_agent: c.user_agent.clone(),
            path_prefixes: c.path_prefixes.clone(),
            expire_after: c.expire_after.0,
        });
    }
    for (key, value) in [
        ("session.prelogin_per_address", s.prelogin_per_address),
        ("session.prelogin_total", s.prelogin_total),
    ] {
        if value == 0 {
            issues.push(ConfigIssue::new(
                key,
                "must be at least 1 (0 would refuse every first visit to the sign-in page)",
            ));
        }
    }
    crate::session::SessionRules {
        absolute_timeout: s.absolute_timeout.0,
        idle_timeout: s.idle_timeout.0,
        expire_on_browser_close: s.expire_on_browser_close,
        prevent_concurrent: s.prevent_concurrent,
        classes,
        prelogin_per_address: s.prelogin_per_address,
        prelogin_total: s.prelogin_total,
    }
}

pub(super) fn validate_lockout(
    l: &crate::config::raw::RawLockout,
    issues: &mut Vec<ConfigIssue>,
) -> crate::auth::lockout::LockoutSettings {
    if l.max_failures == 0 {
        issues.push(ConfigIssue::new(
            "lockout.max_failures",
            "must be at least 1",
        ));
    }
    if l.ip_max_failures == 0 {
        issues.push(ConfigIssue::new(
            "lockout.ip_max_failures",
            "must be at least 1",
        ));
    }
    if l.lock_for.0.is_zero() {
        issues.push(ConfigIssue::new(
            "lockout.lock_for",
            "must be longer than 0",
        ));
    }
    crate::auth::lockout::LockoutSettings {
        max_failures: l.max_failures,
        lock_for: l.lock_for.0,
        ip_max_failures: l.ip_max_failures,
        ip_window: l.ip_window.0,
    }
}

pub(super) fn validate_two_factor(
    raw: &RawConfig,
    issues: &mut Vec<ConfigIssue>,
) -> crate::auth::two_factor::TwoFactorSettings {
    use crate::auth::two_factor::{Mode, TwoFactorSettings};
    let t = &raw.two_factor;
    let mode = Mode::parse(&t.mode).unwrap_or_else(|| {
        issues.push(ConfigIssue::new(
            "two_factor.mode",
            "must be \"off\", \"optional\", \"required\" or \"outside_trusted\"",
        ));
        Mode::Required
    });
    let trusted_networks = ip_list(&t.trusted_networks, "two_factor.trusted_networks", issues);
    if mode == Mode::OutsideTrusted && trusted_networks.is_empty() {
        issues.push(ConfigIssue::new(
            "two_factor.trusted_networks",
            "\"outside_trusted\" needs at least one trusted network",
        ));
    }
    if t.issuer.trim().is_empty() || t.issuer.contains(':') {
        issues.push(ConfigIssue::new(
            "two_factor.issuer",
            "must be a non-empty name without \":\"",
        ));
    }
    let mut domains = Vec::new();
    for (i, d) in raw.policy.domain.iter().enumerate() {
        let name = d.domain.trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(['@', '/', ' ']) {
            issues.push(ConfigIssue::new(
                format!("policy.domain[{i}].domain"),
                "a domain such as \"example.com\"",
            ));
        }
        let m = match d.two_factor.as_deref().map(Mode::parse) {
            None => None,
            Some(Some(m)) => Some(m),
            Some(None) => {
                issues.push(ConfigIssue::new(
                    format!("policy.domain[{i}].two_factor"),
                    "must be \"off\", \"optional\", \"required\" or \"outside_trusted\"",
                ));
                None
            }
        };
        if let Some(m) = m {
            domains.push((name, m));
        }
    }
    let mut users = Vec::new();
    for (i, u) in raw.policy.user.iter().enumerate() {
        let Some(name) = crate::auth::login::normalise_username(&u.name) else {
            continue; // reported by validate_service_accounts
        };
        match u.two_factor.as_deref().map(Mode::parse) {
            None => users.push((name, Mode::Off)),
            Some(Some(m)) => users.push((name, m)),
            Some(None) => issues.push(ConfigIssue::new(
                format!("policy.user[{i}].two_factor"),
                "must be \"off\", \"optional\", \"required\" or \"outside_trusted\"",
            )),
        }
    }
    if users.iter().any(|(_, m)| *m == Mode::OutsideTrusted) && trusted_networks.is_empty() {
        issues.push(ConfigIssue::new(
            "two_factor.trusted_networks",
            "\"outside_trusted\" needs at least one trusted network",
        ));
    }
    TwoFactorSettings {
        users,
        mode,
        trusted_networks,
        issuer: t.issuer.trim().to_string(),
        domains,
        confirm_password: t.confirm_password,
    }
}

pub(super) fn validate_service_accounts(
    raw: &RawConfig,
    issues: &mut Vec<ConfigIssue>,
) -> crate::auth::service::ServiceAccounts {
    let mut out = Vec::new();
    for (i, u) in raw.policy.user.iter().enumerate() {
        let key = format!("policy.user[{i}]");
        let name = crate::auth::login::normalise_username(&u.name);
        if name.is_none() {
            issues.push(ConfigIssue::new(
                format!("{key}.name"),
                "not a valid username",
            ));
        }
        if let Some(n) = &name {
            if out
                .iter()
                .any(|a: &crate::auth::service::ServiceAccount| &a.name == n)
            {
                issues.push(ConfigIssue::new(format!("{key}.name"), "listed twice"));
            }
        }
        if u.allow.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{key}.allow"),
                "required: the addresses this service account signs in from",
            ));
        }
        let allow = ip_list(&u.allow, &format!("{key}.allow"), issues);
        let absolute_timeout = u.absolute_timeout.map(|d| d.0);
        if absolute_timeout.is_some_and(|d| d.is_zero()) {
            issues.push(ConfigIssue::new(
                format!("{key}.absolute_timeout"),
                "must be longer than 0",
            ));
        }
        if let Some(name) = name {
            out.push(crate::auth::service::ServiceAccount {
                name,
                allow,
                absolute_timeout,
            });
        }
    }
    crate::auth::service::ServiceAccounts(out)
}

pub(super) fn validate_password(
    p: &crate::config::raw::RawPassword,
    issues: &mut Vec<ConfigIssue>,
) -> Option<crate::auth::password::PasswordPolicy> {
    if p.change_path.trim().is_empty() {
        return None;
    }
    check_path("password.change_path", &p.change_path, issues);
    let forgot_path = (!p.forgot_path.trim().is_empty()).then(|| p.forgot_path.clone());
    if let Some(f) = &forgot_path {
        check_path("password.forgot_path", f, issues);
        if *f == p.change_path {
            issues.push(ConfigIssue::new(
                "password.forgot_path",
                "must differ from password.change_path",
            ));
        }
    }
    if !(6..=64).contains(&p.min_length) {
        issues.push(ConfigIssue::new(
            "password.min_length",
            "must be between 6 and 64",
        ));
    }
    if !(10..=64).contains(&p.max_length) || p.max_length < p.min_length {
        issues.push(ConfigIssue::new(
            "password.max_length",
            "must be between 10 and 64 and at least min_length",
        ));
    }
    if p.prevent_reuse != 0 && !(5..=10).contains(&p.prevent_reuse) {
        issues.push(ConfigIssue::new(
            "password.prevent_reuse",
            "must be 0 (off) or between 5 and 10",
        ));
    }
    let enforce = match p.expiry_action.as_str() {
        "notice" => false,
        "enforce" => true,
        _ => {
            issues.push(ConfigIssue::new(
                "password.expiry_action",
                "must be \"notice\" or \"enforce\"",
            ));
            false
        }
    };
    for (key, v) in [
        ("current_field", &p.current_field),
        ("new_field", &p.new_field),
        ("confirm_field", &p.confirm_field),
    ] {
        if v.trim().is_empty() {
            issues.push(ConfigIssue::new(
                format!("password.{key}"),
                "must not be empty",
            ));
        }
    }
    Some(crate::auth::password::PasswordPolicy {
        change_path: p.change_path.clone(),
        forgot_path,
        current_field: p.current_field.clone(),
        new_field: p.new_field.clone(),
        confirm_field: p.confirm_field.clone(),
        success_status: p.success.status.clone(),
        success_body_contains: (!p.success.body_contains.trim().is_empty())
            .then(|| p.success.body_contains.clone()),
        min_length: p.min_length,
        max_length: p.max_length,
        require_upper: p.require_upper,
        require_lower: p.require_lower,
        require_digit: p.require_digit,
        require_symbol: p.require_symbol,
        expire_after: p.expire_after.0,
        prevent_reuse: p.prevent_reuse,
        min_age: p.min_age.0,
        enforce_expiry: enforce,
    })
}
