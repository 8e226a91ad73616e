//! The start of a task that asks or waits: what it waits for, rendered
//! from the run's state.

use serde_json::{Value, json};

use super::super::definition::Task;
use super::super::pause;
use super::Machine;
use super::State;
use crate::rules::render::render;
use crate::workflows::definition::expression;
use attune_util::units::{millis, parse_duration};

impl Machine<'_> {
    /// What an `ask` or `wait` task waits for, rendered now; `None` for a
    /// task that runs an action.
    pub(super) fn pause(&self, state: &State, def: &Task) -> Result<Option<pause::Spec>, Value> {
        let timeout = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| parse_duration(t).ok())
                .map(millis)
        };
        if let Some(ask) = &def.ask {
            let ctx = self.context(state, None, None);
            let prompt = render(&Value::String(ask.prompt.clone()), &ctx)
                .map_err(|e| json!(format!("ask/prompt: {}", e.message)))?;
            let mut prompt = match prompt {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if prompt.len() > pause::MAX_PROMPT * 4 {
                let mut end = pause::MAX_PROMPT * 4;
                while !prompt.is_char_boundary(end) {
                    end -= 1;
                }
                prompt.truncate(end);
            }
            return Ok(Some(pause::Spec {
                kind: "ask".into(),
                prompt: Some(prompt),
                schema: Some(ask.schema.clone()),
                approvers: Some(ask.approvers.clone()),
                self_approval: ask.self_approval,
                resume_url: ask.resume_url,
                trigger: None,
                criteria: None,
                context: None,
                timeout_ms: timeout(&ask.timeout),
                on_timeout: ask.on_timeout,
            }));
        }
        let Some(wait) = &def.wait else {
            return Ok(None);
        };
        Ok(Some(pause::Spec {
            kind: "wait".into(),
            prompt: None,
            schema: None,
            approvers: None,
            self_approval: true,
            resume_url: false,
            trigger: Some(wait.trigger.clone()),
            criteria: wait.criteria.as_deref().map(|c| expression(c).to_string()),
            context: Some(json!({"input": self.input, "vars": state.vars})),
            timeout_ms: timeout(&wait.timeout),
            on_timeout: wait.on_timeout,
        }))
    }
}
