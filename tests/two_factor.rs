//! Two-factor authentication through the gateway: enrollment, challenge,
//! replay, lockout, policy modes, reset and disable, secrets at rest. Each
//! scenario runs on the embedded store and on a real redis-server.

mod support;

use gatehouse::auth::totp::{code_at, TotpSecret};
use gatehouse::clock::{Clock, ManualClock};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use std::time::Duration;
use support::gateway::{attr, get_with, login_post, session_cookie, Config, Resp, TestGateway};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

enum Backend {
    Embedded,
    Redis(RedisServer),
}

impl Backend {
    fn redis() -> Self {
        Backend::Redis(RedisServer::start())
    }
}

struct Scenario {
    up: Recorder,
    gw: TestGateway,
    clock: ManualClock,
    backend: Backend,
}

impl Scenario {
    async fn start(backend: Backend, extra: &str) -> Self {
        Self::start_with(backend, Config::default(), extra).await
    }

    async fn start_with(backend: Backend, base: Config, extra: &str) -> Self {
        let up = Recorder::start().await;
        let clock = ManualClock::new();
        let mut config = base.rest(extra);
        if let Backend::Redis(r) = &backend {
            config = config.store(&r.url());
        }
        let gw = TestGateway::start_with_clock(&config, &up.url(), Some(clock.clone())).await;
        Self {
            up,
            gw,
            clock,
            backend,
        }
    }

    async fn send(&self, req: Request<Full<bytes::Bytes>>) -> Resp {
        self.gw
            .client()
            .send(self.gw.addr(), Version::HTTP_11, req)
            .await
    }

    async fn get(&self, path: &str, cookie: &str) -> Resp {
        self.send(get_with(path, cookie, &[])).await
    }

    async fn post(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Resp {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let req = Request::post(path)
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("request");
        self.send(req).await
    }

    fn code(&self, secret: &TotpSecret) -> String {
        code_at(secret, self.clock.unix())
    }

    /// Password step; returns (cookie, where the gateway sends the browser).
    async fn password(&self, user: &str) -> (String, String) {
        let r = self.send(login_post(user, PASSWORD, "", &[])).await;
        assert!(r.status.is_redirection(), "{} {}", r.status, r.text());
        let cookie = session_cookie(&r).expect("session cookie");
        (cookie, r.header("location").unwrap_or_default().to_string())
    }

    /// Enroll `user`; returns (active cookie, secret, recovery codes).
    async fn enroll(&self, user: &str) -> (String, TotpSecret, Vec<String>) {
        let (cookie, to) = self.password(user).await;
        assert_eq!(to, "/.gatehouse/2fa/enroll");
        let page = self.get(&to, &cookie).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let text = page.text();
        let secret = TotpSecret::from_base32(&attr(&text, "data-secret")).expect("secret");
        let csrf = attr(&text, "name=\"csrf\" value");
        let done = self
            .post(
                "/.gatehouse/2fa/enroll",
                &cookie,
                &[("csrf", &csrf), ("code", &self.code(&secret))],
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
        let codes = between_all(&done.text(), "<li><code>", "</code></li>");
        assert_eq!(codes.len(), 10);
        let active = session_cookie(&done).expect("new session id after enrollment");
        assert_ne!(
            active, cookie,
            "session id must change after the second factor"
        );
        (active, secret, codes)
    }

    /// Full sign-in of an enrolled user; returns the active cookie.
    async fn sign_in(&self, user: &str, secret: &TotpSecret) -> String {
        self.clock.advance(Duration::from_secs(30));
        let (cookie, to) = self.password(user).await;
        assert_eq!(to, "/.gatehouse/2fa");
        let csrf = attr(&self.get(&to, &cookie).await.text(), "name=\"csrf\" value");
        let r = self
            .post(
                &to,
                &cookie,
                &[("csrf", &csrf), ("code", &self.code(secret))],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        session_cookie(&r).expect("active session")
    }
}

fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open)
        .skip(1)
        .filter_map(|p| p.split(close).next())
        .map(str::to_string)
        .collect()
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
    enrollment_then_challenge_lead_to_the_dashboard,
    pending_second_factor_gets_only_the_two_factor_pages,
    a_code_is_accepted_once_and_old_codes_are_refused,
    twenty_parallel_submissions_of_one_code_let_exactly_one_in,
    five_wrong_codes_lock_the_user,
    recovery_code_works_once,
    outside_trusted_asks_only_outside_the_trusted_network,
    domain_override_makes_optional_mode_required,
    reset_ends_every_session_and_next_sign_in_enrolls_afresh,
    disable_is_refused_where_policy_requires_two_factor,
    forms_without_the_csrf_token_or_from_another_origin_are_refused,
    no_seed_or_recovery_code_is_stored_in_clear,
    a_script_signing_in_gets_json_and_its_next_page_load_goes_to_the_second_factor,
);

async fn enrollment_then_challenge_lead_to_the_dashboard(b: Backend) {
    let s = Scenario::start(b, "").await;
    let (cookie, secret, _) = s.enroll("alice@example.com").await;
    let home = s.get("/home", &cookie).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(s
        .up
        .last()
        .expect("seen")
        .headers
        .get("cookie")
        .is_some_and(|c| c.to_str().unwrap_or("").contains("APPSESSION")));
    let again = s.sign_in("alice@example.com", &secret).await;
    assert_eq!(s.get("/home", &again).await.status, StatusCode::OK);
}

async fn pending_second_factor_gets_only_the_two_factor_pages(b: Backend) {
    let s = Scenario::start(b, "").await;
    let (_, secret, _) = s.enroll("alice@example.com").await;
    s.clock.advance(Duration::from_secs(30));
    let (pending, _) = s.password("alice@example.com").await;
    s.up.clear();
    let r = s.get("/recordings/", &pending).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/.gatehouse/2fa"));
    assert!(
        s.up.seen().is_empty(),
        "a 2FA-pending session reached the dashboard"
    );
    // A pending session's dashboard cookies are not sent even to public pages.
    s.get("/login", &pending).await;
    let sent =
        s.up.last()
            .and_then(|x| {
                x.headers
                    .get("cookie")
                    .map(|c| c.to_str().unwrap_or("").to_string())
            })
            .unwrap_or_default();
    assert!(
        !sent.contains("APPSESSION"),
        "vault leaked for a pending session: {sent}"
    );
    let _ = secret;
}

async fn a_code_is_accepted_once_and_old_codes_are_refused(b: Backend) {
    let s = Scenario::start(b, "").await;
    let (_, secret, _) = s.enroll("alice@example.com").await;
    // The enrollment code's step is used: the same code again is a replay.
    let (cookie, to) = s.password("alice@example.com").await;
    let csrf = attr(&s.get(&to, &cookie).await.text(), "name=\"csrf\" value");
    let replay = s
        .post(&to, &cookie, &[("csrf", &csrf), ("code", &s.code(&secret))])
        .await;
    assert_eq!(
        replay.status,
        StatusCode::UNAUTHORIZED,
        "replayed code accepted"
    );
    // Two steps old is outside the window.
    let old = code_at(&secret, s.clock.unix() - 60);
    s.clock.advance(Duration::from_secs(30));
    let stale = s
        .post(&to, &cookie, &[("csrf", &csrf), ("code", &old)])
        .await;
    assert_eq!(
        stale.status,
        StatusCode::UNAUTHORIZED,
        "code two steps old accepted"
    );
    let ok = s
        .post(&to, &cookie, &[("csrf", &csrf), ("code", &s.code(&secret))])
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
}

async fn twenty_parallel_submissions_of_one_code_let_exactly_one_in(b: Backend) {
    let s = Scenario::start(b, "[session]\nprevent_concurrent = false").await;
    let (_, secret, _) = s.enroll("alice@example.com").await;
    s.clock.advance(Duration::from_secs(30));
    let code = s.code(&secret);
    let mut pending = Vec::new();
    for _ in 0..20 {
        let (cookie, to) = s.password("alice@example.com").await;
        let csrf = attr(&s.get(&to, &cookie).await.text(), "name=\"csrf\" value");
        pending.push((cookie, csrf));
    }
    let client = s.gw.client();
    let addr = s.gw.addr();
    let tasks: Vec<_> = pending
        .into_iter()
        .map(|(cookie, csrf)| {
            let client = client.clone();
            let code = code.clone();
            tokio::spawn(async move {
                let body: String = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([("csrf", csrf.as_str()), ("code", code.as_str())])
                    .finish();
                let req = Request::post("/.gatehouse/2fa")
                    .header("cookie", cookie)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(bytes::Bytes::from(body)))
                    .expect("req");
                client.send(addr, Version::HTTP_11, req).await.status
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("task") == StatusCode::SEE_OTHER {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 1,
        "exactly one of twenty parallel uses of one code may succeed"
    );
}

async fn five_wrong_codes_lock_the_user(b: Backend) {
    let s = Scenario::start(b, "").await;
    let (_, secret, _) = s.enroll("alice@example.com").await;
    s.clock.advance(Duration::from_secs(30));
    let (cookie, to) = s.password("alice@example.com").await;
    let csrf = attr(&s.get(&to, &cookie).await.text(), "name=\"csrf\" value");
    let mut last = None;
    for _ in 0..5 {
        last = Some(
            s.post(&to, &cookie, &[("csrf", &csrf), ("code", "000000")])
                .await,
        );
    }
    assert_eq!(last.expect("answer").status, StatusCode::TOO_MANY_REQUESTS);
    s.up.clear();
    let pw = s
        .send(login_post("alice@example.com", PASSWORD, "", &[]))
        .await;
    assert_eq!(
        pw.status,
        StatusCode::TOO_MANY_REQUESTS,
        "locked user reached the password step"
    );
    assert!(s.up.seen().is_empty());
    let _ = secret;
}

async fn recovery_code_works_once(b: Backend) {
    let s = Scenario::start(b, "[session]\nprevent_concurrent = false").await;
    let (_, _, codes) = s.enroll("alice@example.com").await;
    for (i, want) in [(0, StatusCode::SEE_OTHER), (1, StatusCode::UNAUTHORIZED)] {
        let (cookie, to) = s.password("alice@example.com").await;
        let csrf = attr(&s.get(&to, &cookie).await.text(), "name=\"csrf\" value");
        let r = s
            .post(&to, &cookie, &[("csrf", &csrf), ("code", &codes[0])])
            .await;
        assert_eq!(r.status, want, "use {i} of one recovery code");
    }
}

async fn outside_trusted_asks_only_outside_the_trusted_network(b: Backend) {
    let base = Config::default().server("trusted_proxies = [\"127.0.0.1\"]");
    let s = Scenario::start_with(
        b,
        base,
        "[two_factor]\nmode = \"outside_trusted\"\ntrusted_networks = [\"192.0.2.0/24\"]",
    )
    .await;
    let inside = s
        .send(login_post(
            "alice@example.com",
            PASSWORD,
            "",
            &[("x-forwarded-for", "192.0.2.10")],
        ))
        .await;
    assert_eq!(
        inside.header("location"),
        Some("/home"),
        "trusted network went to the challenge"
    );
    let outside = s
        .send(login_post(
            "alice@example.com",
            PASSWORD,
            "",
            &[("x-forwarded-for", "198.51.100.7")],
        ))
        .await;
    assert_eq!(outside.header("location"), Some("/.gatehouse/2fa/enroll"));
}

async fn domain_override_makes_optional_mode_required(b: Backend) {
    let s = Scenario::start(
        b,
        "[two_factor]\nmode = \"optional\"\n[[policy.domain]]\ndomain = \"example.com\"\ntwo_factor = \"required\"",
    )
    .await;
    let (_, alice) = s.password("alice@example.com").await;
    assert_eq!(alice, "/.gatehouse/2fa/enroll");
    let (_, carol) = s.password("carol@other.org").await;
    assert_eq!(carol, "/home", "optional mode must not force other domains");
}

async fn reset_ends_every_session_and_next_sign_in_enrolls_afresh(b: Backend) {
    let s = Scenario::start(b, "[session]\nprevent_concurrent = false").await;
    let (first, secret, _) = s.enroll("alice@example.com").await;
    let second = s.sign_in("alice@example.com", &secret).await;
    let account = s.get("/.gatehouse/account", &second).await;
    assert!(
        account.text().contains("Recent sign-ins"),
        "{}",
        account.text()
    );
    assert!(
        account.text().contains("127.0.0.1"),
        "the account page lists recent sign-ins"
    );
    let csrf = attr(&account.text(), "name=\"csrf\" value");
    s.clock.advance(Duration::from_secs(30));
    let r = s
        .post(
            "/.gatehouse/account/reset",
            &second,
            &[("csrf", &csrf), ("code", &s.code(&secret))],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        s.get("/home", &first).await.status,
        StatusCode::UNAUTHORIZED,
        "other session survived reset"
    );
    assert_eq!(
        s.get("/home", &second).await.status,
        StatusCode::UNAUTHORIZED
    );
    let (_, to) = s.password("alice@example.com").await;
    assert_eq!(to, "/.gatehouse/2fa/enroll");
}

async fn disable_is_refused_where_policy_requires_two_factor(b: Backend) {
    let s = Scenario::start(b, "").await;
    let (cookie, secret, _) = s.enroll("alice@example.com").await;
    let csrf = attr(
        &s.get("/.gatehouse/account", &cookie).await.text(),
        "name=\"csrf\" value",
    );
    s.clock.advance(Duration::from_secs(30));
    let r = s
        .post(
            "/.gatehouse/account/disable",
            &cookie,
            &[("csrf", &csrf), ("code", &s.code(&secret))],
        )
        .await;
    assert!(r.text().contains("requires two-factor"), "{}", r.text());
    s.clock.advance(Duration::from_secs(30));
    let (_, to) = s.password("alice@example.com").await;
    assert_eq!(
        to, "/.gatehouse/2fa",
        "the authenticator must still be enrolled"
    );

    // Where the policy allows it, a valid code turns it off.
    let opt = Scenario::start(Backend::Embedded, "[two_factor]\nmode = \"optional\"").await;
    let (_, to) = opt.password("bob@example.com").await;
    assert_eq!(to, "/home");
}

async fn forms_without_the_csrf_token_or_from_another_origin_are_refused(b: Backend) {
    let s = Scenario::start(b, "").await;
    let (cookie, _) = s.password("alice@example.com").await;
    let page = s.get("/.gatehouse/2fa/enroll", &cookie).await;
    let csrf = attr(&page.text(), "name=\"csrf\" value");
    let no_token = s
        .post("/.gatehouse/2fa/enroll", &cookie, &[("code", "123456")])
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let req = Request::post("/.gatehouse/2fa/enroll")
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(bytes::Bytes::from(format!(
            "csrf={csrf}&code=123456"
        ))))
        .expect("req");
    assert_eq!(s.send(req).await.status, StatusCode::FORBIDDEN);
    let get_action = s.get("/.gatehouse/account/reset", &cookie).await;
    assert_ne!(
        get_action.status,
        StatusCode::OK,
        "state changes are never GET"
    );
}

async fn no_seed_or_recovery_code_is_stored_in_clear(b: Backend) {
    let s = Scenario::start(b, "").await;
    let (_, secret, codes) = s.enroll("alice@example.com").await;
    let b32 = secret.to_base32();
    let raw_hex = hex::encode(secret.as_bytes());
    let dump: Vec<u8> = match &s.backend {
        Backend::Redis(r) => {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &r.port().to_string(), "--no-raw", "eval",
                       "local out = {} for _, k in ipairs(redis.call('keys', '*')) do local t = redis.call('type', k)['ok'] if t == 'string' then table.insert(out, redis.call('get', k)) elseif t == 'hash' then for _, v in ipairs(redis.call('hvals', k)) do table.insert(out, v) end elseif t == 'set' then for _, v in ipairs(redis.call('smembers', k)) do table.insert(out, v) end elseif t == 'list' then for _, v in ipairs(redis.call('lrange', k, 0, -1)) do table.insert(out, v) end end end return out", "0"])
                .output()
                .expect("redis-cli");
            assert!(out.status.success());
            out.stdout
        }
        Backend::Embedded => std::fs::read(s.gw.dir.path().join("state.redb")).expect("redb file"),
    };
    let text = String::from_utf8_lossy(&dump).to_lowercase();
    assert!(!dump.is_empty());
    assert!(
        !text.contains(&b32.to_lowercase()),
        "base32 seed stored in clear"
    );
    assert!(!text.contains(&raw_hex), "hex seed stored in clear");
    assert!(
        !dump.windows(20).any(|w| w == secret.as_bytes()),
        "raw seed bytes stored in clear"
    );
    for c in &codes {
        assert!(
            !text.contains(&c.to_lowercase()),
            "recovery code stored in clear"
        );
    }
}

/// Paint the enrollment page's own SVG (its `M x y h n v1 h-n z` runs on a
/// module grid) into a bitmap and decode it with a real QR decoder.
fn decode_svg_qr(svg: &str) -> String {
    let view = svg
        .split("viewBox=\"0 0 ")
        .nth(1)
        .and_then(|v| v.split(' ').next())
        .expect("viewBox");
    let size: usize = view.parse().expect("size");
    let d = svg
        .split(" d=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .expect("path");
    let mut dark = vec![false; size * size];
    for cmd in d.split('M').filter(|c| !c.is_empty()) {
        let (xy, rest) = cmd.split_once('h').expect("run");
        let mut it = xy.split_whitespace();
        let x: usize = it.next().and_then(|v| v.parse().ok()).expect("x");
        let y: usize = it.next().and_then(|v| v.parse().ok()).expect("y");
        let run: usize = rest
            .split('v')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("run");
        for i in x..x + run {
            dark[y * size + i] = true;
        }
    }
    const SCALE: usize = 4;
    let mut img =
        rqrr::PreparedImage::prepare_from_greyscale(size * SCALE, size * SCALE, |x, y| {
            if dark[(y / SCALE) * size + x / SCALE] {
                0
            } else {
                255
            }
        });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code on the page");
    grids[0].decode().expect("the QR code decodes").1
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_qr_decodes_to_exactly_the_otpauth_uri_with_the_shown_key() {
    let s = Scenario::start(Backend::Embedded, "[two_factor]\nissuer = \"Example PBX\"").await;
    let (cookie, to) = s.password("alice@example.com").await;
    let page = s.get(&to, &cookie).await.text();
    let svg_start = page.find("<svg").expect("inline svg");
    let svg = &page[svg_start
        ..page[svg_start..]
            .find("</svg>")
            .map(|e| svg_start + e + 6)
            .expect("svg end")];
    assert!(svg.contains("id=\"totp-qr\""));
    let shown = attr(&page, "data-secret");
    let secret = TotpSecret::from_base32(&shown).expect("secret");
    let uri = decode_svg_qr(svg);
    assert_eq!(
        uri,
        gatehouse::auth::totp::otpauth_uri(&secret, "Example PBX", "alice@example.com")
    );
    assert!(
        uri.starts_with("otpauth://totp/Example%20PBX:alice%40example.com?secret="),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={shown}&")), "{uri}");
    assert!(uri.ends_with("&algorithm=SHA1&digits=6&period=30"), "{uri}");
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_with_confirm_password_rechecks_the_password_with_the_dashboard() {
    let s = Scenario::start(Backend::Embedded, "[two_factor]\nconfirm_password = true").await;
    let (cookie, to) = s.password("alice@example.com").await;
    let page = s.get(&to, &cookie).await.text();
    assert!(
        page.contains("name=\"password\""),
        "the enrollment form must ask for the password"
    );
    let secret = TotpSecret::from_base32(&attr(&page, "data-secret")).expect("secret");
    let csrf = attr(&page, "name=\"csrf\" value");
    s.up.clear();
    let wrong = s
        .post(
            &to,
            &cookie,
            &[
                ("csrf", &csrf),
                ("code", &s.code(&secret)),
                ("password", "nope"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text().contains("password is not right"));
    let replayed =
        s.up.last()
            .expect("the password was checked with the dashboard");
    assert_eq!(replayed.target, "/login");
    let right = s
        .post(
            &to,
            &cookie,
            &[
                ("csrf", &csrf),
                ("code", &s.code(&secret)),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.text());
    assert!(right.text().contains("recovery-codes"));
}

async fn a_script_signing_in_gets_json_and_its_next_page_load_goes_to_the_second_factor(
    b: Backend,
) {
    let s = Scenario::start(b, "").await;
    // A single-page app's fetch() of the login form: it would follow a
    // redirect to gatehouse's page inside the fetch and fail on the HTML.
    let resp = s
        .send(login_post(
            "alice@example.com",
            PASSWORD,
            "",
            &[
                ("sec-fetch-mode", "cors"),
                ("sec-fetch-dest", "empty"),
                ("accept", "*/*"),
            ],
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(body["two_factor_required"], true);
    assert_eq!(body["location"], "/.gatehouse/2fa/enroll");
    let names = support::gateway::set_cookie_names(&resp);
    assert!(!names.contains(&"APPSESSION".to_string()), "{names:?}");
    let cookie = session_cookie(&resp).expect("session");
    // The app then loads a page: that goes to the second factor.
    let page = s
        .send(get_with(
            "/",
            &cookie,
            &[("sec-fetch-mode", "navigate"), ("accept", "text/html")],
        ))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/.gatehouse/2fa"));
    // A form post (a navigation) still gets the redirect.
    let form = s
        .send(login_post(
            "bob@example.com",
            PASSWORD,
            "",
            &[("sec-fetch-mode", "navigate"), ("accept", "text/html")],
        ))
        .await;
    assert_eq!(form.status, StatusCode::SEE_OTHER);
}
