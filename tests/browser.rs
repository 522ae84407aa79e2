//! End-to-end: a real headless Chromium (Debian's chromium + chromium-driver)
//! uses the demo dashboard through a gateway, as a person would.

mod support;

use gatehouse::demo::{Dashboard, DashboardOptions};
use support::browser::{self, within_timeout, Browser, WAIT};
use support::gateway::{Config, TestGateway};

/// These tests are about the browser path, not the second factor.
fn no_2fa() -> Config {
    Config::default().rest("[two_factor]\nmode = \"off\"")
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

#[tokio::test(flavor = "multi_thread")]
async fn chromium_signs_in_to_the_demo_dashboard_through_the_gateway() {
    within_timeout(async {
        let dash = demo_dashboard().await;
        let gw = TestGateway::start(&no_2fa(), &dash.url()).await;
        let base = format!("https://127.0.0.1:{}", gw.addr().port());

        let browser = Browser::launch().await;
        browser.goto(&format!("{base}/login")).await;
        browser.wait_for("#login-submit", WAIT).await;
        browser.fill("#username", "alice@example.com").await;
        browser.fill("#password", "Alice-pass-1").await;
        browser.click("#login-submit").await;
        browser.wait_for("#welcome", WAIT).await;

        let welcome = browser.text("#welcome").await;
        assert!(
            welcome.contains("Welcome, alice@example.com"),
            "welcome text: {welcome:?}"
        );
        let url = browser.current_url().await;
        assert!(url.starts_with(&base), "left the gateway: {url}");
        assert!(!url.ends_with("/login"), "still on the login page: {url}");

        // The dashboard's HttpOnly session cookie stays in gatehouse's vault:
        // the browser holds gatehouse's cookie and the readable one only.
        let jar = browser.cookies().await;
        let names: Vec<&str> = jar.iter().map(|(name, _, _)| name.as_str()).collect();
        assert!(
            !names.contains(&"PBXSESSID"),
            "PBXSESSID reached the browser: {names:?}"
        );
        assert!(names.contains(&"__Host-gatehouse"), "{names:?}");
        assert!(
            names.contains(&"pbx_lang"),
            "readable cookies pass: {names:?}"
        );

        let shot = browser
            .screenshot(browser::shot_path("signed-in-dashboard"))
            .await;
        assert!(std::fs::metadata(&shot).expect("screenshot").len() > 1000);

        let pids = browser.pids();
        browser.close().await;
        assert_all_gone(&pids);
    })
    .await;
}

/// The processes neither run nor linger as zombies (they were reaped).
fn assert_all_gone(pids: &[i32]) {
    let left: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(left.is_empty(), "browser processes left: {left:?}");
}

async fn sign_in(browser: &Browser, base: &str, user: &str, pass: &str) {
    browser.goto(&format!("{base}/login")).await;
    browser.wait_for("#login-submit", WAIT).await;
    browser.fill("#username", user).await;
    browser.fill("#password", pass).await;
    browser.submit("form").await;
    browser.wait_for("#welcome", WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_browsers_are_independent_sessions() {
    within_timeout(async {
        let dash = demo_dashboard().await;
        let gw = TestGateway::start(&no_2fa(), &dash.url()).await;
        let base = format!("https://127.0.0.1:{}", gw.addr().port());
        let (alice, bob) = tokio::join!(Browser::launch(), Browser::launch());

        sign_in(&alice, &base, "alice@example.com", "Alice-pass-1").await;
        assert!(!alice.cookies().await.is_empty(), "alice's jar is empty");

        // Bob's browser shares nothing: no cookies, so the dashboard sends
        // it to its login page.
        assert_eq!(bob.cookies().await, vec![]);
        bob.goto(&format!("{base}/")).await;
        bob.wait_for("#login-submit", WAIT).await;
        assert!(bob.current_url().await.ends_with("/login"));
        assert!(!bob.exists("#welcome").await);

        sign_in(&bob, &base, "bob@example.com", "Bob-pass-22").await;
        assert!(bob.text("#welcome").await.contains("bob@example.com"));
        alice.goto(&format!("{base}/")).await;
        alice.wait_for("#welcome", WAIT).await;
        assert!(alice.text("#welcome").await.contains("alice@example.com"));
        assert!(alice.page_source().await.contains("Extensions online"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cookie_jar_shows_httponly_cookies_that_page_scripts_cannot_read() {
    within_timeout(async {
        let dash = demo_dashboard().await;
        let gw = TestGateway::start(&no_2fa(), &dash.url()).await;
        let base = format!("https://127.0.0.1:{}", gw.addr().port());
        let browser = Browser::launch().await;
        sign_in(&browser, &base, "alice@example.com", "Alice-pass-1").await;

        // Whatever the gateway lets through, each HttpOnly cookie in the jar
        // must be invisible to document.cookie, and the jar must report the
        // flag Chromium stored (the vault tests rely on this helper).
        let jar = browser.cookie_jar().await;
        assert!(!jar.is_empty(), "no cookies after sign-in");
        let visible = browser.document_cookie().await;
        for c in &jar {
            assert_eq!(c.domain, "127.0.0.1", "{c:?}");
            let seen = visible
                .split("; ")
                .any(|kv| kv.split('=').next() == Some(c.name.as_str()));
            assert_eq!(seen, !c.http_only, "{c:?} vs document.cookie {visible:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_browser_leaves_no_process_behind() {
    within_timeout(async {
        let browser = Browser::launch().await;
        browser.goto("about:blank").await;
        let pids = browser.pids();
        assert!(
            pids.len() >= 3,
            "chromedriver + chromium processes: {pids:?}"
        );
        drop(browser); // no close(): the test panicked or timed out
        assert_all_gone(&pids);
    })
    .await;
}

#[test]
#[should_panic(expected = "apt-get install -y chromium chromium-driver")]
fn a_missing_browser_fails_loudly_instead_of_skipping() {
    browser::binary(
        "GATEHOUSE_TEST_NO_SUCH_VARIABLE",
        "/nonexistent/chromium-for-gatehouse",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_enrolls_two_factor_then_passes_the_challenge_and_is_locked_after_five_wrong_codes(
) {
    within_timeout(async {
        let dash = demo_dashboard().await;
        let gw = TestGateway::start(
            &Config::default().rest("[two_factor]\nissuer = \"Example PBX\""),
            &dash.url(),
        )
        .await;
        let base = format!("https://127.0.0.1:{}", gw.addr().port());
        let browser = Browser::launch().await;

        // Password, then enrollment: the key shown on the page gives the code.
        browser.goto(&format!("{base}/login")).await;
        browser.wait_for("#login-submit", WAIT).await;
        browser.fill("#username", "alice@example.com").await;
        browser.fill("#password", "Alice-pass-1").await;
        browser.click("#login-submit").await;
        browser.wait_for("#totp-qr", WAIT).await;
        let key = browser
            .execute(
                "return document.getElementById('totp-secret').dataset.secret",
                vec![],
            )
            .await;
        let secret = gatehouse::auth::totp::TotpSecret::from_base32(key.as_str().expect("key"))
            .expect("secret");
        browser
            .screenshot(browser::shot_path("two-factor-enroll"))
            .await;
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_secs()
        };
        browser
            .fill("#code", &gatehouse::auth::totp::code_at(&secret, now()))
            .await;
        browser.click("#confirm").await;
        browser.wait_for("#recovery-codes", WAIT).await;
        let codes = browser.text("#recovery-codes").await;
        assert_eq!(
            codes.lines().filter(|l| !l.trim().is_empty()).count(),
            10,
            "{codes}"
        );
        browser.click("#continue").await;
        browser.wait_for("#welcome", WAIT).await;

        // Sign out, sign in again: the challenge, with the next step's code.
        browser.goto(&format!("{base}/logout")).await;
        browser.wait_for("#login-submit", WAIT).await;
        browser.fill("#username", "alice@example.com").await;
        browser.fill("#password", "Alice-pass-1").await;
        browser.click("#login-submit").await;
        browser.wait_for("#verify", WAIT).await;
        // The enrollment used this step's code: wait for the next step.
        let step = now() / 30;
        while now() / 30 == step {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        browser
            .fill("#code", &gatehouse::auth::totp::code_at(&secret, now()))
            .await;
        browser.click("#verify").await;
        browser.wait_for("#welcome", WAIT).await;

        // Five wrong codes lock the account.
        browser.goto(&format!("{base}/logout")).await;
        browser.wait_for("#login-submit", WAIT).await;
        browser.fill("#username", "alice@example.com").await;
        browser.fill("#password", "Alice-pass-1").await;
        browser.click("#login-submit").await;
        for attempt in 0..5 {
            browser.wait_for("#verify", WAIT).await;
            browser.fill("#code", "000000").await;
            // Mark this page so we can tell when the answer has replaced it.
            browser
                .execute("document.body.dataset.stale = '1'", vec![])
                .await;
            browser.click("#verify").await;
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let stale = browser
                    .execute(
                        "return document.body && document.body.dataset.stale === '1'",
                        vec![],
                    )
                    .await;
                if stale == serde_json::Value::Bool(false) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "attempt {attempt}: no answer"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if browser
                .page_source()
                .await
                .contains("Sign-in temporarily locked")
            {
                break;
            }
        }
        let page = browser.page_source().await;
        assert!(
            page.contains("Sign-in temporarily locked"),
            "not locked after five wrong codes"
        );
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_admin_logs_out_all_users_and_another_browser_must_sign_in_again() {
    within_timeout(async {
        let dash = demo_dashboard().await;
        let gw = TestGateway::start(
            &Config::default().rest(
                "[two_factor]\nmode = \"optional\"\n[admin]\nusers = [\"alice@example.com\"]",
            ),
            &dash.url(),
        )
        .await;
        let base = format!("https://127.0.0.1:{}", gw.addr().port());
        let (admin, other) = tokio::join!(Browser::launch(), Browser::launch());
        sign_in(&other, &base, "bob@example.com", "Bob-pass-22").await;
        sign_in(&admin, &base, "alice@example.com", "Alice-pass-1").await;

        // The console asks for a second factor first: enroll one.
        admin.goto(&format!("{base}/.gatehouse/admin")).await;
        admin.wait_for("#totp-qr", WAIT).await;
        let key = admin
            .execute(
                "return document.getElementById('totp-secret').dataset.secret",
                vec![],
            )
            .await;
        let secret = gatehouse::auth::totp::TotpSecret::from_base32(key.as_str().expect("key"))
            .expect("secret");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        admin
            .fill("#code", &gatehouse::auth::totp::code_at(&secret, now))
            .await;
        admin.click("#confirm").await;
        admin.wait_for("#recovery-codes", WAIT).await;

        admin.goto(&format!("{base}/.gatehouse/admin")).await;
        admin.wait_for("#logout-all", WAIT).await;
        admin.screenshot(browser::shot_path("admin-console")).await;
        admin.click("#confirm-logout-all").await;
        admin.click("#logout-all").await;
        admin.wait_for("#login-submit", WAIT).await;

        other.goto(&format!("{base}/")).await;
        other.wait_for("main h1", WAIT).await;
        let page = other.page_source().await;
        assert!(
            page.contains("You were signed out"),
            "the other browser was not signed out"
        );
        other.click("main a").await;
        other.wait_for("#login-submit", WAIT).await;
        admin.close().await;
        other.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_changes_the_password_and_sees_the_policy_page_for_a_weak_one() {
    within_timeout(async {
        let dash = demo_dashboard().await;
        let gw = TestGateway::start(
            &no_2fa().rest(
                "[password]\nsuccess = { status = [200], body_contains = \"password-changed\" }",
            ),
            &dash.url(),
        )
        .await;
        let base = format!("https://127.0.0.1:{}", gw.addr().port());
        let browser = Browser::launch().await;
        sign_in(&browser, &base, "alice@example.com", "Alice-pass-1").await;

        browser.goto(&format!("{base}/profile/password")).await;
        browser.wait_for("#password-submit", WAIT).await;
        browser.fill("#current_password", "Alice-pass-1").await;
        browser.fill("#new_password", "weak").await;
        browser.fill("#confirm_password", "weak").await;
        browser.click("#password-submit").await;
        browser.wait_for("#password-rules", WAIT).await;
        let rules = browser.text("#password-rules").await;
        assert!(
            rules.contains("at least 8") && rules.contains("upper-case") && rules.contains("digit"),
            "{rules}"
        );
        browser
            .screenshot(browser::shot_path("password-policy"))
            .await;

        browser.click("#back").await;
        browser.wait_for("#password-submit", WAIT).await;
        browser.fill("#current_password", "Alice-pass-1").await;
        browser.fill("#new_password", "Stronger-pass-7").await;
        browser.fill("#confirm_password", "Stronger-pass-7").await;
        browser.click("#password-submit").await;
        browser.wait_for("#password-changed", WAIT).await;
        browser.close().await;
    })
    .await;
}
