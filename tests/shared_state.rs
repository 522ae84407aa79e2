//! State shared between gateways and across failures: several gateways on
//! one Redis act as one; a Redis outage fails closed and heals by itself; the
//! embedded store keeps what it acknowledged across `kill -9`.

mod support;

use http::{StatusCode, Version};
use std::time::{Duration, Instant};
use support::gateway::{get_with, login_post, session_cookie, Config, TestDir, TestGateway};
use support::process::{free_port, Proc};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

fn shared_config(redis: &RedisServer) -> Config {
    Config::default()
        .store(&redis.url())
        .rest("[two_factor]\nmode = \"off\"\n[login]\nsession_cookies = [\"APPSESSION\"]")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_redis_share_sessions_revocations_and_lockouts() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let a = TestGateway::start(&shared_config(&redis), &up.url()).await;
    let b = TestGateway::start(&shared_config(&redis), &up.url()).await;
    let send = |gw: &TestGateway, req| {
        let client = gw.client();
        let addr = gw.addr();
        async move { client.send(addr, Version::HTTP_11, req).await }
    };

    let login = send(&a, login_post("alice@example.com", PASSWORD, "", &[])).await;
    let cookie = session_cookie(&login).expect("session from A");
    assert_eq!(
        send(&b, get_with("/home", &cookie, &[])).await.status,
        StatusCode::OK,
        "B does not know A's session"
    );

    a.handle
        .live()
        .sessions
        .end_user_sessions(
            "alice@example.com",
            "",
            gatehouse::session::EndReason::Revoked,
        )
        .await
        .expect("revoke on A");
    up.clear();
    assert_eq!(
        send(&b, get_with("/home", &cookie, &[])).await.status,
        StatusCode::UNAUTHORIZED,
        "B still accepts a session revoked on A"
    );
    assert!(up.seen().is_empty());

    for _ in 0..5 {
        send(&a, login_post("bob@example.com", "wrong", "", &[])).await;
    }
    up.clear();
    let locked = send(&b, login_post("bob@example.com", PASSWORD, "", &[])).await;
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
