//! Workflow runs: finding what the conductor must do, and applying one step
//! — the children it starts and cancels, its new state, the children it took
//! in, the workflow's end — in one transaction that holds only if the state
//! is still the version the step was computed from.

use serde_json::Value;
use sqlx::types::Json;

use super::gates::{apply_admission, initial, plan, settle};
use super::records::*;
use super::sql::*;
use super::{Pool, Result, Storage, now_ms};

/// One step of a workflow run, to apply at once.
pub struct WorkflowStep<'a> {
    /// The workflow's execution.
    pub execution: i64,
    /// The state version the step was computed from; `None` for the first
    /// step, which creates the run.
    pub version: Option<i64>,
    /// Children to start.
    pub starts: &'a [NewExecution],
    /// Children whose end the step took in.
    pub seen: &'a [i64],
    /// Children to cancel.
    pub cancel: &'a [i64],
    /// How the workflow ended, when it did: status, result, error.
    pub end: Option<(ExecutionStatus, Option<Value>, Option<Value>)>,
}

/// A child's end, for the conductor to take in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChildEnded {
    /// The child.
    pub id: i64,
    /// Its workflow's execution.
    pub parent: i64,
    /// How it ended.
    pub status: ExecutionStatus,
    /// Its result.
    #[sqlx(json(nullable))]
    pub result: Option<Value>,
    /// Its error.
    #[sqlx(json(nullable))]
    pub error: Option<Value>,
}

impl Storage {
    /// Workflow executions not yet begun: `running` with no worker and no
    /// run state.
    pub async fn workflows_to_begin(&self, limit: i64) -> Result<Vec<ExecutionRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<ExecutionRecord> = sqlx::query_as(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution e WHERE status = 'running' AND worker IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM workflow_run w WHERE w.execution = e.id) ORDER BY id LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// Running workflows whose cancellation was asked for.
    pub async fn workflows_cancelled(&self) -> Result<Vec<i64>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_scalar(
                "SELECT e.id FROM execution e JOIN workflow_run w ON w.execution = e.id \
                 WHERE e.status = 'running' AND e.cancel_requested = TRUE ORDER BY e.id",
            )
            .fetch_all(p)
            .await?)
        })
    }

    /// Ended children their workflow has not taken in, oldest first.
    pub async fn children_ended(&self, limit: i64) -> Result<Vec<ChildEnded>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(concat!(
                "SELECT id, parent, status, result, error FROM execution \
                 WHERE parent IS NOT NULL AND parent_seen = FALSE \
                 AND status IN ",
                finished_statuses_sql!(),
                " ORDER BY id LIMIT $1",
            ))
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// A workflow run's state and its version.
    pub async fn workflow_state(&self, execution: i64) -> Result<Option<(Value, i64)>> {
        on_pool!(self, |p| {
            let row: Option<(Json<Value>, i64)> =
                sqlx::query_as("SELECT state, version FROM workflow_run WHERE execution = $1")
                    .bind(execution)
                    .fetch_optional(p)
                    .await?;
            Ok(row.map(|(state, version)| (state.0, version)))
        })
    }

    /// Applies `step`; `state` gets the new children's ids (in the order of
    /// `step.starts`) and returns the state to store. `None` when the run
    /// moved on meanwhile (another node applied a step first): nothing was
    /// written. Otherwise the children started.
    pub async fn apply_workflow_step(
        &self,
        step: &WorkflowStep<'_>,
        state: impl FnOnce(&[i64]) -> Value,
    ) -> Result<Option<Vec<ExecutionRecord>>> {
        let now = now_ms();
        let dialect = self.dialect();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let version = match step.version {
                Some(v) => v,
                None => {
                    let created = sqlx::query(
                        "INSERT INTO workflow_run (execution, state, version, updated_at) VALUES ($1, $2, 0, $3) \
                         ON CONFLICT (execution) DO NOTHING",
                    )
                    .bind(step.execution)
                    .bind(Json(Value::Null))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if created.rows_affected() == 0 {
                        return Ok(None);
                    }
                    0
                }
            };
            let current = sqlx::query(
                "UPDATE workflow_run SET version = version + 1, updated_at = $3 WHERE execution = $1 AND version = $2",
            )
            .bind(step.execution)
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if current.rows_affected() == 0 {
                return Ok(None);
            }
            let mut started: Vec<ExecutionRecord> = Vec::new();
            let mut admission = None;
            if !step.starts.is_empty() {
                // A task a policy limits waits its turn like any execution
                // (the engine turns `drop` into `cancel` for tasks, so
                // every id stays in the workflow's state).
                let gates: Vec<&[Gate]> = step.starts.iter().map(|e| e.gates.as_slice()).collect();
                let plan = plan(&mut *tx, dialect, &gates, now).await?;
                let sql = format!(
                    "{INSERT_EXECUTION} VALUES {} RETURNING {EXECUTION_COLUMNS}",
                    execution_rows(self.dialect(), step.starts.len(), Shape::Full)
                );
                let mut query = sqlx::query_as(&sql);
                for (n, e) in step.starts.iter().enumerate() {
                    let (status, reason) = initial(plan.as_ref(), n, e);
                    query =
                        bind_execution!(query, e, e.enforcement, now, Shape::Full, status, reason);
                }
                started = query.fetch_all(&mut *tx).await?;
                started.sort_by_key(|e| e.id);
                // An `ask` or `wait` task waits `pending`, with what it
                // waits for beside it; a wait looks at events from now on.
                for (e, r) in step.starts.iter().zip(&started) {
                    let Some(i) = &e.inquiry else { continue };
                    sqlx::query(
                        "INSERT INTO inquiry (id, workflow, task, kind, spec, trigger, after_event, deadline, \
                         requested_by, created_at, rule_by) VALUES ($1, $2, $3, $4, $5, $6, \
                         (SELECT COALESCE(MAX(id), 0) FROM event), $7, $8, $9, $10)",
                    )
                    .bind(r.id)
                    .bind(step.execution)
                    .bind(e.task.as_deref().unwrap_or_default())
                    .bind(&i.kind)
                    .bind(Json(&i.spec))
                    .bind(&i.trigger)
                    .bind(i.deadline)
                    .bind(i.requested_by)
                    .bind(now)
                    .bind(i.rule_by)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(plan) = &plan {
                    let written: Vec<(i64, &[Gate])> =
                        started.iter().map(|r| r.id).zip(gates).collect();
                    let a = settle(&mut *tx, dialect, plan, &written, now).await?;
                    started = started
                        .into_iter()
                        .filter_map(|r| apply_admission(&a, r))
                        .collect();
                    admission = Some(a);
                }
            }
            let ids: Vec<i64> = started.iter().map(|e| e.id).collect();
            sqlx::query("UPDATE workflow_run SET state = $2 WHERE execution = $1")
                .bind(step.execution)
                .bind(Json(state(&ids)))
                .execute(&mut *tx)
                .await?;
            if !step.seen.is_empty() {
                sqlx::query(&format!(
                    "UPDATE execution SET parent_seen = TRUE WHERE id {}",
                    id_in(dialect, 1)
                ))
                .bind(id_array(dialect, step.seen))
                .execute(&mut *tx)
                .await?;
            }
            if !step.cancel.is_empty() {
                let ids = id_array(dialect, step.cancel);
                sqlx::query(&format!(
                    "UPDATE execution SET status = 'cancelled', status_reason = 'its workflow was cancelled', \
                     finished_at = $1, sealed_params = NULL WHERE id {} AND status IN ('delayed', 'requested', 'scheduled', 'pending')",
                    id_in(dialect, 2)
                ))
                .bind(now)
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!(
                    "UPDATE inquiry SET state = 'closed', answered_at = $1 WHERE id {} AND state = 'open'",
                    id_in(dialect, 2)
                ))
                .bind(now)
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!(
                    "UPDATE execution SET cancel_requested = TRUE WHERE id {} AND status = 'running'",
                    id_in(dialect, 1)
                ))
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            }
            if let Some((status, result, error)) = &step.end {
                sqlx::query(
                    "UPDATE execution SET status = $2, result = $3, error = $4, finished_at = $5, \
                     sealed_params = NULL WHERE id = $1 AND status = 'running'",
                )
                .bind(step.execution)
                .bind(status.as_str())
                .bind(result.as_ref().map(Json))
                .bind(error.as_ref().map(Json))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            self.tally(admission.as_ref());
            Ok(Some(started))
        })
    }

    /// Marks children taken in without a step (their workflow had ended).
    pub async fn mark_children_seen(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let dialect = self.dialect();
        on_writer!(self, |p| {
            sqlx::query(&format!(
                "UPDATE execution SET parent_seen = TRUE WHERE id {}",
                id_in(dialect, 1)
            ))
            .bind(id_array(dialect, ids))
            .execute(&mut *p)
            .await?;
            Ok(())
        })
    }
}
