//! Executions and enforcements: queueing (one or a batch with their
//! enforcements, in one transaction), reading, listing and cancelling.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Decode, Encode, Type};

use super::events::{event_records, insert_events_sql};
use super::gates::{GateConn, apply_admission, initial, plan, settle};
use super::records::*;
use super::sql::*;
use super::{Dialect, Pool, Result, Storage, fewer_rows, now_ms};

/// Per item, the execution it queued; and what policies made of them.
type Enforced = (Vec<Option<ExecutionRecord>>, Option<Admission>);

/// Inserts the enforcements `items` (each (rule, event) once) and, for
/// those enforced whose enforcement is new, their executions, in the
/// transaction open on `tx`; returns the execution each item queued, or
/// `None` when, without `some_exist`, some enforcement existed already
/// (nothing was read back, and the caller rolls back).
async fn insert_enforcements<DB, C>(
    tx: &mut C,
    dialect: Dialect,
    items: &[NewEnforcement],
    some_exist: bool,
    now: i64,
) -> Result<Option<Enforced>>
where
    DB: sqlx::Database<Connection = C>,
    DB::QueryResult: Done,
    C: sqlx::Connection<Database = DB>,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    // What an enforcement and an execution bind, and the ids read back.
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Vec<u8>: Type<DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB>,
    for<'q> Json<&'q Value>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Json<&'q Value>>: Encode<'q, DB>,
    for<'q> Json<&'q Vec<String>>: Encode<'q, DB> + Type<DB>,
    C: GateConn,
{
    if items.is_empty() {
        return Ok(Some((vec![], None)));
    }
    let enforcement_sql = format!(
        "INSERT INTO enforcement (rule, event, status, params, reason, created_at) VALUES {} \
         ON CONFLICT (rule, event) DO NOTHING{}",
        rows_of(dialect, items.len(), 6, None),
        if some_exist {
            " RETURNING id, rule, event"
        } else {
            returning_id(dialect)
        }
    );
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
    // The id of each item's enforcement, when it is new.
    let new: Vec<Option<i64>> = if some_exist {
        let mut inserted = HashMap::new();
        for row in query.fetch_all(&mut *tx).await? {
            let (id, rule, event): (i64, String, i64) = sqlx::FromRow::from_row(&row)?;
            inserted.insert((rule, event), id);
        }
        items
            .iter()
            .map(|i| inserted.remove(&(i.rule.clone(), i.event)))
            .collect()
    } else {
        let Some(ids) = inserted_ids(query, &mut *tx, items.len()).await? else {
            return Ok(None);
        };
        ids.into_iter().map(Some).collect()
    };
    // (item index, new enforcement id, execution) for enforced items whose
    // enforcement is new.
    let runs: Vec<(usize, i64, &NewExecution)> = items
        .iter()
        .zip(new)
        .enumerate()
        .filter_map(|(n, (i, id))| Some((n, id?, i.execution.as_ref()?)))
        .collect();
    let mut out = vec![None; items.len()];
    if runs.is_empty() {
        return Ok(Some((out, None)));
    }
    let gates: Vec<&[Gate]> = runs.iter().map(|(_, _, e)| e.gates.as_slice()).collect();
    let plan = plan(tx, dialect, &gates, now).await?;
    let shape = Shape::of(runs.iter().map(|(_, _, e)| *e));
    let sql = format!(
        "{INSERT_EXECUTION} VALUES {}{}",
        execution_rows(dialect, runs.len(), shape),
        returning_id(dialect)
    );
    let starts: Vec<(ExecutionStatus, Option<String>)> = runs
        .iter()
        .enumerate()
        .map(|(n, (_, _, e))| initial(plan.as_ref(), n, e))
        .collect();
    let mut query = sqlx::query(&sql);
    for ((_, enforcement, e), (status, reason)) in runs.iter().zip(&starts) {
        query = bind_execution!(query, e, Some(*enforcement), now, shape, status, reason);
    }
    // The execution points at its enforcement; the reverse link is
    // resolved by `enforcements_of`, saving a write.
    let ids = inserted_ids(query, &mut *tx, runs.len())
        .await?
        .ok_or_else(|| fewer_rows("execution"))?;
    let admission = match &plan {
        Some(plan) => {
            let written: Vec<(i64, &[Gate])> = ids.iter().copied().zip(gates).collect();
            Some(settle(tx, dialect, plan, &written, now).await?)
        }
        None => None,
    };
    for (((n, enforcement, e), id), (status, reason)) in runs.into_iter().zip(ids).zip(starts) {
        let mut record = ExecutionRecord::queued(id, e, Some(enforcement), now);
        record.status = status;
        record.status_reason = reason;
        out[n] = match &admission {
            Some(a) => apply_admission(a, record),
            None => Some(record),
        };
    }
    Ok(Some((out, admission)))
}

/// How many executions of a status were created since two times.
#[derive(sqlx::FromRow)]
struct StatusCount {
    status: ExecutionStatus,
    recent: i64,
    earlier: i64,
}

impl Storage {
    /// Queues executions as `requested` (or, limited by a policy, as its
    /// admission decides), in one statement and, with policies, their
    /// admission in the same transaction; returns them in the order given,
    /// a run a policy refused as why.
    pub async fn insert_executions(
        &self,
        runs: &[NewExecution],
    ) -> Result<Vec<std::result::Result<ExecutionRecord, Dropped>>> {
        if runs.is_empty() {
            return Ok(vec![]);
        }
        let now = now_ms();
        let dialect = self.dialect();
        let shape = Shape::of(runs);
        let sql = format!(
            "{INSERT_EXECUTION} VALUES {}{}",
            execution_rows(dialect, runs.len(), shape),
            returning_id(dialect)
        );
        let gated = runs.iter().any(|e| !e.gates.is_empty());
        let (ids, admission, starts) = on_writer!(self, |p| {
            if !gated {
                let mut query = sqlx::query(&sql);
                for e in runs {
                    query = bind_execution!(query, e, e.enforcement, now, shape);
                }
                let ids = inserted_ids(query, &mut *p, runs.len())
                    .await?
                    .ok_or_else(|| fewer_rows("execution"))?;
                return Ok((ids, None, None));
            }
            // It reads before it writes: SQLite's write lock is taken first.
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let gates: Vec<&[Gate]> = runs.iter().map(|e| e.gates.as_slice()).collect();
            let plan = plan(&mut *tx, dialect, &gates, now).await?;
            let starts: Vec<(ExecutionStatus, Option<String>)> = runs
                .iter()
                .enumerate()
                .map(|(n, e)| initial(plan.as_ref(), n, e))
                .collect();
            let mut query = sqlx::query(&sql);
            for (e, (status, reason)) in runs.iter().zip(&starts) {
                query = bind_execution!(query, e, e.enforcement, now, shape, status, reason);
            }
            let ids = inserted_ids(query, &mut *tx, runs.len())
                .await?
                .ok_or_else(|| fewer_rows("execution"))?;
            let admission = match &plan {
                Some(plan) => {
                    let written: Vec<(i64, &[Gate])> = ids.iter().copied().zip(gates).collect();
                    Some(settle(&mut *tx, dialect, plan, &written, now).await?)
                }
                None => None,
            };
            tx.commit().await?;
            self.tally(admission.as_ref());
            Ok((ids, admission, Some(starts)))
        })?;
        Ok(runs
            .iter()
            .zip(ids)
            .enumerate()
            .map(|(n, (e, id))| {
                let mut record = ExecutionRecord::queued(id, e, e.enforcement, now);
                if let Some((status, reason)) = starts.as_ref().map(|s| &s[n]) {
                    record.status = *status;
                    record.status_reason = reason.clone();
                }
                let Some(a) = &admission else {
                    return Ok(record);
                };
                apply_admission(a, record).ok_or_else(|| {
                    let (_, policy, reason) = a
                        .dropped
                        .iter()
                        .find(|(d, ..)| *d == id)
                        .cloned()
                        .unwrap_or_default();
                    Dropped { policy, reason }
                })
            })
            .collect())
    }

    /// Records enforcements and, for those enforced, their executions — each
    /// (rule, event) once, so a redelivered event queues nothing again — and
    /// marks `events` enforced (their enforcements are stored), all in one
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
        if let Some(out) = self.enforce_all(items, events, false).await? {
            return Ok(out);
        }
        // Some (rule, event) pair was enforced already (a redelivered event,
        // or a reconcile that met the event door): the first attempt rolled
        // back; this one reads which enforcements are new.
        self.enforce_all(items, events, true)
            .await?
            .ok_or_else(|| fewer_rows("enforcement"))
    }

    /// [`Storage::enforce_many`]'s transaction. Without `some_exist`, it
    /// expects every enforcement to be new and rolls back (`None`) when one
    /// is not, reading nothing back; with it, the insert returns the
    /// enforcements it wrote.
    async fn enforce_all(
        &self,
        items: &[NewEnforcement],
        events: &[i64],
        some_exist: bool,
    ) -> Result<Option<Vec<Option<ExecutionRecord>>>> {
        let now = now_ms();
        let dialect = self.dialect();
        let mark_sql = format!(
            "UPDATE event SET enforced_at = $1 WHERE id {}",
            id_in(dialect, 2)
        );
        on_writer!(self, |p| {
            // Its first statement writes, so a plain BEGIN takes SQLite's
            // write lock as `IMMEDIATE` would, without the driver's extra
            // trip to check a custom BEGIN.
            let mut tx = p.begin().await?;
            if !events.is_empty() {
                sqlx::query(&mark_sql)
                    .bind(now)
                    .bind(id_array(dialect, events))
                    .execute(&mut *tx)
                    .await?;
            }
            let Some((out, admission)) =
                insert_enforcements(&mut *tx, dialect, items, some_exist, now).await?
            else {
                tx.rollback().await?;
                return Ok(None);
            };
            tx.commit().await?;
            self.tally(admission.as_ref());
            Ok(Some(out))
        })
    }

    /// Records events and, in the same transaction, what their rules made of
    /// them: the events are inserted, `plan` turns them (with their ids) into
    /// enforcements, and those are inserted with their executions. One
    /// transaction of at most three inserts for the whole batch, where
    /// recording and then enforcing took two, and the events are never seen
    /// stored but unjudged. When `plan` fails, the events are kept
    /// unenforced (the reconciler judges them later) and its error is
    /// returned beside them. Returns the events, and the executions queued
    /// with the id of the event each is for.
    pub async fn record_events<F, Fut, E>(
        &self,
        events: &[NewEvent<'_>],
        plan: F,
    ) -> Result<(
        Vec<EventRecord>,
        std::result::Result<Vec<(i64, ExecutionRecord)>, E>,
    )>
    where
        F: FnOnce(Vec<EventRecord>) -> Fut,
        Fut: Future<
            Output = (
                Vec<EventRecord>,
                std::result::Result<Vec<NewEnforcement>, E>,
            ),
        >,
    {
        if events.is_empty() {
            return Ok((vec![], Ok(vec![])));
        }
        let now = now_ms();
        let dialect = self.dialect();
        let insert_sql = insert_events_sql(dialect, events.len());
        let unmark_sql = format!(
            "UPDATE event SET enforced_at = NULL WHERE id {}",
            id_in(dialect, 1)
        );
        on_writer!(self, |p| {
            // Its first statement writes: see `enforce_all`.
            let mut tx = p.begin().await?;
            let query = bind_events!(&insert_sql, events, now, Some(now));
            let ids = inserted_ids(query, &mut *tx, events.len())
                .await?
                .ok_or_else(|| fewer_rows("event"))?;
            let records = event_records(events, ids, now);
            let (records, planned) = plan(records).await;
            let items = match planned {
                Ok(items) => items,
                Err(e) => {
                    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
                    sqlx::query(&unmark_sql)
                        .bind(id_array(dialect, &ids))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok((records, Err(e)));
                }
            };
            // Every (rule, event) pair is new: the events are.
            let (out, admission) = insert_enforcements(&mut *tx, dialect, &items, false, now)
                .await?
                .ok_or_else(|| fewer_rows("enforcement"))?;
            tx.commit().await?;
            self.tally(admission.as_ref());
            let queued = items
                .iter()
                .zip(out)
                .filter_map(|(item, e)| Some((item.event, e?)))
                .collect();
            Ok((records, Ok(queued)))
        })
    }

    /// The enforcements of an event: `(rule, status, reason, execution)`.
    pub async fn enforcements_of(
        &self,
        event: i64,
    ) -> Result<Vec<(String, String, Option<String>, Option<i64>)>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(
                "SELECT n.rule, n.status, n.reason, x.id AS execution FROM enforcement n \
                 LEFT JOIN execution x ON x.enforcement = n.id WHERE n.event = $1 ORDER BY n.id",
            )
            .bind(event)
            .fetch_all(p)
            .await?)
        })
    }

    /// One execution.
    pub async fn get_execution(&self, id: i64) -> Result<Option<ExecutionRecord>> {
        on_pool!(self, |p| {
            let row: Option<ExecutionRecord> = sqlx::query_as(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }

    /// The executions with these ids, oldest first.
    pub async fn executions_by_id(&self, ids: &[i64]) -> Result<Vec<ExecutionRecord>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let dialect = self.dialect();
        on_pool!(self, |p| {
            let rows: Vec<ExecutionRecord> = sqlx::query_as(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id {} ORDER BY id",
                id_in(dialect, 1)
            ))
            .bind(id_array(dialect, ids))
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// What the newest executions of `action` created since `since` (Unix
    /// ms) used, at most `limit` of them.
    pub async fn resources_since(
        &self,
        action: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<Value>> {
        on_pool!(self, |p| {
            let rows: Vec<(Json<Value>,)> = sqlx::query_as(
                "SELECT resources FROM execution WHERE action = $1 AND created_at >= $2 \
                 AND resources IS NOT NULL ORDER BY id DESC LIMIT $3",
            )
            .bind(action)
            .bind(since)
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|(r,)| r.0).collect())
        })
    }

    /// The ended attempts of an execution, oldest first.
    pub async fn attempts_of(&self, execution: i64) -> Result<Vec<AttemptRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<AttemptRecord> = sqlx::query_as(
                "SELECT attempt, worker, status, error, started_at, finished_at FROM execution_attempt \
                 WHERE execution = $1 ORDER BY attempt",
            )
            .bind(execution)
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// Executions, newest first, filtered by status, action and rule.
    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &Page,
    ) -> Result<Vec<ExecutionRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<ExecutionRecord> = sqlx::query_as(&format!(
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
            Ok(rows)
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
            let rows: Vec<StatusCount> = sqlx::query_as(
                "SELECT status, SUM(CASE WHEN created_at >= $1 THEN 1 ELSE 0 END) AS recent, COUNT(*) AS earlier \
                 FROM execution WHERE created_at >= $2 GROUP BY status",
            )
            .bind(recent)
            .bind(earlier)
            .fetch_all(p)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.status, r.recent, r.earlier))
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
            Ok(sqlx::query_as(
                "SELECT n.event, n.status, n.reason, x.id AS execution, n.created_at FROM enforcement n \
                 LEFT JOIN execution x ON x.enforcement = n.id WHERE n.rule = $1 ORDER BY n.event DESC LIMIT $2",
            )
            .bind(rule)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// Cancels an execution: one not yet running ends `cancelled` at once; a
    /// running one is flagged for its worker. `None` when it does not exist;
    /// with it, whether this call is what ended it.
    pub async fn cancel_execution(&self, id: i64) -> Result<Option<(ExecutionRecord, bool)>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let ended = sqlx::query(
                "UPDATE execution SET status = 'cancelled', status_reason = 'cancelled before it ran', finished_at = $2, sealed_params = NULL \
                 WHERE id = $1 AND status IN ('delayed', 'requested', 'scheduled')",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;

            sqlx::query(
                "UPDATE execution SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let row: Option<ExecutionRecord> = sqlx::query_as(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(row.map(|r| (r, ended)))
        })
    }
}
