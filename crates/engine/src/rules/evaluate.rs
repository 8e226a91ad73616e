//! What a rule makes of an event: criteria, templating, validation of the
//! rendered parameters against the action's schema — as a dry run
//! ([`evaluate`]) or as the enforcements to record ([`plan`]).

use zeroize::Zeroizing;

use super::render;
use super::secret_refs::{self, Placeholders};
use crate::{Core, EngineError};
use attune_runtime::PathError;
use attune_storage::{ActionRecord, EventRecord, NewEnforcement, NewExecution, RuleRecord};

/// What a rule would do with an event (the dry run of `POST /rules/{ref}/test`).
#[derive(Debug, Clone)]
pub struct Enforcement {
    /// Whether the criteria hold.
    pub matched: bool,
    /// The rendered action params, when it matched and rendered.
    pub params: Option<serde_json::Value>,
    /// Why it would not run (criteria error, template error, invalid params).
    pub errors: Vec<PathError>,
    /// When its params use secrets (`params` shows them masked): the real
    /// params, sealed for the worker.
    pub sealed_params: Option<Vec<u8>>,
}

/// The dry run of rule `rule` on an event carrying `payload`: what it
/// would do, with nothing stored. It reads no secret's value: a secret is
/// shown as its mask, so the answer is the same whatever the value is.
pub async fn dry_run(
    core: &Core,
    rule: &str,
    payload: serde_json::Value,
) -> Result<Enforcement, EngineError> {
    let rule = core
        .storage
        .get_rule(rule)
        .await?
        .ok_or_else(|| EngineError::not_found("rule", rule))?;
    let event = EventRecord {
        id: 0,
        trigger: rule.spec.trigger.clone(),
        payload,
        source: Some("test".into()),
        created_at: attune_storage::now_ms(),
        depth: 0,
        held_reason: None,
        requested_by: None,
    };
    Ok(evaluate(core, &rule, &event, Reveal::No).await?.0)
}

/// Whether an evaluation reads the values of the secrets a rule hands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// For a run: the values are sealed into its params.
    Yes,
    /// For a dry run: nothing about a value may reach the answer.
    No,
}

/// Evaluates `rule` against `event` without storing anything.
///
/// Secrets never enter the template context: each `{{ secrets.NAME }}`
/// renders as this render's placeholder, the params are checked with the
/// mask in its place, and only then (for a run) are the values put in,
/// whole, into the copy sealed for the worker.
pub async fn evaluate(
    core: &Core,
    rule: &RuleRecord,
    event: &EventRecord,
    reveal: Reveal,
) -> Result<(Enforcement, Option<ActionRecord>), EngineError> {
    let ctx = render::context(event, &rule.spec.r#ref);
    let detail = |path: &str, message: String| PathError {
        path: path.to_string(),
        message,
    };
    let matched = match render::matches(rule.spec.criteria.as_deref(), &ctx) {
        Ok(m) => m,
        Err(e) => {
            return Ok((
                Enforcement {
                    matched: false,
                    params: None,
                    errors: vec![detail("/criteria", e)],
                    sealed_params: None,
                },
                None,
            ));
        }
    };
    if !matched {
        return Ok((
            Enforcement {
                matched,
                params: None,
                errors: vec![],
                sealed_params: None,
            },
            None,
        ));
    }
    let fail = |errors: Vec<PathError>| Enforcement {
        matched,
        params: None,
        errors,
        sealed_params: None,
    };
    let Some(action) = core.cache.action(&core.storage, &rule.spec.action).await? else {
        let e = detail("/action", format!("unknown action `{}`", rule.spec.action));
        return Ok((fail(vec![e]), None));
    };
    let (names, problems) =
        secret_refs::check_handed(core, &action, &rule.spec.action_params).await?;
    if !problems.is_empty() {
        let errors = problems
            .into_iter()
            .map(|e| detail(&format!("/action_params{}", e.path), e.message))
            .collect();
        return Ok((fail(errors), None));
    }
    let mut used = Vec::with_capacity(names.len());
    for name in names.keys() {
        let value = match reveal {
            Reveal::Yes => crate::secrets::reveal(core, name).await?,
            // Whether it exists, never what it holds.
            Reveal::No => core
                .cache
                .secret(&core.storage, name)
                .await?
                .map(|_| Zeroizing::new(String::new())),
        };
        match value {
            Some(value) => used.push((name.clone(), value)),
            None => {
                let e = detail("/action_params", format!("no secret `{name}`"));
                return Ok((fail(vec![e]), None));
            }
        }
    }
    let placeholders = Placeholders::new(names.into_keys());
    let rendered = if placeholders.is_empty() {
        render::render(&rule.spec.action_params, &ctx)
    } else {
        render::render(&rule.spec.action_params, &placeholders.bind(&ctx))
    };
    let rendered = match rendered {
        Ok(p) => p,
        Err(PathError { path, message }) => {
            let message = placeholders.mask_text(&message);
            return Ok((
                fail(vec![detail(&format!("/action_params{path}"), message)]),
                None,
            ));
        }
    };
    let params = if placeholders.is_empty() {
        rendered.clone()
    } else {
        placeholders.masked(&rendered)
    };
    let real = match reveal {
        Reveal::Yes if !placeholders.is_empty() => placeholders.real(&rendered, |name| {
            used.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }),
        _ => None,
    };
    // Checked as recorded, with the mask where a secret goes: a secret sits
    // only where any string fits, so its value cannot change the answer.
    let errors = match crate::actions::check_params(core, &action, &params).await {
        Ok(Ok(())) => vec![],
        Ok(Err(errs)) => errs
            .into_iter()
            .map(|e| detail(&format!("/action_params{}", e.path), e.message))
            .collect(),
        Err(EngineError::NotFound(_)) => vec![detail(
            "/action",
            format!("unknown action `{}`", rule.spec.action),
        )],
        Err(e) => return Err(e),
    };
    Ok((
        Enforcement {
            matched,
            params: Some(params),
            sealed_params: real.map(|p| crate::secrets::seal_params(core, &p, &used)),
            errors,
        },
        Some(action),
    ))
}

/// What `rules` make of `event`: an enforcement for each rule that matched
/// (with its execution) or could not be evaluated (with the reason).
pub async fn plan(
    core: &Core,
    event: &EventRecord,
    rules: Vec<RuleRecord>,
) -> Result<Vec<NewEnforcement>, EngineError> {
    let mut items = Vec::new();
    // Past the chain depth bound no rule sees an event.
    if event.held_reason.is_some() {
        return Ok(items);
    }
    for rule in rules {
        // A rule never fires for what it caused itself: that would loop.
        if event.trigger == crate::triggers::FINISHED_TRIGGER
            && event.payload["rule"].as_str() == Some(rule.spec.r#ref.as_str())
        {
            continue;
        }
        let (enforcement, action) = evaluate(core, &rule, event, Reveal::Yes).await?;
        if !enforcement.matched && enforcement.errors.is_empty() {
            continue;
        }
        let r#ref = &rule.spec.r#ref;
        let mut errors = enforcement.errors;
        let params = enforcement.params.clone().unwrap_or_default();
        let gates = match &action {
            Some(a) if errors.is_empty() => {
                crate::policies::gates(a, Some(&rule.spec), &params, false).unwrap_or_else(|e| {
                    errors.push(e);
                    Vec::new()
                })
            }
            _ => Vec::new(),
        };
        let (execution, reason) = match (errors.is_empty(), action) {
            (true, Some(action)) => (
                Some(NewExecution {
                    gates,
                    rule: Some(r#ref.clone()),
                    max_attempts: rule.spec.max_attempts,
                    timeout_ms: rule.spec.timeout_ms,
                    sealed_params: enforcement.sealed_params.clone(),
                    workflow: action.workflow.is_some(),
                    depth: event.depth,
                    ..NewExecution::of(&action.r#ref, params, action.capabilities.clone())
                }),
                None,
            ),
            _ => {
                let reason = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::warn!(rule = %r#ref, event = event.id, reason, "rule not enforced");
                (None, Some(reason))
            }
        };
        items.push(NewEnforcement {
            rule: r#ref.clone(),
            event: event.id,
            params: enforcement.params,
            reason,
            execution,
        });
    }
    Ok(items)
}
