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

/// Workers whose last heartbeat is recent enough.
pub(super) async fn live_workers(state: &AppState) -> Result<Vec<WorkerRecord>, ApiError> {
    let cutoff = now_ms() - state.config.worker_ttl_ms;
    let mut live = Vec::new();
    let mut page = Page {
        limit: Some(crate::storage::MAX_PAGE),
        after: None,
    };
    loop {
        let batch = state.storage.list_workers(&page).await?;
        let done = (batch.len() as i64) < crate::storage::MAX_PAGE;
        page.after = batch.last().map(|w| w.id.to_string());
        live.extend(batch.into_iter().filter(|w| w.last_heartbeat >= cutoff));
        if done {
            return Ok(live);
        }
    }
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
