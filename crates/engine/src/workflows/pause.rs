//! Tasks that wait instead of running an action: `ask` (a person's answer,
//! checked against a schema) and `wait` (the first matching event). Each
//! runs as a child execution in status `pending` that no worker claims; an
//! answer, a matching event or its timeout ends it, once, like any child.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::definition::{Actions, expression};
use crate::rules::{find_templates, secret_refs, template_env};
use attune_storage::Role;
use attune_util::units::parse_duration;

/// The action ref an `ask` task's execution is recorded under.
pub const ASK_ACTION: &str = "core.ask";
/// The action ref a `wait` task's execution is recorded under.
pub const WAIT_ACTION: &str = "core.wait";
/// Fields an answer may not hold: the task's result adds them.
pub const RESERVED: [&str; 3] = ["answered_by", "answered_at", "timed_out"];
/// The longest a prompt may render to.
pub const MAX_PROMPT: usize = 4_096;

/// An `ask` task: a prompt, the answer's schema and who may answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    /// What to ask; a template over `input`, `vars` and `tasks`.
    pub prompt: String,
    /// JSON Schema of the answer (an object).
    #[serde(default = "object_schema")]
    pub schema: Value,
    /// Who may answer (by default operators and admins).
    #[serde(default)]
    pub approvers: Approvers,
    /// Whether the token that started the workflow may answer.
    #[serde(default = "yes")]
    pub self_approval: bool,
    /// How long to wait, like `4h`; unbounded when absent.
    #[serde(default)]
    pub timeout: Option<String>,
    /// What a timeout does.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Whether a signed resume URL may be made for people without a token.
    #[serde(default)]
    pub resume_url: bool,
}

/// Who may answer an `ask`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvers {
    /// Roles whose tokens may answer (a role admits the roles above it).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Token names that may answer, whatever their role.
    #[serde(default)]
    pub tokens: Vec<String>,
}

impl Default for Approvers {
    fn default() -> Self {
        Self {
            roles: vec!["operator".into()],
            tokens: Vec::new(),
        }
    }
}

impl Approvers {
    /// Whether a token named `name` with `role` may answer.
    pub fn admit(&self, name: &str, role: Role) -> bool {
        if role == Role::Worker {
            return false;
        }
        self.tokens.iter().any(|t| t == name)
            || self
                .roles
                .iter()
                .filter_map(|r| Role::parse(r))
                .any(|r| r != Role::Worker && role >= r)
    }
}

/// A `wait` task: the first event of `trigger` matching `criteria` after
/// the task starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// The trigger type, e.g. `core.manual`.
    pub trigger: String,
    /// An expression over `event`, `input` and `vars`; any event when absent.
    #[serde(default)]
    pub criteria: Option<String>,
    /// How long to wait, like `30m`; unbounded when absent.
    #[serde(default)]
    pub timeout: Option<String>,
    /// What a timeout does.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// What a timed-out `ask` or `wait` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The task fails (`timed_out`).
    #[default]
    Fail,
    /// The task succeeds with `{"timed_out": true}`.
    Continue,
}

fn object_schema() -> Value {
    json!({"type": "object"})
}

fn yes() -> bool {
    true
}

impl Ask {
    /// Every problem, each with its path under `at`.
    pub(super) fn check(&self, at: &str, err: &mut impl FnMut(String, String)) {
        let mut templated = HashSet::new();
        find_templates(
            &Value::String(self.prompt.clone()),
            &mut templated,
            &mut |_, m| err(format!("{at}/prompt"), m),
        );
        if let Err(e) = secret_refs::check_no_secrets(&self.prompt)
            && !e.starts_with("not a valid template")
        {
            err(format!("{at}/prompt"), e);
        }
        if self.prompt.len() > MAX_PROMPT {
            err(
                format!("{at}/prompt"),
                format!("longer than {MAX_PROMPT} bytes"),
            );
        }
        if self.schema.get("type").and_then(Value::as_str) != Some("object") {
            err(
                format!("{at}/schema/type"),
                "an answer's schema must be of type `object`".into(),
            );
        }
        if let Err(e) = jsonschema::validator_for(&self.schema) {
            err(
                format!("{at}/schema"),
                format!("not a valid JSON Schema: {e}"),
            );
        }
        if let Some(props) = self.schema.get("properties").and_then(Value::as_object) {
            for name in RESERVED {
                if props.contains_key(name) {
                    err(
                        format!("{at}/schema/properties/{name}"),
                        format!("`{name}` is set by the task's result"),
                    );
                }
            }
        }
        for (i, role) in self.approvers.roles.iter().enumerate() {
            if !matches!(
                Role::parse(role),
                Some(Role::Viewer | Role::Operator | Role::Admin)
            ) {
                err(
                    format!("{at}/approvers/roles/{i}"),
                    "expected viewer, operator or admin".into(),
                );
            }
        }
        if self.approvers.roles.is_empty() && self.approvers.tokens.is_empty() {
            err(
                format!("{at}/approvers"),
                "nobody could answer: name roles or tokens".into(),
            );
        }
        // A link is in the events and records viewers read, so it may only
        // answer what anyone who can read may answer.
        if self.resume_url
            && (!self.self_approval || !self.approvers.roles.iter().any(|r| r == "viewer"))
        {
            err(
                format!("{at}/resume_url"),
                "a resume link is readable by viewers (in its core.inquiry_opened event), so it \
                 needs `approvers: {roles: [viewer]}` and `self_approval: true`"
                    .into(),
            );
        }
        check_timeout(self.timeout.as_deref(), at, err);
    }
}

impl Wait {
    /// Every problem, each with its path under `at`.
    pub(super) fn check(
        &self,
        at: &str,
        actions: &dyn Actions,
        err: &mut impl FnMut(String, String),
    ) {
        let trigger = actions.trigger(&self.trigger);
        if trigger.is_none() {
            err(
                format!("{at}/trigger"),
                format!("unknown trigger type `{}`", self.trigger),
            );
        }
        if let Some(criteria) = &self.criteria {
            let expr = expression(criteria);
            if let Err(e) = template_env().compile_expression(expr) {
                err(
                    format!("{at}/criteria"),
                    format!("not a valid expression: {e}"),
                );
            } else if let Err(e) = secret_refs::check_expression(expr) {
                err(format!("{at}/criteria"), e);
            } else if let Some(t) = &trigger
                && let Some(m) =
                    crate::rules::missing_payload_field(t, &format!("{{{{ {expr} }}}}"))
            {
                err(format!("{at}/criteria"), m);
            }
        }
        check_timeout(self.timeout.as_deref(), at, err);
    }
}

fn check_timeout(timeout: Option<&str>, at: &str, err: &mut impl FnMut(String, String)) {
    match timeout.map(parse_duration) {
        Some(Err(e)) => err(format!("{at}/timeout"), e),
        Some(Ok(d)) if d.is_zero() => {
            err(format!("{at}/timeout"), "must be greater than zero".into())
        }
        _ => {}
    }
}

/// What a task's `ask` or `wait` became when it started: stored with its
/// execution and read when it is answered, matched or timed out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// `ask` or `wait`.
    pub kind: String,
    /// The rendered prompt (asks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The answer's schema (asks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Who may answer (asks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Approvers>,
    /// Whether the workflow's starter may answer (asks).
    #[serde(default = "yes")]
    pub self_approval: bool,
    /// Whether a resume URL may be made (asks).
    #[serde(default)]
    pub resume_url: bool,
    /// The trigger (waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The criteria (waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria: Option<String>,
    /// What the criteria read besides the event (waits): `input`, `vars`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// How long to wait, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// What a timeout does.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

impl Spec {
    /// The action ref its execution is recorded under.
    pub fn action(&self) -> &'static str {
        if self.kind == "ask" {
            ASK_ACTION
        } else {
            WAIT_ACTION
        }
    }

    /// What its execution shows as parameters: all but the context.
    pub fn params(&self) -> Value {
        let mut params = serde_json::to_value(self).unwrap_or_default();
        if let Some(p) = params.as_object_mut() {
            p.remove("context");
        }
        params
    }
}

/// Checks a task that asks or waits; false when it runs an action (the
/// caller checks that). Such a task takes no input, items, retry or
/// concurrency.
pub(super) fn check_task(
    task: &super::definition::Task,
    at: &str,
    actions: &dyn Actions,
    err: &mut impl FnMut(String, String),
) -> bool {
    let kinds = [
        !task.action.is_empty(),
        task.ask.is_some(),
        task.wait.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        0 => {
            err(
                at.to_string(),
                "a task needs one of `action`, `ask` or `wait`".into(),
            );
            return true;
        }
        1 if !task.action.is_empty() => return false,
        1 => {}
        _ => {
            err(
                at.to_string(),
                "a task has only one of `action`, `ask` or `wait`".into(),
            );
            return true;
        }
    }
    let empty_input = task.input.as_object().is_some_and(|o| o.is_empty());
    for (field, set) in [
        ("input", !empty_input),
        ("with_items", task.with_items.is_some()),
        ("concurrency", task.concurrency.is_some()),
        ("retry", task.retry.is_some()),
        ("timeout", task.timeout.is_some()),
    ] {
        if set {
            err(
                format!("{at}/{field}"),
                format!(
                    "a task that asks or waits has no `{field}`{}",
                    if field == "timeout" {
                        " of its own: set it inside `ask` or `wait`"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    if let Some(ask) = &task.ask {
        ask.check(&format!("{at}/ask"), err);
    }
    if let Some(wait) = &task.wait {
        wait.check(&format!("{at}/wait"), actions, err);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_admits_those_above_it_and_worker_tokens_never() {
        let approvers = Approvers::default();
        assert!(approvers.admit("x", Role::Operator));
        assert!(approvers.admit("x", Role::Admin));
        assert!(!approvers.admit("x", Role::Viewer));
        assert!(!approvers.admit("x", Role::Worker));
        let named = Approvers {
            roles: vec![],
            tokens: vec!["oncall".into()],
        };
        assert!(named.admit("oncall", Role::Viewer));
        assert!(!named.admit("oncall", Role::Worker));
        assert!(!named.admit("other", Role::Admin));
    }

    fn problems(ask: Ask) -> Vec<String> {
        let mut found = Vec::new();
        ask.check("/a", &mut |p, _| found.push(p));
        found
    }

    #[test]
    fn a_resume_link_is_only_for_asks_viewers_may_answer() {
        let ask = |roles: &[&str], self_approval: bool| Ask {
            prompt: "ok?".into(),
            schema: json!({"type": "object"}),
            approvers: Approvers {
                roles: roles.iter().map(|r| r.to_string()).collect(),
                tokens: vec![],
            },
            self_approval,
            timeout: None,
            on_timeout: OnTimeout::Fail,
            resume_url: true,
        };
        assert_eq!(problems(ask(&["viewer"], true)), Vec::<String>::new());
        assert_eq!(problems(ask(&["operator"], true)), ["/a/resume_url"]);
        assert_eq!(problems(ask(&["viewer"], false)), ["/a/resume_url"]);
    }
}
