//! Policies: at most N executions running at once and at most N started
//! per window, per key rendered from an execution's parameters; set on an
//! action in `pack.toml` (`[[policies]]`) or on a rule (`policies`).
//!
//! Checking happens at save, with paths like every template. Enforcement is
//! the storage's (`execution_gate`): an execution a policy limits is written
//! `delayed` with one gate per policy and let through by admission passes
//! in the database, so nodes sharing a database never exceed a limit. This
//! module renders the keys, runs the pass after executions end, and lists
//! the keys for `GET /policies`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::Core;
use crate::rules::{render, secret_refs, template_env};
use attune_runtime::PathError;
use attune_storage::{
    ActionRecord, ExecutionRecord, ExecutionStatus, Gate, GateCount, OnLimit, Policy, RuleSpec,
};
use attune_util::units::{millis, parse_duration};

/// A policy as `pack.toml` and the API take it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// In `pack.toml`: the action's name in the pack (`deploy`). On a rule:
    /// absent (the rule's action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// At most this many running (or claimed) at once, per key; at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// A template over `params` (`{{ params.host }}`): one limit per value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// At most N started per window, per key: `10/1m`, `5/1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// `queue` (default: wait in order of arrival), `cancel` (the new
    /// execution ends `cancelled`) or `drop` (it is not created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_limit: Option<String>,
}

impl From<&Policy> for PolicyInput {
    fn from(p: &Policy) -> Self {
        PolicyInput {
            action: None,
            concurrency: p.concurrency,
            key: p.key.clone(),
            rate: p.rate.clone(),
            on_limit: Some(p.on_limit.as_str().to_string()),
        }
    }
}

/// Most policies on one action or rule.
pub const MAX_POLICIES: usize = 8;
/// Longest key template.
const MAX_KEY_TEMPLATE: usize = 1024;
/// Longest rendered key kept (longer ones are cut at a character boundary;
/// the parameters they come from never hold a secret's value).
const MAX_KEY: usize = 256;
/// Largest concurrency or rate count.
const MAX_LIMIT: i64 = 1_000_000;
/// Longest rate window.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Parses `N/<duration>`: at most N starts per window.
pub fn parse_rate(rate: &str) -> Result<(i64, i64), String> {
    let bad = || format!("`{rate}` is not a rate like 10/1m or 5/1s");
    let (count, window) = rate.split_once('/').ok_or_else(bad)?;
    let count: i64 = count.trim().parse().map_err(|_| bad())?;
    if !(1..=MAX_LIMIT).contains(&count) {
        return Err(format!("the count must be between 1 and {MAX_LIMIT}"));
    }
    let window = parse_duration(window.trim()).map_err(|e| format!("{}: {e}", bad()))?;
    if window.is_zero() || window > MAX_WINDOW {
        return Err("the window must be longer than zero and at most 24h".into());
    }
    Ok((count, millis(window)))
}

/// Checks `inputs` (at `prefix`, e.g. `/policies`) for an action with
/// `params_schema`; returns what to store or every problem with its path.
/// `on_workers`: the action runs on workers (policies do not apply to
/// workflows, whose tasks they would hold back, nor to sensors).
pub fn check(
    inputs: &[PolicyInput],
    params_schema: &Value,
    on_workers: bool,
    prefix: &str,
) -> Result<Vec<Policy>, Vec<PathError>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    if inputs.len() > MAX_POLICIES {
        errors.push(PathError::new(
            prefix,
            format!("at most {MAX_POLICIES} policies"),
        ));
    }
    if !inputs.is_empty() && !on_workers {
        errors.push(PathError::new(
            prefix,
            "policies limit actions that run on workers, not workflows (put them on \
             the actions of its tasks) or sensors",
        ));
    }
    for (n, input) in inputs.iter().enumerate() {
        let at = |field: &str| format!("{prefix}/{n}{field}");
        let before = errors.len();
        if input.action.is_some() && !prefix.is_empty() {
            errors.push(PathError::new(
                at("/action"),
                "a rule's policies limit its own action; name none",
            ));
        }
        if let Some(c) = input.concurrency
            && !(1..=MAX_LIMIT).contains(&c)
        {
            errors.push(PathError::new(
                at("/concurrency"),
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let rate = input.rate.as_deref().map(parse_rate);
        if let Some(Err(e)) = &rate {
            errors.push(PathError::new(at("/rate"), e.clone()));
        }
        if input.concurrency.is_none() && input.rate.is_none() {
            errors.push(PathError::new(at(""), "set `concurrency`, `rate` or both"));
        }
        let on_limit = match input.on_limit.as_deref() {
            None | Some("queue") => OnLimit::Queue,
            Some("cancel") => OnLimit::Cancel,
            Some("drop") => OnLimit::Drop,
            Some(other) => {
                errors.push(PathError::new(
                    at("/on_limit"),
                    format!("`{other}` is none of queue, cancel, drop"),
                ));
                OnLimit::Queue
            }
        };
        if let Some(key) = &input.key
            && let Err(message) = check_key(key, params_schema)
        {
            errors.push(PathError::new(at("/key"), message));
        }
        if errors.len() == before {
            out.push(Policy {
                concurrency: input.concurrency,
                key: input.key.clone().filter(|k| !k.trim().is_empty()),
                rate: input.rate.clone(),
                on_limit,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A key template: parses, reads no secret, and reads only fields of
/// `params` the action's schema has.
fn check_key(key: &str, params_schema: &Value) -> Result<(), String> {
    if key.len() > MAX_KEY_TEMPLATE {
        return Err(format!("at most {MAX_KEY_TEMPLATE} bytes"));
    }
    let template = template_env()
        .template_from_str(key)
        .map_err(|e| format!("not a valid template: {e}"))?;
    secret_refs::check_no_secrets(key)?;
    for var in template.undeclared_variables(true) {
        let Some(rest) = var
            .strip_prefix("params")
            .filter(|r| r.is_empty() || r.starts_with('.'))
        else {
            return Err(format!(
                "`{var}`: a key reads only the execution's parameters (`params.…`)"
            ));
        };
        let mut schema = params_schema;
        for field in rest.split('.').skip(1) {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                break;
            };
            match props.get(field) {
                Some(next) => schema = next,
                None if schema
                    .get("additionalProperties")
                    .is_some_and(|a| a.as_bool() != Some(false)) =>
                {
                    break;
                }
                None => {
                    let known: Vec<&str> = props.keys().map(String::as_str).collect();
                    return Err(format!(
                        "`{var}`: the action's parameters have no field `{field}` (it has {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The gates an execution of `action` (through `rule`, if any) with
/// `params` (as recorded: secrets masked) passes, with their keys rendered.
/// `task`: a workflow's task, which is never dropped (its workflow waits
/// for every task it started), only cancelled.
pub fn gates(
    action: &ActionRecord,
    rule: Option<&RuleSpec>,
    params: &Value,
    task: bool,
) -> Result<Vec<Gate>, PathError> {
    // Policies limit actions that run on workers; a rule saved while its
    // action was one keeps its policies when a pack upgrade turns the
    // action into a workflow, and they must not hold a workflow back.
    if action.workflow.is_some() || action.sensor {
        return Ok(Vec::new());
    }
    let named = action
        .policies
        .iter()
        .enumerate()
        .map(|(n, p)| (format!("{}#{}", action.r#ref, n + 1), p))
        .chain(rule.into_iter().flat_map(|r| {
            r.policies
                .iter()
                .enumerate()
                .map(move |(n, p)| (format!("rule:{}#{}", r.r#ref, n + 1), p))
        }));
    let mut out = Vec::new();
    let mut ctx = None;
    for (name, policy) in named {
        let key = match &policy.key {
            None => String::new(),
            Some(template) => {
                let ctx = ctx.get_or_insert_with(
                    || minijinja::context! { params => render::to_template(params) },
                );
                let mut key = template_env().render_str(template, &*ctx).map_err(|e| {
                    PathError::new("/params", format!("the key of policy {name}: {e}"))
                })?;
                if key.len() > MAX_KEY {
                    let mut cut = MAX_KEY;
                    while !key.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    key.truncate(cut);
                }
                key
            }
        };
        let on_limit = match policy.on_limit {
            OnLimit::Drop if task => OnLimit::Cancel,
            other => other,
        };
        out.push(Gate {
            policy: name,
            key,
            concurrency: policy.concurrency,
            rate: policy.rate.as_deref().and_then(|r| parse_rate(r).ok()),
            on_limit,
        });
    }
    Ok(out)
}

/// The gates of [`gates`] with every key empty: what limits an execution
/// whose key could not be rendered (more, never less).
pub fn shared_gates(action: &ActionRecord, task: bool) -> Vec<Gate> {
    let mut shared = action.clone();
    shared.policies.iter_mut().for_each(|p| p.key = None);
    gates(&shared, None, &Value::Null, task).unwrap_or_default()
}

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
        core.dispatch.gates.notify_one();
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

/// How often the gates of ended executions are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(5);

/// How often an idle node looks for executions waiting on a policy.
const IDLE_RECHECK: Duration = Duration::from_secs(15);

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
            // stopped); a pass that finds no gate is one read.
            None => IDLE_RECHECK,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = core.dispatch.gates.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"host": {"type": "string"}, "n": {"type": "integer"}}})
    }

    fn input(key: &str) -> PolicyInput {
        PolicyInput {
            concurrency: Some(1),
            key: Some(key.into()),
            ..Default::default()
        }
    }

    #[test]
    fn rates_parse_and_bad_ones_say_why() {
        assert_eq!(parse_rate("10/1m"), Ok((10, 60_000)));
        assert_eq!(parse_rate("5/1s"), Ok((5, 1000)));
        assert!(parse_rate("0/1s").is_err());
        assert!(parse_rate("ten/1s").is_err());
        assert!(parse_rate("5/0s").is_err());
        assert!(parse_rate("5").is_err());
    }

    #[test]
    fn bad_policies_are_refused_with_their_paths() {
        let bad = vec![
            PolicyInput {
                concurrency: Some(0),
                ..Default::default()
            },
            PolicyInput {
                rate: Some("fast".into()),
                on_limit: Some("explode".into()),
                ..Default::default()
            },
            input("{{ params.port }}"),
            input("{{ secrets.token }}"),
            input("{{ event.payload.host }}"),
            PolicyInput::default(),
        ];
        let errors = check(&bad, &schema(), true, "/policies").unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/policies/0/concurrency",
                "/policies/1/rate",
                "/policies/1/on_limit",
                "/policies/2/key",
                "/policies/3/key",
                "/policies/4/key",
                "/policies/5",
            ]
        );
        assert!(errors[3].message.contains("no field `port`"), "{errors:?}");
    }

    #[test]
    fn keys_render_from_params_and_tasks_are_never_dropped() {
        let policies = check(
            &[PolicyInput {
                on_limit: Some("drop".into()),
                ..input("{{ params.host }}")
            }],
            &schema(),
            true,
            "/policies",
        )
        .unwrap();
        let action = ActionRecord {
            r#ref: "ops.deploy".into(),
            pack: "ops".into(),
            name: "deploy".into(),
            component: String::new(),
            params_schema: schema(),
            result_schema: json!({}),
            error_schema: None,
            capabilities: vec![],
            description: None,
            workflow: None,
            sensor: false,
            policies,
        };
        let g = gates(&action, None, &json!({"host": "web-1"}), false).unwrap();
        assert_eq!(g[0].policy, "ops.deploy#1");
        assert_eq!(g[0].key, "web-1");
        assert_eq!(g[0].on_limit, OnLimit::Drop);
        let g = gates(&action, None, &json!({"host": "web-1"}), true).unwrap();
        assert_eq!(g[0].on_limit, OnLimit::Cancel);
        assert!(check(&[input("{{ params.host }}")], &schema(), false, "/p").is_err());
    }
}
