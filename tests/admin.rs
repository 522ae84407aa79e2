//! `gatehouse admin …` works on the store a running gateway uses: what it
//! changes takes effect in the gateway at once, and what the gateway did
//! shows in its listings.

mod support;

use http::{StatusCode, Version};
use support::gateway::{get_with, login_post, session_cookie, Config, TestDir, TestGateway};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

fn cli(config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(support::process::BIN)
        .args([
            "admin",
            "--config",
            config.to_str().expect("path"),
            "--json",
        ])
        .args(args)
        .output()
        .expect("run gatehouse admin");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_cli_lists_revokes_logs_out_unlocks_and_requires_two_factor() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let config = Config::default()
        .store(&redis.url())
        .rest("[two_factor]\nmode = \"off\"\n[login]\nsession_cookies = [\"APPSESSION\"]");
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
