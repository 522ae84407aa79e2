//! The session cache across gateways on one real Redis: a copy is never served once the write
//! that made it stale has returned through any gateway, also when a gateway's subscription
//! breaks or its link to Redis goes silent without closing.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

#[path = "support/redis.rs"]
mod redis_fixture;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::store::{self, Key, Store, StoreError, StoreSettings, Versioned};
use redis_fixture::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The lease a gateway's cache lives on without hearing from Redis (`changes.rs`).
const LEASE: Duration = Duration::from_secs(2);

async fn open(url: String) -> Arc<dyn Store> {
    store::open(&StoreSettings {
        url,
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(1),
        cache_sessions: true,
        ..StoreSettings::default()
    })
    .await
    .unwrap()
}

async fn redis() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
}

fn raw(server_url: &str) -> redis::Client {
    redis::Client::open(server_url).unwrap()
}

/// Changes the stored bytes behind gatehouse's back (no version bump, no announcement).
async fn overwrite_behind_the_back(client: &redis::Client, key: &Key, value: &str) {
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HSET")
        .arg(key.encode())
        .arg("d")
        .arg(value)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
}

async fn value(store: &Arc<dyn Store>, key: &Key) -> Option<Bytes> {
    store.get(key).await.unwrap().map(|v| v.value)
}

/// Waits until `store` serves `key` from its cache: a change made behind its back stays
/// unseen. Proves the cache is on, so that the tests below test it.
async fn until_cached(store: &Arc<dyn Store>, client: &redis::Client, key: &Key) -> Bytes {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = value(store, key).await.unwrap();
        overwrite_behind_the_back(client, key, "behind-the-back").await;
        if value(store, key).await.unwrap() == seen {
            // Put the real value back (still unannounced: the copy stays).
            overwrite_behind_the_back(client, key, std::str::from_utf8(&seen).unwrap()).await;
            return seen;
        }
        assert!(Instant::now() < deadline, "the cache never came on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_through_one_gateway_is_seen_by_every_other_gateway_on_its_very_next_read() {
    let server = redis().await;
    let client = raw(&server.url());
    let (a, b, c) = (
        open(server.url()).await,
        open(server.url()).await,
        open(server.url()).await,
    );
    let key = Key::Session("cached-session".into());
    assert!(a.create(&key, Bytes::from("v0"), None).await.unwrap());
    until_cached(&b, &client, &key).await;
    until_cached(&c, &client, &key).await;

    let mut version = 1;
    for round in 1..=60u32 {
        let writer = [&a, &b, &c][round as usize % 3];
        let next = Bytes::from(format!("v{round}"));
        match round % 4 {
            0 => {
                assert!(writer.delete(&key).await.unwrap());
                for reader in [&a, &b, &c] {
                    assert_eq!(value(reader, &key).await, None, "round {round}");
                }
                assert!(writer.create(&key, next.clone(), None).await.unwrap());
                version = 1;
            }
            1 => {
                assert!(writer
                    .compare_and_set(&key, Some(version), next.clone(), None)
                    .await
                    .unwrap());
                version += 1;
            }
            _ => version = writer.put(&key, next.clone(), None).await.unwrap(),
        }
        for reader in [&a, &b, &c] {
            let got = reader.get(&key).await.unwrap();
            assert_eq!(
                got,
                Some(Versioned {
                    value: next.clone(),
                    version
                }),
                "round {round}: a gateway served a copy older than an acknowledged write"
            );
        }
    }

    // The log-out-all epoch, read with the session on every request, too.
    let both = [key.clone(), Key::EpochGlobal];
    a.get_many(&both).await.unwrap();
    until_cached(&a, &client, &key).await;
    b.put(&Key::EpochGlobal, Bytes::from("12345"), None)
        .await
        .unwrap();
    let got = a.get_many(&both).await.unwrap();
    assert_eq!(
        got[1].as_ref().map(|v| v.value.clone()),
        Some(Bytes::from("12345"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_subscription_takes_the_cache_out_of_use_before_a_write_can_be_missed() {
    let server = redis().await;
    let client = raw(&server.url());
    let (a, b) = (open(server.url()).await, open(server.url()).await);
    let key = Key::Session("s".into());
    assert!(b.create(&key, Bytes::from("live"), None).await.unwrap());
    until_cached(&a, &client, &key).await;

    for round in 0..3 {
        // Every gateway's subscription is cut, the writer's too: nobody hears anyone.
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(killed >= 2, "round {round}: killed {killed} subscriptions");
        let started = Instant::now();
        let ended = format!("ended-{round}");
        b.put(&key, Bytes::from(ended.clone()), None).await.unwrap();
        assert!(
            started.elapsed() < LEASE + Duration::from_secs(1),
            "a write waited {:?} for an unreachable gateway, longer than its lease",
            started.elapsed()
        );
        assert_eq!(
            value(&a, &key).await,
            Some(Bytes::from(ended)),
            "round {round}: served a stale copy after the subscription broke"
        );
        // Subscribed again, the cache comes back on.
        until_cached(&a, &client, &key).await;
    }
}

/// A TCP relay to Redis that can go silent: bytes stop flowing, nothing is closed — what a
/// network cut looks like to both ends.
struct Relay {
    port: u16,
    silent: Arc<AtomicBool>,
}

impl Relay {
    async fn to(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, flag.clone()));
                tokio::spawn(pump(ro, wi, flag.clone()));
            }
        });
        Relay { port, silent }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        // Held, not dropped: a silent link delivers nothing until it speaks again.
        while silent.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_cut_off_without_a_close_stops_serving_copies_before_the_writer_returns() {
    let server = redis().await;
    let client = raw(&server.url());
    let relay = Relay::to(server.port()).await;
    let cut_off = open(relay.url()).await;
    let writer = open(server.url()).await;
    let key = Key::Session("s".into());
    assert!(writer
        .create(&key, Bytes::from("live"), None)
        .await
        .unwrap());
    until_cached(&cut_off, &client, &key).await;

    relay.silent.store(true, Ordering::Relaxed);
    let started = Instant::now();
    writer.put(&key, Bytes::from("ended"), None).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited < LEASE + Duration::from_secs(1),
        "the writer waited {waited:?}, longer than the silent gateway's lease"
    );
    // The silent gateway can reach neither Redis nor its cache: it fails closed.
    match cut_off.get(&key).await {
        Err(StoreError::Timeout | StoreError::Unavailable(_)) => {}
        other => panic!("a gateway cut off from Redis answered {other:?} after the write"),
    }

    relay.silent.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(got) = cut_off.get(&key).await {
            assert_eq!(got.map(|v| v.value), Some(Bytes::from("ended")));
            break;
        }
        assert!(Instant::now() < deadline, "did not heal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `ACL SETUSER` line `docs/redis.md` gives operators, with `password` filled in.
fn documented_acl(password: &str) -> Vec<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/redis.md")).unwrap();
    let start = doc.find("ACL SETUSER").expect("docs/redis.md gives an ACL");
    let block = &doc[start..];
    let block = &block[..block.find("```").expect("end of the ACL block")];
    block
        .replace("\\\n", " ")
        .split_whitespace()
        .skip(1)
        .map(|w| w.replace("CHANGE-ME-long-random", password))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_acl_in_docs_redis_md_lets_gateways_share_sessions_and_the_cache() {
    let server = redis().await;
    let client = raw(&server.url());
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut setuser = redis::cmd("ACL");
    for arg in documented_acl("s3cret-for-test") {
        setuser.arg(arg);
    }
    setuser.query_async::<()>(&mut c).await.unwrap();
    let url = format!(
        "redis://gatehouse:s3cret-for-test@127.0.0.1:{}",
        server.port()
    );
    let (a, b) = (open(url.clone()).await, open(url).await);

    // Every kind of operation the gateway uses.
    let key = Key::Session("acl".into());
    assert!(a.create(&key, Bytes::from("live"), None).await.unwrap());
    until_cached(&b, &client, &key).await;
    a.put(&key, Bytes::from("ended"), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(value(&b, &key).await, Some(Bytes::from("ended")));
    let user = "alice@example.com".to_owned();
    a.incr(&Key::FailUser(user.clone()), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    a.set_add(&Key::UserSessions(user.clone()), "x")
        .await
        .unwrap();
    assert_eq!(
        b.set_members(&Key::UserSessions(user.clone()))
            .await
            .unwrap(),
        vec!["x".to_owned()]
    );
    a.list_push_capped(&Key::Logins(user.clone()), Bytes::from("l"), 3)
        .await
        .unwrap();
    assert_eq!(
        b.list_range(&Key::Logins(user), 0, 3).await.unwrap().len(),
        1
    );
    assert!(!b
        .scan_prefix(&gatehouse::store::KeyPrefix::Sessions)
        .await
        .unwrap()
        .is_empty());
    b.ping().await.unwrap();
    assert!(a.delete(&key).await.unwrap());
    assert_eq!(value(&b, &key).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_gateway_gives_up_its_lease_so_writers_stop_waiting_for_it() {
    let server = redis().await;
    let client = raw(&server.url());
    let (a, b) = (open(server.url()).await, open(server.url()).await);
    let key = Key::Session("s".into());
    assert!(a.create(&key, Bytes::from("live"), None).await.unwrap());
    until_cached(&a, &client, &key).await;
    until_cached(&b, &client, &key).await;
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let leases = |c: &mut redis::aio::MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            redis::cmd("ZCARD")
                .arg("gh:gateways")
                .query_async::<u64>(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(leases(&mut c).await, 2);
    b.close().await;
    assert_eq!(
        leases(&mut c).await,
        1,
        "a stopped gateway still holds a lease"
    );
    // And it serves no copy any more.
    overwrite_behind_the_back(&client, &key, "changed").await;
    assert_eq!(value(&b, &key).await, Some(Bytes::from("changed")));
}
