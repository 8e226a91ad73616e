//! Policies as they stand now: the admission task each node runs, the
//! wake-ups it takes, `GET /policies` and the policy metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::PolicyInput;
use crate::Core;
use attune_storage::{ExecutionRecord, ExecutionStatus, GateCount, Policy};
use attune_util::units::millis;

/// One policy as `GET /policies` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyView {
    /// Its name: `<action ref>#<n>` or `rule:<rule ref>#<n>`.
    pub name: String,
    /// The action it limits.
    pub action: String,
    /// The rule it is on, if it is a rule's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The policy as written.
    pub policy: PolicyInput,
    /// Each key with executions holding a slot or waiting, with both counts.
    pub keys: Vec<KeyCount>,
}

/// How one key of a policy stands now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyCount {
    /// The rendered key (`""` without a key template).
    pub key: String,
    /// Executions holding a slot: queued for a worker, claimed or running.
    pub running: i64,
    /// Executions waiting (`delayed`).
    pub waiting: i64,
}

/// Every policy of every action and rule, with its current count per key
/// (a policy changed since keeps the counts of the executions created
/// under it until they end).
pub async fn list(core: &Core) -> Result<Vec<PolicyView>, crate::EngineError> {
    let mut views: BTreeMap<String, PolicyView> = BTreeMap::new();
    let page = |after: String| attune_storage::Page {
        limit: Some(attune_storage::MAX_PAGE),
        after: Some(after),
    };
    let mut after = String::new();
    loop {
        let actions = core
            .storage
            .list_actions(None, &page(after.clone()))
            .await?;
        for a in &actions {
            for (n, p) in a.policies.iter().enumerate() {
                let name = format!("{}#{}", a.r#ref, n + 1);
                views.insert(name.clone(), view(name, &a.r#ref, None, p));
            }
        }
        match actions.last() {
            Some(last) if actions.len() as i64 == attune_storage::MAX_PAGE => {
                after = last.r#ref.clone()
            }
            _ => break,
        }
    }
    let mut after = String::new();
    loop {
        let rules = core
            .storage
            .list_rules(&Default::default(), &page(after.clone()))
            .await?;
        for r in &rules {
            for (n, p) in r.spec.policies.iter().enumerate() {
                let name = format!("rule:{}#{}", r.spec.r#ref, n + 1);
                views.insert(
                    name.clone(),
                    view(name, &r.spec.action, Some(&r.spec.r#ref), p),
                );
            }
        }
        match rules.last() {
            Some(last) if rules.len() as i64 == attune_storage::MAX_PAGE => {
                after = last.spec.r#ref.clone()
            }
            _ => break,
        }
    }
    for GateCount {
        policy,
        key,
        running,
        waiting,
    } in core.storage.gate_counts().await?
    {
        if let Some(v) = views.get_mut(&policy) {
            v.keys.push(KeyCount {
                key,
                running,
                waiting,
            });
        }
    }
    Ok(views.into_values().collect())
}

fn view(name: String, action: &str, rule: Option<&str>, p: &Policy) -> PolicyView {
    PolicyView {
        name,
        action: action.to_string(),
        rule: rule.map(str::to_string),
        policy: p.into(),
        keys: Vec::new(),
    }
}

/// Brings the policy metrics up to date before a scrape: the gauges from
/// the database (all nodes), the counters from this node's storage.
pub async fn refresh_metrics(core: &Core) {
    use crate::metrics::PolicyLabels;
    let m = &core.metrics;
    let label = |policy: &str| PolicyLabels {
        policy: policy.to_string(),
    };
    for (policy, (cancelled, dropped)) in core.storage.policy_outcomes() {
        let c = m.policy_cancelled.get_or_create(&label(&policy));
        c.inc_by(cancelled.saturating_sub(c.get()));
        let d = m.policy_dropped.get_or_create(&label(&policy));
        d.inc_by(dropped.saturating_sub(d.get()));
    }
    let counts = match core.storage.gate_counts().await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "reading policy counts for metrics");
            return;
        }
    };
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for c in counts {
        let t = totals.entry(c.policy).or_default();
        t.0 += c.running;
        t.1 += c.waiting;
    }
    let mut seen = m.policies_seen.lock().unwrap_or_else(|e| e.into_inner());
    for gone in seen.iter().filter(|p| !totals.contains_key(*p)) {
        m.policy_running.get_or_create(&label(gone)).set(0);
        m.policy_waiting.get_or_create(&label(gone)).set(0);
    }
    seen.clear();
    for (policy, (running, waiting)) in totals {
        m.policy_running.get_or_create(&label(&policy)).set(running);
        m.policy_waiting.get_or_create(&label(&policy)).set(waiting);
        seen.insert(policy);
    }
}

/// Wakes this node's admission task when executions just queued wait for
/// a policy (a rate window's end is then its to watch); when a policy
/// cancelled one at once, its workflow takes it in and it is announced
/// like any ended execution.
pub fn queued<'a>(core: &Core, records: impl IntoIterator<Item = &'a ExecutionRecord>) {
    let mut waiting = false;
    let mut cancelled = Vec::new();
    for r in records {
        waiting |= r.status == ExecutionStatus::Delayed;
        if r.status == ExecutionStatus::Cancelled {
            cancelled.push(r.id);
        }
    }
    if waiting {
        core.dispatch.now_waiting();
    }
    if !cancelled.is_empty() {
        core.dispatch.finished.notify_one();
        // On its own task: the event door may be what queued them, and
        // an announcement goes through it.
        let core = core.clone();
        tokio::spawn(async move { crate::executions::announce(&core, &cancelled).await });
    }
}

/// Longest an admission pass waits while executions wait: a slot freed on
/// another node, or a start leaving a window, is seen within this.
const RECHECK: Duration = Duration::from_secs(1);

/// How often the gates of ended executions are forgotten (those a decision
/// on their key did not forget first), and how often a node with nothing
/// waiting looks for executions waiting on a policy.
const FORGET_EVERY: Duration = Duration::from_secs(5);

/// Lets waiting executions through when slots free: after executions that
/// held one end (here or, within [`RECHECK`], on another node), and when a
/// rate window moves on.
pub async fn admission_task(core: Core) {
    let mut waiting = true;
    let mut next_due: Option<i64> = None;
    let mut forgotten = tokio::time::Instant::now();
    loop {
        // Ended executions' gates are forgotten now and then, not after
        // each end: a table of gates a few seconds old costs less than a
        // delete per batch of results.
        let forget = forgotten.elapsed() >= FORGET_EVERY;
        if forget {
            forgotten = tokio::time::Instant::now();
        }
        match core.storage.admit_waiting(forget).await {
            Ok(a) => {
                waiting = a.waiting;
                core.dispatch.gates_seen(waiting);
                next_due = a.next_due;
                if !a.admitted.is_empty() {
                    core.dispatch.work_queued(&core.storage).await;
                }
            }
            Err(e) if e.is_refused() => {}
            Err(e) => tracing::error!(error = %e, "admitting delayed executions"),
        }
        let wait = match next_due {
            Some(due) => Duration::from_millis(
                (due - attune_storage::now_ms()).clamp(1, millis(RECHECK)) as u64,
            ),
            None if waiting => RECHECK,
            // Idle: another node may have left executions waiting (and
            // stopped), and ended executions leave gates to forget; a pass
            // that finds no gate is one read.
            None => FORGET_EVERY,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = core.dispatch.gates.notified() => {}
        }
    }
}
