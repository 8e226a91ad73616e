//! What happened: events, the enforcements rules made of them, and
//! executions with their attempts, as the surfaces list and show them.

use attune_storage::{
    AttemptRecord, EventRecord, ExecutionFilter, ExecutionRecord, ExecutionStatus, Page,
};

use crate::{Core, EngineError};

/// One execution.
pub async fn execution(core: &Core, id: i64) -> Result<Option<ExecutionRecord>, EngineError> {
    Ok(core.storage.get_execution(id).await?)
}

/// A page of executions matching `filter`, newest first.
pub async fn executions(
    core: &Core,
    filter: &ExecutionFilter,
    page: &Page,
) -> Result<Vec<ExecutionRecord>, EngineError> {
    Ok(core.storage.list_executions(filter, page).await?)
}

/// What the executions of `action` of the last day used (the newest
/// 10,000 at most), for its percentiles.
pub async fn recent_resources(
    core: &Core,
    action: &str,
) -> Result<Vec<serde_json::Value>, EngineError> {
    let since = attune_storage::now_ms() - 86_400_000;
    Ok(core.storage.resources_since(action, since, 10_000).await?)
}

/// Every attempt of an execution, first first.
pub async fn attempts(core: &Core, execution: i64) -> Result<Vec<AttemptRecord>, EngineError> {
    Ok(core.storage.attempts_of(execution).await?)
}

/// Executions per status created since `recent` and since `earlier`.
pub async fn counts_since(
    core: &Core,
    recent: i64,
    earlier: i64,
) -> Result<Vec<(ExecutionStatus, i64, i64)>, EngineError> {
    Ok(core.storage.count_executions_since(recent, earlier).await?)
}

/// A page of events, newest first, of one trigger or all.
pub async fn events(
    core: &Core,
    trigger: Option<&str>,
    page: &Page,
) -> Result<Vec<EventRecord>, EngineError> {
    Ok(core.storage.list_events(trigger, page).await?)
}

/// One event.
pub async fn event(core: &Core, id: i64) -> Result<Option<EventRecord>, EngineError> {
    Ok(core.storage.get_event(id).await?)
}

/// The event an enforcement was made of.
pub async fn event_of_enforcement(
    core: &Core,
    enforcement: i64,
) -> Result<Option<i64>, EngineError> {
    Ok(core.storage.event_of_enforcement(enforcement).await?)
}

/// The enforcements of these events: (event, rule, outcome).
pub async fn enforcements_of_events(
    core: &Core,
    events: &[i64],
) -> Result<Vec<(i64, String, String)>, EngineError> {
    Ok(core.storage.enforcements_of_events(events).await?)
}
