//! Executions and enforcements: queueing (one or a batch with their
//! enforcements, in one transaction), reading, listing and cancelling.

use sqlx::types::Json;

use super::records::*;
use super::rows::DbRow;
use super::sql::*;
use super::{Pool, Result, Storage, now_ms};

impl Storage {
    /// Queues executions as `requested`, in one statement; returns them
    /// in the order given.
    pub async fn insert_executions(&self, runs: &[NewExecution]) -> Result<Vec<ExecutionRecord>> {
        if runs.is_empty() {
            return Ok(vec![]);
        }
        let now = now_ms();
        let plain = runs.iter().all(NewExecution::is_plain);
        let sql = format!(
            "{INSERT_EXECUTION} VALUES {} RETURNING {EXECUTION_COLUMNS}",
            execution_rows(runs.len(), plain)
        );
        on_writer!(self, |p| {
            let mut query = sqlx::query(&sql);
            for e in runs {
                query = bind_execution!(query, e, e.enforcement, now, plain);
            }
            let mut records: Vec<ExecutionRecord> = query
                .fetch_all(p)
                .await?
                .iter()
                .map(ExecutionRecord::from_row)
                .collect();
            // Ids are assigned in VALUES order; RETURNING order is not promised.
            records.sort_by_key(|e| e.id);
            Ok(records)
        })
    }

    /// Records enforcements and, for those enforced, their executions — each
    /// (rule, event) once, so a redelivered event queues nothing again — and
    /// marks `events` enforced (their verdicts are stored), all in one
    /// transaction of at most three statements for the whole batch;
    /// returns, per item, the execution it queued.
    pub async fn enforce_many(
        &self,
        items: &[NewEnforcement],
        events: &[i64],
    ) -> Result<Vec<Option<ExecutionRecord>>> {
        if items.is_empty() && events.is_empty() {
            return Ok(vec![]);
        }
        let now = now_ms();
        let enforcement_sql = format!(
            "INSERT INTO enforcement (rule, event, status, params, reason, created_at) VALUES {} \
             ON CONFLICT (rule, event) DO NOTHING RETURNING id, rule, event",
            rows_of(items.len(), 6, None)
        );
        let mark_sql = format!(
            "UPDATE event SET enforced_at = $1 WHERE id IN ({})",
            id_list(events)
        );
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            if !events.is_empty() {
                sqlx::query(&mark_sql).bind(now).execute(&mut *tx).await?;
            }
            if items.is_empty() {
                tx.commit().await?;
                return Ok(vec![]);
            }
            let mut query = sqlx::query(&enforcement_sql);
            for item in items {
                let status = if item.execution.is_some() {
                    "enforced"
                } else {
                    "failed"
                };
                query = query
                    .bind(&item.rule)
                    .bind(item.event)
                    .bind(status)
                    .bind(item.params.as_ref().map(Json))
                    .bind(&item.reason)
                    .bind(now);
            }
            let mut inserted: std::collections::HashMap<(String, i64), i64> = query
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| ((r.text("rule"), r.int("event")), r.int("id")))
                .collect();
            // (item index, new enforcement id, execution) for enforced items
            // whose enforcement is new.
            let runs: Vec<(usize, i64, &NewExecution)> = items
                .iter()
                .enumerate()
                .filter_map(|(n, i)| {
                    let execution = i.execution.as_ref()?;
                    let enforcement = inserted.remove(&(i.rule.clone(), i.event))?;
                    Some((n, enforcement, execution))
                })
                .collect();
            let mut out = vec![None; items.len()];
            if !runs.is_empty() {
                let plain = runs.iter().all(|(_, _, e)| e.is_plain());
                let sql = format!(
                    "{INSERT_EXECUTION} VALUES {} RETURNING {EXECUTION_COLUMNS}",
                    execution_rows(runs.len(), plain)
                );
                let mut query = sqlx::query(&sql);
                for (_, enforcement, e) in &runs {
                    query = bind_execution!(query, e, Some(*enforcement), now, plain);
                }
                // The execution points at its enforcement; the reverse link
                // is resolved by `enforcements_of`, saving a write.
                let item_of: std::collections::HashMap<i64, usize> =
                    runs.iter().map(|(n, id, _)| (*id, *n)).collect();
                for row in query.fetch_all(&mut *tx).await? {
                    let record = ExecutionRecord::from_row(&row);
                    if let Some(n) = record.enforcement.and_then(|e| item_of.get(&e)) {
                        out[*n] = Some(record);
                    }
                }
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// The enforcements of an event: `(rule, status, reason, execution)`.
    pub async fn enforcements_of(
        &self,
        event: i64,
    ) -> Result<Vec<(String, String, Option<String>, Option<i64>)>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT n.rule, n.status, n.reason, x.id AS execution FROM enforcement n \
                 LEFT JOIN execution x ON x.enforcement = n.id WHERE n.event = $1 ORDER BY n.id",
            )
            .bind(event)
            .fetch_all(p)
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.text("rule"),
                        r.text("status"),
                        r.opt_text("reason"),
                        r.opt_int("execution"),
                    )
                })
                .collect())
        })
    }

    /// One execution.
    pub async fn get_execution(&self, id: i64) -> Result<Option<ExecutionRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(ExecutionRecord::from_row))
        })
    }

    /// The executions with these ids, oldest first.
    pub async fn executions_by_id(&self, ids: &[i64]) -> Result<Vec<ExecutionRecord>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        on_pool!(self, |p| {
            let rows = sqlx::query(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id IN ({}) ORDER BY id",
                id_list(ids)
            ))
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(ExecutionRecord::from_row).collect())
        })
    }

    /// The ended attempts of an execution, oldest first.
    pub async fn attempts_of(&self, execution: i64) -> Result<Vec<AttemptRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT attempt, worker, status, error, started_at, finished_at FROM execution_attempt \
                 WHERE execution = $1 ORDER BY attempt",
            )
            .bind(execution)
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(AttemptRecord::from_row).collect())
        })
    }

    /// Executions, newest first, filtered by status, action and rule.
    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &Page,
    ) -> Result<Vec<ExecutionRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id < $1 AND ($2 IS NULL OR status = $2) \
                 AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR rule = $4) AND ($5 IS NULL OR parent = $5) \
                 AND ($7 IS NULL OR created_at >= $7) ORDER BY id DESC LIMIT $6"
            ))
            .bind(page.before_id())
            .bind(filter.status.map(ExecutionStatus::as_str))
            .bind(&filter.action)
            .bind(&filter.rule)
            .bind(filter.parent)
            .bind(page.limit())
            .bind(filter.since)
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(ExecutionRecord::from_row).collect())
        })
    }

    /// How many executions were created since `recent` and since `earlier`
    /// (Unix ms, `earlier` ≤ `recent`), by status: `(status, recent,
    /// earlier)`, in one pass.
    pub async fn count_executions_since(
        &self,
        recent: i64,
        earlier: i64,
    ) -> Result<Vec<(ExecutionStatus, i64, i64)>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT status, SUM(CASE WHEN created_at >= $1 THEN 1 ELSE 0 END) AS recent, COUNT(*) AS earlier \
                 FROM execution WHERE created_at >= $2 GROUP BY status",
            )
            .bind(recent)
            .bind(earlier)
            .fetch_all(p)
            .await?;
            Ok(rows
                .iter()
                .map(|r| (r.status("status"), r.int("recent"), r.int("earlier")))
                .collect())
        })
    }

    /// A rule's latest `limit` enforcements, newest first (by event, so
    /// that the `(rule, event)` unique index serves it).
    pub async fn enforcements_of_rule(
        &self,
        rule: &str,
        limit: i64,
    ) -> Result<Vec<EnforcementRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT n.event, n.status, n.reason, x.id AS execution, n.created_at FROM enforcement n \
                 LEFT JOIN execution x ON x.enforcement = n.id WHERE n.rule = $1 ORDER BY n.event DESC LIMIT $2",
            )
            .bind(rule)
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows
                .iter()
                .map(|r| EnforcementRecord {
                    event: r.int("event"),
                    status: r.text("status"),
                    reason: r.opt_text("reason"),
                    execution: r.opt_int("execution"),
                    created_at: r.int("created_at"),
                })
                .collect())
        })
    }

    /// Cancels an execution: one not yet running ends `cancelled` at once; a
    /// running one is flagged for its worker. `None` when it does not exist.
    pub async fn cancel_execution(&self, id: i64) -> Result<Option<ExecutionRecord>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query(
                "UPDATE execution SET status = 'cancelled', status_reason = 'cancelled before it ran', finished_at = $2, sealed_params = NULL \
                 WHERE id = $1 AND status IN ('requested', 'scheduled')",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE execution SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(row.as_ref().map(ExecutionRecord::from_row))
        })
    }
}
