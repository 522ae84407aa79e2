//! One-time recovery codes, shown once at enrollment and stored only hashed.
//!
//! A code is 16 characters of Crockford's base32 alphabet written in four
//! groups, `xxxx-xxxx-xxxx-xxxx`: 80 random bits. The alphabet has no `i`,
//! `l`, `o` or `u`, and input is read the Crockford way (`o` → `0`, `i`/`l` →
//! `1`), so a code copied by hand from paper still works.
//!
//! Why salted SHA-256 and not argon2: a slow hash exists to stretch the few
//! bits of a human-chosen password. These codes are uniformly random with 80
//! bits each; finding a preimage for even one of ten salted hashes needs
//! ~2^77 SHA-256 evaluations, beyond any offline attacker. A slow hash would
//! add nothing there, while every recovery attempt has to try all stored
//! hashes — ten argon2 runs per guess would hand an attacker a cheap CPU
//! denial of service. Each hash has its own random salt, so equal codes
//! (in different sets) never share a hash and no precomputation applies.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

/// How many codes a user gets at enrollment.
pub const DEFAULT_COUNT: usize = 10;

/// Crockford's base32 alphabet, lower case: 32 symbols so a random byte
/// masked to 5 bits picks each one with equal probability.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const GROUPS: usize = 4;
const GROUP_LEN: usize = 4;
/// Characters of a code without dashes: 16 × 5 bits = 80 bits.
const CODE_LEN: usize = GROUPS * GROUP_LEN;
// The enrollment promise: at least 60 bits per code (5 bits a character).
const _: () = assert!(CODE_LEN * 5 >= 60);
const SALT_LEN: usize = 16;
/// Prefix of a stored hash; a later scheme gets a new one.
const SCHEME: &str = "sha256";
/// Domain separation, so these digests can never be confused with any other
/// SHA-256 use in gatehouse.
const CONTEXT: &[u8] = b"gatehouse recovery code v1\0";

/// `n` fresh codes to show the user once, e.g. `7k2m-9xq4-0tdw-hh3e`.
pub fn generate(n: usize) -> Vec<String> {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            let mut random = Zeroizing::new([0u8; CODE_LEN]);
            rng.fill_bytes(random.as_mut());
            let mut code = String::with_capacity(CODE_LEN + GROUPS - 1);
            for (i, byte) in random.iter().enumerate() {
                if i > 0 && i % GROUP_LEN == 0 {
                    code.push('-');
                }
                // 256 is a multiple of 32, so masking keeps the choice uniform.
                code.push(char::from(ALPHABET[usize::from(byte & 0x1f)]));
            }
            code
        })
        .collect()
}

/// The stored form of one code: `sha256$<salt hex>$<digest hex>` with a fresh
/// random salt. The code is normalised first, so the hash does not depend on
/// how it was written. Returns `None` if `code` is not a recovery code.
pub fn hash(code: &str) -> Option<String> {
    let normalised = normalise(code)?;
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    let digest = digest(&salt, &normalised);
    Some(format!(
        "{SCHEME}${}${}",
        hex::encode(salt),
        hex::encode(digest)
    ))
}

/// A user's unused recovery codes, hashed. Serialised as is into the store.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecoveryCodes {
    hashes: Vec<String>,
}

impl RecoveryCodes {
    /// New codes for a user: the plain codes to show once, and the hashed set
    /// to store.
    pub fn generate(n: usize) -> (Vec<String>, Self) {
        let codes = generate(n);
        let set = Self::from_codes(&codes);
        (codes, set)
    }

    /// Hash the given codes; anything that is not a recovery code is left out.
    pub fn from_codes<S: AsRef<str>>(codes: &[S]) -> Self {
        Self {
            hashes: codes.iter().filter_map(|c| hash(c.as_ref())).collect(),
        }
    }

    /// Use `code` if it is one of the set: returns true once per code and
    /// removes it, so it never works again. Case, spaces and dashes in the
    /// input do not matter. Every stored hash is checked, comparing digests
    /// in constant time, so timing does not reveal which one matched.
    pub fn consume(&mut self, code: &str) -> bool {
        let Some(normalised) = normalise(code) else {
            return false;
        };
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, stored) in self.hashes.iter().enumerate() {
            let matches = match parse(stored) {
                Some((salt, want)) => digest(&salt, &normalised).ct_eq(&want),
                // A damaged entry matches nothing, and is not an error: the
                // other codes keep working.
                None => Choice::from(0),
            };
            index = u64::conditional_select(&index, &(i as u64), matches);
            found |= matches;
        }
        if !bool::from(found) {
            return false;
        }
        match usize::try_from(index) {
            Ok(i) if i < self.hashes.len() => {
                self.hashes.remove(i);
                true
            }
            _ => false,
        }
    }

    /// How many codes are left unused.
    pub fn remaining(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// Only the count: the hashes are of no use to anyone reading logs.
impl fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryCodes")
            .field("remaining", &self.hashes.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------

/// The canonical form of a typed code: 16 lower-case alphabet characters.
/// Whitespace and dashes are dropped, case is folded, and the letters
/// Crockford's base32 leaves out for looking like digits are read as those
/// digits. `None` if what is left is not a code.
fn normalise(code: &str) -> Option<Zeroizing<String>> {
    // Bound the work on hostile input before looking at the characters.
    if code.len() > 4 * CODE_LEN {
        return None;
    }
    let mut out = Zeroizing::new(String::with_capacity(CODE_LEN));
    for c in code.chars() {
        if c.is_whitespace() || c == '-' {
            continue;
        }
        let c = match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || out.len() == CODE_LEN {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

fn digest(salt: &[u8; SALT_LEN], normalised: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(CONTEXT);
    hasher.update(salt);
    hasher.update(normalised.as_bytes());
    hasher.finalize().into()
}

fn parse(stored: &str) -> Option<([u8; SALT_LEN], [u8; 32])> {
    let mut parts = stored.split('$');
    if parts.next()? != SCHEME {
        return None;
    }
    let mut salt = [0u8; SALT_LEN];
    hex::decode_to_slice(parts.next()?, &mut salt).ok()?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(parts.next()?, &mut digest).ok()?;
    parts.next().is_none().then_some((salt, digest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on bad fixtures
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_documented_shape() {
        let codes = generate(DEFAULT_COUNT);
        assert_eq!(codes.len(), 10);
        for code in &codes {
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), 4, "{code}");
            for group in groups {
                assert_eq!(group.len(), 4, "{code}");
                assert!(group.bytes().all(|b| ALPHABET.contains(&b)), "{code}");
            }
            // Nothing a reader could take for another character.
            assert!(!code.contains(['i', 'l', 'o', 'u']), "{code}");
        }
        let mut distinct = codes.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), codes.len());
    }

    #[test]
    fn alphabet_has_32_distinct_symbols() {
        // 5 bits a character; the 60-bit floor is a compile-time assert.
        assert_eq!(ALPHABET.len(), 32);
        let mut symbols = ALPHABET.to_vec();
        symbols.sort();
        symbols.dedup();
        assert_eq!(symbols.len(), 32);
    }

    #[test]
    fn generation_uses_the_whole_alphabet() {
        let seen: std::collections::HashSet<char> = generate(100)
            .concat()
            .chars()
            .filter(|&c| c != '-')
            .collect();
        assert_eq!(seen.len(), 32);
    }

    #[test]
    fn each_code_works_exactly_once() {
        let (codes, mut set) = RecoveryCodes::generate(DEFAULT_COUNT);
        assert_eq!(set.remaining(), 10);
        for (used, code) in codes.iter().enumerate() {
            assert!(set.consume(code), "first use of {code}");
            assert!(!set.consume(code), "second use of {code}");
            assert_eq!(set.remaining(), 10 - used - 1);
        }
        assert!(set.is_empty());
    }

    #[test]
    fn wrong_codes_fail_and_use_nothing() {
        let (codes, mut set) = RecoveryCodes::generate(DEFAULT_COUNT);
        let (other, _) = RecoveryCodes::generate(1);
        for wrong in [
            other[0].as_str(),
            "",
            "0000-0000-0000-0000",
            "not a code",
            &codes[0][..18],             // one character short
            &format!("{}0", codes[0]),   // one too many
            &codes[0].replace('-', "_"), // not a separator we accept
            &"0".repeat(10_000),
        ] {
            assert!(!set.consume(wrong), "{wrong:?}");
        }
        assert_eq!(set.remaining(), 10);
    }

    #[test]
    fn input_is_normalised() {
        let (codes, mut set) = RecoveryCodes::generate(4);
        assert!(set.consume(&codes[0].to_uppercase()));
        assert!(set.consume(&codes[1].replace('-', "")));
        assert!(set.consume(&format!("  {}  ", codes[2].replace('-', " "))));
        assert!(set.consume(&codes[3].replace('-', " - ")));
        assert!(set.is_empty());
    }

    #[test]
    fn look_alike_letters_are_read_as_digits() {
        let mut set = RecoveryCodes::from_codes(&["1010-0011-abcd-efgh"]);
        assert!(set.consume("IoLO-OOil-ABCD-EFGH"));
    }

    #[test]
    fn hashes_are_salted_and_never_contain_the_code() {
        let code = "7k2m-9xq4-0tdw-hh3e";
        let a = hash(code).unwrap();
        let b = hash(code).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("sha256$"));
        assert!(!a.contains("7k2m") && !a.contains("7k2m9xq4"));
        let mut set = RecoveryCodes { hashes: vec![a, b] };
        assert!(set.consume(code));
        assert!(set.consume(code), "the second, separately hashed copy");
        assert!(!set.consume(code));
    }

    #[test]
    fn damaged_stored_hash_does_not_break_the_others() {
        let (codes, set) = RecoveryCodes::generate(2);
        let mut hashes = set.hashes.clone();
        hashes.insert(0, "sha256$zz$00".to_owned());
        hashes.insert(1, "argon2id$whatever".to_owned());
        let mut set = RecoveryCodes { hashes };
        assert!(set.consume(&codes[1]));
        assert!(set.consume(&codes[0]));
        assert_eq!(set.remaining(), 2);
    }

    #[test]
    fn serialised_set_keeps_working() {
        let (codes, set) = RecoveryCodes::generate(3);
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.starts_with(r#"{"hashes":["sha256$"#));
        for code in &codes {
            assert!(!json.contains(code.as_str()));
        }
        let mut back: RecoveryCodes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert!(back.consume(&codes[2]));
        assert_eq!(back.remaining(), 2);
    }

    #[test]
    fn debug_shows_only_the_count() {
        let (_, set) = RecoveryCodes::generate(3);
        let shown = format!("{set:?}");
        assert_eq!(shown, "RecoveryCodes { remaining: 3 }");
    }
}
