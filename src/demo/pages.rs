//! The demo dashboard's pages: deliberately plain, like an old PBX portal.

use crate::pages::esc;

pub const CSS: &str = "body{font-family:Verdana,sans-serif;background:#e8ecf1;margin:0}\
.top{background:#23395d;color:#fff;padding:8px 16px}.top a{color:#fff;margin-right:12px}\
.box{background:#fff;margin:24px auto;padding:16px 24px;max-width:720px;border:1px solid #b8c2cc}\
.err{color:#b00}.ok{color:#070}label{display:block;margin-top:8px}";

fn page(title: &str, nav: bool, body: &str) -> String {
    let nav = if nav {
        "<a href=\"/\">Home</a><a href=\"/calls\">Live calls</a><a href=\"/recordings/\">Recordings</a>\
         <a href=\"/profile/password\">Password</a><a href=\"/logout\">Log out</a>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} - PBX Admin</title>\
         <link rel=\"stylesheet\" href=\"/static/pbx.css\"></head><body>\
         <div class=\"top\"><b>PBX Admin</b> {nav}</div><div class=\"box\"><h2>{t}</h2>{body}</div></body></html>",
        t = esc(title)
    )
}

pub fn login(error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"err\" id=\"login-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "Sign in",
        false,
        &format!(
            "{err}<form method=\"post\" action=\"/login\">\
             <label for=\"username\">Username</label><input id=\"username\" name=\"username\" autocomplete=\"username\">\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
             <p><button type=\"submit\" id=\"login-submit\">Sign in</button></p></form>"
        ),
    )
}

pub fn home(user: &str) -> String {
    page(
        "Dashboard",
        true,
        &format!(
            "<p id=\"welcome\">Welcome, {}.</p><ul><li>Extensions online: 42</li><li>Active calls: 3</li>\
             <li>Queued callers: 1</li></ul>",
            esc(user)
        ),
    )
}

pub fn calls() -> String {
    page(
        "Live calls",
        true,
        "<p>Live feed: <span id=\"feed\">connecting…</span></p>\
         <script>var ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')+location.host+'/ws/calls');\
         ws.onmessage=function(e){document.getElementById('feed').textContent=e.data};\
         ws.onclose=function(){document.getElementById('feed').textContent='disconnected'};</script>",
    )
}

pub fn recordings(big: u64) -> String {
    page(
        "Call recordings",
        true,
        &format!(
            "<ul><li><a href=\"/recordings/2026-11-20-reception.wav\">2026-11-20-reception.wav</a> (47 KB)</li>\
             <li><a href=\"/recordings/2026-11-21-sales-call.wav\">2026-11-21-sales-call.wav</a> (313 KB)</li>\
             <li><a href=\"/recordings/{b}\">{b}</a> ({} MB)</li></ul>",
            big / (1024 * 1024),
            b = super::BIG_RECORDING
        ),
    )
}

pub fn password_form(error: Option<&str>, changed: bool) -> String {
    let msg = match (error, changed) {
        (Some(e), _) => format!("<p class=\"err\" id=\"password-error\">{}</p>", esc(e)),
        (None, true) => {
            "<p class=\"ok\" id=\"password-changed\">Your password was changed.</p>".into()
        }
        _ => String::new(),
    };
    page(
        "Change password",
        true,
        &format!(
            "{msg}<form method=\"post\" action=\"/profile/password\">\
             <label for=\"current_password\">Current password</label><input id=\"current_password\" name=\"current_password\" type=\"password\">\
             <label for=\"new_password\">New password</label><input id=\"new_password\" name=\"new_password\" type=\"password\">\
             <label for=\"confirm_password\">Confirm new password</label><input id=\"confirm_password\" name=\"confirm_password\" type=\"password\">\
             <p><button type=\"submit\" id=\"password-submit\">Change</button></p></form>"
        ),
    )
}

pub fn not_found() -> String {
    page("Not found", false, "<p>The page does not exist.</p>")
}
