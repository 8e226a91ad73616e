//! Policy gates: admitting executions under concurrency and rate limits,
//! enforced in the database so that any number of nodes on one database
//! never exceed a limit.
//!
//! An execution limited by policies is written `delayed` with one
//! `execution_gate` row per policy (its key and the limits it was created
//! under). An admission pass, in the transaction that wrote it or later in
//! its own, lets waiting executions through to `requested` in order of
//! arrival per key while every gate has room: a slot is held from then
//! until the execution ends (queued for a worker, claimed or running; a
//! lease that expires ends it or queues it again, holding its slot), and a
//! start stays in a rate window until the window has passed it. Passes
//! never run at the same time: SQLite has one writer, and on PostgreSQL
//! each takes a transaction-scoped advisory lock before it reads a count.
//!
//! The rules of admission are plain Rust ([`decide`]), over what the pass
//! read; the SQL only reads and writes.

use std::collections::{BTreeMap, HashSet};

mod decide;

use decide::{GateRow, Holder, Verdict, decide, key_states, next_due};

use super::records::*;
use super::sql::*;
use super::{Dialect, Pool, Result, Storage, StorageError, now_ms};

/// The advisory lock every admission pass on PostgreSQL holds
/// (`pg_advisory_xact_lock`): "attune gates" in ASCII.
const GATE_LOCK: i64 = 0x6174_7475_6e65_6761;

/// The columns a pass reads of a gate.
const GATE_COLUMNS: &str =
    "g.execution, g.policy, g.gate_key, g.concurrency, g.rate_count, g.rate_ms, g.on_limit";

/// Defines the pass and the gate insert for one backend's connection type:
/// the same statements, typed for each (sqlx's executor traits make a
/// function generic over both harder to read than this).
macro_rules! gate_ops {
    ($insert:ident, $pass:ident, $conn:ty) => {
        /// Writes the gates of executions just inserted (`(id, gates)`).
        pub(crate) async fn $insert(
            c: &mut $conn,
            dialect: Dialect,
            items: &[(i64, &[Gate])],
        ) -> Result<()> {
            let rows: Vec<(i64, &Gate)> = items
                .iter()
                .flat_map(|(id, gates)| gates.iter().map(move |g| (*id, g)))
                .collect();
            for chunk in rows.chunks(500) {
                let sql = format!(
                    "INSERT INTO execution_gate (execution, policy, gate_key, concurrency, rate_count, rate_ms, on_limit, waiting) VALUES {}",
                    rows_of(dialect, chunk.len(), 7, Some("TRUE"))
                );
                let mut q = sqlx::query(&sql);
                for (id, g) in chunk {
                    q = q
                        .bind(*id)
                        .bind(&g.policy)
                        .bind(&g.key)
                        .bind(g.concurrency)
                        .bind(g.rate.map(|r| r.0))
                        .bind(g.rate.map_or(0, |r| r.1))
                        .bind(g.on_limit.as_str());
                }
                q.execute(&mut *c).await?;
            }
            Ok(())
        }

        /// One admission pass over the keys of `new` (executions just
        /// inserted, decided at once: admitted, waiting, cancelled or
        /// dropped) or, with `new` empty, over every waiting key.
        pub(crate) async fn $pass(
            c: &mut $conn,
            dialect: Dialect,
            new: &[i64],
            now: i64,
        ) -> Result<Admission> {
            if dialect == Dialect::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(GATE_LOCK)
                    .execute(&mut *c)
                    .await?;
            }
            let mut admission = Admission::default();
            // The first waiting executions of each key in scope, as many as
            // its limits could let through, and every gate of `new`.
            let scope = if new.is_empty() {
                String::new()
            } else {
                format!(
                    "AND EXISTS (SELECT 1 FROM execution_gate n WHERE n.execution {} \
                     AND n.policy = w.policy AND n.gate_key = w.gate_key)",
                    id_in(dialect, 1)
                )
            };
            let first = format!(
                "SELECT execution FROM (SELECT w.execution, ROW_NUMBER() OVER \
                 (PARTITION BY w.policy, w.gate_key ORDER BY w.execution) AS place, \
                 CASE WHEN w.concurrency IS NULL THEN w.rate_count WHEN w.rate_count IS NULL THEN w.concurrency \
                 WHEN w.concurrency < w.rate_count THEN w.concurrency ELSE w.rate_count END AS most \
                 FROM execution_gate w JOIN execution x ON x.id = w.execution \
                 WHERE w.waiting AND x.status = 'delayed' {scope}) AS q WHERE place <= most"
            );
            let mut query = sqlx::query_scalar(&first);
            if !new.is_empty() {
                query = query.bind(id_array(dialect, new));
            }
            let mut ids: Vec<i64> = query.fetch_all(&mut *c).await?;
            ids.extend_from_slice(new);
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                return Ok(admission);
            }
            let rows: Vec<GateRow> = sqlx::query_as(&format!(
                "SELECT {GATE_COLUMNS} FROM execution_gate g JOIN execution x ON x.id = g.execution \
                 WHERE g.waiting AND x.status = 'delayed' AND g.execution {}",
                id_in(dialect, 1)
            ))
            .bind(id_array(dialect, &ids))
            .fetch_all(&mut *c)
            .await?;
            let holders: Vec<Holder> = sqlx::query_as(&format!(
                "SELECT g.policy, g.gate_key, e.status, e.started_at, g.rate_ms \
                 FROM (SELECT DISTINCT policy, gate_key FROM execution_gate WHERE execution {}) AS k \
                 JOIN execution_gate g ON g.policy = k.policy AND g.gate_key = k.gate_key AND NOT g.waiting \
                 JOIN execution e ON e.id = g.execution",
                id_in(dialect, 1)
            ))
            .bind(id_array(dialect, &ids))
            .fetch_all(&mut *c)
            .await?;
            let mut candidates: BTreeMap<i64, Vec<GateRow>> = BTreeMap::new();
            for row in rows {
                candidates.entry(row.execution).or_default().push(row);
            }
            let new_set: HashSet<i64> = new.iter().copied().collect();
            let mut keys = key_states(&holders, now);
            let verdicts = decide(&candidates, &new_set, &mut keys);
            for (id, verdict) in verdicts {
                match verdict {
                    Verdict::Admit => admission.admitted.push(id),
                    Verdict::Wait(reason) if new_set.contains(&id) => {
                        admission.delayed.push((id, reason))
                    }
                    Verdict::Wait(_) => {}
                    Verdict::Cancel(policy, reason) => admission.cancelled.push((id, policy, reason)),
                    Verdict::Drop(policy, reason) => admission.dropped.push((id, policy, reason)),
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
                .execute(&mut *c)
                .await?;
                sqlx::query(&format!(
                    "UPDATE execution_gate SET waiting = FALSE WHERE execution {}",
                    id_in(dialect, 1)
                ))
                .bind(&set)
                .execute(&mut *c)
                .await?;
            }
            for (id, reason) in &admission.delayed {
                sqlx::query("UPDATE execution SET status_reason = $2 WHERE id = $1")
                    .bind(id)
                    .bind(reason)
                    .execute(&mut *c)
                    .await?;
            }
            for (id, _, reason) in &admission.cancelled {
                sqlx::query(
                    "UPDATE execution SET status = 'cancelled', status_reason = $2, finished_at = $3, \
                     sealed_params = NULL WHERE id = $1",
                )
                .bind(id)
                .bind(reason)
                .bind(now)
                .execute(&mut *c)
                .await?;
            }
            for (id, _, reason) in &admission.dropped {
                sqlx::query(
                    "UPDATE enforcement SET status = 'dropped', reason = $2 \
                     WHERE id = (SELECT enforcement FROM execution WHERE id = $1)",
                )
                .bind(id)
                .bind(reason)
                .execute(&mut *c)
                .await?;
                sqlx::query("DELETE FROM execution WHERE id = $1")
                    .bind(id)
                    .execute(&mut *c)
                    .await?;
            }
            let ended: Vec<i64> = admission
                .cancelled
                .iter()
                .chain(&admission.dropped)
                .map(|(id, ..)| *id)
                .collect();
            if !ended.is_empty() {
                sqlx::query(&format!(
                    "DELETE FROM execution_gate WHERE execution {}",
                    id_in(dialect, 1)
                ))
                .bind(id_array(dialect, &ended))
                .execute(&mut *c)
                .await?;
            }
            admission.waiting = sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM (SELECT 1 FROM execution_gate WHERE waiting LIMIT 1) AS w",
            )
            .fetch_one(&mut *c)
            .await?
                > 0;
            Ok(admission)
        }
    };
}

gate_ops!(insert_gates_sqlite, pass_sqlite, sqlx::SqliteConnection);
gate_ops!(insert_gates_pg, pass_pg, sqlx::PgConnection);

/// The gate operations of a connection, for code written once over both
/// backends.
pub(crate) trait GateConn {
    /// Writes the gates of executions just inserted.
    fn insert_gates(
        &mut self,
        dialect: Dialect,
        items: &[(i64, &[Gate])],
    ) -> impl Future<Output = Result<()>> + Send;
    /// One admission pass (see [`pass_sqlite`]).
    fn admit(
        &mut self,
        dialect: Dialect,
        new: &[i64],
        now: i64,
    ) -> impl Future<Output = Result<Admission>> + Send;
}

/// The [`GateConn`] of one backend's connection type, over its functions.
macro_rules! gate_conn {
    ($conn:ty, $insert:ident, $pass:ident) => {
        impl GateConn for $conn {
            fn insert_gates(
                &mut self,
                dialect: Dialect,
                items: &[(i64, &[Gate])],
            ) -> impl Future<Output = Result<()>> + Send {
                $insert(self, dialect, items)
            }
            fn admit(
                &mut self,
                dialect: Dialect,
                new: &[i64],
                now: i64,
            ) -> impl Future<Output = Result<Admission>> + Send {
                $pass(self, dialect, new, now)
            }
        }
    };
}

gate_conn!(sqlx::SqliteConnection, insert_gates_sqlite, pass_sqlite);
gate_conn!(sqlx::PgConnection, insert_gates_pg, pass_pg);

/// Writes the gates of executions just inserted (`ids` in the order of
/// `runs`) and decides them at once; patches `records` to what was decided
/// and returns what the pass did (`None` when no run has a gate).
pub(crate) async fn gate_new<C: GateConn>(
    c: &mut C,
    dialect: Dialect,
    runs: &[(i64, &[Gate])],
    now: i64,
) -> Result<Option<Admission>> {
    let gated: Vec<(i64, &[Gate])> = runs
        .iter()
        .filter(|(_, g)| !g.is_empty())
        .copied()
        .collect();
    if gated.is_empty() {
        return Ok(None);
    }
    c.insert_gates(dialect, &gated).await?;
    let ids: Vec<i64> = gated.iter().map(|(id, _)| *id).collect();
    Ok(Some(c.admit(dialect, &ids, now).await?))
}

/// Sets the records of executions just inserted to what `admission` made
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
        record.status_reason = None;
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
                sqlx::query(
                    "DELETE FROM execution_gate WHERE NOT EXISTS (SELECT 1 FROM execution e \
                     WHERE e.id = execution_gate.execution AND (e.status IN ('delayed', 'requested', 'scheduled', 'running') \
                     OR (execution_gate.rate_ms > 0 AND e.started_at > $1 - execution_gate.rate_ms)))",
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let admission = if waiting > 0 {
                GateConn::admit(&mut *tx, dialect, &[], now).await?
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
                 GROUP BY g.policy, g.gate_key ORDER BY g.policy, g.gate_key LIMIT 10000",
            )
            .fetch_all(p)
            .await?)
        })
    }
}
