//! The server's side of the worker protocol: what a standalone worker asks
//! of the engine through the API, each call checked against the worker's
//! owner (the token that registered it, or that an admin gave it to).

use std::time::Duration;

use attune_storage::{ExecutionStatus, Finished, Role, StorageError, TokenRecord, WorkerRecord};
use serde_json::Value;

use super::protocol::{Assignment, KvCall};
use crate::{Core, EngineError};

/// Registers (or re-registers) a worker for `token`. Every registration
/// records its token, an admin's too: a worker's name, and the executions
/// it holds, are its owner's alone. An admin may adopt a worker nobody
/// owns; a name another token owns is refused.
pub async fn register(
    core: &Core,
    token: &TokenRecord,
    name: &str,
    capabilities: &[String],
    labels: &Value,
) -> Result<WorkerRecord, EngineError> {
    let adopt_unowned = token.role == Role::Admin;
    let w = core
        .storage
        .upsert_worker(name, capabilities, labels, token.id, adopt_unowned)
        .await
        .map_err(|e| match e {
            StorageError::Conflict(m) => EngineError::Denied(m),
            other => other.into(),
        })?;
    core.cache.workers_changed();
    Ok(w)
}

/// Worker `id`, if `token` may act as it: only the token that owns it. Not
/// any admin: a token acting as a worker can finish the executions the
/// worker holds with any result, so it is one token's, whatever its role.
pub async fn owned(core: &Core, token: &TokenRecord, id: i64) -> Result<WorkerRecord, EngineError> {
    let w = core
        .storage
        .get_worker(id)
        .await?
        .ok_or_else(|| EngineError::not_found("worker", id))?;
    if w.token == Some(token.id) {
        Ok(w)
    } else {
        Err(EngineError::Denied(format!(
            "worker {id} belongs to another token"
        )))
    }
}

/// Hands back executions the worker claimed but never began (a clean
/// stop): queued again on the same attempt, for any worker. How many.
pub async fn release(core: &Core, worker: i64, executions: &[i64]) -> Result<u64, EngineError> {
    let released = core.storage.release_unstarted(worker, executions).await?;
    if released > 0 {
        core.dispatch.work_queued(&core.storage).await;
    }
    Ok(released)
}

/// Performs one `attune:action/kv` call of `execution`, which must be
/// running on `worker`, on the keys of its action's pack. The inner error
/// is the guest's (a cap, not a number), the outer one the request's.
pub async fn kv(
    core: &Core,
    worker: i64,
    execution: i64,
    call: KvCall,
) -> Result<Result<Value, attune_runtime::kv::KvError>, EngineError> {
    let e = core
        .storage
        .get_execution(execution)
        .await?
        .ok_or_else(|| EngineError::not_found("execution", execution))?;
    if e.worker != Some(worker) || e.status != ExecutionStatus::Running {
        return Err(EngineError::Denied(format!(
            "execution {execution} is not running on worker {worker}"
        )));
    }
    let action = core
        .cache
        .action(&core.storage, &e.action)
        .await?
        .ok_or_else(|| EngineError::not_found("action", &e.action))?;
    Ok(crate::kv::answer(&core.storage, &action.pack, call).await)
}

/// Extends the worker's leases; answers which of its executions were
/// cancelled, and the lease in ms.
pub async fn heartbeat(core: &Core, worker: i64) -> Result<(Vec<i64>, i64), EngineError> {
    let lease_ms = core.config.lease_ms();
    core.storage.heartbeat(worker, lease_ms).await?;
    let cancel = core.storage.cancel_requests(worker).await?;
    Ok((cancel, lease_ms))
}

/// Claims up to `max` executions `w` can run, marked running for it,
/// waiting up to `wait` for work when there is none (empty then).
pub async fn claim(
    core: &Core,
    w: &WorkerRecord,
    max: i64,
    wait: Duration,
) -> Result<Vec<Assignment>, EngineError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register interest before looking, so a wake-up in between is not lost.
        let notified = core.dispatch.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let claimed = core
            .storage
            .claim(w.id, &w.capabilities, max, core.config.lease_ms(), true)
            .await?;
        if !claimed.is_empty() {
            core.metrics.claims_per_batch.observe(claimed.len() as f64);
            let mut out = Vec::with_capacity(claimed.len());
            let mut gone = Vec::new();
            for e in claimed {
                core.metrics.queued(e.created_at);
                match core.cache.action(&core.storage, &e.action).await? {
                    Some(a) => out.push(super::assign(core, &e, a).await?.0),
                    None => gone.push((
                        e.id,
                        w.id,
                        Finished::without_output(
                            ExecutionStatus::Failed,
                            format!("action {} is no longer registered", e.action),
                        ),
                    )),
                }
            }
            crate::executions::finish(core, &gone).await?;
            if !out.is_empty() {
                return Ok(out);
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(Vec::new());
        }
    }
}

/// A component's bytes by digest: from the component directory, or the
/// database when this node has not written it out.
pub async fn component(core: &Core, digest: &str) -> Result<Vec<u8>, EngineError> {
    match core.files.read(digest) {
        Ok(b) => Ok(b),
        Err(_) => core
            .storage
            .component_bytes(digest)
            .await?
            .ok_or_else(|| EngineError::not_found("component", digest)),
    }
}

/// A page of workers, by id.
pub async fn list(
    core: &Core,
    page: &attune_storage::Page,
) -> Result<Vec<WorkerRecord>, EngineError> {
    Ok(core.storage.list_workers(page).await?)
}

/// Gives worker `id` to the live worker or admin token `token`: from then
/// on only that token can act as it. `None` when there is no such worker;
/// [`EngineError::Invalid`] when the token does not fit.
pub async fn reassign(
    core: &Core,
    id: i64,
    token: i64,
) -> Result<Option<WorkerRecord>, EngineError> {
    let fits = core
        .storage
        .get_live_token(token)
        .await?
        .is_some_and(|t| matches!(t.role, Role::Worker | Role::Admin));
    if !fits {
        return Err(EngineError::invalid(
            "the worker cannot be given to that token",
            "",
            vec![attune_runtime::PathError::new(
                "/token",
                "must be the id of a live worker or admin token",
            )],
        ));
    }
    let w = core.storage.reassign_worker(id, token).await?;
    if w.is_some() {
        core.cache.workers_changed();
    }
    Ok(w)
}
