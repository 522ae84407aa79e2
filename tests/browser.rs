//! End-to-end: a real headless Chromium (Debian's chromium + chromium-driver)
//! uses the demo dashboard through a gateway, as a person would.

mod support;

use gatehouse::demo::{Dashboard, DashboardOptions};
use support::browser::{self, within_timeout, Browser, WAIT};
use support::gateway::{Config, TestGateway};

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
        let gw = TestGateway::start(&Config::default(), &dash.url()).await;
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

        // The jar helper sees what the browser holds (cookie names only: the
        // vault will change which ones the browser gets).
        let jar = browser.cookies().await;
        let names: Vec<&str> = jar.iter().map(|(name, _, _)| name.as_str()).collect();
        eprintln!("cookie jar after sign-in: {names:?}");

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
        let gw = TestGateway::start(&Config::default(), &dash.url()).await;
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
        let gw = TestGateway::start(&Config::default(), &dash.url()).await;
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
