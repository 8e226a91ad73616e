//! Claims: how workers take executions, mark them running, report how they
//! ended, and lose them when their lease expires.
//!
//! A claim is one `UPDATE` that picks the oldest `requested` rows the worker
//! can serve and moves them, so it is correct with any number of claimers on
//! either backend: SQLite runs one writing statement at a time, and on
//! PostgreSQL the pick uses `FOR UPDATE SKIP LOCKED`, so concurrent claimers
//! take different rows instead of waiting for the same ones.

use serde_json::{Value, json};
use sqlx::types::Json;

use super::records::*;
use super::sql::*;
use super::{Pool, Result, Storage, now_ms};

/// How an execution ended, as the worker reports it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// succeeded, failed, timed_out or cancelled.
    pub status: ExecutionStatus,
    /// Result value.
    pub result: Option<Value>,
    /// Error value or message.
    pub error: Option<Value>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
    /// Log lines.
    pub logs: Value,
    /// When the action really began (Unix ms), if that is later than the
    /// recorded start: a worker that marks its next execution running while
    /// the slot is still busy with the previous one corrects it here.
    pub started_at: Option<i64>,
    /// The attempt it ends, when its worker says: a report on an attempt
    /// the execution has moved past (its lease expired and it was claimed
    /// again, even by the same worker) is not recorded.
    pub attempt: Option<i64>,
    /// What it used (CPU, memory, instances, requests, output), as its
    /// worker measured it; `None` when it never ran.
    pub resources: Option<Value>,
    /// Its journal (the runtime's `Journal`, serialized once), when it
    /// recorded one; an earlier attempt's goes either way.
    pub journal: Option<Box<serde_json::value::RawValue>>,
}

impl Finished {
    /// An end with no output: `status` with `message` as its error.
    pub fn without_output(status: ExecutionStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            result: None,
            error: Some(Value::String(message.into())),
            stdout: String::new(),
            stderr: String::new(),
            logs: json!([]),
            started_at: None,
            attempt: None,
            resources: None,
            journal: None,
        }
    }
}

/// A running execution whose lease expired, as the reaper reads it.
#[derive(sqlx::FromRow)]
struct Expired {
    id: i64,
    attempt: i64,
    max_attempts: i64,
    worker: Option<i64>,
    started_at: Option<i64>,
}

/// What [`Storage::finish_many`] recorded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FinishedMany {
    /// Per item, in order: whether its worker still held it.
    pub recorded: Vec<bool>,
    /// Whether a recorded one is awaited: a workflow's task or a sensor's poll.
    pub awaited: bool,
    /// Whether a recorded one held a policy's slot (an admission pass may
    /// now let another through).
    pub gated: bool,
    /// The action of each recorded one, by id.
    pub actions: std::collections::HashMap<i64, String>,
}

/// What [`Storage::reap_expired_leases`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Executions put back in the queue for another attempt.
    pub retried: u64,
    /// Executions marked abandoned (no attempts left).
    pub abandoned: u64,
    /// Their ids.
    pub abandoned_ids: Vec<i64>,
    /// Claimed executions that never started, queued again as they were
    /// (no attempt was used).
    pub requeued: u64,
}

impl Storage {
    /// Claims up to `limit` queued executions whose capabilities `worker`
    /// covers, oldest first, leasing them until `now + lease_ms`. With
    /// `start`, they go straight to `running` (a worker that starts what it
    /// claims at once saves a round trip per execution).
    ///
    /// One statement: the rows are chosen and moved by the same `UPDATE`,
    /// so a claim is one trip to the database and reads only what it takes.
    pub async fn claim(
        &self,
        worker: i64,
        capabilities: &[String],
        limit: i64,
        lease_ms: i64,
        start: bool,
    ) -> Result<Vec<ExecutionRecord>> {
        if limit <= 0 {
            return Ok(vec![]);
        }
        let status = if start {
            ExecutionStatus::Running
        } else {
            ExecutionStatus::Scheduled
        };
        let now = now_ms();
        let dialect = self.dialect();
        let sql = format!(
            "UPDATE execution SET status = $4, status_reason = NULL, worker = $1, scheduled_at = $2, \
             started_at = CASE WHEN $4 = 'running' THEN $2 ELSE NULL END, lease_expires_at = $3 \
             WHERE id IN (SELECT id FROM execution WHERE status = 'requested' AND not_before <= $2 \
             AND {} ORDER BY id LIMIT $5{}) RETURNING {EXECUTION_COLUMNS}",
            capabilities_covered(dialect, 6),
            self.skip_locked()
        );
        let mut claimed: Vec<ExecutionRecord> = on_writer!(self, |p| {
            Ok(sqlx::query_as(&sql)
                .bind(worker)
                .bind(now)
                .bind(now + lease_ms)
                .bind(status.as_str())
                .bind(limit)
                .bind(Json(capabilities))
                .fetch_all(&mut *p)
                .await?)
        })?;
        claimed.sort_unstable_by_key(|e| e.id);
        Ok(claimed)
    }

    /// Marks executions `worker` claimed ahead as running, in one
    /// statement; returns the ids it still held (a cancelled or reaped one is
    /// left out and must not run).
    pub async fn start_many(&self, worker: i64, ids: &[i64]) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let dialect = self.dialect();
        let sql = format!(
            "UPDATE execution SET status = 'running', started_at = $2 \
             WHERE worker = $1 AND status = 'scheduled' AND id {} RETURNING id",
            id_in(dialect, 3)
        );
        let now = now_ms();
        on_writer!(self, |p| {
            Ok(sqlx::query_scalar(&sql)
                .bind(worker)
                .bind(now)
                .bind(id_array(dialect, ids))
                .fetch_all(&mut *p)
                .await?)
        })
    }

    /// Puts what `worker` claimed but never began back in the queue as it
    /// was: everything still `scheduled` to it, and the executions in
    /// `marked` it had marked running without beginning them (a worker that
    /// stops cleanly hands its work back).
    pub async fn release_unstarted(&self, worker: i64, marked: &[i64]) -> Result<u64> {
        let dialect = self.dialect();
        let sql = format!(
            "UPDATE execution SET status = 'requested', worker = NULL, scheduled_at = NULL, \
             started_at = NULL, lease_expires_at = NULL WHERE worker = $1 \
             AND (status = 'scheduled' OR (status = 'running' AND id {}))",
            id_in(dialect, 2)
        );
        on_writer!(self, |p| {
            let done = sqlx::query(&sql)
                .bind(worker)
                .bind(id_array(dialect, marked))
                .execute(&mut *p)
                .await?;
            Ok(done.rows_affected())
        })
    }

    /// Marks a claimed execution running; false if it was taken away (lease
    /// expired, cancelled).
    pub async fn mark_running(&self, id: i64, worker: i64) -> Result<bool> {
        Ok(!self.start_many(worker, &[id]).await?.is_empty())
    }

    /// Records how an execution ended (only if `worker` still holds it) and
    /// its attempt in the history.
    pub async fn finish(&self, id: i64, worker: i64, f: &Finished) -> Result<bool> {
        Ok(self.finish_many(&[(id, worker, f.clone())]).await?.recorded[0])
    }

    /// [`Storage::finish`] for many executions at once (group commit of
    /// results); one flag per item, in order. One statement for the whole
    /// batch: an `UPDATE … FROM (VALUES …)` that moves only rows their worker
    /// still holds (the database records each ended attempt in the history).
    pub async fn finish_many(&self, items: &[(i64, i64, Finished)]) -> Result<FinishedMany> {
        if items.is_empty() {
            return Ok(FinishedMany::default());
        }
        let now = now_ms();
        let dialect = self.dialect();
        let update = format!(
            "WITH v (id, worker, attempt, status, result, error, stdout, stderr, logs, started_at, resources, journal) AS (VALUES {}) \
             UPDATE execution SET status = v.status, result = v.result, error = v.error, stdout = v.stdout, \
             stderr = v.stderr, logs = v.logs, resources = v.resources, journal = v.journal, started_at = COALESCE(v.started_at, execution.started_at), \
             finished_at = {}, lease_expires_at = NULL, sealed_params = NULL FROM v \
             WHERE execution.id = v.id AND execution.worker = v.worker \
             AND (v.attempt IS NULL OR execution.attempt = v.attempt) \
             AND execution.status IN ('scheduled', 'running') \
             RETURNING execution.id, execution.parent, execution.sensor, \
             EXISTS (SELECT 1 FROM execution_gate g WHERE g.execution = execution.id) AS gated, execution.action",
            rows_of(dialect, items.len(), 12, None),
            param(dialect, items.len() * 12 + 1)
        );
        on_writer!(self, |p| {
            // Each ended execution's id, parent and sensor.
            let mut query =
                sqlx::query_as::<_, (i64, Option<i64>, Option<String>, bool, String)>(&update);
            for (id, worker, f) in items {
                query = query
                    .bind(id)
                    .bind(worker)
                    .bind(f.attempt)
                    .bind(f.status.as_str())
                    .bind(f.result.as_ref().map(Json))
                    .bind(f.error.as_ref().map(Json))
                    .bind(&f.stdout)
                    .bind(&f.stderr)
                    .bind(Json(&f.logs))
                    .bind(f.started_at)
                    .bind(f.resources.as_ref().map(Json))
                    .bind(f.journal.as_deref().map(Json));
            }
            let rows = query.bind(now).fetch_all(&mut *p).await?;
            // Their gates stay: the next decision on their key, or the
            // admission task, forgets them (see `gates::settle`).
            let done: std::collections::HashSet<i64> = rows.iter().map(|(id, ..)| *id).collect();
            let awaited = rows
                .iter()
                .any(|(_, parent, sensor, ..)| parent.is_some() || sensor.is_some());
            Ok(FinishedMany {
                recorded: items.iter().map(|(id, ..)| done.contains(id)).collect(),
                awaited,
                gated: rows.iter().any(|(.., gated, _)| *gated),
                actions: rows
                    .into_iter()
                    .map(|(id, .., action)| (id, action))
                    .collect(),
            })
        })
    }

    /// Executions whose worker stopped heartbeating: claimed ones it never
    /// started go back to the queue as they were; running ones go back with
    /// exponential backoff while attempts remain, else `abandoned`.
    pub async fn reap_expired_leases(&self, backoff_base_ms: i64) -> Result<Reaped> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let requeued = sqlx::query(
                "UPDATE execution SET status = 'requested', \
                 status_reason = 'queued again: its worker stopped heartbeating before starting it', \
                 worker = NULL, scheduled_at = NULL, lease_expires_at = NULL \
                 WHERE status = 'scheduled' AND lease_expires_at < $1",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let expired: Vec<Expired> = sqlx::query_as(
                "SELECT id, attempt, max_attempts, worker, started_at FROM execution \
                 WHERE status = 'running' AND lease_expires_at < $1",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let mut reaped = Reaped {
                requeued: requeued.rows_affected(),
                ..Reaped::default()
            };
            for row in expired {
                let Expired { id, attempt, .. } = row;
                sqlx::query(
                    "INSERT INTO execution_attempt (execution, attempt, worker, status, error, started_at, finished_at) \
                     VALUES ($1, $2, $3, 'abandoned', $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(attempt)
                .bind(row.worker)
                .bind(Json(json!("the worker stopped heartbeating")))
                .bind(row.started_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if attempt < row.max_attempts {
                    let backoff = backoff_base_ms.saturating_mul(1 << (attempt - 1).clamp(0, 16));
                    sqlx::query(
                        "UPDATE execution SET status = 'requested', status_reason = $2, attempt = attempt + 1, worker = NULL, \
                         lease_expires_at = NULL, scheduled_at = NULL, started_at = NULL, not_before = $3 \
                         WHERE id = $1 AND status IN ('scheduled', 'running')",
                    )
                    .bind(id)
                    .bind(format!("retrying: the worker of attempt {attempt} stopped heartbeating"))
                    .bind(now + backoff)
                    .execute(&mut *tx)
                    .await?;
                    reaped.retried += 1;
                } else {
                    sqlx::query(
                        "UPDATE execution SET status = 'abandoned', status_reason = 'the worker stopped heartbeating and no attempt is left', \
                         lease_expires_at = NULL, finished_at = $2, sealed_params = NULL WHERE id = $1 AND status IN ('scheduled', 'running')",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    reaped.abandoned += 1;
                    reaped.abandoned_ids.push(id);
                }
            }
            tx.commit().await?;
            Ok(reaped)
        })
    }

    /// Ids of running executions of `worker` whose cancellation was asked.
    pub async fn cancel_requests(&self, worker: i64) -> Result<Vec<i64>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_scalar(
                "SELECT id FROM execution WHERE worker = $1 AND status = 'running' AND cancel_requested = TRUE",
            )
            .bind(worker)
            .fetch_all(p)
            .await?)
        })
    }

    /// Earliest `not_before` of queued executions still waiting for backoff.
    pub async fn next_retry_due(&self) -> Result<Option<i64>> {
        let now = now_ms();
        on_pool!(self, |p| {
            Ok(sqlx::query_scalar(
                "SELECT MIN(not_before) AS due FROM execution WHERE status = 'requested' AND not_before > $1",
            )
            .bind(now)
            .fetch_one(p)
            .await?)
        })
    }
}
