//! Login codes recently exchanged, in process memory: for SQLite, where one process owns the
//! database, so the five-minute memory of codes need not cost two database writes per login.
//!
//! The memory is bounded: at most [`CAPACITY`] codes (a few megabytes), the oldest forgotten
//! first. Below about 47 logins a second every code is remembered for its whole five minutes;
//! above, the most recent [`CAPACITY`]. A retry of a forgotten code is exchanged with WeChat
//! again, which answers that it is used (`code_used`: the client logs in with a new code).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::{CodeCache, CodeClaim, StoreError};

/// Codes remembered at most: as many as a table of 16,384 slots holds (seven eighths), so that
/// the table, allocated once, never grows into one of twice the size.
pub const CAPACITY: usize = 14_336;

/// Above this many entries beyond the last sweep's, a claim first drops the expired ones.
const SWEEP_ABOVE: usize = 4096;

/// A claimed code: the exchange's sealed result once there is one, and its expiry.
struct Entry {
    result: Option<Box<str>>,
    expires_at: i64,
}

struct Codes {
    /// By the code's hash, as 32 bytes (not 64 hex characters on the heap).
    entries: HashMap<[u8; 32], Entry>,
    /// The size after the last sweep: the next sweep waits until the map has grown past it
    /// by [`SWEEP_ABOVE`].
    swept_at: usize,
}

impl Codes {
    fn sweep(&mut self, now: i64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| entry.expires_at > now);
        self.swept_at = self.entries.len();
        before - self.entries.len()
    }

    /// Forgets the oldest quarter (by expiry), so that the next evictions are as many inserts
    /// away: constant work per insert on average.
    fn evict_oldest(&mut self) {
        let mut expiries: Vec<i64> = self.entries.values().map(|e| e.expires_at).collect();
        let cut = expiries.len() / 4;
        let (_, cutoff, _) = expiries.select_nth_unstable(cut);
        let cutoff = *cutoff;
        self.entries.retain(|_, entry| entry.expires_at > cutoff);
        self.swept_at = self.entries.len();
    }
}

/// Claims and results by code hash, each until it expires (or until [`CAPACITY`] newer codes
/// push it out).
pub struct MemoryCodeCache {
    codes: Mutex<Codes>,
}

impl Default for MemoryCodeCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCodeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            codes: Mutex::new(Codes {
                entries: HashMap::with_capacity(CAPACITY),
                swept_at: 0,
            }),
        }
    }

    fn codes(&self) -> MutexGuard<'_, Codes> {
        self.codes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many codes are remembered (claimed or exchanged, not yet swept).
    pub fn len(&self) -> usize {
        self.codes().entries.len()
    }

    /// Whether no code is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every code expired at `now`.
    pub fn sweep(&self, now: i64) -> usize {
        self.codes().sweep(now)
    }
}

/// The key of a code hash: its 32 bytes when it is SHA-256 hex (as the login service gives
/// it), otherwise a SHA-256 of it.
fn key(hash: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    if hex::decode_to_slice(hash, &mut key).is_ok() {
        key
    } else {
        Sha256::digest(hash.as_bytes()).into()
    }
}

#[async_trait]
impl CodeCache for MemoryCodeCache {
    async fn claim(&self, hash: &str, now: i64, expires_at: i64) -> Result<CodeClaim, StoreError> {
        let key = key(hash);
        let mut codes = self.codes();
        if let Some(entry) = codes.entries.get(&key)
            && entry.expires_at > now
        {
            return Ok(entry
                .result
                .as_deref()
                .map_or(CodeClaim::Pending, |sealed| CodeClaim::Done(sealed.into())));
        }
        if codes.entries.len() > codes.swept_at + SWEEP_ABOVE {
            codes.sweep(now);
        }
        if codes.entries.len() >= CAPACITY {
            codes.evict_oldest();
        }
        codes.entries.insert(
            key,
            Entry {
                result: None,
                expires_at,
            },
        );
        Ok(CodeClaim::Claimed)
    }

    async fn fulfil(&self, hash: &str, result: &str, expires_at: i64) -> Result<(), StoreError> {
        if let Some(entry) = self.codes().entries.get_mut(&key(hash)) {
            entry.result = Some(result.into());
            entry.expires_at = expires_at;
        }
        Ok(())
    }

    async fn release(&self, hash: &str) -> Result<(), StoreError> {
        self.codes().entries.remove(&key(hash));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(name: &str) -> String {
        hex::encode(Sha256::digest(name.as_bytes()))
    }

    #[tokio::test]
    async fn a_code_is_claimed_once_then_pending_then_done_until_it_expires() {
        let cache = MemoryCodeCache::new();
        let h = hash("h");
        assert_eq!(cache.claim(&h, 100, 400).await.unwrap(), CodeClaim::Claimed);
        assert_eq!(cache.claim(&h, 101, 400).await.unwrap(), CodeClaim::Pending);
        cache.fulfil(&h, "sealed", 400).await.unwrap();
        assert_eq!(
            cache.claim(&h, 399, 700).await.unwrap(),
            CodeClaim::Done("sealed".into())
        );
        // Expired: claimed anew.
        assert_eq!(cache.claim(&h, 400, 700).await.unwrap(), CodeClaim::Claimed);
    }

    #[tokio::test]
    async fn a_released_code_can_be_claimed_again() {
        let cache = MemoryCodeCache::new();
        // Any string works as a key, hex or not.
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
            cache
                .claim(&hash(&format!("old-{i}")), 100, 200)
                .await
                .unwrap();
        }
        cache.claim(&hash("new"), 300, 600).await.unwrap();
        assert_eq!(cache.len(), 1, "the expired codes went when the map grew");
        assert_eq!(cache.sweep(600), 1);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn the_memory_is_bounded_and_the_oldest_codes_go_first() {
        let cache = MemoryCodeCache::new();
        let total = CAPACITY * 3;
        for i in 0..total {
            let h = hash(&format!("code-{i}"));
            let now = i64::try_from(i).unwrap();
            cache.claim(&h, now, now + 300_000).await.unwrap();
            cache.fulfil(&h, "sealed", now + 300_000).await.unwrap();
            assert!(cache.len() <= CAPACITY);
        }
        let now = i64::try_from(total).unwrap();
        // The newest are remembered; the oldest were pushed out and are claimed anew.
        let newest = hash(&format!("code-{}", total - 1));
        assert_eq!(
            cache.claim(&newest, now, now + 300).await.unwrap(),
            CodeClaim::Done("sealed".into())
        );
        let oldest = hash("code-0");
        assert_eq!(
            cache.claim(&oldest, now, now + 300).await.unwrap(),
            CodeClaim::Claimed
        );
    }
}
