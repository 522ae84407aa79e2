//! `gatehouse admin …` works on the store a running gateway uses: what it
//! changes takes effect in the gateway at once, and what the gateway did
//! shows in its listings.

mod support;

use http::{StatusCode, Version};
use support::gateway::{
    attr, form_post, get_with, login_post, session_cookie, Config, TestDir, TestGateway,
};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

fn cli(config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    support::process::admin_json(config, args)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_cli_lists_revokes_logs_out_unlocks_and_requires_two_factor() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let config = Config::default()
        .store(&redis.url())
        .rest("[two_factor]\nmode = \"off\"\n[login]\nsession_cookies = [\"APPSESSION\"]\n[[session.class]]\nname = \"mobile\"\nuser_agent = [\"PBXMobile/\"]");
    let gw = TestGateway::start(&config, &up.url()).await;
    let cli_dir = TestDir::new();
    let file = cli_dir.write_config(&config, &up.url(), "127.0.0.1:0");
    let send = |req| {
        let client = gw.client();
        let addr = gw.addr();
        async move { client.send(addr, Version::HTTP_11, req).await }
    };

    let alice = session_cookie(&send(login_post("alice@example.com", PASSWORD, "", &[])).await)
        .expect("alice");
    let bob =
        session_cookie(&send(login_post("bob@example.com", PASSWORD, "", &[])).await).expect("bob");
    // A third session from the mobile app: listed with its class, and the
    // class filters the list.
    send(login_post(
        "frank@example.com",
        PASSWORD,
        "",
        &[("user-agent", "PBXMobile/3.1 (Android 14)")],
    ))
    .await;
    let mobile = cli(&file, &["sessions", "list", "--class", "mobile"]);
    let mobile_users: Vec<&str> = mobile
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["user"].as_str())
        .collect();
    assert_eq!(mobile_users, ["frank@example.com"], "{mobile}");
    assert_eq!(mobile[0]["class"], "mobile", "{mobile}");
    let web = cli(&file, &["sessions", "list", "--class", "web"]);
    assert_eq!(web.as_array().map(Vec::len), Some(2), "{web}");
    let list = cli(&file, &["sessions", "list"]);
    let users: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["user"].as_str())
        .collect();
    assert!(
        users.contains(&"alice@example.com") && users.contains(&"bob@example.com"),
        "{list}"
    );

    let alice_ref = list
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["user"] == "alice@example.com")
        .and_then(|s| s["reference"].as_str())
        .expect("reference")
        .to_string();
    cli(&file, &["sessions", "revoke", &alice_ref]);
    assert_eq!(
        send(get_with("/home", &alice, &[])).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(get_with("/home", &bob, &[])).await.status,
        StatusCode::OK
    );

    cli(&file, &["logout", "bob@example.com"]);
    assert_eq!(
        send(get_with("/home", &bob, &[])).await.status,
        StatusCode::UNAUTHORIZED
    );

    let carol = session_cookie(&send(login_post("carol@example.com", PASSWORD, "", &[])).await)
        .expect("carol");
    std::thread::sleep(std::time::Duration::from_millis(5));
    cli(&file, &["logout-all"]);
    assert_eq!(
        send(get_with("/home", &carol, &[])).await.status,
        StatusCode::UNAUTHORIZED
    );

    for _ in 0..5 {
        send(login_post("dave@example.com", "wrong", "", &[])).await;
    }
    assert_eq!(
        cli(&file, &["user", "show", "dave@example.com"])["locked"],
        true
    );
    cli(&file, &["unlock", "dave@example.com"]);
    assert_eq!(
        send(login_post("dave@example.com", PASSWORD, "", &[]))
            .await
            .status,
        StatusCode::FOUND
    );

    cli(&file, &["2fa", "require", "erin@example.com"]);
    let erin = cli(&file, &["user", "show", "erin@example.com"]);
    assert_eq!(erin["two_factor_mode"], "required");
    let next = send(login_post("erin@example.com", PASSWORD, "", &[])).await;
    assert_eq!(
        next.header("location"),
        Some("/.gatehouse/2fa/enroll"),
        "the admin requirement is not enforced"
    );
    let listed = cli(&file, &["user", "list"]);
    assert!(listed
        .as_array()
        .expect("array")
        .iter()
        .any(|u| u["user"] == "alice@example.com"));
}

/// Sign in with enrollment (2FA required) and return the active cookie.
async fn enrolled_session(
    gw: &TestGateway,
    clock: &gatehouse::clock::ManualClock,
    user: &str,
) -> String {
    use gatehouse::clock::Clock;
    let send = |req| {
        let client = gw.client();
        let addr = gw.addr();
        async move { client.send(addr, Version::HTTP_11, req).await }
    };
    let r = send(login_post(user, PASSWORD, "", &[])).await;
    let pending = session_cookie(&r).expect("pending session");
    let page = send(get_with("/.gatehouse/2fa/enroll", &pending, &[]))
        .await
        .text();
    let secret = gatehouse::auth::totp::TotpSecret::from_base32(&attr(&page, "data-secret"))
        .expect("secret");
    let csrf = attr(&page, "name=\"csrf\" value");
    let code = gatehouse::auth::totp::code_at(&secret, clock.unix());
    let done = send(form_post(
        &pending,
        "/.gatehouse/2fa/enroll",
        &[("csrf", &csrf), ("code", &code)],
        &[],
    ))
    .await;
    session_cookie(&done).expect("active session")
}

#[tokio::test(flavor = "multi_thread")]
async fn console_admits_only_admins_with_a_second_factor_and_its_actions_match_the_cli() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let clock = gatehouse::clock::ManualClock::new();
    let config = Config::default()
        .store(&redis.url())
        .rest("[two_factor]\nmode = \"optional\"\n[[policy.domain]]\ndomain = \"admins.example\"\ntwo_factor = \"required\"\n[admin]\nusers = [\"root@admins.example\", \"lazy@example.com\"]");
    let gw = TestGateway::start_with_clock(&config, &up.url(), Some(clock.clone())).await;
    let cli_dir = TestDir::new();
    let file = cli_dir.write_config(&config, &up.url(), "127.0.0.1:0");
    let send = |req| {
        let client = gw.client();
        let addr = gw.addr();
        async move { client.send(addr, Version::HTTP_11, req).await }
    };

    // A user with a full session who is not an admin: 403.
    let bob =
        session_cookie(&send(login_post("bob@example.com", PASSWORD, "", &[])).await).expect("bob");
    assert_eq!(
        send(get_with("/.gatehouse/admin", &bob, &[])).await.status,
        StatusCode::FORBIDDEN
    );

    // An admin whose sign-in passed no second factor is sent to get one.
    let lazy = session_cookie(&send(login_post("lazy@example.com", PASSWORD, "", &[])).await)
        .expect("lazy");
    let r = send(get_with("/.gatehouse/admin", &lazy, &[])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/.gatehouse/2fa/enroll"));

    // A real admin.
    let root = enrolled_session(&gw, &clock, "root@admins.example").await;
    let home = send(get_with("/.gatehouse/admin", &root, &[])).await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.text());
    let csrf = attr(&home.text(), "name=\"csrf\" value");

    // Revoke bob's session in the console: the CLI no longer lists it.
    let list = send(get_with(
        "/.gatehouse/admin/sessions?user=bob%40example.com",
        &root,
        &[],
    ))
    .await
    .text();
    let reference = list
        .split("<span class=\"mono\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("reference")
        .to_string();
    let no_token = send(form_post(
        &root,
        "/.gatehouse/admin/sessions/revoke",
        &[("reference", &reference)],
        &[],
    ))
    .await;
    assert_eq!(
        no_token.status,
        StatusCode::FORBIDDEN,
        "console action without CSRF token"
    );
    let done = send(form_post(
        &root,
        "/.gatehouse/admin/sessions/revoke",
        &[("csrf", &csrf), ("reference", &reference)],
        &[],
    ))
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let cli_list = cli(&file, &["sessions", "list", "--user", "bob@example.com"]);
    assert_eq!(cli_list.as_array().map(Vec::len), Some(0), "{cli_list}");
    assert_eq!(
        send(get_with("/home", &bob, &[])).await.status,
        StatusCode::UNAUTHORIZED
    );

    // And the reverse: the CLI requires 2FA for carol, the console shows it.
    cli(&file, &["2fa", "require", "carol@example.com"]);
    let users = send(get_with("/.gatehouse/admin/users", &root, &[]))
        .await
        .text();
    assert!(
        users.contains("carol@example.com") && users.contains("(required)"),
        "{users}"
    );

    // Log out all users (confirmation required): everyone signs in again.
    let unconfirmed = send(form_post(
        &root,
        "/.gatehouse/admin/logout-all",
        &[("csrf", &csrf)],
        &[],
    ))
    .await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST);
    clock.advance(std::time::Duration::from_millis(10));
    let all = send(form_post(
        &root,
        "/.gatehouse/admin/logout-all",
        &[("csrf", &csrf), ("confirm", "yes")],
        &[],
    ))
    .await;
    assert_eq!(all.status, StatusCode::SEE_OTHER);
    assert_eq!(
        send(get_with("/home", &lazy, &[])).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(get_with("/.gatehouse/admin", &root, &[])).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_cli_marks_networks_safe_lists_incidents_and_shows_history() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let db = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/test-country.mmdb");
    let config = Config::default()
        .store(&redis.url())
        .server("trusted_proxies = [\"127.0.0.1\"]")
        .rest(&format!(
            "[two_factor]\nmode = \"off\"\n[geoip]\ndatabase = \"{db}\""
        ));
    let gw = TestGateway::start(&config, &up.url()).await;
    let cli_dir = TestDir::new();
    let file = cli_dir.write_config(&config, &up.url(), "127.0.0.1:0");
    for ip in ["81.2.69.10", "89.160.20.5"] {
        gw.client()
            .send(
                gw.addr(),
                Version::HTTP_11,
                login_post(
                    "alice@example.com",
                    PASSWORD,
                    "",
                    &[("x-forwarded-for", ip)],
                ),
            )
            .await;
    }
    let list = cli(&file, &["incidents", "list"]);
    let id = list[0]["id"].as_str().expect("incident id").to_string();
    assert_eq!(list[0]["user"], "alice@example.com");
    let history = cli(&file, &["history", "alice@example.com"]);
    assert_eq!(history[0]["country"], "SE");
    let added = cli(
        &file,
        &[
            "trusted",
            "add",
            "example.com",
            "89.160.20.5",
            "--prefix",
            "24",
            "--description",
            "Stockholm office",
        ],
    );
    assert_eq!(added["network"], "89.160.20.0/24");
    let bad = std::process::Command::new(support::process::BIN)
        .args([
            "admin",
            "--config",
            file.to_str().expect("path"),
            "trusted",
            "add",
            "example.com",
            "89.160.20.5",
            "--prefix",
            "21",
            "--description",
            "x",
        ])
        .output()
        .expect("run");
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("/21"));
    assert_eq!(
        cli(&file, &["trusted", "list", "stockholm"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    cli(
        &file,
        &["incidents", "close", &id, "--note", "known traveller"],
    );
    assert_eq!(
        cli(&file, &["incidents", "list"]).as_array().map(Vec::len),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_incidents_marks_networks_safe_and_closes_incidents_like_the_cli() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let clock = gatehouse::clock::ManualClock::new();
    let db = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/test-country.mmdb");
    let config = Config::default().store(&redis.url()).server("trusted_proxies = [\"127.0.0.1\"]").rest(&format!(
        "[two_factor]\nmode = \"optional\"\n[session]\nprevent_concurrent = false\n[[policy.domain]]\ndomain = \"admins.example\"\ntwo_factor = \"required\"\n[admin]\nusers = [\"root@admins.example\"]\n[geoip]\ndatabase = \"{db}\""
    ));
    let gw = TestGateway::start_with_clock(&config, &up.url(), Some(clock.clone())).await;
    let cli_dir = TestDir::new();
    let file = cli_dir.write_config(&config, &up.url(), "127.0.0.1:0");
    let send = |req| {
        let client = gw.client();
        let addr = gw.addr();
        async move { client.send(addr, Version::HTTP_11, req).await }
    };
    for ip in ["81.2.69.10", "89.160.20.5"] {
        send(login_post(
            "alice@example.com",
            PASSWORD,
            "",
            &[("x-forwarded-for", ip)],
        ))
        .await;
    }
    // The admin enrolls from a listed address (through the trusted proxy as 127.0.0.1).
    let root = enrolled_session(&gw, &clock, "root@admins.example").await;
    let home = send(get_with("/.gatehouse/admin", &root, &[])).await.text();
    assert!(home.contains("New security incidents: 1"), "{home}");
    let csrf = attr(&home, "name=\"csrf\" value");
    let page = send(get_with("/.gatehouse/admin/incidents", &root, &[]))
        .await
        .text();
    assert!(
        page.contains("alice@example.com") && page.contains("GB") && page.contains("SE"),
        "{page}"
    );
    assert!(page.contains("Last sign-ins of alice@example.com"));

    let marked = send(form_post(
        &root,
        "/.gatehouse/admin/trusted/add",
        &[
            ("csrf", &csrf),
            ("domain", "example.com"),
            ("ip", "89.160.20.5"),
            ("prefix", "24"),
            ("description", "Stockholm office"),
        ],
        &[],
    ))
    .await;
    assert!(
        marked.text().contains("89.160.20.0/24 marked safe"),
        "{}",
        marked.text()
    );
    let refused = send(form_post(
        &root,
        "/.gatehouse/admin/trusted/add",
        &[
            ("csrf", &csrf),
            ("domain", "example.com"),
            ("ip", "89.160.20.5"),
            ("prefix", "21"),
            ("description", "too wide"),
        ],
        &[],
    ))
    .await;
    assert!(refused.text().contains("Not marked"), "{}", refused.text());
    let listed = cli(&file, &["trusted", "list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    let id = cli(&file, &["incidents", "list"])[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let closed = send(form_post(
        &root,
        "/.gatehouse/admin/incidents/close",
        &[("csrf", &csrf), ("id", &id), ("note", "travelling")],
        &[],
    ))
    .await;
    assert_eq!(closed.status, StatusCode::OK);
    assert_eq!(
        cli(&file, &["incidents", "list"]).as_array().map(Vec::len),
        Some(0)
    );
    let trusted = send(get_with(
        "/.gatehouse/admin/trusted?q=stockholm",
        &root,
        &[],
    ))
    .await
    .text();
    assert!(trusted.contains("89.160.20.0/24"));
}
