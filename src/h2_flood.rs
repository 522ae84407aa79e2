//! Frames that cost work and do nothing: an HTTP/2 client may send a few
//! SETTINGS, PING or PRIORITY frames, or an empty DATA frame, but a stream of
//! them is an attack (CVE-2019-9515 "Settings Flood", CVE-2019-9512 "Ping
//! Flood", CVE-2019-9516/9518 empty frames, SECURITY-TESTS 29). The h2 crate
//! keeps memory bounded for these but goes on answering them for as long as
//! the client likes; this watch reads the frame headers of the bytes the
//! client sends and says when a connection is past its budget, so the
//! listener can send GOAWAY and close it.
//!
//! Rapid reset and CONTINUATION floods are h2's own limits
//! (`max_pending_accept_reset_streams`, the CONTINUATION frame cap).

use std::time::{Duration, Instant};

/// Most do-nothing frames a client may send within [`WINDOW`]. A browser
/// sends a handful per connection; a flood sends thousands per second.
pub const MAX_IDLE_FRAMES: u32 = 256;
pub const WINDOW: Duration = Duration::from_secs(1);

/// RFC 9113 §3.4: the client connection preface.
const PREFACE_LEN: usize = 24;

const DATA: u8 = 0x0;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;

/// Follows the frame boundaries of a client's HTTP/2 byte stream.
#[derive(Debug)]
pub struct FrameWatch {
    preface_left: usize,
    head: [u8; 9],
    head_len: usize,
    payload_left: usize,
    window_start: Instant,
    idle_frames: u32,
    flooded: bool,
}

impl Default for FrameWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameWatch {
    pub fn new() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            head: [0; 9],
            head_len: 0,
            payload_left: 0,
            window_start: Instant::now(),
            idle_frames: 0,
            flooded: false,
        }
    }

    /// Account for `bytes` read from the client; true once it has sent more
    /// do-nothing frames than the budget allows (and from then on).
    pub fn observe(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() && !self.flooded {
            let skip = if self.preface_left > 0 {
                &mut self.preface_left
            } else {
                &mut self.payload_left
            };
            if *skip > 0 {
                let n = (*skip).min(bytes.len());
                *skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
            self.head_len += n;
            bytes = &bytes[n..];
            if self.head_len == 9 {
                self.head_len = 0;
                let len = (usize::from(self.head[0]) << 16)
                    | (usize::from(self.head[1]) << 8)
                    | usize::from(self.head[2]);
                self.payload_left = len;
                if does_nothing(self.head[3], self.head[4], len) {
                    self.count_idle(Instant::now());
                }
            }
        }
        self.flooded
    }

    fn count_idle(&mut self, now: Instant) {
        if now.duration_since(self.window_start) > WINDOW {
            self.window_start = now;
            self.idle_frames = 0;
        }
        self.idle_frames += 1;
        self.flooded = self.idle_frames > MAX_IDLE_FRAMES;
    }
}

fn does_nothing(kind: u8, flags: u8, len: usize) -> bool {
    match kind {
        DATA => len == 0 && flags & END_STREAM == 0,
        SETTINGS | PING => flags & ACK == 0,
        PRIORITY => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_normal_connection_is_never_flooded() {
        let mut w = FrameWatch::new();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(SETTINGS, 0, &[0, 4, 0, 1, 0, 0]));
        for _ in 0..10_000 {
            bytes.extend(frame(0x1, 0x5, b"header block"));
            bytes.extend(frame(DATA, END_STREAM, &[]));
            bytes.extend(frame(DATA, 0, &[7; 100]));
        }
        // Fed in odd-sized pieces, as reads arrive.
        assert!(!bytes.chunks(7).any(|c| w.observe(c)));
    }

    #[test]
    fn floods_of_settings_pings_or_empty_data_are_flooded() {
        for unit in [
            frame(SETTINGS, 0, &[]),
            frame(PING, 0, &[0; 8]),
            frame(DATA, 0, &[]),
            frame(PRIORITY, 0, &[0; 5]),
        ] {
            let mut w = FrameWatch::new();
            assert!(!w.observe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
            let flood: Vec<u8> = unit.repeat(MAX_IDLE_FRAMES as usize + 1);
            assert!(w.observe(&flood), "{unit:?}");
        }
    }

    #[test]
    fn acks_are_not_counted() {
        let mut w = FrameWatch::new();
        w.observe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let acks = [frame(SETTINGS, ACK, &[]), frame(PING, ACK, &[0; 8])].concat();
        assert!(!w.observe(&acks.repeat(1000)));
    }
}
