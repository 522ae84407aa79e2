//! The stored form of a session record: a compact binary encoding read on
//! every request (decoding the JSON form was 15 % of the user-space
//! instructions of a proxied request), with records in the earlier JSON form
//! still read, so sessions survive an upgrade.
//!
//! Layout (all integers big-endian): the format byte [`FORMAT`], then the
//! fields of [`SessionRecord`] in declaration order. A string or byte string
//! is a `u32` length and its bytes; an `Option` is a tag byte (0 = none,
//! 1 = some) and the value; a `bool` one byte (0 or 1); enums one byte. The
//! vault is a `u32` count of cookies, each name, value, path, expiry.
//! Anything else (unknown tags, truncation, trailing bytes, invalid UTF-8)
//! is a corrupt record, never a panic.

use super::record::{EndReason, SecondFactor, SessionRecord, SessionState};
use super::vault::{Vault, VaultCookie};

/// First byte of the binary form; never `{`, so JSON records are told apart.
pub const FORMAT: u8 = 0x01;

/// Why stored bytes are not a session record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("undecodable session record")]
pub struct Undecodable;

pub fn encode(rec: &SessionRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.0.push(FORMAT);
    w.opt_str(rec.user.as_deref());
    w.0.extend_from_slice(&state_bytes(rec.state));
    w.u64(rec.created_ms);
    w.u64(rec.last_seen_ms);
    w.str(&rec.class);
    w.str(&rec.client_ip);
    w.opt_str(rec.country.as_deref());
    w.str(&rec.user_agent);
    let cookies = rec.vault.cookies();
    w.u32(u32::try_from(cookies.len()).unwrap_or(u32::MAX));
    for c in cookies {
        w.str(&c.name);
        w.str(&c.value);
        w.str(&c.path);
        w.opt_u64(c.expires_ms);
    }
    w.str(&rec.csrf);
    w.opt_str(rec.return_to.as_deref());
    match rec.second_factor {
        None => w.0.push(0),
        Some(SecondFactor::Challenge) => w.0.push(1),
        Some(SecondFactor::Enroll) => w.0.push(2),
    }
    match &rec.pending_seed {
        None => w.0.push(0),
        Some(seed) => {
            w.0.push(1);
            w.bytes(seed);
        }
    }
    w.bool(rec.two_factor_passed);
    w.bool(rec.password_expired);
    w.str(&rec.area);
    w.bool(rec.two_factor_waived_by_area);
    w.opt_u64(rec.lifetime_ms);
    w.bool(rec.api_challenge);
    w.0
}

pub fn decode(bytes: &[u8]) -> Result<SessionRecord, Undecodable> {
    match bytes.first() {
        Some(&FORMAT) => {}
        // A record written before the binary form.
        Some(b'{') => return serde_json::from_slice(bytes).map_err(|_| Undecodable),
        _ => return Err(Undecodable),
    }
    let mut r = Reader(&bytes[1..]);
    let user = r.opt_str()?;
    let state = r.state()?;
    let created_ms = r.u64()?;
    let last_seen_ms = r.u64()?;
    let class = r.str()?;
    let client_ip = r.str()?;
    let country = r.opt_str()?;
    let user_agent = r.str()?;
    let count = r.u32()? as usize;
    // Each cookie takes at least 13 bytes: a count larger than the input
    // allows is corrupt, and never sizes an allocation.
    if count > r.0.len() / 13 {
        return Err(Undecodable);
    }
    let mut cookies = Vec::with_capacity(count);
    for _ in 0..count {
        cookies.push(VaultCookie {
            name: r.str()?,
            value: r.str()?,
            path: r.str()?,
            expires_ms: r.opt_u64()?,
        });
    }
    let csrf = r.str()?;
    let return_to = r.opt_str()?;
    let second_factor = match r.u8()? {
        0 => None,
        1 => Some(SecondFactor::Challenge),
        2 => Some(SecondFactor::Enroll),
        _ => return Err(Undecodable),
    };
    let pending_seed = match r.u8()? {
        0 => None,
        1 => Some(r.bytes()?.to_vec()),
        _ => return Err(Undecodable),
    };
    let rec = SessionRecord {
        user,
        state,
        created_ms,
        last_seen_ms,
        class,
        client_ip,
        country,
        user_agent,
        vault: Vault::from_cookies(cookies),
        csrf,
        return_to,
        second_factor,
        pending_seed,
        two_factor_passed: r.bool()?,
        password_expired: r.bool()?,
        area: r.str()?,
        two_factor_waived_by_area: r.bool()?,
        lifetime_ms: r.opt_u64()?,
        api_challenge: r.bool()?,
    };
    if !r.0.is_empty() {
        return Err(Undecodable);
    }
    Ok(rec)
}

fn state_bytes(state: SessionState) -> [u8; 2] {
    match state {
        SessionState::Anonymous => [0, 0],
        SessionState::PasswordOk => [1, 0],
        SessionState::Active => [2, 0],
        SessionState::Ended(reason) => [
            3,
            match reason {
                EndReason::Logout => 0,
                EndReason::Timeout => 1,
                EndReason::Idle => 2,
                EndReason::Replaced => 3,
                EndReason::Revoked => 4,
                EndReason::LogoutAll => 5,
                EndReason::TwoFactorReset => 6,
            },
        ],
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, n: u32) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn bool(&mut self, b: bool) {
        self.0.push(u8::from(b));
    }
    fn bytes(&mut self, b: &[u8]) {
        // Fields are bounded far below 4 GiB (header and record limits);
        // saturating keeps a mad length from wrapping into a valid one.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
        }
    }
    fn opt_u64(&mut self, n: Option<u64>) {
        match n {
            None => self.0.push(0),
            Some(n) => {
                self.0.push(1);
                self.u64(n);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Undecodable> {
        if self.0.len() < n {
            return Err(Undecodable);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Undecodable> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Undecodable> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Undecodable> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bool(&mut self) -> Result<bool, Undecodable> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Undecodable),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8], Undecodable> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<String, Undecodable> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Undecodable)
    }
    fn opt_str(&mut self) -> Result<Option<String>, Undecodable> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(Undecodable),
        }
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, Undecodable> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.u64().map(Some),
            _ => Err(Undecodable),
        }
    }
    fn state(&mut self) -> Result<SessionState, Undecodable> {
        let b = self.take(2)?;
        Ok(match (b[0], b[1]) {
            (0, 0) => SessionState::Anonymous,
            (1, 0) => SessionState::PasswordOk,
            (2, 0) => SessionState::Active,
            (3, r) => SessionState::Ended(match r {
                0 => EndReason::Logout,
                1 => EndReason::Timeout,
                2 => EndReason::Idle,
                3 => EndReason::Replaced,
                4 => EndReason::Revoked,
                5 => EndReason::LogoutAll,
                6 => EndReason::TwoFactorReset,
                _ => return Err(Undecodable),
            }),
            _ => return Err(Undecodable),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderMap, HeaderValue, SET_COOKIE};

    fn sample() -> SessionRecord {
        let mut vault = Vault::default();
        let mut h = HeaderMap::new();
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("PBXSESSID=abc; Path=/; HttpOnly"),
        );
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("B=2; Max-Age=10; HttpOnly; Path=/admin"),
        );
        vault.absorb(&mut h, "/login", 1_000);
        SessionRecord {
            user: Some("ålice@example.com".into()),
            state: SessionState::Active,
            created_ms: 1_795_986_020_006,
            last_seen_ms: 1_795_986_020_017,
            class: "web".into(),
            client_ip: "2001:db8::1".into(),
            country: Some("SE".into()),
            user_agent: "Mozilla/5.0 \"quoted\"".into(),
            vault,
            csrf: "hV3W0rTMezypQViIzejoPAFZqPu7U3UYPHmUAR-a2P0".into(),
            return_to: Some("/calls?x=1".into()),
            second_factor: Some(SecondFactor::Enroll),
            pending_seed: Some(vec![0, 1, 2, 255]),
            two_factor_passed: true,
            password_expired: true,
            area: "recordings".into(),
            two_factor_waived_by_area: true,
            lifetime_ms: Some(86_400_000),
            api_challenge: true,
        }
    }

    #[test]
    fn records_read_back_unchanged_in_every_state() {
        let mut rec = sample();
        let states = [
            SessionState::Anonymous,
            SessionState::PasswordOk,
            SessionState::Active,
            SessionState::Ended(EndReason::Logout),
            SessionState::Ended(EndReason::Timeout),
            SessionState::Ended(EndReason::Idle),
            SessionState::Ended(EndReason::Replaced),
            SessionState::Ended(EndReason::Revoked),
            SessionState::Ended(EndReason::LogoutAll),
            SessionState::Ended(EndReason::TwoFactorReset),
        ];
        for state in states {
            rec.state = state;
            assert_eq!(decode(&encode(&rec)), Ok(rec.clone()));
        }
        let empty = SessionRecord {
            user: None,
            country: None,
            vault: Vault::default(),
            return_to: None,
            second_factor: None,
            pending_seed: None,
            lifetime_ms: None,
            ..sample()
        };
        assert_eq!(decode(&encode(&empty)), Ok(empty));
    }

    #[test]
    fn records_stored_as_json_by_earlier_versions_are_still_read() {
        let rec = sample();
        let json = serde_json::to_vec(&rec).expect("json");
        assert_eq!(decode(&json), Ok(rec));
    }

    #[test]
    fn truncated_padded_or_mangled_records_are_refused_not_panicked_on() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), Err(Undecodable), "prefix {n}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(decode(&padded), Err(Undecodable));
        for i in 0..bytes.len() {
            let mut m = bytes.clone();
            m[i] = 0xff;
            // Any outcome but a panic; a decoded record must re-encode to itself.
            if let Ok(rec) = decode(&m) {
                assert_eq!(decode(&encode(&rec)), Ok(rec));
            }
        }
        assert_eq!(decode(b"\x02rest"), Err(Undecodable));
        assert_eq!(decode(b"{not json"), Err(Undecodable));
    }
}
