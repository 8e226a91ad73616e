//! Sensors: their durable schedule (a poll is claimed exactly once, across
//! nodes and restarts, like a timer tick), their polls' executions, and the
//! record of each poll.

use serde_json::Value;
use sqlx::types::Json;

use super::records::*;
use super::sql::*;
use super::{Pool, Result, Storage, now_ms};
use attune_util::schedule::Plan;

/// A poll that ended and that its sensor has not taken in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PollEnded {
    /// The poll's execution.
    #[sqlx(rename = "id")]
    pub execution: i64,
    /// Its sensor.
    pub sensor: String,
    /// How it ended.
    pub status: ExecutionStatus,
    /// Its result (the records).
    #[sqlx(json(nullable))]
    pub result: Option<Value>,
    /// Its error.
    #[sqlx(json(nullable))]
    pub error: Option<Value>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// The `traceparent` its execution's span is a child of, when traced.
    pub trace: Option<String>,
}

/// What taking in a poll records besides its events.
#[derive(Debug, Clone)]
pub struct PollRecord {
    /// What was off.
    pub warning: Option<String>,
    /// When a failed poll delays the next one: not before this (Unix ms).
    pub backoff_until: Option<i64>,
}

/// A due sensor with its export's capabilities and whether its previous
/// poll is still under way.
#[derive(sqlx::FromRow)]
struct DueSensor {
    #[sqlx(flatten)]
    sensor: SensorRecord,
    #[sqlx(json)]
    capabilities: Vec<String>,
    busy: bool,
}

const SENSOR_COLUMNS: &str =
    "ref, pack, action, every_ms, schedule, description, enabled, next_run_at, failures";

impl Storage {
    /// Claims every due sensor: advances its schedule and, unless its
    /// previous poll is still under way, queues a poll (an execution of its
    /// export), in one transaction. Returns the polls queued.
    /// `trace` gives the `traceparent` a poll of a sensor is traced under,
    /// when it is.
    pub async fn fire_due_sensors(
        &self,
        limit: i64,
        trace: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Vec<ExecutionRecord>> {
        let now = now_ms();
        // Only the sensor rows are locked, not the actions they are joined to.
        let lock = if self.skip_locked().is_empty() {
            ""
        } else {
            " FOR UPDATE OF s SKIP LOCKED"
        };
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            // Each due sensor with its export's capabilities and whether its
            // previous poll is still under way, in one read.
            let due: Vec<DueSensor> = sqlx::query_as(&format!(
                "SELECT s.ref, s.pack, s.action, s.every_ms, s.schedule, s.description, s.enabled, \
                 s.next_run_at, s.failures, a.capabilities, EXISTS (SELECT 1 FROM execution e \
                 WHERE e.sensor = s.ref AND e.status IN ('requested', 'scheduled', 'running')) AS busy \
                 FROM sensor s JOIN action a ON a.ref = s.action \
                 WHERE s.enabled = TRUE AND s.next_run_at <= $1 ORDER BY s.next_run_at LIMIT $2{lock}"
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut polls = Vec::new();
            for DueSensor {
                sensor,
                capabilities,
                busy,
            } in due
            {
                let next = Plan::from_stored(sensor.every_ms, sensor.schedule.as_deref())
                    .and_then(|plan| plan.next_after(now))
                    .unwrap_or(now + 60_000);
                sqlx::query("UPDATE sensor SET next_run_at = $2 WHERE ref = $1")
                    .bind(&sensor.r#ref)
                    .bind(next)
                    .execute(&mut *tx)
                    .await?;
                if busy {
                    continue;
                }
                polls.push(NewExecution {
                    sensor: Some(sensor.r#ref.clone()),
                    trace: trace(&sensor.r#ref),
                    ..NewExecution::of(
                        &sensor.action,
                        Value::Object(Default::default()),
                        capabilities,
                    )
                });
            }
            let mut queued = Vec::new();
            if !polls.is_empty() {
                let sql = format!(
                    "{INSERT_EXECUTION} VALUES {} RETURNING {EXECUTION_COLUMNS}",
                    execution_rows(self.dialect(), polls.len(), Shape::Full)
                );
                let mut query = sqlx::query_as(&sql);
                for poll in &polls {
                    query = bind_execution!(query, poll, poll.enforcement, now, Shape::Full);
                }
                queued = query.fetch_all(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(queued)
        })
    }

    /// When the next enabled sensor is due, if any.
    pub async fn next_sensor_due(&self) -> Result<Option<i64>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_scalar(
                "SELECT MIN(next_run_at) AS due FROM sensor WHERE enabled = TRUE",
            )
            .fetch_one(p)
            .await?)
        })
    }

    /// Polls that ended and were not taken in yet, oldest first.
    pub async fn polls_ended(&self, limit: i64) -> Result<Vec<PollEnded>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(concat!(
                "SELECT id, sensor, status, result, error, started_at, finished_at, trace FROM execution \
                 WHERE sensor IS NOT NULL AND parent_seen = FALSE \
                 AND status IN ",
                finished_statuses_sql!(),
                " ORDER BY id LIMIT $1",
            ))
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// Takes in a poll, once across nodes: stores its records as events on
    /// the sensor's trigger type (to be enforced: `enforced_at` unset, so a
    /// crash before that leaves them to the reconciler), records the poll,
    /// resets or counts the sensor's failures (delaying its next poll for a
    /// failure) and marks the poll taken in — all in one transaction.
    /// `None` when another node took it in first.
    pub async fn take_in_poll(
        &self,
        poll: &PollEnded,
        record: &PollRecord,
        events: &[Value],
    ) -> Result<Option<Vec<EventRecord>>> {
        let ok = poll.status == ExecutionStatus::Succeeded;
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let claimed = sqlx::query(
                "UPDATE execution SET parent_seen = TRUE WHERE id = $1 AND parent_seen = FALSE",
            )
            .bind(poll.execution)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                return Ok(None);
            }
            let mut stored = Vec::new();
            if !events.is_empty() {
                let sql = format!(
                    "INSERT INTO event (trigger, payload, source, created_at) VALUES {} \
                     RETURNING {EVENT_COLUMNS}",
                    rows_of(self.dialect(), events.len(), 4, None)
                );
                let mut query = sqlx::query_as(&sql);
                for payload in events {
                    query = query
                        .bind(&poll.sensor)
                        .bind(Json(payload))
                        .bind(&poll.sensor)
                        .bind(now);
                }
                stored = query.fetch_all(&mut *tx).await?;
                stored.sort_by_key(|e: &EventRecord| e.id);
            }
            sqlx::query(
                "INSERT INTO sensor_run (execution, sensor, status, events, error, warning, started_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (execution) DO NOTHING",
            )
            .bind(poll.execution)
            .bind(&poll.sensor)
            .bind(poll.status.as_str())
            .bind(events.len() as i64)
            .bind(poll.error.as_ref().map(Json))
            .bind(&record.warning)
            .bind(poll.started_at)
            .bind(poll.finished_at.unwrap_or_else(now_ms))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE sensor SET failures = CASE WHEN $2 THEN 0 ELSE failures + 1 END, \
                 next_run_at = CASE WHEN $3 > next_run_at THEN $3 ELSE next_run_at END WHERE ref = $1",
            )
            .bind(&poll.sensor)
            .bind(ok)
            .bind(record.backoff_until.unwrap_or(0))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(stored))
        })
    }

    /// Sensors ordered by ref, after `after`.
    pub async fn list_sensors(&self, page: &Page) -> Result<Vec<SensorRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<SensorRecord> = sqlx::query_as(&format!(
                "SELECT {SENSOR_COLUMNS} FROM sensor WHERE ref > $1 ORDER BY ref LIMIT $2"
            ))
            .bind(page.after_text())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// One sensor.
    pub async fn get_sensor(&self, r#ref: &str) -> Result<Option<SensorRecord>> {
        on_pool!(self, |p| {
            let row: Option<SensorRecord> = sqlx::query_as(&format!(
                "SELECT {SENSOR_COLUMNS} FROM sensor WHERE ref = $1"
            ))
            .bind(r#ref)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }

    /// A sensor's last `limit` polls, newest first.
    pub async fn sensor_runs(&self, r#ref: &str, limit: i64) -> Result<Vec<SensorRunRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<SensorRunRecord> = sqlx::query_as(
                "SELECT execution, status, events, error, warning, started_at, finished_at FROM sensor_run \
                 WHERE sensor = $1 ORDER BY execution DESC LIMIT $2",
            )
            .bind(r#ref)
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// Enables (polling from now, failures forgotten) or disables a sensor;
    /// `None` when there is none.
    pub async fn set_sensor_enabled(
        &self,
        r#ref: &str,
        enabled: bool,
    ) -> Result<Option<SensorRecord>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row: Option<SensorRecord> = sqlx::query_as(&format!(
                "UPDATE sensor SET enabled = $2, failures = CASE WHEN $2 THEN 0 ELSE failures END, \
                 next_run_at = CASE WHEN $2 AND enabled = FALSE THEN $3 ELSE next_run_at END \
                 WHERE ref = $1 RETURNING {SENSOR_COLUMNS}"
            ))
            .bind(r#ref)
            .bind(enabled)
            .bind(now)
            .fetch_optional(&mut *p)
            .await?;
            Ok(row)
        })
    }
}
