//! The rules of admission, as plain Rust over what a pass read: which
//! candidates go through, which wait, which a policy cancels or drops.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::records::OnLimit;

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
    pub execution: i64,
    pub policy: String,
    pub gate_key: String,
    pub status: String,
    pub started_at: Option<i64>,
    pub rate_ms: i64,
}

/// How one key stands while a pass decides.
#[derive(Debug, Default)]
pub(super) struct KeyState {
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
    /// Why `gate` has no room now, if it has none: its limit is reached
    /// (`true`), or earlier executions of its key wait (`false`).
    fn full(&self, gate: &GateRow) -> Option<(String, bool)> {
        if let Some(why) = self.reached(gate) {
            return Some((why, true));
        }
        self.blocked
            .then(|| ("earlier executions of this key wait".into(), false))
    }

    /// Why `gate`'s limit is reached, if it is.
    fn reached(&self, gate: &GateRow) -> Option<String> {
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
pub(super) enum Verdict {
    Admit,
    Wait(String),
    Cancel(String, String),
    Drop(String, String),
}

/// Decides each candidate in order of arrival: admitted while every one of
/// its gates has room; otherwise a new execution is cancelled or dropped
/// when a full gate says so, and waits else (and every later execution of
/// its keys waits behind it).
pub(super) fn decide(
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
        let mut full: Vec<(&GateRow, String, bool)> = Vec::new();
        for g in gates {
            let state = keys
                .entry((g.policy.clone(), g.gate_key.clone()))
                .or_default();
            if let Some((why, reached)) = state.full(g) {
                full.push((g, why, reached));
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
        // Only a limit reached cancels or drops; behind executions that
        // wait for another gate's room, a new one waits its turn.
        let pick = |kind: OnLimit| {
            full.iter()
                .find(|(g, _, reached)| *reached && OnLimit::from_name(&g.on_limit) == kind)
                .map(|(g, why, _)| (g, why))
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
pub(super) fn key_states(holders: &[Holder], now: i64) -> HashMap<(String, String), KeyState> {
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

/// Of `holders`, the executions whose gates are spent: they hold no slot
/// and their start (if any) left the rate window.
pub(super) fn spent(holders: &[Holder], now: i64) -> Vec<i64> {
    let mut ids: Vec<i64> = holders
        .iter()
        .filter(|h| {
            !HOLDING.contains(&h.status.as_str())
                && !h
                    .started_at
                    .is_some_and(|at| h.rate_ms > 0 && at > now - h.rate_ms)
        })
        .map(|h| h.execution)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Decides runs about to be written (`runs[n]`: the gates of run `n`,
/// empty when no policy limits it), from the holders of their keys and the
/// keys where earlier executions wait: per run its verdict (`None` when
/// ungated), and when a rate window next lets one more through.
pub(super) fn plan_new(
    runs: &[&[crate::records::Gate]],
    holders: &[Holder],
    blocked: &[(String, String)],
    now: i64,
) -> (Vec<Option<Verdict>>, Option<i64>) {
    let mut keys = key_states(holders, now);
    for key in blocked {
        keys.entry(key.clone()).or_default().blocked = true;
    }
    // Each run stands in by its place: it is newer than anything stored,
    // and the runs arrive in order.
    let candidates: BTreeMap<i64, Vec<GateRow>> = runs
        .iter()
        .enumerate()
        .filter(|(_, gates)| !gates.is_empty())
        .map(|(n, gates)| {
            let rows = gates
                .iter()
                .map(|g| GateRow {
                    execution: n as i64,
                    policy: g.policy.clone(),
                    gate_key: g.key.clone(),
                    concurrency: g.concurrency,
                    rate_count: g.rate.map(|r| r.0),
                    rate_ms: g.rate.map_or(0, |r| r.1),
                    on_limit: g.on_limit.as_str().to_string(),
                })
                .collect();
            (n as i64, rows)
        })
        .collect();
    let new: HashSet<i64> = candidates.keys().copied().collect();
    let mut verdicts = vec![None; runs.len()];
    for (n, verdict) in decide(&candidates, &new, &mut keys) {
        verdicts[n as usize] = Some(verdict);
    }
    (verdicts, next_due(&keys, &candidates))
}

/// When a rate window next lets one more through a key that blocked.
pub(super) fn next_due(
    keys: &HashMap<(String, String), KeyState>,
    candidates: &BTreeMap<i64, Vec<GateRow>>,
) -> Option<i64> {
    let windows: HashMap<(&str, &str), i64> = candidates
        .values()
        .flatten()
        .map(|g| ((g.policy.as_str(), g.gate_key.as_str()), g.rate_ms))
        .collect();
    keys.iter()
        .filter(|(_, state)| state.blocked)
        .filter_map(|((policy, key), state)| {
            let window = *windows.get(&(policy.as_str(), key.as_str()))?;
            state
                .oldest_recent
                .filter(|_| window > 0)
                .map(|o| o + window)
        })
        .min()
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
    fn plans_new_runs_in_order_behind_holders_and_waiting_keys() {
        use crate::records::{Gate, OnLimit};
        let gate = |key: &str, on_limit| Gate {
            policy: "p.a#1".into(),
            key: key.into(),
            concurrency: Some(1),
            rate: None,
            on_limit,
        };
        let runs = [
            vec![gate("a", OnLimit::Queue)],
            vec![],
            vec![gate("a", OnLimit::Queue)],
            vec![gate("b", OnLimit::Cancel)],
            vec![gate("c", OnLimit::Queue)],
            vec![gate("d", OnLimit::Drop)],
            // Room under its limit, but behind waiting ones: it waits.
            vec![gate("c", OnLimit::Cancel)],
        ];
        let runs: Vec<&[Gate]> = runs.iter().map(Vec::as_slice).collect();
        // `b` is held; executions wait on `c`.
        let holders = vec![Holder {
            execution: 1,
            policy: "p.a#1".into(),
            gate_key: "b".into(),
            status: "running".into(),
            started_at: Some(1),
            rate_ms: 0,
        }];
        let blocked = vec![("p.a#1".to_string(), "c".to_string())];
        let (verdicts, due) = plan_new(&runs, &holders, &blocked, 10);
        assert_eq!(verdicts[0], Some(Verdict::Admit));
        assert_eq!(verdicts[1], None);
        assert!(
            matches!(&verdicts[2], Some(Verdict::Wait(why)) if why.contains("1 of 1 running")),
            "{verdicts:?}"
        );
        assert!(matches!(&verdicts[3], Some(Verdict::Cancel(p, _)) if p == "p.a#1"));
        assert!(
            matches!(&verdicts[4], Some(Verdict::Wait(why)) if why.contains("earlier executions")),
            "{verdicts:?}"
        );
        assert_eq!(verdicts[5], Some(Verdict::Admit));
        assert!(
            matches!(&verdicts[6], Some(Verdict::Wait(_))),
            "{verdicts:?}"
        );
        assert_eq!(due, None);
    }

    #[test]
    fn admits_in_order_per_key_while_there_is_room() {
        let mut candidates = BTreeMap::new();
        for (id, key) in [(1, "a"), (2, "a"), (3, "b"), (4, "a")] {
            candidates.insert(id, vec![gate(id, key, Some(2), "queue")]);
        }
        let holders = vec![Holder {
            execution: 1,
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
    fn gates_are_spent_once_they_hold_no_slot_and_left_every_window() {
        let holder = |execution, status: &str, started_at, rate_ms| Holder {
            execution,
            policy: "p.a#1".into(),
            gate_key: String::new(),
            status: status.into(),
            started_at,
            rate_ms,
        };
        let holders = vec![
            holder(1, "succeeded", Some(100), 0),
            holder(2, "running", Some(100), 0),
            holder(3, "failed", Some(2500), 1000),
            holder(4, "failed", Some(1500), 1000),
            holder(5, "requested", None, 0),
            holder(6, "cancelled", None, 1000),
        ];
        assert_eq!(spent(&holders, 3000), vec![1, 4, 6]);
    }

    #[test]
    fn a_rate_counts_unstarted_admissions_and_recent_starts() {
        let holder = |started_at| Holder {
            execution: 1,
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
