//! `/workers`: who can run what, and an admin's reassignment of a worker
//! to another token (the worker protocol itself is `api::worker_protocol`).

use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::views::{PageQuery, WorkerView};
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::records::Role;
use attune_engine::worker::standalone;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(reassign))
}

/// Lists registered workers with their capabilities and last heartbeat.
#[utoipa::path(get, path = "/workers", tag = "workers", params(PageQuery),
    responses((status = 200, body = Listing<WorkerView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<WorkerView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = page.checked(super::views::Keyed::Id)?;
    let items = standalone::list(&state, &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |w| w.id.to_string())))
}

/// The token a worker is given to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reassignment {
    /// Id of a live `worker` or `admin` token (see `GET /tokens`).
    pub token: i64,
}

/// Gives a worker to another token: from then on only that token can
/// register it, heartbeat, claim and report as it, the executions it holds
/// included (the previous token is out at once). Admin only, and the only
/// way a worker changes hands, e.g. after its token was revoked or leaked.
#[utoipa::path(post, path = "/workers/{id}/reassign", tag = "workers", request_body = Reassignment,
    params(("id" = i64, Path, description = "Worker id")),
    responses((status = 200, body = WorkerView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "A server's own worker", body = ErrorBody),
              (status = 422, description = "No live worker or admin token with that id", body = ErrorBody)))]
async fn reassign(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(input): ApiJson<Reassignment>,
) -> Result<axum::Json<WorkerView>, ApiError> {
    caller.require(Role::Admin)?;
    let w = standalone::reassign(&state, id, input.token)
        .await?
        .ok_or_else(|| ApiError::not_found("worker", id))?;
    tracing::info!(worker = w.id, name = %w.name, token = input.token, by = caller.token.id, "worker reassigned");
    Ok(axum::Json(w.into()))
}
