//! SQLite's reading connections for the hot reads (a login's person, an access token's
//! session): kept out of sqlx's pool, which tests every connection it takes back with a ping.
//! On SQLite a ping is one more hand-off to the connection's thread and back, after every
//! query, in a task of its own: as much again as the read.
//!
//! Cancellation: a read that its caller drops goes on to its end on the connection's thread
//! (sqlx resets the statement when it is done with it, so no read transaction stays open);
//! the connection is back in the set at once, and the next read on it waits behind that one.
//! Nothing here writes or opens a transaction.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::store_error;
use crate::store::StoreError;

/// A fixed set of reading connections.
pub(crate) struct Readers {
    idle: Mutex<Vec<AnyConnection>>,
    permits: Semaphore,
    /// How long a read waits for a free connection (`database.acquire_timeout`).
    wait: Duration,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("idle", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// A set of `connections` (at least one); a read waits at most `wait` for one.
    pub(crate) fn new(connections: Vec<AnyConnection>, wait: Duration) -> Self {
        assert!(!connections.is_empty(), "a set of no reading connections");
        Self {
            permits: Semaphore::new(connections.len()),
            idle: Mutex::new(connections),
            wait,
        }
    }

    /// A connection to read on, when one is free within the wait.
    pub(crate) async fn get(&self) -> Result<Reader<'_>, StoreError> {
        let permit = tokio::time::timeout(self.wait, self.permits.acquire())
            .await
            .map_err(|_| store_error(sqlx::Error::PoolTimedOut))?
            .map_err(|_| store_error(sqlx::Error::PoolClosed))?;
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .expect("a permit stands for an idle connection");
        Ok(Reader {
            conn: Some(conn),
            readers: self,
            _permit: permit,
        })
    }
}

/// A reading connection, back in its set when dropped.
pub(crate) struct Reader<'a> {
    conn: Option<AnyConnection>,
    readers: &'a Readers,
    // Released after the connection is back (fields drop after `drop`).
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

/// A connection for one read: one of the [`Readers`] on SQLite, one from the pool elsewhere.
pub(crate) enum ReadConn<'a> {
    /// SQLite's.
    Set(Reader<'a>),
    /// MySQL's or PostgreSQL's, tested by the pool when it takes it back.
    Pooled(PoolConnection<Any>),
}

impl std::ops::Deref for ReadConn<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Self::Set(reader) => reader,
            Self::Pooled(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for ReadConn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Self::Set(reader) => reader,
            Self::Pooled(conn) => conn,
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, Executor as _};

    use super::*;

    async fn open(path: &std::path::Path) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap()
    }

    /// Rows enough that fetching them all takes a while.
    const MANY_ROWS: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                             WHERE x < 5000000) SELECT x FROM c";

    #[tokio::test]
    async fn a_read_dropped_half_way_leaves_its_connection_free_and_seeing_new_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxauth.db");
        let mut writer = open(&path).await;
        writer
            .execute("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)")
            .await
            .unwrap();
        let readers = Readers::new(vec![open(&path).await], Duration::from_secs(5));
        for _ in 0..3 {
            // Dropped while its rows are still coming.
            let read = async {
                let mut reader = readers.get().await.unwrap();
                sqlx::query_scalar::<_, i64>(MANY_ROWS)
                    .fetch_all(&mut *reader)
                    .await
            };
            assert!(
                tokio::time::timeout(Duration::from_millis(20), read)
                    .await
                    .is_err(),
                "the read was meant to be cut off"
            );
            // The connection is free again, and no read transaction of the dropped read
            // hides what was committed since.
            writer.execute("INSERT INTO t VALUES (1)").await.unwrap();
            let mut reader = readers.get().await.unwrap();
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
                .fetch_one(&mut *reader)
                .await
                .unwrap();
            let written: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
                .fetch_one(&mut writer)
                .await
                .unwrap();
            assert_eq!(seen, written);
        }
    }

    #[tokio::test]
    async fn a_read_waits_for_a_free_connection_only_so_long() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Readers::new(
            vec![open(&dir.path().join("wxauth.db")).await],
            Duration::from_millis(50),
        );
        let held = readers.get().await.unwrap();
        let err = readers.get().await.err().expect("no connection is free");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        drop(held);
        readers.get().await.unwrap();
    }
}
