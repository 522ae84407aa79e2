//! Sessions: who is signed in, since when, with which dashboard cookies.
//! `rules` decides (pure), `Sessions` keeps records in the store.

pub mod codec;
pub mod cookie;
pub mod record;
pub mod rules;
pub mod vault;

pub use cookie::SessionId;
pub use record::{EndReason, SecondFactor, SessionRecord, SessionState};
pub use rules::{SessionRules, Verdict};

use crate::client_ip::ClientIp;
use crate::store::{Key, KeyPrefix, Store, StoreError, Versioned};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use vault::Vault;

/// A session read from the store, with the version it was read at.
#[derive(Debug, Clone)]
pub struct Session {
    /// Hex SHA-256 of the id: the store key, and (shortened) its public reference.
    pub digest: String,
    /// Shared with the lookup's memo of decoded records: `record_mut` copies
    /// it before the first change.
    pub record: Arc<SessionRecord>,
    pub version: u64,
}

impl Session {
    pub fn record_mut(&mut self) -> &mut SessionRecord {
        Arc::make_mut(&mut self.record)
    }
}

/// The outcome of looking up the browser's session cookie.
#[derive(Debug)]
pub enum Lookup {
    None,
    Live(Box<Session>),
    Ended(EndReason),
}

/// Session records in the store, and the rules that end them.
pub struct Sessions {
    store: Arc<dyn Store>,
    pub rules: SessionRules,
    /// The last record decoded for each session, with the bytes it was
    /// decoded from: every signed-in request reads its record, which changes
    /// seldom, and decoding it was a tenth of gatehouse's own work per
    /// request. A record is reused only for bytes equal to those it came
    /// from, so it is exactly what decoding them again would give.
    decoded: Mutex<Memo>,
    /// Sessions whose `last_seen` this gateway is writing now. A page's
    /// parallel requests all find their session due for a refresh at the
    /// same moment; one write does for all of them, and the rest would
    /// only lose the compare-and-set, each after its own store write.
    touching: Mutex<HashSet<String>>,
}

/// A claim on refreshing one session's `last_seen`, given up when dropped:
/// also when the request is cancelled mid-write, so no session is left
/// unrefreshed until it idles out.
struct TouchClaim<'a> {
    touching: &'a Mutex<HashSet<String>>,
    digest: String,
}

impl Drop for TouchClaim<'_> {
    fn drop(&mut self) {
        self.touching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.digest);
    }
}

/// Decoded records kept at most; past it the memo starts again empty. Only
/// records found in the store get in, so made-up cookies cannot fill it.
const MAX_DECODED: usize = 16_384;

/// A decoded record not used for this long is dropped. Most sessions are
/// never signed out but abandoned (a browser closed), and each kept its
/// record, vault included, until the memo filled: megabytes over a soak.
const MEMO_IDLE_MS: u64 = 60_000;

#[derive(Default)]
struct Memo {
    /// digest → (the bytes it was decoded from, the record, last used, ms).
    records: HashMap<String, (Bytes, Arc<SessionRecord>, u64)>,
    /// When records idle past [`MEMO_IDLE_MS`] were last dropped.
    swept_ms: u64,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, rules: SessionRules) -> Self {
        Self {
            store,
            rules,
            decoded: Mutex::new(Memo::default()),
            touching: Mutex::new(HashSet::new()),
        }
    }

    /// The claim to refresh `digest`'s `last_seen`, unless another request
    /// here holds it.
    fn claim_touch(&self, digest: &str) -> Option<TouchClaim<'_>> {
        let mut touching = self.touching.lock().unwrap_or_else(|p| p.into_inner());
        touching.insert(digest.to_owned()).then(|| TouchClaim {
            touching: &self.touching,
            digest: digest.to_owned(),
        })
    }

    /// The record stored as `bytes` under `digest`, decoded once.
    fn decode_shared(
        &self,
        digest: &str,
        bytes: &Bytes,
        now_ms: u64,
    ) -> Result<Arc<SessionRecord>, StoreError> {
        let lock = || self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, record, used_ms)) = lock().records.get_mut(digest) {
            if seen == bytes {
                *used_ms = now_ms;
                return Ok(record.clone());
            }
        }
        let record = Arc::new(decode(bytes)?);
        let mut memo = lock();
        // Only active sessions are read on every request. An ended one's
        // tombstone would otherwise stay here for every session signed out
        // (a soak grew by about 1.5 KB per sign-in).
        if record.state != SessionState::Active {
            memo.records.remove(digest);
            return Ok(record);
        }
        // Once per idle period, amortised over the inserts of it.
        if now_ms.saturating_sub(memo.swept_ms) >= MEMO_IDLE_MS {
            memo.records
                .retain(|_, (_, _, used_ms)| now_ms.saturating_sub(*used_ms) < MEMO_IDLE_MS);
            memo.swept_ms = now_ms;
        }
        if memo.records.len() >= MAX_DECODED && !memo.records.contains_key(digest) {
            memo.records.clear();
        }
        memo.records
            .insert(digest.to_string(), (bytes.clone(), record.clone(), now_ms));
        Ok(record)
    }

    /// Drops the decoded record of a session that ended or is gone, so its
    /// vault does not stay in memory until the memo fills.
    fn forget(&self, digest: &str) {
        self.decoded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .remove(digest);
    }

    /// One store round trip: the record and the log-out-all epoch together.
    /// A live session whose idle clock needs refreshing is refreshed here.
    pub async fn lookup(&self, id: &SessionId, now_ms: u64) -> Result<Lookup, StoreError> {
        let digest = id.digest();
        let keys = [Key::Session(digest.clone()), Key::EpochGlobal];
        let mut got = self.store.get_many(&keys).await?.into_iter();
        let (Some(rec), epoch) = (got.next().flatten(), got.next().flatten()) else {
            self.forget(&digest);
            return Ok(Lookup::None);
        };
        let record = self.decode_shared(&digest, &rec.value, now_ms)?;
        let epoch_ms = epoch
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.trim().parse().ok())
            .unwrap_or(0);
        let mut session = Session {
            digest,
            record,
            version: rec.version,
        };
        match self.rules.judge(&session.record, epoch_ms, now_ms) {
            Verdict::Valid { touch } => {
                if touch {
                    if let Some(_claim) = self.claim_touch(&session.digest) {
                        session.record_mut().last_seen_ms = now_ms;
                        self.save(&mut session, now_ms).await?;
                    }
                }
                Ok(Lookup::Live(Box::new(session)))
            }
            Verdict::Ended(reason) => {
                if !matches!(session.record.state, SessionState::Ended(_)) {
                    // Boxed: rare, and its future would size every lookup's.
                    Box::pin(self.end(&session.digest, session.record.user.as_deref(), reason))
                        .await?;
                }
                Ok(Lookup::Ended(reason))
            }
        }
    }

    /// Whether `client` may start one more pre-sign-in session now, and
    /// counts it. Such a session is stored for 15 minutes before anyone has
    /// signed in, so without caps a client could fill the store: one per
    /// address, and one for everyone against floods from many addresses.
    /// The address is counted first, so one address over its cap does not
    /// use up everyone's.
    pub async fn admit_prelogin(&self, client: ClientIp) -> Result<bool, StoreError> {
        let window = Some(rules::PENDING_LIFETIME);
        let by_address = self
            .store
            .incr(&Key::PreloginIp(prelogin_bucket(client)), window)
            .await?;
        if by_address > i64::from(self.rules.prelogin_per_address) {
            return Ok(false);
        }
        let by_all = self.store.incr(&Key::PreloginAll, window).await?;
        Ok(by_all <= i64::from(self.rules.prelogin_total))
    }

    /// Store a new session under a fresh id (never reusing an id the browser
    /// had: SECURITY-TESTS 31). `replacing` is removed.
    pub async fn start(
        &self,
        record: SessionRecord,
        now_ms: u64,
        replacing: Option<&Session>,
    ) -> Result<(SessionId, Session), StoreError> {
        let id = SessionId::generate();
        let digest = id.digest();
        let ttl = self.rules.ttl(&record, now_ms);
        if !self
            .store
            .create(&Key::Session(digest.clone()), encode(&record), Some(ttl))
            .await?
        {
            return Err(StoreError::Corrupt("session id collision".into()));
        }
        if let Some(user) = &record.user {
            self.store
                .set_add(&Key::UserSessions(user.clone()), &digest)
                .await?;
            // Drops the members that timed out, so the set stays the size of
            // the user's live sessions whoever lists it. Where concurrent
            // sessions are prevented, the sign-in ends every other member
            // (`end_user_sessions`), which removes them anyway.
            if !self.rules.prevent_concurrent {
                self.of_user(user).await?;
            }
        }
        if let Some(old) = replacing {
            self.store.delete(&Key::Session(old.digest.clone())).await?;
            self.forget(&old.digest);
            if let Some(user) = &old.record.user {
                self.store
                    .set_remove(&Key::UserSessions(user.clone()), &old.digest)
                    .await?;
            }
        }
        let session = Session {
            digest,
            record: Arc::new(record),
            version: 1,
        };
        Ok((id, session))
    }

    /// Write back a changed record (vault, last_seen). Compare-and-set on
    /// the version read, so a concurrent end (logout, revoke) is never undone.
    pub async fn save(&self, session: &mut Session, now_ms: u64) -> Result<bool, StoreError> {
        let ttl = self.rules.ttl(&session.record, now_ms);
        let key = Key::Session(session.digest.clone());
        let ok = self
            .store
            .compare_and_set(
                &key,
                Some(session.version),
                encode(&session.record),
                Some(ttl),
            )
            .await?;
        if ok {
            session.version += 1;
        }
        Ok(ok)
    }

    /// End one session: a tombstone tells its browser why, for a while.
    pub async fn end(
        &self,
        digest: &str,
        user: Option<&str>,
        reason: EndReason,
    ) -> Result<(), StoreError> {
        let key = Key::Session(digest.to_string());
        if let Some(current) = self.read(&key).await? {
            let mut tomb = current.value;
            tomb.state = SessionState::Ended(reason);
            tomb.vault = Vault::default();
            tomb.pending_seed = None;
            self.store
                .put(&key, encode(&tomb), Some(rules::TOMBSTONE_LIFETIME))
                .await?;
        }
        self.forget(digest);
        if let Some(user) = user {
            self.store
                .set_remove(&Key::UserSessions(user.to_string()), digest)
                .await?;
        }
        Ok(())
    }

    /// End every session of `user` except `keep` (a digest, or "" for all).
    pub async fn end_user_sessions(
        &self,
        user: &str,
        keep: &str,
        reason: EndReason,
    ) -> Result<usize, StoreError> {
        let members = self
            .store
            .set_members(&Key::UserSessions(user.to_string()))
            .await?;
        let mut ended = 0;
        for digest in members.iter().filter(|d| d.as_str() != keep) {
            self.end(digest, Some(user), reason).await?;
            ended += 1;
        }
        Ok(ended)
    }

    /// Log out all users at once: O(1), every session created before now dies.
    pub async fn logout_all(&self, now_ms: u64) -> Result<(), StoreError> {
        self.store
            .put(&Key::EpochGlobal, now_ms.to_string().into(), None)
            .await?;
        Ok(())
    }

    /// Every stored session (admin views; walks the keyspace).
    pub async fn all(&self) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::new();
        for (key, v) in self.store.scan_values(&KeyPrefix::Sessions).await? {
            if let Key::Session(digest) = key {
                out.push(Session {
                    digest,
                    record: Arc::new(decode(&v.value)?),
                    version: v.version,
                });
            }
        }
        Ok(out)
    }

    /// The live sessions of one user. Members whose record has expired are
    /// dropped from the user's set here (and so at each sign-in): nothing
    /// else removes a session that timed out rather than ended, and with
    /// concurrent sessions allowed the set would otherwise grow by one per
    /// sign-in for as long as the user exists.
    pub async fn of_user(&self, user: &str) -> Result<Vec<Session>, StoreError> {
        let set = Key::UserSessions(user.to_string());
        let digests = self.store.set_members(&set).await?;
        let mut out = Vec::new();
        for batch in digests.chunks(crate::store::SCAN_BATCH) {
            let keys: Vec<Key> = batch.iter().cloned().map(Key::Session).collect();
            let records = self.store.get_many(&keys).await?;
            for (digest, record) in batch.iter().zip(records) {
                match record {
                    // A member is added only after its record was created,
                    // so an absent record has expired or been deleted.
                    None => {
                        self.store.set_remove(&set, digest).await?;
                    }
                    Some(v) => {
                        let record = decode(&v.value)?;
                        if !matches!(record.state, SessionState::Ended(_)) {
                            out.push(Session {
                                digest: digest.clone(),
                                record: Arc::new(record),
                                version: v.version,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// One stored record, decoded.
    async fn read(&self, key: &Key) -> Result<Option<Versioned<SessionRecord>>, StoreError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(v) => Ok(Some(Versioned {
                value: decode(&v.value)?,
                version: v.version,
            })),
        }
    }

    /// Still usable? (Checked periodically by open websockets so logout,
    /// timeouts and log-out-all close them too.)
    pub async fn still_live(&self, digest: &str, now_ms: u64) -> Result<bool, StoreError> {
        let keys = [Key::Session(digest.to_string()), Key::EpochGlobal];
        let mut got = self.store.get_many(&keys).await?.into_iter();
        let (Some(rec), epoch) = (got.next().flatten(), got.next().flatten()) else {
            return Ok(false);
        };
        let Ok(record) = codec::decode(&rec.value) else {
            return Ok(false);
        };
        let epoch_ms = epoch
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.trim().parse().ok())
            .unwrap_or(0);
        Ok(record.state == SessionState::Active
            && matches!(
                self.rules.judge(&record, epoch_ms, now_ms),
                Verdict::Valid { .. }
            ))
    }
}

fn encode(record: &SessionRecord) -> bytes::Bytes {
    codec::encode(record).into()
}

fn decode(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    codec::decode(bytes).map_err(|_| StoreError::Corrupt("undecodable session record".into()))
}

/// The address a pre-sign-in session is counted against: an IPv6 client
/// holds a whole /64 (RFC 4291 interface identifiers are its own to pick).
fn prelogin_bucket(client: ClientIp) -> String {
    match client {
        ClientIp::Known(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            // A prefix length of 64 is always valid, so the fallback is never taken.
            ipnet::Ipv6Net::new(v6, 64).map_or_else(|_| v6.to_string(), |n| n.trunc().to_string())
        }
        ClientIp::Known(IpAddr::V6(v6)) => v6.to_canonical().to_string(),
        ClientIp::Known(ip) => ip.to_string(),
        ClientIp::Unknown => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
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
        async fn put(
            &self,
            key: &Key,
            value: Bytes,
            ttl: Option<Duration>,
        ) -> Result<u64, StoreError> {
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
}
