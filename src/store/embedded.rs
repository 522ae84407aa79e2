//! The embedded backend: one redb file, one ACID write transaction per operation.
//!
//! redb commits with `Durability::Immediate` by default, so whatever an operation acknowledged
//! is on disk and survives `kill -9`. redb is blocking: every operation runs on tokio's blocking
//! pool so it never stalls the async workers.
//!
//! A record is `[kind u8][version u64 BE][expires_at unix-ms u64 BE, 0 = never][payload]`.
//! Sets and lists are stored whole in one record: they stay small (a user's sessions, the
//! incident index, a capped login list), and one record keeps every operation one transaction.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::task::JoinHandle;

use super::{Key, KeyPrefix, Store, StoreError, Versioned};

/// How often expired records are removed from the file. Reads already hide them; sweeping only
/// reclaims space.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct EmbeddedStore {
    db: Arc<Database>,
    sweeper: JoinHandle<()>,
}

/// The store opened last (a gateway opens one), for [`page_cache_bytes`].
#[cfg(feature = "heap-stats")]
static OPENED: std::sync::Mutex<Weak<Database>> = std::sync::Mutex::new(Weak::new());

/// Bytes in redb's page cache and write buffer (feature `heap-stats`, for bench/soak: the
/// cache lives in the heap, so the soak can tell it from what else the heap holds).
#[cfg(feature = "heap-stats")]
pub fn page_cache_bytes() -> usize {
    let db = OPENED.lock().unwrap_or_else(|p| p.into_inner()).upgrade();
    db.map_or(0, |db| db.cache_stats().used_bytes())
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, creating its directory if missing.
    pub async fn open(path: PathBuf) -> Result<EmbeddedStore, StoreError> {
        let db = tokio::task::spawn_blocking(move || open_db(&path))
            .await
            .map_err(|_| StoreError::Unavailable("embedded store open task failed".to_owned()))??;
        let db = Arc::new(db);
        #[cfg(feature = "heap-stats")]
        {
            *OPENED.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(&db);
        }
        let sweeper = tokio::spawn(sweep_periodically(Arc::downgrade(&db)));
        Ok(EmbeddedStore { db, sweeper })
    }

    /// Removes expired records now; returns how many. The background task calls this.
    pub async fn sweep_expired(&self) -> Result<usize, StoreError> {
        let db = self.db.clone();
        blocking(move || sweep(&db)).await
    }

    /// Runs `op` in one write transaction, committed if it wrote and
    /// aborted if not: a durable commit writes and syncs the file's header
    /// even when nothing changed, and the losers of a compare-and-set race
    /// (every request of a page load refreshing the same session at once)
    /// would each pay that sync, one after another behind redb's writer lock.
    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTable<'_>, u64) -> Result<Wrote<T>, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        blocking(move || {
            let mut txn = db.begin_write().map_err(unavailable)?;
            // redb's default, stated because acknowledging means "survives kill -9".
            txn.set_durability(Durability::Immediate)
                .map_err(unavailable)?;
            let wrote = {
                let mut table = txn.open_table(RECORDS).map_err(unavailable)?;
                op(&mut table, now_ms())?
            };
            match wrote {
                Wrote::Yes(result) => {
                    txn.commit().map_err(unavailable)?;
                    Ok(result)
                }
                Wrote::No(result) => {
                    txn.abort().map_err(unavailable)?;
                    Ok(result)
                }
            }
        })
        .await
    }

    async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTable, u64) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(RECORDS).map_err(unavailable)?;
            op(&table, now_ms())
        })
        .await
    }

    /// A point read on the calling task. redb readers never wait for a
    /// writer (each sees a snapshot) and a lookup of a few keys is
    /// microseconds from redb's cache, far less than handing it to the
    /// blocking pool and back, which the request path does on every request.
    fn read_now<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadTable, u64) -> Result<T, StoreError>,
    {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(RECORDS).map_err(unavailable)?;
        op(&table, now_ms())
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        self.read_now(|t, now| live_value(load(t, key, now)?, key))
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned>>, StoreError> {
        self.read_now(|t, now| {
            keys.iter()
                .map(|k| live_value(load(t, k, now)?, k))
                .collect()
        })
    }

    async fn put(&self, key: &Key, value: Bytes, ttl: Option<Duration>) -> Result<u64, StoreError> {
        let k = key.clone();
        self.write(move |t, now| {
            // Versions go on from an expired record too: fewer chances for a stale CAS to match.
            let version = stored(t, &k)?.map_or(0, |r| r.version) + 1;
            let rec = Record::value(version, expiry(now, ttl), value.to_vec());
            store(t, &k, &rec)?;
            Ok(Wrote::Yes(version))
        })
        .await
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
        let k = key.clone();
        self.write(move |t, now| {
            let old = stored(t, &k)?;
            let live = old.as_ref().filter(|r| r.is_live(now));
            if live.map(|r| r.version) != expected {
                return Ok(Wrote::No(false));
            }
            if let Some(r) = live {
                r.expect_kind(Kind::Value, &k)?;
            }
            let version = old.map_or(0, |r| r.version) + 1;
            store(
                t,
                &k,
                &Record::value(version, expiry(now, ttl), value.to_vec()),
            )?;
            Ok(Wrote::Yes(true))
        })
        .await
    }

    async fn delete(&self, key: &Key) -> Result<bool, StoreError> {
        let k = key.encode();
        let kind_key = key.clone();
        self.write(move |t, now| {
            let removed = t.remove(k.as_str()).map_err(unavailable)?;
            match removed {
                None => Ok(Wrote::No(false)),
                Some(guard) => Ok(Wrote::Yes(
                    Record::decode(guard.value(), &kind_key)?.is_live(now),
                )),
            }
        })
        .await
    }

    async fn incr(&self, key: &Key, ttl: Option<Duration>) -> Result<i64, StoreError> {
        let k = key.clone();
        self.write(move |t, now| {
            let old = stored(t, &k)?;
            let (count, version, expires_at) = match old {
                Some(r) if r.is_live(now) => {
                    r.expect_kind(Kind::Value, &k)?;
                    let n = std::str::from_utf8(&r.payload)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| corrupt(&k, "counter is not a number"))?;
                    let n = n
                        .checked_add(1)
                        .ok_or_else(|| corrupt(&k, "counter overflow"))?;
                    (n, r.version + 1, r.expires_at)
                }
                old => (1, old.map_or(0, |r| r.version) + 1, expiry(now, ttl)),
            };
            let rec = Record::value(version, expires_at, count.to_string().into_bytes());
            store(t, &k, &rec)?;
            Ok(Wrote::Yes(count))
        })
        .await
    }

    async fn set_add(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        let (k, member) = (key.clone(), member.to_owned());
        self.update_set(k, move |set| set.insert(member)).await
    }

    async fn set_remove(&self, key: &Key, member: &str) -> Result<bool, StoreError> {
        let (k, member) = (key.clone(), member.to_owned());
        self.update_set(k, move |set| set.remove(&member)).await
    }

    async fn set_members(&self, key: &Key) -> Result<Vec<String>, StoreError> {
        let k = key.clone();
        self.read(move |t, now| match load(t, &k, now)? {
            None => Ok(Vec::new()),
            Some(r) => {
                r.expect_kind(Kind::Set, &k)?;
                Ok(decode_set(&r.payload, &k)?.into_iter().collect())
            }
        })
        .await
    }

    async fn list_push_capped(
        &self,
        key: &Key,
        value: Bytes,
        cap: usize,
    ) -> Result<(), StoreError> {
        let k = key.clone();
        self.write(move |t, now| {
            let old = stored(t, &k)?;
            let (mut items, version) = match old {
                Some(r) if r.is_live(now) => {
                    r.expect_kind(Kind::List, &k)?;
                    (decode_items(&r.payload, &k)?, r.version + 1)
                }
                old => (Vec::new(), old.map_or(0, |r| r.version) + 1),
            };
            items.insert(0, value.to_vec());
            items.truncate(cap.max(1));
            let rec = Record::new(Kind::List, version, 0, encode_items(items.iter()));
            store(t, &k, &rec)?;
            Ok(Wrote::Yes(()))
        })
        .await
    }

    async fn list_range(
        &self,
        key: &Key,
        start: usize,
        count: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let k = key.clone();
        self.read(move |t, now| match load(t, &k, now)? {
            None => Ok(Vec::new()),
            Some(r) => {
                r.expect_kind(Kind::List, &k)?;
                let items = decode_items(&r.payload, &k)?;
                Ok(items
                    .into_iter()
                    .skip(start)
                    .take(count)
                    .map(Bytes::from)
                    .collect())
            }
        })
        .await
    }

    async fn scan_prefix(&self, prefix: &KeyPrefix) -> Result<Vec<Key>, StoreError> {
        let prefix = prefix.encode();
        self.read(move |t, now| {
            let mut keys = Vec::new();
            for entry in t.range(prefix.as_str()..).map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                let name = k.value();
                if !name.starts_with(prefix.as_str()) {
                    break;
                }
                let Some(key) = Key::decode(name) else {
                    continue;
                };
                if Record::decode(v.value(), &key)?.is_live(now) {
                    keys.push(key);
                }
            }
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|_, _| Ok(())).await
    }

    fn healthy(&self) -> bool {
        true
    }
}

impl EmbeddedStore {
    async fn update_set<F>(&self, k: Key, change: F) -> Result<bool, StoreError>
    where
        F: FnOnce(&mut BTreeSet<String>) -> bool + Send + 'static,
    {
        self.write(move |t, now| {
            let old = stored(t, &k)?;
            let (mut set, version) = match old {
                Some(r) if r.is_live(now) => {
                    r.expect_kind(Kind::Set, &k)?;
                    (decode_set(&r.payload, &k)?, r.version + 1)
                }
                old => (BTreeSet::new(), old.map_or(0, |r| r.version) + 1),
            };
            let changed = change(&mut set);
            if !changed {
                return Ok(Wrote::No(false));
            }
            if set.is_empty() {
                // Like Redis: an empty set does not exist.
                t.remove(k.encode().as_str()).map_err(unavailable)?;
            } else {
                store(
                    t,
                    &k,
                    &Record::new(Kind::Set, version, 0, encode_items(set.iter())),
                )?;
            }
            Ok(Wrote::Yes(true))
        })
        .await
    }
}

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

type WriteTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type ReadTable = redb::ReadOnlyTable<&'static str, &'static [u8]>;

/// An operation's result, and whether it changed the table.
enum Wrote<T> {
    Yes(T),
    No(T),
}

/// redb's own page cache. Its default (1 GiB) lets the gateway's memory
/// follow the file's size; every proxied request is served from the
/// session cache in front (`store::cache`), so redb is read on sign-in and
/// by the admin pages only, and the kernel's page cache still holds the file.
const PAGE_CACHE_BYTES: usize = 16 * 1024 * 1024;

fn open_db(path: &Path) -> Result<Database, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Config(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    let db = Database::builder()
        .set_cache_size(PAGE_CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(path.display().to_string()),
            e => StoreError::Unavailable(format!("cannot open {}: {e}", path.display())),
        })?;
    // Create the table up front so read transactions never meet a missing table.
    let txn = db.begin_write().map_err(unavailable)?;
    txn.open_table(RECORDS).map_err(unavailable)?;
    txn.commit().map_err(unavailable)?;
    Ok(db)
}

async fn sweep_periodically(db: Weak<Database>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(db) = db.upgrade() else { return };
        match blocking(move || sweep(&db)).await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "store: swept expired records"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "store: sweeping expired records failed"),
        }
    }
}

fn sweep(db: &Database) -> Result<usize, StoreError> {
    let now = now_ms();
    let txn = db.begin_write().map_err(unavailable)?;
    let mut removed = 0;
    {
        let mut table = txn.open_table(RECORDS).map_err(unavailable)?;
        table
            .retain(|_, v| {
                let expires_at = header(v).map_or(0, |(_, _, e)| e);
                let keep = expires_at == 0 || expires_at > now;
                removed += usize::from(!keep);
                keep
            })
            .map_err(unavailable)?;
    }
    // Nothing expired: no commit, so no header write and sync each minute.
    if removed == 0 {
        txn.abort().map_err(unavailable)?;
    } else {
        txn.commit().map_err(unavailable)?;
    }
    Ok(removed)
}

async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| StoreError::Unavailable("embedded store task failed".to_owned()))?
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Value = 1,
    Set = 2,
    List = 3,
}

struct Record {
    kind: Kind,
    version: u64,
    expires_at: u64,
    payload: Vec<u8>,
}

const HEADER: usize = 1 + 8 + 8;

impl Record {
    fn new(kind: Kind, version: u64, expires_at: u64, payload: Vec<u8>) -> Record {
        Record {
            kind,
            version,
            expires_at,
            payload,
        }
    }

    fn value(version: u64, expires_at: u64, payload: Vec<u8>) -> Record {
        Record::new(Kind::Value, version, expires_at, payload)
    }

    fn is_live(&self, now: u64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }

    fn expect_kind(&self, kind: Kind, key: &Key) -> Result<(), StoreError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(corrupt(key, "record of another kind"))
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    fn decode(bytes: &[u8], key: &Key) -> Result<Record, StoreError> {
        let (kind, version, expires_at) =
            header(bytes).ok_or_else(|| corrupt(key, "bad record header"))?;
        let kind = match kind {
            1 => Kind::Value,
            2 => Kind::Set,
            3 => Kind::List,
            _ => return Err(corrupt(key, "unknown record kind")),
        };
        Ok(Record::new(
            kind,
            version,
            expires_at,
            bytes[HEADER..].to_vec(),
        ))
    }
}

fn header(bytes: &[u8]) -> Option<(u8, u64, u64)> {
    let kind = *bytes.first()?;
    let version = u64::from_be_bytes(bytes.get(1..9)?.try_into().ok()?);
    let expires_at = u64::from_be_bytes(bytes.get(9..HEADER)?.try_into().ok()?);
    Some((kind, version, expires_at))
}

/// The stored record, expired or not (writers continue its version).
fn stored(t: &WriteTable<'_>, key: &Key) -> Result<Option<Record>, StoreError> {
    match t.get(key.encode().as_str()).map_err(unavailable)? {
        None => Ok(None),
        Some(guard) => Record::decode(guard.value(), key).map(Some),
    }
}

/// The live record for readers: expired records are invisible.
fn load(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &Key,
    now: u64,
) -> Result<Option<Record>, StoreError> {
    match t.get(key.encode().as_str()).map_err(unavailable)? {
        None => Ok(None),
        Some(guard) => {
            let rec = Record::decode(guard.value(), key)?;
            Ok(rec.is_live(now).then_some(rec))
        }
    }
}

fn live_value(rec: Option<Record>, key: &Key) -> Result<Option<Versioned>, StoreError> {
    match rec {
        None => Ok(None),
        Some(r) => {
            r.expect_kind(Kind::Value, key)?;
            Ok(Some(Versioned {
                value: Bytes::from(r.payload),
                version: r.version,
            }))
        }
    }
}

fn store(t: &mut WriteTable<'_>, key: &Key, rec: &Record) -> Result<(), StoreError> {
    t.insert(key.encode().as_str(), rec.encode().as_slice())
        .map_err(unavailable)?;
    Ok(())
}

/// Items as `[len u32 BE][bytes]…`.
fn encode_items<'a, T: AsRef<[u8]> + 'a>(items: impl Iterator<Item = &'a T>) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let item = item.as_ref();
        out.extend_from_slice(&(item.len() as u32).to_be_bytes());
        out.extend_from_slice(item);
    }
    out
}

fn decode_items(mut bytes: &[u8], key: &Key) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut items = Vec::new();
    while !bytes.is_empty() {
        let len = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| corrupt(key, "truncated item"))? as usize;
        let item = bytes
            .get(4..4 + len)
            .ok_or_else(|| corrupt(key, "truncated item"))?;
        items.push(item.to_vec());
        bytes = &bytes[4 + len..];
    }
    Ok(items)
}

fn decode_set(bytes: &[u8], key: &Key) -> Result<BTreeSet<String>, StoreError> {
    decode_items(bytes, key)?
        .into_iter()
        .map(|m| String::from_utf8(m).map_err(|_| corrupt(key, "set member is not UTF-8")))
        .collect()
}

fn expiry(now: u64, ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |ttl| {
        now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .max(1)
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn corrupt(key: &Key, what: &str) -> StoreError {
    StoreError::Corrupt(format!("{} record: {what}", key.kind()))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}
