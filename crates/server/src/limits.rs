//! Rate limits (`[limits]`): a token bucket per client address and one per app for each
//! action that costs a WeChat call or a write (login, refresh, check, phone, userinfo, avatar
//! upload). A request takes one token from each of its buckets, or from none: when one is
//! empty, the request is refused 429 `rate_limited` with `Retry-After` saying when a token
//! will be there.
//!
//! With sessions in Redis the buckets live there, shared by every instance: one Lua script
//! checks and takes both buckets of a request in one round trip, on Redis's clock. Otherwise
//! each instance keeps its own buckets in memory. A Redis that does not answer lets requests
//! through (the limiter never takes the service down with it); the failure is counted in
//! `wxauth_store_errors_total`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::Script;
use wxauth_wechat::AppId;

use crate::config::{LimitedAction, LimitsConfig, Rate};
use crate::error::ApiError;
use crate::store::redis::{RedisSessionStore, TimedConnection};

/// KEYS = the buckets; ARGV = for each bucket its size, then its refill period in ms.
/// Takes a token from every bucket, or from none; returns {0, 0} when taken, else
/// {ms until the fullest-waiting bucket has a token, its 1-based index}.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait, which = 0, 0
local level = {}
for i, key in ipairs(KEYS) do
  local size = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', key, 'n', 't')
  local n, at = tonumber(b[1]), tonumber(b[2])
  if n == nil or at == nil then n, at = size, now end
  if now > at then n = math.min(size, n + (now - at) * size / period) end
  if n < 1 then
    local w = math.ceil((1 - n) * period / size)
    if w > wait then wait, which = w, i end
  end
  level[i] = n
end
if wait > 0 then return {wait, which} end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'n', tostring(level[i] - 1), 't', tostring(now))
  redis.call('PEXPIRE', key, ARGV[2 * i])
end
return {0, 0}
";

/// Which bucket of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Per client address.
    Ip,
    /// Per app.
    App,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::App => "app",
        }
    }
}

/// The limiter of a running service.
pub struct Limiter {
    /// (per address, per app) of each action, in [`LimitedAction::ALL`] order.
    rates: [(Rate, Rate); LimitedAction::ALL.len()],
    shared: Option<Shared>,
    local: Mutex<Local>,
}

/// Buckets in Redis.
struct Shared {
    conn: TimedConnection,
    prefix: String,
    take: Script,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rates", &self.rates)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

fn index(action: LimitedAction) -> usize {
    LimitedAction::ALL
        .iter()
        .position(|a| *a == action)
        .unwrap_or(0)
}

impl Limiter {
    /// The limits of `config`, kept in `redis` when sessions are there, in memory otherwise.
    pub fn new(config: &LimitsConfig, redis: Option<&RedisSessionStore>) -> Self {
        Self {
            rates: LimitedAction::ALL.map(|action| config.rates(action)),
            shared: redis.map(|store| Shared {
                conn: store.connection(),
                prefix: format!("{}rl:", store.prefix()),
                take: Script::new(TAKE),
            }),
            local: Mutex::new(Local::default()),
        }
    }

    /// Whether a bucket of an action limits anything.
    pub fn is_on(&self, action: LimitedAction, bucket: Bucket) -> bool {
        let (ip, app) = self.rates[index(action)];
        match bucket {
            Bucket::Ip => ip.is_on(),
            Bucket::App => app.is_on(),
        }
    }

    /// Takes a token from the buckets of `ip` and `app` for `action` (those that are on and
    /// known), or refuses with 429 `rate_limited`.
    pub async fn check(
        &self,
        action: LimitedAction,
        ip: Option<IpAddr>,
        app: Option<&AppId>,
    ) -> Result<(), ApiError> {
        let (ip_rate, app_rate) = self.rates[index(action)];
        let mut buckets: Vec<(Bucket, String, Rate)> = Vec::with_capacity(2);
        if let Some(ip) = ip.filter(|_| ip_rate.is_on()) {
            buckets.push((Bucket::Ip, ip.to_string(), ip_rate));
        }
        if let Some(app) = app.filter(|_| app_rate.is_on()) {
            buckets.push((Bucket::App, app.as_str().to_owned(), app_rate));
        }
        if buckets.is_empty() {
            return Ok(());
        }
        let refused = match &self.shared {
            Some(shared) => shared.take(action, &buckets).await,
            None => self
                .local
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(action, &buckets, Instant::now()),
        };
        match refused {
            None => Ok(()),
            Some((bucket, wait)) => {
                crate::instruments::rate_limited(action.name(), bucket.name());
                tracing::debug!(
                    action = action.name(),
                    bucket = bucket.name(),
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "rate limited"
                );
                Err(ApiError::RateLimited {
                    retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                })
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Shared {
    /// `None` when taken (or when Redis does not answer), else the bucket that refused and
    /// how long until it has a token.
    async fn take(
        &self,
        action: LimitedAction,
        buckets: &[(Bucket, String, Rate)],
    ) -> Option<(Bucket, Duration)> {
        let mut invocation = self.take.prepare_invoke();
        for (bucket, key, rate) in buckets {
            invocation
                .key(format!(
                    "{}{}:{}:{key}",
                    self.prefix,
                    action.name(),
                    bucket.name()
                ))
                .arg(rate.burst)
                .arg(millis(rate.period));
        }
        let mut conn = self.conn.clone();
        let reply: Result<(u64, usize), _> = invocation.invoke_async(&mut conn).await;
        match reply {
            Ok((0, _)) => None,
            Ok((wait_ms, which)) => {
                let bucket = buckets
                    .get(which.saturating_sub(1))
                    .map_or(Bucket::Ip, |b| b.0);
                Some((bucket, Duration::from_millis(wait_ms)))
            }
            Err(err) => {
                crate::instruments::store_unavailable("redis");
                tracing::warn!(error = %err, "rate limits unavailable (Redis): letting the request through");
                None
            }
        }
    }
}

/// Buckets in this process's memory.
#[derive(Default)]
struct Local {
    buckets: HashMap<(LimitedAction, Bucket, String), Level>,
    /// Full buckets are forgotten when the map grows past this.
    sweep_at: usize,
}

/// A bucket's tokens at an instant, and its rate.
#[derive(Debug, Clone, Copy)]
struct Level {
    tokens: f64,
    at: Instant,
    rate: Rate,
}

impl Level {
    fn now(self, now: Instant) -> f64 {
        let rate = self.rate;
        let refill = now.saturating_duration_since(self.at).as_secs_f64()
            / rate.period.as_secs_f64()
            * f64::from(rate.burst);
        (self.tokens + refill).min(f64::from(rate.burst))
    }
}

/// Fewer buckets than this are never swept.
const MIN_SWEEP: usize = 4096;

impl Local {
    fn take(
        &mut self,
        action: LimitedAction,
        buckets: &[(Bucket, String, Rate)],
        now: Instant,
    ) -> Option<(Bucket, Duration)> {
        let mut levels = [0.0; 2];
        let mut refused: Option<(Bucket, Duration)> = None;
        for (i, (bucket, key, rate)) in buckets.iter().enumerate() {
            let level = self
                .buckets
                .get(&(action, *bucket, key.clone()))
                .map_or(f64::from(rate.burst), |level| level.now(now));
            if level < 1.0 {
                let wait = rate.period.mul_f64((1.0 - level) / f64::from(rate.burst));
                if refused.is_none_or(|(_, longest)| wait > longest) {
                    refused = Some((*bucket, wait));
                }
            }
            if let Some(slot) = levels.get_mut(i) {
                *slot = level;
            }
        }
        if refused.is_some() {
            return refused;
        }
        for (i, (bucket, key, rate)) in buckets.iter().enumerate() {
            let tokens = levels.get(i).copied().unwrap_or(0.0) - 1.0;
            let level = Level {
                tokens,
                at: now,
                rate: *rate,
            };
            self.buckets.insert((action, *bucket, key.clone()), level);
        }
        if self.buckets.len() > self.sweep_at.max(MIN_SWEEP) {
            self.sweep(now);
        }
        None
    }

    /// Forgets the buckets that have refilled: a full bucket is the same as none.
    fn sweep(&mut self, now: Instant) {
        self.buckets
            .retain(|_, level| level.now(now) < f64::from(level.rate.burst));
        self.sweep_at = self.buckets.len() * 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> String {
        format!("10.0.0.{n}")
    }

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let mut local = Local::default();
        let rate = Rate::per(3, Duration::from_secs(3));
        let start = Instant::now();
        let buckets = [(Bucket::Ip, ip(1), rate)];
        for _ in 0..3 {
            assert!(local.take(LimitedAction::Login, &buckets, start).is_none());
        }
        let (bucket, wait) = local
            .take(LimitedAction::Login, &buckets, start)
            .expect("the fourth is refused");
        assert_eq!(bucket, Bucket::Ip);
        assert_eq!(wait, Duration::from_secs(1));
        // One token a second comes back.
        let later = start + Duration::from_secs(1);
        assert!(local.take(LimitedAction::Login, &buckets, later).is_none());
        assert!(local.take(LimitedAction::Login, &buckets, later).is_some());
        // Another address, another action: their own buckets.
        assert!(
            local
                .take(LimitedAction::Login, &[(Bucket::Ip, ip(2), rate)], later)
                .is_none()
        );
        assert!(local.take(LimitedAction::Check, &buckets, later).is_none());
    }

    #[test]
    fn refilled_buckets_are_forgotten_when_the_map_grows() {
        let mut local = Local::default();
        let rate = Rate::per(2, Duration::from_secs(1));
        let start = Instant::now();
        for n in 0..=MIN_SWEEP {
            let key = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
            let _ = local.take(LimitedAction::Login, &[(Bucket::Ip, key, rate)], start);
        }
        assert!(local.buckets.len() <= MIN_SWEEP + 1);
        // Two seconds on, all of them are full again: the next growth past the mark drops them.
        let later = start + Duration::from_secs(2);
        for n in 0..=MIN_SWEEP * 2 {
            let key = format!("172.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
            let _ = local.take(LimitedAction::Login, &[(Bucket::Ip, key, rate)], later);
        }
        assert!(
            !local
                .buckets
                .keys()
                .any(|(_, _, key)| key.starts_with("10.")),
            "the refilled buckets are gone"
        );
    }

    #[test]
    fn a_request_takes_from_every_bucket_or_from_none() {
        let mut local = Local::default();
        let per_ip = Rate::per(10, Duration::from_secs(60));
        let per_app = Rate::per(1, Duration::from_secs(60));
        let now = Instant::now();
        let both = |n| {
            [
                (Bucket::Ip, ip(n), per_ip),
                (Bucket::App, "wx1234567890abcdef".to_owned(), per_app),
            ]
        };
        assert!(local.take(LimitedAction::Phone, &both(1), now).is_none());
        let (bucket, _) = local
            .take(LimitedAction::Phone, &both(2), now)
            .expect("the app's bucket is empty");
        assert_eq!(bucket, Bucket::App);
        // The refused request took nothing from its address's bucket.
        let level = local.buckets[&(LimitedAction::Phone, Bucket::Ip, ip(1))];
        assert!((level.tokens - 9.0).abs() < 1e-9);
        assert!(
            !local
                .buckets
                .contains_key(&(LimitedAction::Phone, Bucket::Ip, ip(2)))
        );
    }
}
