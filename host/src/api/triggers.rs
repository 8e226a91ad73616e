//! `/trigger-types`: what rules can listen to.

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::views::{PageQuery, TriggerTypeView};
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::catalog;
use attune_engine::records::Role;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// Lists trigger types with their parameter and payload schemas.
#[utoipa::path(get, path = "/trigger-types", tag = "triggers", params(PageQuery),
    responses((status = 200, body = Listing<TriggerTypeView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<TriggerTypeView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = page.checked(super::views::Keyed::Ref)?;
    let items = catalog::trigger_types(&state, &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |t| t.r#ref.clone())))
}

/// Shows one trigger type.
#[utoipa::path(get, path = "/trigger-types/{ref}", tag = "triggers",
    params(("ref" = String, Path, description = "Trigger type ref, e.g. core.interval")),
    responses((status = 200, body = TriggerTypeView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<axum::Json<TriggerTypeView>, ApiError> {
    caller.require(Role::Viewer)?;
    let t = catalog::trigger_type(&state, &r#ref)
        .await?
        .ok_or_else(|| ApiError::not_found("trigger type", &r#ref))?;
    Ok(axum::Json(t.into()))
}
