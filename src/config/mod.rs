//! Configuration: `raw` is the TOML as written (figment), `validate` turns it into
//! [`Settings`], reporting every problem at once, each with its key path.

pub mod duration;
pub mod raw;
pub mod validate;

use std::fmt;

/// One problem found in the configuration, with the key path that holds it
/// (e.g. `access.area[1].allow[3].cidr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}
