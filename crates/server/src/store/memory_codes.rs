//! Login codes recently exchanged, in process memory: for SQLite, where one process owns the
//! database, so the five-minute memory of codes need not cost two database writes per login.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::{CodeCache, CodeClaim, StoreError};

/// Above this many entries a claim first drops the expired ones (a sweep is then due at
/// most once per this many new codes).
const SWEEP_ABOVE: usize = 4096;

/// A claimed code: the exchange's sealed result once there is one, and its expiry.
struct Entry {
    result: Option<String>,
    expires_at: i64,
}

/// Claims and results by code hash, each until it expires.
#[derive(Default)]
pub struct MemoryCodeCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// The size after the last sweep: the next sweep waits until the map has grown past it
    /// by [`SWEEP_ABOVE`].
    swept_at: Mutex<usize>,
}

impl MemoryCodeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many codes are remembered (claimed or exchanged, not yet swept).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no code is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every code expired at `now`.
    pub fn sweep(&self, now: i64) -> usize {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|_, entry| entry.expires_at > now);
        let after = entries.len();
        *self.swept_at.lock().unwrap_or_else(PoisonError::into_inner) = after;
        before - after
    }
}

#[async_trait]
impl CodeCache for MemoryCodeCache {
    async fn claim(&self, hash: &str, now: i64, expires_at: i64) -> Result<CodeClaim, StoreError> {
        let size = self.len();
        let due = *self.swept_at.lock().unwrap_or_else(PoisonError::into_inner) + SWEEP_ABOVE;
        if size > due {
            self.sweep(now);
        }
        let mut entries = self.entries();
        match entries.get(hash) {
            Some(entry) if entry.expires_at > now => Ok(entry
                .result
                .clone()
                .map_or(CodeClaim::Pending, CodeClaim::Done)),
            _ => {
                entries.insert(
                    hash.to_owned(),
                    Entry {
                        result: None,
                        expires_at,
                    },
                );
                Ok(CodeClaim::Claimed)
            }
        }
    }

    async fn fulfil(&self, hash: &str, result: &str, expires_at: i64) -> Result<(), StoreError> {
        if let Some(entry) = self.entries().get_mut(hash) {
            entry.result = Some(result.to_owned());
            entry.expires_at = expires_at;
        }
        Ok(())
    }

    async fn release(&self, hash: &str) -> Result<(), StoreError> {
        self.entries().remove(hash);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_code_is_claimed_once_then_pending_then_done_until_it_expires() {
        let cache = MemoryCodeCache::new();
        assert_eq!(
            cache.claim("h", 100, 400).await.unwrap(),
            CodeClaim::Claimed
        );
        assert_eq!(
            cache.claim("h", 101, 400).await.unwrap(),
            CodeClaim::Pending
        );
        cache.fulfil("h", "sealed", 400).await.unwrap();
        assert_eq!(
            cache.claim("h", 399, 700).await.unwrap(),
            CodeClaim::Done("sealed".into())
        );
        // Expired: claimed anew.
        assert_eq!(
            cache.claim("h", 400, 700).await.unwrap(),
            CodeClaim::Claimed
        );
    }

    #[tokio::test]
    async fn a_released_code_can_be_claimed_again() {
        let cache = MemoryCodeCache::new();
        assert_eq!(
            cache.claim("h", 100, 400).await.unwrap(),
            CodeClaim::Claimed
        );
        cache.release("h").await.unwrap();
        assert_eq!(
            cache.claim("h", 100, 400).await.unwrap(),
            CodeClaim::Claimed
        );
    }

    #[tokio::test]
    async fn expired_codes_are_swept() {
        let cache = MemoryCodeCache::new();
        for i in 0..=SWEEP_ABOVE {
            cache.claim(&format!("old-{i}"), 100, 200).await.unwrap();
        }
        cache.claim("new", 300, 600).await.unwrap();
        assert_eq!(cache.len(), 1, "the expired codes went when the map grew");
        assert_eq!(cache.sweep(600), 1);
        assert!(cache.is_empty());
    }
}
