//! The JWT signing keys in the `signing_keys` table, shared by every instance.
//!
//! The store only moves rows: generating, sealing and opening keys is [`crate::jwt`]'s job.
//! The key with the highest `generation` is the current one. Making a new current key is one
//! short transaction (insert it, give the older current key its `retire_after`, drop keys
//! retired for good); the unique `generation` decides between two instances doing it at the
//! same moment: the loser's insert fails, it rolls back and re-reads the winner's key.

use std::fmt;
use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row as _, Transaction};

use super::StoreError;
use super::sql::{Dialect, SqlStore, is_deadlock, is_unique_violation, store_error};

/// One row of `signing_keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The key id (`kid`), its RFC 7638 thumbprint.
    pub kid: String,
    /// Higher is newer; the highest is the current key.
    pub generation: i64,
    /// The JWS algorithm ("EdDSA", "ES256").
    pub algorithm: String,
    /// The private key, sealed with the data key.
    pub sealed_private_key: String,
    /// The public key as a JWK (JSON text), as published.
    pub public_jwk: String,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// When it stops being published (Unix seconds); `None` while it is current.
    pub retire_after: Option<i64>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sealed private key is left out even though it is encrypted.
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("retire_after", &self.retire_after)
            .finish_non_exhaustive()
    }
}

/// A key to store as the new current one.
#[derive(Clone)]
pub struct NewKey {
    /// The key id.
    pub kid: String,
    /// The JWS algorithm.
    pub algorithm: String,
    /// The private key, sealed with the data key.
    pub sealed_private_key: String,
    /// The public JWK, as JSON text.
    pub public_jwk: String,
    /// Now (Unix seconds).
    pub created_at: i64,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str =
    "kid, generation, algorithm, private_key, public_jwk, created_at, retire_after";

#[derive(Debug)]
struct Queries {
    published: String,
    all: String,
    insert: String,
    retire_older: String,
    delete_retired: String,
}

/// The `signing_keys` table.
#[derive(Debug, Clone)]
pub struct SigningKeyStore {
    pool: AnyPool,
    dialect: Dialect,
    q: Arc<Queries>,
}

impl SigningKeyStore {
    /// Uses the database of `store`.
    pub fn new(store: &SqlStore) -> Self {
        let q = Queries {
            published: store.prepare(&format!(
                "SELECT {COLUMNS} FROM signing_keys \
                 WHERE retire_after IS NULL OR retire_after > ? ORDER BY generation DESC"
            )),
            all: store.prepare(&format!(
                "SELECT {COLUMNS} FROM signing_keys ORDER BY generation DESC"
            )),
            insert: store.prepare(&format!(
                "INSERT INTO signing_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)"
            )),
            retire_older: store.prepare(
                "UPDATE signing_keys SET retire_after = ? \
                 WHERE generation < ? AND retire_after IS NULL",
            ),
            delete_retired: store.prepare(
                "DELETE FROM signing_keys WHERE retire_after IS NOT NULL AND retire_after <= ?",
            ),
        };
        Self {
            // Rarely used, and mostly to write: on SQLite through the one writer.
            pool: store.writer().clone(),
            dialect: store.dialect(),
            q: Arc::new(q),
        }
    }

    /// The keys still published at `now`, newest (the current one) first.
    pub async fn published(&self, now: i64) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(&self.q.published)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(key_from_row).collect()
    }

    /// Every stored key, newest first, retired ones included.
    pub async fn all(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(&self.q.all)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(key_from_row).collect()
    }

    /// Stores `key` as the current key at `generation` (one more than the newest the caller
    /// saw), gives the key it replaces `retire_older_at`, and deletes keys retired before
    /// `key.created_at`. `Ok(false)` when another instance stored that generation first (or
    /// was doing so at the same moment): re-read and try again.
    ///
    /// The transaction runs in a task of its own, so a caller that is dropped half-way (a
    /// cancelled request) cannot leave it open or half-done.
    pub async fn make_current(
        &self,
        key: NewKey,
        generation: i64,
        retire_older_at: i64,
    ) -> Result<bool, StoreError> {
        let this = self.clone();
        tokio::spawn(async move {
            this.make_current_now(key, generation, retire_older_at)
                .await
        })
        .await
        .map_err(|err| StoreError::Other(anyhow::anyhow!("key rotation task failed: {err}")))?
    }

    async fn make_current_now(
        &self,
        key: NewKey,
        generation: i64,
        retire_older_at: i64,
    ) -> Result<bool, StoreError> {
        let begin = match self.dialect {
            // Take SQLite's write lock up front, so concurrent writers queue instead of failing.
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            _ => self.pool.begin().await,
        };
        let mut tx = begin.map_err(store_error)?;
        match self.write(&mut tx, &key, generation, retire_older_at).await {
            Ok(()) => {
                tx.commit().await.map_err(store_error)?;
                Ok(true)
            }
            Err(err) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed key insert");
                }
                // Another instance won the race (on MySQL/MariaDB, concurrent inserts into the
                // same index gap may also end in a deadlock): look again.
                if is_unique_violation(&err) || is_deadlock(&err) {
                    Ok(false)
                } else {
                    Err(store_error(err))
                }
            }
        }
    }

    async fn write(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &NewKey,
        generation: i64,
        retire_older_at: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&self.q.insert)
            .bind(key.kid.as_str())
            .bind(generation)
            .bind(key.algorithm.as_str())
            .bind(key.sealed_private_key.as_str())
            .bind(key.public_jwk.as_str())
            .bind(key.created_at)
            .execute(&mut **tx)
            .await?;
        sqlx::query(&self.q.retire_older)
            .bind(retire_older_at)
            .bind(generation)
            .execute(&mut **tx)
            .await?;
        sqlx::query(&self.q.delete_retired)
            .bind(key.created_at)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

fn key_from_row(row: &AnyRow) -> Result<StoredKey, StoreError> {
    let get = |row: &AnyRow| -> Result<StoredKey, sqlx::Error> {
        Ok(StoredKey {
            kid: row.try_get("kid")?,
            generation: row.try_get("generation")?,
            algorithm: row.try_get("algorithm")?,
            sealed_private_key: row.try_get("private_key")?,
            public_jwk: row.try_get("public_jwk")?,
            created_at: row.try_get("created_at")?,
            retire_after: row.try_get("retire_after")?,
        })
    };
    get(row).map_err(store_error)
}
