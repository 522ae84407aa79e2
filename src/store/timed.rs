//! Store latency as a metric: every operation of whichever backend is timed
//! into `gatehouse_store_seconds{op}`, without the backends knowing.

use super::{Key, KeyPrefix, Store, StoreError, Versioned};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Timed(pub Arc<dyn Store>);

async fn timed<T>(op: &'static str, f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    metrics::histogram!("gatehouse_store_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    out
}

#[async_trait]
impl Store for Timed {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        timed("get", self.0.get(key)).await
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned>>, StoreError> {
        timed("get_many", self.0.get_many(keys)).await
    }
    async fn put(&self, key: &Key, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        timed("put", self.0.put(key, value, ttl)).await
    }
    async fn create(
        &self,
        key: &Key,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        timed("create", self.0.create(key, value, ttl)).await
    }
    async fn compare_and_set(
        &self,
        key: &Key,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        timed(
            "compare_and_set",
            self.0.compare_and_set(key, expected, value, ttl),
        )
        .await
    }
    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        timed("delete", self.0.delete(key)).await
    }
    async fn incr(&self, key: &Key, ttl: Option<Duration>) -> Result<i64, StoreError> {
        timed("incr", self.0.incr(key, ttl)).await
    }
    async fn set_add(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        timed("set_add", self.0.set_add(key, member)).await
    }
    async fn set_remove(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        timed("set_remove", self.0.set_remove(key, member)).await
    }
    async fn set_members(&self, key: &Key) -> Result<Vec<String>, StoreError> {
        timed("set_members", self.0.set_members(key)).await
    }
    async fn list_push_capped(
        &self,
        key: &Key,
        value: Bytes,
        cap: usize,
    ) -> Result<(), StoreError> {
        timed("list_push", self.0.list_push_capped(key, value, cap)).await
    }
    async fn list_range(
        &self,
        key: &Key,
        start: usize,
        count: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        timed("list_range", self.0.list_range(key, start, count)).await
    }
    async fn scan_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<Key>, StoreError> {
        timed("scan", self.0.scan_prefix(prefix)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.0.ping()).await
    }
    fn healthy(&self) -> bool {
        self.0.healthy()
    }
}
