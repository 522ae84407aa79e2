//! Store latency as a metric: every operation of whichever backend is timed
//! into `gatehouse_store_seconds{op}`, without the backends knowing.

use super::{Key, KeyPrefix, Store, StoreError, Versioned};
use async_trait::async_trait;
use bytes::Bytes;
use metrics::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operations; `Op as usize` indexes [`OPS`] and the histograms.
#[derive(Clone, Copy)]
enum Op {
    Get,
    GetMany,
    Put,
    Create,
    CompareAndSet,
    Delete,
    Incr,
    SetAdd,
    SetRemove,
    SetMembers,
    ListPush,
    ListRange,
    Scan,
    Ping,
}

/// The `op` label of each [`Op`].
const OPS: [&str; 14] = [
    "get",
    "get_many",
    "put",
    "create",
    "compare_and_set",
    "delete",
    "incr",
    "set_add",
    "set_remove",
    "set_members",
    "list_push",
    "list_range",
    "scan",
    "ping",
];

pub struct Timed {
    inner: Arc<dyn Store>,
    /// One histogram per operation, registered once: looking a labelled
    /// histogram up on every operation (hashing and comparing its key) cost
    /// about 1 % of a proxied request's instructions.
    histograms: [Histogram; OPS.len()],
}

impl Timed {
    /// Registers the histograms with the recorder installed now (the gateway
    /// installs its recorder before it opens the store).
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            histograms: OPS.map(|op| metrics::histogram!("gatehouse_store_seconds", "op" => op)),
        }
    }

    async fn timed<T>(&self, op: Op, f: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.histograms[op as usize].record(started.elapsed().as_secs_f64());
        out
    }
}

#[async_trait]
impl Store for Timed {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        self.timed(Op::Get, self.inner.get(key)).await
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned>>, StoreError> {
        self.timed(Op::GetMany, self.inner.get_many(keys)).await
    }
    async fn put(&self, key: &Key, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        self.timed(Op::Put, self.inner.put(key, value, ttl)).await
    }
    async fn create(
        &self,
        key: &Key,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.timed(Op::Create, self.inner.create(key, value, ttl))
            .await
    }
    async fn compare_and_set(
        &self,
        key: &Key,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.timed(
            Op::CompareAndSet,
            self.inner.compare_and_set(key, expected, value, ttl),
        )
        .await
    }
    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        self.timed(Op::Delete, self.inner.delete(key)).await
    }
    async fn incr(&self, key: &Key, ttl: Option<Duration>) -> Result<i64, StoreError> {
        self.timed(Op::Incr, self.inner.incr(key, ttl)).await
    }
    async fn set_add(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        self.timed(Op::SetAdd, self.inner.set_add(key, member))
            .await
    }
    async fn set_remove(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        self.timed(Op::SetRemove, self.inner.set_remove(key, member))
            .await
    }
    async fn set_members(&self, key: &Key) -> Result<Vec<String>, StoreError> {
        self.timed(Op::SetMembers, self.inner.set_members(key))
            .await
    }
    async fn list_push_capped(
        &self,
        key: &Key,
        value: Bytes,
        cap: usize,
    ) -> Result<(), StoreError> {
        self.timed(Op::ListPush, self.inner.list_push_capped(key, value, cap))
            .await
    }
    async fn list_range(
        &self,
        key: &Key,
        start: usize,
        count: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.timed(Op::ListRange, self.inner.list_range(key, start, count))
            .await
    }
    async fn scan_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<Key>, StoreError> {
        self.timed(Op::Scan, self.inner.scan_prefix(prefix)).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(Op::Ping, self.inner.ping()).await
    }
    fn healthy(&self) -> bool {
        self.inner.healthy()
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
