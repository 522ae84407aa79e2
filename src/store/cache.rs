//! The session cache: session records and the log-out-all epoch kept in memory between
//! requests, so a proxied request needs no store round trip.
//!
//! A cached copy is never served after the write that made it stale has been acknowledged,
//! on any gateway. Three rules make that hold:
//! - every write through this process evicts the key once the write has returned (or failed:
//!   a timed-out write may still have happened);
//! - with Redis, every write of a cached kind is announced to every gateway, and the writer
//!   returns only when each gateway that may hold a copy has dropped it, or can no longer use
//!   its cache because its lease lapsed (`changes.rs`). The embedded store has no other
//!   process: redb locks the file;
//! - a read-through inserts only if no eviction happened while it was in flight (the
//!   generation), so a value read before a write is never cached after that write's eviction.
//!
//! Entries also age out after [`ENTRY_MAX_AGE`]: the bound on staleness should a write reach
//! Redis but its announcement fail (the writer then reports the error), and on how long a
//! copy outlives its record's TTL (expiries are not announced). A session record's TTL only
//! mirrors the lifetime `SessionRules::judge` enforces by the clock on every lookup, so such a
//! copy is always judged ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Key, KeyPrefix, Store, StoreError, Versioned};

/// How long a copy is served without a read of the store, at most.
pub const ENTRY_MAX_AGE: Duration = Duration::from_secs(5);

/// Entries kept at most; past it new copies are not kept (the store is read instead), so a
/// flood of made-up session cookies cannot grow memory.
const MAX_ENTRIES: usize = 65_536;

/// `lease_until_ms` value for a cache whose lease never lapses (the embedded store).
const FOREVER: u64 = u64::MAX;

/// The copies, and whether they may be used now.
pub struct Cache {
    inner: Mutex<Inner>,
    /// Milliseconds after `base` until which copies may be served; 0 = not now.
    lease_until_ms: AtomicU64,
    base: Instant,
}

struct Inner {
    entries: foldhash::HashMap<Key, Entry>,
    /// Grows with every eviction; a read-through that saw another value inserts nothing.
    generation: u64,
    /// When copies past their age were last dropped.
    swept: Instant,
}

struct Entry {
    value: Option<Versioned>,
    stored: Instant,
}

impl Cache {
    /// A cache that is always usable: one process owns the store.
    pub fn local() -> Arc<Cache> {
        Arc::new(Cache::new(FOREVER))
    }

    /// A cache usable only while a lease renewed by `changes.rs` holds.
    pub fn leased() -> Arc<Cache> {
        Arc::new(Cache::new(0))
    }

    fn new(lease_until_ms: u64) -> Cache {
        Cache {
            inner: Mutex::new(Inner {
                entries: foldhash::HashMap::default(),
                generation: 0,
                swept: Instant::now(),
            }),
            lease_until_ms: AtomicU64::new(lease_until_ms),
            base: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters: every operation on it is a single insert/remove/clear.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether copies may be served now.
    pub fn usable(&self) -> bool {
        let until = self.lease_until_ms.load(Ordering::Acquire);
        until == FOREVER || self.millis(Instant::now()) < until
    }

    /// Copies may be served until `until` (a lease just renewed).
    pub fn lease_until(&self, until: Instant) {
        let was_usable = self.usable();
        // Never 0 (= not usable) and never FOREVER by accident.
        let ms = self.millis(until).clamp(1, FOREVER - 1);
        self.lease_until_ms.store(ms, Ordering::Release);
        if !was_usable {
            // While unusable, writes by others may have gone unheard: a read that started
            // then must not be kept, nor any copy from before.
            self.clear();
        }
    }

    /// Copies may not be served until a new lease; the ones held are dropped.
    pub fn lose_lease(&self) {
        self.lease_until_ms.store(0, Ordering::Release);
        self.clear();
    }

    /// Drops the copy of `key` (it was written here or by another gateway).
    pub fn evict(&self, key: &Key) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.remove(key);
    }

    /// Drops every copy.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_millis()).unwrap_or(FOREVER - 1)
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Copies of all `keys`, or the generation to insert what the store returns under.
    fn get_all(&self, keys: &[Key]) -> Result<Vec<Option<Versioned>>, u64> {
        let now = Instant::now();
        let inner = self.lock();
        if !self.usable() {
            return Err(inner.generation);
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match inner.entries.get(key) {
                Some(e) if now.duration_since(e.stored) < ENTRY_MAX_AGE => {
                    out.push(e.value.clone())
                }
                _ => return Err(inner.generation),
            }
        }
        Ok(out)
    }

    /// Keeps copies read at `generation`, unless something was evicted since.
    fn insert(&self, generation: u64, pairs: impl Iterator<Item = (Key, Option<Versioned>)>) {
        self.insert_at(Instant::now(), generation, pairs)
    }

    fn insert_at(
        &self,
        now: Instant,
        generation: u64,
        pairs: impl Iterator<Item = (Key, Option<Versioned>)>,
    ) {
        let mut inner = self.lock();
        if inner.generation != generation || !self.usable() {
            return;
        }
        // Copies past their age are dropped here, once per age: most are
        // never asked for again (a browser closed, a signed-out cookie
        // refused once), and left until the map filled they grew a
        // 30-minute soak by megabytes. So the map holds what was read in
        // the last two ages, and the sweep costs O(1) per insert amortised.
        if now.saturating_duration_since(inner.swept) >= ENTRY_MAX_AGE {
            inner
                .entries
                .retain(|_, e| now.saturating_duration_since(e.stored) < ENTRY_MAX_AGE);
            inner.swept = now;
        }
        for (key, value) in pairs {
            // Absent sessions are not kept: made-up cookies would fill the cache. The
            // log-out-all epoch is absent until first used and read on every request.
            if value.is_none() && matches!(key, Key::Session(_)) {
                continue;
            }
            if inner.entries.len() >= MAX_ENTRIES && !inner.entries.contains_key(&key) {
                inner
                    .entries
                    .retain(|_, e| now.saturating_duration_since(e.stored) < ENTRY_MAX_AGE);
                if inner.entries.len() >= MAX_ENTRIES {
                    return;
                }
            }
            inner.entries.insert(key, Entry { value, stored: now });
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Whether copies of `key` are kept: the records every proxied request reads.
pub fn cached_kind(key: &Key) -> bool {
    matches!(key, Key::Session(_) | Key::EpochGlobal)
}

/// A store that serves session records and the epoch from a [`Cache`] while it is usable.
pub struct Cached {
    inner: Arc<dyn Store>,
    cache: Arc<Cache>,
}

impl Cached {
    pub fn new(inner: Arc<dyn Store>, cache: Arc<Cache>) -> Cached {
        Cached { inner, cache }
    }

    /// Evicts after a write of a cached kind, whatever its outcome.
    fn written<T>(&self, key: &Key, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if cached_kind(key) {
            self.cache.evict(key);
        }
        result
    }
}

#[async_trait]
impl Store for Cached {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        if !cached_kind(key) {
            return self.inner.get(key).await;
        }
        let mut got = self.get_many(std::slice::from_ref(key)).await?;
        Ok(got.pop().flatten())
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned>>, StoreError> {
        if !keys.iter().all(cached_kind) {
            return self.inner.get_many(keys).await;
        }
        let generation = match self.cache.get_all(keys) {
            // While the store fails (down, slow, refusing writes) nothing is served from
            // memory either: a session that could not be ended now is not served.
            Ok(hit) if self.inner.healthy() => return Ok(hit),
            Ok(_) => self.cache.generation(),
            Err(generation) => generation,
        };
        let got = self.inner.get_many(keys).await?;
        self.cache
            .insert(generation, keys.iter().cloned().zip(got.iter().cloned()));
        Ok(got)
    }

    async fn put(&self, key: &Key, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        let r = self.inner.put(key, value, ttl).await;
        self.written(key, r)
    }

    async fn create(
        &self,
        key: &Key,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let r = self.inner.create(key, value, ttl).await;
        self.written(key, r)
    }

    async fn compare_and_set(
        &self,
        key: &Key,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let r = self.inner.compare_and_set(key, expected, value, ttl).await;
        self.written(key, r)
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let r = self.inner.delete(key).await;
        self.written(key, r)
    }

    async fn incr(&self, key: &Key, ttl: Option<Duration>) -> Result<i64, StoreError> {
        let r = self.inner.incr(key, ttl).await;
        self.written(key, r)
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

    async fn scan_values(&self, prefix: &KeyPrefix) -> Result<Vec<(Key, Versioned)>, StoreError> {
        self.inner.scan_values(prefix).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn healthy(&self) -> bool {
        self.inner.healthy()
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> Option<Versioned> {
        Some(Versioned {
            value: Bytes::from(n.to_string()),
            version: n,
        })
    }

    fn session(d: &str) -> Key {
        Key::Session(d.to_owned())
    }

    #[test]
    fn copies_nobody_asks_for_again_are_dropped_once_past_their_age() {
        let cache = Cache::local();
        let t0 = Instant::now();
        for n in 0..100 {
            let key = session(&format!("old{n}"));
            cache.insert_at(t0, 0, [(key, v(1))].into_iter());
        }
        assert_eq!(cache.len(), 100);
        // Within the age nothing is swept; past it one insert drops them all.
        cache.insert_at(
            t0 + ENTRY_MAX_AGE / 2,
            0,
            [(session("new1"), v(1))].into_iter(),
        );
        assert_eq!(cache.len(), 101);
        let later = t0 + ENTRY_MAX_AGE + Duration::from_millis(1);
        cache.insert_at(later, 0, [(session("new2"), v(1))].into_iter());
        assert_eq!(
            cache.len(),
            2,
            "only the copies younger than the age remain"
        );
    }

    #[test]
    fn a_read_that_raced_an_eviction_is_not_kept() {
        let cache = Cache::local();
        let Err(generation) = cache.get_all(&[session("a")]) else {
            panic!("empty cache hit")
        };
        cache.evict(&session("b"));
        cache.insert(generation, [(session("a"), v(1))].into_iter());
        assert!(cache.get_all(&[session("a")]).is_err());
        let Err(generation) = cache.get_all(&[session("a")]) else {
            panic!("hit")
        };
        cache.insert(generation, [(session("a"), v(2))].into_iter());
        assert_eq!(cache.get_all(&[session("a")]), Ok(vec![v(2)]));
    }

    #[test]
    fn hits_need_every_key_and_absent_sessions_are_not_kept() {
        let cache = Cache::local();
        let keys = [session("a"), Key::EpochGlobal];
        cache.insert(
            0,
            [(session("a"), None), (Key::EpochGlobal, None)].into_iter(),
        );
        assert!(
            cache.get_all(&keys).is_err(),
            "an absent session must be read"
        );
        assert_eq!(cache.get_all(&[Key::EpochGlobal]), Ok(vec![None]));
        cache.insert(0, [(session("a"), v(3))].into_iter());
        assert_eq!(cache.get_all(&keys), Ok(vec![v(3), None]));
        cache.evict(&Key::EpochGlobal);
        assert!(cache.get_all(&keys).is_err());
    }

    #[test]
    fn a_leased_cache_serves_nothing_without_a_lease_and_drops_all_when_it_is_lost() {
        let cache = Cache::leased();
        cache.insert(0, [(session("a"), v(1))].into_iter());
        assert_eq!(cache.len(), 0, "kept a copy without a lease");
        cache.lease_until(Instant::now() + Duration::from_secs(60));
        let Err(generation) = cache.get_all(&[session("a")]) else {
            panic!("hit")
        };
        cache.insert(generation, [(session("a"), v(1))].into_iter());
        assert_eq!(cache.get_all(&[session("a")]), Ok(vec![v(1)]));
        std::thread::sleep(Duration::from_millis(5));
        cache.lease_until(Instant::now());
        assert!(cache.get_all(&[session("a")]).is_err(), "lapsed lease");
        let Err(before) = cache.get_all(&[session("a")]) else {
            panic!("hit")
        };
        cache.lease_until(Instant::now() + Duration::from_secs(60));
        cache.insert(before, [(session("a"), v(1))].into_iter());
        assert_eq!(
            cache.len(),
            0,
            "kept a read that began while the lease had lapsed"
        );
        cache.lease_until(Instant::now() + Duration::from_secs(60));
        cache.lose_lease();
        assert_eq!(cache.len(), 0);
        assert!(!cache.usable());
    }

    #[test]
    fn the_cache_stops_growing_at_its_cap() {
        let cache = Cache::local();
        let many = (0..MAX_ENTRIES + 10).map(|i| (session(&i.to_string()), v(1)));
        cache.insert(0, many);
        assert_eq!(cache.len(), MAX_ENTRIES);
    }

    #[tokio::test]
    async fn writes_through_the_cached_store_evict_and_reads_refill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded = super::super::EmbeddedStore::open(dir.path().join("c.redb"))
            .await
            .expect("open");
        let store = Cached::new(Arc::new(embedded), Cache::local());
        let key = session("s");
        assert_eq!(store.get(&key).await, Ok(None));
        assert!(store
            .create(&key, Bytes::from("1"), None)
            .await
            .expect("create"));
        let first = store.get(&key).await.expect("get").expect("present");
        assert_eq!(first.version, 1);
        assert!(store
            .compare_and_set(&key, Some(1), Bytes::from("2"), None)
            .await
            .expect("cas"));
        let second = store.get(&key).await.expect("get").expect("present");
        assert_eq!((second.version, second.value), (2, Bytes::from("2")));
        store.delete(&key).await.expect("delete");
        assert_eq!(store.get(&key).await, Ok(None));
    }

    #[tokio::test]
    async fn walking_every_session_reads_them_all_in_batches_and_caches_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded = super::super::EmbeddedStore::open(dir.path().join("w.redb"))
            .await
            .expect("open");
        let cache = Cache::local();
        let store = Cached::new(Arc::new(embedded), cache.clone());
        // More than one batch, so the batching is walked across its edge.
        let n = super::super::SCAN_BATCH + 3;
        for i in 0..n {
            let value = Bytes::from(i.to_string());
            let key = session(&format!("{i:04}"));
            assert!(store.create(&key, value, None).await.expect("create"));
        }
        let walked: std::collections::HashMap<Key, Bytes> = store
            .scan_values(&KeyPrefix::Sessions)
            .await
            .expect("walk")
            .into_iter()
            .map(|(key, v)| (key, v.value))
            .collect();
        assert_eq!(walked.len(), n);
        for i in 0..n {
            let key = session(&format!("{i:04}"));
            assert_eq!(walked.get(&key), Some(&Bytes::from(i.to_string())));
        }
        assert_eq!(cache.len(), 0, "a walk left copies in the session cache");
        // The request path still caches what it reads.
        store.get(&session("0001")).await.expect("get");
        assert_eq!(cache.len(), 1);
    }
}
