//! The second factor: who needs it (a pure decision), and the user's
//! authenticator and recovery codes in the store — sealed, never in clear.

use super::recovery::RecoveryCodes;
use super::totp::{self, TotpError, TotpSecret};
use crate::access::AreaTwoFactor;
use crate::session::SecondFactor;
use crate::store::{Key, Sealer, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Off,
    Optional,
    OutsideTrusted,
    Required,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim() {
            "off" => Mode::Off,
            "optional" => Mode::Optional,
            "required" => Mode::Required,
            "outside_trusted" => Mode::OutsideTrusted,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Optional => "optional",
            Mode::Required => "required",
            Mode::OutsideTrusted => "outside_trusted",
        }
    }
}

/// The validated `[two_factor]` section plus `[[policy.domain]]` overrides.
#[derive(Debug, Clone)]
pub struct TwoFactorSettings {
    pub mode: Mode,
    pub trusted_networks: crate::access::IpList,
    pub issuer: String,
    pub domains: Vec<(String, Mode)>,
    /// `[[policy.user]]` service accounts' own modes (default "off").
    pub users: Vec<(String, Mode)>,
    /// Enrollment also asks for the dashboard password, checked by
    /// replaying it to the dashboard's login.
    pub confirm_password: bool,
}

impl TwoFactorSettings {
    /// The mode in force for `user`: the domain's override, raised to
    /// "required" when an admin required 2FA for this user.
    pub fn mode_for(&self, user: &str, admin_required: bool) -> Mode {
        let domain = super::login::email_domain(user);
        let base = self
            .users
            .iter()
            .find(|(u, _)| u == user)
            .or_else(|| {
                self.domains
                    .iter()
                    .find(|(d, _)| Some(d.as_str()) == domain)
            })
            .map_or(self.mode, |(_, m)| *m);
        if admin_required {
            Mode::Required
        } else {
            base
        }
    }

    /// The mode in force for a sign-in in an area of rule `area`: an area's
    /// own rule (set in TOML only) wins over the client class's, which wins
    /// over the user's (`mode_for`).
    pub fn mode_in(&self, area: AreaTwoFactor, class: Option<Mode>, user_mode: Mode) -> Mode {
        match area {
            AreaTwoFactor::Inherit => class.unwrap_or(user_mode),
            AreaTwoFactor::Off => Mode::Off,
            AreaTwoFactor::Required => Mode::Required,
            AreaTwoFactor::OutsideTrusted => Mode::OutsideTrusted,
        }
    }

    /// May a session that did not pass the second factor be used in an area
    /// of rule `area` from `client`? `waived_by_area` says the session skipped
    /// the challenge only because the area it was made in said "off": such a
    /// session is good only where the area says "off" too. Otherwise an area
    /// that asks for a code on its own account refuses it (the user's rules
    /// were already applied at sign-in). Pure, no store round trip.
    pub fn admits_without_code(
        &self,
        area: AreaTwoFactor,
        waived_by_area: bool,
        client: Option<IpAddr>,
    ) -> bool {
        match area {
            AreaTwoFactor::Off => true,
            _ if waived_by_area => false,
            AreaTwoFactor::Inherit => true,
            AreaTwoFactor::Required => false,
            AreaTwoFactor::OutsideTrusted => self.trusted(client),
        }
    }

    /// The rule in force in an area, in words (for `check-config`).
    pub fn describe_area(&self, area: AreaTwoFactor) -> String {
        let mode = |m: Mode| match m {
            Mode::OutsideTrusted => format!(
                "outside_trusted (required outside {} trusted network(s))",
                self.trusted_networks.len()
            ),
            m => m.as_str().to_string(),
        };
        match area {
            AreaTwoFactor::Inherit => {
                let mut text = format!("{} (inherited from two_factor.mode)", mode(self.mode));
                for (d, m) in &self.domains {
                    text.push_str(&format!("; @{d}: {}", m.as_str()));
                }
                for (u, m) in &self.users {
                    text.push_str(&format!("; service account {u}: {}", m.as_str()));
                }
                text
            }
            AreaTwoFactor::Off => "off (area override: no challenge)".into(),
            AreaTwoFactor::Required => "required (area override)".into(),
            AreaTwoFactor::OutsideTrusted => {
                format!("{} (area override)", mode(Mode::OutsideTrusted))
            }
        }
    }

    fn trusted(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.trusted_networks.contains(ip.to_canonical()))
    }

    /// What a user who just passed the password step must do next.
    pub fn next_step(
        &self,
        mode: Mode,
        enrolled: bool,
        client: Option<IpAddr>,
    ) -> Option<SecondFactor> {
        let needed = match mode {
            Mode::Off => return None,
            Mode::Optional => return enrolled.then_some(SecondFactor::Challenge),
            Mode::Required => true,
            Mode::OutsideTrusted => !self.trusted(client),
        };
        needed.then_some(if enrolled {
            SecondFactor::Challenge
        } else {
            SecondFactor::Enroll
        })
    }

    /// May the user switch 2FA off themselves?
    pub fn may_disable(&self, mode: Mode) -> bool {
        matches!(mode, Mode::Off | Mode::Optional)
    }
}

/// A user's enrolled authenticator as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TotpRecord {
    /// The seed, sealed with the store key.
    sealed: Vec<u8>,
    enrolled_ms: u64,
    /// The last step a code was accepted for (replay guard).
    last_step: Option<u64>,
}

/// What gatehouse knows about a user beyond sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserProfile {
    pub first_seen_ms: u64,
    pub last_sign_in_ms: u64,
    /// An admin required 2FA for this user.
    pub two_factor_required: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TwoFactorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored secret cannot be opened: {0}")]
    Sealed(#[from] crate::store::SealError),
    #[error("the user has no authenticator")]
    NotEnrolled,
    #[error("the user already has an authenticator")]
    AlreadyEnrolled,
}

/// The result of checking a submitted code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Accepted,
    RecoveryCodeUsed { remaining: usize },
    Refused(TotpError),
}

/// Authenticators and recovery codes over the store.
pub struct TwoFactor {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
}

impl TwoFactor {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Self {
        Self { store, sealer }
    }

    pub fn seal(&self, secret: &TotpSecret) -> Result<Vec<u8>, TwoFactorError> {
        Ok(self.sealer.seal(secret.as_bytes())?)
    }

    pub fn unseal(&self, sealed: &[u8]) -> Result<TotpSecret, TwoFactorError> {
        let bytes = self.sealer.open(sealed)?;
        TotpSecret::from_bytes(&bytes)
            .map_err(|_| TwoFactorError::Sealed(crate::store::SealError::Malformed))
    }

    pub async fn is_enrolled(&self, user: &str) -> Result<bool, TwoFactorError> {
        Ok(self
            .store
            .get(&Key::UserTotp(user.to_string()))
            .await?
            .is_some())
    }

    pub async fn profile(&self, user: &str) -> Result<UserProfile, TwoFactorError> {
        Ok(self
            .store
            .get_json::<UserProfile>(&Key::UserProfile(user.to_string()))
            .await?
            .map(|v| v.value)
            .unwrap_or_default())
    }

    /// Record a sign-in (and that the user exists, for admin lists).
    pub async fn note_sign_in(
        &self,
        user: &str,
        now_ms: u64,
    ) -> Result<UserProfile, TwoFactorError> {
        let key = Key::UserProfile(user.to_string());
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let current = self.store.get_json::<UserProfile>(&key).await?;
            let (mut p, version) = match current {
                Some(v) => (v.value, Some(v.version)),
                None => (
                    UserProfile {
                        first_seen_ms: now_ms,
                        ..UserProfile::default()
                    },
                    None,
                ),
            };
            p.last_sign_in_ms = now_ms;
            if self.store.cas_json(&key, version, &p, None).await? {
                self.store.set_add(&Key::Users, user).await?;
                return Ok(p);
            }
        }
        Err(StoreError::Unavailable("profile update kept conflicting".into()).into())
    }

    /// Confirm an enrollment: the pending seed becomes the user's
    /// authenticator if `code` is valid for it. Returns the recovery codes to
    /// show once.
    pub async fn confirm_enrollment(
        &self,
        user: &str,
        pending_sealed: &[u8],
        code: &str,
        now_unix: u64,
        now_ms: u64,
    ) -> Result<Result<Vec<String>, TotpError>, TwoFactorError> {
        let secret = self.unseal(pending_sealed)?;
        let step = match totp::verify(&secret, code, now_unix, None) {
            Ok(step) => step,
            Err(e) => return Ok(Err(e)),
        };
        let record = TotpRecord {
            sealed: pending_sealed.to_vec(),
            enrolled_ms: now_ms,
            last_step: Some(step),
        };
        if !self
            .store
            .create_json(&Key::UserTotp(user.to_string()), &record, None)
            .await?
        {
            return Err(TwoFactorError::AlreadyEnrolled);
        }
        let (codes, set) = RecoveryCodes::generate(10);
        self.store_recovery(user, &set).await?;
        Ok(Ok(codes))
    }

    /// Check a code (or a recovery code) and consume it atomically: of many
    /// parallel submissions of one code exactly one succeeds (SECURITY-TESTS 35).
    pub async fn check(
        &self,
        user: &str,
        code: &str,
        now_unix: u64,
    ) -> Result<CodeCheck, TwoFactorError> {
        let key = Key::UserTotp(user.to_string());
        let digits = code.chars().filter(|c| !c.is_whitespace()).count();
        if digits != totp::DIGITS
            || !code
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_whitespace())
        {
            return self.use_recovery(user, code).await;
        }
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let Some(current) = self.store.get_json::<TotpRecord>(&key).await? else {
                return Err(TwoFactorError::NotEnrolled);
            };
            let secret = self.unseal(&current.value.sealed)?;
            match totp::verify(&secret, code, now_unix, current.value.last_step) {
                Err(e) => return Ok(CodeCheck::Refused(e)),
                Ok(step) => {
                    let mut next = current.value.clone();
                    next.last_step = Some(step);
                    if self
                        .store
                        .cas_json(&key, Some(current.version), &next, None)
                        .await?
                    {
                        return Ok(CodeCheck::Accepted);
                    }
                    // Someone else used a code meanwhile: re-read, and the
                    // same step is then a replay.
                }
            }
        }
        Ok(CodeCheck::Refused(TotpError::Replayed))
    }

    async fn use_recovery(&self, user: &str, code: &str) -> Result<CodeCheck, TwoFactorError> {
        let key = Key::UserRecovery(user.to_string());
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let Some(current) = self.store.get(&key).await? else {
                return Ok(CodeCheck::Refused(TotpError::Malformed));
            };
            let plain = self.sealer.open(&current.value)?;
            let mut set: RecoveryCodes = serde_json::from_slice(&plain)
                .map_err(|_| StoreError::Corrupt("undecodable recovery codes".into()))?;
            if !set.consume(code) {
                return Ok(CodeCheck::Refused(TotpError::Wrong));
            }
            let sealed = self.seal_recovery(&set)?;
            if self
                .store
                .compare_and_set(&key, Some(current.version), sealed.into(), None)
                .await?
            {
                return Ok(CodeCheck::RecoveryCodeUsed {
                    remaining: set.remaining(),
                });
            }
        }
        Ok(CodeCheck::Refused(TotpError::Replayed))
    }

    /// New recovery codes for an enrolled user (the old ones stop working).
    pub async fn new_recovery_codes(&self, user: &str) -> Result<Vec<String>, TwoFactorError> {
        if !self.is_enrolled(user).await? {
            return Err(TwoFactorError::NotEnrolled);
        }
        let (codes, set) = RecoveryCodes::generate(10);
        self.store_recovery(user, &set).await?;
        Ok(codes)
    }

    /// Remove the user's authenticator and recovery codes (reset or disable).
    pub async fn remove(&self, user: &str) -> Result<bool, TwoFactorError> {
        let had = self.store.delete(&Key::UserTotp(user.to_string())).await?;
        self.store
            .delete(&Key::UserRecovery(user.to_string()))
            .await?;
        Ok(had)
    }

    /// Admin: require (or stop requiring) 2FA for one user.
    pub async fn set_required(&self, user: &str, required: bool) -> Result<(), TwoFactorError> {
        let key = Key::UserProfile(user.to_string());
        for round in 0..crate::store::CAS_ROUNDS {
            crate::store::cas_pause(round).await;
            let current = self.store.get_json::<UserProfile>(&key).await?;
            let version = current.as_ref().map(|v| v.version);
            let mut p = current.map(|v| v.value).unwrap_or_default();
            p.two_factor_required = required;
            if self.store.cas_json(&key, version, &p, None).await? {
                self.store.set_add(&Key::Users, user).await?;
                return Ok(());
            }
        }
        Err(StoreError::Unavailable("profile update kept conflicting".into()).into())
    }

    fn seal_recovery(&self, set: &RecoveryCodes) -> Result<Vec<u8>, TwoFactorError> {
        let json =
            serde_json::to_vec(set).map_err(|_| StoreError::Corrupt("recovery codes".into()))?;
        Ok(self.sealer.seal(&json)?)
    }

    async fn store_recovery(&self, user: &str, set: &RecoveryCodes) -> Result<(), TwoFactorError> {
        let sealed = self.seal_recovery(set)?;
        self.store
            .put(&Key::UserRecovery(user.to_string()), sealed.into(), None)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: Mode) -> TwoFactorSettings {
        TwoFactorSettings {
            mode,
            trusted_networks: crate::access::IpList::from_raw(
                &[crate::access::RawIpEntry::Plain("192.0.2.0/24".into())],
                "t",
            )
            .expect("list"),
            issuer: "PBX".into(),
            domains: vec![("example.com".into(), Mode::Required)],
            users: vec![("crm@example.com".into(), Mode::Off)],
            confirm_password: false,
        }
    }

    #[test]
    fn service_account_rule_beats_its_domain() {
        let s = settings(Mode::Required);
        assert_eq!(s.mode_for("crm@example.com", false), Mode::Off);
        assert_eq!(s.mode_for("crm@example.com", true), Mode::Required);
    }

    #[test]
    fn area_rule_beats_class_and_user_rules() {
        let s = settings(Mode::Required);
        assert_eq!(
            s.mode_in(AreaTwoFactor::Off, None, Mode::Required),
            Mode::Off
        );
        assert_eq!(
            s.mode_in(AreaTwoFactor::Required, Some(Mode::Off), Mode::Off),
            Mode::Required
        );
        assert_eq!(
            s.mode_in(AreaTwoFactor::Inherit, Some(Mode::Off), Mode::Required),
            Mode::Off
        );
        assert_eq!(
            s.mode_in(AreaTwoFactor::Inherit, None, Mode::Optional),
            Mode::Optional
        );
    }

    #[test]
    fn session_waived_by_an_area_is_good_only_where_the_area_waives_too() {
        let s = settings(Mode::Required);
        let outside = Some("198.51.100.7".parse().expect("ip"));
        let inside = Some("192.0.2.7".parse().expect("ip"));
        assert!(s.admits_without_code(AreaTwoFactor::Off, true, outside));
        assert!(!s.admits_without_code(AreaTwoFactor::Inherit, true, outside));
        assert!(!s.admits_without_code(AreaTwoFactor::OutsideTrusted, true, inside));
        // Skipped by the user's own rules (mode off, trusted network): the
        // area refuses only if it asks for a code itself.
        assert!(s.admits_without_code(AreaTwoFactor::Inherit, false, outside));
        assert!(!s.admits_without_code(AreaTwoFactor::Required, false, inside));
        assert!(s.admits_without_code(AreaTwoFactor::OutsideTrusted, false, inside));
        assert!(!s.admits_without_code(AreaTwoFactor::OutsideTrusted, false, outside));
    }

    #[test]
    fn domain_override_and_admin_requirement_decide_the_mode() {
        let s = settings(Mode::Optional);
        assert_eq!(s.mode_for("alice@example.com", false), Mode::Required);
        assert_eq!(s.mode_for("carol@other.org", false), Mode::Optional);
        assert_eq!(s.mode_for("carol@other.org", true), Mode::Required);
    }

    #[test]
    fn outside_trusted_asks_only_outside_the_trusted_networks() {
        let s = settings(Mode::OutsideTrusted);
        let inside: IpAddr = "192.0.2.10".parse().expect("ip");
        let outside: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(s.next_step(Mode::OutsideTrusted, true, Some(inside)), None);
        assert_eq!(
            s.next_step(Mode::OutsideTrusted, true, Some(outside)),
            Some(SecondFactor::Challenge)
        );
        assert_eq!(
            s.next_step(Mode::OutsideTrusted, false, None),
            Some(SecondFactor::Enroll)
        );
    }

    #[test]
    fn optional_mode_challenges_only_the_enrolled() {
        let s = settings(Mode::Optional);
        assert_eq!(s.next_step(Mode::Optional, false, None), None);
        assert_eq!(
            s.next_step(Mode::Optional, true, None),
            Some(SecondFactor::Challenge)
        );
        assert_eq!(s.next_step(Mode::Off, true, None), None);
        assert!(!s.may_disable(Mode::Required));
    }
}
