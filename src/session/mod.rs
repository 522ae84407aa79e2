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
    touching: Mutex<foldhash::HashSet<String>>,
}

/// A claim on refreshing one session's `last_seen`, given up when dropped:
/// also when the request is cancelled mid-write, so no session is left
/// unrefreshed until it idles out.
struct TouchClaim<'a> {
    touching: &'a Mutex<foldhash::HashSet<String>>,
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
    records: foldhash::HashMap<String, (Bytes, Arc<SessionRecord>, u64)>,
    /// When records idle past [`MEMO_IDLE_MS`] were last dropped.
    swept_ms: u64,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, rules: SessionRules) -> Self {
        Self {
            store,
            rules,
            decoded: Mutex::new(Memo::default()),
            touching: Mutex::new(foldhash::HashSet::default()),
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
mod tests;
