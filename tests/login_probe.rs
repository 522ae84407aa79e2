//! `gatehouse login-probe`: the real binary against the demo dashboard and
//! against small local servers answering like Django admin and JupyterLab
//! (their saved login pages, redirects and logout status codes), so the whole
//! path — redirects, form reading, logout probing, output — is exercised.
//! Every printed section must pass gatehouse's own configuration validation.

mod support;

use bytes::Bytes;
use gatehouse::auth::login::LoginSettings;
use gatehouse::demo::{Dashboard, DashboardOptions};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::gateway::{login_post, Config, TestDir, TestGateway};
use support::process::{free_port, BIN};
use tokio::net::TcpListener;

const DJANGO_PAGE: &str = include_str!("data/login_pages/django_admin.html");
const JUPYTER_PAGE: &str = include_str!("data/login_pages/jupyterlab.html");

/// What one run of `gatehouse login-probe …` gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn login_probe(args: &[&str]) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(BIN)
            .arg("login-probe")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("login-probe finished in time")
    .expect("run gatehouse");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The printed section appended to a minimal configuration, validated as
/// `gatehouse check-config` would.
fn validated(section: &str) -> LoginSettings {
    TestDir::new()
        .settings(&Config::default().rest(section), "http://127.0.0.1:9")
        .login
}

async fn demo_dashboard() -> Dashboard {
    Dashboard::start(
        "127.0.0.1:0".parse().expect("addr"),
        DashboardOptions {
            big_recording_bytes: 1 << 20,
        },
    )
    .await
    .expect("dashboard")
}

/// A local HTTP/1.1 server answering from a fixed table, logging each
/// request's method and target.
struct SavedApp {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(Method, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

type Route = fn(&str, SocketAddr) -> Response<Full<Bytes>>;

impl SavedApp {
    async fn start(route: Route) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<(Method, String)>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let target = req
                            .uri()
                            .path_and_query()
                            .map_or("/".to_string(), |p| p.to_string());
                        log.lock()
                            .expect("lock")
                            .push((req.method().clone(), target.clone()));
                        async move { Ok::<_, Infallible>(route(&target, addr)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn methods(&self) -> Vec<Method> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }
}

impl Drop for SavedApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    for (k, v) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("header"),
        );
    }
    r
}

const HTML: (&str, &str) = ("content-type", "text/html; charset=utf-8");

fn not_found() -> Response<Full<Bytes>> {
    answer(404, &[HTML], "<h1>Not Found</h1>")
}

/// Django 5 admin as it answers a browser without a session.
fn django(target: &str, _: SocketAddr) -> Response<Full<Bytes>> {
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/admin/" => answer(302, &[("location", "/admin/login/?next=/admin/")], ""),
        "/admin/login/" => answer(
            200,
            &[
                HTML,
                (
                    "set-cookie",
                    "csrftoken=Xq7JqW2o; expires=Sun, 28 Nov 2027 20:00:00 GMT; Max-Age=31449600; Path=/; SameSite=Lax",
                ),
            ],
            DJANGO_PAGE,
        ),
        // Logout is POST-only since Django 5: 405 to a GET here. (Django
        // 5.2.19 with tests/real_apps' settings answers 302 to /admin/
        // instead; both differ from a made-up path's redirect to the login.)
        "/admin/logout/" => answer(405, &[("allow", "POST, OPTIONS")], ""),
        // The admin's catch-all sends signed-out browsers to the login.
        p if p.starts_with("/admin/") => answer(
            302,
            &[("location", &format!("/admin/login/?next={p}"))],
            "",
        ),
        _ => not_found(),
    }
}

/// JupyterLab (jupyter_server) as it answers a browser without a session.
fn jupyter(target: &str, _: SocketAddr) -> Response<Full<Bytes>> {
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/lab" => answer(302, &[("location", "/login?next=%2Flab")], ""),
        "/login" => answer(
            200,
            &[
                HTML,
                (
                    "set-cookie",
                    "_xsrf=2|3cd78d9a|96e827c1ec088b676ceb93ea9820df1c|1795984223; Path=/",
                ),
            ],
            JUPYTER_PAGE,
        ),
        "/logout" => answer(200, &[HTML], "<p>Successfully logged out.</p>"),
        _ => not_found(),
    }
}

/// An old PHP dashboard: its session cookie comes with the first redirect.
fn legacy(target: &str, addr: SocketAddr) -> Response<Full<Bytes>> {
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/" => answer(
            302,
            &[
                ("location", &format!("http://{addr}/pbx/login.php")),
                ("set-cookie", "PHPSESSID=d41d8cd9; path=/; HttpOnly"),
            ],
            "",
        ),
        "/pbx/login.php" => answer(
            200,
            &[HTML],
            "<html><head><link rel=stylesheet href=/pbx/css/main.css></head><body>\
             <table><form method=POST action=login.php>\
             <tr><td>User</td><td><input name=user></td></tr>\
             <tr><td>Password</td><td><input type=password name=pass></td></tr>\
             <tr><td><input type=submit value=Login></td></tr></form></table></body></html>",
        ),
        "/pbx/logout.php" => answer(302, &[("location", "login.php")], ""),
        // Answers that a probe must refuse.
        "/elsewhere" => answer(302, &[("location", "http://127.0.0.1:1/login")], ""),
        "/to-https" => answer(
            301,
            &[("location", &format!("https://{addr}/pbx/login.php"))],
            "",
        ),
        "/loop" => answer(302, &[("location", "/loop")], ""),
        "/api/login" => answer(
            200,
            &[("content-type", "application/json")],
            r#"{"error":"use POST"}"#,
        ),
        "/huge" => answer(200, &[HTML], vec![b'<'; 3 * 1024 * 1024]),
        "/spa" => answer(
            200,
            &[HTML],
            "<div id=app><input id=user><input id=pw type=password>\
             <button onclick=signIn()>Sign in</button></div>",
        ),
        "/nothing" => answer(200, &[HTML], "<p>Welcome</p>"),
        _ => not_found(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_dashboard_root_leads_to_its_login_section() {
    let dash = demo_dashboard().await;
    let run = login_probe(&[&format!("{}/", dash.url())]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let l = validated(&run.stdout);
    assert_eq!(l.path, "/login");
    assert_eq!(l.username_field, "username");
    assert_eq!(l.fixed_username, None);
    assert_eq!(l.password_field, "password");
    assert_eq!(l.logout_paths, ["/logout"]);
    // The sign-in page loads its stylesheet from /static/pbx.css.
    assert_eq!(l.anonymous_paths, ["/login", "/static/"]);
    assert_eq!(l.success_status, [302, 303]);
    assert_eq!(l.location_not.as_deref(), Some("/login"));
    assert!(l.session_cookies.is_empty());
    // Every unknown path of the demo redirects a signed-out browser to the
    // login, its logout included: the probe cannot tell them apart, and says so.
    assert!(
        run.stdout
            .contains("# GET /logout answered 302 (to /login), as a made-up path does:"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probed_section_lets_gatehouse_watch_the_demo_login() {
    let dash = demo_dashboard().await;
    let run = login_probe(&[&format!("{}/", dash.url())]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let gw = TestGateway::start(
        &Config::default()
            .rest(&run.stdout)
            .rest("[two_factor]\nmode = \"off\""),
        &dash.url(),
    )
    .await;
    let client = gw.client();
    let css = client.get(gw.addr(), "/static/pbx.css").await;
    assert_eq!(css.status, StatusCode::OK, "an anonymous path");
    let wrong = client
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("alice@example.com", "wrong", "", &[]),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::OK);
    assert_eq!(support::gateway::session_cookie(&wrong), None);
    let right = client
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("alice@example.com", "Alice-pass-1", "", &[]),
        )
        .await;
    assert_eq!(right.status, StatusCode::FOUND, "{}", right.text());
    assert!(
        support::gateway::session_cookie(&right).is_some(),
        "the success signal was recognised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_admin_redirect_leads_to_its_form_and_post_only_logout() {
    let app = SavedApp::start(django).await;
    let run = login_probe(&[&app.url("/admin/")]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let l = validated(&run.stdout);
    assert_eq!(l.path, "/admin/login/");
    assert_eq!(l.username_field, "username");
    assert_eq!(l.password_field, "password");
    assert_eq!(l.logout_paths, ["/admin/logout/"]);
    assert_eq!(l.anonymous_paths, ["/admin/login/", "/static/"]);
    assert_eq!(l.success_status, [302, 303]);
    assert_eq!(l.location_not.as_deref(), Some("/admin/login/"));
    assert!(l.session_cookies.is_empty(), "csrftoken is not HttpOnly");
    assert!(run
        .stdout
        .contains("# the form also sends: csrfmiddlewaretoken (hidden), next (hidden)"));
    assert!(run
        .stdout
        .contains("answered 405: it exists, for POST only"));
    assert!(
        !run.stdout
            .contains("sp9onkaFjXEIZaUNaVnKkPV7u2teDHeGEK1MTbT1gpeIUlygiv4csLWK5XofDsfK"),
        "a token's value is never printed"
    );
    assert!(
        app.methods().iter().all(|m| m == Method::GET),
        "the probe only reads: {:?}",
        app.methods()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_password_only_form_gets_a_fixed_username() {
    let app = SavedApp::start(jupyter).await;
    let run = login_probe(&[&app.url("/lab")]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let l = validated(&run.stdout);
    assert_eq!(l.path, "/login");
    assert_eq!(l.fixed_username.as_deref(), Some("admin"));
    assert_eq!(l.username_field, "");
    assert_eq!(l.password_field, "password");
    assert_eq!(l.logout_paths, ["/logout"]);
    assert_eq!(l.anonymous_paths, ["/login", "/static/"]);
    assert_eq!(l.success_status, [302, 303]);
    assert_eq!(l.location_not.as_deref(), Some("/login"));
    assert!(run.stdout.contains("# the form also sends: _xsrf (hidden)"));
    assert!(run.stdout.contains("Choose the name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_form_and_pre_login_session_cookie_of_an_old_dashboard() {
    let app = SavedApp::start(legacy).await;
    let run = login_probe(&[&app.url("/")]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let l = validated(&run.stdout);
    assert_eq!(l.path, "/pbx/login.php");
    assert_eq!(l.username_field, "user");
    assert_eq!(l.password_field, "pass");
    assert_eq!(l.logout_paths, ["/pbx/logout.php"]);
    assert_eq!(l.anonymous_paths, ["/pbx/css/", "/pbx/login.php"]);
    assert_eq!(l.session_cookies, ["PHPSESSID"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_are_not_form_logins_exit_1_with_advice() {
    let app = SavedApp::start(legacy).await;
    let run = login_probe(&[&app.url("/nothing")]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "gatehouse: no login form on {}: no <input type=password>",
            app.url("/nothing")
        )
    );
    let run = login_probe(&[&app.url("/spa")]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("JavaScript"), "{}", run.stderr);
    assert!(
        run.stdout.lines().all(|l| l.starts_with('#')),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("network"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_cannot_be_probed_exit_2_and_say_why() {
    let app = SavedApp::start(legacy).await;
    for (path, says) in [
        ("/elsewhere", "another origin"),
        ("/to-https", "another origin"),
        ("/loop", "redirects more than 10 times"),
        ("/api/login", "is not an HTML page"),
        ("/huge", "larger than 2097152 bytes"),
        ("/missing", "answered 404 Not Found"),
    ] {
        let run = login_probe(&[&app.url(path)]).await;
        assert_eq!(run.code, Some(2), "{path}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{path}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{path}: {}", run.stdout);
    }
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let run = login_probe(&[&closed]).await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("cannot connect to 127.0.0.1:") && !run.stderr.contains("client error"),
        "{}",
        run.stderr
    );
    // A dashboard that accepts the connection and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_url = format!("http://{}/", silent.local_addr().expect("addr"));
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let run = login_probe(&["--timeout", "1s", &silent_url]).await;
    holder.abort();
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("did not answer within 1s"),
        "{}",
        run.stderr
    );
    let run = login_probe(&["pbx.example.com/login"]).await;
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("give the whole URL"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_needs_a_trusted_certificate_or_the_ca_file() {
    let dash = demo_dashboard().await;
    let gw = TestGateway::start(
        &Config::default().rest("[two_factor]\nmode = \"off\""),
        &dash.url(),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/", gw.addr().port());
    let run = login_probe(&[&url]).await;
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stderr.contains("TLS handshake with 127.0.0.1:") && run.stderr.contains("--ca-file"),
        "{}",
        run.stderr
    );
    let ca = gw.dir.path().join("cert.pem");
    let run = login_probe(&["--ca-file", &ca.display().to_string(), &url]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let l = validated(&run.stdout);
    assert_eq!(l.path, "/login");
    assert_eq!(l.username_field, "username");
    // The gateway's own cookie is not the dashboard's.
    assert!(l.session_cookies.is_empty(), "{:?}", l.session_cookies);
    assert!(
        run.stdout.contains("# A gatehouse answered this URL"),
        "{}",
        run.stdout
    );
}
