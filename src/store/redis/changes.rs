//! How gateways sharing one Redis tell each other that a cached record changed, so that no
//! gateway serves a copy once the write that made it stale has returned (`cache.rs`).
//!
//! - Every write of a cached kind is announced on `gh:changed` as `ORIGIN SEQ KEY`. Each
//!   gateway that caches drops its copy of KEY, then answers on `gh:ack:ORIGIN` with `SEQ ID`.
//! - A gateway that caches holds a lease in the sorted set `gh:gateways` (member: its id,
//!   score: when the lease ends, by Redis's clock). It renews the lease every
//!   [`RENEW_EVERY`], each time after a PING through its subscription proved the
//!   subscription alive, and serves copies only until its own reckoning of the lease's end:
//!   the instant before it sent the renewal plus [`LEASE`], never later than Redis's.
//! - The writer reads the leases in the same script that publishes, and returns only when
//!   each other leaseholder has answered or its lease has ended.
//!
//! So a logout, revocation or log-out-all that returned is in force on every gateway: each
//! either dropped its copy or cannot use its cache. A gateway whose subscription breaks stops
//! using its cache at once when it notices and at the end of its lease when it does not (a cut
//! that closes nothing); writers wait for it that long, at most [`LEASE`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{PubSub, PubSubSink};
use redis::{Msg, Script, Value};
use tokio::sync::mpsc;

use super::RedisStore;
use crate::store::cache::Cache;
use crate::store::{Key, StoreError};

const CHANGED: &str = "gh:changed";
const GATEWAYS: &str = "gh:gateways";
const ACK_PREFIX: &str = "gh:ack:";

/// How long a renewed lease lets a gateway serve copies; also the longest a writer waits for
/// a gateway that does not answer.
pub const LEASE: Duration = Duration::from_secs(2);
/// A quarter of the lease: a renewal may be slow or fail once without the cache going off.
const RENEW_EVERY: Duration = Duration::from_millis(500);
/// Pause between attempts to subscribe again.
const RETRY: Duration = Duration::from_secs(1);

/// Lua: publish, drop ended leases and return Redis's time with the live ones.
static ANNOUNCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%d', now), '+inf', 'WITHSCORES')}
",
    )
});

/// Lua: hold a lease until Redis's now plus ARGV[2] ms; 1 = the lease was not there.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
",
    )
});

pub(super) struct Changes {
    /// This process's name in announcements, answers and leases (random, not a secret).
    id: String,
    ack_channel: String,
    /// Present when this process caches: it then holds a lease and answers announcements.
    cache: Option<Arc<Cache>>,
    next_seq: AtomicU64,
    /// Announcements of this process still waiting for answers, by sequence number.
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<String>>>,
}

impl Changes {
    pub fn new(cache: Option<Arc<Cache>>) -> Changes {
        let id = hex::encode(rand::random::<[u8; 12]>());
        Changes {
            ack_channel: format!("{ACK_PREFIX}{id}"),
            id,
            cache,
            next_seq: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    pub fn cache(&self) -> Option<Arc<Cache>> {
        self.cache.clone()
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<String>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every gateway that `key` changed; returns when each leaseholder dropped its copy
    /// or its lease ended.
    pub async fn announce(&self, store: &RedisStore, key: &Key) -> Result<(), StoreError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, mut answers) = mpsc::unbounded_channel();
        // Registered before publishing: an answer may arrive before the script's reply.
        self.waiting().insert(seq, tx);
        let _unregister = Unregister(self, seq);
        let payload = format!("{} {seq} {}", self.id, key.encode());
        let (redis_now, leases): (i64, Vec<String>) = store
            .run(|mut c| async move {
                ANNOUNCE
                    .key(GATEWAYS)
                    .arg(CHANGED)
                    .arg(payload)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let replied = Instant::now();
        let mut pending: HashMap<String, Instant> = leases
            .chunks(2)
            .filter_map(|pair| {
                let [id, score] = pair else { return None };
                let left = score.parse::<i64>().ok()?.saturating_sub(redis_now);
                (*id != self.id).then(|| {
                    (
                        id.clone(),
                        replied + Duration::from_millis(left.max(0) as u64),
                    )
                })
            })
            .collect();
        loop {
            let now = Instant::now();
            pending.retain(|_, lease_end| *lease_end > now);
            let Some(next_end) = pending.values().min().copied() else {
                return Ok(());
            };
            tokio::select! {
                answer = answers.recv() => {
                    if let Some(id) = answer {
                        pending.remove(&id);
                    }
                }
                () = tokio::time::sleep_until(next_end.into()) => {}
            }
        }
    }

    /// Ends this gateway's lease, so that writers stop waiting for it (the keeper has been
    /// stopped: no renewal follows).
    pub async fn release(&self, store: &RedisStore) {
        let Some(cache) = &self.cache else { return };
        cache.lose_lease();
        let id = self.id.clone();
        let _ = store
            .run(|mut c| async move {
                redis::cmd("ZREM")
                    .arg(GATEWAYS)
                    .arg(id)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
    }

    /// Keeps the subscription (and, when caching, the lease) for as long as the store lives,
    /// subscribing again whenever it breaks.
    pub async fn keep(self: Arc<Self>, store: Weak<RedisStore>, mut first: Option<PubSub>) {
        let mut lost_logged = false;
        loop {
            let pubsub = match first.take() {
                Some(p) => Ok(p),
                None => {
                    let Some(s) = store.upgrade() else { return };
                    s.backend.pubsub(s.connect_timeout).await
                }
            };
            let reason = match pubsub {
                Ok(p) => self.serve(p, &store, &mut lost_logged).await,
                Err(e) => e.to_string(),
            };
            if let Some(cache) = &self.cache {
                cache.lose_lease();
            }
            if store.strong_count() == 0 {
                return;
            }
            if !lost_logged {
                tracing::warn!(reason = %reason, "session cache off: no live subscription to Redis; every request reads the store until it is back");
                lost_logged = true;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Subscribes, then handles messages and renews the lease until either fails.
    async fn serve(
        &self,
        pubsub: PubSub,
        store: &Weak<RedisStore>,
        lost_logged: &mut bool,
    ) -> String {
        let (mut sink, mut stream) = pubsub.split();
        if let Err(e) = sink.subscribe(&[CHANGED, self.ack_channel.as_str()]).await {
            return format!("subscribe failed: {e}");
        }
        let messages = async {
            while let Some(msg) = stream.next().await {
                self.on_message(&msg, store);
            }
            "subscription closed".to_owned()
        };
        let leases = async {
            let Some(cache) = &self.cache else {
                return std::future::pending().await;
            };
            let mut tick = tokio::time::interval(RENEW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.renew(&mut sink, store).await {
                    Ok(until) => {
                        cache.lease_until(until);
                        if *lost_logged {
                            tracing::info!("session cache on again: subscribed to Redis");
                            *lost_logged = false;
                        }
                    }
                    Err(e) => return e,
                }
            }
        };
        tokio::select! {
            reason = messages => reason,
            reason = leases => reason,
        }
    }

    /// Proves the subscription alive, then extends the lease; returns until when copies may
    /// be served.
    async fn renew(
        &self,
        sink: &mut PubSubSink,
        store: &Weak<RedisStore>,
    ) -> Result<Instant, String> {
        let Some(store) = store.upgrade() else {
            return Err("store closed".to_owned());
        };
        match tokio::time::timeout(store.command_timeout, sink.ping::<Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("subscription ping failed: {e}")),
            Err(_) => return Err("subscription ping timed out".to_owned()),
        }
        let sent = Instant::now();
        let (id, lease_ms) = (self.id.clone(), LEASE.as_millis() as u64);
        let added = store
            .run(|mut c| async move {
                RENEW
                    .key(GATEWAYS)
                    .arg(id)
                    .arg(lease_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map_err(|e| format!("lease renewal failed: {e}"))?;
        if added == 1 {
            // Our lease was gone: first renewal, pruned after it lapsed, or the keyspace was
            // flushed behind our back. Whatever the copies were, they go.
            if let Some(cache) = &self.cache {
                cache.clear();
            }
        }
        Ok(sent + LEASE)
    }

    fn on_message(&self, msg: &Msg, store: &Weak<RedisStore>) {
        let payload = msg.get_payload_bytes();
        let text = std::str::from_utf8(payload).unwrap_or("");
        if msg.get_channel_name() == self.ack_channel {
            let answer = text
                .split_once(' ')
                .and_then(|(seq, id)| Some((seq.parse().ok()?, id)));
            if let Some((seq, id)) = answer {
                if let Some(tx) = self.waiting().get(&seq) {
                    let _ = tx.send(id.to_owned());
                }
            }
            return;
        }
        let Some(cache) = &self.cache else { return };
        let mut parts = text.splitn(3, ' ');
        let (origin, seq, key) = (parts.next(), parts.next(), parts.next());
        let (Some(origin), Some(seq), Some(key)) = (origin, seq, key.and_then(Key::decode)) else {
            // Not ours to read: whatever changed, no copy survives it.
            cache.clear();
            return;
        };
        cache.evict(&key);
        let well_formed = origin.len() == self.id.len()
            && origin.bytes().all(|b| b.is_ascii_hexdigit())
            && seq.parse::<u64>().is_ok();
        if !well_formed || origin == self.id {
            return;
        }
        let Some(store) = store.upgrade() else { return };
        let (channel, answer) = (
            format!("{ACK_PREFIX}{origin}"),
            format!("{seq} {}", self.id),
        );
        // After the eviction above, never before: the answer promises the copy is gone.
        tokio::spawn(async move {
            let _ = store
                .run(|mut c| async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(answer)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
        });
    }
}

/// Forgets an announcement's answers when it returns or is dropped.
struct Unregister<'a>(&'a Changes, u64);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.waiting().remove(&self.1);
    }
}
