//! Workers: who can run what, the protocol between the server and
//! standalone workers, the one function that runs an assignment, and the
//! worker embedded in `attune serve`.
//!
//! - [`protocol`] — the types both sides of the worker API share.
//! - [`run`] — runs one assignment in the sandbox and produces its report;
//!   the embedded worker and `attune worker` both call it.
//! - [`standalone`] — the server's side of the protocol, and workers' registry.
//! - [`embedded`] — claims, starts and reports through the database directly.

pub mod embedded;
pub mod pace;
pub mod protocol;
pub mod run;
pub mod standalone;

use super::cache::PackGrants;
use super::{Core, EngineError};
use attune_storage::{ActionRecord, ExecutionRecord, now_ms};

/// The capabilities every worker of this build advertises: the runtime kind
/// and each host interface it links, as the runtime lists them.
pub fn capabilities() -> Vec<String> {
    attune_runtime::capabilities::advertised()
}

/// Whether a live worker advertises every one of `capabilities`.
pub async fn served(core: &Core, capabilities: &[String]) -> Result<bool, EngineError> {
    let cutoff = now_ms() - core.config.worker_ttl_ms();
    Ok(core.cache.workers(&core.storage).await?.iter().any(|w| {
        w.last_heartbeat >= cutoff && capabilities.iter().all(|c| w.capabilities.contains(c))
    }))
}

/// The assignment of a claimed execution of `action`, with what its pack is
/// granted: where it may send HTTP requests, and the secrets it may read
/// (its real params opened when its record masks secrets). The embedded
/// worker and the worker API both build assignments here.
pub async fn assign(
    core: &Core,
    execution: &ExecutionRecord,
    action: ActionRecord,
) -> Result<(protocol::Assignment, std::sync::Arc<PackGrants>), EngineError> {
    // Through the read cache: a claim of hundreds of executions of one
    // pack reads its grants once.
    let grants = core.cache.grants(&core.storage, &action.pack).await?;
    let mut assignment = protocol::Assignment::of(execution, action.component, action.name);
    assignment
        .allowed_outbound_hosts
        .clone_from(&grants.grants.allowed_outbound_hosts);
    assignment.quotas = super::packs::quotas(&grants.grants).unwrap_or_else(|errors| {
        tracing::warn!(pack = %action.pack, ?errors, "ignoring an invalid quota");
        attune_runtime::Quotas::default()
    });
    assignment.propagate_trace = grants.grants.propagate_trace != Some(false);
    let cap = core.config.journal_cap;
    assignment.journal_cap = (grants.record && cap > 0).then_some(cap as u64);
    if execution.sealed_params.is_some() || !grants.grants.secrets.is_empty() {
        let (params, secrets) =
            super::secrets::for_run(core, execution, &grants.grants.secrets).await?;
        assignment.params = params;
        assignment.secrets = secrets;
    }
    Ok((assignment, grants))
}
