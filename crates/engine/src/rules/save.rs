//! The one place a rule is saved — from the API, from a pack upload, and at
//! first start — and the timer that follows it.
//!
//! [`check`] validates a rule against its trigger type and the action's
//! WIT-derived schema; [`store`] writes a checked rule (creating or updating
//! it) and brings its timer and the rule cache in line. Deleting and
//! enabling go through here too, so no caller forgets the timer.

use super::{RuleInput, secret_refs, validate_rule};
use crate::triggers::webhook;
use crate::{Core, EngineError};
use attune_runtime::PathError;
use attune_storage::{RuleRecord, RuleSpec, StorageError};
use attune_util::schedule::Plan;

/// Validates `input` against the stored trigger type and action; returns the
/// rule to store and warnings (no live worker can run its action now).
pub async fn check(core: &Core, input: &RuleInput) -> Result<(RuleSpec, Vec<String>), EngineError> {
    let trigger = core.storage.get_trigger_type(&input.trigger).await?;
    let record = core
        .storage
        .get_action(&input.action)
        .await?
        .filter(|a| !a.sensor);
    let pack = match &record {
        Some(a) if a.workflow.is_none() => Some(core.component(&a.component).await?),
        _ => None,
    };
    let export = match (&record, &pack) {
        (Some(a), Some(p)) => p.action(&a.name),
        _ => None,
    };
    let by_export = |params: &serde_json::Value| export.map_or(Ok(()), |a| a.validate(params));
    let by_schema = |params: &serde_json::Value| {
        let schema = record.as_ref().map(|a| &a.params_schema);
        let errors = schema.map(|s| attune_runtime::schema_errors(s, params));
        errors.filter(|e| !e.is_empty()).map_or(Ok(()), Err)
    };
    let check: Option<super::ParamsCheck<'_>> = match &record {
        Some(a) if a.workflow.is_some() => Some(&by_schema),
        Some(_) if export.is_some() => Some(&by_export),
        _ => None,
    };
    let target = record
        .as_ref()
        .map(|a| (&a.params_schema, a.workflow.is_none()));
    let validated = validate_rule(input, trigger.as_ref(), check, target);
    let mut errors = match &validated {
        Ok(_) => Vec::new(),
        Err(errors) => errors.clone(),
    };
    if input.trigger == "core.webhook"
        && let Some(name) = input.trigger_params["secret"]
            .as_str()
            .and_then(webhook::secret_reference)
    {
        // Verifying a signature compares with the secret: a key that anyone
        // who saves rules could point at any secret would answer guesses of
        // its value. A key names only what the rule's pack is granted.
        let pack = input.r#ref.split_once('.').map_or("", |(p, _)| p);
        let grants = core.cache.grants(&core.storage, pack).await?;
        if core.storage.get_secret(name).await?.is_none() {
            errors.push(PathError::new(
                "/trigger_params/secret",
                format!("no secret `{name}`; set it first"),
            ));
        } else if !grants.grants.secrets.iter().any(|g| g == name) {
            errors.push(PathError::new(
                "/trigger_params/secret",
                format!(
                    "secret `{name}` is not granted to pack `{pack}`; an admin grants it with \
                     `attune pack grant {pack} --secret {name}`"
                ),
            ));
        }
    }
    // Secrets are handed on only whole, only to a pack granted them, only
    // where any string fits (see `secret_refs`).
    let (handed, problems) = match &record {
        Some(action) => secret_refs::check_handed(core, action, &input.action_params).await?,
        None => secret_refs::refs_in_params(&input.action_params),
    };
    for e in problems {
        errors.push(PathError::new(
            format!("/action_params{}", e.path),
            e.message,
        ));
    }
    for name in handed.keys() {
        if !crate::secrets::valid_name(name) || core.storage.get_secret(name).await?.is_none() {
            errors.push(PathError::new(
                "/action_params",
                format!("no secret `{name}`; set it first"),
            ));
        }
    }
    let spec = match validated {
        Ok(spec) if errors.is_empty() => spec,
        _ => return Err(EngineError::invalid("the rule is invalid", "", errors)),
    };
    let mut warnings = Vec::new();
    if let Some(a) = &record
        && !crate::worker::served(core, &a.capabilities).await?
    {
        warnings.push(format!(
            "no live worker can run {} now (it needs {}); executions will wait until one joins",
            a.r#ref,
            a.capabilities.join(", ")
        ));
    }
    Ok((spec, warnings))
}

/// A rule read from the API and sent back carries the mask where its
/// literal webhook key was: keep the stored key rather than saving the mask.
pub async fn unmask(core: &Core, input: &mut RuleInput, current: &str) -> Result<(), EngineError> {
    if input.trigger == "core.webhook"
        && input.trigger_params["secret"].as_str() == Some(webhook::MASK)
        && let Some(existing) = core.storage.get_rule(current).await?
        && let Some(key) = existing.spec.trigger_params.get("secret")
    {
        input.trigger_params["secret"] = key.clone();
    }
    Ok(())
}

/// How [`store`] may write a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new rule; an existing ref is a conflict.
    Create,
    /// Replace the rule stored under this ref (which the spec may rename).
    Replace,
    /// Create it, or replace a rule with the same ref (pack uploads).
    Upsert,
}

/// Writes a checked rule and syncs its timer. `current` is the ref it is
/// stored under when replacing.
pub async fn store(
    core: &Core,
    spec: &RuleSpec,
    mode: Mode,
    current: &str,
) -> Result<RuleRecord, EngineError> {
    check_interval(core, spec)?;
    // No webhook key is stored in the clear: a literal one becomes the
    // rule's own key, which follows the rule when it is renamed.
    let replacing = match mode {
        Mode::Create => None,
        Mode::Replace => Some(current),
        Mode::Upsert => Some(spec.r#ref.as_str()),
    };
    let key = webhook::plan_key(core, spec, replacing).await?;
    let spec = &key.spec;
    let rule = match mode {
        Mode::Create => core.storage.insert_rule(spec).await?,
        Mode::Replace => core
            .storage
            .update_rule(current, spec)
            .await?
            .ok_or_else(|| EngineError::not_found("rule", current))?,
        Mode::Upsert => match core.storage.insert_rule(spec).await {
            Ok(rule) => rule,
            Err(StorageError::Conflict(_)) => core
                .storage
                .update_rule(&spec.r#ref, spec)
                .await?
                .ok_or_else(|| EngineError::not_found("rule", &spec.r#ref))?,
            Err(e) => return Err(e.into()),
        },
    };
    if let Err(e) = webhook::settle_key(core, &key).await {
        // A new rule without its key would refuse every delivery: undo it.
        if mode == Mode::Create {
            core.storage.delete_rule(&rule.spec.r#ref).await?;
            core.cache.rules_changed();
        }
        return Err(e);
    }
    if rule.spec.r#ref != current && mode == Mode::Replace {
        core.storage.delete_timer(current).await?;
    }
    sync_timer(core, &rule).await?;
    Ok(rule)
}

/// A timer rule may not fire more often than the operator allows: a
/// millisecond interval would turn one rule into a flood.
fn check_interval(core: &Core, spec: &RuleSpec) -> Result<(), EngineError> {
    let min = core.config.min_interval;
    if let Ok(Some(Plan::Interval { every_ms })) =
        crate::triggers::schedule::plan(&spec.trigger, &spec.trigger_params)
        && every_ms < attune_util::units::millis(min)
    {
        return Err(EngineError::invalid(
            format!("rule `{}` fires too often", spec.r#ref),
            "",
            vec![PathError::new(
                "/trigger_params/every",
                format!(
                    "must be at least {} ms (the server's --min-interval)",
                    min.as_millis()
                ),
            )],
        ));
    }
    Ok(())
}

/// Enables or disables a rule.
pub async fn set_enabled(
    core: &Core,
    r#ref: &str,
    enabled: bool,
) -> Result<RuleRecord, EngineError> {
    let rule = core
        .storage
        .set_rule_enabled(r#ref, enabled)
        .await?
        .ok_or_else(|| EngineError::not_found("rule", r#ref))?;
    sync_timer(core, &rule).await?;
    Ok(rule)
}

/// Replaces a rule's policies and nothing else (a change to the rest of it
/// meanwhile stays), after every check a whole rule gets (a policy's
/// problems come back at `/policies/<n>/…`).
pub async fn set_policies(
    core: &Core,
    r#ref: &str,
    policies: Vec<crate::policies::PolicyInput>,
) -> Result<(RuleRecord, Vec<String>), EngineError> {
    let rule = core
        .storage
        .get_rule(r#ref)
        .await?
        .ok_or_else(|| EngineError::not_found("rule", r#ref))?;
    let spec = rule.spec;
    let input = RuleInput {
        r#ref: spec.r#ref,
        description: spec.description,
        trigger: spec.trigger,
        trigger_params: spec.trigger_params,
        criteria: spec.criteria,
        action: spec.action,
        action_params: spec.action_params,
        enabled: spec.enabled,
        timeout: spec.timeout_ms.map(|ms| format!("{ms}ms")),
        max_attempts: Some(spec.max_attempts),
        policies,
    };
    let (spec, warnings) = check(core, &input).await?;
    let rule = core
        .storage
        .set_rule_policies(r#ref, &spec.policies)
        .await?
        .ok_or_else(|| EngineError::not_found("rule", r#ref))?;
    core.cache.rules_changed();
    Ok((rule, warnings))
}

/// Deletes a rule, its timer and its own webhook key.
pub async fn delete(core: &Core, r#ref: &str) -> Result<(), EngineError> {
    if !core.storage.delete_rule(r#ref).await? {
        return Err(EngineError::not_found("rule", r#ref));
    }
    core.storage.delete_timer(r#ref).await?;
    webhook::drop_key(core, r#ref).await?;
    core.dispatch.timers.notify_one();
    core.cache.rules_changed();
    Ok(())
}

/// Brings a rule's timer in line with its definition and wakes the timer task.
async fn sync_timer(core: &Core, rule: &RuleRecord) -> Result<(), StorageError> {
    let plan = crate::triggers::schedule::plan(&rule.spec.trigger, &rule.spec.trigger_params)
        .ok()
        .flatten();
    core.storage.sync_timer(rule, plan.as_ref()).await?;
    core.cache.rules_changed();
    core.dispatch.timers.notify_one();
    Ok(())
}

/// What keeps a stored rule from firing under the rules for secrets (it
/// was saved before they held, or its pack's grant was revoked since):
/// each problem with its path; empty when it may fire.
pub async fn problems(core: &Core, rule: &RuleRecord) -> Result<Vec<PathError>, EngineError> {
    let mut found = Vec::new();
    if let Some(criteria) = &rule.spec.criteria
        && let Err(e) = secret_refs::check_expression(criteria)
        && !e.starts_with("not a valid expression")
    {
        found.push(PathError::new("/criteria", e));
    }
    let Some(action) = core.cache.action(&core.storage, &rule.spec.action).await? else {
        return Ok(found);
    };
    let (_, handed) = secret_refs::check_handed(core, &action, &rule.spec.action_params).await?;
    found.extend(
        handed
            .into_iter()
            .map(|e| PathError::new(format!("/action_params{}", e.path), e.message)),
    );
    Ok(found)
}

/// The stored rules (of `filter`, from `page`'s cursor on, at most its
/// limit) that do not fire until fixed, each with its problems.
pub async fn invalid(
    core: &Core,
    filter: &attune_storage::RuleFilter,
    page: &attune_storage::Page,
) -> Result<Vec<(RuleRecord, Vec<PathError>)>, EngineError> {
    let want = page.limit.unwrap_or(50).clamp(1, attune_storage::MAX_PAGE) as usize;
    let mut after = page.after.clone();
    let mut out = Vec::new();
    loop {
        let scan = attune_storage::Page {
            limit: Some(attune_storage::MAX_PAGE),
            after: after.clone(),
        };
        let batch = core.storage.list_rules(filter, &scan).await?;
        let full = batch.len() as i64 == attune_storage::MAX_PAGE;
        for rule in batch {
            after = Some(rule.spec.r#ref.clone());
            let found = problems(core, &rule).await?;
            if !found.is_empty() {
                out.push((rule, found));
                if out.len() == want {
                    return Ok(out);
                }
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Logs a warning for each stored rule that does not fire until fixed
/// (at start: rules saved before the rules for secrets held).
pub async fn warn_invalid(core: &Core) -> Result<usize, EngineError> {
    let all = attune_storage::Page {
        limit: Some(attune_storage::MAX_PAGE),
        after: None,
    };
    let mut count = 0;
    let mut page = all;
    loop {
        let found = invalid(core, &attune_storage::RuleFilter::default(), &page).await?;
        let n = found.len();
        for (rule, problems) in &found {
            let reasons: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect();
            tracing::warn!(
                rule = %rule.spec.r#ref,
                problems = %reasons.join("; "),
                "this rule does not fire until it is fixed (GET /api/v1/rules?invalid=true lists them)"
            );
        }
        count += n;
        match found.last() {
            Some((rule, _)) if n as i64 == attune_storage::MAX_PAGE => {
                page.after = Some(rule.spec.r#ref.clone());
            }
            _ => return Ok(count),
        }
    }
}
