//! Workers: registration, the list, and heartbeats that extend their leases.

use serde_json::Value;
use sqlx::types::Json;

use super::records::*;
use super::{Pool, Result, Storage, StorageError, now_ms};

/// The owner recorded for the server's own embedded worker: no API token
/// has id 0, so no token can act as it.
pub const EMBEDDED_OWNER: i64 = 0;

impl Storage {
    /// Workers ordered by id.
    pub async fn list_workers(&self, page: &Page) -> Result<Vec<WorkerRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at, token_id FROM worker WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(page.after_id())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(WorkerRecord::from_row).collect())
        })
    }

    /// Every registered worker (there are few), ordered by id.
    pub async fn all_workers(&self) -> Result<Vec<WorkerRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at, token_id FROM worker ORDER BY id",
            )
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(WorkerRecord::from_row).collect())
        })
    }

    /// One worker.
    pub async fn get_worker(&self, id: i64) -> Result<Option<WorkerRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at, token_id FROM worker WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(WorkerRecord::from_row))
        })
    }

    /// Registers (or refreshes) a worker by name.
    ///
    /// `owner` is the API token registering it ([`EMBEDDED_OWNER`] for the
    /// server's own worker; `None` for an admin, who keeps the current
    /// owner). A name another token owns is a [`StorageError::Conflict`].
    pub async fn upsert_worker(
        &self,
        name: &str,
        capabilities: &[String],
        labels: &Value,
        owner: Option<i64>,
    ) -> Result<WorkerRecord> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row = sqlx::query(
                "INSERT INTO worker (name, capabilities, labels, last_heartbeat, created_at, token_id) VALUES ($1, $2, $3, $4, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET capabilities = excluded.capabilities, labels = excluded.labels, \
                 last_heartbeat = excluded.last_heartbeat, token_id = COALESCE(excluded.token_id, worker.token_id) \
                 WHERE excluded.token_id IS NULL OR worker.token_id IS NULL OR worker.token_id = excluded.token_id \
                 RETURNING id, name, capabilities, labels, last_heartbeat, created_at, token_id",
            )
            .bind(name)
            .bind(Json(capabilities))
            .bind(Json(labels))
            .bind(now)
            .bind(owner)
            .fetch_optional(&mut *p)
            .await?;
            row.map(|r| WorkerRecord::from_row(&r)).ok_or_else(|| {
                StorageError::Conflict(format!("worker `{name}` belongs to another token"))
            })
        })
    }

    /// Extends the leases of everything `worker` holds and records its heartbeat.
    pub async fn heartbeat(&self, worker: i64, lease_ms: i64) -> Result<()> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query("UPDATE worker SET last_heartbeat = $2 WHERE id = $1")
                .bind(worker)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE execution SET lease_expires_at = $2 WHERE worker = $1 AND status IN ('scheduled', 'running')",
            )
            .bind(worker)
            .bind(now + lease_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Ends the leases of everything `worker` holds, as if it had stopped
    /// heartbeating: a node that starts again under its old worker must not
    /// extend the leases of work its previous process never finished.
    pub async fn expire_leases(&self, worker: i64) -> Result<u64> {
        on_writer!(self, |p| {
            let done = sqlx::query(
                "UPDATE execution SET lease_expires_at = 0 WHERE worker = $1 AND status IN ('scheduled', 'running')",
            )
            .bind(worker)
            .execute(&mut *p)
            .await?;
            Ok(done.rows_affected())
        })
    }
}
