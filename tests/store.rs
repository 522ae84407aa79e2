//! The state store: one conformance suite run against every backend (embedded redb in a temp
//! dir, a real single redis-server, a real 3-node Redis Cluster), plus what only one backend
//! can show (kill -9 durability, Redis outage and recovery) and sealed secrets.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

#[path = "support/redis.rs"]
mod redis_fixture;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::store::{self, Key, KeyPrefix, SealError, Sealer, Store, StoreError, StoreSettings};
use redis_fixture::{RedisCluster, RedisSentinel, RedisServer};
use serde::{Deserialize, Serialize};

/// A store plus whatever keeps its backend alive (temp dir, redis processes). The store is
/// declared first so it is dropped before its backend.
struct Backend {
    store: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any + Send>,
}

fn settings(url: String) -> StoreSettings {
    StoreSettings {
        url,
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(1),
        ..StoreSettings::default()
    }
}

async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file:{}", dir.path().join("state.redb").display());
    let store = store::open(&settings(url)).await.unwrap();
    Backend {
        store,
        _guard: Box::new(dir),
    }
}

async fn single_redis() -> Backend {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let store = store::open(&settings(server.url())).await.unwrap();
    Backend {
        store,
        _guard: Box::new(server),
    }
}

async fn redis_cluster() -> Backend {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let store = store::open(&settings(cluster.url())).await.unwrap();
    Backend {
        store,
        _guard: Box::new(cluster),
    }
}

async fn redis_sentinel() -> Backend {
    let sentinel = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap();
    let store = store::open(&settings(sentinel.url())).await.unwrap();
    Backend {
        store,
        _guard: Box::new(sentinel),
    }
}

/// The same test functions for every backend.
macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            conformance!(@case $backend, values_have_versions_and_delete_resets_them);
            conformance!(@case $backend, create_is_create_if_absent);
            conformance!(@case $backend, compare_and_set_checks_the_version);
            conformance!(@case $backend, one_of_fifty_concurrent_compare_and_sets_wins);
            conformance!(@case $backend, one_of_fifty_concurrent_creates_wins);
            conformance!(@case $backend, records_expire_after_their_ttl);
            conformance!(@case $backend, cached_session_records_outlive_their_ttl_by_at_most_the_cache_age);
            conformance!(@case $backend, counters_count_and_keep_their_first_ttl);
            conformance!(@case $backend, concurrent_increments_count_exactly);
            conformance!(@case $backend, sets_add_remove_and_list_members);
            conformance!(@case $backend, capped_lists_keep_the_newest_first);
            conformance!(@case $backend, scan_lists_one_kind_of_key);
            conformance!(@case $backend, get_many_answers_in_order);
            conformance!(@case $backend, json_helpers_roundtrip_and_report_corruption);
            conformance!(@case $backend, operations_on_the_wrong_kind_are_errors);
            conformance!(@case $backend, ping_answers);
        }
    };
    (@case $backend:ident, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let backend = super::$backend().await;
            super::cases::$case(&backend.store).await;
        }
    };
}

conformance!(embedded);
conformance!(single_redis);
conformance!(redis_cluster);
conformance!(redis_sentinel);

mod cases {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn alice() -> String {
        "alice@example.com".to_owned()
    }

    /// Polls until `key` is gone; panics after `limit`.
    async fn wait_until_gone(store: &Arc<dyn Store>, key: &Key, limit: Duration) -> Duration {
        let start = Instant::now();
        while store.get(key).await.unwrap().is_some() {
            assert!(
                start.elapsed() < limit,
                "{key:?} still there after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        start.elapsed()
    }

    pub async fn values_have_versions_and_delete_resets_them(store: &Arc<dyn Store>) {
        let key = Key::Session("s1".into());
        assert_eq!(store.get(&key).await.unwrap(), None);
        assert_eq!(store.put(&key, b("one"), None).await.unwrap(), 1);
        assert_eq!(store.put(&key, b("two"), None).await.unwrap(), 2);
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (b("two"), 2));
        assert!(store.delete(&key).await.unwrap());
        assert!(!store.delete(&key).await.unwrap());
        assert_eq!(store.get(&key).await.unwrap(), None);
        assert_eq!(store.put(&key, b("three"), None).await.unwrap(), 1);
        // Binary values survive unchanged.
        let binary = Bytes::from((0..=255u8).collect::<Vec<_>>());
        store
            .put(&Key::UserTotp(alice()), binary.clone(), None)
            .await
            .unwrap();
        assert_eq!(
            store
                .get(&Key::UserTotp(alice()))
                .await
                .unwrap()
                .unwrap()
                .value,
            binary
        );
    }

    pub async fn create_is_create_if_absent(store: &Arc<dyn Store>) {
        let key = Key::LockUser(alice());
        assert!(store.create(&key, b("first"), None).await.unwrap());
        assert!(!store.create(&key, b("second"), None).await.unwrap());
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (b("first"), 1));
        store.delete(&key).await.unwrap();
        assert!(store.create(&key, b("third"), None).await.unwrap());
    }

    pub async fn compare_and_set_checks_the_version(store: &Arc<dyn Store>) {
        let key = Key::UserProfile(alice());
        assert!(!store
            .compare_and_set(&key, Some(1), b("x"), None)
            .await
            .unwrap());
        assert!(store
            .compare_and_set(&key, None, b("v1"), None)
            .await
            .unwrap());
        assert!(!store
            .compare_and_set(&key, None, b("again"), None)
            .await
            .unwrap());
        assert!(store
            .compare_and_set(&key, Some(1), b("v2"), None)
            .await
            .unwrap());
        assert!(!store
            .compare_and_set(&key, Some(1), b("stale"), None)
            .await
            .unwrap());
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (b("v2"), 2));
        assert_eq!(store.put(&key, b("v3"), None).await.unwrap(), 3);
    }

    pub async fn one_of_fifty_concurrent_compare_and_sets_wins(store: &Arc<dyn Store>) {
        let key = Key::EpochUser(alice());
        store.put(&key, b("0"), None).await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    store
                        .compare_and_set(&key, Some(1), b(&format!("task {i}")), None)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1);
        assert_eq!(store.get(&key).await.unwrap().unwrap().version, 2);
    }

    pub async fn one_of_fifty_concurrent_creates_wins(store: &Arc<dyn Store>) {
        let key = Key::Incident("i-1".into());
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(
                    async move { store.create(&key, b(&i.to_string()), None).await.unwrap() },
                )
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1);
    }

    /// Of kinds the session cache does not keep (see the next case).
    pub async fn records_expire_after_their_ttl(store: &Arc<dyn Store>) {
        let short = Key::Incident("short".into());
        let made_permanent = Key::Incident("permanent".into());
        let ttl = Some(Duration::from_secs(1));
        store.put(&short, b("x"), ttl).await.unwrap();
        store.put(&made_permanent, b("x"), ttl).await.unwrap();
        // A later put without TTL removes the expiry.
        store.put(&made_permanent, b("y"), None).await.unwrap();
        assert!(store.get(&short).await.unwrap().is_some());
        let took = wait_until_gone(store, &short, Duration::from_secs(5)).await;
        assert!(
            took >= Duration::from_millis(500),
            "expired too early: {took:?}"
        );
        // Expired means absent for every operation.
        assert_eq!(
            store.get_many(std::slice::from_ref(&short)).await.unwrap(),
            vec![None]
        );
        assert!(!store
            .scan_prefix(&KeyPrefix::Incidents)
            .await
            .unwrap()
            .contains(&short));
        assert!(store.create(&short, b("new"), None).await.unwrap());
        assert!(store.get(&made_permanent).await.unwrap().is_some());
        // compare_and_set and create_if_absent with a TTL expire too.
        let locked = Key::LockUser(alice());
        assert!(store.create(&locked, b("1"), ttl).await.unwrap());
        wait_until_gone(store, &locked, Duration::from_secs(5)).await;
    }

    /// The session cache is not told of expiries: a cached session record
    /// may be served up to `ENTRY_MAX_AGE` past its TTL, and no longer. Its
    /// TTL only mirrors the session rules' lifetime, which `judge` enforces
    /// by the clock on every lookup, so such a copy is always judged ended.
    pub async fn cached_session_records_outlive_their_ttl_by_at_most_the_cache_age(
        store: &Arc<dyn Store>,
    ) {
        let session = Key::Session("short".into());
        store
            .put(&session, b("x"), Some(Duration::from_secs(1)))
            .await
            .unwrap();
        assert!(store.get(&session).await.unwrap().is_some());
        let limit = Duration::from_secs(1) + gatehouse::store::cache::ENTRY_MAX_AGE;
        let took = wait_until_gone(store, &session, limit + Duration::from_secs(2)).await;
        assert!(
            took >= Duration::from_millis(500),
            "expired too early: {took:?}"
        );
    }

    pub async fn counters_count_and_keep_their_first_ttl(store: &Arc<dyn Store>) {
        let key = Key::FailIp("2001:db8::1".into());
        assert_eq!(
            store
                .incr(&key, Some(Duration::from_secs(1)))
                .await
                .unwrap(),
            1
        );
        let start = Instant::now();
        // Later increments with a longer TTL must not extend the window.
        assert_eq!(
            store
                .incr(&key, Some(Duration::from_secs(60)))
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .incr(&key, Some(Duration::from_secs(60)))
                .await
                .unwrap(),
            3
        );
        assert_eq!(store.get(&key).await.unwrap().unwrap().value, b("3"));
        wait_until_gone(store, &key, Duration::from_secs(5)).await;
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(store.incr(&key, None).await.unwrap(), 1);
    }

    pub async fn concurrent_increments_count_exactly(store: &Arc<dyn Store>) {
        let key = Key::FailUser(alice());
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    for _ in 0..10 {
                        store
                            .incr(&key, Some(Duration::from_secs(600)))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.incr(&key, None).await.unwrap(), 501);
    }

    pub async fn sets_add_remove_and_list_members(store: &Arc<dyn Store>) {
        let key = Key::UserSessions(alice());
        assert_eq!(store.set_members(&key).await.unwrap(), Vec::<String>::new());
        assert!(store.set_add(&key, "b").await.unwrap());
        assert!(store.set_add(&key, "a:{weird} ü").await.unwrap());
        assert!(store.set_add(&key, "c").await.unwrap());
        assert!(!store.set_add(&key, "b").await.unwrap());
        assert_eq!(
            store.set_members(&key).await.unwrap(),
            vec!["a:{weird} ü", "b", "c"]
        );
        assert!(store.set_remove(&key, "b").await.unwrap());
        assert!(!store.set_remove(&key, "b").await.unwrap());
        assert!(!store.set_remove(&Key::Users, "nobody").await.unwrap());
        assert_eq!(
            store.set_members(&key).await.unwrap(),
            vec!["a:{weird} ü", "c"]
        );
        store.set_remove(&key, "a:{weird} ü").await.unwrap();
        store.set_remove(&key, "c").await.unwrap();
        assert_eq!(store.set_members(&key).await.unwrap(), Vec::<String>::new());
        assert!(store.set_add(&Key::Users, &alice()).await.unwrap());
        assert_eq!(store.set_members(&Key::Users).await.unwrap(), vec![alice()]);
    }

    pub async fn capped_lists_keep_the_newest_first(store: &Arc<dyn Store>) {
        let key = Key::Logins(alice());
        assert!(store.list_range(&key, 0, 10).await.unwrap().is_empty());
        for i in 1..=5 {
            store
                .list_push_capped(&key, b(&i.to_string()), 3)
                .await
                .unwrap();
        }
        assert_eq!(
            store.list_range(&key, 0, 10).await.unwrap(),
            vec![b("5"), b("4"), b("3")]
        );
        assert_eq!(store.list_range(&key, 1, 1).await.unwrap(), vec![b("4")]);
        assert_eq!(store.list_range(&key, 2, 5).await.unwrap(), vec![b("3")]);
        assert!(store.list_range(&key, 3, 5).await.unwrap().is_empty());
        assert!(store.list_range(&key, 0, 0).await.unwrap().is_empty());
        store.list_push_capped(&key, b("6"), 5).await.unwrap();
        assert_eq!(store.list_range(&key, 0, 10).await.unwrap().len(), 4);
    }

    pub async fn scan_lists_one_kind_of_key(store: &Arc<dyn Store>) {
        let sessions: Vec<Key> = (0..60)
            .map(|i| Key::Session(format!("s{i}:{{x}}")))
            .collect();
        for k in &sessions {
            store.put(k, b("s"), None).await.unwrap();
        }
        store
            .put(&Key::Incident("i1".into()), b("i"), None)
            .await
            .unwrap();
        store.set_add(&Key::Incidents, "i1").await.unwrap();
        store
            .put(&Key::UserTotp(alice()), b("t"), None)
            .await
            .unwrap();
        store
            .put(&Key::EpochUser(alice()), b("1"), None)
            .await
            .unwrap();
        store
            .put(&Key::UserTotp("alice@example.com2".into()), b("t"), None)
            .await
            .unwrap();

        let found: HashSet<Key> = store
            .scan_prefix(&KeyPrefix::Sessions)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(found, sessions.iter().cloned().collect());
        assert_eq!(
            store.scan_prefix(&KeyPrefix::Incidents).await.unwrap(),
            vec![Key::Incident("i1".into())]
        );
        let hers: HashSet<Key> = store
            .scan_prefix(&KeyPrefix::User(alice()))
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            hers,
            HashSet::from([Key::UserTotp(alice()), Key::EpochUser(alice())])
        );
        assert!(store
            .scan_prefix(&KeyPrefix::Trusted)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn get_many_answers_in_order(store: &Arc<dyn Store>) {
        let session = Key::Session("hot".into());
        store.put(&session, b("record"), None).await.unwrap();
        store.put(&Key::EpochGlobal, b("7"), None).await.unwrap();
        store.put(&Key::EpochGlobal, b("8"), None).await.unwrap();
        let keys = [session, Key::EpochGlobal, Key::EpochUser(alice())];
        let got = store.get_many(&keys).await.unwrap();
        assert_eq!(got.len(), 3);
        let first = got[0].as_ref().unwrap();
        assert_eq!((&first.value, first.version), (&b("record"), 1));
        let second = got[1].as_ref().unwrap();
        assert_eq!((&second.value, second.version), (&b("8"), 2));
        assert_eq!(got[2], None);
        assert!(store.get_many(&[]).await.unwrap().is_empty());
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Profile {
        two_factor: String,
        first_seen: u64,
    }

    pub async fn json_helpers_roundtrip_and_report_corruption(store: &Arc<dyn Store>) {
        let key = Key::UserProfile(alice());
        let p = Profile {
            two_factor: "required".into(),
            first_seen: 1,
        };
        assert!(store.create_json(&key, &p, None).await.unwrap());
        let got = store.get_json::<Profile>(&key).await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (p, 1));
        let p2 = Profile {
            two_factor: "off".into(),
            first_seen: 1,
        };
        assert!(store.cas_json(&key, Some(1), &p2, None).await.unwrap());
        assert!(!store.cas_json(&key, Some(1), &p2, None).await.unwrap());
        assert_eq!(store.put_json(&key, &p2, None).await.unwrap(), 3);
        store.put(&key, b("not json"), None).await.unwrap();
        let err = store.get_json::<Profile>(&key).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert!(!err.to_string().contains("alice"), "{err}");
        assert_eq!(
            store
                .get_json::<Profile>(&Key::UserProfile("nobody".into()))
                .await
                .unwrap(),
            None
        );
    }

    pub async fn operations_on_the_wrong_kind_are_errors(store: &Arc<dyn Store>) {
        let value = Key::UserPassword(alice());
        store.put(&value, b("not a number"), None).await.unwrap();
        assert!(matches!(
            store.set_add(&value, "m").await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.incr(&value, None).await,
            Err(StoreError::Corrupt(_))
        ));
        let set = Key::Users;
        store.set_add(&set, "a").await.unwrap();
        assert!(matches!(store.get(&set).await, Err(StoreError::Corrupt(_))));
        assert!(matches!(
            store.list_range(&set, 0, 1).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    pub async fn ping_answers(store: &Arc<dyn Store>) {
        store.ping().await.unwrap();
        assert!(store.healthy());
    }
}

// ---- embedded only ----

#[tokio::test]
async fn embedded_store_creates_its_directory_and_refuses_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing/deeper/state.redb");
    let url = format!("file:{}", path.display());
    let first = store::open(&settings(url.clone())).await.unwrap();
    first
        .put(&Key::EpochGlobal, b"1".to_vec().into(), None)
        .await
        .unwrap();
    let second = store::open(&settings(url.clone())).await;
    let err = second
        .err()
        .expect("second open of the same file must fail");
    assert!(matches!(err, StoreError::InUse(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("another gatehouse process has the store open"),
        "{err}"
    );
    drop(first);
    // Once the first is closed the file opens again with its data.
    let again = store::open(&settings(url)).await.unwrap();
    assert!(again.get(&Key::EpochGlobal).await.unwrap().is_some());
}

#[tokio::test]
async fn embedded_sweep_removes_expired_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::EmbeddedStore::open(dir.path().join("s.redb"))
        .await
        .unwrap();
    store
        .put(
            &Key::Session("a".into()),
            Bytes::from_static(b"x"),
            Some(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    store
        .put(&Key::Session("b".into()), Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.sweep_expired().await.unwrap(), 1);
    assert_eq!(store.sweep_expired().await.unwrap(), 0);
    assert!(store
        .get(&Key::Session("b".into()))
        .await
        .unwrap()
        .is_some());
}

/// A write that changes nothing (the loser of a compare-and-set race, a
/// create of a key that exists, removing what is not there) leaves the file
/// as it was: no commit, so no header write and no sync per loser.
#[tokio::test]
async fn embedded_writes_that_change_nothing_leave_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = store::EmbeddedStore::open(path.clone()).await.unwrap();
    let key = Key::Session("a".into());
    let set = Key::UserSessions("alice".into());
    assert!(store
        .create(&key, Bytes::from_static(b"1"), None)
        .await
        .unwrap());
    assert!(store.set_add(&set, "a").await.unwrap());
    let before = std::fs::read(&path).unwrap();

    assert!(!store
        .compare_and_set(&key, Some(7), Bytes::from_static(b"2"), None)
        .await
        .unwrap());
    assert!(!store
        .create(&key, Bytes::from_static(b"2"), None)
        .await
        .unwrap());
    assert!(!store.delete(&Key::Session("absent".into())).await.unwrap());
    assert!(!store.set_add(&set, "a").await.unwrap());
    assert!(!store.set_remove(&set, "absent").await.unwrap());
    assert_eq!(store.sweep_expired().await.unwrap(), 0);
    assert!(
        std::fs::read(&path).unwrap() == before,
        "a write that changed nothing was committed"
    );

    // The check can see a commit: the winner of the race changes the file.
    assert!(store
        .compare_and_set(&key, Some(1), Bytes::from_static(b"2"), None)
        .await
        .unwrap());
    assert!(std::fs::read(&path).unwrap() != before);
    assert_eq!(
        store.get(&key).await.unwrap().map(|v| v.value),
        Some(Bytes::from_static(b"2"))
    );
}

const KILL9_DB_ENV: &str = "GATEHOUSE_TEST_KILL9_DB";

/// Child half of `embedded_acknowledged_writes_survive_kill_9`: writes until killed and says
/// "ACK n" after each write the store acknowledged. Does nothing when run normally.
#[test]
fn embedded_kill9_child() {
    let Ok(path) = std::env::var(KILL9_DB_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = store::open(&settings(format!("file:{path}")))
            .await
            .unwrap();
        for i in 0u64.. {
            store
                .put(
                    &Key::Session(format!("s{i}")),
                    Bytes::from(i.to_string()),
                    None,
                )
                .await
                .unwrap();
            store.set_add(&Key::Users, &format!("u{i}")).await.unwrap();
            println!("ACK {i}");
        }
    });
}

#[test]
fn embedded_acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded_kill9_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(KILL9_DB_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last_ack = None;
    for line in lines.by_ref() {
        if let Some(n) = line.unwrap().strip_prefix("ACK ") {
            last_ack = Some(n.parse::<u64>().unwrap());
            if last_ack >= Some(50) {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructors, no flush
                           // Lines already in the pipe were acknowledged too.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("ACK ") {
            last_ack = Some(n.parse().unwrap());
        }
    }
    child.wait().unwrap();
    let last_ack = last_ack.expect("child acknowledged nothing");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = store::open(&settings(format!("file:{}", db.display())))
            .await
            .unwrap();
        let users: HashSet<String> = store
            .set_members(&Key::Users)
            .await
            .unwrap()
            .into_iter()
            .collect();
        for i in 0..=last_ack {
            let got = store.get(&Key::Session(format!("s{i}"))).await.unwrap();
            assert_eq!(
                got.map(|v| v.value),
                Some(Bytes::from(i.to_string())),
                "record {i} lost"
            );
            assert!(users.contains(&format!("u{i}")), "set member {i} lost");
        }
    });
}

// ---- Redis only ----

/// Log lines written while a test runs, to check what operators would see.
#[derive(Clone, Default)]
struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn lines_containing(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

/// Stops the servers under a live store: every operation fails within about the command timeout,
/// one error line is logged for the whole outage; after a restart on the same port the same
/// store works again and one recovery line is logged.
async fn fails_closed_then_recovers(url: String, servers: &mut [RedisServer]) {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Current-thread runtime: the store's operations run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let command_timeout = Duration::from_millis(500);
    let store = store::open(&StoreSettings {
        command_timeout,
        ..settings(url)
    })
    .await
    .unwrap();
    let key = Key::Session("s".into());
    store
        .put(&key, Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    assert!(store.healthy());

    servers.iter_mut().for_each(RedisServer::stop);
    for _ in 0..5 {
        let start = Instant::now();
        let result = store.get(&key).await;
        assert!(
            matches!(
                result,
                Err(StoreError::Unavailable(_) | StoreError::Timeout)
            ),
            "{result:?}"
        );
        let took = start.elapsed();
        assert!(
            took < command_timeout + Duration::from_millis(500),
            "took {took:?}"
        );
    }
    assert!(store.ping().await.is_err());
    assert!(!store.healthy());

    // Blocks this runtime for the restart (~0.1 s); nothing needs to run meanwhile.
    servers.iter_mut().for_each(RedisServer::restart);
    let start = Instant::now();
    while let Err(e) = store.put(&key, Bytes::from_static(b"y"), None).await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no recovery: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().value,
        Bytes::from_static(b"y")
    );
    assert!(store.healthy());
    assert_eq!(
        log.lines_containing("ERROR"),
        1,
        "one error line per outage"
    );
    assert_eq!(log.lines_containing("store available again"), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn redis_outage_fails_closed_and_recovers_with_the_same_store() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    fails_closed_then_recovers(server.url(), std::slice::from_mut(&mut server)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn sentinel_master_outage_fails_closed_and_recovers() {
    let mut sentinel = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap();
    // The sentinel stays up; its master goes away and comes back on the same port.
    fails_closed_then_recovers(sentinel.url(), std::slice::from_mut(&mut sentinel.master)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn cluster_outage_fails_closed_and_recovers() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    // Nodes come back with their nodes.conf (same dir, same port) and rejoin the cluster.
    fails_closed_then_recovers(cluster.url(), &mut cluster.nodes).await;
}

#[tokio::test]
async fn unreachable_redis_is_an_error_within_the_connect_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let result = store::open(&settings(format!("redis://:hunter2@127.0.0.1:{port}"))).await;
    let err = result.err().expect("nothing listens there");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn bad_store_urls_name_the_key_and_hide_the_password() {
    for url in [
        "ftp://user:hunter2@host/x",
        "file:",
        "redis-cluster://hunter2@",
        "redis+sentinel://:hunter2@127.0.0.1:1",
    ] {
        let err = store::open(&settings(url.to_owned()))
            .await
            .err()
            .expect(url);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        if !url.starts_with("redis+sentinel") {
            assert!(err.to_string().starts_with("store.url"), "{url}: {err}");
        }
    }
}

// ---- sealed secrets ----

#[test]
fn sealed_secrets_roundtrip_and_differ_each_time() {
    let sealer = Sealer::from_keys(vec![("k1".into(), [1u8; 32])]).unwrap();
    let a = sealer.seal(b"JBSWY3DPEHPK3PXP").unwrap();
    let b = sealer.seal(b"JBSWY3DPEHPK3PXP").unwrap();
    assert_ne!(a, b, "nonces must be fresh");
    assert!(!a.windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"));
    assert_eq!(sealer.open(&a).unwrap(), b"JBSWY3DPEHPK3PXP");
}

#[test]
fn sealed_secret_does_not_open_with_another_key() {
    let sealer = Sealer::from_keys(vec![("k1".into(), [1u8; 32])]).unwrap();
    let blob = sealer.seal(b"seed").unwrap();
    let impostor = Sealer::from_keys(vec![("k1".into(), [2u8; 32])]).unwrap();
    assert!(matches!(
        impostor.open(&blob),
        Err(SealError::WrongKeyOrTampered)
    ));
    let other_id = Sealer::from_keys(vec![("k2".into(), [1u8; 32])]).unwrap();
    let err = other_id.open(&blob).unwrap_err();
    assert!(
        matches!(&err, SealError::UnknownKeyId(id) if id == "k1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("k1"));
}

#[test]
fn rotated_out_key_still_opens_when_listed_second() {
    let old = Sealer::from_keys(vec![("old".into(), [1u8; 32])]).unwrap();
    let blob = old.seal(b"seed").unwrap();
    let rotated =
        Sealer::from_keys(vec![("new".into(), [9u8; 32]), ("old".into(), [1u8; 32])]).unwrap();
    assert_eq!(rotated.current_key_id(), "new");
    assert_eq!(rotated.open(&blob).unwrap(), b"seed");
    let fresh = rotated.seal(b"seed").unwrap();
    assert!(matches!(old.open(&fresh), Err(SealError::UnknownKeyId(_))));
}

#[test]
fn key_file_is_generated_private_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets/seal.key");
    let sealer = Sealer::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let blob = sealer.seal(b"seed").unwrap();
    let reloaded = Sealer::load_or_create(&path).unwrap();
    assert_eq!(reloaded.current_key_id(), sealer.current_key_id());
    assert_eq!(reloaded.open(&blob).unwrap(), b"seed");
    assert!(!format!("{reloaded:?}").contains(
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
    ));
}

#[test]
fn key_file_rotation_and_errors() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seal.key");
    let enc = |k: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    std::fs::write(
        &path,
        format!("# comment\nnew {}\n\nold {}\n", enc([9; 32]), enc([1; 32])),
    )
    .unwrap();
    let sealer = Sealer::load_or_create(&path).unwrap();
    assert_eq!(sealer.current_key_id(), "new");
    let old = Sealer::from_keys(vec![("old".into(), [1u8; 32])]).unwrap();
    assert_eq!(sealer.open(&old.seal(b"s").unwrap()).unwrap(), b"s");

    std::fs::write(&path, "k1 c2VjcmV0LXNob3J0\n").unwrap();
    let err = Sealer::load_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("32 bytes"), "{err}");
    assert!(!err.contains("c2VjcmV0LXNob3J0"), "{err}");
}

#[test]
fn gateways_starting_together_generate_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seal.key");
    let ids: HashSet<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    Sealer::load_or_create(&path)
                        .unwrap()
                        .current_key_id()
                        .to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 1, "{ids:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temp files left behind");
}
