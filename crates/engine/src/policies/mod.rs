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

mod live;

use std::time::Duration;

pub use live::{KeyCount, PolicyView, admission_task, list, queued, refresh_metrics};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::rules::{render, secret_refs, template_env};
use attune_runtime::PathError;
use attune_storage::{ActionRecord, Gate, OnLimit, Policy, RuleSpec};
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
            Some(template) if let Some(key) = plain_key(template, params) => key,
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

/// The key of a template that is only `{{ params.a.b }}` over a string or
/// an integer, read straight from `params`: what the template renders to,
/// without compiling it for every execution (the common key, on the path
/// every event takes). `None` for any other template or value, which
/// minijinja renders.
fn plain_key(template: &str, params: &Value) -> Option<String> {
    let inner = template.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let mut value = params;
    for part in inner.strip_prefix("params.")?.split('.') {
        let name = part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name {
            return None;
        }
        value = value.as_object()?.get(part)?;
    }
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The gates of [`gates`] with every key empty: what limits an execution
/// whose key could not be rendered (more, never less).
pub fn shared_gates(action: &ActionRecord, task: bool) -> Vec<Gate> {
    let mut shared = action.clone();
    shared.policies.iter_mut().for_each(|p| p.key = None);
    gates(&shared, None, &Value::Null, task).unwrap_or_default()
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

    #[test]
    fn a_plain_key_renders_as_its_template_would() {
        let params = json!({
            "host": "db-1", "n": 42, "big": 18446744073709551615u64, "f": 1.5, "b": true,
            "nested": {"name": "x <y> & 'z'"}, "empty": "", "list": [1], "nothing": null,
        });
        let by_template = |t: &str| {
            let ctx = minijinja::context! { params => render::to_template(&params) };
            template_env().render_str(t, ctx).ok()
        };
        for t in [
            "{{ params.host }}",
            "{{params.n}}",
            "{{ params.big }}",
            "{{ params.nested.name }}",
            "{{ params.empty }}",
            "{{ params.f }}",
            "{{ params.b }}",
            "{{ params.list }}",
            "{{ params.nothing }}",
            "{{ params.missing }}",
            "{{ params.host | upper }}",
            "{{ params.host }}-{{ params.n }}",
            "{{- params.host -}}",
            "{{ params.1 }}",
            "x{{ params.host }}",
            "{{ params.nested }}",
        ] {
            if let Some(fast) = plain_key(t, &params) {
                assert_eq!(Some(fast), by_template(t), "{t}");
            }
        }
        assert_eq!(
            plain_key("{{ params.host }}", &params).as_deref(),
            Some("db-1")
        );
        assert_eq!(plain_key("{{params.n}}", &params).as_deref(), Some("42"));
        assert_eq!(
            plain_key("{{ params.nested.name }}", &params).as_deref(),
            Some("x <y> & 'z'")
        );
        assert_eq!(plain_key("{{ params.f }}", &params), None);
        assert_eq!(plain_key("{{ params.host | upper }}", &params), None);
        assert_eq!(plain_key("{{ params.host }}-{{ params.n }}", &params), None);
    }
}
