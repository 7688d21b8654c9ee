//! Webhook delivery: a background task per endpoint claims due deliveries with a lease, POSTs
//! each event signed as the Standard Webhooks specification says, and records the outcome: a
//! 2xx is delivered; anything else, or no answer within the endpoint's `timeout`, is retried
//! with exponential backoff and jitter until `retry_for` has passed, then marked failed.
//!
//! Never on a request's path: logins only write the outbox row. Several instances share the
//! work through the leases (see [`SqlStore::claim_deliveries`]); a lease outlives the longest
//! attempt, so an instance that dies mid-delivery leaves its claims to expire and another
//! sends them. At shutdown a worker stops claiming, lets the attempts in flight finish and
//! gives back what it still holds.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use secrecy::ExposeSecret as _;
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{WEBHOOK_SECRET_PREFIX, Webhook};
use crate::store::sql::SqlStore;
use crate::store::sql::events::{Attempt, Claimed, wall_ms};

/// How often an idle worker looks for due deliveries (events written by other instances,
/// retries that came due); events written here wake it at once.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Longest a worker waits after a database error before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(2);

/// How often a worker measures the age of the oldest event its endpoint still waits for.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// A new webhook secret: `whsec_` and base64 of 32 random bytes.
pub fn generate_secret() -> String {
    format!(
        "{WEBHOOK_SECRET_PREFIX}{}",
        BASE64.encode(rand::random::<[u8; 32]>())
    )
}

/// The `webhook-signature` value: `v1,` and base64 of HMAC-SHA256 over `id.timestamp.body`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The wait before attempt `attempts + 1` after `attempts` failures: `backoff` doubling per
/// failure, at most `max_backoff`, then a random part of it taken off (between none and a
/// half) so that receivers coming back are not hit by every sender at once.
pub fn backoff(hook: &Webhook, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(30);
    let full = hook
        .backoff
        .saturating_mul(1 << doublings)
        .min(hook.max_backoff);
    full.mul_f64(1.0 - rand::random::<f64>() / 2.0)
}

/// How long a claim holds: longer than an attempt can take.
fn lease(hook: &Webhook) -> Duration {
    hook.timeout * 2 + Duration::from_secs(2)
}

/// The delivery workers of one instance.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    store: Arc<SqlStore>,
    owner: String,
}

impl Workers {
    /// Starts one worker per endpoint.
    pub fn start(store: Arc<SqlStore>, hooks: &[Webhook]) -> anyhow::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let owner = format!("wxauth-{}", uuid::Uuid::now_v7());
        let mut tasks = JoinSet::new();
        for hook in hooks {
            let client = reqwest::Client::builder()
                .timeout(hook.timeout)
                .connect_timeout(hook.timeout.min(Duration::from_secs(5)))
                // A redirect is not a delivery: the endpoint should be configured as it is.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("wxauth/", env!("CARGO_PKG_VERSION")))
                .build()?;
            let worker = Worker {
                store: store.clone(),
                hook: hook.clone(),
                endpoint: hook.url.to_string(),
                shown: crate::config::DatabaseUrl::from(hook.url.as_str()).masked(),
                client,
                owner: owner.clone(),
            };
            tasks.spawn(worker.run(stopped.clone()));
        }
        Ok(Self {
            stop,
            tasks,
            store,
            owner,
        })
    }

    /// Stops claiming, waits (at most `grace`) for the attempts in flight, and gives back the
    /// leases still held.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let finished = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            self.tasks.shutdown().await;
        }
        match self.store.release_leases(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "gave back webhook deliveries at shutdown"),
            Err(err) => tracing::warn!(error = %err, "could not give back webhook leases"),
        }
    }
}

struct Worker {
    store: Arc<SqlStore>,
    hook: Webhook,
    /// The URL, as the deliveries are keyed.
    endpoint: String,
    /// The URL as logged (a password in it masked).
    shown: String,
    client: reqwest::Client,
    owner: String,
}

impl Worker {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let lease_ms = i64::try_from(lease(&this.hook).as_millis()).unwrap_or(i64::MAX);
        let mut gauged = tokio::time::Instant::now() - GAUGE_EVERY;
        loop {
            if *stopped.borrow() {
                return;
            }
            if gauged.elapsed() >= GAUGE_EVERY {
                gauged = tokio::time::Instant::now();
                this.gauge_oldest_pending().await;
            }
            let written = this.store.outbox().written.notified();
            let mut written = std::pin::pin!(written);
            written.as_mut().enable();
            let claimed = match this
                .store
                .claim_deliveries(&this.endpoint, &this.owner, lease_ms)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, endpoint = %this.shown, "cannot claim webhook deliveries");
                    tokio::select! {
                        () = tokio::time::sleep(ERROR_PAUSE) => {}
                        _ = stopped.changed() => {}
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    () = &mut written => {}
                    () = tokio::time::sleep(POLL_EVERY) => {}
                    _ = stopped.changed() => {}
                }
                continue;
            }
            // Every claimed delivery is the first undelivered one of its person: they may go
            // out side by side.
            let mut attempts = JoinSet::new();
            for delivery in claimed {
                let this = this.clone();
                attempts.spawn(async move { this.attempt(delivery).await });
            }
            while attempts.join_next().await.is_some() {}
        }
    }

    /// Sets the gauge of the oldest event this endpoint still waits for.
    async fn gauge_oldest_pending(&self) {
        match self.store.oldest_pending_ms(&self.endpoint).await {
            Ok(oldest) => {
                let age_ms = oldest.map_or(0, |at| wall_ms().saturating_sub(at).max(0));
                let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
                crate::instruments::webhook_oldest_pending(&self.shown, age);
            }
            Err(err) => {
                tracing::debug!(error = %err, endpoint = %self.shown, "cannot read the oldest pending webhook delivery");
            }
        }
    }

    /// One attempt, and its outcome recorded.
    async fn attempt(&self, delivery: Claimed) {
        let timestamp = wall_ms() / 1000;
        let signature = sign(
            self.hook.key.expose_secret(),
            &delivery.event_id,
            timestamp,
            &delivery.payload,
        );
        let span = tracing::info_span!(
            "webhook",
            endpoint = %self.shown,
            event_id = %delivery.event_id,
            attempt = delivery.attempts + 1
        );
        let sent = self
            .client
            .post(self.hook.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        let error = match sent {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("answered {}", response.status().as_u16())),
            Err(err) if err.is_timeout() => Some(format!(
                "no answer within {}",
                crate::config::duration::format(self.hook.timeout)
            )),
            Err(err) if err.is_connect() => Some("could not connect".to_owned()),
            Err(_) => Some("the request failed".to_owned()),
        };
        let outcome = match error {
            None => {
                tracing::debug!(parent: &span, "webhook delivered");
                crate::instruments::webhook_attempt(&self.shown, "delivered");
                Attempt::Delivered
            }
            Some(error) => {
                let now = wall_ms();
                let attempts = delivery.attempts + 1;
                let retry_for = i64::try_from(self.hook.retry_for.as_millis()).unwrap_or(i64::MAX);
                if now.saturating_sub(delivery.retry_from_ms) >= retry_for {
                    tracing::warn!(parent: &span, %error, "webhook delivery failed for good");
                    crate::instruments::webhook_attempt(&self.shown, "failed");
                    Attempt::Failed { error }
                } else {
                    crate::instruments::webhook_attempt(&self.shown, "retry");
                    let wait = backoff(&self.hook, attempts);
                    tracing::info!(parent: &span, %error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed; retrying");
                    Attempt::Retry {
                        next_attempt_ms: now
                            + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2),
                        error,
                    }
                }
            }
        };
        if let Err(err) = self
            .store
            .record_attempt(&self.endpoint, delivery.event_seq, &self.owner, outcome)
            .await
        {
            // The lease runs out and the delivery is sent again, with the same webhook-id.
            tracing::warn!(parent: &span, error = %err, "cannot record a webhook attempt");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification.
        let key = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_new_secret_is_whsec_and_32_bytes() {
        let secret = generate_secret();
        let key = BASE64
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
        assert_ne!(secret, generate_secret());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_it() {
        let mut hook = crate::config::WebhookConfig::new(
            url::Url::parse("https://example.com/hook").unwrap(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        hook.backoff = Duration::from_secs(1);
        hook.max_backoff = Duration::from_secs(10);
        let config = crate::Config {
            webhooks: vec![hook],
            ..crate::Config::default()
        };
        let hook = &config.resolve_webhooks().unwrap()[0];
        for (attempts, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (40, 10)] {
            let full = Duration::from_secs(full);
            for _ in 0..20 {
                let wait = backoff(hook, attempts);
                assert!(wait <= full && wait >= full / 2, "{attempts}: {wait:?}");
            }
        }
    }
}
