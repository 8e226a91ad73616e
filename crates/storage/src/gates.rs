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

use std::collections::{BTreeMap, HashMap, HashSet};

use super::records::*;
use super::sql::*;
use super::{Dialect, Pool, Result, Storage, StorageError, now_ms};

/// The advisory lock every admission pass on PostgreSQL holds
/// (`pg_advisory_xact_lock`): "attune gates" in ASCII.
const GATE_LOCK: i64 = 0x6174_7475_6e65_6761;

/// Statuses that hold a slot.
const HOLDING: [&str; 3] = ["requested", "scheduled", "running"];

/// One row of `execution_gate`, as a pass reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct GateRow {
    pub execution: i64,
    pub policy: String,
    pub gate_key: String,
    pub concurrency: Option<i64>,
    pub rate_count: Option<i64>,
    pub rate_ms: i64,
    pub on_limit: String,
}

/// A slot-holding (or recently started) execution of a key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Holder {
    pub policy: String,
    pub gate_key: String,
    pub status: String,
    pub started_at: Option<i64>,
    pub rate_ms: i64,
}

/// How one key stands while a pass decides.
#[derive(Debug, Default)]
struct KeyState {
    /// Executions holding a slot.
    active: i64,
    /// Starts inside the rate window, and admitted ones not started yet.
    recent: i64,
    /// The oldest start inside the window.
    oldest_recent: Option<i64>,
    /// An earlier execution of this key waits: later ones wait behind it.
    blocked: bool,
}

impl KeyState {
    /// Why `gate` has no room now, if it has none.
    fn full(&self, gate: &GateRow) -> Option<String> {
        if self.blocked {
            return Some("earlier executions of this key wait".into());
        }
        if let Some(limit) = gate.concurrency
            && self.active >= limit
        {
            return Some(format!("{} of {limit} running", self.active));
        }
        if let Some(limit) = gate.rate_count
            && self.recent >= limit
        {
            return Some(format!(
                "{} of {limit} started in the last {}",
                self.recent,
                attune_util::units::format_duration_ms(gate.rate_ms)
            ));
        }
        None
    }
}

/// What [`decide`] concluded for one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Admit,
    Wait(String),
    Cancel(String, String),
    Drop(String, String),
}

/// Decides each candidate in order of arrival: admitted while every one of
/// its gates has room; otherwise a new execution is cancelled or dropped
/// when a full gate says so, and waits else (and every later execution of
/// its keys waits behind it).
fn decide(
    candidates: &BTreeMap<i64, Vec<GateRow>>,
    new: &HashSet<i64>,
    keys: &mut HashMap<(String, String), KeyState>,
) -> Vec<(i64, Verdict)> {
    let only_new = new;
    let mut out = Vec::new();
    for (id, gates) in candidates {
        // A pass deciding new executions reads only their keys: an older
        // waiting one may also wait on a key it did not read, behind
        // executions it did not see. Only a pass over every key lets those
        // through; this one keeps them, and what follows them, waiting.
        if !only_new.is_empty() && !only_new.contains(id) {
            for g in gates {
                keys.entry((g.policy.clone(), g.gate_key.clone()))
                    .or_default()
                    .blocked = true;
            }
            out.push((*id, Verdict::Wait(String::new())));
            continue;
        }
        let mut full: Vec<(&GateRow, String)> = Vec::new();
        for g in gates {
            let state = keys
                .entry((g.policy.clone(), g.gate_key.clone()))
                .or_default();
            if let Some(why) = state.full(g) {
                full.push((g, why));
            }
        }
        if full.is_empty() {
            for g in gates {
                let state = keys
                    .entry((g.policy.clone(), g.gate_key.clone()))
                    .or_default();
                state.active += 1;
                state.recent += 1;
            }
            out.push((*id, Verdict::Admit));
            continue;
        }
        let reason = |g: &GateRow, why: &str| {
            let key = if g.gate_key.is_empty() {
                String::new()
            } else {
                format!(" (key `{}`)", g.gate_key)
            };
            format!("policy {}{key}: {why}", g.policy)
        };
        let pick = |kind: OnLimit| {
            full.iter()
                .find(|(g, _)| OnLimit::from_name(&g.on_limit) == kind)
        };
        let verdict = if !new.contains(id) {
            Verdict::Wait(reason(full[0].0, &full[0].1))
        } else if let Some((g, why)) = pick(OnLimit::Drop) {
            Verdict::Drop(g.policy.clone(), reason(g, why))
        } else if let Some((g, why)) = pick(OnLimit::Cancel) {
            Verdict::Cancel(g.policy.clone(), reason(g, why))
        } else {
            Verdict::Wait(reason(full[0].0, &full[0].1))
        };
        if matches!(verdict, Verdict::Wait(_)) {
            for g in gates {
                keys.entry((g.policy.clone(), g.gate_key.clone()))
                    .or_default()
                    .blocked = true;
            }
        }
        out.push((*id, verdict));
    }
    out
}

/// The state of every key the candidates' gates name, from their holders.
fn key_states(holders: &[Holder], now: i64) -> HashMap<(String, String), KeyState> {
    let mut keys: HashMap<(String, String), KeyState> = HashMap::new();
    for h in holders {
        let state = keys
            .entry((h.policy.clone(), h.gate_key.clone()))
            .or_default();
        let holding = HOLDING.contains(&h.status.as_str());
        if holding {
            state.active += 1;
        }
        match h.started_at {
            None if holding => state.recent += 1,
            Some(at) if h.rate_ms > 0 && at > now - h.rate_ms => {
                state.recent += 1;
                state.oldest_recent = Some(state.oldest_recent.map_or(at, |o| o.min(at)));
            }
            _ => {}
        }
    }
    keys
}

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
            // When a rate window next lets one more through.
            for ((policy, key), state) in &keys {
                if !state.blocked {
                    continue;
                }
                let window = candidates
                    .values()
                    .flatten()
                    .find(|g| &g.policy == policy && &g.gate_key == key)
                    .map_or(0, |g| g.rate_ms);
                if let Some(oldest) = state.oldest_recent.filter(|_| window > 0) {
                    let due = oldest + window;
                    admission.next_due = Some(admission.next_due.map_or(due, |d: i64| d.min(due)));
                }
            }
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

impl GateConn for sqlx::SqliteConnection {
    fn insert_gates(
        &mut self,
        dialect: Dialect,
        items: &[(i64, &[Gate])],
    ) -> impl Future<Output = Result<()>> + Send {
        insert_gates_sqlite(self, dialect, items)
    }
    fn admit(
        &mut self,
        dialect: Dialect,
        new: &[i64],
        now: i64,
    ) -> impl Future<Output = Result<Admission>> + Send {
        pass_sqlite(self, dialect, new, now)
    }
}

impl GateConn for sqlx::PgConnection {
    fn insert_gates(
        &mut self,
        dialect: Dialect,
        items: &[(i64, &[Gate])],
    ) -> impl Future<Output = Result<()>> + Send {
        insert_gates_pg(self, dialect, items)
    }
    fn admit(
        &mut self,
        dialect: Dialect,
        new: &[i64],
        now: i64,
    ) -> impl Future<Output = Result<Admission>> + Send {
        pass_pg(self, dialect, new, now)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(id: i64, key: &str, concurrency: Option<i64>, on_limit: &str) -> GateRow {
        GateRow {
            execution: id,
            policy: "p.a#1".into(),
            gate_key: key.into(),
            concurrency,
            rate_count: None,
            rate_ms: 0,
            on_limit: on_limit.into(),
        }
    }

    #[test]
    fn admits_in_order_per_key_while_there_is_room() {
        let mut candidates = BTreeMap::new();
        for (id, key) in [(1, "a"), (2, "a"), (3, "b"), (4, "a")] {
            candidates.insert(id, vec![gate(id, key, Some(2), "queue")]);
        }
        let holders = vec![Holder {
            policy: "p.a#1".into(),
            gate_key: "a".into(),
            status: "running".into(),
            started_at: Some(1),
            rate_ms: 0,
        }];
        let mut keys = key_states(&holders, 10);
        let out = decide(&candidates, &HashSet::new(), &mut keys);
        let admitted: Vec<i64> = out
            .iter()
            .filter(|(_, v)| *v == Verdict::Admit)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(admitted, vec![1, 3]);
    }

    #[test]
    fn new_executions_past_the_limit_are_cancelled_or_dropped() {
        let mut candidates = BTreeMap::new();
        candidates.insert(1, vec![gate(1, "", Some(1), "cancel")]);
        candidates.insert(2, vec![gate(2, "", Some(1), "cancel")]);
        candidates.insert(3, vec![gate(3, "", Some(1), "drop")]);
        let new: HashSet<i64> = [1, 2, 3].into();
        let out = decide(&candidates, &new, &mut HashMap::new());
        assert_eq!(out[0].1, Verdict::Admit);
        assert!(
            matches!(&out[1].1, Verdict::Cancel(p, r) if p == "p.a#1" && r.contains("1 of 1 running"))
        );
        assert!(matches!(out[2].1, Verdict::Drop(..)));
    }

    #[test]
    fn a_pass_over_new_executions_leaves_older_waiting_ones_to_the_full_pass() {
        // 2 waits on the shared key, 3 on the shared key and host a; 4 is
        // new on host a: 3 may wait on a key this pass did not read, so
        // neither it nor 4 behind it goes through here.
        let shared = |id| GateRow {
            policy: "rule:p.r#1".into(),
            ..gate(id, "", Some(1), "queue")
        };
        let mut candidates = BTreeMap::new();
        candidates.insert(3, vec![shared(3), gate(3, "a", Some(1), "queue")]);
        candidates.insert(4, vec![gate(4, "a", Some(1), "queue")]);
        let out = decide(&candidates, &[4].into(), &mut HashMap::new());
        assert!(matches!(out[0].1, Verdict::Wait(_)));
        assert!(
            matches!(&out[1].1, Verdict::Wait(r) if r.contains("earlier executions")),
            "{out:?}"
        );
        // The full pass decides both in order.
        let out = decide(&candidates, &HashSet::new(), &mut HashMap::new());
        assert_eq!(out[0].1, Verdict::Admit);
        assert!(matches!(out[1].1, Verdict::Wait(_)));
    }

    #[test]
    fn a_rate_counts_unstarted_admissions_and_recent_starts() {
        let holder = |started_at| Holder {
            policy: "p.a#1".into(),
            gate_key: String::new(),
            status: "succeeded".into(),
            started_at,
            rate_ms: 1000,
        };
        let mut queued = holder(None);
        queued.status = "requested".into();
        let holders = vec![holder(Some(500)), holder(Some(2500)), queued];
        let keys = key_states(&holders, 3000);
        let state = &keys[&("p.a#1".to_string(), String::new())];
        assert_eq!((state.active, state.recent), (1, 2));
        assert_eq!(state.oldest_recent, Some(2500));
    }
}
