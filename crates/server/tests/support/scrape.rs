//! Scraping `/metrics` with Prometheus's Python client (`prometheus_client.parser`, run by
//! tests/ext/scrape_metrics.py), and reading the samples.

// Shared by several test crates, each of which uses only a part.
#![allow(dead_code)]

use std::path::Path;

use serde_json::Value;
use tokio::process::Command;

use super::ext;

/// One scrape, as the parser read it.
pub struct Scrape {
    families: Value,
    samples: Vec<Value>,
}

impl Scrape {
    /// Scrapes `url` with the Python parser; the scrape must parse.
    pub async fn take(python: &Path, url: &str) -> Self {
        let output = ext::run(
            Command::new(python)
                .arg(ext::ext_dir().join("scrape_metrics.py"))
                .arg(url),
        )
        .await;
        assert!(
            output.status.success(),
            "scrape_metrics.py {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
        Self {
            families: parsed["families"].clone(),
            samples: parsed["samples"].as_array().unwrap().clone(),
        }
    }

    /// The type the parser gave a family ("counter", "histogram", ...).
    pub fn family_type(&self, family: &str) -> Option<&str> {
        self.families[family].as_str()
    }

    /// The sum of the samples named `name` carrying every label in `labels` (0 when none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| s["value"].as_f64().unwrap())
            .sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.samples.iter().filter(move |s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
    }

    /// Every value a label takes on the samples of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .matching(name, &[])
            .filter_map(|s| s["labels"][label].as_str().map(str::to_owned))
            .collect();
        values.sort();
        values.dedup();
        values
    }
}
