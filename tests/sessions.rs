//! Login interception, sessions and lockout: the gateway really controls who
//! is signed in. Every scenario runs on the embedded store and on a real
//! redis-server started for the test.

mod support;

use gatehouse::clock::{Clock, ManualClock};
use http::{StatusCode, Version};
use std::time::Duration;
use support::gateway::{
    get_with, login_post, session_cookie, set_cookie_names, Config, Resp, TestGateway,
};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

/// Which store a scenario runs on; the Redis server lives as long as this.
enum Backend {
    Embedded,
    Redis(RedisServer),
}

impl Backend {
    fn redis() -> Self {
        Backend::Redis(RedisServer::start())
    }
    fn config(&self, c: Config) -> Config {
        match self {
            Backend::Embedded => c,
            Backend::Redis(r) => c.store(&r.url()),
        }
    }
}

/// A recording dashboard behind a gateway driven by a manual clock.
struct Scenario {
    up: Recorder,
    gw: TestGateway,
    clock: ManualClock,
    _backend: Backend,
}

impl Scenario {
    async fn start(backend: Backend, extra: &str) -> Self {
        let up = Recorder::start().await;
        let clock = ManualClock::new();
        let config = backend.config(Config::default().rest(&format!(
            "[two_factor]\nmode = \"off\"\n[login]\nsession_cookies = [\"APPSESSION\"]\n{extra}"
        )));
        let gw = TestGateway::start_with_clock(&config, &up.url(), Some(clock.clone())).await;
        Self {
            up,
            gw,
            clock,
            _backend: backend,
        }
    }

    async fn send(&self, req: http::Request<http_body_util::Full<bytes::Bytes>>) -> Resp {
        self.gw
            .client()
            .send(self.gw.addr(), Version::HTTP_11, req)
            .await
    }

    /// Sign in and return the gatehouse cookie.
    async fn sign_in(&self, user: &str) -> String {
        let resp = self.send(login_post(user, PASSWORD, "", &[])).await;
        assert_eq!(resp.status, StatusCode::FOUND, "{}", resp.text());
        session_cookie(&resp).expect("a gatehouse session cookie")
    }

    async fn get(&self, path: &str, cookie: &str) -> Resp {
        self.send(get_with(path, cookie, &[])).await
    }

    fn upstream_cookie(&self) -> String {
        self.up
            .last()
            .and_then(|s| {
                s.headers
                    .get("cookie")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Embedded).await } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::redis()).await } )*
        }
    };
}

on_both_stores!(
    sign_in_gives_a_gatehouse_session_and_the_dashboard_cookie_stays_in_the_vault,
    forged_dashboard_cookie_without_a_session_never_reaches_the_dashboard,
    absolute_timeout_ends_the_session_and_the_dashboard_sees_no_cookie,
    idle_timeout_ends_a_quiet_session_but_not_a_busy_one,
    second_sign_in_ends_the_first_when_concurrent_sessions_are_prevented,
    concurrent_sessions_are_kept_when_allowed,
    log_out_all_ends_every_session_and_per_user_log_out_only_that_users,
    logout_path_ends_the_gatehouse_session_after_forwarding,
    sixth_attempt_after_five_wrong_passwords_is_refused_without_the_dashboard,
    one_address_spraying_many_usernames_is_throttled,
    an_address_opening_too_many_sign_in_pages_gets_429_but_its_browsers_keep_theirs,
    open_redirects_in_return_to_land_on_root,
    return_to_brings_the_user_back_where_they_were_going,
    locked_known_and_unknown_users_get_identical_answers,
    a_password_only_login_form_counts_every_attempt_as_its_fixed_user,
    a_post_to_the_login_path_without_credentials_is_a_signed_in_request,
    a_json_login_answering_200_either_way_is_judged_by_its_body,
);

async fn sign_in_gives_a_gatehouse_session_and_the_dashboard_cookie_stays_in_the_vault(b: Backend) {
    let s = Scenario::start(b, "").await;
    let resp = s
        .send(login_post("Alice@Example.com ", PASSWORD, "", &[]))
        .await;
    assert_eq!(resp.status, StatusCode::FOUND);
    assert_eq!(resp.header("location"), Some("/home"));
    let names = set_cookie_names(&resp);
    assert!(names.contains(&"__Host-gatehouse".to_string()), "{names:?}");
    assert!(
        names.contains(&"theme".to_string()),
        "readable cookies pass: {names:?}"
    );
    assert!(
        !names.contains(&"APPSESSION".to_string()),
        "HttpOnly dashboard cookie leaked: {names:?}"
    );
    let cookie_line = resp
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-gatehouse="))
        .expect("cookie")
        .to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie_line.contains(attr), "{cookie_line}");
    }

    let cookie = session_cookie(&resp).expect("session");
    let home = s.get("/home", &format!("{cookie}; theme=dark")).await;
    assert_eq!(home.status, StatusCode::OK);
    let sent = s.upstream_cookie();
    assert!(
        sent.contains("APPSESSION=s"),
        "vault cookie not injected: {sent}"
    );
    assert!(sent.contains("theme=dark"));
    assert!(
        !sent.contains("__Host-gatehouse"),
        "gatehouse cookie forwarded: {sent}"
    );
}

async fn forged_dashboard_cookie_without_a_session_never_reaches_the_dashboard(b: Backend) {
    let s = Scenario::start(b, "").await;
    let page = s.get("/login", "APPSESSION=forged; theme=dark").await;
    assert_eq!(page.status, StatusCode::OK);
    let sent = s.upstream_cookie();
    assert!(
        !sent.contains("APPSESSION"),
        "forged cookie forwarded: {sent}"
    );
    assert!(sent.contains("theme=dark"));

    s.up.clear();
    let protected = s.get("/recordings/", "APPSESSION=forged").await;
    assert_eq!(protected.status, StatusCode::FOUND);
    assert_eq!(protected.header("location"), Some("/login"));
    assert!(
        s.up.seen().is_empty(),
        "a protected page reached the dashboard without a session"
    );
}

async fn absolute_timeout_ends_the_session_and_the_dashboard_sees_no_cookie(b: Backend) {
    let s = Scenario::start(b, "[session]\nabsolute_timeout = \"60s\"").await;
    let cookie = s.sign_in("alice@example.com").await;
    assert_eq!(s.get("/home", &cookie).await.status, StatusCode::OK);
    s.clock.advance(Duration::from_secs(61));
    s.up.clear();
    let expired = s.get("/home", &cookie).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(
        expired.text().contains("Your session expired"),
        "{}",
        expired.text()
    );
    assert!(expired.text().contains("href=\"/login\""));
    assert!(
        s.up.seen().is_empty(),
        "the dashboard was contacted for an expired session"
    );
}

async fn idle_timeout_ends_a_quiet_session_but_not_a_busy_one(b: Backend) {
    let s = Scenario::start(
        b,
        "[session]\nidle_timeout = \"30s\"\nabsolute_timeout = \"1h\"",
    )
    .await;
    let cookie = s.sign_in("alice@example.com").await;
    for _ in 0..4 {
        s.clock.advance(Duration::from_secs(20));
        assert_eq!(
            s.get("/home", &cookie).await.status,
            StatusCode::OK,
            "busy session ended"
        );
    }
    s.clock.advance(Duration::from_secs(31));
    s.up.clear();
    let idle = s.get("/home", &cookie).await;
    assert_eq!(idle.status, StatusCode::UNAUTHORIZED);
    assert!(s.up.seen().is_empty());
}

async fn second_sign_in_ends_the_first_when_concurrent_sessions_are_prevented(b: Backend) {
    let s = Scenario::start(b, "").await;
    let first = s.sign_in("alice@example.com").await;
    let bob = s.sign_in("bob@example.com").await;
    let second = s.sign_in("alice@example.com").await;
    let old = s.get("/home", &first).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    assert!(old.text().contains("signed in elsewhere"), "{}", old.text());
    assert_eq!(s.get("/home", &second).await.status, StatusCode::OK);
    assert_eq!(
        s.get("/home", &bob).await.status,
        StatusCode::OK,
        "another user's session ended"
    );
}

async fn concurrent_sessions_are_kept_when_allowed(b: Backend) {
    let s = Scenario::start(b, "[session]\nprevent_concurrent = false").await;
    let first = s.sign_in("alice@example.com").await;
    let second = s.sign_in("alice@example.com").await;
    assert_eq!(s.get("/home", &first).await.status, StatusCode::OK);
    assert_eq!(s.get("/home", &second).await.status, StatusCode::OK);
}

async fn log_out_all_ends_every_session_and_per_user_log_out_only_that_users(b: Backend) {
    let s = Scenario::start(b, "[session]\nprevent_concurrent = false").await;
    let alice1 = s.sign_in("alice@example.com").await;
    let alice2 = s.sign_in("alice@example.com").await;
    let bob = s.sign_in("bob@example.com").await;
    let live = s.gw.handle.live();
    let ended = live
        .sessions
        .end_user_sessions(
            "alice@example.com",
            "",
            gatehouse::session::EndReason::Revoked,
        )
        .await
        .expect("log out alice");
    assert_eq!(ended, 2);
    assert_eq!(
        s.get("/home", &alice1).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.get("/home", &alice2).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.get("/home", &bob).await.status, StatusCode::OK);

    s.clock.advance(Duration::from_millis(5));
    let now_ms = s
        .clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    live.sessions.logout_all(now_ms).await.expect("log out all");
    assert_eq!(s.get("/home", &bob).await.status, StatusCode::UNAUTHORIZED);
    s.clock.advance(Duration::from_millis(5));
    let fresh = s.sign_in("bob@example.com").await;
    assert_eq!(
        s.get("/home", &fresh).await.status,
        StatusCode::OK,
        "signing in again works"
    );
}

async fn logout_path_ends_the_gatehouse_session_after_forwarding(b: Backend) {
    let s = Scenario::start(b, "").await;
    let cookie = s.sign_in("alice@example.com").await;
    let out = s.get("/logout", &cookie).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(s
        .up
        .last()
        .expect("forwarded")
        .target
        .starts_with("/logout"));
    assert!(
        s.upstream_cookie().contains("APPSESSION"),
        "the dashboard must see its logout"
    );
    s.up.clear();
    assert_eq!(
        s.get("/home", &cookie).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(s.up.seen().is_empty());
}

async fn sixth_attempt_after_five_wrong_passwords_is_refused_without_the_dashboard(b: Backend) {
    let s = Scenario::start(b, "[lockout]\nlock_for = \"2s\"").await;
    for i in 0..5 {
        let r = s
            .send(login_post("alice@example.com", "wrong", "", &[]))
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "attempt {i}: the dashboard answers its own form error"
        );
    }
    s.up.clear();
    let sixth = s
        .send(login_post("alice@example.com", PASSWORD, "", &[]))
        .await;
    assert_eq!(sixth.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        s.up.seen().is_empty(),
        "a locked username reached the dashboard"
    );
    // The lock is a store TTL in real time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = s
        .send(login_post("alice@example.com", PASSWORD, "", &[]))
        .await;
    assert_eq!(again.status, StatusCode::FOUND, "lock did not expire");
}

/// Every cookie-less visit to a sign-in page whose dashboard sets a cookie
/// stores a pre-sign-in session for 15 minutes; one address may start only
/// so many, so it cannot fill the store.
async fn an_address_opening_too_many_sign_in_pages_gets_429_but_its_browsers_keep_theirs(
    b: Backend,
) {
    let up = Recorder::start().await;
    let config = b.config(
        Config::default()
            .server("trusted_proxies = [\"127.0.0.1\"]")
            .rest(
                "[two_factor]\nmode = \"off\"\n[login]\nsession_cookies = [\"APPSESSION\"]\n\
                 [session]\nprelogin_per_address = 3",
            ),
    );
    let gw = TestGateway::start(&config, &up.url()).await;
    let visit = |cookie: &str, ip: &str| {
        let (cookie, ip) = (cookie.to_owned(), ip.to_owned());
        let gw = &gw;
        async move {
            gw.client()
                .send(
                    gw.addr(),
                    Version::HTTP_11,
                    get_with("/login?set-cookie", &cookie, &[("x-forwarded-for", &ip)]),
                )
                .await
        }
    };
    let mut first = None;
    for _ in 0..3 {
        let r = visit("", "198.51.100.7").await;
        assert_eq!(r.status, StatusCode::OK);
        let c = session_cookie(&r).expect("a pre-sign-in session");
        first.get_or_insert(c);
    }
    let over = visit("", "198.51.100.7").await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(session_cookie(&over).is_none(), "no session past the cap");
    assert!(
        over.text().contains("Too many new visits"),
        "{}",
        over.text()
    );
    // A browser that has its session uses it again: nothing new is stored.
    let again = visit(&first.expect("first"), "198.51.100.7").await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(session_cookie(&again).is_none(), "the same session is kept");
    // Another address has its own count.
    let other = visit("", "198.51.100.8").await;
    assert_eq!(other.status, StatusCode::OK);
    assert!(session_cookie(&other).is_some());
}

async fn one_address_spraying_many_usernames_is_throttled(b: Backend) {
    let s = Scenario::start(b, "[lockout]\nip_max_failures = 5").await;
    // The spraying address comes through a trusted proxy.
    drop(s.gw);
    let up = s.up;
    let backend_cfg = s._backend;
    let config = backend_cfg.config(
        Config::default()
            .server("trusted_proxies = [\"127.0.0.1\"]")
            .rest("[two_factor]\nmode = \"off\"\n[lockout]\nip_max_failures = 5"),
    );
    let gw = TestGateway::start(&config, &up.url()).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for i in 0..5 {
        let r = gw
            .client()
            .send(
                gw.addr(),
                Version::HTTP_11,
                login_post(
                    &format!("user{i}@example.com"),
                    "guess",
                    "",
                    &from("198.51.100.7"),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    up.clear();
    let blocked = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("user9@example.com", "guess", "", &from("198.51.100.7")),
        )
        .await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(up.seen().is_empty());
    let other = gw
        .client()
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("user9@example.com", PASSWORD, "", &from("203.0.113.9")),
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::FOUND,
        "another address must not be throttled"
    );
}

async fn open_redirects_in_return_to_land_on_root(b: Backend) {
    let s = Scenario::start(b, "").await;
    for bad in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/%0d%0aSet-Cookie:%20x=y",
        "/%09/evil.example",
        "javascript:alert(1)",
        "https://127.0.0.1@evil.example",
    ] {
        let enc: String =
            percent_encoding::utf8_percent_encode(bad, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let cookie = format!("__Host-gatehouse-return={enc}");
        let r = s
            .send(login_post("alice@example.com", PASSWORD, &cookie, &[]))
            .await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(
            r.header("location"),
            Some("/"),
            "return-to {bad:?} was followed"
        );
    }
}

async fn return_to_brings_the_user_back_where_they_were_going(b: Backend) {
    let s = Scenario::start(b, "").await;
    let r = s
        .send(get_with(
            "/recordings/2026/call.wav?dl=1",
            "",
            &[("accept", "text/html")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let ret = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-gatehouse-return="))
        .and_then(|v| v.split(';').next())
        .expect("return cookie")
        .to_string();
    let login = s
        .send(login_post("alice@example.com", PASSWORD, &ret, &[]))
        .await;
    assert_eq!(
        login.header("location"),
        Some("/recordings/2026/call.wav?dl=1")
    );
}

async fn locked_known_and_unknown_users_get_identical_answers(b: Backend) {
    let s = Scenario::start(b, "[lockout]\nmax_failures = 2").await;
    for user in ["alice@example.com", "nobody@example.com"] {
        for _ in 0..2 {
            s.send(login_post(user, "wrong", "", &[])).await;
        }
    }
    let known = s
        .send(login_post("alice@example.com", PASSWORD, "", &[]))
        .await;
    let unknown = s
        .send(login_post("nobody@example.com", "wrong", "", &[]))
        .await;
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.body, unknown.body);
    let names = |r: &Resp| {
        let mut v: Vec<String> = r
            .headers
            .keys()
            .map(|k| k.to_string())
            .filter(|k| k != "date")
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&known), names(&unknown));
}

fn password_only(
    pass: &str,
    claimed_user: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("password", pass)
        .append_pair("username", claimed_user)
        .finish();
    http::Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(form)))
        .expect("request")
}

async fn a_password_only_login_form_counts_every_attempt_as_its_fixed_user(b: Backend) {
    let s = Scenario::start(
        b,
        "fixed_username = \"jupyter\"\nusername_field = \"\"\n[lockout]\nlock_for = \"1h\"",
    )
    .await;
    // Whatever name a client adds to the form, the attempts are the one
    // user's: five wrong passwords lock it.
    for i in 0..5 {
        let r = s.send(password_only("wrong", &format!("user{i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "attempt {i}");
    }
    s.up.clear();
    let sixth = s.send(password_only(PASSWORD, "someone-else")).await;
    assert_eq!(sixth.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        s.up.seen().is_empty(),
        "a locked login reached the dashboard"
    );
}

async fn a_post_to_the_login_path_without_credentials_is_a_signed_in_request(b: Backend) {
    // Single-page apps POST to their login path to ask who is signed in.
    let s = Scenario::start(b, "").await;
    let cookie = s.sign_in("alice@example.com").await;
    s.up.clear();
    let req = http::Request::post("/login")
        .header("content-type", "application/json")
        .header("cookie", cookie.as_str())
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"passive": true}"#,
        )))
        .expect("request");
    let resp = s.send(req).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert!(
        s.upstream_cookie().contains("APPSESSION="),
        "the vault did not ride along: {:?}",
        s.upstream_cookie()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_less_login_post_waiting_for_the_second_factor_gets_no_vault() {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&Config::default(), &up.url()).await;
    let client = gw.client();
    let login = client
        .send(
            gw.addr(),
            Version::HTTP_11,
            login_post("alice@example.com", PASSWORD, "", &[]),
        )
        .await;
    assert_eq!(
        login.status,
        StatusCode::SEE_OTHER,
        "2FA enrollment is next"
    );
    let cookie = session_cookie(&login).expect("a pending session");
    up.clear();
    let req = http::Request::post("/login")
        .header("content-type", "application/json")
        .header("cookie", cookie.as_str())
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"passive": true}"#,
        )))
        .expect("request");
    let resp = client.send(gw.addr(), Version::HTTP_11, req).await;
    let seen = up.last().expect("forwarded");
    let sent = seen
        .headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        !sent.contains("APPSESSION"),
        "the signed-in dashboard cookie went out before the second factor: {sent}"
    );
    assert!(
        !set_cookie_names(&resp).contains(&"APPSESSION".to_string()),
        "HttpOnly cookies of the answer reached the browser"
    );
}

async fn a_json_login_answering_200_either_way_is_judged_by_its_body(b: Backend) {
    let s = Scenario::start(
        b,
        "path = \"/json-login\"\nusername_field = \"/user\"\npassword_field = \"/password\"\n\
         [login.success]\nstatus = [200]\nlocation_not = \"\"\n\
         json_pointer = \"/ok\"\njson_equals = \"true\"\n[lockout]\nmax_failures = 3",
    )
    .await;
    let attempt = |pass: &str| {
        http::Request::post("/json-login")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                serde_json::json!({"user": "alice@example.com", "password": pass}).to_string(),
            )))
            .expect("request")
    };
    // A wrong password: the dashboard's own answer, unchanged, and a failure.
    let wrong = s.send(attempt("wrong")).await;
    assert_eq!(wrong.status, StatusCode::OK);
    assert_eq!(wrong.text(), r#"{"ok":false}"#);
    assert_eq!(session_cookie(&wrong), None, "a failure made a session");
    // A right one: a session holding the vaulted cookie, the answer passed on.
    let right = s.send(attempt(PASSWORD)).await;
    assert_eq!(right.status, StatusCode::OK);
    assert_eq!(right.text(), r#"{"ok":true}"#);
    let cookie = session_cookie(&right).expect("a session");
    assert!(!set_cookie_names(&right).contains(&"APPSESSION".to_string()));
    s.get("/home", &cookie).await;
    assert!(s.upstream_cookie().contains("APPSESSION=json1"));
    // Failures judged by the body count towards the lockout.
    for _ in 0..3 {
        s.send(attempt("wrong")).await;
    }
    s.up.clear();
    let locked = s.send(attempt(PASSWORD)).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(s.up.seen().is_empty());
}
