//! Service accounts (`[[policy.user]]`): integration users who sign in through
//! the dashboard's login API from known addresses only. Their sessions are
//! usable only from those addresses — checked on every request, not only at
//! sign-in, so a leaked session cookie is useless elsewhere.

use crate::access::IpList;
use std::net::IpAddr;
use std::time::Duration;

/// The session class service accounts' sessions get (admin lists filter by it).
pub const SERVICE_CLASS: &str = "service";

/// One validated `[[policy.user]]`.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    /// Normalised username.
    pub name: String,
    /// The only addresses its sign-ins and sessions are accepted from.
    pub allow: IpList,
    /// Its sessions' own absolute lifetime; `None` = the class/session rule.
    pub absolute_timeout: Option<Duration>,
}

/// All service accounts of one configuration.
#[derive(Debug, Clone, Default)]
pub struct ServiceAccounts(pub Vec<ServiceAccount>);

impl ServiceAccounts {
    pub fn get(&self, user: &str) -> Option<&ServiceAccount> {
        self.0.iter().find(|a| a.name == user)
    }

    /// May `user` sign in or use a session from `client`? Everyone who is not
    /// a service account may (their addresses are the areas' business); a
    /// service account only from its list, and never from an unknown address.
    pub fn admits(&self, user: &str, client: Option<IpAddr>) -> bool {
        match self.get(user) {
            None => true,
            Some(a) => client.is_some_and(|ip| a.allow.contains(ip.to_canonical())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> ServiceAccounts {
        ServiceAccounts(vec![ServiceAccount {
            name: "crm@example.com".into(),
            allow: IpList::from_raw(
                &[crate::access::RawIpEntry::Plain("203.0.113.10".into())],
                "t",
            )
            .expect("list"),
            absolute_timeout: None,
        }])
    }

    #[test]
    fn service_account_is_admitted_only_from_its_addresses() {
        let a = accounts();
        assert!(a.admits("crm@example.com", "203.0.113.10".parse().ok()));
        assert!(a.admits("crm@example.com", "::ffff:203.0.113.10".parse().ok()));
        assert!(!a.admits("crm@example.com", "203.0.113.11".parse().ok()));
        assert!(!a.admits("crm@example.com", None));
        assert!(a.admits("alice@example.com", "198.51.100.7".parse().ok()));
    }
}
