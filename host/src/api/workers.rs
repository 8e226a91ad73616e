//! `/workers`: who can run what.

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{ApiQuery, AppState, Listing};
use crate::storage::{Page, Role, WorkerRecord, now_ms};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Whether a live worker (recent heartbeat) covers `capabilities`. Read
/// through the one-second cache: direct runs ask this on every request.
pub(super) async fn served(state: &AppState, capabilities: &[String]) -> Result<bool, ApiError> {
    let cutoff = now_ms() - state.config.worker_ttl_ms;
    Ok(state.cache.workers(&state.storage).await?.iter().any(|w| {
        w.last_heartbeat >= cutoff && capabilities.iter().all(|c| w.capabilities.contains(c))
    }))
}

/// Lists registered workers with their capabilities and last heartbeat.
#[utoipa::path(get, path = "/workers", tag = "workers", params(Page),
    responses((status = 200, body = Listing<WorkerRecord>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<axum::Json<Listing<WorkerRecord>>, ApiError> {
    caller.require(Role::Viewer)?;
    let items = state.storage.list_workers(&page).await?;
    Ok(axum::Json(Listing::new(items, &page, |w| w.id.to_string())))
}
