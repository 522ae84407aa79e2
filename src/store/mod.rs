//! Shared state: one `Store` trait, an embedded backend (redb, the default) and a Redis backend
//! for several gateways. No other module knows Redis or redb, or builds a key string.
//!
//! Every value record carries a version (for compare-and-set). Sets and capped lists are
//! separate record kinds without versions. Keys are typed (`Key`) and encoded here only.

pub mod cache;
mod embedded;
#[cfg(feature = "heap-stats")]
pub use embedded::page_cache_bytes;
mod keys;
mod redis;
pub mod sealed;
mod timed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use embedded::EmbeddedStore;
pub use keys::{Key, KeyPrefix};
pub use redis::RedisStore;
pub use sealed::{SealError, Sealer};

/// Validated `[store]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// `file:/path/state.redb` (embedded), `redis://`, `rediss://`,
    /// `redis+sentinel://host:port[,host:port]/master`, `redis-cluster://host:port[,…]`,
    /// `rediss-cluster://…`.
    pub url: String,
    /// Key file for sealing secrets at rest (TOTP seeds); created on first start.
    pub secret_key_file: PathBuf,
    /// How long to wait for a Redis connection to be established.
    pub connect_timeout: Duration,
    /// How long one store operation may take before it fails with `StoreError::Timeout`.
    pub command_timeout: Duration,
    /// Keep session records in memory between requests (see `cache.rs`).
    pub cache_sessions: bool,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: "file:/var/lib/gatehouse/state.redb".to_owned(),
            secret_key_file: PathBuf::from("/var/lib/gatehouse/secret.key"),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
            cache_sessions: true,
        }
    }
}

/// Why a store operation failed. Messages never contain values or session ids: both may be
/// secrets, and these messages end up in logs.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend is down or unreachable; callers fail closed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer within `command_timeout`.
    #[error("store operation timed out")]
    Timeout,
    /// A record exists but cannot be decoded (or is of another kind than the operation expects).
    #[error("corrupt record in store: {0}")]
    Corrupt(String),
    /// The `[store]` settings cannot be used.
    #[error("store.url: {0}")]
    Config(String),
    /// The embedded database file is locked by another process.
    #[error("another gatehouse process has the store open ({0}); stop it or use `gatehouse admin` through it")]
    InUse(String),
}

/// A value with the version it was read at. Versions start at 1 when a record is created and
/// grow by one with every write; a deleted record starts again at 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T = Bytes> {
    pub value: T,
    pub version: u64,
}

/// Keys read per round trip by [`Store::scan_values`]: large enough that a walk of 100 000
/// sessions takes a few hundred round trips, small enough that one reply stays far below
/// Redis's output-buffer limits.
pub const SCAN_BATCH: usize = 256;

/// The atomic operations gatehouse needs from shared state. Object safe: used as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value record at `key`, if present and not expired.
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError>;

    /// Several value records at once, in the order of `keys`. One round trip on a single
    /// Redis node (the request hot path reads session + global epoch + user epoch).
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned>>, StoreError>;

    /// Writes `value` unconditionally and returns the new version. `ttl: None` = no expiry
    /// (removes an earlier one).
    async fn put(&self, key: &Key, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError>;

    /// Writes `value` only if no live record exists. `true` = created.
    async fn create(
        &self,
        key: &Key,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError>;

    /// Writes `value` only if the record is at `expected` version (`None` = must be absent).
    /// `true` = written. Exactly one of several concurrent writers with the same expectation wins.
    async fn compare_and_set(
        &self,
        key: &Key,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError>;

    /// Removes a record of any kind. `true` = something was removed.
    async fn delete(&self, key: &Key) -> Result<bool, StoreError>;

    /// Increments a counter (a value record holding a decimal number) and returns the new
    /// count. `ttl` applies when the counter is created; later increments do not extend it, so
    /// a failure window really ends.
    async fn incr(&self, key: &Key, ttl: Option<Duration>) -> Result<i64, StoreError>;

    /// Adds `member` to the set. `true` = it was not there before.
    async fn set_add(&self, key: &Key, member: &str) -> Result<bool, StoreError>;

    /// Removes `member` from the set. `true` = it was there.
    async fn set_remove(&self, key: &Key, member: &str) -> Result<bool, StoreError>;

    /// All members, sorted.
    async fn set_members(&self, key: &Key) -> Result<Vec<String>, StoreError>;

    /// Pushes `value` to the front of the list and keeps only the newest `cap` entries
    /// (`cap` 0 is treated as 1).
    async fn list_push_capped(&self, key: &Key, value: Bytes, cap: usize)
        -> Result<(), StoreError>;

    /// Up to `count` entries from index `start`, newest first.
    async fn list_range(
        &self,
        key: &Key,
        start: usize,
        count: usize,
    ) -> Result<Vec<Bytes>, StoreError>;

    /// Every live key of one kind (admin views: all sessions, all incidents, …). Not for the
    /// request path: it walks the whole keyspace.
    async fn scan_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<Key>, StoreError>;

    /// Every live record of one kind with its value, read `SCAN_BATCH` keys per round trip
    /// (admin views, the metrics gauges). Never through the session cache: a walk over every
    /// session would otherwise fill it with copies no request asks for, and past its cap
    /// push out the ones requests do.
    async fn scan_values(&self, prefix: &KeyPrefix) -> Result<Vec<(Key, Versioned)>, StoreError> {
        let keys = self.scan_prefix(prefix).await?;
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(SCAN_BATCH) {
            let values = self.get_many(batch).await?;
            out.extend(
                batch
                    .iter()
                    .cloned()
                    .zip(values)
                    .filter_map(|(key, value)| Some((key, value?))),
            );
        }
        Ok(out)
    }

    /// Readiness: `Ok` when the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether the last operation reached the backend (for /readyz and metrics; no I/O).
    fn healthy(&self) -> bool;

    /// The gateway is stopping: give up what others would wait for (the cache lease).
    async fn close(&self) {}
}

/// Compare-and-set loops: rounds before a conflicting update becomes an
/// error. Racing writers of one record (a user signing in from many tabs)
/// all get through within these rounds.
pub const CAS_ROUNDS: usize = 12;

/// A short random pause before every round but the first, growing up to
/// 64 ms, so that writers that just collided do not collide again.
pub async fn cas_pause(round: usize) {
    if round > 0 {
        let cap = 1u64 << round.min(6);
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % cap)).await;
    }
}

/// Opens the backend named by `settings.url`.
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    let url = settings.url.trim();
    if let Some(path) = url.strip_prefix("file:") {
        // Accept both `file:/abs/path` and `file:///abs/path`.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(StoreError::Config("file: URL without a path".to_owned()));
        }
        let store = EmbeddedStore::open(PathBuf::from(path)).await?;
        let timed: Arc<dyn Store> = Arc::new(timed::Timed::new(Arc::new(store)));
        // redb lets one process open the file: no other writer can make a copy stale.
        return Ok(match settings.cache_sessions {
            true => Arc::new(cache::Cached::new(timed, cache::Cache::local())),
            false => timed,
        });
    }
    let store = RedisStore::connect(
        url,
        settings.connect_timeout,
        settings.command_timeout,
        settings.cache_sessions,
    )
    .await?;
    let cache = store.cache();
    let timed: Arc<dyn Store> = Arc::new(timed::Timed::new(store));
    Ok(match cache {
        Some(cache) => Arc::new(cache::Cached::new(timed, cache)),
        None => timed,
    })
}

/// Typed JSON records on top of the byte operations, so callers work with serde structs.
impl dyn Store {
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &Key,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(v) => Ok(Some(Versioned {
                value: decode_json(key, &v.value)?,
                version: v.version,
            })),
        }
    }

    /// Every live record of one kind, decoded (see [`Store::scan_values`]).
    pub async fn scan_json<T: DeserializeOwned>(
        &self,
        prefix: &KeyPrefix,
    ) -> Result<Vec<(Key, Versioned<T>)>, StoreError> {
        self.scan_values(prefix)
            .await?
            .into_iter()
            .map(|(key, v)| {
                let value = decode_json(&key, &v.value)?;
                Ok((
                    key,
                    Versioned {
                        value,
                        version: v.version,
                    },
                ))
            })
            .collect()
    }

    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: &Key,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        self.put(key, encode_json(key, value)?, ttl).await
    }

    pub async fn create_json<T: Serialize + ?Sized>(
        &self,
        key: &Key,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.create(key, encode_json(key, value)?, ttl).await
    }

    pub async fn cas_json<T: Serialize + ?Sized>(
        &self,
        key: &Key,
        expected: Option<u64>,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.compare_and_set(key, expected, encode_json(key, value)?, ttl)
            .await
    }
}

fn decode_json<T: DeserializeOwned>(key: &Key, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|_| StoreError::Corrupt(format!("undecodable {} record", key.kind())))
}

fn encode_json<T: Serialize + ?Sized>(key: &Key, value: &T) -> Result<Bytes, StoreError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|_| StoreError::Corrupt(format!("unencodable {} record", key.kind())))
}
