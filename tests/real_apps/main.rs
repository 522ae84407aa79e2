//! Real dashboards nobody here wrote, unmodified, behind gatehouse: Django's
//! admin site (server-rendered, a login form with a CSRF token) and
//! JupyterLab (a single-page app on a JSON API and websockets, with a
//! password-only login). Each is driven by headless Chromium through its own
//! sign-in form, gatehouse's 2FA enrollment, a page and (Jupyter) a websocket
//! that need the session, the app's logout and gatehouse's log-out-all; the
//! app's own session cookie, stolen, opens nothing. The gateways use the
//! config snippets of docs/recipes.md, read from that file.
//!
//! Needs python3 with venv (the apps come from PyPI, pinned in
//! requirements.txt, installed by install.sh — .ci/run does it first), and
//! Debian's chromium + chromium-driver.

#[path = "../support/mod.rs"]
mod support;

mod apps;

use bytes::Bytes;
use gatehouse::auth::totp::{code_at, TotpSecret};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use support::browser::{Browser, WAIT};
use support::gateway::{Config, Conn, Resp, TestGateway};

/// A whole flow: app start-up is outside it, the browser part inside.
const FLOW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(FLOW_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {FLOW_TIMEOUT:?}"),
    }
}

/// The config snippet `# recipe: NAME` from docs/recipes.md: what the docs
/// tell operators is exactly what these tests run.
fn recipe(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/recipes.md"))
        .expect("docs/recipes.md");
    let marker = format!("```toml\n# recipe: {name}\n");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/recipes.md has no `# recipe: {name}` block"))
        + "```toml\n".len();
    let len = doc[start..].find("```").expect("recipe block ends");
    doc[start..start + len].to_string()
}

/// Start an app (installing the venv first if needed) off the async threads.
async fn start(app: fn() -> apps::App) -> apps::App {
    tokio::task::spawn_blocking(app).await.expect("app start")
}

fn base(gw: &TestGateway) -> String {
    format!("https://127.0.0.1:{}", gw.addr().port())
}

/// Django's own login form, filled and sent.
async fn django_sign_in(browser: &Browser) {
    browser.wait_for("#id_username", WAIT).await;
    browser.fill("#id_username", apps::DJANGO_USER).await;
    browser.fill("#id_password", apps::DJANGO_PASSWORD).await;
    browser.submit("#login-form").await;
}

/// Jupyter's own password-only form, filled and sent.
async fn jupyter_sign_in(browser: &Browser) {
    browser.wait_for("#password_input", WAIT).await;
    browser
        .fill("#password_input", apps::JUPYTER_PASSWORD)
        .await;
    browser.submit("form").await;
}

async fn gateway_for(app: &apps::App, recipe_name: &str) -> TestGateway {
    let config = Config::default().rest(&recipe(recipe_name));
    TestGateway::start(&config, &app.url()).await
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

/// On gatehouse's enrollment page: confirm with the shown key's code and
/// continue past the recovery codes. Returns the recovery codes.
async fn enroll(browser: &Browser) -> Vec<String> {
    browser.wait_for("#totp-qr", WAIT).await;
    let key = browser
        .execute(
            "return document.getElementById('totp-secret').dataset.secret",
            vec![],
        )
        .await;
    let secret = TotpSecret::from_base32(key.as_str().expect("key")).expect("secret");
    browser.fill("#code", &code_at(&secret, now_secs())).await;
    browser.click("#confirm").await;
    browser.wait_for("#recovery-codes", WAIT).await;
    let codes: Vec<String> = browser
        .text("#recovery-codes")
        .await
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    browser.click("#continue").await;
    codes
}

/// On gatehouse's challenge page: pass it with a recovery code (a TOTP code
/// of the enrollment's step would be refused as used).
async fn pass_challenge(browser: &Browser, recovery_code: &str) {
    browser.wait_for("#verify", WAIT).await;
    browser.fill("#code", recovery_code).await;
    browser.click("#verify").await;
}

/// Milliseconds, as the gateway's clock counts them: log-out-all ends the
/// sessions started before this instant, so it must not be rounded down.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64
}

async fn cookie_names(browser: &Browser) -> Vec<String> {
    browser
        .cookie_jar()
        .await
        .into_iter()
        .map(|c| c.name)
        .collect()
}

/// A plain HTTP/1.1 connection straight to the app (no gatehouse): how a
/// thief who got hold of the app's cookie would have obtained one.
async fn direct(app: &apps::App) -> Conn {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect to the app");
    Conn::over(tcp, Version::HTTP_11).await
}

/// `name=value` of each cookie an answer sets.
fn set_cookies(resp: &Resp) -> Vec<String> {
    resp.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_string)
        .collect()
}

fn cookie_value<'a>(pairs: &'a [String], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body))).expect("request")
}

// --- Django admin -------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn django_admin_works_behind_gatehouse_from_its_own_form_to_its_own_logout() {
    let app = start(apps::django_admin).await;
    let gw = gateway_for(&app, "django-admin").await;
    let base = base(&gw);
    within("the Django admin flow", async {
        let browser = Browser::launch().await;

        // Signed out, the admin sends the browser to Django's own login form.
        browser.goto(&format!("{base}/admin/")).await;
        django_sign_in(&browser).await;

        // Django accepted the password (its CSRF check passed through the
        // gateway); gatehouse asks for the second factor before any page.
        let codes = enroll(&browser).await;

        // Back where the browser was going: the admin index, then a page
        // that needs Django's session.
        browser.wait_for("#site-name", WAIT).await;
        assert!(
            browser.current_url().await.ends_with("/admin/"),
            "{}",
            browser.current_url().await
        );
        browser.goto(&format!("{base}/admin/auth/user/")).await;
        browser.wait_for("#result_list", WAIT).await;
        assert!(browser
            .text("#result_list")
            .await
            .contains(apps::DJANGO_USER));
        browser
            .screenshot(support::browser::shot_path("real-apps-django-admin"))
            .await;

        // Django's HttpOnly session cookie stayed in the vault; its CSRF
        // cookie (which its forms need) passed.
        let names = cookie_names(&browser).await;
        assert!(!names.contains(&"sessionid".to_string()), "{names:?}");
        assert!(names.contains(&"csrftoken".to_string()), "{names:?}");
        assert!(names.contains(&"__Host-gatehouse".to_string()), "{names:?}");

        // Django's own "Log out" (a POST form with its CSRF token) ends the
        // gatehouse session too.
        browser.submit("#logout-form").await;
        browser
            .wait_for_url(WAIT, |u| u.ends_with("/admin/logout/"))
            .await;
        let names = cookie_names(&browser).await;
        assert!(
            !names.contains(&"__Host-gatehouse".to_string()),
            "{names:?}"
        );
        browser.goto(&format!("{base}/admin/auth/user/")).await;
        browser.wait_for("#id_username", WAIT).await;

        // Signed in again (challenge now), then an admin logs out everyone:
        // the next page load is gatehouse's, not Django's.
        django_sign_in(&browser).await;
        pass_challenge(&browser, &codes[0]).await;
        browser.wait_for("#result_list", WAIT).await;
        gw.handle
            .live()
            .sessions
            .logout_all(now_ms())
            .await
            .expect("log out all");
        browser.goto(&format!("{base}/admin/auth/user/")).await;
        let page = browser.page_source().await;
        assert!(page.contains("You were signed out"), "{page}");
        assert!(!browser.exists("#result_list").await);
        browser.close().await;
    })
    .await;
}

/// Sign in to Django directly (no gatehouse), as a thief with the password
/// but no second factor, or with a cookie copied off the app, would.
async fn django_session_cookie(app: &apps::App) -> String {
    let mut conn = direct(app).await;
    let page = conn
        .send(request("GET", "/admin/login/", &[], String::new()))
        .await;
    let cookies = set_cookies(&page);
    let csrf_cookie = cookie_value(&cookies, "csrftoken")
        .expect("csrftoken")
        .to_string();
    let token = support::gateway::attr(&page.text(), "name=\"csrfmiddlewaretoken\" value");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrfmiddlewaretoken", &token)
        .append_pair("username", apps::DJANGO_USER)
        .append_pair("password", apps::DJANGO_PASSWORD)
        .append_pair("next", "/admin/")
        .finish();
    let login = conn
        .send(request(
            "POST",
            "/admin/login/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &format!("csrftoken={csrf_cookie}")),
                ("referer", &format!("{}/admin/login/", app.url())),
            ],
            form,
        ))
        .await;
    assert_eq!(login.status, StatusCode::FOUND, "{}", login.text());
    let cookies = set_cookies(&login);
    let sid = cookie_value(&cookies, "sessionid").expect("Django set its session cookie");
    // It is a real session: Django itself serves the admin with it.
    let check = conn
        .send(request(
            "GET",
            "/admin/auth/user/",
            &[("cookie", &format!("sessionid={sid}"))],
            String::new(),
        ))
        .await;
    assert_eq!(
        check.status,
        StatusCode::OK,
        "the cookie works on Django itself"
    );
    format!("sessionid={sid}")
}

#[tokio::test(flavor = "multi_thread")]
async fn django_session_cookie_without_a_gatehouse_session_is_refused() {
    let app = start(apps::django_admin).await;
    let gw = gateway_for(&app, "django-admin").await;
    let stolen = django_session_cookie(&app).await;
    let client = gw.client();
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let page = client
            .send(
                gw.addr(),
                version,
                request(
                    "GET",
                    "/admin/auth/user/",
                    &[("cookie", &stolen), ("accept", "text/html")],
                    String::new(),
                ),
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::FOUND,
            "{version:?}: {}",
            page.text()
        );
        assert_eq!(page.header("location"), Some("/admin/login/"));
        assert!(!page.text().contains(apps::DJANGO_USER), "{}", page.text());
        let api = client
            .send(
                gw.addr(),
                version,
                request(
                    "GET",
                    "/admin/auth/user/",
                    &[("cookie", &stolen), ("accept", "application/json")],
                    String::new(),
                ),
            )
            .await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{version:?}");
    }
}

// --- JupyterLab ----------------------------------------------------------

/// In the signed-in page: start a kernel over the JSON API (with the XSRF
/// token the page's script reads from Jupyter's readable cookie), run code
/// over the kernel's websocket, return what it printed.
const RUN_IN_KERNEL: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
  const r = await fetch("/api/kernels", {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf)},
    body: JSON.stringify({name: "python3"}),
  });
  if (!r.ok) { return done("kernel start: " + r.status); }
  const kernel = await r.json();
  const ws = new WebSocket(`wss://${location.host}/api/kernels/${kernel.id}/channels?session_id=gh-test`);
  const msgId = "gh-" + Date.now();
  ws.onopen = () => ws.send(JSON.stringify({
    header: {msg_id: msgId, username: "", session: "gh-test", msg_type: "execute_request", version: "5.3"},
    parent_header: {}, metadata: {}, channel: "shell", buffers: [],
    content: {code: "print(6 * 7)", silent: false, store_history: false,
              user_expressions: {}, allow_stdin: false, stop_on_error: true},
  }));
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.parent_header && m.parent_header.msg_id === msgId && m.msg_type === "stream") {
      window.__ghSocket = ws;
      done("printed " + m.content.text.trim() + " kernel " + kernel.id);
    }
  };
  ws.onerror = () => done("websocket error");
  ws.onclose = (e) => done("websocket closed " + e.code);
})().catch((e) => done("error " + e));
"#;

#[tokio::test(flavor = "multi_thread")]
async fn jupyterlab_works_behind_gatehouse_with_its_api_and_kernel_websockets() {
    let app = start(apps::jupyterlab).await;
    let gw = gateway_for(&app, "jupyterlab").await;
    let base = base(&gw);
    within("the JupyterLab flow", async {
        let browser = Browser::launch().await;

        // Jupyter's own password-only form.
        browser.goto(&format!("{base}/lab")).await;
        jupyter_sign_in(&browser).await;
        let codes = enroll(&browser).await;

        // The single-page app loads where the browser was going…
        browser
            .wait_for_url(WAIT, |u| u.ends_with("/lab") || u.contains("/lab?"))
            .await;
        // The launcher lists the kernels: the app's own API calls worked.
        browser.wait_for(".jp-LauncherCard", WAIT).await;
        browser
            .screenshot(support::browser::shot_path("real-apps-jupyterlab"))
            .await;

        // …its JSON API and a kernel websocket work with the vaulted cookie.
        let ran = browser
            .client()
            .execute_async(RUN_IN_KERNEL, vec![])
            .await
            .expect("script");
        let ran = ran.as_str().unwrap_or_default().to_string();
        assert!(ran.starts_with("printed 42"), "{ran}");

        // Jupyter's HttpOnly login cookie stayed in the vault; its XSRF
        // cookie, which the app's scripts read, passed.
        let names = cookie_names(&browser).await;
        assert!(
            !names.iter().any(|n| n.starts_with("username-")),
            "{names:?}"
        );
        assert!(names.contains(&"_xsrf".to_string()), "{names:?}");

        // Log-out-all ends access: the open kernel websocket is closed and
        // the API refuses the next call.
        gw.handle
            .live()
            .sessions
            .logout_all(now_ms())
            .await
            .expect("log out all");
        let closed = browser
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const ws = window.__ghSocket;
                 if (ws.readyState === WebSocket.CLOSED) { done('closed'); }
                 ws.addEventListener('close', () => done('closed'));
                 setTimeout(() => done('still open'), 10000);",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(closed.as_str(), Some("closed"));
        let status = browser
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/api/kernels', {headers: {Accept: 'application/json'}})
                   .then((r) => done(r.status));",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(status.as_u64(), Some(401), "{status}");

        // Signed in again (the challenge), then Jupyter's own logout ends
        // the gatehouse session too.
        browser.goto(&format!("{base}/lab")).await;
        jupyter_sign_in(&browser).await;
        pass_challenge(&browser, &codes[0]).await;
        browser.wait_for("#jp-main-dock-panel", WAIT).await;
        browser.goto(&format!("{base}/logout")).await;
        let names = cookie_names(&browser).await;
        assert!(
            !names.contains(&"__Host-gatehouse".to_string()),
            "{names:?}"
        );
        browser.goto(&format!("{base}/lab")).await;
        browser.wait_for("#password_input", WAIT).await;
        browser.close().await;
    })
    .await;
}

/// Jupyter's login cookie for the gateway's host, got by signing in to
/// Jupyter directly (its cookie name follows the Host the browser used).
async fn jupyter_session_cookie(app: &apps::App, gateway_host: &str) -> String {
    let mut conn = direct(app).await;
    let page = conn
        .send(request(
            "GET",
            "/login",
            &[("host", gateway_host)],
            String::new(),
        ))
        .await;
    let cookies = set_cookies(&page);
    let xsrf = cookie_value(&cookies, "_xsrf").expect("_xsrf").to_string();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("_xsrf", &xsrf)
        .append_pair("password", apps::JUPYTER_PASSWORD)
        .finish();
    let login = conn
        .send(request(
            "POST",
            "/login",
            &[
                ("host", gateway_host),
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &format!("_xsrf={xsrf}")),
            ],
            form,
        ))
        .await;
    assert_eq!(login.status, StatusCode::FOUND, "{}", login.text());
    let stolen = set_cookies(&login)
        .into_iter()
        .find(|c| c.starts_with("username-"))
        .expect("Jupyter set its login cookie");
    let check = conn
        .send(request(
            "GET",
            "/api/contents",
            &[("host", gateway_host), ("cookie", &stolen)],
            String::new(),
        ))
        .await;
    assert_eq!(
        check.status,
        StatusCode::OK,
        "the cookie works on Jupyter itself"
    );
    stolen
}

#[tokio::test(flavor = "multi_thread")]
async fn jupyter_login_cookie_without_a_gatehouse_session_is_refused() {
    let app = start(apps::jupyterlab).await;
    let gw = gateway_for(&app, "jupyterlab").await;
    let host = format!("127.0.0.1:{}", gw.addr().port());
    let stolen = jupyter_session_cookie(&app, &host).await;
    let client = gw.client();
    let api = client
        .send(
            gw.addr(),
            Version::HTTP_11,
            request(
                "GET",
                "/api/contents",
                &[
                    ("host", &host),
                    ("cookie", &stolen),
                    ("accept", "application/json"),
                ],
                String::new(),
            ),
        )
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{}", api.text());
    let page = client
        .send(
            gw.addr(),
            Version::HTTP_11,
            request(
                "GET",
                "/lab",
                &[
                    ("host", &host),
                    ("cookie", &stolen),
                    ("accept", "text/html"),
                ],
                String::new(),
            ),
        )
        .await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert_eq!(page.header("location"), Some("/login"));
    // Nor a kernel websocket.
    let upgrade = client
        .send(
            gw.addr(),
            Version::HTTP_11,
            request(
                "GET",
                "/api/kernels/x/channels",
                &[
                    ("host", &host),
                    ("cookie", &stolen),
                    ("connection", "Upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ],
                String::new(),
            ),
        )
        .await;
    assert_eq!(upgrade.status, StatusCode::UNAUTHORIZED);
}

// --- gatehouse login-probe ------------------------------------------------

/// `gatehouse login-probe URL`: its stdout, which must be a `[login]` section.
fn login_probe(url: &str) -> String {
    let out = std::process::Command::new(support::process::BIN)
        .args(["login-probe", url])
        .output()
        .expect("run gatehouse login-probe");
    assert!(
        out.status.success(),
        "login-probe {url} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Cookies a scripted browser keeps: `name=value` by name.
#[derive(Default)]
struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, resp: &Resp) {
        for pair in set_cookies(resp) {
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.0.remove(name);
                } else {
                    self.0.insert(name.to_string(), value.to_string());
                }
            }
        }
    }
    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Send through the gateway as a browser page load would, keeping cookies.
async fn browse(
    gw: &TestGateway,
    jar: &mut Jar,
    method: &str,
    path: &str,
    form: Option<String>,
) -> Resp {
    let host = format!("127.0.0.1:{}", gw.addr().port());
    let origin = format!("https://{host}");
    let cookie = jar.header();
    let mut headers = vec![
        ("host", host.as_str()),
        ("accept", "text/html"),
        ("sec-fetch-mode", "navigate"),
        ("origin", origin.as_str()),
        ("cookie", cookie.as_str()),
    ];
    let referer = format!("{origin}{path}");
    if form.is_some() {
        headers.push(("content-type", "application/x-www-form-urlencoded"));
        headers.push(("referer", referer.as_str()));
    }
    let resp = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            request(method, path, &headers, form.unwrap_or_default()),
        )
        .await;
    jar.take(&resp);
    resp
}

/// What a probed section must say for the app, checked on the settings
/// gatehouse builds from it (so it also passed validation).
fn probed_settings(app: &apps::App, section: &str) -> gatehouse::auth::login::LoginSettings {
    let dir = support::gateway::TestDir::new();
    dir.settings(&Config::default().rest(section), &app.url())
        .login
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_probe_writes_a_section_that_signs_in_and_out_of_django_admin() {
    let app = start(apps::django_admin).await;
    let url = format!("{}/admin/", app.url());
    let section = tokio::task::spawn_blocking(move || login_probe(&url))
        .await
        .expect("probe");
    let login = probed_settings(&app, &section);
    assert_eq!(login.path, "/admin/login/", "{section}");
    assert_eq!(login.username_field, "username", "{section}");
    assert_eq!(login.password_field, "password", "{section}");
    assert_eq!(login.logout_paths, vec!["/admin/logout/"], "{section}");
    assert!(login.is_anonymous("/admin/login/"), "{section}");
    assert!(
        login.is_anonymous("/static/admin/css/base.css"),
        "{section}"
    );
    assert!(!login.is_anonymous("/admin/"), "{section}");

    // And it works: a gateway configured with exactly that section tells a
    // wrong password from a right one, keeps the session, ends it on logout.
    let gw = TestGateway::start(
        &Config::default().rest(&format!("{section}\n[two_factor]\nmode = \"off\"")),
        &app.url(),
    )
    .await;
    let mut jar = Jar::default();
    let sign_in = |page: &Resp, password: &str| {
        let token = support::gateway::attr(&page.text(), "name=\"csrfmiddlewaretoken\" value");
        form_urlencoded::Serializer::new(String::new())
            .append_pair("csrfmiddlewaretoken", &token)
            .append_pair("username", apps::DJANGO_USER)
            .append_pair("password", password)
            .finish()
    };
    let page = browse(&gw, &mut jar, "GET", "/admin/login/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let wrong = sign_in(&page, "wrong-password");
    let refused = browse(&gw, &mut jar, "POST", "/admin/login/", Some(wrong)).await;
    assert_eq!(refused.status, StatusCode::OK, "Django's own form error");
    assert!(refused.text().contains("errornote"), "{}", refused.text());
    assert!(!jar.0.contains_key("__Host-gatehouse"));

    let page = browse(&gw, &mut jar, "GET", "/admin/login/", None).await;
    let right = sign_in(&page, apps::DJANGO_PASSWORD);
    let ok = browse(&gw, &mut jar, "POST", "/admin/login/", Some(right)).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.text());
    assert!(
        jar.0.contains_key("__Host-gatehouse"),
        "a gatehouse session"
    );
    assert!(
        !jar.0.contains_key("sessionid"),
        "Django's cookie is vaulted"
    );
    let users = browse(&gw, &mut jar, "GET", "/admin/auth/user/", None).await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(users.text().contains("result_list"), "{}", users.text());

    let token = support::gateway::attr(&users.text(), "name=\"csrfmiddlewaretoken\" value");
    let logout = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrfmiddlewaretoken", &token)
        .finish();
    let out = browse(&gw, &mut jar, "POST", "/admin/logout/", Some(logout)).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text());
    assert!(
        !jar.0.contains_key("__Host-gatehouse"),
        "logout ended the session"
    );
    let after = browse(&gw, &mut jar, "GET", "/admin/auth/user/", None).await;
    assert_eq!(after.status, StatusCode::FOUND);
    assert_eq!(after.header("location"), Some("/admin/login/"));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_probe_writes_a_section_that_signs_in_and_out_of_jupyterlab() {
    let app = start(apps::jupyterlab).await;
    let url = format!("{}/lab", app.url());
    let section = tokio::task::spawn_blocking(move || login_probe(&url))
        .await
        .expect("probe");
    let login = probed_settings(&app, &section);
    assert_eq!(login.path, "/login", "{section}");
    assert!(
        login.fixed_username.is_some(),
        "password-only form: {section}"
    );
    assert_eq!(login.password_field, "password", "{section}");
    assert_eq!(login.logout_paths, vec!["/logout"], "{section}");
    assert!(login.is_anonymous("/login"), "{section}");
    assert!(login.is_anonymous("/static/favicon.ico"), "{section}");
    assert!(!login.is_anonymous("/lab"), "{section}");

    let gw = TestGateway::start(
        &Config::default().rest(&format!("{section}\n[two_factor]\nmode = \"off\"")),
        &app.url(),
    )
    .await;
    let mut jar = Jar::default();
    let form = |jar: &Jar, password: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("_xsrf", jar.0.get("_xsrf").map_or("", |v| v.as_str()))
            .append_pair("password", password)
            .finish()
    };
    let page = browse(&gw, &mut jar, "GET", "/login", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let wrong = form(&jar, "wrong");
    let refused = browse(&gw, &mut jar, "POST", "/login", Some(wrong)).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "Jupyter's own answer"
    );
    assert!(!jar.0.contains_key("__Host-gatehouse"));
    let right = form(&jar, apps::JUPYTER_PASSWORD);
    let ok = browse(&gw, &mut jar, "POST", "/login", Some(right)).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.text());
    assert!(
        jar.0.contains_key("__Host-gatehouse"),
        "a gatehouse session"
    );
    assert!(
        !jar.0.keys().any(|k| k.starts_with("username-")),
        "Jupyter's login cookie is vaulted: {:?}",
        jar.0.keys()
    );
    let api = browse(&gw, &mut jar, "GET", "/api/contents", None).await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.text());
    let out = browse(&gw, &mut jar, "GET", "/logout", None).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(
        !jar.0.contains_key("__Host-gatehouse"),
        "logout ended the session"
    );
    let after = browse(&gw, &mut jar, "GET", "/lab", None).await;
    assert_eq!(after.status, StatusCode::FOUND);
    assert_eq!(after.header("location"), Some("/login"));
}

#[tokio::test(flavor = "multi_thread")]
async fn jupyterlab_under_a_path_prefix_signs_in_serves_its_api_and_logs_out() {
    // The recipe with the prefix written into its paths, as docs/recipes.md says.
    let app = start(|| apps::jupyterlab_under("/jupyter/")).await;
    let section = recipe("jupyterlab")
        .replace("path = \"/login\"", "path = \"/jupyter/login\"")
        .replace("[\"/logout\"]", "[\"/jupyter/logout\"]")
        .replace(
            "[\"/login\", \"/static/\"]",
            "[\"/jupyter/login\", \"/jupyter/static/\"]",
        )
        .replace(
            "location_not = \"/login\"",
            "location_not = \"/jupyter/login\"",
        );
    assert!(section.contains("/jupyter/static/"), "{section}");
    let gw = TestGateway::start(
        &Config::default().rest(&format!("{section}\n[two_factor]\nmode = \"off\"")),
        &app.url(),
    )
    .await;
    let mut jar = Jar::default();
    // Signed out, the app's pages send the browser to its prefixed login.
    let lab = browse(&gw, &mut jar, "GET", "/jupyter/lab", None).await;
    assert_eq!(lab.status, StatusCode::FOUND);
    assert_eq!(lab.header("location"), Some("/jupyter/login"));
    let page = browse(&gw, &mut jar, "GET", "/jupyter/login", None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("_xsrf", jar.0.get("_xsrf").map_or("", |v| v.as_str()))
        .append_pair("password", apps::JUPYTER_PASSWORD)
        .finish();
    let ok = browse(&gw, &mut jar, "POST", "/jupyter/login", Some(form)).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.text());
    assert!(jar.0.contains_key("__Host-gatehouse"));
    // The login cookie (Path=/jupyter/) rides along from the vault.
    let api = browse(&gw, &mut jar, "GET", "/jupyter/api/contents", None).await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.text());
    let outside = browse(&gw, &mut jar, "GET", "/api/contents", None).await;
    assert_ne!(
        outside.status,
        StatusCode::OK,
        "nothing is served outside the prefix"
    );
    let out = browse(&gw, &mut jar, "GET", "/jupyter/logout", None).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(
        !jar.0.contains_key("__Host-gatehouse"),
        "logout ended the session"
    );
}
