//! The admin operations, shared by the console and `gatehouse admin …`.
//! Every change writes an audit event naming the actor.

use crate::audit::Event;
use crate::auth::lockout::Lockout;
use crate::auth::two_factor::{TwoFactor, TwoFactorError};
use crate::config::validate::Settings;
use crate::session::cookie::short_ref;
use crate::session::{EndReason, SessionState, Sessions};
use crate::store::{Key, Sealer, Store, StoreError};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store.secret_key_file: {0}")]
    Sealer(#[from] crate::store::SealError),
    #[error("{0}")]
    TwoFactor(#[from] TwoFactorError),
    #[error("no session matches {0:?}")]
    NoSuchSession(String),
}

/// One session as admins see it (never the id itself).
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub reference: String,
    pub user: String,
    pub state: String,
    /// "web", "mobile", "desktop" or "service".
    pub class: String,
    /// The user is a `[[policy.user]]` service account.
    pub service_account: bool,
    pub client_ip: String,
    pub country: Option<String>,
    pub created_ms: u64,
    pub last_seen_ms: u64,
}

/// One user as admins see them.
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub user: String,
    pub two_factor_enrolled: bool,
    pub two_factor_required_by_admin: bool,
    pub two_factor_mode: String,
    pub locked: bool,
    pub first_seen_ms: u64,
    pub last_sign_in_ms: u64,
    pub active_sessions: usize,
    /// A `[[policy.user]]` service account (IP-bound, usually without 2FA).
    pub service_account: bool,
}

/// The operations over one store.
pub struct Admin {
    pub store: Arc<dyn Store>,
    pub sessions: Sessions,
    pub lockout: Lockout,
    pub two_factor: TwoFactor,
    settings: Arc<Settings>,
}

impl Admin {
    /// Open the configured store directly (CLI, recovery when nobody can sign in).
    pub async fn open(settings: Arc<Settings>) -> Result<Self, AdminError> {
        // A one-off command keeps no copies: it would hold a lease that every other
        // gateway's writes wait out after it exits. Its own writes are still announced.
        let one_off = crate::store::StoreSettings {
            cache_sessions: false,
            ..settings.store.clone()
        };
        let store = crate::store::open(&one_off).await?;
        let sealer = Arc::new(Sealer::load_or_create(&settings.store.secret_key_file)?);
        Ok(Self::over(store, sealer, settings))
    }

    pub fn over(store: Arc<dyn Store>, sealer: Arc<Sealer>, settings: Arc<Settings>) -> Self {
        Self {
            sessions: Sessions::new(store.clone(), settings.session.clone()),
            lockout: Lockout::new(store.clone(), settings.lockout.clone()),
            two_factor: TwoFactor::new(store.clone(), sealer),
            store,
            settings,
        }
    }

    /// Live sessions, newest first, optionally of one user and/or one client
    /// class ("web", "mobile", "desktop", "service").
    pub async fn sessions(
        &self,
        user: Option<&str>,
        class: Option<&str>,
    ) -> Result<Vec<SessionView>, AdminError> {
        let mut out: Vec<SessionView> = self
            .sessions
            .all()
            .await?
            .into_iter()
            .filter(|s| {
                !matches!(
                    s.record.state,
                    SessionState::Ended(_) | SessionState::Anonymous
                )
            })
            .filter(|s| user.is_none_or(|u| s.record.user.as_deref() == Some(u)))
            .filter(|s| class.is_none_or(|c| s.record.class == c))
            .map(|s| SessionView {
                service_account: s
                    .record
                    .user
                    .as_deref()
                    .is_some_and(|u| self.settings.service_accounts.get(u).is_some()),
                reference: short_ref(&s.digest).to_string(),
                user: s.record.user.clone().unwrap_or_default(),
                state: match s.record.state {
                    SessionState::Active => "active".into(),
                    _ => "password_ok".into(),
                },
                class: s.record.class.clone(),
                client_ip: s.record.client_ip.clone(),
                country: s.record.country.clone(),
                created_ms: s.record.created_ms,
                last_seen_ms: s.record.last_seen_ms,
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
        Ok(out)
    }

    /// End one session by its reference (the short id shown in lists).
    pub async fn revoke(&self, reference: &str, actor: &str) -> Result<(), AdminError> {
        let reference = reference.trim();
        if reference.len() < 8 {
            return Err(AdminError::NoSuchSession(reference.to_string()));
        }
        let found = self
            .sessions
            .all()
            .await?
            .into_iter()
            .find(|s| {
                s.digest.starts_with(reference) && !matches!(s.record.state, SessionState::Ended(_))
            })
            .ok_or_else(|| AdminError::NoSuchSession(reference.to_string()))?;
        self.sessions
            .end(
                &found.digest,
                found.record.user.as_deref(),
                EndReason::Revoked,
            )
            .await?;
        audit(
            "session_revoked",
            found.record.user.as_deref(),
            actor,
            Some(short_ref(&found.digest)),
        );
        Ok(())
    }

    /// Log out all users: every existing session ends at once.
    pub async fn logout_all(&self, now_ms: u64, actor: &str) -> Result<(), AdminError> {
        self.sessions.logout_all(now_ms).await?;
        audit("logout_all", None, actor, None);
        Ok(())
    }

    /// Log one user out everywhere.
    pub async fn logout_user(&self, user: &str, actor: &str) -> Result<usize, AdminError> {
        let n = self
            .sessions
            .end_user_sessions(user, "", EndReason::Revoked)
            .await?;
        audit("user_logged_out", Some(user), actor, None);
        Ok(n)
    }

    /// Everyone gatehouse has seen sign in (or an admin acted on).
    pub async fn users(&self) -> Result<Vec<UserView>, AdminError> {
        let names = self.store.set_members(&Key::Users).await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push(self.user(&name).await?);
        }
        Ok(out)
    }

    pub async fn user(&self, user: &str) -> Result<UserView, AdminError> {
        let profile = self.two_factor.profile(user).await?;
        let mode = self
            .settings
            .two_factor
            .mode_for(user, profile.two_factor_required);
        Ok(UserView {
            service_account: self.settings.service_accounts.get(user).is_some(),
            user: user.to_string(),
            two_factor_enrolled: self.two_factor.is_enrolled(user).await?,
            two_factor_required_by_admin: profile.two_factor_required,
            two_factor_mode: mode.as_str().to_string(),
            locked: self.lockout.is_locked(user).await?,
            first_seen_ms: profile.first_seen_ms,
            last_sign_in_ms: profile.last_sign_in_ms,
            active_sessions: self
                .sessions
                .of_user(user)
                .await?
                .iter()
                .filter(|s| s.record.state == SessionState::Active)
                .count(),
        })
    }

    pub async fn unlock(&self, user: &str, actor: &str) -> Result<bool, AdminError> {
        let was = self.lockout.unlock(user).await?;
        audit("user_unlocked", Some(user), actor, None);
        Ok(was)
    }

    /// Require 2FA for one user (or stop requiring it).
    pub async fn require_two_factor(
        &self,
        user: &str,
        required: bool,
        actor: &str,
    ) -> Result<(), AdminError> {
        self.two_factor.set_required(user, required).await?;
        audit(
            if required {
                "two_factor_required"
            } else {
                "two_factor_not_required"
            },
            Some(user),
            actor,
            None,
        );
        Ok(())
    }

    /// Remove a user's authenticator; with `reset` their sessions end too and
    /// the next sign-in enrolls afresh.
    pub async fn remove_two_factor(
        &self,
        user: &str,
        reset: bool,
        actor: &str,
    ) -> Result<bool, AdminError> {
        let had = self.two_factor.remove(user).await?;
        if reset {
            self.sessions
                .end_user_sessions(user, "", EndReason::TwoFactorReset)
                .await?;
        }
        audit(
            if reset {
                "two_factor_reset"
            } else {
                "two_factor_disabled"
            },
            Some(user),
            actor,
            None,
        );
        Ok(had)
    }
}

fn audit(event: &str, user: Option<&str>, actor: &str, session: Option<&str>) {
    Event {
        event,
        user,
        actor: Some(actor),
        session,
        ..Event::default()
    }
    .emit();
}
