//! The simulator's clock: real time plus an offset that tests move forward through
//! `POST /sim/time`, so expiry (codes, tokens, quotas) is tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Real time shifted by an offset that only grows.
#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    /// A clock that starts at real time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        real.saturating_add(self.offset_secs.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `secs` and returns the new now.
    ///
    /// Only forward: the code and quota bookkeeping prunes in time order, and WeChat's clock
    /// does not run backwards either.
    pub fn advance(&self, secs: u64) -> i64 {
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        // fetch_update cannot fail with a closure that always returns Some.
        let _ = self
            .offset_secs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |offset| {
                Some(offset.saturating_add(secs))
            });
        self.now()
    }
}
