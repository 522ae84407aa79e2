//! The Redis backend, for several gateways sharing state: single node, Sentinel or Cluster.
//!
//! A value record is a hash `{v: version, d: data}`; counters are value records whose data is
//! a decimal number, so `get` reads them like any value. Sets are Redis sets, capped lists are
//! Redis lists. Every check-and-write runs as one Lua script: atomic, and one round trip.
//!
//! Every operation is bounded by `command_timeout` and fails closed: an error is an error,
//! never a default. The connection reconnects by itself (ConnectionManager, the cluster client,
//! or a fresh Sentinel lookup), so the same store works again once Redis is back.

mod backend;
mod changes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Script};

use super::cache::{cached_kind, Cache};
use super::{Key, KeyPrefix, Store, StoreError, Versioned};
use backend::{Backend, Conn, Scheme};
use changes::Changes;

pub struct RedisStore {
    backend: Backend,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// Announcing writes of cached kinds to every gateway (not on a Cluster, where gateways
    /// do not cache).
    changes: Option<Arc<Changes>>,
    /// The task keeping the subscription and the lease.
    keeper: Mutex<Option<tokio::task::AbortHandle>>,
    healthy: AtomicBool,
    /// Redis refused a write because it cannot take writes now (a replica,
    /// too few replicas, a failed save). Until a probe write succeeds, every
    /// operation fails closed, reads included: a session that can be read but
    /// never revoked or ended is not served (SECURITY-TESTS 38).
    refuses_writes: AtomicBool,
}

impl RedisStore {
    /// Connects to the deployment named by `url` within `connect_timeout`. Fails when Redis
    /// cannot be reached, so `check-config` and startup report it at once. With
    /// `cache_sessions`, the store keeps a [`Cache`] (see [`RedisStore::cache`]) whose
    /// copies other gateways' writes evict.
    pub async fn connect(
        url: &str,
        connect_timeout: Duration,
        command_timeout: Duration,
        cache_sessions: bool,
    ) -> Result<Arc<RedisStore>, StoreError> {
        let backend = match Scheme::of(url)? {
            Scheme::Single => Backend::single(url, connect_timeout, command_timeout).await?,
            Scheme::Sentinel { tls } => Backend::sentinel(url, tls, connect_timeout).await?,
            Scheme::Cluster { tls } => {
                Backend::cluster(url, tls, connect_timeout, command_timeout).await?
            }
        };
        // A Cluster spreads subscribers over nodes and PUBLISH counts only its own, so
        // gateways on a Cluster read the store on every request instead.
        let changes = match backend {
            Backend::Cluster(_) => {
                if cache_sessions {
                    tracing::info!("session cache off: not available with Redis Cluster");
                }
                None
            }
            _ => Some(Arc::new(Changes::new(cache_sessions.then(Cache::leased)))),
        };
        // Subscribed before the first write, so that even a short-lived admin command hears
        // the other gateways' answers.
        let first = match &changes {
            Some(_) => match backend.pubsub(connect_timeout).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to Redis yet; retrying");
                    None
                }
            },
            None => None,
        };
        let store = Arc::new(RedisStore {
            backend,
            connect_timeout,
            command_timeout,
            changes,
            keeper: Mutex::new(None),
            healthy: AtomicBool::new(true),
            refuses_writes: AtomicBool::new(false),
        });
        if let Some(changes) = &store.changes {
            let task = tokio::spawn(changes.clone().keep(Arc::downgrade(&store), first));
            if let Ok(mut keeper) = store.keeper.lock() {
                *keeper = Some(task.abort_handle());
            }
        }
        Ok(store)
    }

    /// The cache other gateways' writes evict, when this store keeps one.
    pub fn cache(&self) -> Option<Arc<Cache>> {
        self.changes.as_ref().and_then(|c| c.cache())
    }

    /// Tells the other gateways about a write of a cached kind (see `changes.rs`).
    async fn announce(&self, key: &Key) -> Result<(), StoreError> {
        match &self.changes {
            Some(changes) if cached_kind(key) => changes.announce(self, key).await,
            _ => Ok(()),
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(task) = self.keeper.get_mut().ok().and_then(|k| k.take()) {
            task.abort();
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        let k = key.encode();
        let row = self
            .run(|mut c| async move { hmget(&k).query_async::<Row>(&mut c).await })
            .await?;
        versioned(row, key)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(Key::encode).collect();
        let rows: Vec<Row> = if matches!(self.backend, Backend::Cluster(_)) {
            // Keys of different users live in different slots: one request per key, concurrently.
            self.run(|c| async move {
                let reads = names.iter().map(|k| {
                    let mut c = c.clone();
                    async move { hmget(k).query_async::<Row>(&mut c).await }
                });
                futures_util::future::try_join_all(reads).await
            })
            .await?
        } else {
            self.run(|mut c| async move {
                let mut pipe = redis::pipe();
                for k in &names {
                    pipe.add_command(hmget(k));
                }
                pipe.query_async(&mut c).await
            })
            .await?
        };
        rows.into_iter()
            .zip(keys)
            .map(|(row, key)| versioned(row, key))
            .collect()
    }

    async fn put(&self, key: &Key, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        let k = key.encode();
        let version = self
            .run(|mut c| async move {
                PUT.key(k)
                    .arg(value.as_ref())
                    .arg(ttl_ms(ttl))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.announce(key).await?;
        Ok(version)
    }

    async fn create(
        &self,
        key: &Key,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.compare_and_set(key, None, value, ttl).await
    }

    async fn compare_and_set(
        &self,
        key: &Key,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let k = key.encode();
        let expected = expected.map(|v| v.to_string()).unwrap_or_default();
        let written: i64 = self
            .run(|mut c| async move {
                CAS.key(k)
                    .arg(expected)
                    .arg(value.as_ref())
                    .arg(ttl_ms(ttl))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if written == 1 {
            self.announce(key).await?;
        }
        Ok(written == 1)
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let k = key.encode();
        let n: i64 = self
            .run(|mut c| async move { redis::cmd("DEL").arg(k).query_async(&mut c).await })
            .await?;
        if n > 0 {
            self.announce(key).await?;
        }
        Ok(n > 0)
    }

    async fn incr(&self, key: &Key, ttl: Option<Duration>) -> Result<i64, StoreError> {
        let k = key.encode();
        let n = self
            .run(|mut c| async move { INCR.key(k).arg(ttl_ms(ttl)).invoke_async(&mut c).await })
            .await?;
        self.announce(key).await?;
        Ok(n)
    }

    async fn set_add(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        let (k, m) = (key.encode(), member.to_owned());
        let n: i64 = self
            .run(|mut c| async move { redis::cmd("SADD").arg(k).arg(m).query_async(&mut c).await })
            .await?;
        Ok(n == 1)
    }

    async fn set_remove(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        let (k, m) = (key.encode(), member.to_owned());
        let n: i64 = self
            .run(|mut c| async move { redis::cmd("SREM").arg(k).arg(m).query_async(&mut c).await })
            .await?;
        Ok(n == 1)
    }

    async fn set_members(&self, key: &Key) -> Result<Vec<String>, StoreError> {
        let k = key.encode();
        let raw: Vec<Vec<u8>> = self
            .run(|mut c| async move { redis::cmd("SMEMBERS").arg(k).query_async(&mut c).await })
            .await?;
        let mut members = raw
            .into_iter()
            .map(String::from_utf8)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt(key, "set member is not UTF-8"))?;
        members.sort();
        Ok(members)
    }

    async fn list_push_capped(
        &self,
        key: &Key,
        value: Bytes,
        cap: usize,
    ) -> Result<(), StoreError> {
        let k = key.encode();
        let cap = cap.max(1);
        self.run(|mut c| async move {
            PUSH_CAPPED
                .key(k)
                .arg(value.as_ref())
                .arg(cap)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn list_range(
        &self,
        key: &Key,
        start: usize,
        count: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let k = key.encode();
        let stop = start.saturating_add(count - 1);
        let items: Vec<Vec<u8>> = self
            .run(|mut c| async move {
                redis::cmd("LRANGE")
                    .arg(k)
                    .arg(start)
                    .arg(stop)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(items.into_iter().map(Bytes::from).collect())
    }

    async fn scan_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<Key>, StoreError> {
        // The encoded prefix never contains glob metacharacters (keys.rs escapes them).
        let pattern = format!("{}*", prefix.encode());
        let nodes = match &self.backend {
            Backend::Cluster(_) => self.run(|c| async move { primaries(c).await }).await?,
            _ => vec![None],
        };
        let mut keys = Vec::new();
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let (pat, node) = (pattern.clone(), node.clone());
                let (next, batch): (u64, Vec<Vec<u8>>) = self
                    .run(|c| async move { scan_page(c, node, cursor, &pat).await })
                    .await?;
                keys.extend(
                    batch
                        .iter()
                        .filter_map(|k| std::str::from_utf8(k).ok())
                        .filter_map(Key::decode),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    async fn close(&self) {
        if let Some(task) = self.keeper.lock().ok().and_then(|mut k| k.take()) {
            task.abort();
        }
        if let Some(changes) = &self.changes {
            changes.release(self).await;
        }
    }
}

impl RedisStore {
    /// Runs one operation within `command_timeout`, maps its error and tracks health.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let conn = self.backend.conn().await?;
            if self.refuses_writes.load(Ordering::Relaxed) {
                self.probe_writes(conn.clone()).await?;
            }
            op(conn).await.map_err(|e| self.classify(e))
        };
        let result = match tokio::time::timeout(self.command_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                self.backend.forget_connection();
                Err(StoreError::Timeout)
            }
        };
        self.note_health(&result);
        result
    }

    fn classify(&self, e: RedisError) -> StoreError {
        if is_data_error(&e) {
            return StoreError::Corrupt(format!(
                "unexpected record in Redis: {}",
                format_args!("{:?}", e.kind())
            ));
        }
        if refuses_writes(&e) {
            self.refuses_writes.store(true, Ordering::Relaxed);
        }
        // READONLY: after a Sentinel failover our old master became a replica.
        let stale = matches!(e.code(), Some("READONLY" | "MASTERDOWN"));
        if stale || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.backend.forget_connection();
        }
        StoreError::Unavailable(e.to_string())
    }

    /// While Redis refuses writes: one small write decides whether it takes
    /// them again; until then this is the operation's error.
    async fn probe_writes(&self, mut conn: Conn) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(WRITE_PROBE_KEY)
            .arg(1)
            .arg("PX")
            .arg(10_000)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.classify(e))?;
        self.refuses_writes.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// One log line per transition, not one per request: an outage under load would
    /// otherwise flood the log.
    fn note_health<T>(&self, result: &Result<T, StoreError>) {
        let ok = !matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::Timeout)
        );
        let was = self.healthy.swap(ok, Ordering::Relaxed);
        match (was, result) {
            (true, Err(e)) if !ok => {
                tracing::error!(error = %e, "store unavailable: requests needing state fail closed until Redis answers again")
            }
            (false, _) if ok => tracing::info!("store available again"),
            _ => {}
        }
    }
}

/// Lua: write data, bump the version; `ttl` 0 = no expiry.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'd', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('PERSIST', KEYS[1]) end
return v
",
    )
});

/// Lua: write only at the expected version (`''` = the key must not exist).
static CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], 'v', 1, 'd', ARGV[2])
else
  local cur = redis.call('HGET', KEYS[1], 'v')
  if cur ~= ARGV[1] then return 0 end
  redis.call('HINCRBY', KEYS[1], 'v', 1)
  redis.call('HSET', KEYS[1], 'd', ARGV[2])
end
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
return 1
",
    )
});

/// Lua: count up; the TTL is set only by the increment that creates the counter.
static INCR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local existed = redis.call('EXISTS', KEYS[1])
local n = redis.call('HINCRBY', KEYS[1], 'd', 1)
redis.call('HINCRBY', KEYS[1], 'v', 1)
if existed == 0 and tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
",
    )
});

/// Lua: newest first, keep `cap`.
static PUSH_CAPPED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
",
    )
});

type Row = (Option<u64>, Option<Vec<u8>>);

fn hmget(key: &str) -> Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key).arg("v").arg("d");
    cmd
}

fn versioned(row: Row, key: &Key) -> Result<Option<Versioned>, StoreError> {
    match row {
        (None, None) => Ok(None),
        (Some(version), Some(value)) => Ok(Some(Versioned {
            value: Bytes::from(value),
            version,
        })),
        _ => Err(corrupt(key, "half a record")),
    }
}

fn ttl_ms(ttl: Option<Duration>) -> u64 {
    // A TTL that rounds down to 0 ms would mean "no expiry": keep at least 1 ms.
    ttl.map_or(0, |t| {
        u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

fn corrupt(key: &Key, what: &str) -> StoreError {
    StoreError::Corrupt(format!("{} record: {what}", key.kind()))
}

/// The server answered, but the record is not what the operation expects (wrong type, a
/// counter that is not a number, an undecodable reply).
/// Written (with a short expiry) only to learn whether Redis takes writes again.
const WRITE_PROBE_KEY: &str = "gh:probe:writable";

/// Redis is up but will not take writes: a replica (READONLY), fewer good
/// replicas than `min-replicas-to-write` (NOREPLICAS), a failed RDB save
/// with `stop-writes-on-bgsave-error` (MISCONF). Inside a Lua script the code
/// may come wrapped in the script error, hence the look at the message too.
fn refuses_writes(e: &RedisError) -> bool {
    const CODES: [&str; 3] = ["READONLY", "NOREPLICAS", "MISCONF"];
    e.code().is_some_and(|c| CODES.contains(&c)) || {
        let text = e.to_string();
        CODES.iter().any(|c| text.contains(c))
    }
}

fn is_data_error(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType)
        || e.code() == Some("WRONGTYPE")
        || e.to_string().contains("not an integer")
}

async fn scan_page(
    mut c: Conn,
    node: Option<(String, u16)>,
    cursor: u64,
    pattern: &str,
) -> RedisResult<(u64, Vec<Vec<u8>>)> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000);
    match (node, &mut c) {
        (Some((host, port)), Conn::Cluster(cluster)) => {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let reply = cluster.route_command(cmd, routing).await?;
            Ok(redis::from_redis_value(reply)?)
        }
        _ => cmd.query_async(&mut c).await,
    }
}

/// The primaries of a cluster, as (host, port), from `CLUSTER NODES`.
async fn primaries(c: Conn) -> RedisResult<Vec<Option<(String, u16)>>> {
    let Conn::Cluster(mut cluster) = c else {
        return Ok(vec![None]);
    };
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("NODES");
    let reply = cluster
        .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
        .await?;
    let text: String = redis::from_redis_value(reply)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") || flags.contains("noaddr") {
                return None;
            }
            // `host:port@cport[,hostname]`
            let addr = fields.get(1)?.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(Some((host.to_owned(), port.parse().ok()?)))
        })
        .collect())
}
