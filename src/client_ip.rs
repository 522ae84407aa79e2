//! Who is the client? The TCP peer (or the PROXY protocol source), unless that
//! peer is a trusted proxy; then the right-most X-Forwarded-For entry that is
//! not itself a trusted proxy. Every later stage uses only this address.
//!
//! Headers from untrusted peers are never believed (SECURITY-TESTS 13): a
//! client cannot pick its own address. A trusted proxy that sends a malformed
//! chain gets `Unknown`, never its own address (SECURITY-TESTS 14, 17).

use http::HeaderMap;
use std::fmt;
use std::net::IpAddr;

/// The client address every decision uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIp {
    Known(IpAddr),
    /// A trusted proxy said something we could not parse, or a PROXY v2
    /// LOCAL/UNKNOWN header: treated as "not on any list, no country".
    Unknown,
}

impl ClientIp {
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            ClientIp::Known(ip) => Some(*ip),
            ClientIp::Unknown => None,
        }
    }
}

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientIp::Known(ip) => write!(f, "{ip}"),
            ClientIp::Unknown => f.write_str("unknown"),
        }
    }
}

/// The peers allowed to speak for clients (`server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(crate::access::IpList);

impl TrustedProxies {
    pub fn new(list: crate::access::IpList) -> Self {
        Self(list)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip.to_canonical())
    }
}

/// Decide the client address for one request arriving from `peer` (the TCP
/// peer, or the source stated in a PROXY header that a trusted proxy sent).
pub fn resolve(peer: ClientIp, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientIp {
    let peer_ip = match peer {
        ClientIp::Known(ip) => ip.to_canonical(),
        ClientIp::Unknown => return ClientIp::Unknown,
    };
    if !trusted.contains(peer_ip) {
        return ClientIp::Known(peer_ip);
    }
    let mut lines = headers.get_all("x-forwarded-for").iter().peekable();
    if lines.peek().is_none() {
        // A trusted proxy talking for itself (health checks).
        return ClientIp::Known(peer_ip);
    }
    // Several header lines form one list, in order (RFC 9110 §5.3).
    let mut entries = Vec::new();
    for line in lines {
        let Ok(text) = line.to_str() else {
            return ClientIp::Unknown;
        };
        entries.extend(text.split(',').map(str::trim));
    }
    let mut leftmost = None;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_strict(entry) else {
            return ClientIp::Unknown;
        };
        if !trusted.contains(ip) {
            return ClientIp::Known(ip);
        }
        leftmost = Some(ip);
    }
    leftmost.map_or(ClientIp::Unknown, ClientIp::Known)
}

/// An address as a proxy writes it: no port, no zone id, no leading zeros or
/// octal (std's parsers already refuse those), IPv4-mapped IPv6 as IPv4.
pub fn parse_strict(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted() -> TrustedProxies {
        let raw = [crate::access::RawIpEntry::Plain("10.0.0.0/8".into())];
        TrustedProxies::new(crate::access::IpList::from_raw(&raw, "t").expect("list"))
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> ClientIp {
        ClientIp::Known(s.parse().expect("ip"))
    }

    #[test]
    fn untrusted_peer_cannot_claim_an_address() {
        let got = resolve(ip("198.51.100.7"), &xff(&["203.0.113.9"]), &trusted());
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn trusted_proxy_yields_rightmost_untrusted_entry() {
        let h = xff(&["203.0.113.9, 198.51.100.7"]);
        assert_eq!(resolve(ip("10.0.0.5"), &h, &trusted()), ip("198.51.100.7"));
        let split = xff(&["203.0.113.9", "198.51.100.7, 10.0.0.9"]);
        assert_eq!(
            resolve(ip("10.0.0.5"), &split, &trusted()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn garbage_from_trusted_proxy_is_unknown_never_the_proxy() {
        for bad in [
            "garbage",
            "unknown",
            "",
            "fe80::1%eth0",
            "203.000.113.009",
            "0313.0.113.9",
            "203.0.113.9:443",
        ] {
            assert_eq!(
                resolve(ip("10.0.0.5"), &xff(&[bad]), &trusted()),
                ClientIp::Unknown,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mapped_ipv6_is_ipv4() {
        let h = xff(&["::ffff:203.0.113.9"]);
        assert_eq!(resolve(ip("10.0.0.5"), &h, &trusted()), ip("203.0.113.9"));
        assert_eq!(
            resolve(ip("::ffff:198.51.100.7"), &HeaderMap::new(), &trusted()),
            ip("198.51.100.7")
        );
    }
}
