//! Client address from X-Forwarded-For (`client_ip::resolve`), and the
//! forwarding fields gatehouse writes (`proxy::headers`, including RFC 7239
//! `Forwarded`).
//!
//! Input lines: the TCP peer; the trusted proxies (comma-separated list
//! entries); the Host; then header lines: `name: value` for any field, or a
//! bare value for another X-Forwarded-For line.
//!
//! Checked: an untrusted peer is always the client; a resolved address is
//! canonical and, for a trusted peer, one of the chain's entries, trusted only
//! when the whole chain is; after the outgoing rewrite no client claim
//! survives, each forwarding field is there once, a downstream gatehouse that
//! trusts us reads back exactly our client, and our `Forwarded` element
//! parses (RFC 7239 §4) to the client, `https` and the host.
#![no_main]

use gatehouse::access::{IpEntry, IpList, IpSpec};
use gatehouse::client_ip::{parse_strict, resolve, ClientIp, TrustedProxies};
use gatehouse::proxy::headers::{set_forwarded, strip_client_claims, strip_hop_by_hop};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let peer = match std::str::from_utf8(lines.next().unwrap_or_default()) {
        Ok(text) => text
            .parse::<IpAddr>()
            .map_or(ClientIp::Unknown, ClientIp::Known),
        Err(_) => ClientIp::Unknown,
    };
    let trusted_text = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let entries: Vec<IpEntry> = trusted_text
        .split(',')
        .filter_map(|e| e.trim().parse::<IpSpec>().ok())
        .map(|spec| IpEntry::new(spec, ""))
        .collect();
    let trusted = TrustedProxies::new(IpList::new(entries));
    // The gate takes the host from a Host field it could read as ASCII.
    let host = HeaderValue::from_bytes(lines.next().unwrap_or_default())
        .ok()
        .and_then(|v| v.to_str().ok().map(str::to_owned))
        .unwrap_or_default();

    let mut headers = HeaderMap::new();
    for line in lines.take(32) {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) if !line.starts_with(b" ") => (&line[..i], line[i + 1..].trim_ascii_start()),
            _ => (&b"x-forwarded-for"[..], line),
        };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(name, value);
    }

    // Incoming: who is the client?
    let client = resolve(peer, &headers, &trusted);
    check_resolved(peer, &headers, &trusted, client);

    // Outgoing: the request gatehouse forwards upstream.
    let mut out = headers.clone();
    strip_hop_by_hop(&mut out);
    strip_client_claims(&mut out);
    for name in out.keys() {
        let n = name.as_str();
        assert!(
            !n.contains('_') && !n.starts_with("x-gatehouse"),
            "{n} survived the strip"
        );
    }
    set_forwarded(&mut out, client, &host);
    for name in [
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-host",
        "true-client-ip",
        "x-client-ip",
    ] {
        assert!(out.get_all(name).iter().count() <= 1, "{name} twice");
    }
    assert_eq!(out.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(out.get_all("x-real-ip").iter().count(), 1);
    for name in [
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "x-original-url",
    ] {
        assert!(out.get(name).is_none(), "client claim {name} forwarded");
    }

    // A second gatehouse behind this one, trusting it, sees the same client.
    let us: IpAddr = "10.255.255.254".parse().expect("literal");
    let downstream_trust =
        TrustedProxies::new(IpList::new(vec![IpEntry::new(IpSpec::Single(us), "")]));
    let seen = resolve(ClientIp::Known(us), &out, &downstream_trust);
    match client {
        ClientIp::Known(ip) if ip != us => assert_eq!(seen, client, "{client} read back as {seen}"),
        ClientIp::Known(_) => {}
        ClientIp::Unknown => assert_eq!(seen, ClientIp::Unknown),
    }

    let forwarded: Vec<&HeaderValue> = out.get_all("forwarded").iter().collect();
    assert!(forwarded.len() <= 1, "Forwarded twice");
    if let Some(value) = forwarded.first() {
        let text = value.to_str().expect("we write visible ASCII only");
        let pairs = parse_forwarded_element(text)
            .unwrap_or_else(|| panic!("our Forwarded {text:?} does not parse"));
        let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["for", "proto", "host"], "{text:?}");
        let for_value = match client {
            ClientIp::Known(IpAddr::V6(v6)) => format!("[{v6}]"),
            other => other.to_string(),
        };
        assert_eq!(pairs[0].1, for_value, "{text:?}");
        assert_eq!(pairs[1].1, "https", "{text:?}");
        assert_eq!(pairs[2].1, host.replace(['"', '\\'], ""), "{text:?}");
    }
});

fn check_resolved(peer: ClientIp, headers: &HeaderMap, trusted: &TrustedProxies, got: ClientIp) {
    let ClientIp::Known(peer_ip) = peer else {
        assert_eq!(got, ClientIp::Unknown, "unknown peer resolved to {got}");
        return;
    };
    if let ClientIp::Known(ip) = got {
        assert_eq!(ip, ip.to_canonical(), "{ip} is not canonical");
    }
    if !trusted.contains(peer_ip) {
        assert_eq!(
            got,
            ClientIp::Known(peer_ip.to_canonical()),
            "untrusted peer believed"
        );
        return;
    }
    let lines: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    if lines.is_empty() {
        assert_eq!(got, ClientIp::Known(peer_ip.to_canonical()));
        return;
    }
    let Some(chain) = lines
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<&str>>>()
    else {
        assert_eq!(
            got,
            ClientIp::Unknown,
            "undecodable chain resolved to {got}"
        );
        return;
    };
    let parsed: Vec<Option<IpAddr>> = chain
        .iter()
        .flat_map(|l| l.split(','))
        .map(|e| parse_strict(e.trim()))
        .collect();
    let ClientIp::Known(ip) = got else {
        return;
    };
    assert!(
        parsed.contains(&Some(ip)),
        "{ip} is not in the chain {chain:?}"
    );
    if trusted.contains(ip) {
        // Only when every entry is trusted, and then the left-most one.
        assert!(parsed
            .iter()
            .all(|p| p.is_some_and(|p| trusted.contains(p))));
        assert_eq!(parsed.first().copied().flatten(), Some(ip));
    } else {
        // The right-most untrusted entry: everything to its right is trusted.
        let at = parsed
            .iter()
            .rposition(|p| *p == Some(ip))
            .expect("present");
        assert!(parsed[at + 1..]
            .iter()
            .all(|p| p.is_some_and(|p| trusted.contains(p))));
    }
}

/// One RFC 7239 forwarded-element: `pair *( ";" pair )`, each value a token or
/// a quoted-string (RFC 9110 §5.6.4). Returns the (lower-cased name, value) pairs.
fn parse_forwarded_element(text: &str) -> Option<Vec<(String, String)>> {
    let bytes = text.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        if i == start || bytes.get(i) != Some(&b'=') {
            return None;
        }
        let name = text[start..i].to_ascii_lowercase();
        i += 1;
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match *bytes.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        value.push(*bytes.get(i + 1)?);
                        i += 2;
                    }
                    b => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else {
            let start = i;
            while i < bytes.len() && is_tchar(bytes[i]) {
                i += 1;
            }
            if i == start {
                return None;
            }
            value.extend_from_slice(&bytes[start..i]);
        }
        pairs.push((name, String::from_utf8(value).ok()?));
        match bytes.get(i) {
            None => return Some(pairs),
            Some(b';') => i += 1,
            Some(_) => return None,
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
