//! The probe's output: `[login]` and `[login.success]` as TOML, each value
//! with a comment saying where it came from. Values go through the TOML
//! serialiser (field names may hold quotes); everything that came from the
//! page and goes into a comment has its control characters escaped, so a
//! hostile page cannot start a line of its own in the operator's config.

use super::page::NotAFormLogin;
use super::paths::LogoutFinding;
use super::{LoginGuess, UsernameHint};
use std::fmt::Write;

/// What gatehouse counts every sign-in of a password-only form as, until
/// the operator chooses a name.
pub(super) const FIXED_USERNAME: &str = "admin";

pub(super) fn login_section(g: &LoginGuess) -> String {
    let f = &g.page.form;
    let mut out = Out::default();
    out.comment(&format!(
        "[login] for {}, guessed by `gatehouse login-probe`.",
        g.fetched.requested
    ));
    if g.fetched.redirects > 0 {
        out.comment(&format!(
            "The login page is {} ({} redirect{} away).",
            g.fetched.url,
            g.fetched.redirects,
            if g.fetched.redirects == 1 { "" } else { "s" }
        ));
    }
    if g.fetched.status != 200 {
        out.comment(&format!(
            "The login page answered {} (not 200).",
            g.fetched.status
        ));
    }
    if g.fetched.answered_by_gatehouse {
        out.comment("A gatehouse answered this URL (it set its own cookie), not the dashboard:");
        out.comment("probe the dashboard's own address for an exact result.");
    }
    out.comment("Check each guess against the dashboard, then paste this into gatehouse.toml.");
    out.line("[login]");

    match f.action.query() {
        Some(q) => out.comment(&format!(
            "the form is POSTed to {}?{q}; the query is not part of the path",
            f.path
        )),
        None => out.comment("where the form is POSTed (its action)"),
    }
    out.value("path", string(&f.path));
    match (&f.username_field, f.username_hint) {
        (Some(name), hint) => {
            out.comment(if hint == UsernameHint::Autocomplete {
                "the text input marked autocomplete=\"username\""
            } else {
                "the last text input before the password"
            });
            out.value("username_field", string(name));
        }
        (None, _) => {
            out.comment("the form asks only for a password (a single-user dashboard): every");
            out.comment("sign-in counts as this one user for lockout, 2FA and sessions.");
            out.comment("Choose the name (it is shown in the admin console and audit log).");
            out.value("fixed_username", string(FIXED_USERNAME));
            out.comment("not read while fixed_username is set");
            out.value("username_field", string(""));
        }
    }
    if f.password_inputs > 1 {
        out.comment(&format!(
            "the first of {} password inputs in the form",
            f.password_inputs
        ));
    }
    out.value("password_field", string(&f.password_field));
    if !f.other_fields.is_empty() {
        let listed: Vec<String> = f
            .other_fields
            .iter()
            .map(|(name, kind)| format!("{name} ({kind})"))
            .collect();
        out.comment(&format!("the form also sends: {}", listed.join(", ")));
    }
    if let Some(enctype) = &f.enctype {
        out.comment(&format!(
            "WARNING: the form is sent as {enctype}; gatehouse reads url-encoded login"
        ));
        out.comment("forms only, so it cannot see the username in this one");
    }

    match &g.logout {
        LogoutFinding::Found { path, answer } => {
            let mut said = format!("GET {path} without a session answered {}", answer.status);
            if let Some(to) = answer.location_path() {
                let _ = write!(said, " (to {to})");
            }
            said.push_str(if answer.status == 405 {
                ": it exists, for POST only"
            } else {
                ": it exists"
            });
            out.comment(&said);
        }
        LogoutFinding::Unconfirmed { path, answer } => {
            let to = answer
                .location_path()
                .map(|l| format!(" (to {l})"))
                .unwrap_or_default();
            out.comment(&format!(
                "GET {path} answered {}{to}, as a made-up path does:",
                answer.status
            ));
            out.comment("not confirmed, check that this is the dashboard's logout");
        }
        LogoutFinding::Missing { tried } => {
            out.comment(&format!(
                "not found: check (tried {}; none answered but 404)",
                if tried.is_empty() {
                    "nothing".to_string()
                } else {
                    tried.join(", ")
                }
            ));
        }
    }
    out.value("logout_paths", strings(&[g.logout.path().to_string()]));

    let a = &g.anonymous;
    if a.from_assets.is_empty() {
        out.comment("the login page (it loads no assets from this origin)");
    } else {
        out.comment("the login page, and the directories of the assets it loads:");
        for (prefix, example) in &a.from_assets {
            out.comment(&format!("  {prefix} (e.g. {example})"));
        }
    }
    for prefix in &a.unusual {
        out.comment(&format!(
            "check: {prefix} is not a usual asset directory, and everything under it"
        ));
        out.comment("becomes reachable without signing in");
    }
    if !a.not_added.is_empty() {
        out.comment(&format!(
            "not added (a prefix for them would open more than assets): {}",
            a.not_added.join(", ")
        ));
    }
    out.value("anonymous_paths", strings(&a.paths));

    if !g.fetched.http_only_cookies.is_empty() {
        out.comment("HttpOnly cookies the dashboard set before sign-in");
        out.value("session_cookies", strings(&g.fetched.http_only_cookies));
    }

    out.line("");
    out.line("[login.success]");
    out.comment("a form login answers a right password with a redirect away from the form");
    out.value("status", toml::Value::Array(vec![302.into(), 303.into()]));
    out.comment("a redirect back to the login page is a failure");
    out.value("location_not", string(&g.page_path));
    out.0
}

/// Comment lines for a page that is not a form login gatehouse can watch.
pub(super) fn not_a_form_login(url: &str, reason: &NotAFormLogin) -> String {
    let mut out = Out::default();
    out.comment(&format!(
        "gatehouse login-probe: no [login] section for {url}"
    ));
    out.comment(&reason.to_string());
    match reason {
        NotAFormLogin::NotPost(_) => {
            out.comment("gatehouse watches logins that are POSTed; a GET login puts the");
            out.comment("password in the URL.");
        }
        NotAFormLogin::OffOriginAction(_) => {
            out.comment("If that origin is part of the same dashboard, put gatehouse in");
            out.comment("front of it and probe its login page there.");
        }
        _ => {}
    }
    out.comment("Open the login page in a browser with the developer tools' network");
    out.comment("panel, sign in, and read the request that carries the password: its");
    out.comment("method, path and body (form fields, or JSON: then username_field is a");
    out.comment("JSON pointer such as \"/user/name\"). docs/recipes.md walks through it.");
    out.0
}

/// A TOML document under construction.
#[derive(Default)]
struct Out(String);

impl Out {
    fn line(&mut self, text: &str) {
        self.0.push_str(text);
        self.0.push('\n');
    }

    /// `# text`, with control characters escaped: a TOML comment ends at
    /// the line break, and must not hold other control characters either.
    fn comment(&mut self, text: &str) {
        let mut safe = String::with_capacity(text.len());
        for c in text.chars() {
            if c.is_control() {
                safe.extend(c.escape_default());
            } else {
                safe.push(c);
            }
        }
        self.line(&format!("# {safe}"));
    }

    fn value(&mut self, key: &str, value: toml::Value) {
        self.line(&format!("{key} = {value}"));
    }
}

fn string(s: &str) -> toml::Value {
    toml::Value::String(s.to_string())
}

fn strings(list: &[String]) -> toml::Value {
    toml::Value::Array(list.iter().map(|s| string(s)).collect())
}

#[cfg(test)]
mod tests {
    use super::super::paths::Answer;
    use super::super::{FetchedPage, LoginGuess};
    use super::*;
    use url::Url;

    const DJANGO: &str = include_str!("../../tests/data/login_pages/django_admin.html");
    const JUPYTER: &str = include_str!("../../tests/data/login_pages/jupyterlab.html");

    fn guess(requested: &str, page: &str, html: &str, logout: LogoutFinding) -> LoginGuess {
        let url = Url::parse(page).expect("url");
        let mut g = LoginGuess::from_page(FetchedPage {
            requested: Url::parse(requested).expect("url"),
            url,
            status: 200,
            redirects: 1,
            http_only_cookies: Vec::new(),
            answered_by_gatehouse: false,
            html: html.to_string(),
        })
        .expect("a form login");
        g.logout = logout;
        g
    }

    fn found(path: &str, status: u16) -> LogoutFinding {
        LogoutFinding::Found {
            path: path.into(),
            answer: Answer {
                status,
                location: None,
            },
        }
    }

    /// The fragment appended to a minimal configuration passes gatehouse's
    /// own validation, and gives back the values it printed.
    fn validated(fragment: &str) -> crate::auth::login::LoginSettings {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, _) = crate::tls::self_signed(&["localhost"]).expect("cert");
        std::fs::write(dir.path().join("cert.pem"), &cert.cert).expect("write");
        std::fs::write(dir.path().join("key.pem"), &cert.key).expect("write");
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n{fragment}"
        );
        match crate::config::validate::load_str(&text, Some(dir.path())) {
            Ok(s) => s.login,
            Err(e) => panic!("{e}\n---\n{text}"),
        }
    }

    #[test]
    fn django_admin_section_validates_with_the_expected_values() {
        let g = guess(
            "http://127.0.0.1:8000/admin/",
            "http://127.0.0.1:8000/admin/login/?next=/admin/",
            DJANGO,
            found("/admin/logout/", 405),
        );
        let text = g.to_toml();
        let l = validated(&text);
        assert_eq!(l.path, "/admin/login/");
        assert_eq!(l.username_field, "username");
        assert_eq!(l.password_field, "password");
        assert_eq!(l.logout_paths, ["/admin/logout/"]);
        assert_eq!(l.anonymous_paths, ["/admin/login/", "/static/"]);
        assert_eq!(l.success_status, [302, 303]);
        assert_eq!(l.location_not.as_deref(), Some("/admin/login/"));
        assert!(
            text.contains("# the form also sends: csrfmiddlewaretoken (hidden), next (hidden)"),
            "{text}"
        );
        assert!(!text.contains("sp9onkaFjXEIZaUNaVnKkPV7u2teDHeGEK1MTbT1gpeIUlygiv4csLWK5XofDsfK"));
        assert!(text.contains("for POST only"), "{text}");
    }

    #[test]
    fn jupyter_section_has_a_fixed_username_and_validates() {
        let g = guess(
            "http://127.0.0.1:8888/lab",
            "http://127.0.0.1:8888/login?next=%2Flab",
            JUPYTER,
            found("/logout", 200),
        );
        let text = g.to_toml();
        let l = validated(&text);
        assert_eq!(l.path, "/login");
        assert_eq!(l.fixed_username.as_deref(), Some("admin"));
        assert_eq!(l.username_field, "");
        assert_eq!(l.password_field, "password");
        assert_eq!(l.logout_paths, ["/logout"]);
        assert_eq!(l.anonymous_paths, ["/login", "/static/"]);
        assert_eq!(l.location_not.as_deref(), Some("/login"));
        assert!(text.contains("Choose the name"), "{text}");
        assert!(text.contains("the query is not part of the path"), "{text}");
    }

    #[test]
    fn field_names_with_quotes_and_line_breaks_stay_values() {
        let html = "<form method=post><input name='us\"er&#10;[x]'>\
            <input type=password name='p\\w'><input type=hidden name='a&#10;path = \"/evil\"'></form>";
        let mut g = guess(
            "http://pbx.test/",
            "http://pbx.test/login",
            html,
            LogoutFinding::Missing {
                tried: vec!["/logout".into()],
            },
        );
        g.fetched.http_only_cookies = vec!["SID".into()];
        let text = g.to_toml();
        let l = validated(&text);
        assert_eq!(l.username_field, "us\"er\n[x]");
        assert_eq!(l.password_field, "p\\w");
        assert_eq!(l.path, "/login");
        assert_eq!(l.session_cookies, ["SID"]);
        assert!(text.contains("# not found: check"), "{text}");
        assert_eq!(l.logout_paths, ["/logout"]);
    }

    #[test]
    fn unconfirmed_logout_is_printed_with_a_warning() {
        let g = guess(
            "http://pbx.test/",
            "http://pbx.test/login",
            "<link rel=stylesheet href=/static/pbx.css><form method=post action=/login>\
             <input name=username><input type=password name=password></form>",
            LogoutFinding::Unconfirmed {
                path: "/logout".into(),
                answer: Answer {
                    status: 302,
                    location: Some("/login".into()),
                },
            },
        );
        let text = g.to_toml();
        assert!(
            text.contains("# GET /logout answered 302 (to /login), as a made-up path does:"),
            "{text}"
        );
        assert_eq!(validated(&text).logout_paths, ["/logout"]);
    }

    #[test]
    fn advice_for_a_script_login_is_all_comments() {
        let text = not_a_form_login("http://pbx.test/", &NotAFormLogin::UnnamedPassword);
        assert!(text.lines().all(|l| l.starts_with("# ")), "{text}");
        assert!(text.contains("network"));
    }
}
