//! Security incidents through the gateway: sign-ins from several countries
//! (the test GeoIP database via a trusted proxy's X-Forwarded-For), safe
//! networks, the webhook, and the capped history. Both stores.

mod support;

use http::{StatusCode, Version};
use std::time::{Duration, Instant};
use support::gateway::{login_post, Config, TestGateway};
use support::redis::RedisServer;
use support::upstream::{Recorder, PASSWORD};

const TEST_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/test-country.mmdb");
const GB: &str = "81.2.69.10";
const GB2: &str = "81.2.69.20";
const SE: &str = "89.160.20.5";
const SE2: &str = "89.160.20.77";

enum Backend {
    Embedded,
    Redis(RedisServer),
}

struct Scenario {
    _up: Recorder,
    gw: TestGateway,
    _backend: Backend,
}

impl Scenario {
    async fn start(backend: Backend, extra: &str) -> Self {
        let up = Recorder::start().await;
        let mut config = Config::default().server("trusted_proxies = [\"127.0.0.1\"]").rest(&format!(
            "[two_factor]\nmode = \"off\"\n[session]\nprevent_concurrent = false\n[geoip]\ndatabase = \"{TEST_DB}\"\n{extra}"
        ));
        if let Backend::Redis(r) = &backend {
            config = config.store(&r.url());
        }
        let gw = TestGateway::start(&config, &up.url()).await;
        Self {
            _up: up,
            gw,
            _backend: backend,
        }
    }

    async fn sign_in(&self, user: &str, ip: &str) -> StatusCode {
        let req = login_post(user, PASSWORD, "", &[("x-forwarded-for", ip)]);
        self.gw
            .client()
            .send(self.gw.addr(), Version::HTTP_11, req)
            .await
            .status
    }

    fn incidents(&self) -> std::sync::Arc<gatehouse::gate::Live> {
        self.gw.handle.live()
    }
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Embedded).await } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Redis(super::RedisServer::start())).await } )*
        }
    };
}

on_both_stores!(
    sign_ins_from_two_countries_open_one_incident_and_a_third_updates_it,
    a_network_marked_safe_raises_nothing_and_bad_marks_are_refused,
    history_is_capped_and_newest_first,
    parallel_sign_ins_from_a_second_country_open_exactly_one_incident,
    a_failure_burst_opens_its_own_incident_and_leaves_the_countries_one_intact,
);

async fn sign_ins_from_two_countries_open_one_incident_and_a_third_updates_it(b: Backend) {
    let s = Scenario::start(b, "").await;
    assert_eq!(s.sign_in("alice@example.com", GB).await, StatusCode::FOUND);
    assert!(s
        .incidents()
        .incidents
        .list(false)
        .await
        .expect("list")
        .is_empty());
    s.sign_in("alice@example.com", SE).await;
    let open = s.incidents().incidents.list(false).await.expect("list");
    assert_eq!(open.len(), 1, "{open:?}");
    let i = &open[0];
    assert_eq!(i.user, "alice@example.com");
    assert_eq!(i.finding.countries.get("GB"), Some(&1));
    assert_eq!(i.finding.countries.get("SE"), Some(&1));
    assert_eq!(i.finding.sign_ins, 2);
    assert_eq!(i.finding.ips.len(), 2);
    s.sign_in("alice@example.com", GB2).await;
    let open = s.incidents().incidents.list(false).await.expect("list");
    assert_eq!(
        open.len(),
        1,
        "a third sign-in must update, not open another"
    );
    assert_eq!(open[0].finding.countries.get("GB"), Some(&2));
    assert_eq!(open[0].finding.sign_ins, 3);
    assert!(open[0].updated_ms >= open[0].opened_ms);
    // Closing it with a note.
    s.incidents()
        .incidents
        .close(&open[0].id, "travelling, confirmed by phone", "root")
        .await
        .expect("close");
    assert!(s
        .incidents()
        .incidents
        .list(false)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        s.incidents()
            .incidents
            .list(true)
            .await
            .expect("list")
            .len(),
        1
    );
}

async fn a_network_marked_safe_raises_nothing_and_bad_marks_are_refused(b: Backend) {
    let s = Scenario::start(b, "").await;
    let inc = &s.incidents().incidents;
    let refused = inc
        .mark_safe("example.com", SE, Some(24), "  ", "root", 0)
        .await;
    assert!(
        refused.is_err(),
        "marking without a description must be refused"
    );
    let wide = inc
        .mark_safe("example.com", SE, Some(21), "Stockholm office", "root", 0)
        .await;
    assert!(wide.is_err(), "/21 must be refused");
    let entry = inc
        .mark_safe("example.com", SE, Some(24), "Stockholm office", "root", 0)
        .await
        .expect("mark");
    assert_eq!(entry.network.to_string(), "89.160.20.0/24");
    s.sign_in("bob@example.com", GB).await;
    s.sign_in("bob@example.com", SE2).await;
    assert!(
        inc.list(true).await.expect("list").is_empty(),
        "a safe network raised an incident"
    );
    let found = inc.search_safe("89.160.20.200").await.expect("search");
    assert_eq!(found.len(), 1);
    assert!(inc
        .remove_safe("example.com", "89.160.20.0/24", "root")
        .await
        .expect("remove"));
    assert!(inc.safe("example.com").await.expect("list").is_empty());
}

async fn parallel_sign_ins_from_a_second_country_open_exactly_one_incident(b: Backend) {
    let s = std::sync::Arc::new(Scenario::start(b, "").await);
    s.sign_in("dave@example.com", GB).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let ip = format!("89.160.20.{}", 10 + i);
                s.sign_in("dave@example.com", &ip).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::FOUND);
    }
    let all = s.incidents().incidents.list(true).await.expect("list");
    assert_eq!(all.len(), 1, "racing sign-ins opened {all:?}");
    assert_eq!(all[0].finding.ips.len(), 11, "every address is evidence");
    assert_eq!(all[0].finding.sign_ins, 11);
}

async fn a_failure_burst_opens_its_own_incident_and_leaves_the_countries_one_intact(b: Backend) {
    let s = Scenario::start(b, "[incidents]\nburst_failures = 2").await;
    s.sign_in("erin@example.com", GB).await;
    s.sign_in("erin@example.com", SE).await;
    for _ in 0..3 {
        let req = login_post("erin@example.com", "wrong", "", &[("x-forwarded-for", GB2)]);
        s.gw.client().send(s.gw.addr(), Version::HTTP_11, req).await;
    }
    let open = s.incidents().incidents.list(false).await.expect("list");
    assert_eq!(open.len(), 2, "{open:?}");
    let countries = open
        .iter()
        .find(|i| i.kind == "countries")
        .expect("countries");
    let burst = open
        .iter()
        .find(|i| i.kind == "failures")
        .expect("failures");
    assert_eq!(countries.finding.distinct_countries(), 2);
    assert_eq!(countries.finding.sign_ins, 2);
    assert!(
        !countries.finding.ips.contains(GB2),
        "failures are not sign-ins"
    );
    assert!(burst.finding.ips.contains(GB2));
    assert_eq!(burst.finding.sign_ins, 3);
    // Closing needs a note saying why; then the next finding opens a new one.
    let inc = &s.incidents().incidents;
    assert!(inc.close(&countries.id, "  ", "root").await.is_err());
    inc.close(&countries.id, "called her: travelling", "root")
        .await
        .expect("close");
    s.sign_in("erin@example.com", SE2).await;
    let open = inc.list(false).await.expect("list");
    let reopened = open.iter().find(|i| i.kind == "countries").expect("new");
    assert_ne!(reopened.id, countries.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn history_records_the_browsers_user_agent() {
    let s = Scenario::start(Backend::Embedded, "").await;
    let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
    let req = login_post(
        "fay@example.com",
        PASSWORD,
        "",
        &[("x-forwarded-for", GB), ("user-agent", ua)],
    );
    s.gw.client().send(s.gw.addr(), Version::HTTP_11, req).await;
    let req = login_post(
        "fay@example.com",
        "wrong",
        "",
        &[("x-forwarded-for", GB), ("user-agent", ua)],
    );
    s.gw.client().send(s.gw.addr(), Version::HTTP_11, req).await;
    let h = s
        .incidents()
        .incidents
        .history("fay@example.com", 10)
        .await
        .expect("history");
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|r| r.user_agent == ua), "{h:?}");
}

async fn history_is_capped_and_newest_first(b: Backend) {
    let s = Scenario::start(b, "[incidents]\nhistory = 5").await;
    for i in 0..8 {
        let ip = format!("81.2.69.{}", 100 + i);
        s.sign_in("carol@example.com", &ip).await;
    }
    let h = s
        .incidents()
        .incidents
        .history("carol@example.com", 50)
        .await
        .expect("history");
    assert_eq!(h.len(), 5);
    assert_eq!(h[0].ip, "81.2.69.107", "newest first");
    assert!(h.windows(2).all(|w| w[0].ts_ms >= w[1].ts_ms));
    assert!(h.iter().all(|r| r.country == "GB"));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_gets_one_post_per_new_incident_and_an_unreachable_one_does_not_slow_sign_ins() {
    let hook = Recorder::start().await;
    let s = Scenario::start(
        Backend::Embedded,
        &format!("[incidents]\nwebhook = \"{}/hook\"", hook.url()),
    )
    .await;
    s.sign_in("alice@example.com", GB).await;
    s.sign_in("alice@example.com", SE).await;
    s.sign_in("alice@example.com", GB2).await; // an update, not a new incident
    s.sign_in("bob@example.com", GB).await;
    s.sign_in("bob@example.com", SE).await;
    let got = support::gateway::eventually(10, || async { hook.seen().len() >= 2 }).await;
    assert!(got, "webhook not called");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = hook.seen();
    assert_eq!(posts.len(), 2, "one POST per new incident");
    let doc: serde_json::Value = serde_json::from_slice(&posts[0].body).expect("json");
    assert_eq!(doc["event"], "incident_opened");
    assert!(
        doc["countries"]["GB"].is_number() && doc["countries"]["SE"].is_number(),
        "{doc}"
    );

    // An unreachable webhook: sign-ins stay fast.
    let dead = support::process::free_port();
    let s = Scenario::start(
        Backend::Embedded,
        &format!("[incidents]\nwebhook = \"http://127.0.0.1:{dead}/hook\""),
    )
    .await;
    let started = Instant::now();
    for (i, ip) in [GB, SE, GB2, SE2].iter().enumerate() {
        s.sign_in(&format!("user{i}@example.com"), ip).await;
        s.sign_in(
            &format!("user{i}@example.com"),
            if i % 2 == 0 { SE } else { GB },
        )
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "sign-ins waited for the webhook: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_refused_by_an_area_is_in_the_users_history() {
    let s = Scenario::start(
        Backend::Embedded,
        "[[access.area]]\nname = \"default\"\ncountries = [\"GB\"]",
    )
    .await;
    assert_eq!(
        s.sign_in("alice@example.com", SE).await,
        StatusCode::FORBIDDEN
    );
    let h = s
        .incidents()
        .incidents
        .history("alice@example.com", 5)
        .await
        .expect("history");
    assert_eq!(h.len(), 1);
    assert_eq!(
        h[0].result,
        gatehouse::incidents::history::LoginResult::RefusedByArea
    );
    assert_eq!(h[0].country, "SE");
}
