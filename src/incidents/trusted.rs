//! Addresses and networks an admin marked safe for an email domain.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One safe entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafeEntry {
    pub network: IpNet,
    pub description: String,
    pub added_ms: u64,
    pub added_by: String,
}

/// Why an entry cannot be marked safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafeError {
    #[error("a description is required: say whose network this is")]
    NoDescription,
    #[error("prefix /{0} is out of range: IPv4 /22 to /32, IPv6 /48 to /128")]
    Prefix(u8),
    #[error("not an IP address: {0:?}")]
    Address(String),
    #[error("not a domain: {0:?}")]
    Domain(String),
}

/// The network to mark: `ip` widened to `prefix` bits (IPv4 /22–/32, IPv6
/// /48–/128; wider networks would hide too many strangers).
pub fn network(ip: &str, prefix: Option<u8>) -> Result<IpNet, SafeError> {
    let addr: IpAddr = ip
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| SafeError::Address(ip.to_string()))?
        .to_canonical();
    let (min, max) = match addr {
        IpAddr::V4(_) => (22, 32),
        IpAddr::V6(_) => (48, 128),
    };
    let p = prefix.unwrap_or(max);
    if !(min..=max).contains(&p) {
        return Err(SafeError::Prefix(p));
    }
    IpNet::new(addr, p)
        .map(|n| n.trunc())
        .map_err(|_| SafeError::Prefix(p))
}

pub fn check_description(text: &str) -> Result<String, SafeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SafeError::NoDescription);
    }
    Ok(t.chars().filter(|c| !c.is_control()).take(200).collect())
}

pub fn check_domain(domain: &str) -> Result<String, SafeError> {
    let d = domain.trim().to_ascii_lowercase();
    if d.is_empty() || d.contains(['@', '/', ' ']) {
        return Err(SafeError::Domain(domain.to_string()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_from_31_to_22_are_accepted_and_wider_ones_refused() {
        assert_eq!(
            network("89.160.20.77", Some(24)).expect("net").to_string(),
            "89.160.20.0/24"
        );
        assert_eq!(
            network("89.160.20.77", Some(31)).expect("net").to_string(),
            "89.160.20.76/31"
        );
        assert_eq!(
            network("89.160.20.77", None).expect("net").to_string(),
            "89.160.20.77/32"
        );
        assert_eq!(
            network("89.160.20.77", Some(21)),
            Err(SafeError::Prefix(21))
        );
        assert_eq!(network("2001:db8::1", Some(47)), Err(SafeError::Prefix(47)));
        assert!(network("2001:db8::1", Some(64)).is_ok());
        assert_eq!(check_description("  "), Err(SafeError::NoDescription));
    }
}
