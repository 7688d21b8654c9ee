//! What was recorded (durations, errors) and how it is reported: a table or JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

/// The longest error body kept for the report.
const MAX_ERROR_CHARS: usize = 300;

/// Durations and errors recorded by one client, or merged from all of them.
#[derive(Debug, Default)]
pub struct Tally {
    /// One entry per timed request (errors included), in microseconds.
    micros: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    /// Records one timed request; the error is its status and body.
    pub fn record(&mut self, (elapsed, outcome): (Duration, Result<String, String>)) {
        self.micros
            .push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        if let Err(error) = outcome {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
            }
        }
    }

    /// Adds another client's records.
    pub fn merge(&mut self, other: Tally) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One scenario's figures.
#[derive(Debug)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Timed requests completed.
    pub requests: u64,
    /// Of which non-2xx or failed.
    pub errors: u64,
    /// The first error's status and body.
    pub first_error: Option<String>,
    /// Wall time of the measured part.
    pub seconds: f64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency percentiles p50, p90, p99 and the maximum, in milliseconds.
    pub latency_ms: [f64; 4],
}

impl Summary {
    /// Sorts the durations and computes the figures.
    pub fn new(scenario: &'static str, mut tally: Tally, wall: Duration) -> Self {
        tally.micros.sort_unstable();
        let sorted = &tally.micros;
        let requests = sorted.len() as u64;
        let seconds = wall.as_secs_f64();
        Self {
            scenario,
            requests,
            errors: tally.errors,
            first_error: tally.first_error,
            seconds,
            throughput: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            latency_ms: [
                percentile(sorted, 50.0),
                percentile(sorted, 90.0),
                percentile(sorted, 99.0),
                percentile(sorted, 100.0),
            ],
        }
    }

    fn to_json(&self) -> Value {
        let [p50, p90, p99, max] = self.latency_ms.map(round3);
        json!({
            "scenario": self.scenario,
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": round3(self.seconds),
            "throughput_rps": round3(self.throughput),
            "latency_ms": { "p50": p50, "p90": p90, "p99": p99, "max": max },
        })
    }
}

/// The nearest-rank percentile of sorted microseconds, in milliseconds (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The header, a table of the summaries, and the first error of each scenario that had one.
pub fn table(header: &[(&str, Value)], summaries: &[Summary]) -> String {
    let mut out = String::new();
    for (key, value) in header {
        let _ = match value {
            Value::String(text) => writeln!(out, "{key:<12} {text}"),
            other => writeln!(out, "{key:<12} {other}"),
        };
    }
    let _ = writeln!(
        out,
        "\n{:<8} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "scenario", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for s in summaries {
        let [p50, p90, p99, max] = s.latency_ms;
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>7} {:>10.1} {p50:>8.2} {p90:>8.2} {p99:>8.2} {max:>8.2}",
            s.scenario, s.requests, s.errors, s.throughput
        );
    }
    for s in summaries {
        if let Some(error) = &s.first_error {
            let _ = writeln!(out, "\nfirst {} error: {error}", s.scenario);
        }
    }
    out
}

/// The same as JSON.
pub fn json(header: &[(&str, Value)], summaries: &[Summary]) -> Value {
    let setup: serde_json::Map<String, Value> = header
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect();
    json!({
        "setup": setup,
        "scenarios": summaries.iter().map(Summary::to_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7000], 90.0), 7.0);
    }
}
