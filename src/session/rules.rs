//! Session timeouts as pure functions of the record, the log-out-all epoch
//! and `now`, so every rule is unit-tested without sockets or sleeping.

use super::record::{EndReason, SessionRecord, SessionState};
use std::time::Duration;

/// The timing rules in force (from `[session]`).
#[derive(Debug, Clone)]
pub struct SessionRules {
    pub absolute_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub expire_on_browser_close: bool,
    pub prevent_concurrent: bool,
    pub classes: Vec<ClientClass>,
    /// Pre-sign-in sessions one address may start per [`PENDING_LIFETIME`].
    pub prelogin_per_address: u32,
    /// Pre-sign-in sessions all addresses may start per [`PENDING_LIFETIME`].
    pub prelogin_total: u32,
}

/// A client class with its own session length.
#[derive(Debug, Clone)]
pub struct ClientClass {
    pub name: String,
    pub user_agent: Vec<String>,
    pub path_prefixes: Vec<String>,
    pub expire_after: Option<Duration>,
    /// The class's second-factor rule; `None` = the user's.
    pub two_factor: Option<crate::auth::two_factor::Mode>,
}

/// How long a pre-sign-in (anonymous) or 2FA-pending session may live.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long a tombstone explains an ended session to its browser.
pub const TOMBSTONE_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Usable; `touch` = write `last_seen` back (idle timeout in force and
    /// enough time passed that the write is worth a store round trip).
    Valid {
        touch: bool,
    },
    Ended(EndReason),
}

impl SessionRules {
    /// The second-factor rule of `class`, if it has its own.
    pub fn class_two_factor(&self, class: &str) -> Option<crate::auth::two_factor::Mode> {
        self.classes
            .iter()
            .find(|c| c.name == class)
            .and_then(|c| c.two_factor)
    }

    /// The absolute lifetime of this session: its own (service accounts),
    /// else its class's.
    pub fn lifetime_of(&self, rec: &SessionRecord) -> Duration {
        rec.lifetime_ms
            .map_or_else(|| self.lifetime(&rec.class), Duration::from_millis)
    }

    /// The absolute lifetime of a session of `class`.
    pub fn lifetime(&self, class: &str) -> Duration {
        self.classes
            .iter()
            .find(|c| c.name == class)
            .and_then(|c| c.expire_after)
            .unwrap_or(self.absolute_timeout)
    }

    /// Which class a request belongs to: first match by User-Agent substring
    /// or path prefix; otherwise "web".
    pub fn classify(&self, user_agent: &str, path: &str) -> String {
        self.classes
            .iter()
            .find(|c| {
                c.user_agent.iter().any(|u| user_agent.contains(u.as_str()))
                    || c.path_prefixes.iter().any(|p| path.starts_with(p.as_str()))
            })
            .map_or_else(|| "web".to_string(), |c| c.name.clone())
    }

    /// Judge a stored session at `now_ms` given the global log-out-all epoch.
    pub fn judge(&self, rec: &SessionRecord, global_epoch_ms: u64, now_ms: u64) -> Verdict {
        if let SessionState::Ended(reason) = rec.state {
            return Verdict::Ended(reason);
        }
        if rec.created_ms <= global_epoch_ms {
            return Verdict::Ended(EndReason::LogoutAll);
        }
        let age = Duration::from_millis(now_ms.saturating_sub(rec.created_ms));
        let lifetime = match rec.state {
            SessionState::Active => self.lifetime_of(rec),
            _ => PENDING_LIFETIME.min(self.absolute_timeout),
        };
        if age >= lifetime {
            return Verdict::Ended(EndReason::Timeout);
        }
        let Some(idle) = self.idle_timeout else {
            return Verdict::Valid { touch: false };
        };
        let quiet = Duration::from_millis(now_ms.saturating_sub(rec.last_seen_ms));
        if quiet >= idle {
            return Verdict::Ended(EndReason::Idle);
        }
        // Refresh last_seen at most every quarter of the idle timeout (and at
        // most once a second): accurate to 25 %, a write on few requests.
        let step = (idle / 4).max(Duration::from_secs(1));
        Verdict::Valid {
            touch: quiet >= step,
        }
    }

    /// Time the store should keep a record: the rest of its lifetime.
    pub fn ttl(&self, rec: &SessionRecord, now_ms: u64) -> Duration {
        let lifetime = match rec.state {
            SessionState::Active => self.lifetime_of(rec),
            SessionState::Ended(_) => return TOMBSTONE_LIFETIME,
            _ => PENDING_LIFETIME.min(self.absolute_timeout),
        };
        let age = Duration::from_millis(now_ms.saturating_sub(rec.created_ms));
        lifetime.saturating_sub(age).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(idle: Option<u64>) -> SessionRules {
        SessionRules {
            absolute_timeout: Duration::from_secs(100),
            idle_timeout: idle.map(Duration::from_secs),
            expire_on_browser_close: false,
            prevent_concurrent: true,
            classes: vec![ClientClass {
                name: "mobile".into(),
                user_agent: vec!["PBXMobile".into()],
                path_prefixes: vec![],
                expire_after: Some(Duration::from_secs(1000)),
                two_factor: None,
            }],
            prelogin_per_address: 300,
            prelogin_total: 100_000,
        }
    }

    fn active(created_s: u64, seen_s: u64) -> SessionRecord {
        SessionRecord {
            two_factor_passed: false,
            ..crate::session::record::test_active(created_s * 1000, seen_s * 1000)
        }
    }

    #[test]
    fn absolute_timeout_ends_the_session_exactly_at_its_lifetime() {
        let r = rules(None);
        assert_eq!(
            r.judge(&active(1000, 1000), 0, 1_099_999),
            Verdict::Valid { touch: false }
        );
        assert_eq!(
            r.judge(&active(1000, 1000), 0, 1_100_000),
            Verdict::Ended(EndReason::Timeout)
        );
    }

    #[test]
    fn idle_timeout_ends_quiet_sessions_and_asks_for_touches() {
        let r = rules(Some(20));
        assert_eq!(
            r.judge(&active(1000, 1000), 0, 1_004_000),
            Verdict::Valid { touch: false }
        );
        assert_eq!(
            r.judge(&active(1000, 1000), 0, 1_006_000),
            Verdict::Valid { touch: true }
        );
        assert_eq!(
            r.judge(&active(1000, 1000), 0, 1_020_000),
            Verdict::Ended(EndReason::Idle)
        );
    }

    #[test]
    fn log_out_all_epoch_ends_older_sessions_only() {
        let r = rules(None);
        assert_eq!(
            r.judge(&active(1000, 1000), 1_000_000, 1_001_000),
            Verdict::Ended(EndReason::LogoutAll)
        );
        assert_eq!(
            r.judge(&active(1000, 1000), 999_999, 1_001_000),
            Verdict::Valid { touch: false }
        );
    }

    #[test]
    fn classes_have_their_own_lifetime() {
        let r = rules(None);
        assert_eq!(r.classify("PBXMobile/3.1 (iOS)", "/"), "mobile");
        assert_eq!(r.classify("Mozilla/5.0", "/"), "web");
        let mut m = active(1000, 1000);
        m.class = "mobile".into();
        assert_eq!(r.judge(&m, 0, 1_500_000), Verdict::Valid { touch: false });
    }

    #[test]
    fn pending_sessions_live_at_most_fifteen_minutes() {
        let r = SessionRules {
            absolute_timeout: Duration::from_secs(86_400),
            ..rules(None)
        };
        let mut p = active(1000, 1000);
        p.state = SessionState::PasswordOk;
        assert_eq!(
            r.judge(&p, 0, 1_000_000 + 15 * 60 * 1000),
            Verdict::Ended(EndReason::Timeout)
        );
    }
}
