//! Workers: registration, the list, and heartbeats that extend their leases.

use serde_json::Value;
use sqlx::types::Json;

use super::records::*;
use super::{Pool, Result, Storage, now_ms};

impl Storage {
    /// Workers ordered by id.
    pub async fn list_workers(&self, page: &Page) -> Result<Vec<WorkerRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at FROM worker WHERE id > $1 ORDER BY id LIMIT $2",
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
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at FROM worker ORDER BY id",
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
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at FROM worker WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(WorkerRecord::from_row))
        })
    }

    /// Registers (or refreshes) a worker by name.
    pub async fn upsert_worker(
        &self,
        name: &str,
        capabilities: &[String],
        labels: &Value,
    ) -> Result<WorkerRecord> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row = sqlx::query(
                "INSERT INTO worker (name, capabilities, labels, last_heartbeat, created_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (name) DO UPDATE SET capabilities = excluded.capabilities, labels = excluded.labels, \
                 last_heartbeat = excluded.last_heartbeat \
                 RETURNING id, name, capabilities, labels, last_heartbeat, created_at",
            )
            .bind(name)
            .bind(Json(capabilities))
            .bind(Json(labels))
            .bind(now)
            .fetch_one(p)
            .await?;
            Ok(WorkerRecord::from_row(&row))
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
}
