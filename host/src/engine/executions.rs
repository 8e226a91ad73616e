//! Executions asked for directly (the API's `POST /executions`, the CLI's
//! `attune run`) and cancellation.
//!
//! A direct run is validated against the action's WIT-derived schema before
//! anything is stored, then queued through the event door, so concurrent
//! runs share one write.

use serde_json::Value;

use super::{Core, EngineError};
use crate::runtime::PathError;
use crate::storage::{ExecutionRecord, ExecutionStatus, NewExecution};
use crate::util::units::{millis, parse_duration};

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
}

/// Validates and queues a direct run; returns it as queued (`requested`,
/// with a reason when no live worker can serve it).
pub async fn request(core: &Core, run: RunRequest) -> Result<ExecutionRecord, EngineError> {
    let record = core
        .cache
        .action(&core.storage, &run.action)
        .await?
        .ok_or_else(|| EngineError::not_found("action", &run.action))?;
    let pack = core.pack(&record.component).await?;
    let action = pack
        .action(&record.name)
        .ok_or_else(|| EngineError::not_found("action", &run.action))?;
    if let Err(errors) = action.validate(&run.params) {
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
    if !errors.is_empty() {
        return Err(EngineError::invalid("the request is invalid", "", errors));
    }
    let served = super::worker::served(core, &record.capabilities).await?;
    let new = NewExecution {
        action: record.r#ref.clone(),
        params: run.params,
        capabilities: record.capabilities.clone(),
        status_reason: (!served).then(|| {
            format!(
                "waiting for a worker with {}",
                record.capabilities.join(", ")
            )
        }),
        rule: None,
        enforcement: None,
        max_attempts,
        timeout_ms,
        sealed_params: None,
    };
    core.ingest.run(core, new).await
}

/// Asks for an execution to be cancelled: a queued one ends at once, a
/// running one is interrupted (now, when this process runs it; at its
/// worker's next heartbeat otherwise) and turns `cancelled` when reported.
pub async fn cancel(core: &Core, id: i64) -> Result<ExecutionRecord, EngineError> {
    let e = core
        .storage
        .cancel_execution(id)
        .await?
        .ok_or_else(|| EngineError::not_found("execution", id))?;
    if e.status == ExecutionStatus::Running {
        core.dispatch.cancel(id);
    }
    Ok(e)
}
