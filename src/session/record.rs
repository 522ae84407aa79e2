//! What gatehouse remembers about one sign-in.

use super::vault::Vault;
use serde::{Deserialize, Serialize};

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Before sign-in: only holds cookies the login page set (CSRF, PHP session).
    Anonymous,
    /// The dashboard accepted the password; the second factor is pending.
    PasswordOk,
    /// Fully signed in.
    Active,
    /// A tombstone kept briefly so the browser is told why it was signed out.
    Ended(EndReason),
}

/// Why a session ended (audit lines and the page the browser sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Logout,
    Timeout,
    Idle,
    /// The same user signed in elsewhere and concurrent sessions are prevented.
    Replaced,
    /// An admin (or the user) revoked it.
    Revoked,
    LogoutAll,
    /// The user's second factor was reset.
    TwoFactorReset,
}

impl EndReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Timeout => "timeout",
            EndReason::Idle => "idle",
            EndReason::Replaced => "replaced",
            EndReason::Revoked => "revoked",
            EndReason::LogoutAll => "logout_all",
            EndReason::TwoFactorReset => "two_factor_reset",
        }
    }
}

/// The second-factor step a `PasswordOk` session must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactor {
    /// Enter a code from the enrolled authenticator.
    Challenge,
    /// No authenticator yet: enroll one first.
    Enroll,
}

/// One session as stored (JSON) under its hashed id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Normalised username; `None` before sign-in.
    pub user: Option<String>,
    pub state: SessionState,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    /// "web", "mobile", "desktop" or "service".
    pub class: String,
    pub client_ip: String,
    pub country: Option<String>,
    pub user_agent: String,
    /// The dashboard's HttpOnly cookies, which never reach the browser.
    pub vault: Vault,
    /// Secret for this session's form tokens.
    pub csrf: String,
    /// Where to go once the second factor is passed.
    pub return_to: Option<String>,
    /// Pending second factor while `PasswordOk`.
    #[serde(default)]
    pub second_factor: Option<SecondFactor>,
    /// A sealed TOTP seed being enrolled (not yet confirmed).
    #[serde(default)]
    pub pending_seed: Option<Vec<u8>>,
    /// This sign-in passed a second factor (the admin console requires it).
    #[serde(default)]
    pub two_factor_passed: bool,
    /// The password had expired at sign-in (and was not changed since).
    #[serde(default)]
    pub password_expired: bool,
    /// The access area the sign-in was made in.
    #[serde(default)]
    pub area: String,
    /// The challenge was skipped only because that area's own rule said
    /// "off": the session is then good only in areas that say "off" too.
    #[serde(default)]
    pub two_factor_waived_by_area: bool,
    /// The session's own absolute lifetime (service accounts); `None` = its class's.
    #[serde(default)]
    pub lifetime_ms: Option<u64>,
    /// Waiting for a code posted to `/.gatehouse/api/2fa` (a JSON login):
    /// the id was handed out as a challenge, never as a cookie.
    #[serde(default)]
    pub api_challenge: bool,
}

impl SessionRecord {
    pub fn is_signed_in(&self) -> bool {
        self.state == SessionState::Active
    }
}

/// An active, 2FA-passed session of alice created at `created_ms` and last
/// seen at `last_seen_ms`: the record unit tests start from.
#[cfg(test)]
pub(crate) fn test_active(created_ms: u64, last_seen_ms: u64) -> SessionRecord {
    SessionRecord {
        user: Some("alice@example.com".into()),
        state: SessionState::Active,
        created_ms,
        last_seen_ms,
        class: "web".into(),
        client_ip: "192.0.2.1".into(),
        country: None,
        user_agent: String::new(),
        vault: super::vault::Vault::default(),
        csrf: String::new(),
        return_to: None,
        second_factor: None,
        pending_seed: None,
        two_factor_passed: true,
        password_expired: false,
        area: String::new(),
        two_factor_waived_by_area: false,
        lifetime_ms: None,
        api_challenge: false,
    }
}
