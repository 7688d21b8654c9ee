//! Login codes recently exchanged, by hash: claimed before WeChat is asked, then fulfilled
//! with WeChat's (sealed) answer or released.

use async_trait::async_trait;
use sqlx::Row as _;

use super::{SqlStore, is_unique_violation, store_error};
use crate::store::{CodeCache, CodeClaim, StoreError};

const RELEASE: &str = "DELETE FROM login_codes WHERE hash = ?";

impl SqlStore {
    async fn run_claim(
        &self,
        hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<CodeClaim, StoreError> {
        const CLAIM: &str =
            "INSERT INTO login_codes (hash, result, expires_at) VALUES (?, NULL, ?)";
        const RESULT: &str = "SELECT result, expires_at FROM login_codes WHERE hash = ?";
        for _ in 0..2 {
            let inserted = sqlx::query(self.q(CLAIM))
                .bind(hash)
                .bind(expires_at)
                .execute(self.writer())
                .await;
            match inserted {
                Ok(_) => return Ok(CodeClaim::Claimed),
                Err(err) if is_unique_violation(&err) => {}
                Err(err) => return Err(store_error(err)),
            }
            let row = sqlx::query(self.q(RESULT))
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
            let Some(row) = row else { continue };
            let result: Option<String> = row.try_get("result").map_err(store_error)?;
            let expires: i64 = row.try_get("expires_at").map_err(store_error)?;
            if expires <= now {
                // A stale entry the purge has not reached yet: clear it and claim anew.
                sqlx::query(self.q(RELEASE))
                    .bind(hash)
                    .execute(self.writer())
                    .await
                    .map_err(store_error)?;
                continue;
            }
            return Ok(result.map_or(CodeClaim::Pending, CodeClaim::Done));
        }
        Ok(CodeClaim::Pending)
    }
}

// Every operation writes, so every one runs detached (see [`SqlStore`]); none changes a
// session or a person, so the auth cache stays.
#[async_trait]
impl CodeCache for SqlStore {
    async fn claim(&self, hash: &str, now: i64, expires_at: i64) -> Result<CodeClaim, StoreError> {
        let hash = hash.to_owned();
        self.detached_quiet(move |store| {
            let hash = hash.clone();
            async move { store.run_claim(&hash, now, expires_at).await }
        })
        .await
    }

    async fn fulfil(&self, hash: &str, result: &str, expires_at: i64) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE login_codes SET result = ?, expires_at = ? WHERE hash = ?";
        let (hash, result) = (hash.to_owned(), result.to_owned());
        self.write_one_quiet(SQL, move |q| {
            q.bind(result.clone()).bind(expires_at).bind(hash.clone())
        })
        .await?;
        Ok(())
    }

    async fn release(&self, hash: &str) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        self.write_one_quiet(RELEASE, move |q| q.bind(hash.clone()))
            .await?;
        Ok(())
    }
}
