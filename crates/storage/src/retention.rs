//! Retention: pruning finished executions, old events, expired keys and
//! expired console sessions.

use super::{Pool, Result, Storage};

impl Storage {
    /// Deletes finished executions and events older than `cutoff` (Unix ms)
    /// — a workflow's task only once the workflow took in its end — with
    /// their attempts, journals and run states, every expired key-value key and every
    /// expired console session.
    pub async fn prune(&self, cutoff: i64) -> Result<(u64, u64)> {
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let executions = sqlx::query(
                "DELETE FROM execution WHERE finished_at IS NOT NULL AND finished_at < $1 \
                 AND (parent IS NULL OR parent_seen = TRUE)",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM execution_attempt WHERE finished_at < $1 AND execution NOT IN (SELECT id FROM execution)")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM workflow_run WHERE updated_at < $1 AND execution NOT IN (SELECT id FROM execution)")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM inquiry WHERE state <> 'open' AND answered_at < $1 AND id NOT IN (SELECT id FROM execution)")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            let events = sqlx::query("DELETE FROM event WHERE created_at < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            // Expired keys read as absent already; this reclaims their rows.
            sqlx::query("DELETE FROM kv WHERE expires_at <= $1")
                .bind(super::now_ms())
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM console_session WHERE expires_at <= $1")
                .bind(super::now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((executions.rows_affected(), events.rows_affected()))
        })
    }
}
