//! Replay: an execution run again on this server against its journal —
//! the component that ran, or another registered version of its pack —
//! with every host call answered from what the first run received.
//! Nothing leaves the sandbox, no key is written and nothing is recorded:
//! the answer is a report, not an execution.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use super::{Core, EngineError};
use attune_runtime::journal::same_value;
use attune_runtime::kv::KvState;
use attune_runtime::{
    Divergence, ExecutionContext, ExecutionRequest, Journal, JournalMode, Limits,
};

/// Replays one node runs at once: each takes a sandbox slot that
/// executions would otherwise use.
const CONCURRENT_REPLAYS: usize = 2;

/// Longest a replay waits for its turn before the answer is 503.
const TURN_WAIT: Duration = Duration::from_secs(10);

static REPLAYS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(CONCURRENT_REPLAYS));

/// How a replay compared with the run it replayed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayReport {
    /// Same status, result and error, and no divergence.
    pub identical: bool,
    /// The replay's result.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The recorded run's result.
    #[schema(value_type = Option<Object>)]
    pub original_result: Option<Value>,
    /// Where the replay first asked for what the journal did not hold.
    pub divergence: Option<Divergence>,
    /// The replay's status: succeeded, failed or timed_out.
    pub status: String,
    /// The recorded run's status.
    pub original_status: String,
    /// The replay's error.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// The recorded run's error.
    #[schema(value_type = Option<Object>)]
    pub original_error: Option<Value>,
    /// The execution replayed.
    pub execution: i64,
    /// Digest of the component that ran the replay.
    pub component: String,
    /// The pack version replayed, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_version: Option<String>,
}

/// Replays execution `id`, with `pack_version` of its pack instead of the
/// component that ran when given.
pub async fn replay(
    core: &Core,
    id: i64,
    pack_version: Option<&str>,
) -> Result<ReplayReport, EngineError> {
    // The turn first: what follows reads the journal and loads a component.
    let busy = || EngineError::Unavailable("other replays are running; retry later".into());
    let _turn = tokio::time::timeout(TURN_WAIT, REPLAYS.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let execution = core
        .storage
        .get_execution(id)
        .await?
        .ok_or_else(|| EngineError::NotFound(format!("no execution {id}")))?;
    let stored = core.storage.journal(id).await?.ok_or_else(|| {
        EngineError::Conflict(format!(
            "execution {id} has no journal: it has not ended, never ran in a sandbox, \
             or its pack records none (`record = false`)"
        ))
    })?;
    if let Some(why) = &stored.not_replayable {
        return Err(EngineError::Conflict(format!(
            "execution {id} is not replayable: {why}"
        )));
    }
    let journal: Journal = serde_json::from_value(stored.journal).map_err(|e| {
        EngineError::Internal(anyhow::anyhow!("the journal of execution {id}: {e}"))
    })?;
    let (pack, name) = execution
        .action
        .split_once('.')
        .unwrap_or((execution.action.as_str(), ""));
    // What the journal says ran is checked against what this server
    // registered: a standalone worker wrote it.
    if journal.action != name {
        return Err(EngineError::Conflict(format!(
            "the journal of execution {id} is of another action ({})",
            journal.action
        )));
    }
    let component = match pack_version {
        None => {
            if !core
                .storage
                .was_component_of(pack, name, &stored.component)
                .await?
            {
                return Err(EngineError::NotFound(format!(
                    "the component execution {id} ran is no longer a version of pack {pack}"
                )));
            }
            stored.component
        }
        Some(version) => core
            .storage
            .versioned_component(pack, version, &journal.action)
            .await?
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "pack {pack} has no version {version} with the action {}",
                    journal.action
                ))
            })?,
    };
    let loaded = core.component(&component).await?;
    // The secrets are read now, through the pack's grant as it is now.
    let grants = core.cache.grants(&core.storage, pack).await?;
    let (_, secrets) = super::secrets::for_run(core, &execution, &grants.grants.secrets).await?;
    let limits = Limits {
        timeout: execution.timeout_ms.map_or(Duration::from_secs(30), |ms| {
            Duration::from_millis(ms.max(0) as u64)
        }),
        ..core.runtime.config().default_limits
    };
    // The server's record of the run, not the journal's, is what the
    // replay is compared with.
    let original_status = execution.status.as_str().to_string();
    let request = ExecutionRequest {
        action: journal.action.clone(),
        params: execution.params.clone(),
        limits: Some(limits),
        allowed_hosts: grants.outbound.clone(),
        secrets: Arc::new(secrets.to_set()),
        kv: KvState(None),
        context: ExecutionContext {
            id: id.to_string(),
            action: execution.action.clone(),
            attempt: execution.attempt.clamp(1, u32::MAX as i64) as u32,
            depth: execution.depth,
        },
        output: None,
        quotas: super::packs::quotas(&grants.grants).unwrap_or_default(),
        journal: JournalMode::Replay(Arc::new(journal)),
        // A replay sends nothing.
        traceparent: None,
    };
    let outcome = loaded
        .execute(&core.runtime, request)
        .await
        .map_err(|e| EngineError::Conflict(format!("the replay could not run: {e}")))?;
    let status = outcome.status.as_str().to_string();
    let identical = outcome.divergence.is_none()
        && status == original_status
        && same_value(&outcome.result, &execution.result)
        && same_value(&outcome.error, &execution.error);
    Ok(ReplayReport {
        identical,
        result: outcome.result,
        original_result: execution.result,
        divergence: outcome.divergence,
        status,
        original_status,
        error: outcome.error,
        original_error: execution.error,
        execution: id,
        component,
        pack_version: pack_version.map(str::to_string),
    })
}
