//! Sign-in history: every attempt that reached a decision, per user, capped,
//! newest first.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginResult {
    Ok,
    BadPassword,
    BadCode,
    Locked,
    RefusedByArea,
}

impl LoginResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::BadPassword => "bad_password",
            LoginResult::BadCode => "bad_code",
            LoginResult::Locked => "locked",
            LoginResult::RefusedByArea => "refused_by_area",
        }
    }
}

/// One sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRecord {
    pub ts_ms: u64,
    pub user: String,
    pub ip: String,
    /// ISO code, or "unknown".
    pub country: String,
    pub user_agent: String,
    pub result: LoginResult,
}
