//! Workflows: actions written in YAML whose tasks run as child executions.
//!
//! - [`definition`] — the YAML shape and its checks at upload.
//! - [`step`] — the pure step function: (definition, state, what happened)
//!   → (new state, children to start or cancel, the end).
//! - this module — the conductor, a background task that finds what
//!   happened (a workflow execution to begin, a child that ended, a cancel
//!   asked for), computes the step and applies it in one transaction with
//!   the children it starts and the ends it took in. A step applies only to
//!   the state version it was computed from, so nodes racing for the same
//!   run and a restart after `kill -9` neither lose a step nor apply one
//!   twice.
//!
//! A workflow's own execution is `running` from the start and claimed by
//! no worker; its children go through the same queue, claims, leases,
//! timeouts and records as any execution.

pub mod definition;
pub mod pause;
pub mod step;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use self::definition::MAX_DEPTH;

pub use self::definition::Workflow;
use self::step::{ChildEnd, Machine, State, Step};
use super::{Core, EngineError};
use attune_runtime::validator_errors;
use attune_storage::{
    ActionRecord, ChildEnded, ExecutionRecord, ExecutionStatus, NewExecution, WorkflowStep, now_ms,
};

/// Child ends one pass takes in at most.
const BATCH: i64 = 500;

/// How often the conductor looks for work it was not told about (another
/// node's children ending).
const POLL: Duration = Duration::from_millis(500);

/// The conductor: advances every workflow run, woken when an execution ends
/// in this process and every [`POLL`] otherwise.
pub async fn conductor_task(core: Core) {
    loop {
        let busy = match advance(&core).await {
            Ok(n) => n > 0,
            Err(e) => {
                // A full disk is logged by the storage, once.
                if !e.is_refused() {
                    tracing::error!(error = %e, "advancing workflows");
                }
                false
            }
        };
        if !busy {
            tokio::select! {
                () = core.dispatch.finished.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// One pass: begins new runs, cancels what was asked, takes in ended
/// children and ended sensor polls. Returns how many steps it applied.
pub async fn advance(core: &Core) -> Result<usize, EngineError> {
    let mut steps = 0;
    for run in core.storage.workflows_to_begin(100).await? {
        steps += usize::from(begin(core, &run).await?);
    }
    for id in core.storage.workflows_cancelled().await? {
        steps += usize::from(cancel(core, id).await?);
    }
    let ended = core.storage.children_ended(BATCH).await?;
    let mut by_parent: BTreeMap<i64, Vec<ChildEnded>> = BTreeMap::new();
    for child in ended {
        by_parent.entry(child.parent).or_default().push(child);
    }
    for (parent, children) in by_parent {
        steps += usize::from(take_in(core, parent, children).await?);
    }
    // Sensor polls end like tasks do: their records become events.
    steps += crate::sensors::harvest(core).await?;
    // Asks and waits end on an answer, an event or their deadline.
    steps += crate::inquiries::tick(core).await?;
    Ok(steps)
}

/// What a run needs besides its state: definition, input, secrets, and the
/// parameter validators of the actions its tasks name.
struct Run {
    execution: ExecutionRecord,
    def: Workflow,
    secrets: Vec<(String, Zeroizing<String>)>,
    /// The secrets each task's action may be handed: those its pack is
    /// granted now (a grant one task's pack holds is not another's).
    handed: HashMap<String, std::collections::BTreeSet<String>>,
    actions: HashMap<String, (ActionRecord, Option<jsonschema::Validator>)>,
}

impl Run {
    async fn load(core: &Core, id: i64) -> Result<Option<Self>, EngineError> {
        let Some(execution) = core.storage.get_execution(id).await? else {
            return Ok(None);
        };
        let Some(action) = core.cache.action(&core.storage, &execution.action).await? else {
            return Ok(None);
        };
        let Some(def) = action.workflow.as_ref() else {
            return Ok(None);
        };
        let def: Workflow = serde_json::from_value(def.clone())
            .map_err(|e| EngineError::Internal(anyhow::anyhow!("stored workflow: {e}")))?;
        let mut actions = HashMap::new();
        let mut names = std::collections::BTreeSet::new();
        let mut handed: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
        for task in def.tasks.values().filter(|t| !t.action.is_empty()) {
            let (refs, _) = crate::rules::secret_refs::refs_in_params(&task.input);
            if !actions.contains_key(&task.action)
                && let Some(record) = core.cache.action(&core.storage, &task.action).await?
            {
                let validator = jsonschema::validator_for(&record.params_schema).ok();
                actions.insert(task.action.clone(), (record, validator));
            }
            // A task hands on only what its action's pack is granted now.
            if let Some((record, _)) = actions.get(&task.action)
                && !refs.is_empty()
            {
                let grants = core.cache.grants(&core.storage, &record.pack).await?;
                for name in refs.into_keys() {
                    if grants.grants.secrets.contains(&name) {
                        names.insert(name.clone());
                        handed.entry(task.action.clone()).or_default().insert(name);
                    }
                }
            }
        }
        let mut secrets = Vec::new();
        for name in names {
            if let Some(value) = crate::secrets::reveal(core, &name).await? {
                secrets.push((name, value));
            }
        }
        Ok(Some(Run {
            execution,
            def,
            secrets,
            handed,
            actions,
        }))
    }

    fn check(&self, action: &str, params: &Value) -> Result<(), String> {
        let Some((_, validator)) = self.actions.get(action) else {
            return Err(format!("unknown action `{action}`"));
        };
        let errors = validator
            .as_ref()
            .map(|v| validator_errors(v, params))
            .unwrap_or_default();
        if errors.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the input does not fit `{action}`: {}",
            errors
                .iter()
                .map(|e| format!(
                    "{} {}",
                    if e.path.is_empty() { "/" } else { &e.path },
                    e.message
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }

    /// Applies `step` computed from `state` at `version`; false when the
    /// run moved on meanwhile.
    async fn apply(
        &self,
        core: &Core,
        version: Option<i64>,
        mut state: State,
        step: Step,
        seen: &[i64],
    ) -> Result<bool, EngineError> {
        let now = now_ms();
        // Who may not answer its asks when self-approval is off.
        let requester = if step.starts.iter().any(|s| s.pause.is_some()) {
            crate::executions::causers(core, &self.execution).await?
        } else {
            crate::executions::Causers::default()
        };
        let starts: Vec<NewExecution> = step
            .starts
            .iter()
            .map(|s| {
                if let Some(spec) = &s.pause {
                    return self.pending(now, s, spec, requester);
                }
                let (record, _) = &self.actions[&s.action];
                let sealed = s
                    .real_params
                    .as_ref()
                    .map(|real| crate::secrets::seal_params(core, real, &self.secrets));
                // A key that cannot be rendered limits the task under one
                // shared key: more, never less.
                let gates = crate::policies::gates(record, None, &s.params, true)
                    .unwrap_or_else(|e| {
                        tracing::warn!(execution = self.execution.id, error = %e.message, "a task's policy key");
                        crate::policies::shared_gates(record, true)
                    });
                NewExecution {
                    gates,
                    // Its tasks were caused by what caused the workflow.
                    rule: self.execution.rule.clone(),
                    // Attempts after a lost worker are the workflow's.
                    max_attempts: self.execution.max_attempts,
                    timeout_ms: s.timeout_ms,
                    sealed_params: sealed,
                    parent: Some(self.execution.id),
                    task: Some(s.label()),
                    not_before: if s.delay_ms > 0 { now + s.delay_ms } else { 0 },
                    workflow: record.workflow.is_some(),
                    // Tasks are as deep as their workflow.
                    depth: self.execution.depth,
                    // And traced under it.
                    trace: crate::telemetry::execution_of(&self.execution)
                        .map(|c| crate::telemetry::header(&c)),
                    requested_by: self.execution.requested_by,
                    ..NewExecution::of(&s.action, s.params.clone(), record.capabilities.clone())
                }
            })
            .collect();
        let end = step.end.as_ref().map(|e| {
            let error = e.error.as_ref().map(|v| redact(&self.secrets, v));
            (e.status, e.result.clone(), error)
        });
        let write = WorkflowStep {
            execution: self.execution.id,
            version,
            starts: &starts,
            seen,
            cancel: &step.cancel,
            end,
        };
        let slots: Vec<_> = step.starts.iter().map(|s| s.slot.clone()).collect();
        let applied = core
            .storage
            .apply_workflow_step(&write, |ids| {
                for (id, slot) in ids.iter().zip(slots) {
                    if let Some(t) = state.tasks.get_mut(&slot.task) {
                        t.children.push(*id);
                    }
                    state.running.insert(*id, slot);
                }
                serde_json::to_value(&state).unwrap_or_default()
            })
            .await?;
        let Some(started) = applied else {
            return Ok(false);
        };
        if !started.is_empty() {
            core.metrics
                .executions_requested
                .inc_by(started.len() as u64);
            crate::policies::queued(core, &started);
            core.dispatch.work_queued(&core.storage).await;
        }
        for id in &step.cancel {
            core.dispatch.cancel(*id);
        }
        if !step.cancel.is_empty() {
            // A cancelled task may have held or awaited a policy's slot.
            core.dispatch.slot_freed();
        }
        // A workflow started as a task begins, and one that ended as a task
        // is taken in by its parent, on the next pass.
        if step.end.is_some() || starts.iter().any(|s| s.workflow) {
            core.dispatch.finished.notify_one();
        }
        let mut ended = step.cancel.clone();
        if step.end.is_some() {
            ended.push(self.execution.id);
        }
        crate::executions::announce(core, &ended).await;
        let asks: Vec<(i64, i64)> = started
            .iter()
            .filter(|e| e.action == pause::ASK_ACTION && e.status == ExecutionStatus::Pending)
            .map(|e| (e.id, e.depth))
            .collect();
        if !asks.is_empty() {
            crate::inquiries::opened(core, &asks).await;
        }
        Ok(true)
    }

    /// The execution of a task that asks or waits: `pending`, with what it
    /// waits for.
    fn pending(
        &self,
        now: i64,
        s: &step::Start,
        spec: &pause::Spec,
        requester: crate::executions::Causers,
    ) -> NewExecution {
        NewExecution {
            rule: self.execution.rule.clone(),
            parent: Some(self.execution.id),
            task: Some(s.label()),
            depth: self.execution.depth,
            requested_by: self.execution.requested_by,
            inquiry: Some(attune_storage::NewInquiry {
                kind: spec.kind.clone(),
                spec: serde_json::to_value(spec).unwrap_or_default(),
                trigger: spec.trigger.clone(),
                deadline: spec.timeout_ms.map(|t| now + t),
                requested_by: requester.token,
                rule_by: requester.rule_author,
            }),
            ..NewExecution::of(spec.action(), s.params.clone(), Vec::new())
        }
    }

    fn machine<'a>(&'a self, check: step::Check<'a>) -> Machine<'a> {
        Machine {
            def: &self.def,
            input: &self.execution.params,
            secrets: &self.secrets,
            handed: &self.handed,
            check,
        }
    }
}

/// A workflow execution's progress as the API shows it: each task reached
/// (status, runs, children, error), `vars` and the unhandled error; `None`
/// for an execution that is no workflow (or has not begun).
pub async fn progress(core: &Core, id: i64) -> Result<Option<Value>, EngineError> {
    let Some((stored, _)) = core.storage.workflow_state(id).await? else {
        return Ok(None);
    };
    let state: State = serde_json::from_value(stored).unwrap_or_default();
    let tasks: serde_json::Map<String, Value> = state
        .tasks
        .iter()
        .map(|(name, t)| {
            let mut task = json!({"status": t.status, "runs": t.runs, "children": t.children});
            if let Some(items) = &t.items {
                task["items"] = json!(items.len());
                task["items_done"] = json!(t.done);
                task["items_failed"] = json!(t.failed);
            }
            if let Some(e) = &t.error {
                task["error"] = e.clone();
            }
            (name.clone(), task)
        })
        .collect();
    Ok(Some(json!({
        "tasks": tasks,
        "vars": state.vars,
        "running": state.running.keys().collect::<Vec<_>>(),
        "error": state.error,
        "depth": state.depth,
    })))
}

/// Masks secret values in `v` (an error rendered from a template).
fn redact(secrets: &[(String, Zeroizing<String>)], v: &Value) -> Value {
    if secrets.is_empty() {
        return v.clone();
    }
    let set = attune_runtime::secrets::SecretSet::new([], secrets.iter().cloned());
    let mut v = v.clone();
    set.redact_json(&mut v);
    v
}

async fn begin(core: &Core, execution: &ExecutionRecord) -> Result<bool, EngineError> {
    let Some(run) = Run::load(core, execution.id).await? else {
        return Ok(false);
    };
    let mut state = State::default();
    if let Some(parent) = execution.parent
        && let Some((parent_state, _)) = core.storage.workflow_state(parent).await?
    {
        let parent: State = serde_json::from_value(parent_state).unwrap_or_default();
        state.depth = parent.depth + 1;
    }
    let step = if state.depth > MAX_DEPTH {
        state.ended = true;
        Step {
            end: Some(step::End {
                status: ExecutionStatus::Failed,
                result: None,
                error: Some(json!(format!(
                    "workflows nested deeper than {MAX_DEPTH} levels"
                ))),
            }),
            ..Step::default()
        }
    } else {
        let check = |a: &str, p: &Value| run.check(a, p);
        run.machine(&check).init(&mut state)
    };
    run.apply(core, None, state, step, &[]).await
}

async fn cancel(core: &Core, id: i64) -> Result<bool, EngineError> {
    let Some(run) = Run::load(core, id).await? else {
        return Ok(false);
    };
    let Some((stored, version)) = core.storage.workflow_state(id).await? else {
        return Ok(false);
    };
    let mut state: State = serde_json::from_value(stored).unwrap_or_default();
    let check = |a: &str, p: &Value| run.check(a, p);
    let step = run.machine(&check).cancel(&mut state);
    run.apply(core, Some(version), state, step, &[]).await
}

/// Takes in the ends of `children` of the workflow `parent`, in one step.
async fn take_in(core: &Core, parent: i64, children: Vec<ChildEnded>) -> Result<bool, EngineError> {
    let seen: Vec<i64> = children.iter().map(|c| c.id).collect();
    let run = Run::load(core, parent).await?;
    let stored = core.storage.workflow_state(parent).await?;
    let (Some(run), Some((stored, version))) = (run, stored) else {
        core.storage.mark_children_seen(&seen).await?;
        return Ok(false);
    };
    let mut state: State = serde_json::from_value(stored).unwrap_or_default();
    if state.ended {
        core.storage.mark_children_seen(&seen).await?;
        return Ok(false);
    }
    let check = |a: &str, p: &Value| run.check(a, p);
    let machine = run.machine(&check);
    let mut step = Step::default();
    for child in children {
        let end = ChildEnd {
            status: child.status,
            result: child.result,
            error: child.error,
        };
        machine.child_ended(&mut state, child.id, end, &mut step);
    }
    run.apply(core, Some(version), state, step, &seen).await
}
