//! The admin console's pages.

use super::{esc, html, layout};
use crate::admin::{SessionView, UserView};
use crate::proxy::Body;
use http::{Response, StatusCode};

/// What every console page shares.
pub struct Frame<'a> {
    pub brand: &'a str,
    pub base: &'a str,
    pub csrf: &'a str,
    pub notice: Option<String>,
}

impl Frame<'_> {
    fn page(&self, title: &str, body: &str) -> Response<Body> {
        let b = esc(self.base);
        let nav = format!(
            "<nav><a href=\"{b}\">Home</a> · <a href=\"{b}/sessions\">Sessions</a> · \
             <a href=\"{b}/users\">Users</a> · <a href=\"{b}/incidents\">Incidents</a> · \
             <a href=\"{b}/trusted\">Trusted IPs</a> · <a href=\"{b}/policy\">Policy</a></nav>"
        );
        let notice = self
            .notice
            .as_deref()
            .map(|n| format!("<p id=\"notice\" role=\"status\">{}</p>", esc(n)))
            .unwrap_or_default();
        html(
            StatusCode::OK,
            layout(self.brand, title, &format!("{nav}{notice}{body}")),
        )
    }

    /// A one-button POST form carrying the CSRF token.
    fn action(&self, action: &str, fields: &[(&str, &str)], label: &str, id: &str) -> String {
        let hidden: String = fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    esc(k),
                    esc(v)
                )
            })
            .collect();
        format!(
            "<form method=\"post\" action=\"{}{}\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{hidden}\
             <button type=\"submit\" id=\"{}\">{}</button></form>",
            esc(self.base),
            esc(action),
            esc(self.csrf),
            esc(id),
            esc(label)
        )
    }
}

fn when(ms: u64) -> String {
    crate::own_pages::format_ms(ms)
}

pub fn home(
    f: &Frame<'_>,
    sessions: &[SessionView],
    users: &[UserView],
    policy: &[(String, String)],
    open_incidents: usize,
) -> Response<Body> {
    let locked: Vec<&str> = users
        .iter()
        .filter(|u| u.locked)
        .map(|u| u.user.as_str())
        .collect();
    let mode = policy
        .iter()
        .find(|(k, _)| k == "two_factor.mode")
        .map_or("", |(_, v)| v.as_str());
    let logout_all = format!(
        "<form method=\"post\" action=\"{}/logout-all\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" id=\"confirm-logout-all\" required> \
         Yes, end every session now (users sign in again with their own credentials)</label>\
         <button type=\"submit\" id=\"logout-all\">Log out all users</button></form>",
        esc(f.base),
        esc(f.csrf)
    );
    let banner = if open_incidents > 0 {
        format!(
            "<p class=\"error\" id=\"incident-banner\" role=\"alert\"><a href=\"{}/incidents\">New security incidents: {open_incidents}</a></p>",
            esc(f.base)
        )
    } else {
        String::new()
    };
    let body = format!(
        "{banner}<ul><li>Active sessions: <strong id=\"active-sessions\">{}</strong></li>\
         <li>Locked users: <strong id=\"locked-users\">{}</strong> {}</li>\
         <li>Two-factor mode: <strong>{}</strong></li></ul>{logout_all}",
        sessions.iter().filter(|s| s.state == "active").count(),
        locked.len(),
        esc(&locked.join(", ")),
        esc(mode),
    );
    f.page("Administration", &body)
}

pub fn sessions(
    f: &Frame<'_>,
    sessions: &[SessionView],
    filter: &str,
    class: &str,
) -> Response<Body> {
    let rows: String = sessions
        .iter()
        .map(|s| {
            format!(
                "<li><span class=\"mono\">{}</span> · {}{} · {} · <span class=\"class\">{}</span> · {} · since {} {} {}</li>",
                esc(&s.reference),
                esc(&s.user),
                if s.service_account {
                    " <strong class=\"service-account\">(service account)</strong>"
                } else {
                    ""
                },
                esc(&s.state),
                esc(&s.class),
                esc(&s.client_ip),
                esc(&when(s.created_ms)),
                f.action(
                    "/sessions/revoke",
                    &[("reference", &s.reference)],
                    "End",
                    &format!("revoke-{}", s.reference)
                ),
                f.action(
                    "/users/logout",
                    &[("user", &s.user)],
                    "Log out user everywhere",
                    &format!("logout-{}", s.reference)
                ),
            )
        })
        .collect();
    let options: String = ["", "web", "mobile", "desktop", "service"]
        .iter()
        .map(|c| {
            format!(
                "<option value=\"{c}\"{}>{}</option>",
                if *c == class { " selected" } else { "" },
                if c.is_empty() { "all" } else { c }
            )
        })
        .collect();
    let body = format!(
        "<form method=\"get\" action=\"{}/sessions\"><label for=\"user\">User</label>\
         <input id=\"user\" name=\"user\" value=\"{}\">\
         <label for=\"class\">Client</label><select id=\"class\" name=\"class\">{options}</select>\
         <button type=\"submit\">Filter</button></form>\
         <ul id=\"sessions\">{rows}</ul>",
        esc(f.base),
        esc(filter)
    );
    f.page("Sessions", &body)
}

pub fn users(f: &Frame<'_>, users: &[UserView]) -> Response<Body> {
    let rows: String = users
        .iter()
        .map(|u| {
            let id = u.user.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
            format!(
                "<li><strong>{}</strong>{} · 2FA {} ({}) · {} · last sign-in {} {}{}{}{}</li>",
                esc(&u.user),
                if u.service_account {
                    " <strong class=\"service-account\">(service account)</strong>"
                } else {
                    ""
                },
                if u.two_factor_enrolled { "on" } else { "off" },
                esc(&u.two_factor_mode),
                if u.locked { "locked" } else { "not locked" },
                esc(&when(u.last_sign_in_ms)),
                f.action(
                    "/users/require-2fa",
                    &[("user", &u.user)],
                    "Require 2FA",
                    &format!("require-{id}")
                ),
                f.action(
                    "/users/reset-2fa",
                    &[("user", &u.user)],
                    "Reset 2FA",
                    &format!("reset-{id}")
                ),
                f.action(
                    "/users/disable-2fa",
                    &[("user", &u.user)],
                    "Disable 2FA",
                    &format!("disable-{id}")
                ),
                if u.locked {
                    f.action(
                        "/users/unlock",
                        &[("user", &u.user)],
                        "Unlock",
                        &format!("unlock-{id}"),
                    )
                } else {
                    String::new()
                },
            )
        })
        .collect();
    f.page("Users", &format!("<ul id=\"users\">{rows}</ul>"))
}

pub fn policy(f: &Frame<'_>, lines: &[(String, String)]) -> Response<Body> {
    let rows: String = lines
        .iter()
        .map(|(k, v)| format!("<li><code>{}</code>: {}</li>", esc(k), esc(v)))
        .collect();
    f.page("Policy in force", &format!("<ul id=\"policy\">{rows}</ul>"))
}

pub fn incidents(
    f: &Frame<'_>,
    list: &[crate::incidents::Incident],
    history: &[(String, Vec<crate::incidents::history::LoginRecord>)],
) -> Response<Body> {
    let rows: String = list
        .iter()
        .map(|i| {
            let countries: Vec<String> = i.finding.countries.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
            let ips: Vec<&str> = i.finding.ips.iter().map(String::as_str).collect();
            let close = if i.open {
                format!(
                    "<form method=\"post\" action=\"{}/incidents/close\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                     <input type=\"hidden\" name=\"id\" value=\"{}\"><label>Note <input name=\"note\" required></label>\
                     <button type=\"submit\">Close</button></form>",
                    esc(f.base), esc(f.csrf), esc(&i.id)
                )
            } else {
                format!(" closed: {}", esc(i.note.as_deref().unwrap_or("")))
            };
            format!(
                "<li><strong>{}</strong> · {} · {} sign-ins from {} countries ({}) · {} · last {}{close}</li>",
                esc(&i.user),
                if i.open { "open" } else { "closed" },
                i.finding.sign_ins,
                i.finding.countries.len(),
                esc(&countries.join(", ")),
                esc(&ips.join(", ")),
                esc(&when(i.updated_ms)),
            )
        })
        .collect();
    let histories: String = history
        .iter()
        .map(|(user, recs)| {
            let items: String = recs
                .iter()
                .map(|r| {
                    format!(
                        "<li>{} · {} · {} · {}</li>",
                        esc(&when(r.ts_ms)),
                        esc(&r.ip),
                        esc(&r.country),
                        r.result.as_str()
                    )
                })
                .collect();
            format!("<h2>Last sign-ins of {}</h2><ul>{items}</ul>", esc(user))
        })
        .collect();
    let mark = format!(
        "<h2>Mark an address or network safe</h2><form method=\"post\" action=\"{}/trusted/add\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"domain\">Email domain</label><input id=\"domain\" name=\"domain\" required>\
         <label for=\"ip\">Address</label><input id=\"ip\" name=\"ip\" required>\
         <label for=\"prefix\">Prefix (IPv4 22–32, IPv6 48–128)</label><input id=\"prefix\" name=\"prefix\" inputmode=\"numeric\">\
         <label for=\"description\">Description</label><input id=\"description\" name=\"description\" required>\
         <button type=\"submit\" id=\"mark-safe\">Mark safe</button></form>",
        esc(f.base),
        esc(f.csrf)
    );
    f.page(
        "Security incidents",
        &format!("<ul id=\"incidents\">{rows}</ul>{histories}{mark}"),
    )
}

pub fn trusted(
    f: &Frame<'_>,
    entries: &[(String, crate::incidents::trusted::SafeEntry)],
    search: &str,
) -> Response<Body> {
    let rows: String = entries
        .iter()
        .map(|(domain, e)| {
            let net = e.network.to_string();
            format!(
                "<li>{} · <code>{}</code> · {} · added by {} {}</li>",
                esc(domain),
                esc(&net),
                esc(&e.description),
                esc(&e.added_by),
                f.action(
                    "/trusted/remove",
                    &[("domain", domain), ("network", &net)],
                    "Remove",
                    &format!("remove-{}", net.replace(['.', ':', '/'], "-"))
                ),
            )
        })
        .collect();
    let body = format!(
        "<form method=\"get\" action=\"{}/trusted\"><label for=\"q\">Search</label><input id=\"q\" name=\"q\" value=\"{}\">\
         <button type=\"submit\">Search</button></form><ul id=\"trusted\">{rows}</ul>",
        esc(f.base),
        esc(search)
    );
    f.page("Trusted IPs", &body)
}
