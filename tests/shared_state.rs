//! State shared between gateways and across failures: several gateways on
//! one Redis act as one; a Redis outage fails closed and heals by itself; the
//! embedded store keeps what it acknowledged across `kill -9`.

mod support;

use http::{StatusCode, Version};
use std::time::{Duration, Instant};
use support::gateway::{get_with, login_post, session_cookie, Config, TestDir};
use support::process::{free_port, gateway, Proc};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

fn shared_config(redis: &RedisServer) -> Config {
    Config::default()
        .store(&redis.url())
        .rest("[two_factor]\nmode = \"off\"\n[login]\nsession_cookies = [\"APPSESSION\"]")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateway_processes_on_one_redis_share_sessions_revocations_and_lockouts() {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let (dir_a, dir_b) = (TestDir::new(), TestDir::new());
    let (port_a, port_b) = (free_port(), free_port());
    let _a = gateway(&dir_a, &shared_config(&redis), &up.url(), port_a);
    let _b = gateway(&dir_b, &shared_config(&redis), &up.url(), port_b);
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

/// How many times the gateway behind `metrics` read sessions from the store.
async fn store_reads(metrics: u16) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", metrics))
        .await
        .expect("metrics listener");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("read");
    text.lines()
        .find(|l| l.starts_with("gatehouse_store_seconds_count{op=\"get_many\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_session_cache_a_session_ended_through_one_gateway_is_refused_by_another_on_the_very_next_request(
) {
    let redis = RedisServer::start();
    let up = Recorder::start().await;
    let (dir_a, dir_b) = (TestDir::new(), TestDir::new());
    let (port_a, port_b, metrics_b) = (free_port(), free_port(), free_port());
    // The session cache is on by default.
    let config = shared_config(&redis);
    let mut config_b = config.clone();
    config_b.metrics = Some(format!("127.0.0.1:{metrics_b}"));
    let _a = gateway(&dir_a, &config, &up.url(), port_a);
    let _b = gateway(&dir_b, &config_b, &up.url(), port_b);
    let config_file_a = dir_a.path().join("gatehouse.toml");
    let addr = |p: u16| -> std::net::SocketAddr { format!("127.0.0.1:{p}").parse().expect("addr") };
    let client = support::gateway::Client::trusting(&[&dir_a.cert, &dir_b.cert]);
    let on = |port: u16, req| {
        let client = client.clone();
        async move { client.send(addr(port), Version::HTTP_11, req).await }
    };

    for round in 0..8 {
        let user = format!("user{round}@example.com");
        let cookie = session_cookie(&on(port_a, login_post(&user, PASSWORD, "", &[])).await)
            .expect("session from A");
        // B serves the session from its cache: most requests need no store read (a lease
        // renewal delayed on a loaded machine may send one or two to the store).
        let reads_before = store_reads(metrics_b).await;
        for _ in 0..6 {
            assert_eq!(
                on(port_b, get_with("/home", &cookie, &[])).await.status,
                StatusCode::OK
            );
        }
        let reads = store_reads(metrics_b).await - reads_before;
        assert!(
            reads <= 3,
            "round {round}: B read the store {reads} times for 6 requests: no cache"
        );

        // Ended through A (its own logout, or the admin CLI through A's control socket).
        let how = match round % 4 {
            0 => {
                let r = on(port_a, get_with("/logout", &cookie, &[])).await;
                assert_eq!(r.status, StatusCode::OK);
                "logout"
            }
            1 => {
                let list = support::process::admin_json(&config_file_a, &["sessions", "list"]);
                let reference = list
                    .as_array()
                    .and_then(|l| l.iter().find(|s| s["user"] == user.as_str()))
                    .and_then(|s| s["reference"].as_str())
                    .expect("session reference")
                    .to_owned();
                support::process::admin_json(&config_file_a, &["sessions", "revoke", &reference]);
                "revoke"
            }
            2 => {
                support::process::admin_json(&config_file_a, &["logout", &user]);
                "per-user logout"
            }
            _ => {
                // Log-out-all ends sessions started before its millisecond.
                std::thread::sleep(Duration::from_millis(5));
                support::process::admin_json(&config_file_a, &["logout-all"]);
                "log out all"
            }
        };
        up.clear();
        let next = on(port_b, get_with("/home", &cookie, &[])).await;
        assert_ne!(
            next.status,
            StatusCode::OK,
            "round {round}: B served a session ended by {how} through A"
        );
        assert!(
            up.seen().is_empty(),
            "round {round}: {how}: the request reached the dashboard"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_fails_closed_logs_once_and_heals_without_restart() {
    let mut redis = RedisServer::start();
    let up = Recorder::start().await;
    let dir = TestDir::new();
    let port = free_port();
    let config = shared_config(&redis).rest("");
    let mut gw = gateway(&dir, &config, &up.url(), port);
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
    // The session cache goes off as soon as the gateway sees its subscription close; only
    // then is every request sure to need the (absent) store.
    assert!(
        gw.wait_for("session cache off", Duration::from_secs(5))
            .is_some(),
        "the gateway kept its session cache with Redis gone: {:?}",
        gw.log
    );
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
