//! PROXY protocol v1/v2 (`listener::read_proxy_header` framing over a byte
//! stream, then `listener::parse_proxy_header`). Checked: the framing takes a
//! prefix of the stream, never more than one header (a v1 line of at most 107
//! bytes ending in CRLF, or a v2 block of exactly 16 + its stated length, at
//! most 512), so the TLS ClientHello after it is untouched; a stated source is
//! canonical and is the one written in the header.
#![no_main]

use gatehouse::client_ip::ClientIp;
use gatehouse::listener::{parse_proxy_header, read_proxy_header};
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fuzz_target!(|data: &[u8]| {
    // Any bytes at all: refused or read, never a panic.
    let _ = parse_proxy_header(data);

    let mut stream = data;
    let mut cx = Context::from_waker(Waker::noop());
    // Reading from a slice never waits.
    let Poll::Ready(read) = pin!(read_proxy_header(&mut stream)).poll(&mut cx) else {
        panic!("reading from a slice returned Pending");
    };
    let Ok(header) = read else {
        return;
    };
    assert!(
        data.starts_with(&header),
        "header is not a prefix of the stream"
    );
    assert_eq!(
        stream,
        &data[header.len()..],
        "consumed more than the header"
    );
    if header.starts_with(b"PROXY ") {
        assert!(header.len() <= 107, "v1 line of {} bytes", header.len());
        assert!(header.ends_with(b"\r\n"));
        assert_eq!(
            header.windows(2).position(|w| w == b"\r\n"),
            Some(header.len() - 2),
            "read past the first CRLF"
        );
    } else {
        assert!(header.starts_with(V2_SIGNATURE));
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        assert!(len <= 512);
        assert_eq!(header.len(), 16 + len);
    }

    let Ok(client) = parse_proxy_header(&header) else {
        return;
    };
    let ClientIp::Known(ip) = client else {
        return;
    };
    assert_eq!(ip, ip.to_canonical(), "{ip} is not canonical");
    let stated = if header.starts_with(b"PROXY ") {
        let text = std::str::from_utf8(&header).expect("a parsed v1 line is ASCII");
        let source = text
            .split(' ')
            .nth(2)
            .expect("a parsed v1 line has a source");
        source.parse::<IpAddr>().expect("ppp parsed it")
    } else {
        assert_eq!(header[12], 0x21, "an address from a non-PROXY v2 command");
        match header[13] >> 4 {
            1 => IpAddr::V4(Ipv4Addr::new(
                header[16], header[17], header[18], header[19],
            )),
            2 => {
                let octets: [u8; 16] = header[16..32].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            family => panic!("an address from v2 family {family}"),
        }
    };
    assert_eq!(ip, stated.to_canonical(), "stated source differs");
});
