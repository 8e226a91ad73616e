//! What a rule makes of an event: criteria, templating, validation of the
//! rendered parameters against the action's schema — as a dry run
//! ([`evaluate`]) or as the enforcements to record ([`plan`]).

use super::render;
use crate::engine::{Core, EngineError};
use crate::runtime::PathError;
use crate::runtime::secrets::{MASK, SecretSet};
use crate::storage::{ActionRecord, EventRecord, NewEnforcement, NewExecution, RuleRecord};

/// What a rule would do with an event (the dry run of `POST /rules/{ref}/test`).
#[derive(Debug, Clone)]
pub struct Verdict {
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
/// would do, with nothing stored.
pub async fn dry_run(
    core: &Core,
    rule: &str,
    payload: serde_json::Value,
) -> Result<Verdict, EngineError> {
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
        created_at: crate::storage::now_ms(),
    };
    Ok(evaluate(core, &rule, &event).await?.0)
}

/// Evaluates `rule` against `event` without storing anything.
pub async fn evaluate(
    core: &Core,
    rule: &RuleRecord,
    event: &EventRecord,
) -> Result<(Verdict, Option<ActionRecord>), EngineError> {
    let ctx = render::context(event, &rule.spec.r#ref);
    let detail = |path: &str, message: String| PathError {
        path: path.to_string(),
        message,
    };
    let matched = match render::matches(rule.spec.criteria.as_deref(), &ctx) {
        Ok(m) => m,
        Err(e) => {
            return Ok((
                Verdict {
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
            Verdict {
                matched,
                params: None,
                errors: vec![],
                sealed_params: None,
            },
            None,
        ));
    }
    let fail = |errors: Vec<PathError>| Verdict {
        matched,
        params: None,
        errors,
        sealed_params: None,
    };
    // Secrets render twice: masked for the record, real for the worker.
    let names = render::secret_names(&rule.spec.action_params);
    let mut used = Vec::with_capacity(names.len());
    for name in &names {
        match crate::engine::secrets::reveal(core, name).await? {
            Some(value) => used.push((name.clone(), value)),
            None => {
                let e = detail("/action_params", format!("no secret `{name}`"));
                return Ok((fail(vec![e]), None));
            }
        }
    }
    let secrets = SecretSet::new([], used.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Most rules use no secret: their context is the event's as it is.
    let masked_ctx = if names.is_empty() {
        ctx.clone()
    } else {
        render::with_secrets(&ctx, names.iter().map(|n| (n.as_str(), MASK)))
    };
    let rendered = |ctx: &minijinja::Value| {
        render::render(&rule.spec.action_params, ctx).map_err(|(path, message)| {
            let message = secrets.redact(&message).into_owned();
            detail(&format!("/action_params{path}"), message)
        })
    };
    let params = match rendered(&masked_ctx) {
        Ok(p) => p,
        Err(e) => return Ok((fail(vec![e]), None)),
    };
    let real = if used.is_empty() {
        None
    } else {
        match rendered(&render::with_secrets(&ctx, secrets.values())) {
            Ok(p) => Some(p),
            Err(e) => return Ok((fail(vec![e]), None)),
        }
    };
    let Some(action) = core.cache.action(&core.storage, &rule.spec.action).await? else {
        return Ok((
            Verdict {
                matched,
                params: Some(params),
                errors: vec![detail(
                    "/action",
                    format!("unknown action `{}`", rule.spec.action),
                )],
                sealed_params: None,
            },
            None,
        ));
    };
    let checked = real.as_ref().unwrap_or(&params);
    let errors = match crate::engine::actions::check_params(core, &action, checked).await {
        Ok(Ok(())) => vec![],
        Ok(Err(errs)) => errs
            .into_iter()
            .map(|e| {
                let message = secrets.redact(&e.message).into_owned();
                detail(&format!("/action_params{}", e.path), message)
            })
            .collect(),
        Err(EngineError::NotFound(_)) => vec![detail(
            "/action",
            format!("unknown action `{}`", rule.spec.action),
        )],
        Err(e) => return Err(e),
    };
    Ok((
        Verdict {
            matched,
            params: Some(params),
            sealed_params: real.map(|p| crate::engine::secrets::seal_params(core, &p, &used)),
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
    for rule in rules {
        // A rule never fires for what it caused itself: that would loop.
        if event.trigger == crate::engine::triggers::FINISHED_TRIGGER
            && event.payload["rule"].as_str() == Some(rule.spec.r#ref.as_str())
        {
            continue;
        }
        let (verdict, action) = evaluate(core, &rule, event).await?;
        if !verdict.matched && verdict.errors.is_empty() {
            continue;
        }
        let r#ref = &rule.spec.r#ref;
        let (execution, reason) = match (verdict.errors.is_empty(), action) {
            (true, Some(action)) => (
                Some(NewExecution {
                    rule: Some(r#ref.clone()),
                    max_attempts: rule.spec.max_attempts,
                    timeout_ms: rule.spec.timeout_ms,
                    sealed_params: verdict.sealed_params.clone(),
                    workflow: action.workflow.is_some(),
                    ..NewExecution::of(
                        &action.r#ref,
                        verdict.params.clone().unwrap_or_default(),
                        action.capabilities.clone(),
                    )
                }),
                None,
            ),
            _ => {
                let reason = verdict
                    .errors
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
            params: verdict.params,
            reason,
            execution,
        });
    }
    Ok(items)
}
