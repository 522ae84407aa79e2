//! Tests of `Sessions` against a real embedded store.

use super::*;
use crate::store::StoreSettings;
use http::{header, HeaderMap, HeaderValue};
use std::time::Duration;

const NOW: u64 = 1_000_000;

fn record() -> SessionRecord {
    record::test_active(NOW, NOW)
}

fn live(lookup: Lookup) -> Session {
    match lookup {
        Lookup::Live(s) => *s,
        other => panic!("expected a live session, got {other:?}"),
    }
}

/// Sessions on an embedded store, opened as the gateway opens it (the
/// session cache in front); the directory lives as long as it is held.
async fn on_disk(prevent_concurrent: bool) -> (tempfile::TempDir, Sessions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = StoreSettings {
        url: format!("file:{}", dir.path().join("state.redb").display()),
        ..StoreSettings::default()
    };
    let store = crate::store::open(&settings).await.expect("store");
    let rules = SessionRules {
        absolute_timeout: Duration::from_secs(3600),
        idle_timeout: None,
        expire_on_browser_close: false,
        prevent_concurrent,
        classes: Vec::new(),
        prelogin_per_address: 3,
        prelogin_total: 4,
    };
    (dir, Sessions::new(store, rules))
}

#[tokio::test]
async fn an_active_record_is_decoded_once_per_version_and_nothing_is_kept_once_it_ends() {
    let (_dir, sessions) = on_disk(true).await;
    let (id, _) = sessions.start(record(), NOW, None).await.expect("start");

    // Unchanged: the same decoded record, shared.
    let first = live(sessions.lookup(&id, NOW).await.expect("lookup"));
    let again = live(sessions.lookup(&id, NOW).await.expect("lookup"));
    assert!(Arc::ptr_eq(&first.record, &again.record));

    // Changed (a dashboard cookie vaulted): the new version is decoded,
    // and the copy changed did not alter the one shared.
    let mut changed = again;
    let mut answer = HeaderMap::new();
    answer.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("APPSESSION=s3cret; Path=/; HttpOnly"),
    );
    changed.record_mut().vault.absorb(&mut answer, "/", NOW);
    assert!(first.record.vault.is_empty());
    assert!(sessions.save(&mut changed, NOW).await.expect("save"));
    let after = live(sessions.lookup(&id, NOW).await.expect("lookup"));
    assert!(!Arc::ptr_eq(&first.record, &after.record));
    assert_eq!(
        after.record.vault.names().collect::<Vec<_>>(),
        ["APPSESSION"]
    );

    // Ended: nothing of it is kept, not even its tombstone once read.
    sessions
        .end(&after.digest, Some("alice@example.com"), EndReason::Logout)
        .await
        .expect("end");
    assert!(sessions.decoded.lock().expect("memo").records.is_empty());
    assert!(matches!(
        sessions.lookup(&id, NOW).await.expect("lookup"),
        Lookup::Ended(EndReason::Logout)
    ));
    assert!(sessions.decoded.lock().expect("memo").records.is_empty());
}

#[tokio::test]
async fn a_session_that_timed_out_leaves_its_users_set_when_listed_or_at_the_next_sign_in() {
    let (_dir, sessions) = on_disk(false).await;
    let user = "alice@example.com";
    let (_, kept) = sessions.start(record(), NOW, None).await.expect("start");
    let (_, expired) = sessions.start(record(), NOW, None).await.expect("start");
    let (_, ended) = sessions.start(record(), NOW, None).await.expect("start");
    sessions
        .end(&ended.digest, Some(user), EndReason::Logout)
        .await
        .expect("end");
    // What the store's TTL does to a session nobody ended.
    sessions
        .store
        .delete(&Key::Session(expired.digest.clone()))
        .await
        .expect("delete");
    let set = Key::UserSessions(user.to_owned());
    assert_eq!(
        sessions.store.set_members(&set).await.expect("set").len(),
        2
    );

    // Listed by an admin page, or at the user's next sign-in.
    let listed = sessions.of_user(user).await.expect("of_user");
    let digests: Vec<&str> = listed.iter().map(|s| s.digest.as_str()).collect();
    assert_eq!(digests, [kept.digest.as_str()]);
    assert_eq!(
        sessions.store.set_members(&set).await.expect("set"),
        std::slice::from_ref(&kept.digest),
        "the expired session is still counted as the user's"
    );
    let (_, expires_too) = sessions.start(record(), NOW, None).await.expect("start");
    sessions
        .store
        .delete(&Key::Session(expires_too.digest.clone()))
        .await
        .expect("delete");
    let (_, next) = sessions.start(record(), NOW, None).await.expect("start");
    let mut members = sessions.store.set_members(&set).await.expect("set");
    members.sort();
    let mut want = vec![kept.digest.clone(), next.digest.clone()];
    want.sort();
    assert_eq!(members, want, "a sign-in drops what timed out");
}

/// The real store, counting compare-and-sets on the way through.
struct CountingCas {
    inner: Arc<dyn Store>,
    cas: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Store for CountingCas {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned>>, StoreError> {
        self.inner.get_many(keys).await
    }
    async fn put(&self, key: &Key, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.inner.put(key, value, ttl).await
    }
    async fn create(
        &self,
        key: &Key,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.inner.create(key, value, ttl).await
    }
    async fn compare_and_set(
        &self,
        key: &Key,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.cas.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.compare_and_set(key, expected, value, ttl).await
    }
    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn incr(&self, key: &Key, ttl: Option<Duration>) -> Result<i64, StoreError> {
        self.inner.incr(key, ttl).await
    }
    async fn set_add(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        self.inner.set_add(key, member).await
    }
    async fn set_remove(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        self.inner.set_remove(key, member).await
    }
    async fn set_members(&self, key: &Key) -> Result<Vec<String>, StoreError> {
        self.inner.set_members(key).await
    }
    async fn list_push_capped(
        &self,
        key: &Key,
        value: Bytes,
        cap: usize,
    ) -> Result<(), StoreError> {
        self.inner.list_push_capped(key, value, cap).await
    }
    async fn list_range(
        &self,
        key: &Key,
        start: usize,
        count: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.inner.list_range(key, start, count).await
    }
    async fn scan_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<Key>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn healthy(&self) -> bool {
        self.inner.healthy()
    }
}

#[tokio::test]
async fn a_pages_parallel_requests_refresh_the_idle_clock_with_one_write() {
    let (_dir, on_disk) = on_disk(true).await;
    let counting = Arc::new(CountingCas {
        inner: on_disk.store.clone(),
        cas: Default::default(),
    });
    let mut rules = on_disk.rules.clone();
    rules.idle_timeout = Some(Duration::from_secs(60));
    let sessions = Sessions::new(counting.clone(), rules);
    let (id, _) = sessions.start(record(), NOW, None).await.expect("start");
    let writes = || counting.cas.load(std::sync::atomic::Ordering::SeqCst);
    let before = writes();

    // 20 s quiet: past a quarter of the idle timeout, so due a refresh.
    let due = NOW + 20_000;
    let page = (0..8).map(|_| sessions.lookup(&id, due));
    for lookup in futures_util::future::join_all(page).await {
        live(lookup.expect("lookup"));
    }
    assert_eq!(writes() - before, 1, "one refresh for the whole page");
    let stored = live(sessions.lookup(&id, due).await.expect("lookup"));
    assert_eq!(stored.record.last_seen_ms, due);

    // The claim went with its request: the next refresh is written.
    let later = due + 20_000;
    live(sessions.lookup(&id, later).await.expect("lookup"));
    assert_eq!(writes() - before, 2);
}

#[tokio::test]
async fn a_record_nobody_used_for_a_minute_leaves_the_memo() {
    let (_dir, sessions) = on_disk(false).await;
    let memo = || {
        let mut d: Vec<String> = sessions
            .decoded
            .lock()
            .expect("memo")
            .records
            .keys()
            .cloned()
            .collect();
        d.sort();
        d
    };
    let (abandoned, a) = sessions.start(record(), NOW, None).await.expect("start");
    let (kept, k) = sessions.start(record(), NOW, None).await.expect("start");
    live(sessions.lookup(&abandoned, NOW).await.expect("lookup"));
    live(sessions.lookup(&kept, NOW).await.expect("lookup"));
    let mut both = vec![a.digest.clone(), k.digest.clone()];
    both.sort();
    assert_eq!(memo(), both);

    // One is used on; the other's browser is gone. A minute on, the next
    // record decoded sweeps the one idle since.
    let later = NOW + MEMO_IDLE_MS / 2;
    live(sessions.lookup(&kept, later).await.expect("lookup"));
    let sweep_at = NOW + MEMO_IDLE_MS;
    let (third, t) = sessions
        .start(record(), sweep_at, None)
        .await
        .expect("start");
    live(sessions.lookup(&third, sweep_at).await.expect("lookup"));
    let mut left = vec![k.digest.clone(), t.digest.clone()];
    left.sort();
    assert_eq!(
        memo(),
        left,
        "the abandoned record is gone, the used ones stay"
    );
}

#[test]
fn prelogin_sessions_count_per_address_and_per_ipv6_slash_64() {
    let ip = |s: &str| ClientIp::Known(s.parse().expect("ip"));
    assert_eq!(prelogin_bucket(ip("203.0.113.9")), "203.0.113.9");
    assert_eq!(
        prelogin_bucket(ip("2001:db8:1:2:aaaa::1")),
        prelogin_bucket(ip("2001:db8:1:2:ffff::9"))
    );
    assert_eq!(prelogin_bucket(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
    assert_ne!(
        prelogin_bucket(ip("2001:db8:1:2::1")),
        prelogin_bucket(ip("2001:db8:1:3::1"))
    );
    assert_eq!(prelogin_bucket(ip("::ffff:203.0.113.9")), "203.0.113.9");
    assert_eq!(prelogin_bucket(ClientIp::Unknown), "unknown");
}

#[tokio::test]
async fn prelogin_caps_refuse_an_address_past_its_own_and_everyone_past_the_total() {
    let (_dir, sessions) = on_disk(true).await;
    let a = ClientIp::Known("198.51.100.7".parse().expect("ip"));
    let b = ClientIp::Known("198.51.100.8".parse().expect("ip"));
    for _ in 0..3 {
        assert!(sessions.admit_prelogin(a).await.expect("store"));
    }
    assert!(!sessions.admit_prelogin(a).await.expect("store"));
    assert!(sessions.admit_prelogin(b).await.expect("store"));
    // Four started in all (a's refused fourth is not among them): the
    // total cap now refuses a third address.
    let c = ClientIp::Known("2001:db8::1".parse().expect("ip"));
    assert!(!sessions.admit_prelogin(c).await.expect("store"));
}
