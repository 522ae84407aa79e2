//! The audit log of a whole scenario: one JSON object per line, each event
//! once, and no secret anywhere (passwords, seeds, codes, session ids).

mod support;

use gatehouse::auth::totp::{code_at, TotpSecret};
use http::{StatusCode, Version};
use std::time::Duration;
use support::gateway::{attr, form_post, get_with, login_post, session_cookie, Config, TestDir};
use support::process::{free_port, gateway};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_log_of_a_full_scenario_has_each_event_as_json_and_no_secret() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let dir = TestDir::new();
    let port = free_port();
    let audit = dir.path().join("audit.jsonl");
    let config = Config::default()
        .store(&redis.url())
        .rest(&format!("[audit]\nfile = \"{}\"", audit.display()));
    let mut gw = gateway(&dir, &config, &up.url(), port);
    let path = dir.path().join("gatehouse.toml");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let client = dir.client();
    let send = |req| {
        let client = client.clone();
        async move { client.send(addr, Version::HTTP_11, req).await }
    };
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(support::process::BIN)
            .args(["admin", "--config", path.to_str().expect("path")])
            .args(args)
            .output()
            .expect("admin");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Sign-in with enrollment.
    let pending = session_cookie(&send(login_post("alice@example.com", PASSWORD, "", &[])).await)
        .expect("pending");
    let page = send(get_with("/.gatehouse/2fa/enroll", &pending, &[]))
        .await
        .text();
    let seed = attr(&page, "data-secret");
    let secret = TotpSecret::from_base32(&seed).expect("secret");
    let csrf = attr(&page, "name=\"csrf\" value");
    let enrolled = send(form_post(
        &pending,
        "/.gatehouse/2fa/enroll",
        &[("csrf", &csrf), ("code", &code_at(&secret, now()))],
        &[],
    ))
    .await;
    assert_eq!(enrolled.status, StatusCode::OK);
    let active = session_cookie(&enrolled).expect("active");
    let recovery: Vec<String> = enrolled
        .text()
        .split("<li><code>")
        .skip(1)
        .filter_map(|p| p.split('<').next())
        .map(str::to_string)
        .collect();

    // A failed code, then the lock.
    let again = session_cookie(&send(login_post("alice@example.com", PASSWORD, "", &[])).await)
        .expect("pending");
    let csrf2 = attr(
        &send(get_with("/.gatehouse/2fa", &again, &[])).await.text(),
        "name=\"csrf\" value",
    );
    for _ in 0..5 {
        send(form_post(
            &again,
            "/.gatehouse/2fa",
            &[("csrf", csrf2.as_str()), ("code", "000000")],
            &[],
        ))
        .await;
    }
    cli(&["unlock", "alice@example.com"]);
    cli(&["logout-all"]);
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10));

    let text = std::fs::read_to_string(&audit).expect("audit file");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let count = |name: &str| events.iter().filter(|e| e["event"] == name).count();
    assert_eq!(count("login_password_ok"), 2, "{text}");
    assert_eq!(count("two_factor_enrolled"), 1, "{text}");
    assert_eq!(count("two_factor_failed"), 5, "{text}");
    assert_eq!(count("user_locked"), 1, "{text}");
    assert_eq!(count("user_unlocked"), 1, "{text}");
    assert_eq!(count("logout_all"), 1, "{text}");
    assert!(events
        .iter()
        .all(|e| e["ts"].is_string() && e["event"].is_string()));
    let unlocked = events
        .iter()
        .find(|e| e["event"] == "user_unlocked")
        .expect("unlock");
    assert!(
        unlocked["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("cli:")),
        "{unlocked}"
    );

    // No secret in the audit file nor in the process log.
    let log = gw.log.join("\n");
    let cookie_values: Vec<String> = [&pending, &active, &again]
        .iter()
        .filter_map(|c| c.split('=').nth(1))
        .map(str::to_string)
        .collect();
    for haystack in [&text, &log] {
        for secret in [PASSWORD, "Alice-pass-1", seed.as_str()]
            .into_iter()
            .chain(recovery.iter().map(String::as_str))
            .chain(cookie_values.iter().map(String::as_str))
        {
            assert!(
                !haystack.contains(secret),
                "a secret leaked into the logs: {secret}"
            );
        }
    }
}
