//! Rules: what they look like on the way in, and their validation at save time.
//!
//! A rule is checked completely before it is stored: its trigger type exists
//! and `trigger_params` fit that type's schema; `criteria` compiles as an
//! expression; its action exists; every template in `action_params` parses;
//! and every literal in `action_params` fits the action's parameter schema,
//! derived from WIT. Every problem is reported at once with its JSON path.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub mod evaluate;
pub mod render;
pub mod save;
pub mod secret_refs;

use crate::triggers::schedule::plan;
use attune_runtime::{PathError, schema_errors};
use attune_storage::{RuleSpec, TriggerTypeRecord};
use attune_util::units::{millis, parse_duration};

/// A rule as the API and `rule.yaml` take it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// `<pack>.<name>`, unique.
    #[serde(rename = "ref")]
    #[schema(rename = "ref")]
    pub r#ref: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Trigger type ref, e.g. `core.interval`.
    pub trigger: String,
    /// Parameters of the trigger, checked against the trigger type's schema.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub trigger_params: Value,
    /// Expression over `event`, e.g. `event.payload.count > 0`.
    #[serde(default)]
    pub criteria: Option<String>,
    /// Action ref, e.g. `core.echo`.
    pub action: String,
    /// Parameters for the action; a string may be a template like `{{ event.payload.host }}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub action_params: Value,
    /// Whether it fires (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Execution timeout, e.g. `30s`; the server default when absent.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Attempts per execution (1-10, default 1): a run whose worker vanishes
    /// is retried with exponential backoff until they are used up.
    #[serde(default)]
    pub max_attempts: Option<i64>,
    /// Concurrency and rate policies on its executions (beside its
    /// action's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<crate::policies::PolicyInput>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn yes() -> bool {
    true
}

/// Whether a string holds template syntax.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Instructions one criteria expression or one template may take: ample
/// for any real rule, and a loop that would stall event intake ends with
/// an error in well under a millisecond instead.
pub const TEMPLATE_FUEL: u64 = 50_000;

/// The template environment rules use (strict about undefined values,
/// bounded by [`TEMPLATE_FUEL`]), built once: events are rendered on the
/// hot path.
pub fn template_env() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        // `{{ (result.body | fromjson).id }}`: JSON text (an HTTP body) as a value.
        env.add_filter(
            "fromjson",
            |text: &str| -> Result<minijinja::Value, minijinja::Error> {
                serde_json::from_str::<serde_json::Value>(text)
                    .map(|v| render::to_template(&v))
                    .map_err(|e| {
                        minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            format!("fromjson: not JSON: {e}"),
                        )
                    })
            },
        );
        env
    })
}

/// Whether `r` is `<pack>.<name>` with safe characters.
pub fn valid_ref(r: &str) -> bool {
    let Some((pack, name)) = r.split_once('.') else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
            })
    };
    ok(pack) && ok(name) && r.len() <= 200
}

/// Checks an action's parameters: every problem with its path.
pub type ParamsCheck<'a> = &'a dyn Fn(&Value) -> Result<(), Vec<PathError>>;

/// What a rule's policies are checked against: its action's parameter
/// schema, and whether the action runs on workers (see
/// [`crate::policies::check`]).
pub type PolicyTarget<'a> = Option<(&'a Value, bool)>;

/// Checks a rule against its trigger type and its action's parameter check
/// (`None`: no such action) and policy target; returns what to store or
/// every problem found.
pub fn validate_rule(
    input: &RuleInput,
    trigger: Option<&TriggerTypeRecord>,
    action: Option<ParamsCheck<'_>>,
    target: PolicyTarget<'_>,
) -> Result<RuleSpec, Vec<PathError>> {
    let mut errors = Vec::new();
    let mut err = |path: &str, message: String| {
        errors.push(PathError {
            path: path.to_string(),
            message,
        })
    };
    if !valid_ref(&input.r#ref) {
        err(
            "/ref",
            "must be `<pack>.<name>` in lowercase letters, digits, `_`, `-` and `.`".into(),
        );
    }
    match trigger {
        None => err(
            "/trigger",
            format!("unknown trigger type `{}`", input.trigger),
        ),
        Some(t) => {
            let found = schema_errors(&t.params_schema, &input.trigger_params);
            if found.is_empty() {
                // The schema holds; now the values themselves (cron syntax,
                // time zone, date-time, duration).
                if let Err(found) = plan(&t.r#ref, &input.trigger_params) {
                    for e in found {
                        err(&e.path, e.message);
                    }
                }
            }
            for e in found {
                err(&format!("/trigger_params{}", e.path), e.message);
            }
        }
    }
    if let Some(criteria) = &input.criteria {
        if let Err(e) = template_env().compile_expression(criteria) {
            err("/criteria", format!("not a valid expression: {e}"));
        } else if let Err(e) = secret_refs::check_expression(criteria) {
            err("/criteria", e);
        }
    }
    // What the templates read of the payload must exist in its schema.
    if let Some(t) = trigger {
        if let Some(criteria) = &input.criteria
            && let Some(message) = missing_payload_field(t, &format!("{{{{ {criteria} }}}}"))
        {
            err("/criteria", message);
        }
        for (path, text) in template_strings(&input.action_params) {
            if let Some(message) = missing_payload_field(t, &text) {
                err(&format!("/action_params{path}"), message);
            }
        }
    }
    let timeout_ms = match &input.timeout {
        None => None,
        Some(t) => match parse_duration(t) {
            Ok(d) if !d.is_zero() => Some(millis(d)),
            Ok(_) => {
                err("/timeout", "must be greater than zero".into());
                None
            }
            Err(e) => {
                err("/timeout", e);
                None
            }
        },
    };
    let max_attempts = input.max_attempts.unwrap_or(1);
    if !(1..=10).contains(&max_attempts) {
        err("/max_attempts", "must be between 1 and 10".into());
    }
    if !input.action_params.is_object() {
        err("/action_params", "expected object".into());
    }
    let mut templated = HashSet::new();
    find_templates(
        &input.action_params,
        &mut templated,
        &mut |path, message| err(&format!("/action_params{path}"), message),
    );
    match action {
        None => err("/action", format!("unknown action `{}`", input.action)),
        Some(check) if input.action_params.is_object() => {
            if let Err(found) = check(&input.action_params) {
                for e in found {
                    // A template's value is only known when an event arrives;
                    // it is checked then, after rendering.
                    if !templated.contains(&e.path) {
                        err(&format!("/action_params{}", e.path), e.message);
                    }
                }
            }
        }
        Some(_) => {}
    }
    let policies = match target {
        Some((schema, on_workers)) => {
            crate::policies::check(&input.policies, schema, on_workers, "/policies").unwrap_or_else(
                |found| {
                    errors.extend(found);
                    Vec::new()
                },
            )
        }
        None => Vec::new(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RuleSpec {
        policies,
        r#ref: input.r#ref.clone(),
        description: input.description.clone(),
        trigger: input.trigger.clone(),
        trigger_params: input.trigger_params.clone(),
        criteria: input.criteria.clone(),
        action: input.action.clone(),
        action_params: input.action_params.clone(),
        enabled: input.enabled,
        timeout_ms,
        max_attempts,
    })
}

/// The first `event.payload.…` reference in template `text` to a field the
/// trigger type's payload schema does not have, as a message. A schema part
/// without `properties`, or allowing additional ones, accepts any field.
pub fn missing_payload_field(trigger: &TriggerTypeRecord, text: &str) -> Option<String> {
    let template = template_env().template_from_str(text).ok()?;
    for var in template.undeclared_variables(true) {
        let Some(rest) = var.strip_prefix("event.payload.") else {
            continue;
        };
        let mut schema = &trigger.payload_schema;
        for field in rest.split('.') {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                break;
            };
            if let Some(next) = props.get(field) {
                schema = next;
                continue;
            }
            let open = schema
                .get("additionalProperties")
                .is_some_and(|a| a.as_bool() != Some(false));
            if open {
                break;
            }
            let known: Vec<&str> = props.keys().map(String::as_str).collect();
            return Some(format!(
                "`{var}`: the payload of {} has no field `{field}` (it has {})",
                trigger.r#ref,
                known.join(", ")
            ));
        }
    }
    None
}

/// Every templated string in `v` with its JSON pointer.
pub(crate) fn template_strings(v: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: &mut String, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) if is_template(s) => out.push((path.clone(), s.clone())),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), &mut out);
    out
}

/// Records the JSON pointer (within `v`) of every templated string and
/// reports each that does not parse.
pub(crate) fn find_templates(
    v: &Value,
    found: &mut HashSet<String>,
    err: &mut impl FnMut(&str, String),
) {
    for (path, text) in template_strings(v) {
        if let Err(e) = template_env().template_from_str(&text) {
            err(&path, format!("not a valid template: {e}"));
        }
        found.insert(path);
    }
}

/// One rule.
pub async fn get(
    core: &crate::Core,
    r#ref: &str,
) -> Result<Option<attune_storage::RuleRecord>, crate::EngineError> {
    Ok(core.storage.get_rule(r#ref).await?)
}

/// A page of rules matching `filter`, by ref.
pub async fn list(
    core: &crate::Core,
    filter: &attune_storage::RuleFilter,
    page: &attune_storage::Page,
) -> Result<Vec<attune_storage::RuleRecord>, crate::EngineError> {
    Ok(core.storage.list_rules(filter, page).await?)
}

/// A rule's latest `limit` enforcements, newest first.
pub async fn enforcements(
    core: &crate::Core,
    r#ref: &str,
    limit: i64,
) -> Result<Vec<attune_storage::EnforcementRecord>, crate::EngineError> {
    Ok(core.storage.enforcements_of_rule(r#ref, limit).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_pack_dot_name() {
        assert!(valid_ref("core.timer_echo_10s"));
        assert!(valid_ref("ops.disk.check"));
        assert!(!valid_ref("nodot"));
        assert!(!valid_ref("Core.Echo"));
        assert!(!valid_ref(".x"));
    }

    #[test]
    fn templates_are_found_with_their_paths_and_checked() {
        let v = serde_json::json!({"a": "{{ event.payload.x }}", "b": ["plain", "{{ bad"], "c": 1});
        let mut found = HashSet::new();
        let mut errors = Vec::new();
        find_templates(&v, &mut found, &mut |p, m| errors.push((p.to_string(), m)));
        assert!(found.contains("/a"));
        assert!(found.contains("/b/1"));
        assert_eq!(found.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "/b/1");
    }
}
