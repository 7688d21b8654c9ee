//! Whether the services a test needs are reachable: under `CI` a missing service is a
//! failure; elsewhere the test is skipped with a printed reason, recorded in
//! `WXTEST_SKIP_LOG` (see `skip.rs`).

// Shared by several test crates, each of which uses only a part.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[path = "skip.rs"]
mod skip;

/// MariaDB/MySQL, PostgreSQL and Redis as the tests reach them by default.
pub const MYSQL: &str = "127.0.0.1:3306";
/// PostgreSQL.
pub const POSTGRES: &str = "127.0.0.1:5432";
/// Redis.
pub const REDIS: &str = "127.0.0.1:6379";

/// True when every address accepts a connection. When one does not: panics under `CI`,
/// otherwise records why the test is skipped and returns false.
pub fn available(test: &str, addrs: &[&str]) -> bool {
    for addr in addrs {
        let parsed: SocketAddr = addr.parse().unwrap();
        if TcpStream::connect_timeout(&parsed, Duration::from_secs(1)).is_err() {
            skip::skip(test, &format!("no service at {addr}"));
            return false;
        }
    }
    true
}
