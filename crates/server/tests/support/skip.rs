//! Skipping a test for want of a service or tool, visibly: under `CI` a skip is a failure;
//! elsewhere the reason is printed and appended to the file `WXTEST_SKIP_LOG` names (set by
//! `scripts/test`, which lists every skip at the end).

// Shared by several test crates, each of which uses only a part.
#![allow(dead_code)]

use std::io::Write as _;

/// Records that `test` is skipped because of `reason`; panics under `CI`.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason}, and CI requires it");
    }
    eprintln!("SKIPPED {test}: {reason} (CI would fail here)");
    if let Some(path) = std::env::var_os("WXTEST_SKIP_LOG") {
        // One write of one line: appends from parallel tests and processes do not interleave.
        let line = format!("{test}: {reason}\n");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(err) = appended {
            panic!("cannot append to WXTEST_SKIP_LOG {path:?}: {err}");
        }
    }
}
