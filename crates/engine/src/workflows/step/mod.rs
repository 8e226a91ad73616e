//! The workflow engine proper: a pure step function from (definition,
//! state, what happened) to (new state, children to start or cancel, the
//! end). It reads no clock and no database, so the conductor can apply each
//! step in one transaction with what caused it, and tests can drive it alone.

mod paused;
mod state;

pub use self::state::{Slot, State, TaskState};

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use super::definition::{Join, MAX_ITEMS, MAX_RUNS, Task, Workflow, expression};
use crate::rules::render::{render, to_template};
use crate::rules::secret_refs::Placeholders;
use crate::rules::template_env;
use attune_runtime::secrets::MASK;
use attune_storage::ExecutionStatus;
use attune_util::units::{millis, parse_duration};

/// A child to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// What it runs.
    pub slot: Slot,
    /// The action.
    pub action: String,
    /// Its parameters, with secrets masked.
    pub params: Value,
    /// Its real parameters, when they use secrets.
    pub real_params: Option<Value>,
    /// Its timeout.
    pub timeout_ms: Option<i64>,
    /// Wait before it may run (a retry's delay).
    pub delay_ms: i64,
    /// What it waits for, when it asks or waits instead of running.
    pub pause: Option<super::pause::Spec>,
}

impl Start {
    /// `name` or `name[item]`.
    pub fn label(&self) -> String {
        match self.slot.item {
            Some(i) => format!("{}[{i}]", self.slot.task),
            None => self.slot.task.clone(),
        }
    }
}

/// How the workflow ended.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    /// succeeded, failed or cancelled.
    pub status: ExecutionStatus,
    /// Its rendered `output`.
    pub result: Option<Value>,
    /// The unhandled error.
    pub error: Option<Value>,
}

/// What a step asks for.
#[derive(Debug, Default)]
pub struct Step {
    /// Children to start.
    pub starts: Vec<Start>,
    /// Children to cancel.
    pub cancel: Vec<i64>,
    /// The workflow's end, when it ended.
    pub end: Option<End>,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildEnd {
    /// Its status.
    pub status: ExecutionStatus,
    /// Its result.
    pub result: Option<Value>,
    /// Its error.
    pub error: Option<Value>,
}

/// Checks a task's rendered parameters against its action: `Err(message)`.
pub type Check<'a> = &'a (dyn Fn(&str, &Value) -> Result<(), String> + Sync);

/// A workflow run being advanced: its definition, input and secrets.
pub struct Machine<'a> {
    /// The definition.
    pub def: &'a Workflow,
    /// The workflow's parameters.
    pub input: &'a Value,
    /// Secrets its task inputs use, by name.
    pub secrets: &'a [(String, zeroize::Zeroizing<String>)],
    /// Which of them each action (by ref) may be handed.
    pub handed: &'a std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    /// Checks parameters against their action.
    pub check: Check<'a>,
}

enum Work {
    Arrive(String),
    Start(String),
    NextItem(String),
    Ended {
        task: String,
        succeeded: bool,
        result: Option<Value>,
        error: Option<Value>,
    },
}

impl Machine<'_> {
    /// Starts the tasks nothing leads to.
    pub fn init(&self, state: &mut State) -> Step {
        let mut step = Step::default();
        let work = self
            .def
            .initial_tasks()
            .into_iter()
            .map(|t| Work::Start(t.to_string()))
            .collect();
        self.run(state, work, &mut step);
        step
    }

    /// Takes in how child `id` ended, adding to `step` (several children's
    /// ends may make one step: the run ends only when nothing runs and
    /// nothing in `step` starts).
    pub fn child_ended(&self, state: &mut State, id: i64, end: ChildEnd, step: &mut Step) {
        let Some(slot) = state.running.remove(&id) else {
            return;
        };
        let mut work = VecDeque::new();
        let failed = end.status != ExecutionStatus::Succeeded;
        let task = &self.def.tasks[&slot.task];
        let retries = task.retry.as_ref().map_or(0, |r| r.count);
        let retryable = matches!(
            end.status,
            ExecutionStatus::Failed | ExecutionStatus::TimedOut | ExecutionStatus::Abandoned
        );
        if failed && retryable && slot.attempt <= retries && state.error.is_none() && !state.ended {
            let delay = task
                .retry
                .as_ref()
                .and_then(|r| r.delay.as_deref())
                .and_then(|d| parse_duration(d).ok())
                .map_or(0, millis);
            let attempt = Slot {
                attempt: slot.attempt + 1,
                ..slot
            };
            match self.child(state, &attempt, delay) {
                Ok(start) => step.starts.push(start),
                Err(error) => work.extend(self.item_or_task_end(state, &attempt, None, error)),
            }
        } else if failed {
            let error = end.error.unwrap_or_else(|| json!(end.status.as_str()));
            work.extend(self.item_or_task_end(state, &slot, None, error));
        } else {
            let result = end.result.unwrap_or(Value::Null);
            work.extend(self.item_or_task_end(state, &slot, Some(result), Value::Null));
        }
        self.run(state, work, step);
    }

    /// Cancels the run: its children are cancelled, nothing new starts.
    pub fn cancel(&self, state: &mut State) -> Step {
        state.ended = true;
        Step {
            starts: vec![],
            cancel: state.running.keys().copied().collect(),
            end: Some(End {
                status: ExecutionStatus::Cancelled,
                result: None,
                error: Some(json!("cancelled")),
            }),
        }
    }

    /// Applies work until none is left, then ends the run if nothing runs.
    fn run(&self, state: &mut State, mut work: VecDeque<Work>, step: &mut Step) {
        while let Some(w) = work.pop_front() {
            match w {
                Work::Arrive(task) => self.arrive(state, &task, &mut work),
                Work::Start(task) => self.start(state, &task, step, &mut work),
                Work::NextItem(task) => {
                    let more = state
                        .tasks
                        .get(&task)
                        .is_some_and(|t| t.next_item < t.items.as_ref().map_or(0, Vec::len));
                    if more && state.error.is_none() && !state.ended {
                        self.next_item(state, &task, step, &mut work);
                    }
                }
                Work::Ended {
                    task,
                    succeeded,
                    result,
                    error,
                } => self.task_ended(state, &task, succeeded, result, error, &mut work),
            }
        }
        if state.running.is_empty() && step.starts.is_empty() && !state.ended {
            state.ended = true;
            step.end = Some(self.end(state));
        }
    }

    fn arrive(&self, state: &mut State, task: &str, work: &mut VecDeque<Work>) {
        let def = &self.def.tasks[task];
        let ts = state.tasks.entry(task.to_string()).or_default();
        if def.join == Some(Join::All) {
            ts.arrivals += 1;
            if ts.arrivals < self.def.inbound(task) {
                if ts.status.is_empty() {
                    ts.status = "waiting".into();
                }
                return;
            }
            ts.arrivals = 0;
        }
        if ts.status == "running" {
            ts.queued += 1;
            return;
        }
        work.push_back(Work::Start(task.to_string()));
    }

    fn start(&self, state: &mut State, task: &str, step: &mut Step, work: &mut VecDeque<Work>) {
        if state.error.is_some() || state.ended {
            return;
        }
        if state.runs >= MAX_RUNS {
            state.error = Some(json!(format!("more than {MAX_RUNS} task runs")));
            return;
        }
        state.runs += 1;
        let def = &self.def.tasks[task];
        {
            let ts = state.tasks.entry(task.to_string()).or_default();
            ts.status = "running".into();
            ts.runs += 1;
            ts.result = None;
            ts.error = None;
            ts.items = None;
            ts.next_item = 0;
            ts.done = 0;
            ts.failed = 0;
        }
        let Some(items) = &def.with_items else {
            let slot = Slot {
                task: task.to_string(),
                item: None,
                attempt: 1,
            };
            match self.child(state, &slot, 0) {
                Ok(start) => step.starts.push(start),
                Err(error) => work.push_back(Work::Ended {
                    task: task.to_string(),
                    succeeded: false,
                    result: None,
                    error: Some(error),
                }),
            }
            return;
        };
        let ctx = self.context(state, None, None);
        let items = match template_env()
            .compile_expression(expression(items))
            .and_then(|e| e.eval(&ctx))
        {
            Ok(v) => serde_json::to_value(&v).unwrap_or(Value::Null),
            Err(e) => Value::String(format!("with_items: {e}")),
        };
        let items = match items {
            Value::Array(items) if items.len() <= MAX_ITEMS => items,
            Value::Array(items) => {
                return work.push_back(failed(
                    task,
                    format!("with_items: {} items; at most {MAX_ITEMS}", items.len()),
                ));
            }
            Value::String(e) if e.starts_with("with_items: ") => {
                return work.push_back(failed(task, e));
            }
            other => {
                return work.push_back(failed(
                    task,
                    format!("with_items: expected a list, got {other}"),
                ));
            }
        };
        let n = items.len();
        let ts = state.tasks.get_mut(task).expect("started above");
        ts.items = Some(items);
        ts.result = Some(Value::Array(vec![Value::Null; n]));
        if n == 0 {
            ts.status = "succeeded".into();
            return work.push_back(Work::Ended {
                task: task.to_string(),
                succeeded: true,
                result: Some(json!([])),
                error: None,
            });
        }
        let at_once = def.concurrency.unwrap_or(1).max(1) as usize;
        for _ in 0..at_once.min(n) {
            self.next_item(state, task, step, work);
        }
    }

    /// Starts the next item of a `with_items` task.
    fn next_item(&self, state: &mut State, task: &str, step: &mut Step, work: &mut VecDeque<Work>) {
        let ts = state.tasks.get_mut(task).expect("a running task");
        let item = ts.next_item;
        ts.next_item += 1;
        let slot = Slot {
            task: task.to_string(),
            item: Some(item),
            attempt: 1,
        };
        match self.child(state, &slot, 0) {
            Ok(start) => step.starts.push(start),
            Err(error) => work.extend(self.item_or_task_end(state, &slot, None, error)),
        }
    }

    /// Renders and checks one child's parameters.
    fn child(&self, state: &State, slot: &Slot, delay_ms: i64) -> Result<Start, Value> {
        let def = &self.def.tasks[&slot.task];
        if let Some(spec) = self.pause(state, def)? {
            return Ok(Start {
                slot: slot.clone(),
                action: spec.action().into(),
                params: spec.params(),
                real_params: None,
                timeout_ms: None,
                delay_ms: 0,
                pause: Some(spec),
            });
        }
        let item = slot.item.map(|i| {
            state.tasks[&slot.task]
                .items
                .as_ref()
                .and_then(|items| items.get(i).cloned())
                .unwrap_or(Value::Null)
        });
        // Secrets render as placeholders and are put in after rendering,
        // whole, into the real params only (see `rules::secret_refs`).
        let handed = self.handed.get(&def.action);
        let placeholders = Placeholders::new(
            self.secrets
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| handed.is_some_and(|h| h.contains(k))),
        );
        let ctx = self.context(state, item.as_ref(), None);
        // Only what this task's action may be handed is bound: another
        // name is undefined here, and the task fails saying so.
        let ctx = if self.secrets.is_empty() {
            ctx
        } else {
            placeholders.bind(&ctx)
        };
        let rendered =
            render(&def.input, &ctx).map_err(|attune_runtime::PathError { path, message }| {
                json!(format!("input{path}: {}", placeholders.mask_text(&message)))
            })?;
        let params = placeholders.masked(&rendered);
        let real_params = if placeholders.is_empty() {
            None
        } else {
            let real = placeholders
                .real(&rendered, |name| {
                    self.secrets
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.as_str())
                })
                .ok_or_else(|| {
                    json!(format!(
                        "input: a secret it hands on is not set, or not granted to the pack of `{}`",
                        def.action
                    ))
                })?;
            (real != params).then_some(real)
        };
        (self.check)(&def.action, &params).map_err(|message| json!(message))?;
        Ok(Start {
            slot: slot.clone(),
            action: def.action.clone(),
            params,
            real_params,
            timeout_ms: def
                .timeout
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
                .map(millis),
            delay_ms,
            pause: None,
        })
    }

    /// What ending `slot` (succeeding with `result`, or failing with
    /// `error` when `result` is `None`) means: an item's end starts the next
    /// item, and the last one ends the task.
    fn item_or_task_end(
        &self,
        state: &mut State,
        slot: &Slot,
        result: Option<Value>,
        error: Value,
    ) -> Option<Work> {
        let succeeded = result.is_some();
        let Some(item) = slot.item else {
            return Some(Work::Ended {
                task: slot.task.clone(),
                succeeded,
                result,
                error: (!succeeded).then_some(error),
            });
        };
        let ts = state.tasks.get_mut(&slot.task).expect("a running task");
        ts.done += 1;
        if let Some(Value::Array(results)) = &mut ts.result
            && let Some(r) = results.get_mut(item)
        {
            *r = result.unwrap_or(Value::Null);
        }
        if !succeeded {
            ts.failed += 1;
            ts.error.get_or_insert(error);
        }
        let total = ts.items.as_ref().map_or(0, Vec::len);
        if ts.done < total {
            return Some(Work::NextItem(slot.task.clone()));
        }
        Some(Work::Ended {
            task: slot.task.clone(),
            succeeded: ts.failed == 0,
            result: ts.result.clone(),
            error: ts.error.clone(),
        })
    }

    fn task_ended(
        &self,
        state: &mut State,
        task: &str,
        succeeded: bool,
        result: Option<Value>,
        error: Option<Value>,
        work: &mut VecDeque<Work>,
    ) {
        {
            let ts = state.tasks.entry(task.to_string()).or_default();
            ts.status = if succeeded { "succeeded" } else { "failed" }.into();
            ts.result = result.clone();
            ts.error = error.clone();
        }
        let def: &Task = &self.def.tasks[task];
        let ctx = self.context(state, None, Some((&result, &error)));
        let mut handled = false;
        for next in &def.next {
            let taken = match next.when.as_deref().map(str::trim) {
                None | Some("always") => Ok(true),
                Some("succeeded") => Ok(succeeded),
                Some("failed") => Ok(!succeeded),
                Some(expr) => template_env()
                    .compile_expression(expression(expr))
                    .and_then(|e| e.eval(&ctx))
                    .map(|v| v.is_true())
                    .map_err(|e| format!("{task}: when `{expr}`: {e}")),
            };
            match taken {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    state.error.get_or_insert(json!(e));
                    continue;
                }
            }
            handled = true;
            for (key, value) in &next.publish {
                match render(value, &ctx) {
                    Ok(v) => {
                        state.vars.insert(key.clone(), v);
                    }
                    Err(attune_runtime::PathError { path, message }) => {
                        state.error.get_or_insert(json!(format!(
                            "{task}: publish {key}{path}: {message}"
                        )));
                    }
                }
            }
            for target in &next.r#do {
                work.push_back(Work::Arrive(target.clone()));
            }
        }
        if !succeeded && !handled {
            state
                .error
                .get_or_insert(error.unwrap_or_else(|| json!(format!("task {task} failed"))));
        }
        let ts = state.tasks.get_mut(task).expect("recorded above");
        if ts.queued > 0 {
            ts.queued -= 1;
            work.push_back(Work::Start(task.to_string()));
        }
    }

    /// The run's end: failed with its unhandled error, or succeeded with
    /// its output.
    fn end(&self, state: &State) -> End {
        if let Some(error) = &state.error {
            return End {
                status: ExecutionStatus::Failed,
                result: None,
                error: Some(error.clone()),
            };
        }
        let Some(output) = &self.def.output else {
            return End {
                status: ExecutionStatus::Succeeded,
                result: Some(Value::Null),
                error: None,
            };
        };
        match render(output, &self.context(state, None, None)) {
            Ok(result) => End {
                status: ExecutionStatus::Succeeded,
                result: Some(result),
                error: None,
            },
            Err(attune_runtime::PathError { path, message }) => End {
                status: ExecutionStatus::Failed,
                result: None,
                error: Some(json!(format!("output{path}: {message}"))),
            },
        }
    }

    /// The template context: `input`, `vars`, `tasks`, and `item`,
    /// `result` and `error` where they apply; `secrets` masked.
    fn context(
        &self,
        state: &State,
        item: Option<&Value>,
        ended: Option<(&Option<Value>, &Option<Value>)>,
    ) -> minijinja::Value {
        let tasks: BTreeMap<&str, Value> = state
            .tasks
            .iter()
            .map(|(name, t)| {
                let results = t.items.as_ref().and(t.result.clone());
                (
                    name.as_str(),
                    json!({"status": t.status, "result": t.result, "error": t.error,
                           "results": results}),
                )
            })
            .collect();
        let (result, error) = ended.unwrap_or((&None, &None));
        let ctx = minijinja::context! {
            input => to_template(self.input),
            vars => to_template(&Value::Object(state.vars.clone())),
            tasks => to_template(&serde_json::to_value(tasks).unwrap_or_default()),
            item => item.map(to_template),
            result => result.as_ref().map(to_template),
            error => error.as_ref().map(to_template),
        };
        if self.secrets.is_empty() {
            return ctx;
        }
        // Only task inputs may hand a secret on; anywhere else a reference
        // (saved before that rule) sees the mask.
        minijinja::context! {
            secrets => self.secrets.iter().map(|(k, _)| (k.clone(), MASK)).collect::<BTreeMap<_, _>>(),
            ..ctx
        }
    }
}

fn failed(task: &str, error: String) -> Work {
    Work::Ended {
        task: task.to_string(),
        succeeded: false,
        result: None,
        error: Some(json!(error)),
    }
}

#[cfg(test)]
mod tests;
