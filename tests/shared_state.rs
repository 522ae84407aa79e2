//! State shared between gateways and across failures: several gateways on
//! one Redis act as one; a Redis outage fails closed and heals by itself; the
//! embedded store keeps what it acknowledged across `kill -9`.

mod support;

use http::{StatusCode, Version};
use std::time::{Duration, Instant};
use support::gateway::{get_with, login_post, session_cookie, Config, TestDir};
use support::process::{free_port, Proc};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

fn shared_config(redis: &RedisServer) -> Config {
    Config::default()
        .store(&redis.url())
        .rest("[two_factor]\nmode = \"off\"\n[login]\nsession_cookies = [\"APPSESSION\"]")
}

/// A gateway process on `port` with `config`.
fn gateway_process(dir: &TestDir, config: &Config, upstream: &str, port: u16) -> Proc {
    let path = dir.write_config(config, upstream, &format!("127.0.0.1:{port}"));
    let mut p = Proc::spawn(
        &["run", "--config", path.to_str().expect("path")],
        dir.path(),
    );
    assert!(
        p.wait_for("listening", Duration::from_secs(20)).is_some(),
        "{:?}",
        p.log
    );
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateway_processes_on_one_redis_share_sessions_revocations_and_lockouts() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let (dir_a, dir_b) = (TestDir::new(), TestDir::new());
    let (port_a, port_b) = (free_port(), free_port());
    let _a = gateway_process(&dir_a, &shared_config(&redis), &up.url(), port_a);
    let _b = gateway_process(&dir_b, &shared_config(&redis), &up.url(), port_b);
    let addr = |p: u16| -> std::net::SocketAddr { format!("127.0.0.1:{p}").parse().expect("addr") };
    // Both certificates are trusted by one client.
    let client = support::gateway::Client::trusting(&[&dir_a.cert, &dir_b.cert]);
    let on = |port: u16, req| {
        let client = client.clone();
        async move { client.send(addr(port), Version::HTTP_11, req).await }
    };

    let login = on(port_a, login_post("alice@example.com", PASSWORD, "", &[])).await;
    let cookie = session_cookie(&login).expect("session from A");
    assert_eq!(
        on(port_b, get_with("/home", &cookie, &[])).await.status,
        StatusCode::OK,
        "B does not know A's session"
    );

    // Signing out through A ends the session on B at once.
    assert_eq!(
        on(port_a, get_with("/logout", &cookie, &[])).await.status,
        StatusCode::OK
    );
    up.clear();
    assert_eq!(
        on(port_b, get_with("/home", &cookie, &[])).await.status,
        StatusCode::UNAUTHORIZED,
        "B still accepts a session ended on A"
    );
    assert!(up.seen().is_empty());

    for _ in 0..5 {
        on(port_a, login_post("bob@example.com", "wrong", "", &[])).await;
    }
    up.clear();
    let locked = on(port_b, login_post("bob@example.com", PASSWORD, "", &[])).await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "lockout counted on A does not hold on B"
    );
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_fails_closed_logs_once_and_heals_without_restart() {
    let mut redis = RedisServer::start();
    let up = Recorder::start().await;
    let dir = TestDir::new();
    let port = free_port();
    let config = shared_config(&redis).rest("");
    let path = dir.write_config(&config, &up.url(), &format!("127.0.0.1:{port}"));
    let mut gw = Proc::spawn(
        &["run", "--config", path.to_str().expect("path")],
        dir.path(),
    );
    assert!(
        gw.wait_for("listening", Duration::from_secs(20)).is_some(),
        "{:?}",
        gw.log
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let client = dir.client();

    let login = client
        .send(
            addr,
            Version::HTTP_11,
            login_post("alice@example.com", PASSWORD, "", &[]),
        )
        .await;
    let cookie = session_cookie(&login).expect("session");
    assert_eq!(
        client
            .send(addr, Version::HTTP_11, get_with("/home", &cookie, &[]))
            .await
            .status,
        StatusCode::OK
    );

    redis.stop();
    up.clear();
    for _ in 0..5 {
        let started = Instant::now();
        let r = client
            .send(addr, Version::HTTP_11, get_with("/home", &cookie, &[]))
            .await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.text().contains("Sign-in temporarily unavailable"));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "took {:?}",
            started.elapsed()
        );
        let l = client
            .send(
                addr,
                Version::HTTP_11,
                login_post("alice@example.com", PASSWORD, "", &[]),
            )
            .await;
        assert_eq!(
            l.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "sign-in must not work without the store"
        );
    }
    assert!(
        up.seen().is_empty(),
        "requests reached the dashboard while the store was down"
    );
    gw.wait_for("store unavailable", Duration::from_secs(5));
    let outage_lines = gw
        .log
        .iter()
        .filter(|l| l.contains("store unavailable"))
        .count();
    assert_eq!(
        outage_lines, 1,
        "the outage must be logged once, not per request: {:#?}",
        gw.log
    );

    redis.restart();
    let healed = support::gateway::eventually(15, || async {
        let l = client
            .send(
                addr,
                Version::HTTP_11,
                login_post("alice@example.com", PASSWORD, "", &[]),
            )
            .await;
        l.status == StatusCode::FOUND
    })
    .await;
    assert!(healed, "the gateway did not recover after redis came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_store_keeps_a_session_across_kill_9_of_the_gateway() {
    let up = Recorder::start().await;
    let dir = TestDir::new();
    let port = free_port();
    let config = Config::default().rest("[two_factor]\nmode = \"off\"");
    let path = dir.write_config(&config, &up.url(), &format!("127.0.0.1:{port}"));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let client = dir.client();

    let mut first = Proc::spawn(
        &["run", "--config", path.to_str().expect("path")],
        dir.path(),
    );
    assert!(
        first
            .wait_for("listening", Duration::from_secs(20))
            .is_some(),
        "{:?}",
        first.log
    );
    let login = client
        .send(
            addr,
            Version::HTTP_11,
            login_post("alice@example.com", PASSWORD, "", &[]),
        )
        .await;
    let cookie = session_cookie(&login).expect("session");
    first.child.kill().expect("kill -9");
    let _ = first.child.wait();

    let mut second = Proc::spawn(
        &["run", "--config", path.to_str().expect("path")],
        dir.path(),
    );
    assert!(
        second
            .wait_for("listening", Duration::from_secs(20))
            .is_some(),
        "{:?}",
        second.log
    );
    let home = client
        .send(addr, Version::HTTP_11, get_with("/home", &cookie, &[]))
        .await;
    assert_eq!(
        home.status,
        StatusCode::OK,
        "acknowledged session lost across kill -9"
    );
}
