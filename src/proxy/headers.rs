//! Header hygiene between client, gateway and upstream.

use crate::client_ip::ClientIp;
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Hop-by-hop fields (RFC 9110 §7.6.1) that never cross the gateway.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Fields a client could use to claim an identity, an address or a different
/// URL. They are removed from every request before gatehouse sets its own
/// (SECURITY-TESTS 13, 18, 19, 20).
fn is_client_claim(name: &str) -> bool {
    matches!(
        name,
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-server"
            | "x-real-ip"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "fastly-client-ip"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-original-forwarded-for"
    )
}

// The fields gatehouse sets itself, named once (no parsing per request).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = header::FORWARDED;

/// Remove hop-by-hop fields, including every field the `Connection` header
/// names. Names listed in `Connection` are removed only when they are not
/// headers gatehouse sets itself afterwards, so `Connection: close,
/// X-Forwarded-For` cannot make gatehouse's own fields disappear.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a handful), rather than one hashed
    // lookup per listed name: most requests have nothing to remove, and then
    // nothing is allocated.
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    doomed.extend(
        headers
            .keys()
            .filter(|k| is_hop_by_hop(k.as_str()))
            .cloned(),
    );
    for name in doomed {
        headers.remove(&name);
    }
}

/// Remove every field by which a client could claim an address, identity or
/// URL, and every field whose name contains `_` (CGI-style upstreams map `_`
/// and `-` to the same variable, so `X_Gatehouse_User` would alias
/// `X-Gatehouse-User`; nginx drops them by default for the same reason).
pub fn strip_client_claims(headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let n = k.as_str();
            is_client_claim(n) || n.contains('_') || n.starts_with("x-gatehouse")
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Set the forwarding fields from what gatehouse established itself: the
/// values are replaced, never appended to.
pub fn set_forwarded(headers: &mut HeaderMap, client: ClientIp, host: &str) {
    // The host was validated by the gate (no quotes or backslashes); the
    // removal is a second line of defence inside the quoted-string.
    let host_q: Cow<'_, str> = if host.contains(['"', '\\']) {
        Cow::Owned(host.replace(['"', '\\'], ""))
    } else {
        Cow::Borrowed(host)
    };
    // Every value is a slice of `Forwarded`'s, which holds the address and
    // the host: one allocation for the five fields, on every request (five
    // before).
    let v6 = matches!(client, ClientIp::Known(IpAddr::V6(_)));
    let mut buf = BytesMut::with_capacity(host_q.len() + 64);
    buf.extend_from_slice(if v6 { &b"for=\"["[..] } else { b"for=" });
    let ip = buf.len();
    push_ip(&mut buf, client);
    let ip = ip..buf.len();
    buf.extend_from_slice(if v6 {
        &b"]\";proto=https;host=\""[..]
    } else {
        b";proto=https;host=\""
    });
    let host = buf.len();
    buf.extend_from_slice(host_q.as_bytes());
    let host = host..buf.len();
    buf.extend_from_slice(b"\"");
    let forwarded = buf.freeze();
    // A request's map is sized for the fields it came with; growing it
    // once beats rehashing on the way.
    headers.reserve(5);
    if let Ok(v) = HeaderValue::from_maybe_shared(forwarded.slice(ip)) {
        headers.insert(X_FORWARDED_FOR, v.clone());
        headers.insert(X_REAL_IP, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    // Visible ASCII only, as `HeaderValue::from_str` demands (`from_bytes`
    // would let other bytes through); else no field names the host.
    if host_q
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
    {
        if let Ok(v) = HeaderValue::from_maybe_shared(forwarded.slice(host)) {
            headers.insert(X_FORWARDED_HOST, v);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(forwarded) {
            headers.insert(FORWARDED, v);
        }
    }
}

/// The client's address as text. IPv4 is written digit by digit: through
/// `fmt` it was a third of the cost of setting the forwarding fields.
fn push_ip(buf: &mut BytesMut, client: ClientIp) {
    let ClientIp::Known(IpAddr::V4(v4)) = client else {
        // Writing into a BytesMut cannot fail.
        let _ = write!(buf, "{client}");
        return;
    };
    // Into an array, then one copy: pushed byte by byte into the buffer it
    // cost more than `fmt` saved.
    let mut text = [0u8; 15];
    let mut n = 0;
    let mut push = |b: u8| {
        if let Some(slot) = text.get_mut(n) {
            *slot = b;
            n += 1;
        }
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            push(b'.');
        }
        let skip = match octet {
            100.. => 0,
            10..=99 => 1,
            _ => 2,
        };
        for d in [octet / 100, octet / 10 % 10, octet % 10]
            .into_iter()
            .skip(skip)
        {
            push(b'0' + d);
        }
    }
    buf.extend_from_slice(text.get(..n).unwrap_or_default());
}

/// A redirect the dashboard wrote with its own address (what it sees when
/// `upstream.preserve_host = false`) or with the public host over plain
/// http (it cannot know TLS ended in front of it) points at the public https
/// origin instead, as nginx's `proxy_redirect default` does: the browser
/// must never be sent to the dashboard directly or off TLS. Other absolute
/// Locations (another site, on purpose) are left alone.
pub fn make_location_public(headers: &mut HeaderMap, upstream_authority: &str, public_host: &str) {
    let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let public = public_location(location, upstream_authority, public_host);
    if let Some(v) = public.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, v);
    }
}

/// The public form of an absolute `location`, or None when it stays as it is.
pub fn public_location(
    location: &str,
    upstream_authority: &str,
    public_host: &str,
) -> Option<String> {
    let (scheme, rest) = location.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return None;
    }
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    // "host" and "host:80" are one authority over http (":443" over https).
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    let bare = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_string();
    let to_upstream = same(&bare(authority), &bare(upstream_authority));
    let public_over_http = scheme == "http" && same(authority, public_host);
    if !to_upstream && !public_over_http {
        return None;
    }
    let tail = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Some(format!("https://{public_host}{tail}"))
}

/// Is this an HTTP/1.1 protocol upgrade (websocket) request or response?
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    headers.get(header::UPGRADE).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_fields_are_removed_but_gatehouse_sets_its_own_after() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, X-Forwarded-For, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        strip_hop_by_hop(&mut h);
        strip_client_claims(&mut h);
        set_forwarded(
            &mut h,
            ClientIp::Known("198.51.100.7".parse().expect("ip")),
            "dash.example.com",
        );
        assert!(h.get("x-secret").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"198.51.100.7"[..])
        );
    }

    fn ip_text(client: ClientIp) -> String {
        let mut buf = BytesMut::new();
        push_ip(&mut buf, client);
        String::from_utf8(buf.to_vec()).expect("ascii")
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.0.2.7",
            "10.200.3.45",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("ip");
            assert_eq!(ip_text(ClientIp::Known(ip)), ip.to_string());
        }
        for o in 0..=255u8 {
            let ip = std::net::IpAddr::from([o, 255 - o, o / 3, o]);
            assert_eq!(ip_text(ClientIp::Known(ip)), ip.to_string());
        }
        assert_eq!(ip_text(ClientIp::Unknown), "unknown");
    }

    #[test]
    fn forwarding_fields_name_the_client_and_host_as_rfc_7239_quotes_them() {
        let fields = |client: ClientIp, host: &str| {
            let mut h = HeaderMap::new();
            set_forwarded(&mut h, client, host);
            let get = |n: &str| h.get(n).map(|v| v.to_str().expect("ascii").to_owned());
            [
                get("forwarded"),
                get("x-forwarded-for"),
                get("x-real-ip"),
                get("x-forwarded-host"),
                get("x-forwarded-proto"),
            ]
        };
        let v4 = ClientIp::Known("192.0.2.7".parse().expect("ip"));
        let v6 = ClientIp::Known("2001:db8::1".parse().expect("ip"));
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            fields(v4, "dash.example.com:8443"),
            [
                some("for=192.0.2.7;proto=https;host=\"dash.example.com:8443\""),
                some("192.0.2.7"),
                some("192.0.2.7"),
                some("dash.example.com:8443"),
                some("https"),
            ]
        );
        // RFC 7239 §6: an IPv6 node is bracketed and quoted.
        assert_eq!(
            fields(v6, "[2001:db8::2]"),
            [
                some("for=\"[2001:db8::1]\";proto=https;host=\"[2001:db8::2]\""),
                some("2001:db8::1"),
                some("2001:db8::1"),
                some("[2001:db8::2]"),
                some("https"),
            ]
        );
        assert_eq!(
            fields(ClientIp::Unknown, "a\"b\\c")[..2],
            [
                some("for=unknown;proto=https;host=\"abc\""),
                some("unknown")
            ]
        );
        // A host that is no header value (the gate refuses it first) is not
        // named at all; the client still is.
        assert_eq!(
            fields(v4, "d\u{e9}.example"),
            [
                None,
                some("192.0.2.7"),
                some("192.0.2.7"),
                None,
                some("https")
            ]
        );
        assert_eq!(
            fields(v4, "a\nb"),
            [
                None,
                some("192.0.2.7"),
                some("192.0.2.7"),
                None,
                some("https")
            ]
        );
    }

    #[test]
    fn underscore_lookalikes_and_identity_fields_are_stripped() {
        let mut h = HeaderMap::new();
        for n in [
            "x_gatehouse_user",
            "x-gatehouse-user",
            "x-original-url",
            "x-rewrite-url",
            "true-client-ip",
            "x_forwarded_for",
        ] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_static("admin"),
            );
        }
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_client_claims(&mut h);
        assert_eq!(h.len(), 1);
    }
}

#[cfg(test)]
mod location_tests {
    use super::public_location;

    #[test]
    fn redirects_to_the_dashboards_own_address_go_to_the_public_origin() {
        let up = "127.0.0.1:8080";
        let public = "pbx.example.com";
        assert_eq!(
            public_location("http://127.0.0.1:8080/home?x=1", up, public).as_deref(),
            Some("https://pbx.example.com/home?x=1")
        );
        assert_eq!(
            public_location("http://127.0.0.1:8080", up, public).as_deref(),
            Some("https://pbx.example.com/")
        );
        // The public host over plain http: TLS ended in front of the dashboard.
        assert_eq!(
            public_location("http://PBX.example.com/calls", up, public).as_deref(),
            Some("https://pbx.example.com/calls")
        );
        assert_eq!(
            public_location("http://dash:80/x", "dash", public).as_deref(),
            Some("https://pbx.example.com/x")
        );
    }

    #[test]
    fn other_locations_are_left_alone() {
        let up = "127.0.0.1:8080";
        let public = "pbx.example.com";
        for loc in [
            "/home",
            "https://pbx.example.com/ok",
            "https://sso.example.com/login",
            "http://127.0.0.1:8081/other-port",
            "http://user@127.0.0.1:8080/userinfo",
            "javascript://127.0.0.1:8080/x",
            "//127.0.0.1:8080/x",
        ] {
            assert_eq!(public_location(loc, up, public), None, "{loc}");
        }
    }
}
