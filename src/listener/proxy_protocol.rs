//! The PROXY protocol (v1 and v2): the client address a trusted load
//! balancer in front of gatehouse states before the TLS handshake.

use super::*;
use tokio::io::AsyncReadExt;

/// The client address a trusted proxy states in a PROXY header (v1 or v2).
/// A PROXY header from anyone else closes the connection (SECURITY-TESTS 16).
pub(super) async fn proxy_protocol_source(
    tcp: &mut TcpStream,
    peer_ip: IpAddr,
    peer_trusted: bool,
    enabled: bool,
) -> io::Result<ClientIp> {
    if !enabled {
        return Ok(ClientIp::Known(peer_ip));
    }
    if !peer_trusted {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        if n == 1 && (first[0] == b'P' || first[0] == b'\r') {
            return Err(io::Error::other("PROXY header from an untrusted peer"));
        }
        return Ok(ClientIp::Known(peer_ip));
    }
    let header = read_proxy_header(tcp).await?;
    parse_proxy_header(&header)
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// RFC: a v1 line is at most 107 bytes including CRLF.
const V1_MAX: usize = 107;
const V2_MAX_EXTRA: usize = 512;

/// Read exactly one PROXY header (v1 line or v2 block) and nothing after it:
/// the bytes that follow belong to the TLS handshake. Generic over the reader
/// so the framing can be fuzzed without a socket.
pub async fn read_proxy_header<R: AsyncRead + Unpin>(tcp: &mut R) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 16];
    tcp.read_exact(&mut buf[..6]).await?;
    if &buf[..6] == b"PROXY " {
        buf.truncate(6);
        // Byte by byte so nothing after the header (the ClientHello) is consumed.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(io::Error::other("PROXY v1 line too long"));
            }
            buf.push(tcp.read_u8().await?);
        }
        return Ok(buf);
    }
    tcp.read_exact(&mut buf[6..16]).await?;
    if &buf[..12] != V2_SIGNATURE {
        return Err(io::Error::other("missing PROXY header from trusted proxy"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_EXTRA {
        return Err(io::Error::other("PROXY v2 header too long"));
    }
    buf.resize(16 + len, 0);
    tcp.read_exact(&mut buf[16..]).await?;
    Ok(buf)
}

/// The client address stated in a complete PROXY header (as read by
/// [`read_proxy_header`]); IPv4-mapped IPv6 sources are IPv4.
pub fn parse_proxy_header(bytes: &[u8]) -> io::Result<ClientIp> {
    use ppp::{v1, v2, HeaderResult};
    let bad = |what: &str| io::Error::other(format!("invalid PROXY header: {what}"));
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => ClientIp::Known(IpAddr::V4(a.source_address)),
            v1::Addresses::Tcp6(a) => ClientIp::Known(IpAddr::V6(a.source_address).to_canonical()),
            v1::Addresses::Unknown => ClientIp::Unknown,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                ClientIp::Known(IpAddr::V4(a.source_address))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                ClientIp::Known(IpAddr::V6(a.source_address).to_canonical())
            }
            // LOCAL (health checks) and UNSPEC/UNIX carry no client address.
            _ => ClientIp::Unknown,
        }),
        HeaderResult::V1(Err(_)) => Err(bad("v1")),
        HeaderResult::V2(Err(_)) => Err(bad("v2")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v1_and_v2_sources_are_read() {
        let v1 = parse_proxy_header(b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\r\n").expect("v1");
        assert_eq!(v1, ClientIp::Known("203.0.113.9".parse().expect("ip")));
        let unknown = parse_proxy_header(b"PROXY UNKNOWN\r\n").expect("v1 unknown");
        assert_eq!(unknown, ClientIp::Unknown);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse_proxy_header(&local).expect("v2 local"),
            ClientIp::Unknown
        );
    }
}
