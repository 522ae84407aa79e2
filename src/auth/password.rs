//! Password policy on the dashboard's change-password form: rules as pure
//! functions, and a history of argon2id hashes (never passwords) for reuse
//! and minimum-age checks. The login password is never seen here.

use crate::store::{Key, Store, StoreError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The validated `[password]` section.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    pub change_path: String,
    /// The dashboard's forgot-password form: rules apply, minimum age does not.
    pub forgot_path: Option<String>,
    pub current_field: String,
    pub new_field: String,
    pub confirm_field: String,
    pub success_status: Vec<u16>,
    pub success_body_contains: Option<String>,
    pub min_length: usize,
    pub max_length: usize,
    pub require_upper: bool,
    pub require_lower: bool,
    pub require_digit: bool,
    pub require_symbol: bool,
    pub expire_after: Option<Duration>,
    pub prevent_reuse: usize,
    pub min_age: Option<Duration>,
    /// "enforce": after expiry every dashboard page sends to the notice.
    pub enforce_expiry: bool,
}

/// The base policy and its per-email-domain variants.
#[derive(Debug, Clone)]
pub struct PasswordPolicies {
    pub base: PasswordPolicy,
    pub domains: Vec<(String, PasswordPolicy)>,
}

impl PasswordPolicies {
    /// The policy for a username: its email domain's, else the base.
    pub fn for_user(&self, user: &str) -> &PasswordPolicy {
        let domain = super::login::email_domain(user);
        self.domains
            .iter()
            .find(|(d, _)| Some(d.as_str()) == domain)
            .map_or(&self.base, |(_, p)| p)
    }
}

/// One broken rule, in words a user understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    TooShort(usize),
    TooLong(usize),
    NoUpper,
    NoLower,
    NoDigit,
    NoSymbol,
    SameAsCurrent,
    ConfirmMismatch,
    Reused(usize),
    TooSoon { possible_at_ms: u64 },
}

impl Violation {
    pub fn message(&self) -> String {
        match self {
            Violation::TooShort(n) => format!("Use at least {n} characters."),
            Violation::TooLong(n) => format!("Use at most {n} characters."),
            Violation::NoUpper => "Include an upper-case letter (A–Z).".into(),
            Violation::NoLower => "Include a lower-case letter (a–z).".into(),
            Violation::NoDigit => "Include a digit (0–9).".into(),
            Violation::NoSymbol => "Include a character that is not a letter or digit.".into(),
            Violation::SameAsCurrent => "The new password must differ from the current one.".into(),
            Violation::ConfirmMismatch => "The two new passwords do not match.".into(),
            Violation::Reused(n) => format!("Do not reuse any of your last {n} passwords."),
            Violation::TooSoon { .. } => "Your password was changed too recently.".into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Violation::TooShort(_) => "too_short",
            Violation::TooLong(_) => "too_long",
            Violation::NoUpper => "no_upper",
            Violation::NoLower => "no_lower",
            Violation::NoDigit => "no_digit",
            Violation::NoSymbol => "no_symbol",
            Violation::SameAsCurrent => "same_as_current",
            Violation::ConfirmMismatch => "confirm_mismatch",
            Violation::Reused(_) => "reused",
            Violation::TooSoon { .. } => "too_soon",
        }
    }
}

impl PasswordPolicy {
    /// The rules on the text alone (no history).
    pub fn check(&self, new: &str, current: Option<&str>, confirm: Option<&str>) -> Vec<Violation> {
        let mut v = Vec::new();
        let len = new.chars().count();
        if len < self.min_length {
            v.push(Violation::TooShort(self.min_length));
        }
        if len > self.max_length {
            v.push(Violation::TooLong(self.max_length));
        }
        if self.require_upper && !new.chars().any(char::is_uppercase) {
            v.push(Violation::NoUpper);
        }
        if self.require_lower && !new.chars().any(char::is_lowercase) {
            v.push(Violation::NoLower);
        }
        if self.require_digit && !new.chars().any(|c| c.is_ascii_digit()) {
            v.push(Violation::NoDigit);
        }
        if self.require_symbol && new.chars().all(char::is_alphanumeric) {
            v.push(Violation::NoSymbol);
        }
        if current.is_some_and(|c| c == new) {
            v.push(Violation::SameAsCurrent);
        }
        if confirm.is_some_and(|c| c != new) {
            v.push(Violation::ConfirmMismatch);
        }
        v
    }

    /// The rules that need the history: minimum age and reuse.
    pub fn check_history(
        &self,
        history: &PasswordHistory,
        new: &str,
        now_ms: u64,
    ) -> Vec<Violation> {
        let mut v = Vec::new();
        if let (Some(min), Some(changed)) = (self.min_age, history.changed_ms) {
            let possible_at_ms = changed.saturating_add(min.as_millis() as u64);
            if now_ms < possible_at_ms {
                v.push(Violation::TooSoon { possible_at_ms });
            }
        }
        if self.prevent_reuse > 0 && history.matches_any(new, self.prevent_reuse) {
            v.push(Violation::Reused(self.prevent_reuse));
        }
        v
    }

    /// Has the password expired? Age counts from the last recorded change,
    /// else from the first sign-in gatehouse saw.
    pub fn expired(&self, history: &PasswordHistory, first_seen_ms: u64, now_ms: u64) -> bool {
        let Some(after) = self.expire_after else {
            return false;
        };
        let since = history.changed_ms.unwrap_or(first_seen_ms);
        since > 0 && now_ms >= since.saturating_add(after.as_millis() as u64)
    }
}

/// The last password hashes of a user, newest first, and when it changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PasswordHistory {
    pub hashes: Vec<String>,
    pub changed_ms: Option<u64>,
}

impl PasswordHistory {
    fn matches_any(&self, password: &str, last: usize) -> bool {
        self.hashes.iter().take(last).any(|h| {
            PasswordHash::new(h).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
    }
}

/// Password histories in the store.
pub struct Passwords {
    store: Arc<dyn Store>,
}

/// Most hashes kept (prevent_reuse is at most 10).
const KEEP: usize = 10;

impl Passwords {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub async fn history(&self, user: &str) -> Result<PasswordHistory, StoreError> {
        Ok(self
            .store
            .get_json::<PasswordHistory>(&Key::UserPassword(user.to_string()))
            .await?
            .map(|v| v.value)
            .unwrap_or_default())
    }

    /// The dashboard confirmed a change: keep an argon2id hash of the new
    /// password (never the password) and the time.
    pub async fn record_change(
        &self,
        user: &str,
        new: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|_| StoreError::Corrupt("password salt".into()))?;
        let hash = Argon2::default()
            .hash_password(new.as_bytes(), &salt)
            .map_err(|_| StoreError::Corrupt("password hashing failed".into()))?
            .to_string();
        let key = Key::UserPassword(user.to_string());
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let current = self.store.get_json::<PasswordHistory>(&key).await?;
            let version = current.as_ref().map(|v| v.version);
            let mut h = current.map(|v| v.value).unwrap_or_default();
            h.hashes.insert(0, hash.clone());
            h.hashes.truncate(KEEP);
            h.changed_ms = Some(now_ms);
            if self.store.cas_json(&key, version, &h, None).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            "password history kept conflicting".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            change_path: "/profile/password".into(),
            forgot_path: None,
            current_field: "current_password".into(),
            new_field: "new_password".into(),
            confirm_field: "confirm_password".into(),
            success_status: vec![200],
            success_body_contains: None,
            min_length: 8,
            max_length: 24,
            require_upper: true,
            require_lower: true,
            require_digit: true,
            require_symbol: false,
            expire_after: Some(Duration::from_secs(90 * 86_400)),
            prevent_reuse: 5,
            min_age: Some(Duration::from_secs(86_400)),
            enforce_expiry: false,
        }
    }

    #[test]
    fn each_rule_is_reported_in_words() {
        let p = policy();
        assert_eq!(p.check("short1A", None, None), vec![Violation::TooShort(8)]);
        assert_eq!(
            p.check("alllowercase1", None, None),
            vec![Violation::NoUpper]
        );
        assert_eq!(
            p.check("ALLUPPERCASE1", None, None),
            vec![Violation::NoLower]
        );
        assert_eq!(
            p.check("NoDigitsHere", None, None),
            vec![Violation::NoDigit]
        );
        assert_eq!(
            p.check("Waytoolongpassword123456789", None, None),
            vec![Violation::TooLong(24)]
        );
        assert_eq!(
            p.check("Good-pass-1", Some("Good-pass-1"), None),
            vec![Violation::SameAsCurrent]
        );
        assert_eq!(
            p.check("Good-pass-1", None, Some("Good-pass-2")),
            vec![Violation::ConfirmMismatch]
        );
        assert!(p
            .check("Good-pass-1", Some("Old-pass-1"), Some("Good-pass-1"))
            .is_empty());
        let symbol = PasswordPolicy {
            require_symbol: true,
            ..policy()
        };
        assert_eq!(
            symbol.check("Goodpass1", None, None),
            vec![Violation::NoSymbol]
        );
    }

    #[test]
    fn expiry_counts_from_the_last_change_or_first_sign_in() {
        let p = policy();
        let day = 86_400_000u64;
        let h = PasswordHistory {
            hashes: vec![],
            changed_ms: Some(10 * day),
        };
        assert!(!p.expired(&h, 1, 99 * day));
        assert!(p.expired(&h, 1, 100 * day));
        assert!(p.expired(&PasswordHistory::default(), day, 91 * day));
        assert!(!PasswordPolicy {
            expire_after: None,
            ..policy()
        }
        .expired(&h, 1, 1000 * day));
    }

    #[test]
    fn minimum_age_gives_the_time_it_becomes_possible() {
        let p = policy();
        let h = PasswordHistory {
            hashes: vec![],
            changed_ms: Some(1_000),
        };
        assert_eq!(
            p.check_history(&h, "x", 2_000),
            vec![Violation::TooSoon {
                possible_at_ms: 1_000 + 86_400_000
            }]
        );
    }
}
