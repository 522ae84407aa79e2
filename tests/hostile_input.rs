//! Hostile input that ends up in a redirect or a log line
//! (SECURITY-TESTS 21; issue "Hostile requests", items 2 and 5).
//!
//! The open-redirect corpus in `tests/data/return_to_corpus.txt` holds one
//! return-to payload per line, written as an attacker would send it; each is
//! also tried once percent-decoded, so raw CR/LF, tabs and NULs are covered.
//! The oracle is the WHATWG URL parser (the `url` crate), which resolves a
//! `Location` the way browsers do.

mod support;

use http::{StatusCode, Version};
use support::gateway::{login_post, Config, TestGateway};
use support::upstream::{Recorder, PASSWORD};

const CORPUS: &str = include_str!("data/return_to_corpus.txt");
const SITE: &str = "https://dash.example.com/calls/live";

fn corpus() -> Vec<String> {
    let mut out = Vec::new();
    for line in CORPUS.split('\n') {
        out.push(line.to_string());
        let decoded = percent_encoding::percent_decode_str(line)
            .decode_utf8_lossy()
            .into_owned();
        if decoded != line {
            out.push(decoded);
        }
    }
    out
}

/// What a browser does with `location` on dash.example.com: it must stay
/// there, and the header must be one a proxy or browser cannot split.
fn assert_stays_local(payload: &str, location: &str) {
    assert!(
        location.bytes().all(|b| (0x21..0x7f).contains(&b)),
        "{payload:?} → Location {location:?} carries a control, space or non-ASCII byte"
    );
    assert!(
        location.starts_with('/') && !location.starts_with("//") && !location.contains('\\'),
        "{payload:?} → Location {location:?} is not a plain local path"
    );
    let base = url::Url::parse(SITE).expect("base");
    let landed = base.join(location).expect("a browser resolves it");
    assert_eq!(
        (landed.scheme(), landed.host_str(), landed.port()),
        ("https", Some("dash.example.com"), None),
        "{payload:?} → Location {location:?} leaves the site: {landed}"
    );
    // Decoded once more (an upstream or a browser that decodes again).
    let again = percent_encoding::percent_decode_str(location).decode_utf8_lossy();
    assert!(
        !again.starts_with("//")
            && !again.contains('\\')
            && !again
                .chars()
                .any(|c| c.is_control() || (c.is_whitespace() && c != ' ')),
        "{payload:?} → Location {location:?} decodes to {again:?}"
    );
}

#[test]
fn item_21_the_return_to_corpus_has_at_least_200_payloads() {
    let lines = CORPUS.split('\n').filter(|l| !l.is_empty()).count();
    assert!(lines >= 200, "only {lines} payloads");
}

#[test]
fn item_21_every_corpus_payload_becomes_a_local_path_or_root_in_the_validator() {
    let mut kept = 0;
    for payload in corpus() {
        let safe = gatehouse::auth::login::safe_return_to(&payload);
        assert_stays_local(&payload, &safe);
        kept += usize::from(safe != "/");
    }
    // Mostly refused outright; the few kept are same-site paths like `/.//x`.
    assert!(kept < 40, "{kept} payloads were kept as paths");
    // And a legitimate return-to survives intact.
    for good in ["/recordings/2026/call.wav?dl=1", "/calls", "/a%20b?q=x%26y"] {
        assert_eq!(gatehouse::auth::login::safe_return_to(good), good);
    }
}

#[test]
fn item_21_every_corpus_payload_as_a_dashboard_location_stays_on_the_site() {
    for payload in corpus() {
        for location in [
            payload.clone(),
            format!("https://dash.example.com{payload}"),
        ] {
            let made = gatehouse::auth::login::local_location(&location, "dash.example.com");
            assert_stays_local(&location, &made);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item_21_every_corpus_payload_through_a_real_sign_in_lands_on_the_site() {
    let up = Recorder::start().await;
    let config = Config::default().rest("[two_factor]\nmode = \"off\"");
    let gw = TestGateway::start(&config, &up.url()).await;
    let client = gw.client();
    let mut conn = client.open(gw.addr(), Version::HTTP_11).await;
    for payload in corpus() {
        let enc: String =
            percent_encoding::utf8_percent_encode(&payload, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let cookie = format!("__Host-gatehouse-return={enc}");
        let r = conn
            .send(login_post("alice@example.com", PASSWORD, &cookie, &[]))
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{payload:?}");
        let location = r.header("location").unwrap_or_default();
        assert_stays_local(&payload, location);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item_21_a_dashboard_logout_redirect_to_any_corpus_payload_lands_on_the_site() {
    let up = Recorder::start().await;
    let config = Config::default().rest("[two_factor]\nmode = \"off\"");
    let gw = TestGateway::start(&config, &up.url()).await;
    let client = gw.client();
    let mut conn = client.open(gw.addr(), Version::HTTP_11).await;
    let mut sent = 0;
    for payload in corpus() {
        let enc: String =
            percent_encoding::utf8_percent_encode(&payload, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let r = conn
            .send(login_post("alice@example.com", PASSWORD, "", &[]))
            .await;
        let cookie = support::gateway::session_cookie(&r).expect("signed in");
        let r = conn
            .send(support::gateway::get_with(
                &format!("/logout?next={enc}"),
                &cookie,
                &[],
            ))
            .await;
        assert_eq!(r.status, StatusCode::FOUND, "{payload:?}");
        if let Some(location) = r.header("location") {
            assert_stays_local(&payload, location);
            sent += 1;
        }
    }
    assert!(sent > 200, "the dashboard redirected only {sent} times");
}

/// Usernames, paths and headers an attacker controls end up in the access
/// log and the audit log; they must not be able to forge a line, break the
/// JSON, or reach a terminal as an escape sequence. Both log formats.
#[tokio::test(flavor = "multi_thread")]
async fn log_injection_usernames_paths_and_headers_are_escaped_in_access_and_audit_logs() {
    use support::gateway::TestDir;
    use support::process::{free_port, gateway};
    let forged = "mallory\"},{\"event\":\"login_ok\",\"user\":\"root\"}\\\u{2028}\u{202e}";
    for format in ["text", "json"] {
        let up = Recorder::start().await;
        let dir = TestDir::new();
        let port = free_port();
        let audit = dir.path().join("audit.jsonl");
        let config = Config::default().rest(&format!(
            "[two_factor]\nmode = \"off\"\n[logging]\nformat = \"{format}\"\naccess_log = true\n[audit]\nfile = \"{}\"",
            audit.display()
        ));
        let mut gw = gateway(&dir, &config, &up.url(), port);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let client = dir.client();
        let hostile_headers = [
            ("user-agent", "ua\"}{\"event\":\"x\"} \\x1b[31m"),
            ("x-forwarded-for", "1.2.3.4\"} {\"event\":\"x\""),
        ];
        for user in [
            forged,
            "eve\r\n{\"event\":\"login_ok\",\"user\":\"root\"}",
            "eve\u{1b}[2J\u{1b}[31mred",
            "eve\u{0}nul",
        ] {
            let r = client
                .send(
                    addr,
                    Version::HTTP_11,
                    login_post(user, "wrong", "", &hostile_headers),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "the dashboard's form error");
        }
        for target in ["/%1b%5b2J%0d%0aforged", "/x%22%7d%7b%22event%22:%22x%22"] {
            client
                .send(addr, Version::HTTP_11, support::gateway::get(target))
                .await;
        }
        // Let the lines reach the pipe, then stop the gateway.
        gw.wait_for("forged", std::time::Duration::from_secs(3));
        gw.signal("TERM");
        gw.wait_exit(std::time::Duration::from_secs(15));
        let output = gw.log.join("\n");
        for line in &gw.log {
            assert!(
                !line.contains(['\u{1b}', '\r', '\u{0}', '\u{7f}', '\u{2028}']),
                "{format} log line carries a raw control character: {line:?}"
            );
            assert!(
                !line.trim_start().starts_with("{\"event\":\"login_ok\""),
                "{format} log has a forged line: {line:?}"
            );
            if format == "json" && line.starts_with('{') {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("broken JSON log line {line:?}: {e}"));
            }
        }
        assert!(
            output.contains("mallory"),
            "the failed sign-in is logged: {output}"
        );
        let audit = std::fs::read_to_string(&audit).expect("audit file");
        let events: Vec<serde_json::Value> = audit
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect();
        assert!(
            events.iter().all(|e| e["event"] != "login_ok"),
            "{events:?}"
        );
        let failed: Vec<_> = events
            .iter()
            .filter(|e| e["event"] == "login_failed")
            .collect();
        assert_eq!(
            failed.len(),
            1,
            "only the printable username counts: {failed:?}"
        );
        assert_eq!(
            failed[0]["user"], forged,
            "the username round-trips exactly"
        );
    }
}
