//! `/workers`: who can run what.

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::views::{PageQuery, WorkerView};
use super::{ApiQuery, AppState, Listing};
use crate::storage::Role;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
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
    let items = state.storage.list_workers(&page).await?;
    Ok(axum::Json(Listing::of(items, &page, |w| w.id.to_string())))
}
