//! The metrics listener: Prometheus text that parses, counters that move
//! with traffic, liveness and readiness.

mod support;

use http::Version;
use support::gateway::{login_post, Config, TestGateway};
use support::upstream::{Recorder, PASSWORD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn value(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text parses");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move_with_traffic_and_health_endpoints_answer() {
    let up = Recorder::start().await;
    let config = Config::default().rest("[two_factor]\nmode = \"off\"");
    let gw = TestGateway::start(&config, &up.url()).await;
    let addr = gw.handle.metrics_addr().expect("metrics listener");
    let (_, before) = scrape(addr, "/metrics").await;
    let ok_before = value(
        &before,
        "gatehouse_events_total",
        Some(("event", "login_ok")),
    );
    let req_before = value(&before, "gatehouse_requests_total", None);
    for _ in 0..3 {
        gw.client()
            .send(
                gw.addr(),
                Version::HTTP_11,
                login_post("alice@example.com", PASSWORD, "", &[]),
            )
            .await;
    }
    // Store-walking gauges refresh at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, after) = scrape(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        value(
            &after,
            "gatehouse_events_total",
            Some(("event", "login_ok"))
        ) >= ok_before + 3.0,
        "{after}"
    );
    assert!(value(&after, "gatehouse_requests_total", None) >= req_before + 3.0);
    assert!(after.contains("gatehouse_upstream_seconds"), "{after}");
    assert!(
        value(
            &after,
            "gatehouse_requests_total",
            Some(("area", "default"))
        ) >= 3.0,
        "requests are counted per area: {after}"
    );
    assert!(
        value(&after, "gatehouse_active_sessions", None) >= 1.0,
        "signed-in sessions are a gauge: {after}"
    );
    assert!(after.contains("gatehouse_open_incidents"), "{after}");
    assert!(
        after.contains("gatehouse_store_seconds_count{op=\"get_many\"}"),
        "store latency per operation: {after}"
    );
    let expiry = value(
        &after,
        "gatehouse_certificate_expiry_timestamp_seconds",
        None,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs_f64();
    assert!(expiry > now, "certificate expiry in the future: {after}");
    let reloads = value(
        &after,
        "gatehouse_config_reloads_total",
        Some(("result", "ok")),
    );
    gw.handle
        .reload(gw.dir.settings(&config, &up.url()))
        .expect("reload the same configuration");
    let (_, reloaded) = scrape(addr, "/metrics").await;
    assert!(
        value(
            &reloaded,
            "gatehouse_config_reloads_total",
            Some(("result", "ok"))
        ) >= reloads + 1.0,
        "{reloaded}"
    );
    assert_eq!(scrape(addr, "/healthz").await.0, 200);
    let (ready, body) = scrape(addr, "/readyz").await;
    assert_eq!(ready, 200, "{body}");
    drop(up);
    let (not_ready, body) = scrape(addr, "/readyz").await;
    assert_eq!(not_ready, 503, "upstream gone but ready: {body}");
}

/// Client connections open on each worker thread, counted at the scrape:
/// they come and go with the connections.
#[tokio::test(flavor = "multi_thread")]
async fn open_connections_are_gauged_per_worker_thread() {
    let up = Recorder::start().await;
    let config = Config::default().server("worker_threads = 2");
    let gw = TestGateway::start(&config, &up.url()).await;
    let addr = gw.handle.metrics_addr().expect("metrics listener");
    let client = gw.client();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(client.connect(gw.addr(), "localhost", &[b"http/1.1"]).await);
    }
    let per_worker = |text: &str| {
        [
            value(text, "gatehouse_open_connections", Some(("worker", "0"))),
            value(text, "gatehouse_open_connections", Some(("worker", "1"))),
        ]
    };
    // Retried: the other test's gateway, in this process, sets the same
    // process-wide gauges when it is scraped.
    let counted = support::gateway::eventually(10, || async {
        let (_, text) = scrape(addr, "/metrics").await;
        per_worker(&text) == [2.0, 1.0]
    })
    .await;
    assert!(counted, "two connections on worker 0, one on worker 1");

    drop(open);
    let closed = support::gateway::eventually(10, || async {
        let (_, text) = scrape(addr, "/metrics").await;
        per_worker(&text) == [0.0, 0.0]
    })
    .await;
    assert!(
        closed,
        "the gauges fall back to 0 when the connections close"
    );
}
