//! The worker protocol: how standalone `attune worker` processes register,
//! heartbeat, claim (long-poll), fetch components and report results.
//!
//! Routes need a `worker` (or `admin`) token. Claims long-poll: with nothing
//! to do the request waits for work to be queued (or `wait` to pass), so an
//! idle worker costs one request per poll period, not a loop of queries.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::{ApiQuery, AppState};
use crate::storage::{ExecutionRecord, Finished, Role, WorkerRecord};

/// Longest a claim may wait for work.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(claim))
        .routes(routes!(start))
        .routes(routes!(finish))
        .routes(routes!(component))
}

/// A worker announcing itself.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Unique name; registering again with the same name refreshes it.
    pub name: String,
    /// What it can run.
    pub capabilities: Vec<String>,
    /// Free labels, e.g. `{"region": "eu"}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub labels: Value,
}

/// Registers (or refreshes) a worker.
#[utoipa::path(post, path = "/workers", tag = "workers", request_body = Registration,
    responses((status = 200, body = WorkerRecord), (status = 403, body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<Registration>,
) -> Result<axum::Json<WorkerRecord>, ApiError> {
    caller.require(Role::Worker)?;
    let labels = if input.labels.is_null() {
        serde_json::json!({})
    } else {
        input.labels
    };
    let w = state
        .storage
        .upsert_worker(&input.name, &input.capabilities, &labels)
        .await?;
    Ok(axum::Json(w))
}

/// What a heartbeat tells the worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct Beat {
    /// Running executions of this worker whose cancellation was asked.
    pub cancel: Vec<i64>,
    /// The lease length in ms: heartbeat well within it.
    pub lease_ms: i64,
}

async fn worker(state: &AppState, id: i64) -> Result<WorkerRecord, ApiError> {
    state
        .storage
        .get_worker(id)
        .await?
        .ok_or_else(|| ApiError::not_found("worker", id))
}

/// Extends the worker's leases; answers which executions to cancel.
#[utoipa::path(post, path = "/workers/{id}/heartbeat", tag = "workers",
    params(("id" = i64, Path, description = "Worker id")),
    responses((status = 200, body = Beat), (status = 404, body = ErrorBody)))]
async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<Beat>, ApiError> {
    caller.require(Role::Worker)?;
    worker(&state, id).await?;
    let lease_ms = state.config.lease_ms;
    state.storage.heartbeat(id, lease_ms).await?;
    let cancel = state.storage.cancel_requests(id).await?;
    Ok(axum::Json(Beat { cancel, lease_ms }))
}

/// How much to claim and how long to wait.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClaimQuery {
    /// Most executions to claim (default 1).
    pub max: Option<i64>,
    /// Longest to wait for work, in ms (default 20000, at most 30000).
    pub wait_ms: Option<u64>,
}

/// A claimed execution and how to run it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    /// The execution.
    pub execution: ExecutionRecord,
    /// Digest of the component to run (`GET /components/{digest}`).
    pub component: String,
    /// The export (action name within its pack).
    pub export: String,
}

/// Claims executions this worker can run, waiting for work when there is none.
#[utoipa::path(post, path = "/workers/{id}/claim", tag = "workers", params(("id" = i64, Path, description = "Worker id"), ClaimQuery),
    responses((status = 200, body = Vec<Assignment>), (status = 404, body = ErrorBody)))]
async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    ApiQuery(q): ApiQuery<ClaimQuery>,
) -> Result<axum::Json<Vec<Assignment>>, ApiError> {
    caller.require(Role::Worker)?;
    let w = worker(&state, id).await?;
    let max = q.max.unwrap_or(1).clamp(1, 100);
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(20_000)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register interest before looking, so a wake-up in between is not lost.
        let notified = state.dispatch.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let claimed = state
            .storage
            .claim(id, &w.capabilities, max, state.config.lease_ms, false)
            .await?;
        if !claimed.is_empty() {
            let mut out = Vec::with_capacity(claimed.len());
            for e in claimed {
                let action = state.cache.action(&state.storage, &e.action).await?;
                match action {
                    Some(a) => out.push(Assignment {
                        component: a.component,
                        export: a.name,
                        execution: e,
                    }),
                    None => {
                        let gone = Finished::without_output(
                            "failed",
                            format!("action {} is no longer registered", e.action),
                        );
                        state.storage.finish(e.id, id, &gone).await?;
                    }
                }
            }
            return Ok(axum::Json(out));
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Ok(axum::Json(Vec::new()));
        }
    }
}

/// Marks a claimed execution running.
#[utoipa::path(post, path = "/workers/{id}/executions/{execution}/start", tag = "workers",
    params(("id" = i64, Path, description = "Worker id"), ("execution" = i64, Path, description = "Execution id")),
    responses((status = 204), (status = 409, description = "No longer this worker's", body = ErrorBody)))]
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, execution)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Worker)?;
    if state.storage.mark_running(execution, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Conflict(format!(
            "execution {execution} is not held by worker {id}"
        )))
    }
}

/// How an execution ended, as a worker reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// succeeded, failed, timed_out or cancelled.
    pub status: String,
    /// Result value.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
    /// Error value or message.
    #[schema(value_type = Object)]
    pub error: Option<Value>,
    /// Captured stdout.
    #[serde(default)]
    pub stdout: String,
    /// Captured stderr.
    #[serde(default)]
    pub stderr: String,
    /// Log lines.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub logs: Value,
}

/// Records how an execution ended.
#[utoipa::path(post, path = "/workers/{id}/executions/{execution}/finish", tag = "workers", request_body = Report,
    params(("id" = i64, Path, description = "Worker id"), ("execution" = i64, Path, description = "Execution id")),
    responses((status = 204), (status = 409, description = "No longer this worker's (lease expired)", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn finish(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, execution)): Path<(i64, i64)>,
    ApiJson(report): ApiJson<Report>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Worker)?;
    if !["succeeded", "failed", "timed_out", "cancelled"].contains(&report.status.as_str()) {
        return Err(ApiError::Invalid {
            message: "unknown status".into(),
            details: vec![super::error::ErrorDetail {
                path: "/status".into(),
                message: "expected succeeded, failed, timed_out or cancelled".into(),
            }],
        });
    }
    let finished = Finished {
        status: report.status,
        result: report.result,
        error: report.error,
        stdout: report.stdout,
        stderr: report.stderr,
        logs: if report.logs.is_null() {
            serde_json::json!([])
        } else {
            report.logs
        },
        started_at: None,
    };
    if state.storage.finish(execution, id, &finished).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Conflict(format!(
            "execution {execution} is not held by worker {id}"
        )))
    }
}

/// Downloads a component by digest.
#[utoipa::path(get, path = "/components/{digest}", tag = "workers",
    params(("digest" = String, Path, description = "SHA-256, hex")),
    responses((status = 200, content_type = "application/wasm", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn component(
    State(state): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller
        .require(Role::Worker)
        .or_else(|_| caller.require(Role::Viewer))?;
    let bytes = match state.files.read(&digest) {
        Ok(b) => b,
        Err(_) => state
            .storage
            .component_bytes(&digest)
            .await?
            .ok_or_else(|| ApiError::not_found("component", &digest))?,
    };
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes))
}
