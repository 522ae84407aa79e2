//! Lockout after consecutive failures (passwords and second-factor codes
//! share one counter per username) and a throttle per client address
//! against password spraying. Counters live in the store with TTLs, so
//! several gateways count together; a store error is a refusal, never an
//! "allow" (SECURITY-TESTS 38).

use crate::store::{Key, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// The validated `[lockout]` section.
#[derive(Debug, Clone)]
pub struct LockoutSettings {
    pub max_failures: u32,
    pub lock_for: Duration,
    pub ip_max_failures: u32,
    pub ip_window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Open,
    UserLocked,
    IpThrottled,
}

pub struct Lockout {
    store: Arc<dyn Store>,
    pub settings: LockoutSettings,
}

impl Lockout {
    pub fn new(store: Arc<dyn Store>, settings: LockoutSettings) -> Self {
        Self { store, settings }
    }

    /// One round trip: the user's lock and the address's failure count.
    pub async fn check(&self, user: &str, ip: &str) -> Result<LockState, StoreError> {
        let keys = [Key::LockUser(user.to_string()), Key::FailIp(ip.to_string())];
        let got = self.store.get_many(&keys).await?;
        if got.first().is_some_and(Option::is_some) {
            return Ok(LockState::UserLocked);
        }
        let ip_failures = got
            .get(1)
            .and_then(Option::as_ref)
            .and_then(|v| {
                std::str::from_utf8(&v.value)
                    .ok()?
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
            .unwrap_or(0);
        if ip_failures >= self.settings.ip_max_failures {
            return Ok(LockState::IpThrottled);
        }
        Ok(LockState::Open)
    }

    /// Count a failed password or code. Returns true when this failure locked
    /// the username.
    pub async fn record_failure(&self, user: &str, ip: &str) -> Result<bool, StoreError> {
        let s = &self.settings;
        let _ = self
            .store
            .incr(&Key::FailIp(ip.to_string()), Some(s.ip_window))
            .await?;
        let failures = self
            .store
            .incr(&Key::FailUser(user.to_string()), Some(s.lock_for))
            .await?;
        if failures >= i64::from(s.max_failures) {
            let created = self
                .store
                .create(
                    &Key::LockUser(user.to_string()),
                    "1".into(),
                    Some(s.lock_for),
                )
                .await?;
            self.store.delete(&Key::FailUser(user.to_string())).await?;
            return Ok(created);
        }
        Ok(false)
    }

    /// A success resets the consecutive-failure count.
    pub async fn record_success(&self, user: &str) -> Result<(), StoreError> {
        self.store.delete(&Key::FailUser(user.to_string())).await?;
        Ok(())
    }

    /// Admin action: lift a lock now.
    pub async fn unlock(&self, user: &str) -> Result<bool, StoreError> {
        self.store.delete(&Key::FailUser(user.to_string())).await?;
        self.store.delete(&Key::LockUser(user.to_string())).await
    }

    pub async fn is_locked(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get(&Key::LockUser(user.to_string()))
            .await?
            .is_some())
    }
}
