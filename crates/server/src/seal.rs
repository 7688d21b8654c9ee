//! Sealing secrets at rest (session_keys, WeChat access tokens, signing keys, remembered
//! login codes) with the data key (AES-256-GCM).
//!
//! A sealed value is `k<key id>:base64(nonce || ciphertext+tag)`, bound to what it belongs to
//! through the associated data, so a sealed key copied onto another session row does not open.
//! The key id (8 hex characters of the key's SHA-256) names the data key that sealed it, so
//! that after `security.data_key` changes the previous keys (`security.previous_data_keys`)
//! still open what they sealed until `wxauth rotate-data-key` has sealed it again under the new
//! one. Values sealed before key ids existed (plain base64, which never holds a `:`) are opened
//! by trying each key.

use std::fmt;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};
use wxauth_wechat::SessionKey;

const NONCE_LEN: usize = 12;

/// One data key and its id.
#[derive(Clone)]
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(bytes: [u8; 32]) -> Self {
        Self {
            id: hex::encode(&Sha256::digest(bytes)[..4]),
            cipher: Aes256Gcm::new(&bytes.into()),
        }
    }

    fn open(&self, raw: &[u8], context: &str) -> Result<Vec<u8>, UnsealError> {
        if raw.len() <= NONCE_LEN {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        self.cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| UnsealError)
    }
}

/// The data key that seals (and the previous ones, which only open). Its `Debug` never shows
/// a key.
#[derive(Clone)]
pub struct DataKey {
    current: Key,
    previous: Vec<Key>,
}

/// A sealed value could not be opened (wrong data key, or tampered with).
#[derive(Debug, thiserror::Error)]
#[error("a sealed secret could not be opened (was the data key changed?)")]
pub struct UnsealError;

impl DataKey {
    /// Wraps 32 key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self::with_previous(bytes, &[])
    }

    /// The current key, and previous ones that still open what they sealed.
    pub fn with_previous(current: [u8; 32], previous: &[[u8; 32]]) -> Self {
        let current = Key::new(current);
        let mut keys: Vec<Key> = Vec::with_capacity(previous.len());
        for bytes in previous {
            let key = Key::new(*bytes);
            if key.id != current.id && keys.iter().all(|k| k.id != key.id) {
                keys.push(key);
            }
        }
        Self {
            current,
            previous: keys,
        }
    }

    /// A new random key, base64-encoded, as `wxauth gen-key` prints it.
    pub fn generate_encoded() -> String {
        BASE64.encode(rand::random::<[u8; 32]>())
    }

    /// The id of the key that seals (safe to show: 32 bits of its hash).
    pub fn id(&self) -> &str {
        &self.current.id
    }

    /// The ids of the previous keys.
    pub fn previous_ids(&self) -> impl Iterator<Item = &str> {
        self.previous.iter().map(|k| k.id.as_str())
    }

    /// Seals a session_key for the session `context`.
    pub fn seal(&self, key: &SessionKey, context: &str) -> String {
        self.seal_bytes(key.bytes(), context)
    }

    /// Opens what [`DataKey::seal`] made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<SessionKey, UnsealError> {
        let plain = self.open_bytes(sealed, context)?;
        let bytes: [u8; 16] = plain.try_into().map_err(|_| UnsealError)?;
        Ok(SessionKey::from_bytes(bytes))
    }

    /// Seals any secret bytes, bound to `context`, under the current key.
    pub fn seal_bytes(&self, secret: &[u8], context: &str) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let payload = Payload {
            msg: secret,
            aad: context.as_bytes(),
        };
        // AES-GCM fails only for inputs of gigabytes.
        let sealed = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_else(|_| unreachable!("AES-GCM encrypts short secrets"));
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        format!("k{}:{}", self.current.id, BASE64.encode(raw))
    }

    /// Opens what [`DataKey::seal_bytes`] made for the same `context`, under the current key
    /// or a previous one.
    pub fn open_bytes(&self, sealed: &str, context: &str) -> Result<Vec<u8>, UnsealError> {
        match split(sealed) {
            Some((id, encoded)) => {
                let raw = BASE64.decode(encoded.as_bytes()).map_err(|_| UnsealError)?;
                self.keys()
                    .find(|k| k.id == id)
                    .ok_or(UnsealError)?
                    .open(&raw, context)
            }
            // Sealed before key ids: whichever key opens it.
            None => {
                let raw = BASE64.decode(sealed.as_bytes()).map_err(|_| UnsealError)?;
                self.keys()
                    .find_map(|k| k.open(&raw, context).ok())
                    .ok_or(UnsealError)
            }
        }
    }

    /// Whether `sealed` was sealed by the current key.
    pub fn is_current(&self, sealed: &str) -> bool {
        split(sealed).is_some_and(|(id, _)| id == self.current.id)
    }

    /// `sealed` sealed again under the current key; `Ok(None)` when it already is.
    pub fn reseal(&self, sealed: &str, context: &str) -> Result<Option<String>, UnsealError> {
        if self.is_current(sealed) {
            return Ok(None);
        }
        let plain = zeroize::Zeroizing::new(self.open_bytes(sealed, context)?);
        Ok(Some(self.seal_bytes(&plain, context)))
    }

    fn keys(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

/// `(key id, base64)` of a value sealed with a key id.
fn split(sealed: &str) -> Option<(&str, &str)> {
    sealed.strip_prefix('k')?.split_once(':')
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_for_its_own_session_and_data_key() {
        let key = DataKey::new([7; 32]);
        let session_key = SessionKey::generate();
        let sealed = key.seal(&session_key, "sess-1");
        assert!(!sealed.contains(session_key.expose_secret()));
        assert_eq!(key.open(&sealed, "sess-1").unwrap(), session_key);
        assert!(key.open(&sealed, "sess-2").is_err());
        assert!(DataKey::new([8; 32]).open(&sealed, "sess-1").is_err());
        assert!(key.open("garbage", "sess-1").is_err());
        assert_eq!(format!("{key:?}"), "DataKey([redacted])");
    }

    #[test]
    fn a_previous_key_opens_what_it_sealed_until_it_is_sealed_again() {
        let old = DataKey::new([1; 32]);
        let sealed = old.seal_bytes(b"secret", "ctx");
        assert!(sealed.starts_with(&format!("k{}:", old.id())));
        let rotated = DataKey::with_previous([2; 32], &[[1; 32]]);
        assert_ne!(rotated.id(), old.id());
        assert_eq!(rotated.previous_ids().collect::<Vec<_>>(), [old.id()]);
        assert_eq!(rotated.open_bytes(&sealed, "ctx").unwrap(), b"secret");
        assert!(!rotated.is_current(&sealed));
        let resealed = rotated.reseal(&sealed, "ctx").unwrap().unwrap();
        assert!(rotated.is_current(&resealed));
        assert_eq!(rotated.reseal(&resealed, "ctx").unwrap(), None);
        // Without the previous key, only the resealed value opens.
        let new_only = DataKey::new([2; 32]);
        assert!(new_only.open_bytes(&sealed, "ctx").is_err());
        assert_eq!(new_only.open_bytes(&resealed, "ctx").unwrap(), b"secret");
        assert!(rotated.reseal(&sealed, "other").is_err());
    }

    #[test]
    fn values_sealed_before_key_ids_still_open() {
        let bytes = [3; 32];
        let key = DataKey::new(bytes);
        // The format before key ids: base64(nonce || ciphertext) alone.
        let cipher = Aes256Gcm::new(&bytes.into());
        let nonce = [9u8; NONCE_LEN];
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: b"old",
                    aad: b"ctx",
                },
            )
            .unwrap();
        let legacy = BASE64.encode([nonce.as_slice(), &ct].concat());
        assert_eq!(key.open_bytes(&legacy, "ctx").unwrap(), b"old");
        let rotated = DataKey::with_previous([4; 32], &[bytes]);
        assert_eq!(rotated.open_bytes(&legacy, "ctx").unwrap(), b"old");
        assert!(rotated.is_current(&rotated.reseal(&legacy, "ctx").unwrap().unwrap()));
    }
}
