//! `/executions`: runs of actions; `POST` runs one directly.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::json::ApiJson;
use super::views::{AttemptView, ExecutionView};
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::executions;
use attune_engine::history;
use attune_engine::output::{self, Output};
use attune_engine::records::{ExecutionFilter, ExecutionRecord, ExecutionStatus, Role};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(attempts))
        .routes(routes!(cancel))
        .routes(routes!(replay))
        .routes(routes!(output))
}

/// Execution `id`, or 404.
async fn existing(state: &AppState, id: i64) -> Result<ExecutionRecord, ApiError> {
    history::execution(state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("execution", id))
}

/// One server-sent event of `GET /executions/{id}/output`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the stream for the document only
struct OutputEvent {
    /// `stdout` or `stderr` (new text), or `end` (the last event).
    #[schema(pattern = "^(stdout|stderr|end)$")]
    event: String,
    /// The new text; for `end`, a JSON object `{status, result, error}`.
    data: String,
}

/// Streams an execution's output as server-sent events: `stdout` and
/// `stderr` events carry new text as it is written (live when this node runs
/// it, at the end otherwise), then one `end` event with the status, result
/// and error.
#[utoipa::path(get, path = "/executions/{id}/output", tag = "executions",
    params(("id" = i64, Path, description = "Execution id")),
    responses((status = 200, description = "text/event-stream of stdout, stderr and end events", content_type = "text/event-stream", body = OutputEvent),
              (status = 404, body = ErrorBody)))]
async fn output(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError>
{
    caller.require(Role::Viewer)?;
    existing(&state, id).await?;
    use futures_util::StreamExt;
    let stream = output::stream(state.core.clone(), id).map(|piece| {
        Ok(match piece {
            Output::Stdout(text) => Event::default().event("stdout").data(text),
            Output::Stderr(text) => Event::default().event("stderr").data(text),
            Output::End(record) => {
                let end = serde_json::json!({"status": record.status, "result": record.result, "error": record.error});
                Event::default().event("end").data(end.to_string())
            }
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// An action to run now.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Action ref, e.g. `core.echo`.
    pub action: String,
    /// Parameters, checked against the action's schema.
    #[serde(default = "empty")]
    #[schema(value_type = Object)]
    pub params: Value,
    /// Timeout, e.g. `30s`; the server default when absent.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Attempts allowed (1-10, default 1).
    #[serde(default)]
    pub max_attempts: Option<i64>,
    /// Who asks, recorded on the execution (e.g. `mcp`); 1-64 characters.
    #[serde(default)]
    pub source: Option<String>,
}

fn empty() -> Value {
    Value::Object(Default::default())
}

/// Filters and paging for executions.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionQuery {
    /// `summary` (default: without params, result, stdout, stderr and
    /// logs) or `full`; the detail route always sends everything.
    pub fields: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only runs caused by this rule.
    pub rule: Option<String>,
    /// Only the tasks of this workflow execution.
    pub parent: Option<i64>,
    /// Only those created at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Items per page (1-500).
    pub limit: Option<i64>,
    /// Cursor (an execution id) from the previous page; newest first.
    pub after: Option<String>,
}

/// Queues a run of an action with checked parameters.
#[utoipa::path(post, path = "/executions", tag = "executions", request_body = RunRequest,
    responses(
        (status = 201, description = "Queued as requested", body = ExecutionView),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "Every parameter problem with its path", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiJson(input): ApiJson<RunRequest>,
) -> Result<(StatusCode, axum::Json<ExecutionView>), ApiError> {
    caller.require(Role::Operator)?;
    let execution = executions::request(
        &state,
        executions::RunRequest {
            action: input.action,
            params: input.params,
            timeout: input.timeout,
            max_attempts: input.max_attempts,
            source: input.source,
            requested_by: Some(caller.token.id),
            depth: attune_runtime::http::chain_depth(
                headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
            ),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(execution.into())))
}

/// Lists executions, newest first.
#[utoipa::path(get, path = "/executions", tag = "executions", params(ExecutionQuery),
    responses((status = 200, body = Listing<ExecutionView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExecutionQuery>,
) -> Result<axum::Json<Listing<ExecutionView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(ExecutionStatus::parse(s).ok_or_else(|| ApiError::Invalid {
            message: "unknown status".into(),
            details: vec![ErrorDetail {
                path: "/status".into(),
                message: format!(
                    "expected one of {}",
                    ExecutionStatus::ALL.map(ExecutionStatus::as_str).join(", ")
                ),
            }],
        })?),
    };
    let filter = ExecutionFilter {
        status,
        action: q.action,
        rule: q.rule,
        parent: q.parent,
        since: q.since,
    };
    let page = super::views::page(q.limit, q.after, super::views::Keyed::Id)?;
    let full = match q.fields.as_deref() {
        None | Some("summary") => false,
        Some("full") => true,
        Some(_) => {
            return Err(ApiError::Invalid {
                message: "unknown fields".into(),
                details: vec![ErrorDetail {
                    path: "/fields".into(),
                    message: "expected summary or full".into(),
                }],
            });
        }
    };
    let items = history::executions(&state, &filter, &page).await?;
    let mut listing: Listing<ExecutionView> = Listing::of(items, &page, |e| e.id.to_string());
    if !full {
        listing.items = listing
            .items
            .into_iter()
            .map(ExecutionView::summary)
            .collect();
    }
    Ok(axum::Json(listing))
}

/// Shows one execution with its result, error, output and logs.
#[utoipa::path(get, path = "/executions/{id}", tag = "executions",
    params(("id" = i64, Path, description = "Execution id")),
    responses((status = 200, body = ExecutionView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<ExecutionView>, ApiError> {
    caller.require(Role::Viewer)?;
    let mut view: ExecutionView = existing(&state, id).await?.into();
    view.workflow = attune_engine::workflows::progress(&state, id).await?;
    Ok(axum::Json(view))
}

/// The history of an execution: each attempt that ended (by a result, or
/// `abandoned` when its worker vanished), oldest first.
#[utoipa::path(get, path = "/executions/{id}/attempts", tag = "executions",
    params(("id" = i64, Path, description = "Execution id")),
    responses((status = 200, body = Listing<AttemptView>), (status = 404, body = ErrorBody)))]
async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<Listing<AttemptView>>, ApiError> {
    caller.require(Role::Viewer)?;
    existing(&state, id).await?;
    let items = history::attempts(&state, id).await?;
    Ok(axum::Json(Listing {
        items: items.into_iter().map(Into::into).collect(),
        next: None,
    }))
}

/// Cancels an execution: at once if it has not started, else its worker stops it.
#[utoipa::path(post, path = "/executions/{id}/cancel", tag = "executions",
    params(("id" = i64, Path, description = "Execution id")),
    responses((status = 200, body = ExecutionView), (status = 404, body = ErrorBody)))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<ExecutionView>, ApiError> {
    caller.require(Role::Operator)?;
    let e = executions::cancel(&state, id).await?;
    Ok(axum::Json(e.into()))
}

/// What to replay an execution with.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayInput {
    /// A registered version of the execution's pack to run instead of the
    /// component that ran.
    #[serde(default)]
    pack_version: Option<String>,
}

/// Runs an ended execution again against its journal: every host call is
/// answered from what the first run received, nothing leaves the sandbox,
/// no key is written and nothing is recorded. With `pack_version`, that
/// version of the action runs on the recorded world instead.
#[utoipa::path(post, path = "/executions/{id}/replay", tag = "executions",
    params(("id" = i64, Path, description = "Execution id")),
    request_body(content = Option<ReplayInput>, description = "Optional: `{\"pack_version\": \"0.2.0\"}`"),
    responses((status = 200, body = attune_engine::replay::ReplayReport),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, description = "Other replays are running", body = ErrorBody)))]
async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    input: Option<ApiJson<ReplayInput>>,
) -> Result<axum::Json<attune_engine::replay::ReplayReport>, ApiError> {
    caller.require(Role::Operator)?;
    let input = input.map(|ApiJson(i)| i).unwrap_or_default();
    if let Some(v) = &input.pack_version
        && (v.is_empty() || v.len() > 128)
    {
        return Err(ApiError::Invalid {
            message: "the pack version is 1 to 128 characters".into(),
            details: vec![ErrorDetail {
                path: "/pack_version".into(),
                message: "1 to 128 characters".into(),
            }],
        });
    }
    let report = attune_engine::replay::replay(&state, id, input.pack_version.as_deref()).await?;
    Ok(axum::Json(report))
}
