//! Sealing secrets at rest (session_keys, WeChat access tokens) with the data key
//! (AES-256-GCM).
//!
//! A sealed value is `base64(nonce || ciphertext+tag)`, bound to the session it belongs to
//! through the associated data, so a sealed key copied onto another session row does not open.

use std::fmt;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use wxauth_wechat::SessionKey;

const NONCE_LEN: usize = 12;

/// The 32-byte key that seals session_keys. Its `Debug` never shows it.
#[derive(Clone)]
pub struct DataKey(Aes256Gcm);

/// A sealed value could not be opened (wrong data key, or tampered with).
#[derive(Debug, thiserror::Error)]
#[error("a sealed secret could not be opened (was the data key changed?)")]
pub struct UnsealError;

impl DataKey {
    /// Wraps 32 key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Aes256Gcm::new(&bytes.into()))
    }

    /// A new random key, base64-encoded, as `wxauth gen-key` prints it.
    pub fn generate_encoded() -> String {
        BASE64.encode(rand::random::<[u8; 32]>())
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

    /// Seals any secret bytes, bound to `context`.
    pub fn seal_bytes(&self, secret: &[u8], context: &str) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let payload = Payload {
            msg: secret,
            aad: context.as_bytes(),
        };
        // AES-GCM fails only for inputs of gigabytes.
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_else(|_| unreachable!("AES-GCM encrypts short secrets"));
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        BASE64.encode(out)
    }

    /// Opens what [`DataKey::seal_bytes`] made for the same `context`.
    pub fn open_bytes(&self, sealed: &str, context: &str) -> Result<Vec<u8>, UnsealError> {
        let raw = BASE64.decode(sealed.as_bytes()).map_err(|_| UnsealError)?;
        if raw.len() <= NONCE_LEN {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        self.0
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| UnsealError)
    }
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
}
