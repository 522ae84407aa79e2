//! Machine and app clients (issue 13): API areas without sessions, JSON
//! refusals, service accounts bound to their addresses, per-area second
//! factor across two host names, and the JSON 2FA step. The demo dashboard
//! is the upstream. Scenarios whose state matters run on both stores.

mod support;

use gatehouse::auth::totp::{code_at, TotpSecret};
use gatehouse::clock::{Clock, ManualClock};
use gatehouse::demo::{Dashboard, DashboardOptions, API_TOKEN};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use std::time::Duration;
use support::gateway::{attr, get_with, login_post, session_cookie, Config, Resp, TestGateway};
use support::redis::RedisServer;

const ALICE: (&str, &str) = ("alice@example.com", "Alice-pass-1");
const CRM: (&str, &str) = ("crm@example.com", "Crm-pass-333");
const OFFICE: &str = "203.0.113.10";
const SERVICE_HOST: &str = "203.0.113.20";
const ELSEWHERE: &str = "198.51.100.7";

/// `[[login.api]]` for the demo's JSON login.
const JSON_LOGIN: &str = "[[login.api]]\npath = \"/api/login\"\nusername_field = \"/username\"\nstatus = [200]\nset_cookie = \"PBXSESSID\"\n";

struct Scenario {
    gw: TestGateway,
    clock: ManualClock,
    config: Config,
    _dashboard: Dashboard,
    _redis: Option<RedisServer>,
}

impl Scenario {
    async fn start(redis: bool, rest: &str) -> Self {
        let dashboard = Dashboard::start(
            "127.0.0.1:0".parse().expect("addr"),
            DashboardOptions {
                big_recording_bytes: 1 << 20,
            },
        )
        .await
        .expect("dashboard");
        let redis = redis.then(RedisServer::start);
        let mut config = Config::default()
            .server("trusted_proxies = [\"127.0.0.1\"]")
            .rest(rest);
        if let Some(r) = &redis {
            config = config.store(&r.url());
        }
        let clock = ManualClock::new();
        let gw =
            TestGateway::start_with_clock(&config, &dashboard.url(), Some(clock.clone())).await;
        Self {
            gw,
            clock,
            config,
            _dashboard: dashboard,
            _redis: redis,
        }
    }

    async fn send(&self, req: Request<Full<bytes::Bytes>>) -> Resp {
        self.gw
            .client()
            .send(self.gw.addr(), Version::HTTP_11, req)
            .await
    }

    /// GET from client address `ip` with a cookie and extra headers.
    async fn get_from(&self, ip: &str, path: &str, cookie: &str, extra: &[(&str, &str)]) -> Resp {
        let mut headers = vec![("x-forwarded-for", ip)];
        headers.extend_from_slice(extra);
        self.send(get_with(path, cookie, &headers)).await
    }

    /// A JSON POST from client address `ip`.
    async fn post_json(&self, ip: &str, path: &str, body: serde_json::Value) -> Resp {
        let req = Request::post(path)
            .header("x-forwarded-for", ip)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("user-agent", "PBXMobile/3.1 (iOS)")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .expect("request");
        self.send(req).await
    }

    async fn json_login(&self, ip: &str, (user, pass): (&str, &str)) -> Resp {
        self.post_json(
            ip,
            "/api/login",
            serde_json::json!({"username": user, "password": pass}),
        )
        .await
    }

    async fn submit_code(&self, challenge: &str, code: &str) -> Resp {
        self.post_json(
            OFFICE,
            "/.gatehouse/api/2fa",
            serde_json::json!({"challenge": challenge, "code": code}),
        )
        .await
    }

    /// Enroll `user` in a browser (form login, enrollment page); returns the secret.
    async fn enroll(&self, (user, pass): (&str, &str)) -> TotpSecret {
        let r = self
            .send(login_post(user, pass, "", &[("x-forwarded-for", OFFICE)]))
            .await;
        assert_eq!(r.header("location"), Some("/.gatehouse/2fa/enroll"));
        let cookie = session_cookie(&r).expect("cookie");
        let page = self
            .get_from(OFFICE, "/.gatehouse/2fa/enroll", &cookie, &[])
            .await;
        let text = page.text();
        let secret = TotpSecret::from_base32(&attr(&text, "data-secret")).expect("secret");
        let csrf = attr(&text, "name=\"csrf\" value");
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("csrf", csrf.as_str()), ("code", &self.code(&secret))])
            .finish();
        let req = Request::post("/.gatehouse/2fa/enroll")
            .header("cookie", &cookie)
            .header("x-forwarded-for", OFFICE)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let done = self.send(req).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
        // The enrollment code's step is used; the next code is a new step.
        self.clock.advance(Duration::from_secs(30));
        secret
    }

    fn code(&self, secret: &TotpSecret) -> String {
        code_at(secret, self.clock.unix())
    }
}

fn json(r: &Resp) -> serde_json::Value {
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "not JSON: {:?} {}",
        r.header("content-type"),
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("bad JSON: {}", r.text()))
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $name() { super::$name(false).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::$name(true).await })*
        }
    };
}

on_both_stores!(
    service_account_signs_in_through_json_login_without_2fa_and_is_refused_elsewhere,
    session_made_on_the_sso_host_is_not_accepted_on_the_host_that_asks_for_2fa,
    json_client_completes_the_2fa_step_and_uses_the_api,
    wrong_codes_in_the_json_step_count_towards_lockout,
);

#[tokio::test]
async fn api_area_with_auth_none_admits_listed_addresses_without_session_and_refuses_others_with_json(
) {
    let s = Scenario::start(
        false,
        &format!(
            "[[access.area]]\nname = \"api\"\npaths = [\"/api/\"]\nauth = \"none\"\n\
             ip_restriction = true\nallow = [\"{OFFICE}\"]\n"
        ),
    )
    .await;
    let bearer = format!("Bearer {API_TOKEN}");
    // Listed: reaches the dashboard, which judges its own API key.
    let ok = s
        .get_from(OFFICE, "/api/status", "", &[("authorization", &bearer)])
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(json(&ok)["status"], "ok");
    // Without the key the dashboard itself says no: gatehouse let it through.
    let theirs = s.get_from(OFFICE, "/api/status", "", &[]).await;
    assert_eq!(theirs.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&theirs)["error"], "not logged in");
    // Unlisted: JSON 403, never an HTML page, even when HTML is accepted.
    for accept in ["application/json", "*/*", "text/html"] {
        let no = s
            .get_from(
                ELSEWHERE,
                "/api/status",
                "",
                &[("authorization", &bearer), ("accept", accept)],
            )
            .await;
        assert_eq!(no.status, StatusCode::FORBIDDEN);
        let body = json(&no);
        assert_eq!(body["error"], "access_denied");
        assert!(body["reference"].as_str().is_some_and(|r| !r.is_empty()));
    }
}

#[tokio::test]
async fn session_area_redirects_browsers_to_sign_in_and_answers_json_clients_with_401() {
    let s = Scenario::start(false, "").await;
    let browser = s
        .get_from(
            OFFICE,
            "/calls",
            "",
            &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
        )
        .await;
    assert_eq!(browser.status, StatusCode::FOUND);
    assert_eq!(browser.header("location"), Some("/login"));

    let api = s
        .get_from(OFFICE, "/api/status", "", &[("accept", "application/json")])
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert!(api.header("www-authenticate").is_some());
    assert_eq!(json(&api)["error"], "authentication_required");

    // An XHR from a page script is no page load either.
    let script = s
        .get_from(
            OFFICE,
            "/calls",
            "",
            &[("x-requested-with", "XMLHttpRequest")],
        )
        .await;
    assert_eq!(script.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&script)["error"], "authentication_required");
}

#[tokio::test]
async fn session_or_token_area_passes_tokens_only_from_its_addresses() {
    let s = Scenario::start(
        false,
        &format!(
            "[[access.area]]\nname = \"api\"\npaths = [\"/api/\"]\nauth = \"session_or_token\"\n\
             allow = [\"{OFFICE}\"]\n"
        ),
    )
    .await;
    let bearer = format!("Bearer {API_TOKEN}");
    let listed = s
        .get_from(OFFICE, "/api/status", "", &[("authorization", &bearer)])
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(json(&listed)["user"], "api-key");
    // The same token from elsewhere needs a session, and gets JSON 401.
    let other = s
        .get_from(
            ELSEWHERE,
            "/api/status",
            "",
            &[("authorization", &bearer), ("accept", "application/json")],
        )
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&other)["error"], "authentication_required");
    // No token from the listed address: a session is needed.
    let bare = s
        .get_from(OFFICE, "/api/status", "", &[("accept", "application/json")])
        .await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
}

async fn service_account_signs_in_through_json_login_without_2fa_and_is_refused_elsewhere(
    redis: bool,
) {
    let s = Scenario::start(
        redis,
        &format!(
            "[two_factor]\nmode = \"required\"\n{JSON_LOGIN}\
             [[policy.user]]\nname = \"crm@example.com\"\nallow = [\"{SERVICE_HOST}\"]\n"
        ),
    )
    .await;
    // From its address: straight in, no challenge, the dashboard's JSON answer.
    let r = s.json_login(SERVICE_HOST, CRM).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(json(&r)["ok"], true);
    let cookie = session_cookie(&r).expect("session cookie");
    assert!(
        !r.text().contains("two_factor_required"),
        "no 2FA for the service account"
    );
    assert!(
        r.headers
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap_or("").starts_with("PBXSESSID")),
        "the dashboard's session cookie stays in the vault"
    );
    let status = s.get_from(SERVICE_HOST, "/api/status", &cookie, &[]).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text());
    assert_eq!(json(&status)["user"], "crm@example.com");

    // The same session from any other address: refused on every request.
    let stolen = s.get_from(ELSEWHERE, "/api/status", &cookie, &[]).await;
    assert_eq!(stolen.status, StatusCode::FORBIDDEN);
    assert_eq!(json(&stolen)["error"], "address_not_allowed");
    // And a sign-in from elsewhere never reaches the dashboard.
    let elsewhere = s.json_login(ELSEWHERE, CRM).await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert_eq!(json(&elsewhere)["error"], "address_not_allowed");
    assert!(session_cookie(&elsewhere).is_none());
    // Still fine from home.
    let again = s.get_from(SERVICE_HOST, "/api/status", &cookie, &[]).await;
    assert_eq!(again.status, StatusCode::OK);

    // Admins see it as a service session and can filter by class (Redis
    // lets the CLI's operations open the store while the gateway runs).
    if redis {
        let settings = s.gw.dir.settings(&s.config, "http://127.0.0.1:1");
        let admin = gatehouse::admin::ops::Admin::open(std::sync::Arc::new(settings))
            .await
            .expect("admin");
        let service = admin.sessions(None, Some("service")).await.expect("list");
        assert_eq!(service.len(), 1);
        assert!(service[0].service_account);
        assert_eq!(service[0].user, "crm@example.com");
        assert!(admin
            .sessions(None, Some("web"))
            .await
            .expect("list")
            .is_empty());
    }
}

async fn session_made_on_the_sso_host_is_not_accepted_on_the_host_that_asks_for_2fa(redis: bool) {
    let s = Scenario::start(
        redis,
        "[two_factor]\nmode = \"required\"\n\
         [[access.area]]\nname = \"sso\"\nhosts = [\"sso.test\"]\npaths = [\"/\"]\ntwo_factor = \"off\"\n",
    )
    .await;
    let on = |host: &'static str| [("x-forwarded-for", OFFICE), ("host", host)];
    // Through the SSO host: straight to the dashboard.
    let r = s
        .send(login_post(ALICE.0, ALICE.1, "", &on("sso.test")))
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.header("location"), Some("/"));
    let sso_cookie = session_cookie(&r).expect("cookie");
    let home = s
        .send(get_with("/calls", &sso_cookie, &on("sso.test")))
        .await;
    assert_eq!(home.status, StatusCode::OK);

    // That session is no session on the public host.
    let public = s
        .send(get_with(
            "/calls",
            &sso_cookie,
            &[
                ("x-forwarded-for", OFFICE),
                ("host", "gw.test"),
                ("accept", "text/html"),
            ],
        ))
        .await;
    assert_eq!(public.status, StatusCode::FOUND);
    assert_eq!(public.header("location"), Some("/login"));
    let api = s
        .send(get_with(
            "/api/status",
            &sso_cookie,
            &[
                ("x-forwarded-for", OFFICE),
                ("host", "gw.test"),
                ("accept", "application/json"),
            ],
        ))
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    // Signing in on the public host asks for the second factor.
    let r = s
        .send(login_post(ALICE.0, ALICE.1, "", &on("gw.test")))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with("/.gatehouse/2fa")),
        "{:?}",
        r.header("location")
    );
}

async fn json_client_completes_the_2fa_step_and_uses_the_api(redis: bool) {
    let s = Scenario::start(
        redis,
        &format!("[two_factor]\nmode = \"required\"\n{JSON_LOGIN}"),
    )
    .await;
    let secret = s.enroll(ALICE).await;

    let r = s.json_login(OFFICE, ALICE).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = json(&r);
    assert_eq!(body["two_factor_required"], true);
    let challenge = body["challenge"].as_str().expect("challenge").to_string();
    assert!(challenge.len() >= 32, "a random id: {challenge}");
    assert!(
        session_cookie(&r).is_none(),
        "no session cookie before the code"
    );
    assert!(
        r.headers
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap_or("").starts_with("PBXSESSID")),
        "the dashboard's cookie stays in the vault"
    );
    assert!(
        !r.text().contains("\"user\""),
        "the dashboard's answer is held back"
    );

    // The challenge id is no session: the API still says sign in.
    let early = s
        .get_from(
            OFFICE,
            "/api/status",
            &format!("__Host-gatehouse={challenge}"),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(early.status, StatusCode::UNAUTHORIZED);

    let bad = s.submit_code("not-a-challenge", &s.code(&secret)).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&bad)["error"], "invalid_challenge");

    let wrong = s.submit_code(&challenge, "000000").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&wrong)["error"], "wrong_code");

    let done = s.submit_code(&challenge, &s.code(&secret)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(json(&done)["ok"], true);
    let cookie = session_cookie(&done).expect("session cookie");
    assert_ne!(cookie, format!("__Host-gatehouse={challenge}"));

    let status = s
        .get_from(
            OFFICE,
            "/api/status",
            &cookie,
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text());
    assert_eq!(json(&status)["user"], ALICE.0);

    // Single use: the challenge is spent.
    s.clock.advance(Duration::from_secs(30));
    let replay = s.submit_code(&challenge, &s.code(&secret)).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&replay)["error"], "invalid_challenge");

    // Challenges expire with the pending session (15 minutes).
    let r = s.json_login(OFFICE, ALICE).await;
    let late = json(&r)["challenge"]
        .as_str()
        .expect("challenge")
        .to_string();
    s.clock.advance(Duration::from_secs(16 * 60));
    let expired = s.submit_code(&late, &s.code(&secret)).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&expired)["error"], "invalid_challenge");
}

async fn wrong_codes_in_the_json_step_count_towards_lockout(redis: bool) {
    let s = Scenario::start(
        redis,
        &format!("[two_factor]\nmode = \"required\"\n[lockout]\nmax_failures = 2\n{JSON_LOGIN}"),
    )
    .await;
    let secret = s.enroll(ALICE).await;
    let r = s.json_login(OFFICE, ALICE).await;
    let challenge = json(&r)["challenge"]
        .as_str()
        .expect("challenge")
        .to_string();
    let first = s.submit_code(&challenge, "000000").await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED);
    let second = s.submit_code(&challenge, "000001").await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json(&second)["error"], "locked");
    // Locked: the right code no longer helps, and the password step refuses too.
    let late = s.submit_code(&challenge, &s.code(&secret)).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED);
    let again = s.json_login(OFFICE, ALICE).await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json(&again)["error"], "locked");
}

#[test]
fn check_config_prints_the_second_factor_rule_of_every_area() {
    let dir = support::gateway::TestDir::new();
    let config = Config::default().rest(
        "[two_factor]\nmode = \"required\"\n\
         [[access.area]]\nname = \"sso\"\nhosts = [\"sso.test\"]\npaths = [\"/\"]\ntwo_factor = \"off\"\n\
         [[access.area]]\nname = \"api\"\npaths = [\"/api/\"]\nauth = \"none\"\nip_restriction = true\nallow = [\"203.0.113.10\"]\n",
    );
    let file = dir.write_config(&config, "http://127.0.0.1:1", "127.0.0.1:0");
    let out = std::process::Command::new(support::process::BIN)
        .args(["check-config", file.to_str().expect("path")])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("area {name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
            .to_string()
    };
    assert!(line("sso").contains("2fa off (area override"), "{text}");
    assert!(line("api").contains("auth none"), "{text}");
    assert!(
        line("default").contains("2fa required (inherited"),
        "{text}"
    );
}

#[test]
fn area_and_service_account_mistakes_are_reported_with_their_key_paths() {
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
        [[access.area]]\nname = \"api\"\npaths = [\"/api/\"]\nauth = \"tokens\"\ntwo_factor = \"sometimes\"\n\
        [[access.area]]\nname = \"hooks\"\npaths = [\"/hooks/\"]\nauth = \"session_or_token\"\n\
        [[policy.user]]\nname = \"crm@example.com\"\nallow = []\n\
        [[login.api]]\npath = \"/api/login\"\nusername_field = \"username\"\n";
    let Err(gatehouse::config::validate::ConfigError::Invalid(issues)) =
        gatehouse::config::validate::load_str(text, None)
    else {
        panic!("must be refused");
    };
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    for want in [
        "access.area[0].auth",
        "access.area[0].two_factor",
        "access.area[1].allow",
        "policy.user[0].allow",
        "login.api[0].username_field",
    ] {
        assert!(keys.contains(&want), "{want} missing from {keys:?}");
    }
}
