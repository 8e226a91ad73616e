//! The worker API: how standalone `attune worker` processes register,
//! heartbeat, claim (long-poll), fetch components and report results. The
//! types are the engine's protocol types (`engine::worker::protocol`),
//! shared with the standalone worker.
//!
//! Routes need a `worker` (or `admin`) token, and a worker's routes the
//! token that owns it: the one that registered it, until an admin
//! reassigns it (`POST /workers/{id}/reassign`). Claims long-poll: with nothing
//! to do the request waits for work to be queued (or `wait` to pass), so an
//! idle worker costs one request per poll period, not a loop of queries.
//! A claim marks what it returns running for the worker (one statement for
//! the batch), and results arrive in batches (one statement each), so a
//! standalone worker costs the database what the embedded one does.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::json::ApiJson;
use super::views::WorkerView;
use super::{ApiPath, ApiQuery, AppState};
use attune_engine::records::{Role, WorkerRecord};
use attune_engine::worker::protocol::{
    Assignment, Beat, KvCall, KvReply, MAX_REPORTS, Recorded, Registration, Release, Released,
    Report,
};
use attune_engine::worker::standalone;

/// Longest a claim waits for work.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Most executions one claim returns.
const MAX_CLAIM: i64 = 256;

/// Largest `results` body: a full batch of reports with capped output.
const MAX_RESULTS_BYTES: usize = 64 << 20;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(claim))
        .routes(routes!(component))
        .routes(routes!(kv))
        .routes(routes!(release))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(results))
                .layer(DefaultBodyLimit::max(MAX_RESULTS_BYTES)),
        )
}

/// Caps on what a registration may carry.
const MAX_NAME: usize = 128;
const MAX_ENTRIES: usize = 256;
const MAX_ENTRY: usize = 256;

/// A name of 1 to 128 characters, at most 256 capabilities and labels of
/// at most 256 characters each, and labels an object of strings: a 422
/// naming every problem.
fn check_registration(input: &Registration) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let mut problem = |path: String, message: &str| {
        errors.push(attune_runtime::PathError {
            path,
            message: message.to_string(),
        })
    };
    if input.name.trim().is_empty() || input.name.chars().count() > MAX_NAME {
        problem("/name".into(), "must be 1 to 128 characters");
    }
    if input
        .name
        .starts_with(attune_engine::worker::embedded::EMBEDDED_PREFIX)
    {
        problem(
            "/name".into(),
            "names beginning `embedded@` are the servers' own workers'",
        );
    }
    if input.capabilities.len() > MAX_ENTRIES {
        problem("/capabilities".into(), "at most 256 capabilities");
    }
    for (i, c) in input.capabilities.iter().enumerate() {
        if c.is_empty() || c.len() > MAX_ENTRY {
            problem(format!("/capabilities/{i}"), "must be 1 to 256 bytes");
        }
    }
    match &input.labels {
        serde_json::Value::Null => {}
        serde_json::Value::Object(labels) => {
            if labels.len() > MAX_ENTRIES {
                problem("/labels".into(), "at most 256 labels");
            }
            for (k, v) in labels {
                let fits = k.len() <= MAX_ENTRY && v.as_str().is_some_and(|v| v.len() <= MAX_ENTRY);
                if !fits {
                    let key = k.replace('~', "~0").replace('/', "~1");
                    problem(
                        format!("/labels/{key}"),
                        "must be a string of at most 256 bytes",
                    );
                }
            }
        }
        _ => problem("/labels".into(), "must be an object of strings"),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "the registration is invalid",
            "",
            &errors,
        ))
    }
}

/// Registers (or re-registers) a worker.
#[utoipa::path(post, path = "/workers", tag = "workers", request_body = Registration,
    responses((status = 200, body = WorkerView),
              (status = 403, description = "The name belongs to another token", body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<Registration>,
) -> Result<axum::Json<WorkerView>, ApiError> {
    caller.require(Role::Worker)?;
    check_registration(&input)?;
    let labels = if input.labels.is_null() {
        serde_json::json!({})
    } else {
        input.labels
    };
    let w = standalone::register(
        &state,
        &caller.token,
        &input.name,
        &input.capabilities,
        &labels,
    )
    .await?;
    Ok(axum::Json(w.into()))
}

/// Worker `id`, if the caller's token owns it.
async fn worker(state: &AppState, caller: &Caller, id: i64) -> Result<WorkerRecord, ApiError> {
    Ok(standalone::owned(state, &caller.token, id).await?)
}

/// Hands back executions this worker claimed but never began (a clean
/// stop): they are queued again on the same attempt, for any worker.
#[utoipa::path(post, path = "/workers/{id}/release", tag = "workers", request_body = Release,
    params(("id" = i64, Path, description = "Worker id")),
    responses((status = 200, body = Released), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn release(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(input): ApiJson<Release>,
) -> Result<axum::Json<Released>, ApiError> {
    caller.require(Role::Worker)?;
    worker(&state, &caller, id).await?;
    if input.executions.len() > MAX_REPORTS {
        return Err(ApiError::Invalid {
            message: "too many executions".into(),
            details: vec![ErrorDetail {
                path: "/executions".into(),
                message: format!("at most {MAX_REPORTS} at once"),
            }],
        });
    }
    let released = standalone::release(&state, id, &input.executions).await?;
    Ok(axum::Json(Released { released }))
}

/// Performs one `attune:action/kv` call of an execution this worker is
/// running, on the keys of its action's pack. A refused call (a cap, not a
/// number) is a 200 whose `error` says why, as the guest sees it.
#[utoipa::path(post, path = "/workers/{id}/executions/{execution}/kv", tag = "workers",
    request_body = KvCall,
    params(("id" = i64, Path, description = "Worker id"),
           ("execution" = i64, Path, description = "Execution id")),
    responses((status = 200, body = KvReply), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn kv(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, execution)): ApiPath<(i64, i64)>,
    ApiJson(call): ApiJson<KvCall>,
) -> Result<axum::Json<KvReply>, ApiError> {
    caller.require(Role::Worker)?;
    worker(&state, &caller, id).await?;
    let reply = match standalone::kv(&state, id, execution, call).await? {
        Ok(value) => KvReply { value, error: None },
        Err(err) => KvReply {
            value: serde_json::Value::Null,
            error: Some(err.into()),
        },
    };
    Ok(axum::Json(reply))
}

/// Extends the worker's leases; answers which of its executions were cancelled.
#[utoipa::path(post, path = "/workers/{id}/heartbeat", tag = "workers",
    params(("id" = i64, Path, description = "Worker id")),
    responses((status = 200, body = Beat), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<Beat>, ApiError> {
    caller.require(Role::Worker)?;
    worker(&state, &caller, id).await?;
    let (cancel, lease_ms) = standalone::heartbeat(&state, id).await?;
    Ok(axum::Json(Beat { cancel, lease_ms }))
}

/// How much to claim and how long to wait.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClaimQuery {
    /// Most executions to take (1-256, default 1).
    pub max: Option<i64>,
    /// Longest to wait for work, in ms (default 20000, at most 30000).
    pub wait_ms: Option<u64>,
}

/// Claims executions this worker can run, marked running for it; waits for
/// work when there is none.
#[utoipa::path(post, path = "/workers/{id}/claim", tag = "workers", params(("id" = i64, Path, description = "Worker id"), ClaimQuery),
    responses((status = 200, body = Vec<Assignment>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ClaimQuery>,
) -> Result<axum::Json<Vec<Assignment>>, ApiError> {
    caller.require(Role::Worker)?;
    let w = worker(&state, &caller, id).await?;
    let max = q.max.unwrap_or(1).clamp(1, MAX_CLAIM);
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(20_000)).min(MAX_WAIT);
    Ok(axum::Json(standalone::claim(&state, &w, max, wait).await?))
}

/// Records how executions ended, a batch at a time.
#[utoipa::path(post, path = "/workers/{id}/results", tag = "workers", request_body = Vec<Report>,
    params(("id" = i64, Path, description = "Worker id")),
    responses((status = 200, description = "Per report, whether it was still this worker's", body = Recorded),
              (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn results(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(reports): ApiJson<Vec<Report>>,
) -> Result<axum::Json<Recorded>, ApiError> {
    caller.require(Role::Worker)?;
    worker(&state, &caller, id).await?;
    if reports.len() > MAX_REPORTS {
        return Err(ApiError::TooLarge(format!(
            "at most {MAX_REPORTS} reports a request"
        )));
    }
    let details: Vec<ErrorDetail> = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.status.is_reportable())
        .map(|(n, _)| ErrorDetail {
            path: format!("/{n}/status"),
            message: "expected succeeded, failed, timed_out or cancelled".into(),
        })
        .collect();
    if !details.is_empty() {
        return Err(ApiError::Invalid {
            message: "a report has a status a worker cannot report".into(),
            details,
        });
    }
    // A journal is kept only when the server records journals, and only
    // as large as its cap allows (with room for params and result).
    let cap = state.core.config.journal_cap;
    let bound = cap.saturating_mul(2).saturating_add(4 << 20);
    let items: Vec<_> = reports
        .into_iter()
        .map(|mut r| {
            if cap == 0 {
                r.journal = None;
            }
            if let Some(j) = &mut r.journal {
                let size = serde_json::to_vec(&*j).map_or(usize::MAX, |t| t.len());
                if size > bound {
                    // Nothing of it is kept but why.
                    j.calls = Vec::new();
                    j.params = serde_json::Value::Null;
                    (j.result, j.error) = (None, None);
                    j.not_replayable = Some(format!(
                        "its worker's journal was {size} bytes, past this server's bound of {bound}"
                    ));
                }
            }
            (r.id, id, r.into_finished())
        })
        .collect();
    let recorded = attune_engine::executions::finish(&state, &items)
        .await
        .map_err(attune_engine::EngineError::from)?;
    Ok(axum::Json(Recorded { recorded }))
}

/// Downloads a component by digest.
#[utoipa::path(get, path = "/components/{digest}", tag = "workers",
    params(("digest" = String, Path, description = "SHA-256, hex")),
    responses((status = 200, content_type = "application/wasm", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn component(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(digest): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    caller
        .require(Role::Worker)
        .or_else(|_| caller.require(Role::Viewer))?;
    let bytes = standalone::component(&state, &digest).await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes))
}
