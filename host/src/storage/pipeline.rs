//! Storage for the event pipeline: timers, enforcements, claims, leases.
//!
//! Claims are optimistic and therefore correct with any number of claimers
//! on either backend: a worker reads candidate `requested` rows and moves each
//! with `UPDATE … WHERE id = $1 AND status = 'requested'`; only the claimer
//! whose update changed a row owns it. On PostgreSQL the candidate read uses
//! `FOR UPDATE SKIP LOCKED` so concurrent claimers pick different rows instead
//! of racing for the same ones.

use serde_json::{Value, json};
use sqlx::types::Json;

use super::rows::DbRow;
use super::{
    EXECUTION_COLUMNS, EXECUTION_LITERALS, EventRecord, ExecutionRecord, INSERT_EXECUTION,
    NewExecution, Pool, RULE_COLUMNS, Result, RuleRecord, Storage, now_ms,
};
use crate::triggers::schedule::Plan;

/// An event to record.
pub struct NewEvent<'a> {
    /// Trigger type ref.
    pub trigger: &'a str,
    /// Payload.
    pub payload: &'a Value,
    /// Who produced it.
    pub source: Option<&'a str>,
}

/// An enforcement to record: a rule's verdict on an event.
#[derive(Debug, Clone)]
pub struct NewEnforcement {
    /// Rule ref.
    pub rule: String,
    /// Event id.
    pub event: i64,
    /// Rendered params, when rendering got that far.
    pub params: Option<Value>,
    /// Why it failed; `None` when enforced.
    pub reason: Option<String>,
    /// The execution to queue when enforced.
    pub execution: Option<NewExecution>,
}

/// `($1, $2, …), ($n, …)`: `rows` tuples of `cols` placeholders each, each
/// ending with `literals` when given (constant columns).
pub(super) fn rows_of(rows: usize, cols: usize, literals: Option<&str>) -> String {
    rows_from(rows, cols, 1, literals)
}

/// [`rows_of`] numbering from `$first` (after parameters bound before the rows).
fn rows_from(rows: usize, cols: usize, first: usize, literals: Option<&str>) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let mut fields: Vec<String> = (0..cols)
                .map(|c| format!("${}", first + row * cols + c))
                .collect();
            fields.extend(literals.map(str::to_string));
            format!("({})", fields.join(", "))
        })
        .collect();
    tuples.join(", ")
}

/// `1, 2, 3` for an SQL `IN (…)` list: ids are integers read back from the
/// database, so they are inlined rather than bound (`NULL` for none, which
/// matches nothing).
fn id_list(ids: &[i64]) -> String {
    if ids.is_empty() {
        return "NULL".into();
    }
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    ids.join(", ")
}

/// A timer's misfire policy after downtime.
pub const MISFIRE_FIRE_ONCE: &str = "fire_once";
/// Skip the ticks missed during downtime.
pub const MISFIRE_SKIP: &str = "skip";

/// A one-shot timer later than this after its time counts as missed.
const ONCE_GRACE_MS: i64 = 60_000;

/// Ticks of `plan` after `scheduled` that are also due by `now`, and the
/// first tick after `now`.
fn ticks_missed(plan: &Plan, scheduled: i64, now: i64) -> (i64, Option<i64>) {
    if let Plan::Interval { every_ms } = plan {
        // Closed form: a long downtime on a short interval costs nothing.
        let every = (*every_ms).max(1);
        let missed = (now - scheduled).max(0) / every;
        return (missed, Some(scheduled + (missed + 1) * every));
    }
    let mut missed = 0;
    let mut next = plan.next_after(scheduled);
    while let Some(n) = next {
        if n > now || missed >= 100_000 {
            break;
        }
        missed += 1;
        next = plan.next_after(n);
    }
    (missed, next)
}

/// How an execution ended, as the worker reports it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// succeeded, failed, timed_out or cancelled.
    pub status: String,
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
}

impl Finished {
    /// An end with no output: `status` with `message` as its error.
    pub fn without_output(status: &str, message: impl Into<String>) -> Self {
        Self {
            status: status.into(),
            result: None,
            error: Some(Value::String(message.into())),
            stdout: String::new(),
            stderr: String::new(),
            logs: json!([]),
            started_at: None,
        }
    }
}

/// What [`Storage::reap_expired_leases`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Executions put back in the queue for another attempt.
    pub retried: u64,
    /// Executions marked abandoned (no attempts left).
    pub abandoned: u64,
    /// Claimed executions that never started, queued again as they were
    /// (no attempt was used).
    pub requeued: u64,
}

impl Storage {
    /// Creates, updates or removes the timer of `rule` to match its
    /// definition: enabled rules on timer triggers have one.
    pub async fn sync_timer(&self, rule: &RuleRecord, plan: Option<&Plan>) -> Result<()> {
        let now = now_ms();
        let misfire = rule.spec.trigger_params["misfire"]
            .as_str()
            .unwrap_or(MISFIRE_FIRE_ONCE)
            .to_string();
        let plan = plan.filter(|_| rule.spec.enabled);
        on_writer!(self, |p| {
            match plan.and_then(|plan| plan.first(now).map(|first| (plan.stored(), first))) {
                None => {
                    sqlx::query("DELETE FROM timer WHERE rule = $1")
                        .bind(&rule.spec.r#ref)
                        .execute(p)
                        .await?;
                }
                Some(((every, schedule), first)) => {
                    // A changed schedule restarts; an unchanged one keeps its
                    // next tick (restarts neither lose nor add ticks).
                    sqlx::query(
                        "INSERT INTO timer (rule, every_ms, next_fire_at, misfire, schedule) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (rule) DO UPDATE SET misfire = excluded.misfire, \
                         next_fire_at = CASE WHEN timer.every_ms = excluded.every_ms \
                           AND timer.schedule IS NOT DISTINCT FROM excluded.schedule \
                           THEN timer.next_fire_at ELSE excluded.next_fire_at END, \
                         every_ms = excluded.every_ms, schedule = excluded.schedule",
                    )
                    .bind(&rule.spec.r#ref)
                    .bind(every)
                    .bind(first)
                    .bind(&misfire)
                    .bind(schedule)
                    .execute(p)
                    .await?;
                }
            }
            Ok(())
        })
    }

    /// Removes a rule's timer.
    pub async fn delete_timer(&self, rule: &str) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query("DELETE FROM timer WHERE rule = $1")
                .bind(rule)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// When the next timer is due, if any.
    pub async fn next_timer_due(&self) -> Result<Option<i64>> {
        on_pool!(self, |p| {
            let row = sqlx::query("SELECT MIN(next_fire_at) AS due FROM timer")
                .fetch_one(p)
                .await?;
            Ok(row.opt_int("due"))
        })
    }

    /// Fires every due timer: advances it and records its event in one
    /// transaction, so a tick is fired exactly once even with several nodes
    /// and across restarts. Returns `(rule ref, event)` for each fired tick.
    pub async fn fire_due_timers(&self, limit: i64) -> Result<Vec<(String, EventRecord)>> {
        let now = now_ms();
        let lock = self.skip_locked();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let due = sqlx::query(&format!(
                "SELECT rule, every_ms, next_fire_at, count, skipped, misfire, schedule FROM timer \
                 WHERE next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2{lock}"
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut fired = Vec::new();
            for row in due {
                let rule = row.text("rule");
                let scheduled = row.int("next_fire_at");
                let Some(plan) =
                    Plan::from_stored(row.int("every_ms"), row.opt_text("schedule").as_deref())
                else {
                    sqlx::query("DELETE FROM timer WHERE rule = $1")
                        .bind(&rule)
                        .execute(&mut *tx)
                        .await?;
                    continue;
                };
                let (missed, next) = ticks_missed(&plan, scheduled, now);
                let late = missed > 0
                    || (matches!(plan, Plan::Once { .. }) && now - scheduled > ONCE_GRACE_MS);
                let skip = row.text("misfire") == MISFIRE_SKIP && late;
                let count = row.int("count") + if skip { 0 } else { 1 };
                let skipped = row.int("skipped") + if skip { missed + 1 } else { missed };
                match next {
                    Some(next) => {
                        sqlx::query("UPDATE timer SET next_fire_at = $2, count = $3, skipped = $4 WHERE rule = $1")
                            .bind(&rule)
                            .bind(next)
                            .bind(count)
                            .bind(skipped)
                            .execute(&mut *tx)
                            .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM timer WHERE rule = $1")
                            .bind(&rule)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                if skip {
                    tracing::info!(
                        rule,
                        skipped = missed + 1,
                        "skipped ticks missed during downtime"
                    );
                    continue;
                }
                let trigger = match plan {
                    Plan::Interval { .. } => "core.interval",
                    Plan::Cron { .. } => "core.cron",
                    Plan::Once { .. } => "core.once",
                };
                let payload = json!({"count": count, "scheduled_at": scheduled, "missed": missed});
                let event = sqlx::query(
                    "INSERT INTO event (trigger, payload, source, created_at) VALUES ($1, $2, $3, $4) \
                     RETURNING id, trigger, payload, source, created_at",
                )
                .bind(trigger)
                .bind(Json(&payload))
                .bind(&rule)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                fired.push((rule, EventRecord::from_row(&event)));
            }
            tx.commit().await?;
            Ok(fired)
        })
    }

    /// A timer's state: `(next_fire_at, count, skipped)`.
    pub async fn timer_state(&self, rule: &str) -> Result<Option<(i64, i64, i64)>> {
        on_pool!(self, |p| {
            let row = sqlx::query("SELECT next_fire_at, count, skipped FROM timer WHERE rule = $1")
                .bind(rule)
                .fetch_optional(p)
                .await?;
            Ok(row.map(|r| (r.int("next_fire_at"), r.int("count"), r.int("skipped"))))
        })
    }

    /// Moves a timer's next tick (as downtime would leave it), for tests and
    /// operators re-arming a timer.
    pub async fn set_timer_next(&self, rule: &str, at: i64) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query("UPDATE timer SET next_fire_at = $2 WHERE rule = $1")
                .bind(rule)
                .bind(at)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// Enabled rules listening to `trigger`.
    pub async fn enabled_rules(&self, trigger: &str) -> Result<Vec<RuleRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(&format!(
                "SELECT {RULE_COLUMNS} FROM rule WHERE trigger = $1 AND enabled = TRUE ORDER BY ref"
            ))
            .bind(trigger)
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(RuleRecord::from_row).collect())
        })
    }

    /// Records events in one statement; returns them in the order given.
    pub async fn insert_events(&self, events: &[NewEvent<'_>]) -> Result<Vec<EventRecord>> {
        if events.is_empty() {
            return Ok(vec![]);
        }
        let now = now_ms();
        let sql = format!(
            "INSERT INTO event (trigger, payload, source, created_at) VALUES {} \
             RETURNING id, trigger, payload, source, created_at",
            rows_of(events.len(), 4, None)
        );
        on_writer!(self, |p| {
            let mut query = sqlx::query(&sql);
            for e in events {
                query = query
                    .bind(e.trigger)
                    .bind(Json(e.payload))
                    .bind(e.source)
                    .bind(now);
            }
            let mut records: Vec<EventRecord> = query
                .fetch_all(p)
                .await?
                .iter()
                .map(EventRecord::from_row)
                .collect();
            // Ids are assigned in VALUES order; RETURNING order is not promised.
            records.sort_by_key(|e| e.id);
            Ok(records)
        })
    }

    /// Records enforcements and, for those enforced, their executions — each
    /// (rule, event) once, so a redelivered event queues nothing again. One
    /// transaction and two statements for the whole batch; returns, per
    /// item, the execution it queued.
    pub async fn enforce_many(
        &self,
        items: &[NewEnforcement],
    ) -> Result<Vec<Option<ExecutionRecord>>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let now = now_ms();
        let enforcement_sql = format!(
            "INSERT INTO enforcement (rule, event, status, params, reason, created_at) VALUES {} \
             ON CONFLICT (rule, event) DO NOTHING RETURNING id, rule, event",
            rows_of(items.len(), 6, None)
        );
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
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
                let sql = format!(
                    "{INSERT_EXECUTION} VALUES {} RETURNING {EXECUTION_COLUMNS}",
                    rows_of(runs.len(), 9, Some(EXECUTION_LITERALS))
                );
                let mut query = sqlx::query(&sql);
                for (_, enforcement, e) in &runs {
                    query = bind_execution!(query, e, Some(*enforcement), now);
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

    /// Claims up to `limit` queued executions whose capabilities `worker`
    /// covers, leasing them until `now + lease_ms`. With `start`, they go
    /// straight to `running` (a worker that starts what it claims at once
    /// saves a round trip per execution).
    pub async fn claim(
        &self,
        worker: i64,
        capabilities: &[String],
        limit: i64,
        lease_ms: i64,
        start: bool,
    ) -> Result<Vec<ExecutionRecord>> {
        let status = if start { "running" } else { "scheduled" };
        let now = now_ms();
        let lock = self.skip_locked();
        let select = format!(
            "SELECT {EXECUTION_COLUMNS} FROM execution WHERE status = 'requested' AND not_before <= $1 \
             ORDER BY id LIMIT $2{lock}"
        );
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let candidates = sqlx::query(&select)
                .bind(now)
                .bind(limit * 4)
                .fetch_all(&mut *tx)
                .await?;
            let chosen: Vec<ExecutionRecord> = candidates
                .iter()
                .map(ExecutionRecord::from_row)
                .filter(|e| e.capabilities.iter().all(|c| capabilities.contains(c)))
                .take(limit.max(0) as usize)
                .collect();
            if chosen.is_empty() {
                tx.commit().await?;
                return Ok(vec![]);
            }
            // One UPDATE for the batch; only rows still `requested` move, so
            // a row another claimer took meanwhile is simply not returned.
            let ids: Vec<i64> = chosen.iter().map(|e| e.id).collect();
            let update = format!(
                "UPDATE execution SET status = $4, status_reason = NULL, worker = $1, scheduled_at = $2, \
                 started_at = CASE WHEN $4 = 'running' THEN $2 ELSE NULL END, \
                 lease_expires_at = $3 WHERE status = 'requested' AND id IN ({}) RETURNING id",
                id_list(&ids)
            );
            let rows = sqlx::query(&update)
                .bind(worker)
                .bind(now)
                .bind(now + lease_ms)
                .bind(status)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            let won: std::collections::HashSet<i64> = rows.iter().map(|r| r.int("id")).collect();
            Ok(chosen
                .into_iter()
                .filter(|e| won.contains(&e.id))
                .map(|e| ExecutionRecord {
                    status: status.into(),
                    worker: Some(worker),
                    scheduled_at: Some(now),
                    started_at: start.then_some(now),
                    status_reason: None,
                    ..e
                })
                .collect())
        })
    }

    /// Marks executions `worker` claimed ahead as running, in one
    /// statement; returns the ids it still held (a cancelled or reaped one is
    /// left out and must not run).
    pub async fn start_many(&self, worker: i64, ids: &[i64]) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "UPDATE execution SET status = 'running', started_at = $2 \
             WHERE worker = $1 AND status = 'scheduled' AND id IN ({}) RETURNING id",
            id_list(ids)
        );
        let now = now_ms();
        on_writer!(self, |p| {
            let rows = sqlx::query(&sql)
                .bind(worker)
                .bind(now)
                .fetch_all(p)
                .await?;
            Ok(rows.iter().map(|r| r.int("id")).collect())
        })
    }

    /// Puts what `worker` claimed but never began back in the queue as it
    /// was: everything still `scheduled` to it, and the executions in
    /// `marked` it had marked running without beginning them (a worker that
    /// stops cleanly hands its work back).
    pub async fn release_unstarted(&self, worker: i64, marked: &[i64]) -> Result<u64> {
        let sql = format!(
            "UPDATE execution SET status = 'requested', worker = NULL, scheduled_at = NULL, \
             started_at = NULL, lease_expires_at = NULL WHERE worker = $1 \
             AND (status = 'scheduled' OR (status = 'running' AND id IN ({})))",
            id_list(marked)
        );
        on_writer!(self, |p| {
            let done = sqlx::query(&sql).bind(worker).execute(p).await?;
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
        Ok(self.finish_many(&[(id, worker, f.clone())]).await?[0])
    }

    /// [`Storage::finish`] for many executions at once (group commit of
    /// results); one flag per item, in order. One statement for the whole
    /// batch: an `UPDATE … FROM (VALUES …)` that moves only rows their worker
    /// still holds (the database records each ended attempt in the history).
    pub async fn finish_many(&self, items: &[(i64, i64, Finished)]) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let now = now_ms();
        let update = format!(
            "WITH v (id, worker, status, result, error, stdout, stderr, logs, started_at) AS (VALUES {}) \
             UPDATE execution SET status = v.status, result = v.result, error = v.error, stdout = v.stdout, \
             stderr = v.stderr, logs = v.logs, started_at = COALESCE(v.started_at, execution.started_at), \
             finished_at = $1, lease_expires_at = NULL FROM v \
             WHERE execution.id = v.id AND execution.worker = v.worker \
             AND execution.status IN ('scheduled', 'running') RETURNING execution.id",
            rows_from(items.len(), 9, 2, None)
        );
        on_writer!(self, |p| {
            let mut query = sqlx::query(&update).bind(now);
            for (id, worker, f) in items {
                query = query
                    .bind(id)
                    .bind(worker)
                    .bind(&f.status)
                    .bind(f.result.as_ref().map(Json))
                    .bind(f.error.as_ref().map(Json))
                    .bind(&f.stdout)
                    .bind(&f.stderr)
                    .bind(Json(&f.logs))
                    .bind(f.started_at);
            }
            let done: std::collections::HashSet<i64> = query
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| r.int("id"))
                .collect();
            Ok(items.iter().map(|(id, ..)| done.contains(id)).collect())
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
            let expired = sqlx::query(
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
                let id = row.int("id");
                let attempt = row.int("attempt");
                sqlx::query(
                    "INSERT INTO execution_attempt (execution, attempt, worker, status, error, started_at, finished_at) \
                     VALUES ($1, $2, $3, 'abandoned', $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(attempt)
                .bind(row.opt_int("worker"))
                .bind(Json(json!("the worker stopped heartbeating")))
                .bind(row.opt_int("started_at"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if attempt < row.int("max_attempts") {
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
                         lease_expires_at = NULL, finished_at = $2 WHERE id = $1 AND status IN ('scheduled', 'running')",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    reaped.abandoned += 1;
                }
            }
            tx.commit().await?;
            Ok(reaped)
        })
    }

    /// Ids of running executions of `worker` whose cancellation was asked.
    pub async fn cancel_requests(&self, worker: i64) -> Result<Vec<i64>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT id FROM execution WHERE worker = $1 AND status = 'running' AND cancel_requested = TRUE",
            )
            .bind(worker)
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(|r| r.int("id")).collect())
        })
    }

    /// Earliest `not_before` of queued executions still waiting for backoff.
    pub async fn next_retry_due(&self) -> Result<Option<i64>> {
        let now = now_ms();
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT MIN(not_before) AS due FROM execution WHERE status = 'requested' AND not_before > $1",
            )
            .bind(now)
            .fetch_one(p)
            .await?;
            Ok(row.opt_int("due"))
        })
    }

    /// Deletes finished executions and events older than `cutoff` (Unix ms).
    pub async fn prune(&self, cutoff: i64) -> Result<(u64, u64)> {
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let executions = sqlx::query(
                "DELETE FROM execution WHERE finished_at IS NOT NULL AND finished_at < $1",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM execution_attempt WHERE finished_at < $1 AND execution NOT IN (SELECT id FROM execution)")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            let events = sqlx::query("DELETE FROM event WHERE created_at < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((executions.rows_affected(), events.rows_affected()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{id_list, rows_from, rows_of};

    #[test]
    fn placeholders_number_on_across_rows_and_literals_close_each_row() {
        assert_eq!(rows_of(1, 2, None), "($1, $2)");
        assert_eq!(
            rows_of(2, 3, Some("'requested', 1")),
            "($1, $2, $3, 'requested', 1), ($4, $5, $6, 'requested', 1)"
        );
        // After one parameter bound ahead of the rows.
        assert_eq!(rows_from(2, 2, 2, None), "($2, $3), ($4, $5)");
    }

    #[test]
    fn id_lists_are_never_empty() {
        assert_eq!(id_list(&[3, 12]), "3, 12");
        assert_eq!(
            id_list(&[]),
            "NULL",
            "an empty IN list would be a syntax error"
        );
    }
}
