//! A workflow's definition (`workflows/<name>.yaml` in a pack) and its checks
//! at upload: every problem with its path, nothing stored until all hold.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::rules::{find_templates, is_template, secret_refs, template_env};
use attune_runtime::PathError;
use attune_util::units::parse_duration;

/// Tasks one definition may hold.
pub const MAX_TASKS: usize = 200;
/// Task runs one workflow run may start (items of `with_items` not counted).
pub const MAX_RUNS: u32 = 1_000;
/// Items one `with_items` may hold.
pub const MAX_ITEMS: usize = 10_000;
/// How deep workflows may call workflows.
pub const MAX_DEPTH: u32 = 5;
/// Most attempts a task's `retry` may add.
pub const MAX_RETRIES: u32 = 10;

/// A workflow: its input schema, its tasks and what it returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of its parameters (an object).
    #[serde(default = "object_schema")]
    pub input: Value,
    /// Its tasks by name.
    pub tasks: BTreeMap<String, Task>,
    /// Its result, rendered when it succeeds.
    #[serde(default)]
    pub output: Option<Value>,
}

/// One task: an action run with templated input (or an `ask` or a
/// `wait`, see [`super::pause`]), and where to go next.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// The action's ref (a workflow's too); empty for `ask` and `wait`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// Asks a person, and waits for the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask: Option<super::pause::Ask>,
    /// Waits for an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<super::pause::Wait>,
    /// Its parameters; strings may be templates.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// An expression giving a list: one run per item (`{{ item }}`).
    #[serde(default)]
    pub with_items: Option<String>,
    /// Items run at once (default 1 with `with_items`).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// `all`: start only once every incoming branch has arrived.
    #[serde(default)]
    pub join: Option<Join>,
    /// Runs again when it fails or times out.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Timeout of each run, like `60s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Transitions, checked in order once it ends.
    #[serde(default)]
    pub next: Vec<Transition>,
}

/// How a task joins its incoming branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Join {
    /// Wait for every task with a transition to this one.
    All,
}

/// A task's retry policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Further attempts after the first.
    pub count: u32,
    /// Wait before each, like `5s`.
    #[serde(default)]
    pub delay: Option<String>,
}

/// Where a task goes when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// `succeeded`, `failed`, `always` (the default) or an expression over
    /// `result`, `error`, `vars`, `input` and `tasks`.
    #[serde(default)]
    pub when: Option<String>,
    /// Values to set in `vars`.
    #[serde(default)]
    pub publish: BTreeMap<String, Value>,
    /// Tasks to go to.
    #[serde(default, rename = "do", deserialize_with = "one_or_many")]
    pub r#do: Vec<String>,
}

impl Transition {
    /// Whether nothing can stop this transition from being taken.
    fn unconditional(&self) -> bool {
        matches!(self.when.as_deref().map(str::trim), None | Some("always"))
    }
}

fn object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// What the checks need to know about an action a task names.
pub trait Actions {
    /// The parameter schema of `action`, `None` when there is no such action.
    fn params_schema(&self, action: &str) -> Option<Value>;
    /// The trigger type `r#ref`, `None` when there is no such trigger.
    fn trigger(&self, _ref: &str) -> Option<attune_storage::TriggerTypeRecord> {
        None
    }
}

impl Workflow {
    /// Parses YAML text.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        serde_norway::from_str(text).map_err(|e| PathError::new("", e.to_string()))
    }

    /// Tasks no transition leads to: they start the workflow.
    pub fn initial_tasks(&self) -> Vec<&str> {
        let targets = self.targets();
        self.tasks
            .keys()
            .filter(|t| !targets.contains(t.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// How many distinct tasks have a transition to `task` (what `join: all`
    /// waits for).
    pub fn inbound(&self, task: &str) -> u32 {
        self.tasks
            .values()
            .filter(|t| t.next.iter().any(|n| n.r#do.iter().any(|d| d == task)))
            .count() as u32
    }

    fn targets(&self) -> HashSet<&str> {
        self.tasks
            .values()
            .flat_map(|t| {
                t.next
                    .iter()
                    .flat_map(|n| n.r#do.iter().map(String::as_str))
            })
            .collect()
    }

    /// Every problem of the definition, each with its path inside it.
    pub fn check(&self, actions: &dyn Actions) -> Vec<PathError> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push(PathError::new(path, message));
        if self.input.get("type").and_then(Value::as_str) != Some("object") {
            err(
                "/input/type".into(),
                "the input schema must be of type `object`".into(),
            );
        }
        if let Err(e) = jsonschema::validator_for(&self.input) {
            err("/input".into(), format!("not a valid JSON Schema: {e}"));
        }
        if self.tasks.is_empty() {
            err("/tasks".into(), "a workflow needs at least one task".into());
        }
        if self.tasks.len() > MAX_TASKS {
            err("/tasks".into(), format!("more than {MAX_TASKS} tasks"));
        }
        for (name, task) in &self.tasks {
            let at = format!("/tasks/{}", pointer(name));
            if !valid_task_name(name) {
                err(
                    at.clone(),
                    "a task name is letters, digits, `_` or `-`".into(),
                );
            }
            task.check(&at, &self.tasks, actions, &mut err);
        }
        if let Some(output) = &self.output {
            find_templates(output, &mut HashSet::new(), &mut |p, m| {
                err(format!("/output{p}"), m)
            });
            no_secrets(output, "/output", &mut err);
        }
        if !self.tasks.is_empty() {
            self.check_graph(&mut err);
        }
        errors
    }

    /// Something must start, every task must be reachable, and a cycle must
    /// have a way out (a condition on one of its transitions).
    fn check_graph(&self, err: &mut impl FnMut(String, String)) {
        let initial = self.initial_tasks();
        if initial.is_empty() {
            err(
                "/tasks".into(),
                "every task is the target of a transition, so none starts".into(),
            );
            return;
        }
        let mut reached: BTreeSet<&str> = initial.iter().copied().collect();
        let mut todo: Vec<&str> = initial;
        while let Some(t) = todo.pop() {
            for next in self.tasks[t].next.iter().flat_map(|n| &n.r#do) {
                if self.tasks.contains_key(next) && reached.insert(next) {
                    todo.push(next);
                }
            }
        }
        for name in self.tasks.keys() {
            if !reached.contains(name.as_str()) {
                err(
                    format!("/tasks/{}", pointer(name)),
                    "unreachable: no path from a starting task leads here".into(),
                );
            }
        }
        // A cycle of unconditional transitions never ends.
        let edges: BTreeMap<&str, Vec<&str>> = self
            .tasks
            .iter()
            .map(|(name, t)| {
                let next = t
                    .next
                    .iter()
                    .filter(|n| n.unconditional())
                    .flat_map(|n| n.r#do.iter().map(String::as_str))
                    .filter(|d| self.tasks.contains_key(*d))
                    .collect();
                (name.as_str(), next)
            })
            .collect();
        if let Some(cycle) = find_cycle(&edges) {
            err(
                format!("/tasks/{}/next", pointer(cycle[0])),
                format!(
                    "the cycle {} has no condition that could end it",
                    cycle.join(" → ")
                ),
            );
        }
    }
}

impl Task {
    fn check(
        &self,
        at: &str,
        tasks: &BTreeMap<String, Task>,
        actions: &dyn Actions,
        err: &mut impl FnMut(String, String),
    ) {
        if super::pause::check_task(self, at, actions, err) {
            return self.check_next(at, tasks, err);
        }
        let mut templated = HashSet::new();
        find_templates(&self.input, &mut templated, &mut |p, m| {
            err(format!("{at}/input{p}"), m)
        });
        if !self.input.is_object() {
            err(format!("{at}/input"), "expected an object".into());
        }
        match actions.params_schema(&self.action) {
            None => err(
                format!("{at}/action"),
                format!("unknown action `{}`", self.action),
            ),
            Some(schema) if self.input.is_object() => {
                for e in attune_runtime::schema_errors(&schema, &self.input) {
                    // A template's value is known only when the task starts.
                    if !templated.iter().any(|t| e.path.starts_with(t.as_str())) {
                        err(format!("{at}/input{}", e.path), e.message);
                    }
                }
                let (refs, misuse) = secret_refs::refs_in_params(&self.input);
                for e in misuse {
                    err(format!("{at}/input{}", e.path), e.message);
                }
                for path in refs.values().flatten() {
                    if !secret_refs::takes_any_string(&schema, path) {
                        err(
                            format!("{at}/input{path}"),
                            format!(
                                "this parameter of `{}` checks what a string holds, so whether \
                                 it fits would depend on the secret's value; {}",
                                self.action,
                                secret_refs::ALLOWED
                            ),
                        );
                    }
                }
            }
            Some(_) => {}
        }
        if let Some(items) = &self.with_items
            && let Err(e) = compile_expression(items)
                .and_then(|()| secret_refs::check_expression(expression(items)))
        {
            err(format!("{at}/with_items"), e);
        }
        match (self.concurrency, &self.with_items) {
            (Some(0), _) => err(format!("{at}/concurrency"), "must be at least 1".into()),
            (Some(_), None) => err(
                format!("{at}/concurrency"),
                "only a task with `with_items` has a concurrency".into(),
            ),
            _ => {}
        }
        if let Some(retry) = &self.retry {
            if retry.count > MAX_RETRIES {
                err(
                    format!("{at}/retry/count"),
                    format!("at most {MAX_RETRIES}"),
                );
            }
            if let Some(Err(e)) = retry.delay.as_deref().map(parse_duration) {
                err(format!("{at}/retry/delay"), e);
            }
        }
        match self.timeout.as_deref().map(parse_duration) {
            Some(Err(e)) => err(format!("{at}/timeout"), e),
            Some(Ok(d)) if d.is_zero() => {
                err(format!("{at}/timeout"), "must be greater than zero".into())
            }
            _ => {}
        }
        self.check_next(at, tasks, err);
    }

    fn check_next(
        &self,
        at: &str,
        tasks: &BTreeMap<String, Task>,
        err: &mut impl FnMut(String, String),
    ) {
        for (n, next) in self.next.iter().enumerate() {
            let at = format!("{at}/next/{n}");
            if let Some(when) = next.when.as_deref().map(str::trim)
                && !matches!(when, "succeeded" | "failed" | "always")
                && let Err(e) = compile_expression(when)
                    .and_then(|()| secret_refs::check_expression(expression(when)))
            {
                err(format!("{at}/when"), e);
            }
            for (key, value) in &next.publish {
                let at = format!("{at}/publish/{}", pointer(key));
                find_templates(value, &mut HashSet::new(), &mut |p, m| {
                    err(format!("{at}{p}"), m)
                });
                no_secrets(value, &at, err);
            }
            for (i, target) in next.r#do.iter().enumerate() {
                if !tasks.contains_key(target) {
                    err(
                        format!("{at}/do/{i}"),
                        format!("no task `{target}` in this workflow"),
                    );
                }
            }
        }
    }
}

/// Reports every template in `v` that reads a secret: only a task's input
/// may hand one on.
fn no_secrets(v: &Value, at: &str, err: &mut impl FnMut(String, String)) {
    for (path, text) in crate::rules::template_strings(v) {
        if let Err(e) = secret_refs::check_no_secrets(&text)
            && !e.starts_with("not a valid template")
        {
            err(format!("{at}{path}"), e);
        }
    }
}

/// An expression, written bare or as `{{ … }}`.
pub fn expression(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .map_or(t, str::trim)
}

fn compile_expression(text: &str) -> Result<(), String> {
    if !is_template(text) && text.trim().is_empty() {
        return Err("empty expression".into());
    }
    template_env()
        .compile_expression(expression(text))
        .map(|_| ())
        .map_err(|e| format!("not a valid expression: {e}"))
}

fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `name` as one JSON-pointer segment.
fn pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A cycle in `edges`, as the tasks on it, if there is one.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    // Depth-first search with colours: 1 on the current path, 2 finished.
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        colour.insert(node, 1);
        path.push(node);
        for &next in edges.get(node).into_iter().flatten() {
            match colour.get(next).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|n| *n == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, edges, colour, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        colour.insert(node, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for &node in edges.keys() {
        if colour.get(node).copied().unwrap_or(0) == 0
            && let Some(c) = visit(node, edges, &mut colour, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Known;

    impl Actions for Known {
        fn params_schema(&self, action: &str) -> Option<Value> {
            (action == "core.echo").then(|| {
                json!({"type": "object", "properties": {"message": {"type": "string"}},
                       "required": ["message"], "additionalProperties": false})
            })
        }
    }

    fn problems(yaml: &str) -> Vec<(String, String)> {
        Workflow::parse(yaml)
            .unwrap()
            .check(&Known)
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect()
    }

    #[test]
    fn a_sound_workflow_has_no_problems_and_starts_where_nothing_leads() {
        let yaml = r#"
input: {type: object, properties: {who: {type: string}}}
tasks:
  hello:
    action: core.echo
    input: {message: "hi {{ input.who }}"}
    next:
      - when: succeeded
        publish: {greeted: "{{ result }}"}
        do: bye
      - {when: failed, do: [oops]}
  bye: {action: core.echo, input: {message: bye}}
  oops: {action: core.echo, input: {message: "{{ error }}"}}
output: {said: "{{ vars.greeted }}"}
"#;
        assert_eq!(problems(yaml), Vec::<(String, String)>::new());
        let wf = Workflow::parse(yaml).unwrap();
        assert_eq!(wf.initial_tasks(), ["hello"]);
        assert_eq!(wf.inbound("bye"), 1);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let found = problems(
            r#"
tasks:
  a:
    action: core.echo
    input: {message: 5, extra: "{{ bad"}
    concurrency: 2
    retry: {count: 99, delay: soon}
    next:
      - {when: "result ==", do: [b, nope]}
  b: {action: ops.missing}
  c: {action: core.echo, input: {message: x}, next: [{do: d}]}
  d: {action: core.echo, input: {message: x}, next: [{do: c}]}
"#,
        );
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        for expected in [
            "/tasks/a/input/extra",
            "/tasks/a/input/message",
            "/tasks/a/concurrency",
            "/tasks/a/retry/count",
            "/tasks/a/retry/delay",
            "/tasks/a/next/0/when",
            "/tasks/a/next/0/do/1",
            "/tasks/b/action",
            "/tasks/c",
        ] {
            assert!(paths.contains(&expected), "{expected} in {found:?}");
        }
        assert!(
            found
                .iter()
                .any(|(p, m)| p.ends_with("/next") && m.contains("cycle")),
            "{found:?}"
        );
    }

    #[test]
    fn a_loop_with_a_condition_may_end() {
        let yaml = r#"
tasks:
  start: {action: core.echo, input: {message: go}, next: [{do: poll}]}
  poll:
    action: core.echo
    input: {message: again}
    next: [{when: "tasks.poll.result != 'done'", do: poll}]
"#;
        assert_eq!(problems(yaml), Vec::<(String, String)>::new());
    }
}
