//! Executions asked for directly (the API's `POST /executions`, the CLI's
//! `attune run`) and cancellation.
//!
//! A direct run is validated against the action's WIT-derived schema before
//! anything is stored, then queued through the event door, so concurrent
//! runs share one write.

use serde_json::Value;

use super::triggers::FINISHED_TRIGGER;
use super::{Core, EngineError};
use attune_runtime::PathError;
use attune_storage::{ExecutionRecord, ExecutionStatus, NewExecution};
use attune_util::units::{millis, parse_duration};

/// A run asked for directly.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Action ref.
    pub action: String,
    /// Parameters (a JSON object).
    pub params: Value,
    /// Timeout like `30s`; the default when absent.
    pub timeout: Option<String>,
    /// Attempts, 1 to 10 (default 1).
    pub max_attempts: Option<i64>,
    /// Who asks (`mcp` for an agent's tool call); at most 64 characters.
    pub source: Option<String>,
    /// Its depth in a chain of causes: 0 unless an action asked for it
    /// (through outbound HTTP, which says its own depth plus one).
    pub depth: i64,
    /// The id of the token that asks, as authenticated: what it causes is
    /// credited to it, for asks that refuse self-approval.
    pub requested_by: Option<i64>,
}

/// Validates and queues a direct run; returns it as queued (`requested`,
/// with a reason when no live worker can serve it).
pub async fn request(core: &Core, run: RunRequest) -> Result<ExecutionRecord, EngineError> {
    let record = core
        .cache
        .action(&core.storage, &run.action)
        .await?
        .filter(|a| !a.sensor)
        .ok_or_else(|| EngineError::not_found("action", &run.action))?;
    if let Err(errors) = super::actions::check_params(core, &record, &run.params).await? {
        return Err(EngineError::invalid(
            "the parameters do not fit the action's schema",
            "/params",
            errors,
        ));
    }
    let mut errors = Vec::new();
    let timeout_ms = match run.timeout.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(d)) if !d.is_zero() => Some(millis(d)),
        Some(Ok(_)) => {
            errors.push(PathError::new("/timeout", "must be greater than zero"));
            None
        }
        Some(Err(e)) => {
            errors.push(PathError::new("/timeout", e));
            None
        }
    };
    let max_attempts = run.max_attempts.unwrap_or(1);
    if !(1..=10).contains(&max_attempts) {
        errors.push(PathError::new("/max_attempts", "must be between 1 and 10"));
    }
    if run
        .source
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > 64)
    {
        errors.push(PathError::new("/source", "1 to 64 characters"));
    }
    if !errors.is_empty() {
        return Err(EngineError::invalid("the request is invalid", "", errors));
    }
    let workflow = record.workflow.is_some();
    let served = workflow || super::worker::served(core, &record.capabilities).await?;
    let gates = super::policies::gates(&record, None, &run.params, false)
        .map_err(|e| EngineError::invalid("a policy's key could not be rendered", "", vec![e]))?;
    let new = NewExecution {
        workflow,
        status_reason: (!served).then(|| {
            format!(
                "waiting for a worker with {}",
                record.capabilities.join(", ")
            )
        }),
        max_attempts,
        timeout_ms,
        source: run.source,
        depth: run.depth,
        requested_by: run.requested_by,
        gates,
        // Under the request that asked for it, when traced.
        trace: super::telemetry::current().map(|c| super::telemetry::header(&c)),
        ..NewExecution::of(&record.r#ref, run.params, record.capabilities.clone())
    };
    core.ingest.run(core, new).await
}

/// Records how executions ended (`(execution, worker, end)`; only those
/// their worker still holds), tells the workflow conductor when one was a
/// task or a poll, and announces them. One flag per item: whether it was
/// recorded.
pub async fn finish(
    core: &Core,
    items: &[(i64, i64, attune_storage::Finished)],
) -> Result<Vec<bool>, attune_storage::StorageError> {
    let finished = core.storage.finish_many(items).await?;
    // Once per execution recorded, however often a batch repeats it.
    let mut seen = std::collections::HashSet::new();
    for (id, _, f) in items {
        if let (Some(action), Some(resources)) = (finished.actions.get(id), &f.resources)
            && seen.insert(*id)
        {
            core.metrics.used(action, resources);
        }
    }
    let recorded = finished.recorded;
    // Only a workflow's task or a sensor's poll is waited for.
    if finished.awaited {
        core.dispatch.finished.notify_one();
    }
    // A slot freed: a waiting execution may go through.
    if finished.gated {
        core.dispatch.slot_freed();
    }
    if recorded.iter().any(|r| *r) {
        let ended: Vec<i64> = items
            .iter()
            .zip(&recorded)
            .filter(|(_, r)| **r)
            .map(|((id, ..), _)| *id)
            .collect();
        announce(core, &ended).await;
    }
    Ok(recorded)
}

/// Emits a `core.execution_finished` event for each of the executions `ids`
/// that has ended — through the event door, and only when an enabled rule
/// listens (otherwise nothing would read them).
pub async fn announce(core: &Core, ids: &[i64]) {
    if ids.is_empty() {
        return;
    }
    let listening = core
        .cache
        .enabled_rules(&core.storage, FINISHED_TRIGGER)
        .await;
    let listening = matches!(&listening, Ok(rules) if !rules.is_empty());
    if !listening && core.telemetry.is_none() {
        return;
    }
    let ended = match core.storage.executions_by_id(ids).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "reading ended executions to announce");
            return;
        }
    };
    if let Some(telemetry) = &core.telemetry {
        telemetry.executions_ended(&ended);
    }
    if !listening {
        return;
    }
    let events = ended
        .into_iter()
        .filter(|e| e.status.is_finished())
        .map(|e| async move {
            // Credited to whoever caused the execution.
            let requested_by = requester(core, &e).await.unwrap_or_default();
            let event = super::ingest::IncomingEvent {
                trigger: FINISHED_TRIGGER.into(),
                payload: serde_json::json!({
                    "execution": e.id, "action": e.action, "status": e.status.as_str(),
                    "rule": e.rule, "parent": e.parent, "result": e.result, "error": e.error,
                }),
                source: Some(e.action.clone()),
                rules: None,
                // What an execution caused is one deeper than what caused it.
                depth: e.depth + 1,
                // And is in its trace, under its span.
                trace: super::telemetry::execution_of(&e),
                requested_by,
            };
            if let Err(err) = core.ingest.event(core, event).await
                && !err.is_refused()
            {
                tracing::error!(execution = e.id, error = %err, "announcing an ended execution");
            }
        });
    futures_util::future::join_all(events).await;
}

/// The tokens behind an execution.
#[derive(Debug, Clone, Copy, Default)]
pub struct Causers {
    /// The token that asked for it (or for the workflow it is a task of),
    /// or that caused the event whose rule started it.
    pub token: Option<i64>,
    /// The token that last saved the rule that started it (or its
    /// workflow), through the API or the console.
    pub rule_author: Option<i64>,
}

/// Who caused `execution` (see [`Causers`]); nobody for a timer's, a
/// webhook's or a sensor's run from a rule no token saved.
pub async fn causers(core: &Core, execution: &ExecutionRecord) -> Result<Causers, EngineError> {
    let mut e = std::borrow::Cow::Borrowed(execution);
    // A task nested as deep as workflows go, and the run that started them.
    for _ in 0..=crate::workflows::definition::MAX_DEPTH + 2 {
        if e.requested_by.is_some() {
            return Ok(Causers {
                token: e.requested_by,
                rule_author: None,
            });
        }
        if let Some(enforcement) = e.enforcement {
            let rule_author = match &e.rule {
                Some(rule) => core.storage.rule_author(rule).await?,
                None => None,
            };
            let token = match core.storage.event_of_enforcement(enforcement).await? {
                Some(event) => core
                    .storage
                    .get_event(event)
                    .await?
                    .and_then(|ev| ev.requested_by),
                None => None,
            };
            return Ok(Causers { token, rule_author });
        }
        let Some(parent) = e.parent else {
            break;
        };
        let Some(p) = core.storage.get_execution(parent).await? else {
            break;
        };
        e = std::borrow::Cow::Owned(p);
    }
    Ok(Causers::default())
}

/// The one token an execution's event is credited to: who caused it, or
/// else who saved the rule that started it.
pub async fn requester(
    core: &Core,
    execution: &ExecutionRecord,
) -> Result<Option<i64>, EngineError> {
    let c = causers(core, execution).await?;
    Ok(c.token.or(c.rule_author))
}

/// Asks for an execution to be cancelled: a queued one ends at once, a
/// running one is interrupted (now, when this process runs it; at its
/// worker's next heartbeat otherwise) and turns `cancelled` when reported.
pub async fn cancel(core: &Core, id: i64) -> Result<ExecutionRecord, EngineError> {
    // An ask or a wait ends by its answer, its event, its deadline or its
    // workflow's cancel: cancelling it alone would answer it (its workflow
    // would take the failure path) without being an approver.
    if let Some(e) = core.storage.get_execution(id).await?
        && e.status == ExecutionStatus::Pending
    {
        return Err(EngineError::Conflict(format!(
            "execution {id} is task `{}` of workflow {}, waiting for an answer or an event; \
             cancel the workflow instead",
            e.task.as_deref().unwrap_or_default(),
            e.parent.unwrap_or_default()
        )));
    }
    let (e, ended) = core
        .storage
        .cancel_execution(id)
        .await?
        .ok_or_else(|| EngineError::not_found("execution", id))?;
    if e.status == ExecutionStatus::Running {
        core.dispatch.cancel(id);
    }
    // A workflow's conductor cancels its tasks; a cancelled task is taken
    // in by its workflow; a slot a policy held may be free.
    core.dispatch.finished.notify_one();
    core.dispatch.slot_freed();
    // Announced once, by the cancel that ended it.
    if ended {
        announce(core, &[e.id]).await;
    }
    Ok(e)
}
