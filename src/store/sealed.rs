//! Secrets at rest (TOTP seeds): AES-256-GCM under a key from a local file, so a copy of the
//! store (a Redis dump, a backup of the redb file) does not reveal them.
//!
//! Key file: one key per line, `<key-id> <base64 of 32 bytes>`; `#` comments and blank lines
//! are ignored. The first key seals; every listed key opens, so a key is rotated by putting a
//! new line first and removing the old one once nothing sealed with it is left.
//!
//! Blob: `[format 0x01][id length u8][key id][96-bit nonce][ciphertext + tag]`. The format byte
//! and key id are authenticated as associated data, so neither can be swapped undetected.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::Rng;

#[derive(thiserror::Error, Debug)]
pub enum SealError {
    #[error("store.secret_key_file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("store.secret_key_file {path}, line {line}: {reason}")]
    KeyLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("invalid sealing key {id:?}: {reason}")]
    InvalidKey { id: String, reason: String },
    #[error("sealed with key {0:?}, which is not in the key file (was it rotated out too early?)")]
    UnknownKeyId(String),
    #[error("cannot open sealed secret: wrong key or tampered data")]
    WrongKeyOrTampered,
    #[error("not a sealed secret (unknown format or truncated)")]
    Malformed,
    #[error("secret too large to seal")]
    TooLarge,
}

/// Seals and opens secrets. Debug output never shows key material.
pub struct Sealer {
    /// Seals and opens.
    current: SealingKey,
    /// Rotated-out keys: open only.
    previous: Vec<SealingKey>,
}

impl Sealer {
    /// Loads the key file, generating it (one fresh key, mode 0600, parent directory created)
    /// when it does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Sealer, SealError> {
        if !path.exists() {
            create_key_file(path)?;
        }
        let text = std::fs::read_to_string(path).map_err(|e| key_file(path, e))?;
        warn_if_readable_by_others(path);
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| SealError::KeyLine {
                path: path.to_owned(),
                line: n + 1,
                reason: reason.to_owned(),
            };
            let (id, b64) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `<key-id> <base64 key>`"))?;
            // The decode error is dropped on purpose: it could quote key material.
            let bytes = BASE64
                .decode(b64.trim())
                .map_err(|_| bad("key is not valid base64"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad("key must be 32 bytes (base64 of 32 random bytes)"))?;
            keys.push((id.to_owned(), key));
        }
        if keys.is_empty() {
            return Err(SealError::KeyFile {
                path: path.to_owned(),
                reason: "contains no key".to_owned(),
            });
        }
        Sealer::from_keys(keys).map_err(|e| SealError::KeyFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// A sealer from `(key id, key)` pairs; the first seals. For tests and tools.
    pub fn from_keys(keys: Vec<(String, [u8; 32])>) -> Result<Sealer, SealError> {
        let mut sealing = Vec::with_capacity(keys.len());
        for (id, key) in keys {
            check_key_id(&id)?;
            if sealing.iter().any(|k: &SealingKey| k.id == id) {
                return Err(SealError::InvalidKey {
                    id,
                    reason: "listed twice".to_owned(),
                });
            }
            let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| SealError::InvalidKey {
                id: id.clone(),
                reason: "wrong key length".to_owned(),
            })?;
            sealing.push(SealingKey { id, cipher });
        }
        let mut keys = sealing.into_iter();
        let current = keys.next().ok_or_else(|| SealError::InvalidKey {
            id: String::new(),
            reason: "no keys given".to_owned(),
        })?;
        Ok(Sealer {
            current,
            previous: keys.collect(),
        })
    }

    /// The id of the key new secrets are sealed with.
    pub fn current_key_id(&self) -> &str {
        self.current.id.as_str()
    }

    /// Encrypts `plaintext` under the current key with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = &self.current;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let aad = associated_data(&key.id);
        let ciphertext = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::TooLarge)?;
        let mut blob = Vec::with_capacity(aad.len() + NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&aad);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(blob)
    }

    /// Decrypts a blob made by `seal` with any key of the file.
    pub fn open(&self, blob: &[u8]) -> Result<Vec<u8>, SealError> {
        let (&format, rest) = blob.split_first().ok_or(SealError::Malformed)?;
        if format != FORMAT_V1 {
            return Err(SealError::Malformed);
        }
        let (&id_len, rest) = rest.split_first().ok_or(SealError::Malformed)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        let id = std::str::from_utf8(id).map_err(|_| SealError::Malformed)?;
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let key = self
            .keys()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKeyId(id.to_owned()))?;
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated_data(id),
                },
            )
            .map_err(|_| SealError::WrongKeyOrTampered)
    }

    fn keys(&self) -> impl Iterator<Item = &SealingKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys().map(|k| k.id.as_str()).collect();
        f.debug_struct("Sealer")
            .field("key_ids", &ids)
            .field("keys", &"<redacted>")
            .finish()
    }
}

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_ID_LEN: usize = 64;

struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
}

fn associated_data(id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(2 + id.len());
    aad.push(FORMAT_V1);
    // check_key_id bounds the length to MAX_ID_LEN, which fits in a byte.
    aad.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    aad.extend_from_slice(id.as_bytes());
    aad
}

fn check_key_id(id: &str) -> Result<(), SealError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(SealError::InvalidKey {
            id: id.chars().take(MAX_ID_LEN).collect(),
            reason: "key ids are 1-64 characters of A-Z a-z 0-9 - _ .".to_owned(),
        })
    }
}

fn create_key_file(path: &Path) -> Result<(), SealError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| key_file(path, e))?;
    }
    let mut rng = rand::rng();
    let key: [u8; 32] = rng.random();
    let id = format!("k-{:08x}", rng.random::<u32>());
    let line = format!(
        "# gatehouse sealing keys: first line seals, all lines open. Keep this file secret.\n{id} {}\n",
        BASE64.encode(key)
    );
    // Written to a private temp file, then hard-linked into place: linking fails if the file
    // exists, so a gateway starting at the same moment never overwrites a key another one
    // generated, and nobody ever reads a half-written key file.
    let tmp = path.with_extension(format!("tmp-{:08x}", rng.random::<u32>()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(line.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(key_file(path, e)),
    }
    tracing::info!(path = %path.display(), key_id = %id, "generated a new sealing key file");
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "store.secret_key_file is readable by group or others; chmod 600 it");
        }
    }
}

fn key_file(path: &Path, e: std::io::Error) -> SealError {
    SealError::KeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_keys() {
        let sealer = Sealer::from_keys(vec![("k1".into(), [7u8; 32])]).unwrap();
        let shown = format!("{sealer:?}");
        assert!(shown.contains("k1") && shown.contains("redacted"));
        assert!(!shown.contains(&BASE64.encode([7u8; 32])));
    }

    #[test]
    fn bad_key_lists_are_refused() {
        assert!(Sealer::from_keys(vec![]).is_err());
        assert!(Sealer::from_keys(vec![("a b".into(), [1; 32])]).is_err());
        assert!(Sealer::from_keys(vec![("k".into(), [1; 32]), ("k".into(), [2; 32])]).is_err());
    }

    #[test]
    fn tampering_is_detected() {
        let sealer = Sealer::from_keys(vec![("k1".into(), [7u8; 32])]).unwrap();
        let blob = sealer.seal(b"seed").unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert!(sealer.open(&bad).is_err(), "byte {i}");
        }
    }
}
