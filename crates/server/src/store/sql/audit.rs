//! The audit log in SQL: appended to, read newest first a page at a time, purged by age.

use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use super::{SqlStore, store_error};
use crate::model::AuditEntry;
use crate::store::StoreError;

const INSERT: &str = "INSERT INTO audit_log (id, occurred_at, actor_kind, actor, action, target, \
                      ip, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";

impl SqlStore {
    /// Appends one entry, detached (an audit line is never lost to a dropped request). It
    /// changes nothing a cached token means.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.write_one_quiet(INSERT, move |q| bind_entry(q, &entry))
            .await?;
        Ok(())
    }

    /// Appends one entry inside a transaction of the change it records.
    pub(super) async fn insert_audit(
        &self,
        tx: &mut Transaction<'static, Any>,
        entry: &AuditEntry,
    ) -> Result<(), sqlx::Error> {
        bind_entry(sqlx::query(self.q(INSERT)), entry)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Up to `limit` entries older than the one with id `before` (the newest when `None`),
    /// newest first.
    pub async fn audit_page(
        &self,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        const NEWEST: &str = "SELECT id, occurred_at, actor_kind, actor, action, target, ip, \
                              detail FROM audit_log ORDER BY id DESC LIMIT ?";
        const BEFORE: &str = "SELECT id, occurred_at, actor_kind, actor, action, target, ip, \
                              detail FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?";
        let rows = match before {
            None => sqlx::query(self.q(NEWEST)).bind(limit),
            Some(id) => sqlx::query(self.q(BEFORE)).bind(id.to_owned()).bind(limit),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(entry_from_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    /// Deletes the entries older than `before` (Unix seconds); returns how many went.
    pub async fn purge_audit(&self, before: i64) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM audit_log WHERE occurred_at < ?";
        self.write_one_quiet(SQL, move |q| q.bind(before)).await
    }
}

fn bind_entry(q: super::AnyQuery, entry: &AuditEntry) -> super::AnyQuery {
    q.bind(entry.id.clone())
        .bind(entry.occurred_at)
        .bind(entry.actor_kind.clone())
        .bind(entry.actor.clone())
        .bind(entry.action.clone())
        .bind(entry.target.clone())
        .bind(entry.ip.clone())
        .bind(entry.detail.clone())
}

fn entry_from_row(row: &AnyRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        occurred_at: row.try_get("occurred_at")?,
        actor_kind: row.try_get("actor_kind")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        ip: row.try_get("ip")?,
        detail: row.try_get("detail")?,
    })
}
