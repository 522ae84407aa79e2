//! Password policy on the demo dashboard's change-password form: weak
//! passwords never reach it, history prevents reuse, minimum age and expiry.

mod support;

use gatehouse::clock::ManualClock;
use gatehouse::demo::{Dashboard, DashboardOptions};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use std::time::Duration;
use support::gateway::{get_with, login_post, session_cookie, Config, Resp, TestGateway};

struct Scenario {
    _dash: Dashboard,
    gw: TestGateway,
    clock: ManualClock,
}

impl Scenario {
    async fn start(extra: &str) -> Self {
        let dash = Dashboard::start(
            "127.0.0.1:0".parse().expect("addr"),
            DashboardOptions {
                big_recording_bytes: 1024,
            },
        )
        .await
        .expect("dashboard");
        let clock = ManualClock::new();
        let config = Config::default().rest(&format!(
            "[two_factor]\nmode = \"off\"\n[session]\nprevent_concurrent = false\n[password]\nsuccess = {{ status = [200], body_contains = \"password-changed\" }}\n{extra}"
        ));
        let gw = TestGateway::start_with_clock(&config, &dash.url(), Some(clock.clone())).await;
        Self {
            _dash: dash,
            gw,
            clock,
        }
    }

    async fn send(&self, req: Request<Full<bytes::Bytes>>) -> Resp {
        self.gw
            .client()
            .send(self.gw.addr(), Version::HTTP_11, req)
            .await
    }

    async fn sign_in(&self, pass: &str) -> Option<Resp> {
        let r = self
            .send(login_post("alice@example.com", pass, "", &[]))
            .await;
        (r.status == StatusCode::FOUND).then_some(r)
    }

    async fn change(&self, cookie: &str, current: &str, new: &str) -> Resp {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("current_password", current),
                ("new_password", new),
                ("confirm_password", new),
            ])
            .finish();
        let req = Request::post("/profile/password")
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("request");
        self.send(req).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_broken_rule_is_refused_before_the_dashboard_and_a_compliant_password_is_recorded() {
    let s = Scenario::start("").await;
    let cookie =
        session_cookie(&s.sign_in("Alice-pass-1").await.expect("signed in")).expect("cookie");
    for (weak, says) in [
        ("Sh0rt", "at least 8"),
        ("no-upper-case-1", "upper-case"),
        ("NO-LOWER-CASE-1", "lower-case"),
        ("No-digits-here", "digit"),
        ("Way-too-long-password-1234567", "at most 24"),
        ("Alice-pass-1", "differ from the current"),
    ] {
        let r = s.change(&cookie, "Alice-pass-1", weak).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}");
        assert!(r.text().contains(says), "{weak}: {}", r.text());
        assert!(r.text().contains("href=\"/profile/password\""));
    }
    // The dashboard never saw them: the old password still works there.
    assert!(s.sign_in("Alice-pass-1").await.is_some());
    let ok = s.change(&cookie, "Alice-pass-1", "Brand-new-pass-2").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.text().contains("password-changed"), "{}", ok.text());
    assert!(s.sign_in("Brand-new-pass-2").await.is_some());
    let history =
        s.gw.handle
            .store()
            .get(&gatehouse::store::Key::UserPassword(
                "alice@example.com".into(),
            ))
            .await
            .expect("store");
    let raw = String::from_utf8_lossy(&history.expect("history recorded").value).to_string();
    assert!(
        raw.contains("$argon2id$") && !raw.contains("Brand-new-pass-2"),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_of_the_last_five_is_refused_and_the_sixth_oldest_accepted() {
    let s = Scenario::start("prevent_reuse = 5\nmin_age = \"disabled\"").await;
    let cookie =
        session_cookie(&s.sign_in("Alice-pass-1").await.expect("signed in")).expect("cookie");
    let mut current = "Alice-pass-1".to_string();
    for i in 1..=6 {
        let next = format!("Rotation-pass-{i}");
        let r = s.change(&cookie, &current, &next).await;
        assert_eq!(r.status, StatusCode::OK, "change {i}: {}", r.text());
        current = next;
    }
    let reused = s.change(&cookie, &current, "Rotation-pass-2").await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reused.text().contains("last 5"));
    let sixth = s.change(&cookie, &current, "Rotation-pass-1").await;
    assert_eq!(sixth.status, StatusCode::OK, "{}", sixth.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_change_within_the_minimum_age_is_refused_unless_min_age_is_off() {
    let s = Scenario::start("").await;
    let cookie =
        session_cookie(&s.sign_in("Alice-pass-1").await.expect("signed in")).expect("cookie");
    assert_eq!(
        s.change(&cookie, "Alice-pass-1", "First-change-1")
            .await
            .status,
        StatusCode::OK
    );
    let soon = s.change(&cookie, "First-change-1", "Second-change-2").await;
    assert_eq!(soon.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(soon.text().contains("again after"), "{}", soon.text());

    let free = Scenario::start("min_age = \"0s\"").await;
    let cookie =
        session_cookie(&free.sign_in("Alice-pass-1").await.expect("signed in")).expect("cookie");
    assert_eq!(
        free.change(&cookie, "Alice-pass-1", "First-change-1")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        free.change(&cookie, "First-change-1", "Second-change-2")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_password_shows_the_notice_and_enforce_redirects_until_changed() {
    let s = Scenario::start(
        "expire_after = \"90days\"\nexpiry_action = \"enforce\"\nmin_age = \"disabled\"",
    )
    .await;
    assert!(
        s.sign_in("Alice-pass-1").await.is_some(),
        "first sign-in starts the clock"
    );
    s.clock.advance(Duration::from_secs(91 * 86_400));
    let login = s.sign_in("Alice-pass-1").await.expect("signed in");
    assert_eq!(
        login.header("location"),
        Some("/.gatehouse/password-expired")
    );
    let cookie = session_cookie(&login).expect("cookie");
    let notice = s
        .send(get_with("/.gatehouse/password-expired", &cookie, &[]))
        .await;
    assert!(notice.text().contains("Your password has expired"));
    let other = s.send(get_with("/recordings/", &cookie, &[])).await;
    assert_eq!(other.status, StatusCode::SEE_OTHER);
    assert_eq!(
        other.header("location"),
        Some("/.gatehouse/password-expired")
    );
    let form = s.send(get_with("/profile/password", &cookie, &[])).await;
    assert_eq!(
        form.status,
        StatusCode::OK,
        "the change form stays reachable"
    );
    assert_eq!(
        s.change(&cookie, "Alice-pass-1", "Fresh-pass-90")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        s.send(get_with("/recordings/", &cookie, &[])).await.status,
        StatusCode::OK,
        "pages work again after the change"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_override_tightens_the_policy_for_that_domain_only() {
    let s = Scenario::start("[[policy.domain]]\ndomain = \"example.com\"\npassword = { min_length = 14, require_symbol = true }").await;
    let cookie =
        session_cookie(&s.sign_in("Alice-pass-1").await.expect("signed in")).expect("cookie");
    let r = s.change(&cookie, "Alice-pass-1", "Short-pass-12").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("at least 14"), "{}", r.text());
    assert_eq!(
        s.change(&cookie, "Alice-pass-1", "Long-enough-pass-1")
            .await
            .status,
        StatusCode::OK
    );
}

#[test]
fn a_bad_domain_override_is_reported_with_its_key_path() {
    let text = "[server.tls]\ncert = \"c\"\nkey = \"k\"\n[[policy.domain]]\ndomain = \"example.com\"\npassword = { min_length = 3 }\n";
    let Err(gatehouse::config::validate::ConfigError::Invalid(issues)) =
        gatehouse::config::validate::load_str(text, None)
    else {
        panic!("must be refused");
    };
    assert!(
        issues
            .iter()
            .any(|i| i.key == "policy.domain[0].password.min_length"),
        "{issues:?}"
    );
}

/// The forgot-password form of a dashboard (here the recording upstream):
/// the rules apply before it sees the new password, the minimum age does not.
#[tokio::test(flavor = "multi_thread")]
async fn the_forgot_password_form_meets_the_rules_but_not_the_minimum_age() {
    let up = support::upstream::Recorder::start().await;
    let config = Config::default().rest(
        "[two_factor]\nmode = \"off\"\n[login]\nanonymous_paths = [\"/login\", \"/forgot/\"]\n[password]\nforgot_path = \"/forgot/reset\"\nmin_age = \"1day\"",
    );
    let gw = TestGateway::start(&config, &up.url()).await;
    let reset = |new: &str, confirm: &str| {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("token", "t0k3n"),
                ("new_password", new),
                ("confirm_password", confirm),
            ])
            .finish();
        Request::post("/forgot/reset?token=t0k3n")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("request")
    };
    let client = gw.client();
    let weak = client
        .send(gw.addr(), Version::HTTP_11, reset("short", "short"))
        .await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        weak.text().contains("at least 8 characters"),
        "{}",
        weak.text()
    );
    assert!(
        weak.text().contains("/forgot/reset?token=t0k3n"),
        "link back to the form"
    );
    let mismatch = client
        .send(
            gw.addr(),
            Version::HTTP_11,
            reset("Strong-pass-1", "Strong-pass-2"),
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !up.saw_prefix("/forgot"),
        "a refused new password reached the dashboard"
    );
    // Twice in a row: the minimum age of a day is not in the way of a reset.
    for pass in ["Strong-pass-1", "Stronger-pass-2"] {
        let ok = client
            .send(gw.addr(), Version::HTTP_11, reset(pass, pass))
            .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
        let seen = up.last().expect("forwarded");
        assert_eq!(seen.target, "/forgot/reset?token=t0k3n");
        assert!(String::from_utf8_lossy(&seen.body).contains("new_password="));
    }
}
