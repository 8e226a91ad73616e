//! Policy gates: admitting executions under concurrency and rate limits,
//! enforced in the database so that any number of nodes on one database
//! never exceed a limit.
//!
//! Runs limited by policies are decided before they are written, in the
//! transaction that writes them ([`plan`], then [`settle`]): each is
//! written `requested` when every gate has room, `delayed` otherwise (or
//! cancelled, or not at all, as its policy says), with one `execution_gate`
//! row per policy (its key and the limits it was created under). A later
//! admission pass ([`Storage::admit_waiting`]) lets waiting executions
//! through in order of arrival per key while every gate has room. A slot is
//! held from admission until the execution ends (queued for a worker,
//! claimed or running; a lease that expires ends it or queues it again,
//! holding its slot), and a start stays in a rate window until the window
//! has passed it. Decisions never run at the same time: SQLite has one
//! writer, and on PostgreSQL each takes a transaction-scoped advisory lock
//! before it reads a count.
//!
//! The rules of admission are plain Rust ([`decide`]), over what was read;
//! the SQL only reads and writes.

use std::collections::{BTreeMap, BTreeSet, HashSet};

mod decide;

use decide::{GateRow, Holder, Verdict, decide, key_states, next_due, plan_new, spent};

use super::records::*;
use super::sql::*;
use super::{Dialect, Pool, Result, Storage, StorageError, now_ms};

/// The advisory lock every admission decision on PostgreSQL holds
/// (`pg_advisory_xact_lock`): "attune gates" in ASCII.
const GATE_LOCK: i64 = 0x6174_7475_6e65_6761;

/// The columns a pass reads of a gate.
const GATE_COLUMNS: &str =
    "g.execution, g.policy, g.gate_key, g.concurrency, g.rate_count, g.rate_ms, g.on_limit";

/// Which gates are spent: their execution holds no slot and its start (if
/// any) left the window (`$1`: now). The rest of a `DELETE`'s condition.
const SPENT: &str = "NOT EXISTS (SELECT 1 FROM execution e \
     WHERE e.id = execution_gate.execution AND (e.status IN ('delayed', 'requested', 'scheduled', 'running') \
     OR (execution_gate.rate_ms > 0 AND e.started_at > $1 - execution_gate.rate_ms)))";

/// Whether any execution waits on a policy (0 or 1).
const ANY_WAITING: &str =
    "SELECT COUNT(*) FROM (SELECT 1 FROM execution_gate WHERE waiting LIMIT 1) AS w";

/// The keys a decision reads, bound as one JSON array of `[policy, key]`
/// pairs (one statement text whatever their number), as a table `k`.
fn keys_table(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "WITH k(policy, gate_key) AS (SELECT json_extract(value, '$[0]'), \
             json_extract(value, '$[1]') FROM json_each($1))"
        }
        Dialect::Postgres => {
            "WITH k(policy, gate_key) AS (SELECT value->>0, value->>1 \
             FROM jsonb_array_elements(CAST($1 AS jsonb)))"
        }
    }
}

/// Defines the gate operations of one backend's connection type: the same
/// statements, typed for each (sqlx's executor traits make a function
/// generic over both harder to read than this).
macro_rules! gate_ops {
    ($conn:ty) => {
        impl GateConn for $conn {
            async fn lock(&mut self, dialect: Dialect) -> Result<()> {
                if dialect == Dialect::Postgres {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(GATE_LOCK)
                        .execute(&mut *self)
                        .await?;
                }
                Ok(())
            }

            async fn read_keys(
                &mut self,
                dialect: Dialect,
                keys: &str,
            ) -> Result<KeysRead> {
                let table = keys_table(dialect);
                // One statement: the holders of the keys, then one row per
                // key where executions wait (`blocked`). `CROSS JOIN` keeps
                // SQLite's planner reading the few keys first, each through
                // the gates' key index.
                let rows: Vec<KeyRow> = sqlx::query_as(&format!(
                    "{table} SELECT g.execution, g.policy, g.gate_key, e.status, e.started_at, g.rate_ms, FALSE AS blocked \
                     FROM k CROSS JOIN execution_gate g JOIN execution e ON e.id = g.execution \
                     WHERE g.policy = k.policy AND g.gate_key = k.gate_key AND NOT g.waiting \
                     UNION ALL SELECT 0, k.policy, k.gate_key, 'delayed', NULL, 0, TRUE FROM k WHERE EXISTS (SELECT 1 \
                     FROM execution_gate g JOIN execution x ON x.id = g.execution \
                     WHERE g.policy = k.policy AND g.gate_key = k.gate_key AND g.waiting \
                     AND x.status = 'delayed')"
                ))
                .bind(keys)
                .fetch_all(&mut *self)
                .await?;
                let mut holders = Vec::with_capacity(rows.len());
                let mut blocked = Vec::new();
                for r in rows {
                    if r.blocked {
                        blocked.push((r.holder.policy, r.holder.gate_key));
                    } else {
                        holders.push(r.holder);
                    }
                }
                Ok((holders, blocked))
            }

            async fn insert_gates(
                &mut self,
                dialect: Dialect,
                rows: &[(i64, &Gate, bool)],
            ) -> Result<()> {
                for chunk in rows.chunks(500) {
                    let sql = format!(
                        "INSERT INTO execution_gate (execution, policy, gate_key, concurrency, rate_count, rate_ms, on_limit, waiting) VALUES {}",
                        rows_of(dialect, chunk.len(), 8, None)
                    );
                    let mut q = sqlx::query(&sql);
                    for (id, g, waiting) in chunk {
                        q = q
                            .bind(*id)
                            .bind(&g.policy)
                            .bind(&g.key)
                            .bind(g.concurrency)
                            .bind(g.rate.map(|r| r.0))
                            .bind(g.rate.map_or(0, |r| r.1))
                            .bind(g.on_limit.as_str())
                            .bind(*waiting);
                    }
                    q.execute(&mut *self).await?;
                }
                Ok(())
            }

            async fn forget_spent(&mut self, dialect: Dialect, ids: &[i64], now: i64) -> Result<()> {
                if !ids.is_empty() {
                    sqlx::query(&format!(
                        "DELETE FROM execution_gate WHERE execution {} AND {SPENT}",
                        id_in(dialect, 2)
                    ))
                    .bind(now)
                    .bind(id_array(dialect, ids))
                    .execute(&mut *self)
                    .await?;
                }
                Ok(())
            }

            async fn refuse(&mut self, admission: &Admission, now: i64) -> Result<()> {
                for (id, _, reason) in &admission.cancelled {
                    sqlx::query(
                        "UPDATE execution SET status = 'cancelled', status_reason = $2, finished_at = $3, \
                         sealed_params = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(reason)
                    .bind(now)
                    .execute(&mut *self)
                    .await?;
                }
                for (id, _, reason) in &admission.dropped {
                    sqlx::query(
                        "UPDATE enforcement SET status = 'dropped', reason = $2 \
                         WHERE id = (SELECT enforcement FROM execution WHERE id = $1)",
                    )
                    .bind(id)
                    .bind(reason)
                    .execute(&mut *self)
                    .await?;
                    sqlx::query("DELETE FROM execution WHERE id = $1")
                        .bind(id)
                        .execute(&mut *self)
                        .await?;
                }
                Ok(())
            }

            async fn admit(&mut self, dialect: Dialect, now: i64) -> Result<Admission> {
                self.lock(dialect).await?;
                let mut admission = Admission::default();
                // The first waiting executions of each key, as many as its
                // limits could let through.
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT execution FROM (SELECT w.execution, ROW_NUMBER() OVER \
                     (PARTITION BY w.policy, w.gate_key ORDER BY w.execution) AS place, \
                     CASE WHEN w.concurrency IS NULL THEN w.rate_count WHEN w.rate_count IS NULL THEN w.concurrency \
                     WHEN w.concurrency < w.rate_count THEN w.concurrency ELSE w.rate_count END AS most \
                     FROM execution_gate w JOIN execution x ON x.id = w.execution \
                     WHERE w.waiting AND x.status = 'delayed') AS q WHERE place <= most",
                )
                .fetch_all(&mut *self)
                .await?;
                if ids.is_empty() {
                    admission.waiting = sqlx::query_scalar::<_, i64>(ANY_WAITING).fetch_one(&mut *self).await? > 0;
                    return Ok(admission);
                }
                let rows: Vec<GateRow> = sqlx::query_as(&format!(
                    "SELECT {GATE_COLUMNS} FROM execution_gate g JOIN execution x ON x.id = g.execution \
                     WHERE g.waiting AND x.status = 'delayed' AND g.execution {}",
                    id_in(dialect, 1)
                ))
                .bind(id_array(dialect, &ids))
                .fetch_all(&mut *self)
                .await?;
                let holders: Vec<Holder> = sqlx::query_as(&format!(
                    "SELECT g.execution, g.policy, g.gate_key, e.status, e.started_at, g.rate_ms \
                     FROM (SELECT DISTINCT policy, gate_key FROM execution_gate WHERE execution {}) AS k \
                     JOIN execution_gate g ON g.policy = k.policy AND g.gate_key = k.gate_key AND NOT g.waiting \
                     JOIN execution e ON e.id = g.execution",
                    id_in(dialect, 1)
                ))
                .bind(id_array(dialect, &ids))
                .fetch_all(&mut *self)
                .await?;
                let mut candidates: BTreeMap<i64, Vec<GateRow>> = BTreeMap::new();
                for row in rows {
                    candidates.entry(row.execution).or_default().push(row);
                }
                let mut keys = key_states(&holders, now);
                for (id, verdict) in decide(&candidates, &HashSet::new(), &mut keys) {
                    if verdict == Verdict::Admit {
                        admission.admitted.push(id);
                    }
                }
                admission.next_due = next_due(&keys, &candidates);
                if !admission.admitted.is_empty() {
                    let set = id_array(dialect, &admission.admitted);
                    sqlx::query(&format!(
                        "UPDATE execution SET status = 'requested', status_reason = NULL \
                         WHERE status = 'delayed' AND id {}",
                        id_in(dialect, 1)
                    ))
                    .bind(&set)
                    .execute(&mut *self)
                    .await?;
                    sqlx::query(&format!(
                        "UPDATE execution_gate SET waiting = FALSE WHERE execution {}",
                        id_in(dialect, 1)
                    ))
                    .bind(&set)
                    .execute(&mut *self)
                    .await?;
                }
                admission.waiting = sqlx::query_scalar::<_, i64>(ANY_WAITING).fetch_one(&mut *self).await? > 0;
                Ok(admission)
            }
        }
    };
}

/// A row of [`GateConn::read_keys`]'s one statement: a holder, or a key
/// where executions wait.
#[derive(sqlx::FromRow)]
struct KeyRow {
    #[sqlx(flatten)]
    holder: Holder,
    blocked: bool,
}

/// Of some keys, the gates holding a slot or in a rate window, and the keys
/// where executions wait.
type KeysRead = (Vec<Holder>, Vec<(String, String)>);

/// The gate operations of a connection, for code written once over both
/// backends.
pub(crate) trait GateConn {
    /// Serialises decisions (PostgreSQL's advisory lock; SQLite has one
    /// writer already).
    fn lock(&mut self, dialect: Dialect) -> impl Future<Output = Result<()>> + Send;
    /// Of `keys` (a JSON array of `[policy, key]`), the gates holding a
    /// slot or in a rate window, and the keys where executions wait.
    fn read_keys(
        &mut self,
        dialect: Dialect,
        keys: &str,
    ) -> impl Future<Output = Result<KeysRead>> + Send;
    /// Writes gates: `(execution, gate, waiting)`.
    fn insert_gates(
        &mut self,
        dialect: Dialect,
        rows: &[(i64, &Gate, bool)],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the spent gates (see [`SPENT`]) of executions `ids`.
    fn forget_spent(
        &mut self,
        dialect: Dialect,
        ids: &[i64],
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Ends what a decision cancelled, and removes what it dropped
    /// (recording why on its enforcement).
    fn refuse(
        &mut self,
        admission: &Admission,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// One admission pass over every waiting key.
    fn admit(
        &mut self,
        dialect: Dialect,
        now: i64,
    ) -> impl Future<Output = Result<Admission>> + Send;
}

gate_ops!(sqlx::SqliteConnection);
gate_ops!(sqlx::PgConnection);

/// What admission decided for runs about to be written (see [`plan`]).
pub(crate) struct Plan {
    /// Per run, in the order given: its verdict, `None` when ungated.
    verdicts: Vec<Option<Verdict>>,
    /// When a rate window next lets one more through.
    next_due: Option<i64>,
    /// Executions whose gates on these keys are spent, read on the way.
    spent: Vec<i64>,
}

/// Decides runs about to be written (`runs[n]`: the gates of run `n`) in
/// the transaction that will write them; `None` when no run has a gate.
/// What it reads stays true until the transaction ends: decisions are
/// serialised.
pub(crate) async fn plan<C: GateConn>(
    c: &mut C,
    dialect: Dialect,
    runs: &[&[Gate]],
    now: i64,
) -> Result<Option<Plan>> {
    if runs.iter().all(|g| g.is_empty()) {
        return Ok(None);
    }
    let keys: BTreeSet<[&str; 2]> = runs
        .iter()
        .flat_map(|gates| gates.iter().map(|g| [g.policy.as_str(), g.key.as_str()]))
        .collect();
    let keys = serde_json::to_string(&keys)
        .map_err(|e| StorageError::Database(sqlx::Error::Encode(Box::new(e))))?;
    c.lock(dialect).await?;
    let (holders, blocked) = c.read_keys(dialect, &keys).await?;
    let (verdicts, next_due) = plan_new(runs, &holders, &blocked, now);
    Ok(Some(Plan {
        verdicts,
        next_due,
        spent: spent(&holders, now),
    }))
}

/// The status and reason run `n` of a batch is written with: as `plan`
/// decided, or as it asks when ungated. A run to be cancelled or dropped is
/// written `delayed`; [`settle`] ends it.
pub(crate) fn initial(
    plan: Option<&Plan>,
    n: usize,
    e: &NewExecution,
) -> (ExecutionStatus, Option<String>) {
    match plan.and_then(|p| p.verdicts[n].as_ref()) {
        Some(Verdict::Admit) => (ExecutionStatus::Requested, e.status_reason.clone()),
        Some(Verdict::Wait(reason)) => (ExecutionStatus::Delayed, Some(reason.clone())),
        Some(_) => (ExecutionStatus::Delayed, e.status_reason.clone()),
        None => (e.initial_status(), e.status_reason.clone()),
    }
}

/// Writes what `plan` decided for the runs just written (`runs[n]`: the id
/// and gates of run `n`): their gates, and the end of those cancelled or
/// dropped; returns what was decided.
pub(crate) async fn settle<C: GateConn>(
    c: &mut C,
    dialect: Dialect,
    plan: &Plan,
    runs: &[(i64, &[Gate])],
    now: i64,
) -> Result<Admission> {
    let mut admission = Admission {
        next_due: plan.next_due,
        ..Admission::default()
    };
    let mut rows: Vec<(i64, &Gate, bool)> = Vec::new();
    for ((id, gates), verdict) in runs.iter().zip(&plan.verdicts) {
        let waiting = match verdict {
            None => continue,
            Some(Verdict::Admit) => {
                admission.admitted.push(*id);
                false
            }
            Some(Verdict::Wait(reason)) => {
                admission.delayed.push((*id, reason.clone()));
                true
            }
            Some(Verdict::Cancel(policy, reason)) => {
                admission
                    .cancelled
                    .push((*id, policy.clone(), reason.clone()));
                continue;
            }
            Some(Verdict::Drop(policy, reason)) => {
                admission
                    .dropped
                    .push((*id, policy.clone(), reason.clone()));
                continue;
            }
        };
        rows.extend(gates.iter().map(|g| (*id, g, waiting)));
    }
    c.insert_gates(dialect, &rows).await?;
    c.refuse(&admission, now).await?;
    // Ended executions' gates stay until a decision on their key reads
    // them or the admission task forgets them: a delete per batch of
    // results cost more than the rest of a policy together.
    c.forget_spent(dialect, &plan.spent, now).await?;
    admission.waiting = !admission.delayed.is_empty();
    Ok(admission)
}

/// Sets the records of executions just written to what `admission` made
/// of them; a dropped one becomes `None`.
pub(crate) fn apply_admission(
    admission: &Admission,
    mut record: ExecutionRecord,
) -> Option<ExecutionRecord> {
    let id = record.id;
    if admission.dropped.iter().any(|(d, ..)| *d == id) {
        return None;
    }
    if admission.admitted.contains(&id) {
        record.status = ExecutionStatus::Requested;
    } else if let Some((_, _, reason)) = admission.cancelled.iter().find(|(c, ..)| *c == id) {
        record.status = ExecutionStatus::Cancelled;
        record.status_reason = Some(reason.clone());
        record.finished_at = Some(now_ms());
    } else if let Some((_, reason)) = admission.delayed.iter().find(|(d, _)| *d == id) {
        record.status_reason = Some(reason.clone());
    }
    Some(record)
}

/// Executions each policy cancelled and dropped on this node, as counted
/// after the transactions that decided them committed.
#[derive(Debug, Default)]
pub(crate) struct Outcomes(std::sync::Mutex<BTreeMap<String, (u64, u64)>>);

impl Storage {
    /// Counts what a committed pass cancelled and dropped.
    pub(crate) fn tally(&self, admission: Option<&Admission>) {
        let Some(a) = admission.filter(|a| !a.cancelled.is_empty() || !a.dropped.is_empty()) else {
            return;
        };
        let mut counts = self.outcomes.0.lock().unwrap_or_else(|e| e.into_inner());
        for (_, policy, _) in &a.cancelled {
            counts.entry(policy.clone()).or_default().0 += 1;
        }
        for (_, policy, _) in &a.dropped {
            counts.entry(policy.clone()).or_default().1 += 1;
        }
    }

    /// Per policy, the executions it cancelled and dropped since this
    /// process started.
    pub fn policy_outcomes(&self) -> BTreeMap<String, (u64, u64)> {
        self.outcomes
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One admission pass over every waiting key, in its own transaction:
    /// lets through what now fits; with `forget`, first forgets the gates
    /// of ended executions whose starts left every rate window.
    pub async fn admit_waiting(&self, forget: bool) -> Result<Admission> {
        let now = now_ms();
        let dialect = self.dialect();
        // Nothing waiting, nothing to forget: a read, not a write, for the
        // passes each ended execution that held a slot asks for.
        let (gates, waiting): (i64, i64) = on_pool!(self, |p| {
            let counts: (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM execution_gate LIMIT 1) AS g), \
                 (SELECT COUNT(*) FROM (SELECT 1 FROM execution_gate WHERE waiting LIMIT 1) AS w)",
            )
            .fetch_one(p)
            .await?;
            Ok::<(i64, i64), StorageError>(counts)
        })?;
        if waiting == 0 && !(forget && gates > 0) {
            return Ok(Admission::default());
        }
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            if forget {
                // Gates of ended executions whose starts left every window.
                sqlx::query(&format!("DELETE FROM execution_gate WHERE {SPENT}"))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let admission = if waiting > 0 {
                GateConn::admit(&mut *tx, dialect, now).await?
            } else {
                Admission::default()
            };
            tx.commit().await?;
            Ok(admission)
        })
    }

    /// Each policy key with executions holding a slot or waiting, with
    /// both counts.
    pub async fn gate_counts(&self) -> Result<Vec<GateCount>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(
                "SELECT g.policy, g.gate_key AS key, \
                 SUM(CASE WHEN NOT g.waiting AND e.status IN ('requested', 'scheduled', 'running') THEN 1 ELSE 0 END) AS running, \
                 SUM(CASE WHEN g.waiting AND e.status = 'delayed' THEN 1 ELSE 0 END) AS waiting \
                 FROM execution_gate g JOIN execution e ON e.id = g.execution \
                 WHERE e.status IN ('delayed', 'requested', 'scheduled', 'running') \
                 GROUP BY g.policy, g.gate_key ORDER BY g.policy, g.gate_key LIMIT 10000",
            )
            .fetch_all(p)
            .await?)
        })
    }

    /// How many gates are stored, spent ones included (what the admission
    /// task's forget keeps small).
    pub async fn gate_rows(&self) -> Result<i64> {
        on_pool!(self, |p| {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM execution_gate")
                .fetch_one(p)
                .await?)
        })
    }
}
