//! The second-factor pages: challenge, enrollment, recovery codes, account.

use super::{esc, html, layout};
use crate::proxy::Body;
use http::{Response, StatusCode};

fn error_line(error: Option<&str>) -> String {
    error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default()
}

/// "Enter the code from your authenticator app."
pub fn challenge(brand: &str, csrf: &str, error: Option<&str>) -> Response<Body> {
    let body = format!(
        "{err}<p>Enter the 6-digit code from your authenticator app.</p>\
         <form method=\"post\" action=\"/.gatehouse/2fa\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"code\">Code</label>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" \
         autofocus required maxlength=\"32\">\
         <button type=\"submit\" id=\"verify\">Verify</button></form>\
         <p class=\"ref\">Lost your phone? Enter one of your recovery codes instead.</p>",
        err = error_line(error),
        csrf = esc(csrf),
    );
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    html(status, layout(brand, "Two-factor authentication", &body))
}

/// Enrollment: the QR code, the key for manual entry, and the confirmation form.
pub fn enroll(
    brand: &str,
    csrf: &str,
    qr_svg: &str,
    secret_b32: &str,
    ask_password: bool,
    error: Option<&str>,
) -> Response<Body> {
    let password = if ask_password {
        "<label for=\"password\">Your dashboard password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>"
    } else {
        ""
    };
    let grouped: String = secret_b32
        .as_bytes()
        .chunks(4)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect::<Vec<_>>()
        .join(" ");
    let body = format!(
        "{err}<p>Your account needs a second factor. Scan this code with an authenticator app \
         (such as FreeOTP, Aegis, Google Authenticator or 1Password).</p>\
         <div class=\"qr\">{qr_svg}</div>\
         <p>Or enter this key by hand:</p><p><code id=\"totp-secret\" data-secret=\"{raw}\">{grouped}</code></p>\
         <form method=\"post\" action=\"/.gatehouse/2fa/enroll\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"code\">Code shown by the app</label>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required maxlength=\"32\">\
         {password}<button type=\"submit\" id=\"confirm\">Confirm</button></form>",
        err = error_line(error),
        raw = esc(secret_b32),
        grouped = esc(&grouped),
        csrf = esc(csrf),
    );
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    html(
        status,
        layout(brand, "Set up two-factor authentication", &body),
    )
}

/// The recovery codes, shown exactly once.
pub fn recovery_codes(brand: &str, codes: &[String], continue_to: &str) -> Response<Body> {
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", esc(c)))
        .collect();
    let body = format!(
        "<p>Two-factor authentication is on. Keep these recovery codes somewhere safe: each \
         works once if you lose your authenticator. They will not be shown again.</p>\
         <ol id=\"recovery-codes\">{items}</ol>\
         <p><a id=\"continue\" href=\"{}\">Continue</a></p>",
        esc(continue_to)
    );
    html(
        StatusCode::OK,
        layout(brand, "Save your recovery codes", &body),
    )
}

/// What the account page shows.
pub struct AccountView<'a> {
    pub user: &'a str,
    pub enrolled: bool,
    pub may_disable: bool,
    pub csrf: &'a str,
    /// (short reference, class, client address, signed in at, is this one)
    pub sessions: Vec<(String, String, String, String, bool)>,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
    /// (when, address, country, result) of recent sign-in attempts.
    pub recent: Vec<(String, String, String, &'static str)>,
}

pub fn account(brand: &str, v: &AccountView<'_>) -> Response<Body> {
    let csrf = esc(v.csrf);
    let form = |action: &str, label: &str, id: &str, needs_code: bool| {
        let code = if needs_code {
            format!(
                "<label for=\"code-{id}\">Current code</label>\
                 <input id=\"code-{id}\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required maxlength=\"32\">"
            )
        } else {
            String::new()
        };
        format!(
            "<form method=\"post\" action=\"/.gatehouse/account/{action}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{code}\
             <button type=\"submit\" id=\"{id}\">{label}</button></form>"
        )
    };
    let status = if v.enrolled {
        let mut s =
            String::from("<p id=\"status\">Two-factor authentication is <strong>on</strong>.</p>");
        s.push_str(&form("reset", "Reset authenticator", "reset", true));
        s.push_str(&form("recovery", "New recovery codes", "recovery", true));
        if v.may_disable {
            s.push_str(&form("disable", "Turn off two-factor", "disable", true));
        }
        s
    } else {
        "<p id=\"status\">Two-factor authentication is <strong>off</strong>. \
         <a href=\"/.gatehouse/2fa/enroll\">Turn it on</a>.</p>"
            .to_string()
    };
    let rows: String = v
        .sessions
        .iter()
        .map(|(r, class, ip, at, this)| {
            format!(
                "<li><span class=\"mono\">{}</span> · {} · {} · {}{}</li>",
                esc(r),
                esc(class),
                esc(ip),
                esc(at),
                if *this { " (this browser)" } else { "" }
            )
        })
        .collect();
    let body = format!(
        "{notice}{err}<p>Signed in as <strong id=\"user\">{user}</strong>.</p>{status}\
         <h2>Your sessions</h2><ul id=\"sessions\">{rows}</ul>{others}\
         <h2>Recent sign-ins</h2><ul id=\"recent\">{recent}</ul>\
         <p><a href=\"/\">Back to the dashboard</a></p>",
        notice = v
            .notice
            .map(|n| format!("<p id=\"notice\" role=\"status\">{}</p>", esc(n)))
            .unwrap_or_default(),
        err = error_line(v.error),
        user = esc(v.user),
        others = form(
            "sign-out-others",
            "Sign out other sessions",
            "sign-out-others",
            false
        ),
        recent = v
            .recent
            .iter()
            .map(|(at, ip, country, result)| {
                format!(
                    "<li>{} · {} · {} · {}</li>",
                    esc(at),
                    esc(ip),
                    esc(country),
                    result
                )
            })
            .collect::<String>(),
    );
    html(
        if v.error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        layout(brand, "Account security", &body),
    )
}
