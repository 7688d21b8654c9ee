//! Faults injected into the WeChat endpoints, and the count of calls they received.
//!
//! A fault is queued for one path and fires on the next calls to it, in order, `times` times
//! each: a delay, an errcode, an HTTP status, a raw body, or a mix. Statistics count every
//! call, faulted or not, so tests can assert how often a backend called WeChat (retries,
//! token caching, single-flight).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

/// `/sns/jscode2session`.
pub const JSCODE2SESSION: &str = "/sns/jscode2session";
/// `/cgi-bin/stable_token`.
pub const STABLE_TOKEN: &str = "/cgi-bin/stable_token";
/// `/cgi-bin/token`.
pub const TOKEN: &str = "/cgi-bin/token";
/// `/wxa/business/getuserphonenumber`.
pub const GET_USER_PHONE_NUMBER: &str = "/wxa/business/getuserphonenumber";
/// `/wxa/checksession`.
pub const CHECK_SESSION: &str = "/wxa/checksession";
/// `/wxa/resetusersessionkey`.
pub const RESET_SESSION_KEY: &str = "/wxa/resetusersessionkey";

/// Every WeChat path the simulator serves.
pub const WECHAT_PATHS: [&str; 6] = [
    JSCODE2SESSION,
    STABLE_TOKEN,
    TOKEN,
    GET_USER_PHONE_NUMBER,
    CHECK_SESSION,
    RESET_SESSION_KEY,
];

/// The longest delay a fault may ask for; longer ones are surely a typo.
const MAX_DELAY_MS: u64 = 600_000;

/// `POST /sim/faults` as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The WeChat path to fault, e.g. "/sns/jscode2session".
    pub path: String,
    /// Answer `{"errcode": N, "errmsg": ...}` without processing the call.
    pub errcode: Option<i64>,
    /// Answer with this HTTP status.
    pub http_status: Option<u16>,
    /// Answer with this raw body (a JSON string is sent as its text, any other JSON value
    /// as its serialization).
    pub body: Option<serde_json::Value>,
    /// Wait this long before answering.
    pub delay_ms: Option<u64>,
    /// How many calls it affects.
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// A validated fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Answer this errcode.
    pub errcode: Option<i64>,
    /// Answer with this status.
    pub http_status: Option<StatusCode>,
    /// Answer this raw body.
    pub body: Option<String>,
    /// Wait first.
    pub delay: Option<Duration>,
}

impl Fault {
    /// Checks a spec; returns the canonical path, the fault and how many calls it affects.
    pub fn from_spec(spec: FaultSpec) -> Result<(&'static str, Self, u32), String> {
        let path = WECHAT_PATHS
            .into_iter()
            .find(|p| *p == spec.path)
            .ok_or_else(|| {
                format!(
                    "path must be one of the WeChat paths: {}",
                    WECHAT_PATHS.join(", ")
                )
            })?;
        if spec.times == 0 {
            return Err("times must be at least 1".to_owned());
        }
        let http_status = spec
            .http_status
            .map(|code| {
                StatusCode::from_u16(code)
                    .ok()
                    .filter(|status| (200..=599).contains(&status.as_u16()))
                    .ok_or_else(|| "http_status must be between 200 and 599".to_owned())
            })
            .transpose()?;
        let delay = spec
            .delay_ms
            .map(|ms| {
                if ms > MAX_DELAY_MS {
                    Err(format!("delay_ms must be at most {MAX_DELAY_MS}"))
                } else {
                    Ok(Duration::from_millis(ms))
                }
            })
            .transpose()?;
        let body = spec.body.map(|body| match body {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        });
        if spec.errcode.is_none() && http_status.is_none() && body.is_none() && delay.is_none() {
            return Err("a fault needs errcode, http_status, body or delay_ms".to_owned());
        }
        Ok((
            path,
            Self {
                errcode: spec.errcode,
                http_status,
                body,
                delay,
            },
            spec.times,
        ))
    }
}

/// Queues of faults, one per path.
#[derive(Debug, Default)]
pub struct Faults {
    queues: Mutex<HashMap<&'static str, VecDeque<(Fault, u32)>>>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, HashMap<&'static str, VecDeque<(Fault, u32)>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `fault` for the next `times` calls to `path`, after the ones already queued.
    pub fn push(&self, path: &'static str, fault: Fault, times: u32) {
        self.lock()
            .entry(path)
            .or_default()
            .push_back((fault, times));
    }

    /// The fault for this call to `path`, if any, counting it down.
    pub fn take(&self, path: &str) -> Option<Fault> {
        let mut queues = self.lock();
        let queue = queues.get_mut(path)?;
        let (fault, remaining) = queue.front_mut()?;
        let fault = fault.clone();
        *remaining -= 1;
        if *remaining == 0 {
            queue.pop_front();
        }
        Some(fault)
    }

    /// Drops every queued fault.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// What `GET /sim/stats` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    /// Every WeChat call.
    pub total: u64,
    /// Calls per path.
    pub by_path: BTreeMap<String, u64>,
    /// Calls per app (the appid parameter, or the owner of the access token; "unknown" when
    /// neither is known), then per path.
    pub by_app: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Counts of WeChat calls.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<StatsSnapshot>,
}

impl Stats {
    fn lock(&self) -> MutexGuard<'_, StatsSnapshot> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one call.
    pub fn record(&self, path: &str, app: &str) {
        let mut stats = self.lock();
        stats.total += 1;
        *stats.by_path.entry(path.to_owned()).or_default() += 1;
        *stats
            .by_app
            .entry(app.to_owned())
            .or_default()
            .entry(path.to_owned())
            .or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.lock().clone()
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        *self.lock() = StatsSnapshot::default();
    }
}
