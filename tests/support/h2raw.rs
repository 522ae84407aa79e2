//! A hand-rolled HTTP/2 client for hostile tests: frames written byte by
//! byte over a TLS connection with ALPN `h2`, so a test can send what a real
//! client library refuses to (connection headers, mismatched content-length,
//! raw bytes in `:path`, resets and floods).
//!
//! HPACK is written as "literal without indexing, new name, no Huffman"
//! (RFC 7541 §6.2.2), the one representation that needs no table. The
//! client announces SETTINGS_HEADER_TABLE_SIZE = 0, so the server's answers
//! use no dynamic table either and `:status` can be read without one.
#![allow(dead_code)]

use super::gateway::TestGateway;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// RFC 9113 §7 error codes.
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame as read from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// How the server answered one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response; the body as far as it came.
    Response { status: u16, body: String },
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection ended (or went quiet) without an answer.
    Closed,
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Response { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Refused before the request could reach anything: one of `statuses`,
    /// or a protocol error (RFC 9113 §8.1.1: a malformed request is a stream
    /// error of type PROTOCOL_ERROR, HTTP/2's "400"; h2 ends the whole
    /// connection for some, such as bytes that are not allowed in `:path`).
    pub fn is_refusal(&self, statuses: &[u16]) -> bool {
        match self {
            Outcome::Response { status, .. } => statuses.contains(status),
            Outcome::Reset(code) | Outcome::GoAway(code) => *code == PROTOCOL_ERROR,
            Outcome::Closed => false,
        }
    }
}

/// An open HTTP/2 connection written frame by frame.
pub struct RawH2 {
    pub tls: TlsStream<TcpStream>,
    inbox: Vec<u8>,
    next_stream: u32,
    /// Every frame read so far, for assertions and failure messages.
    pub log: Vec<Frame>,
}

impl RawH2 {
    /// TLS with ALPN `h2`, the connection preface and our SETTINGS.
    pub async fn open(gw: &TestGateway) -> RawH2 {
        let tls = gw.client().connect(gw.addr(), "localhost", &[b"h2"]).await;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "the gateway did not negotiate h2"
        );
        let mut h2 = RawH2 {
            tls,
            inbox: Vec::new(),
            next_stream: 1,
            log: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        // SETTINGS_HEADER_TABLE_SIZE (0x1) = 0.
        hello.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 0]));
        h2.write(&hello).await.expect("preface");
        h2
    }

    /// The id for the next new stream (odd, increasing).
    pub fn new_stream(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        id
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes).await?;
        self.tls.flush().await
    }

    pub async fn send(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        self.write(&frame(kind, flags, stream, payload)).await
    }

    /// The next frame within `wait`; `None` when the connection ends or goes
    /// quiet. SETTINGS from the server are acknowledged as they come.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(f) = self.parse_one() {
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    let _ = self.send(SETTINGS, ACK, 0, &[]).await;
                }
                self.log.push(f.clone());
                return Some(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout(left, self.tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.inbox.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
    }

    fn parse_one(&mut self) -> Option<Frame> {
        if self.inbox.len() < 9 {
            return None;
        }
        let len = (usize::from(self.inbox[0]) << 16)
            | (usize::from(self.inbox[1]) << 8)
            | usize::from(self.inbox[2]);
        if self.inbox.len() < 9 + len {
            return None;
        }
        let head: Vec<u8> = self.inbox.drain(..9 + len).collect();
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload: head[9..].to_vec(),
        })
    }

    /// Wait for the answer on `stream`: its response (until END_STREAM), a
    /// RST_STREAM, a GOAWAY or the end of the connection.
    pub async fn outcome(&mut self, stream: u32, wait: Duration) -> Outcome {
        let deadline = Instant::now() + wait;
        let mut status = None;
        let mut body = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(f) = self.next_frame(left).await else {
                return match status {
                    Some(status) => Outcome::Response {
                        status,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    },
                    None => Outcome::Closed,
                };
            };
            match f.kind {
                GOAWAY if status.is_none() => {
                    return Outcome::GoAway(f.error_code().unwrap_or(0));
                }
                RST_STREAM if f.stream == stream && status.is_none() => {
                    return Outcome::Reset(f.error_code().unwrap_or(0));
                }
                HEADERS if f.stream == stream => {
                    if status.is_none() {
                        status = Some(
                            response_status(header_block(&f))
                                .unwrap_or_else(|| panic!("unreadable :status in {f:?}")),
                        );
                    }
                    if f.flags & END_STREAM != 0 {
                        break;
                    }
                }
                DATA if f.stream == stream => {
                    body.extend_from_slice(data_payload(&f));
                    if f.flags & END_STREAM != 0 {
                        break;
                    }
                }
                RST_STREAM | GOAWAY if f.stream == stream || f.kind == GOAWAY => break,
                _ => {}
            }
        }
        Outcome::Response {
            status: status.unwrap_or(0),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// A whole request on a new stream: HEADERS (END_HEADERS, and END_STREAM
    /// when there is no body), then one DATA frame with the body.
    pub async fn request(&mut self, fields: &[(&[u8], &[u8])], body: Option<&[u8]>) -> Outcome {
        let stream = self.new_stream();
        let mut bytes = frame(
            HEADERS,
            END_HEADERS | if body.is_none() { END_STREAM } else { 0 },
            stream,
            &hpack(fields),
        );
        if let Some(b) = body {
            bytes.extend(frame(DATA, END_STREAM, stream, b));
        }
        if self.write(&bytes).await.is_err() {
            return Outcome::Closed;
        }
        self.outcome(stream, Duration::from_secs(10)).await
    }

    /// Read until the server ends the connection (or `wait` passes); the
    /// GOAWAY error code if one came.
    pub async fn goaway_then_close(&mut self, wait: Duration) -> (Option<u32>, bool) {
        let deadline = Instant::now() + wait;
        let mut goaway = self
            .log
            .iter()
            .find(|f| f.kind == GOAWAY)
            .and_then(Frame::error_code);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (goaway, false);
            }
            match self.next_frame(left).await {
                Some(f) if f.kind == GOAWAY => goaway = goaway.or(f.error_code()),
                Some(_) => {}
                None => return (goaway, Instant::now() < deadline),
            }
        }
    }
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(9 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields without indexing, new names, no
/// Huffman: any bytes go through exactly as given.
pub fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(&mut out, 7, 0, name.len());
        out.extend_from_slice(name);
        integer(&mut out, 7, 0, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// The usual request pseudo-headers for `path` on `localhost`, then `extra`.
pub fn get<'a>(path: &'a [u8], extra: &[(&'a [u8], &'a [u8])]) -> Vec<(&'a [u8], &'a [u8])> {
    method(b"GET", path, extra)
}

pub fn method<'a>(
    method: &'a [u8],
    path: &'a [u8],
    extra: &[(&'a [u8], &'a [u8])],
) -> Vec<(&'a [u8], &'a [u8])> {
    let mut v: Vec<(&[u8], &[u8])> = vec![
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", path),
    ];
    v.extend_from_slice(extra);
    v
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix.
fn integer(out: &mut Vec<u8>, n: u8, first: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn read_integer(bytes: &[u8], at: &mut usize, n: u8) -> Option<usize> {
    let max = (1usize << n) - 1;
    let mut v = usize::from(*bytes.get(*at)?) & max;
    *at += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        v += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// The header block fragment of a HEADERS frame (padding and priority removed).
fn header_block(f: &Frame) -> &[u8] {
    let mut start = 0;
    let mut end = f.payload.len();
    if f.flags & 0x8 != 0 {
        let pad = usize::from(f.payload.first().copied().unwrap_or(0));
        start += 1;
        end = end.saturating_sub(pad);
    }
    if f.flags & 0x20 != 0 {
        start += 5;
    }
    f.payload.get(start..end).unwrap_or_default()
}

fn data_payload(f: &Frame) -> &[u8] {
    if f.flags & 0x8 != 0 {
        let pad = usize::from(f.payload.first().copied().unwrap_or(0));
        return f
            .payload
            .get(1..f.payload.len().saturating_sub(pad))
            .unwrap_or_default();
    }
    &f.payload
}

/// `:status` is the first field of a response; static-table entries 8–14
/// are `:status` with the values below (RFC 7541 Appendix A).
fn response_status(block: &[u8]) -> Option<u16> {
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let mut at = 0;
    // Dynamic table size updates (001xxxxx) may come first.
    while block.get(at).is_some_and(|b| b & 0xe0 == 0x20) {
        read_integer(block, &mut at, 5)?;
    }
    let first = *block.get(at)?;
    if first & 0x80 != 0 {
        let idx = read_integer(block, &mut at, 7)?;
        return STATIC.get(idx.checked_sub(8)?).copied();
    }
    let prefix = if first & 0x40 != 0 { 6 } else { 4 };
    let idx = read_integer(block, &mut at, prefix)?;
    if !(8..=14).contains(&idx) {
        return None;
    }
    let huffman = block.get(at)? & 0x80 != 0;
    let len = read_integer(block, &mut at, 7)?;
    let raw = block.get(at..at + len)?;
    let text = if huffman {
        huffman_digits(raw)?
    } else {
        String::from_utf8(raw.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Huffman-decode a string of ASCII digits (RFC 7541 Appendix B: '0'–'2'
/// are the 5-bit codes 0–2, '3'–'9' the 6-bit codes 0x19–0x1f).
fn huffman_digits(raw: &[u8]) -> Option<String> {
    let bits: Vec<u8> = raw
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut i = 0;
    let take = |from: usize, n: usize| -> Option<u8> {
        let s = bits.get(from..from + n)?;
        Some(s.iter().fold(0, |acc, b| (acc << 1) | b))
    };
    while i < bits.len() {
        // What is left is all-ones padding (a prefix of EOS).
        if bits[i..].iter().all(|b| *b == 1) && bits.len() - i < 8 {
            break;
        }
        let five = take(i, 5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five));
            i += 5;
            continue;
        }
        let six = take(i, 6)?;
        if (0x19..=0x1f).contains(&six) {
            out.push(char::from(b'3' + (six - 0x19)));
            i += 6;
            continue;
        }
        return None;
    }
    Some(out)
}
