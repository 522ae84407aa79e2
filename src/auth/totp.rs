//! Time-based one-time passwords: RFC 6238 TOTP over RFC 4226 HOTP with the
//! parameters every authenticator app supports — HMAC-SHA-1, 6 digits, 30 s
//! steps — and a window of one step either side of `now` (RFC 6238 §5.2,
//! "at most one time step is allowed as the network delay").
//!
//! A code is accepted once: the caller stores the step `verify` returns and
//! passes it back as `last_used_step`; any step at or before it is refused
//! (RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of the
//! same OTP after the successful validation has been issued").
//!
//! HOTP is implemented here over the `hmac`/`sha1` crates rather than through
//! totp-rs: its `check` stops at the first matching step and leaves replay to
//! the caller, while gatehouse wants all candidates compared in constant time
//! and replay refused in the same place. totp-rs stays as an independent
//! cross-check in the tests.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::fmt;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Seconds per time step (RFC 6238 §4.1 X, §5.2 recommends 30).
pub const STEP_SECS: u64 = 30;
/// Digits of a code (RFC 4226 §5.3: at least 6).
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one (RFC 6238 §5.2).
pub const SKEW_STEPS: u64 = 1;

/// Why a code was refused. No variant carries the code or the secret, so an
/// error can be logged as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// Not six digits (after removing spaces).
    #[error("the code must be {DIGITS} digits")]
    Malformed,
    /// Six digits, but not the code of any step in the window.
    #[error("the code is wrong")]
    Wrong,
    /// The code of a step that was already used, or older than one used.
    #[error("the code was already used")]
    Replayed,
}

/// Why bytes or text are not a TOTP secret. Never includes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a TOTP secret is {SECRET_LEN} bytes")]
    WrongLength,
    #[error("a TOTP secret is written in base32 (RFC 4648)")]
    NotBase32,
}

/// Length of a secret: 160 bits, the length RFC 4226 §4 (R6) recommends and
/// the output size of HMAC-SHA-1.
pub const SECRET_LEN: usize = 20;

/// A user's shared TOTP key. Its `Debug` never shows the key, and the bytes
/// are wiped from memory when it is dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TotpSecret([u8; SECRET_LEN]);

impl TotpSecret {
    /// A fresh key from the thread-local CSPRNG (RFC 4226 §4 R6 and §7.5:
    /// keys must be random; ChaCha seeded from the OS).
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; SECRET_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A key from its raw bytes (as kept in the store).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        let bytes: [u8; SECRET_LEN] = bytes.try_into().map_err(|_| SecretError::WrongLength)?;
        Ok(Self(bytes))
    }

    /// The raw bytes, for the (sealed) store.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// RFC 4648 base32, upper case, no padding: what authenticator apps
    /// expect in the `secret=` parameter and what users type by hand.
    /// The returned `String` is not wiped on drop; keep it short-lived.
    pub fn to_base32(&self) -> String {
        base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &self.0)
    }

    /// Parse base32 as shown to users: case, spaces, dashes and trailing `=`
    /// padding are forgiven.
    pub fn from_base32(text: &str) -> Result<Self, SecretError> {
        // 20 bytes are exactly 32 base32 characters (160 = 32 × 5 bits), so
        // there are no leftover bits and every key has one canonical text.
        const BASE32_LEN: usize = SECRET_LEN * 8 / 5;
        let mut cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        while cleaned.ends_with('=') {
            cleaned.pop();
        }
        if cleaned.len() != BASE32_LEN {
            cleaned.zeroize();
            return Err(SecretError::WrongLength);
        }
        let decoded = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &cleaned);
        cleaned.zeroize();
        let mut decoded = decoded.ok_or(SecretError::NotBase32)?;
        let secret = Self::from_bytes(&decoded);
        decoded.zeroize();
        secret
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// The Key URI an authenticator app scans:
/// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER&algorithm=SHA1&digits=6&period=30`
/// (Google Authenticator "Key Uri Format"). Issuer and account are
/// percent-encoded (everything but RFC 3986 unreserved characters), so a
/// colon inside either one cannot be mistaken for the label separator.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    let account = percent_encode(account);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
         &algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        secret = secret.to_base32(),
    )
}

/// The time step containing `unix_secs` (RFC 6238 §4.2: T = (now - T0) / X
/// with T0 = 0).
pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The 6-digit code for the step containing `unix_secs`, zero padded.
pub fn code_at(secret: &TotpSecret, unix_secs: u64) -> String {
    let digits = code_digits(secret, step_at(unix_secs));
    // Always ASCII digits, so this never fails; no secret-dependent branch.
    digits.iter().map(|&d| char::from(d)).collect()
}

/// Check `code` against the steps `now-1`, `now` and `now+1`.
///
/// Spaces inside the code are ignored ("123 456"). All three candidates are
/// computed and compared in constant time, without an early exit, so the
/// time taken does not say which step (if any) matched. A step at or before
/// `last_used_step` is refused as a replay — this also refuses an older
/// code after a newer one was used. On success returns the matched step,
/// which the caller must store as the new `last_used_step`.
///
/// `Wrong` and `Replayed` should both count as failed attempts for lockout.
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    now_unix: u64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    let given = parse_code(code)?;
    let now = step_at(now_unix);

    let mut fresh_match = Choice::from(0);
    let mut fresh_step = 0u64;
    let mut any_match = Choice::from(0);
    // Oldest first, so a (one in a million) match of two steps keeps the
    // newest fresh one.
    for step in [now.saturating_sub(SKEW_STEPS), now, now + SKEW_STEPS] {
        let candidate = code_digits(secret, step);
        let matches = candidate.ct_eq(&given);
        // Whether a step is fresh depends only on the clock and the stored
        // step, not on the secret, but select in constant time anyway so the
        // loop body is the same for every candidate.
        let fresh = match last_used_step {
            Some(last) => step.ct_gt(&last),
            None => Choice::from(1),
        };
        let accept = matches & fresh;
        fresh_step = u64::conditional_select(&fresh_step, &step, accept);
        fresh_match |= accept;
        any_match |= matches;
    }

    if bool::from(fresh_match) {
        Ok(fresh_step)
    } else if bool::from(any_match) {
        Err(TotpError::Replayed)
    } else {
        Err(TotpError::Wrong)
    }
}

// ---------------------------------------------------------------------------

type HmacSha1 = Hmac<Sha1>;

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1 over the big-endian counter, dynamic
/// truncation to 31 bits, modulo 10^digits. `digits` is 6 in service and 8
/// for the RFC 6238 Appendix B vectors; at most 9 so 10^digits fits in u32.
fn hotp(key: &[u8; SECRET_LEN], counter: u64, digits: u32) -> u32 {
    debug_assert!((1..=9).contains(&digits));
    // RFC 2104 §2 step (1): a key shorter than the 64-byte block is zero
    // padded to it, so the padded key *is* the HMAC key. This lets us use
    // the infallible `KeyInit::new` instead of `new_from_slice`'s Result.
    let mut block = [0u8; 64];
    block[..SECRET_LEN].copy_from_slice(key);
    let mut mac = <HmacSha1 as KeyInit>::new(&block.into());
    block.zeroize();
    mac.update(&counter.to_be_bytes());
    let mut hs: [u8; 20] = mac.finalize().into_bytes().into();

    // RFC 4226 §5.4: the low 4 bits of the last byte pick an offset (0..=15,
    // so offset+3 <= 18 stays inside the 20 bytes); the top bit of the
    // 31-bit result is masked to avoid signed/unsigned ambiguity.
    let offset = usize::from(hs[19] & 0x0f);
    let binary = u32::from(hs[offset] & 0x7f) << 24
        | u32::from(hs[offset + 1]) << 16
        | u32::from(hs[offset + 2]) << 8
        | u32::from(hs[offset + 3]);
    hs.zeroize();
    binary % 10u32.pow(digits)
}

/// The code of `step` as six ASCII digits (leading zeros kept), without
/// allocating, ready for a constant-time byte comparison.
fn code_digits(secret: &TotpSecret, step: u64) -> [u8; DIGITS] {
    let mut value = hotp(&secret.0, step, DIGITS as u32);
    let mut out = [b'0'; DIGITS];
    for slot in out.iter_mut().rev() {
        // value % 10 < 10, so the cast cannot truncate.
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out
}

/// Six ASCII digits from what the user typed; whitespace is ignored.
fn parse_code(code: &str) -> Result<[u8; DIGITS], TotpError> {
    // Bound the work on hostile input before looking at the characters.
    if code.len() > 64 {
        return Err(TotpError::Malformed);
    }
    let mut out = [0u8; DIGITS];
    let mut n = 0;
    for c in code.chars().filter(|c| !c.is_whitespace()) {
        if !c.is_ascii_digit() || n == DIGITS {
            return Err(TotpError::Malformed);
        }
        out[n] = c as u8;
        n += 1;
    }
    if n != DIGITS {
        return Err(TotpError::Malformed);
    }
    Ok(out)
}

fn percent_encode(text: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // RFC 3986 §2.3 unreserved characters stay; everything else, including
    // ':', '@', '&', '=', '?', '#' and space (as %20, not '+'), is encoded.
    const LABEL: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(text, LABEL).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on bad fixtures
mod tests {
    use super::*;

    /// The seed of RFC 4226 Appendix D and RFC 6238 Appendix B (SHA-1).
    const RFC_KEY: &[u8; 20] = b"12345678901234567890";

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(RFC_KEY).unwrap()
    }

    #[test]
    fn hotp_matches_rfc4226_appendix_d() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.into_iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6), want, "counter {counter}");
        }
    }

    #[test]
    fn totp_matches_rfc6238_appendix_b_sha1() {
        let vectors: [(u64, u32); 6] = [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ];
        for (t, want) in vectors {
            assert_eq!(hotp(RFC_KEY, step_at(t), 8), want, "T = {t}");
        }
    }

    #[test]
    fn six_digit_code_is_the_low_digits_of_the_rfc_vector() {
        // Same truncation, modulo 10^6: "07081804" -> "081804".
        let secret = rfc_secret();
        assert_eq!(code_at(&secret, 59), "287082");
        assert_eq!(code_at(&secret, 1111111109), "081804");
        assert_eq!(code_at(&secret, 1111111111), "050471");
        assert_eq!(code_at(&secret, 20000000000), "353130");
    }

    #[test]
    fn codes_agree_with_totp_rs_parsing_our_uri() {
        // An independent implementation, reading the key from our URI.
        for _ in 0..5 {
            let secret = TotpSecret::generate();
            let uri = otpauth_uri(&secret, "Example Corp", "alice@example.com");
            let other = totp_rs::Totp::from_url(&uri).unwrap();
            assert_eq!(other.issuer(), Some("Example Corp"));
            assert_eq!(other.account_name(), "alice@example.com");
            for t in [0u64, 29, 30, 1_700_000_000, 1_700_000_017, 4_000_000_000] {
                assert_eq!(
                    code_at(&secret, t),
                    other.generate(t).to_string(),
                    "t = {t}"
                );
            }
        }
    }

    #[test]
    fn current_code_is_accepted_and_returns_its_step() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let code = code_at(&secret, now);
        assert_eq!(verify(&secret, &code, now, None), Ok(step_at(now)));
    }

    #[test]
    fn previous_and_next_step_are_accepted() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let previous = code_at(&secret, now - STEP_SECS);
        let next = code_at(&secret, now + STEP_SECS);
        assert_eq!(verify(&secret, &previous, now, None), Ok(step_at(now) - 1));
        assert_eq!(verify(&secret, &next, now, None), Ok(step_at(now) + 1));
    }

    #[test]
    fn code_two_steps_old_or_ahead_is_refused() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let old = code_at(&secret, now - 2 * STEP_SECS);
        let ahead = code_at(&secret, now + 2 * STEP_SECS);
        assert_eq!(verify(&secret, &old, now, None), Err(TotpError::Wrong));
        assert_eq!(verify(&secret, &ahead, now, None), Err(TotpError::Wrong));
    }

    #[test]
    fn window_edges_follow_step_boundaries() {
        // At the first second of a step the previous step's code still works;
        // at its last second the next step's code already works.
        let secret = rfc_secret();
        let start = 1_700_000_010; // divisible by 30
        assert_eq!(start % STEP_SECS, 0);
        let prev = code_at(&secret, start - 1);
        assert!(verify(&secret, &prev, start, None).is_ok());
        assert_eq!(
            verify(&secret, &prev, start + STEP_SECS, None),
            Err(TotpError::Wrong)
        );
    }

    #[test]
    fn same_code_is_refused_after_use_in_the_same_step() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let code = code_at(&secret, now);
        let used = verify(&secret, &code, now, None).unwrap();
        assert_eq!(
            verify(&secret, &code, now + 5, Some(used)),
            Err(TotpError::Replayed)
        );
    }

    #[test]
    fn older_code_is_refused_after_a_newer_one_was_used() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let newer = code_at(&secret, now + STEP_SECS);
        let used = verify(&secret, &newer, now, None).unwrap();
        let current = code_at(&secret, now);
        assert_eq!(
            verify(&secret, &current, now, Some(used)),
            Err(TotpError::Replayed)
        );
        // The next step's code is fresh again.
        let later = code_at(&secret, now + 2 * STEP_SECS);
        assert_eq!(
            verify(&secret, &later, now + STEP_SECS, Some(used)),
            Ok(used + 1)
        );
    }

    #[test]
    fn wrong_code_is_wrong_not_replayed() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let code = code_at(&secret, now);
        let wrong = if code == "000000" { "000001" } else { "000000" };
        assert_eq!(verify(&secret, wrong, now, None), Err(TotpError::Wrong));
        assert_eq!(
            verify(&secret, wrong, now, Some(step_at(now))),
            Err(TotpError::Wrong)
        );
    }

    #[test]
    fn spaces_inside_the_code_are_ignored() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let code = code_at(&secret, now);
        let spaced = format!(" {} {} ", &code[..3], &code[3..]);
        assert_eq!(verify(&secret, &spaced, now, None), Ok(step_at(now)));
    }

    #[test]
    fn malformed_codes_are_refused() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let long = "1".repeat(1000);
        for bad in [
            "",
            "12345",
            "1234567",
            "12a456",
            "１２３４５６",
            "123-456",
            "+12345",
            &long,
        ] {
            assert_eq!(
                verify(&secret, bad, now, None),
                Err(TotpError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn first_step_of_the_epoch_has_no_previous_step() {
        let secret = rfc_secret();
        let code = code_at(&secret, 0);
        assert_eq!(verify(&secret, &code, 0, None), Ok(0));
        assert_eq!(verify(&secret, &code, 0, Some(0)), Err(TotpError::Replayed));
    }

    #[test]
    fn base32_round_trips() {
        let secret = TotpSecret::generate();
        let text = secret.to_base32();
        assert_eq!(text.len(), 32);
        assert!(!text.contains('='));
        assert!(text
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        let back = TotpSecret::from_base32(&text).unwrap();
        assert_eq!(back.as_bytes(), secret.as_bytes());
    }

    #[test]
    fn base32_matches_rfc4648_and_forgives_formatting() {
        // base32("12345678901234567890") from any RFC 4648 encoder.
        let text = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(rfc_secret().to_base32(), text);
        let typed = "gezd gnbv gy3t qojq-gezd gnbv gy3t qojq====";
        let parsed = TotpSecret::from_base32(typed).unwrap();
        assert_eq!(parsed.as_bytes(), RFC_KEY);
    }

    #[test]
    fn bad_base32_is_refused() {
        assert_eq!(
            TotpSecret::from_base32("GEZDGNBV").map(|_| ()),
            Err(SecretError::WrongLength)
        );
        assert_eq!(
            TotpSecret::from_base32("1EZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").map(|_| ()),
            Err(SecretError::NotBase32)
        );
        assert_eq!(
            TotpSecret::from_bytes(&[0; 16]).map(|_| ()),
            Err(SecretError::WrongLength)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = rfc_secret();
        let shown = format!("{secret:?} {secret:#?}");
        assert!(!shown.contains(&secret.to_base32()));
        assert!(!shown.contains("1234567890"));
        assert!(!shown.contains("49, 50")); // the bytes as a list
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn otpauth_uri_has_the_exact_key_uri_format() {
        let uri = otpauth_uri(&rfc_secret(), "Gatehouse", "alice");
        assert_eq!(
            uri,
            "otpauth://totp/Gatehouse:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Gatehouse&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn otpauth_uri_percent_encodes_issuer_and_account() {
        let uri = otpauth_uri(&rfc_secret(), "ACME Ops: Prod", "bob@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/ACME%20Ops%3A%20Prod:bob%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=ACME%20Ops%3A%20Prod&algorithm=SHA1&digits=6&period=30"
        );
        let uri = otpauth_uri(&rfc_secret(), "Ünïcode & Co", "a&b=c?d#e");
        assert!(uri
            .starts_with("otpauth://totp/%C3%9Cn%C3%AFcode%20%26%20Co:a%26b%3Dc%3Fd%23e?secret="));
    }
}
