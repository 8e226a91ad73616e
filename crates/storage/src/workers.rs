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
            let rows: Vec<WorkerRecord> = sqlx::query_as(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at, token_id FROM worker WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(page.after_id())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// Every registered worker (there are few), ordered by id.
    pub async fn all_workers(&self) -> Result<Vec<WorkerRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<WorkerRecord> = sqlx::query_as(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at, token_id FROM worker ORDER BY id",
            )
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// One worker.
    pub async fn get_worker(&self, id: i64) -> Result<Option<WorkerRecord>> {
        on_pool!(self, |p| {
            let row: Option<WorkerRecord> = sqlx::query_as(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at, token_id FROM worker WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }

    /// Registers (or refreshes) a worker by name for the API token `owner`
    /// ([`EMBEDDED_OWNER`] for the server's own worker).
    ///
    /// A name is its owner's: registering it again with any other token —
    /// an admin's included — is a [`StorageError::Conflict`], so no token
    /// can take over a worker and the executions it holds; only
    /// [`Self::reassign_worker`] moves it. A worker with no recorded owner
    /// (registered by an admin before every registration recorded one) is
    /// taken by the first admin token that registers it (`adopt_unowned`).
    pub async fn upsert_worker(
        &self,
        name: &str,
        capabilities: &[String],
        labels: &Value,
        owner: i64,
        adopt_unowned: bool,
    ) -> Result<WorkerRecord> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row: Option<WorkerRecord> = sqlx::query_as(
                "INSERT INTO worker (name, capabilities, labels, last_heartbeat, created_at, token_id) VALUES ($1, $2, $3, $4, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET capabilities = excluded.capabilities, labels = excluded.labels, \
                 last_heartbeat = excluded.last_heartbeat, token_id = excluded.token_id \
                 WHERE worker.token_id = excluded.token_id OR (worker.token_id IS NULL AND $6) \
                 RETURNING id, name, capabilities, labels, last_heartbeat, created_at, token_id",
            )
            .bind(name)
            .bind(Json(capabilities))
            .bind(Json(labels))
            .bind(now)
            .bind(owner)
            .bind(adopt_unowned)
            .fetch_optional(&mut *p)
            .await?;
            row.ok_or_else(|| {
                StorageError::Conflict(format!("worker `{name}` belongs to another token"))
            })
        })
    }

    /// Gives worker `id` to the API token `owner`, with what it holds.
    /// `None` when there is no such worker; the server's own worker is
    /// never reassigned (a [`StorageError::Conflict`]).
    pub async fn reassign_worker(&self, id: i64, owner: i64) -> Result<Option<WorkerRecord>> {
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let current: Option<Option<i64>> =
                sqlx::query_scalar("SELECT token_id FROM worker WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(current) = current else {
                return Ok(None);
            };
            if current == Some(EMBEDDED_OWNER) {
                return Err(StorageError::Conflict(format!(
                    "worker {id} is a server's own worker"
                )));
            }
            let row: WorkerRecord = sqlx::query_as(
                "UPDATE worker SET token_id = $2 WHERE id = $1 \
                 RETURNING id, name, capabilities, labels, last_heartbeat, created_at, token_id",
            )
            .bind(id)
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(row))
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
