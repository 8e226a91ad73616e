//! `/actions`: registered actions with their schemas and capabilities.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::views::ActionView;
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::catalog;
use attune_engine::records::Role;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// Filters for listing actions.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionQuery {
    /// Only actions of this pack.
    pub pack: Option<String>,
    /// Items per page (1-500).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub after: Option<String>,
}

/// Lists actions by ref.
#[utoipa::path(get, path = "/actions", tag = "actions", params(ActionQuery),
    responses((status = 200, body = Listing<ActionView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ActionQuery>,
) -> Result<axum::Json<Listing<ActionView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = super::views::page(q.limit, q.after, super::views::Keyed::Ref)?;
    let items = catalog::actions(&state, q.pack.as_deref(), &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |a| a.r#ref.clone())))
}

/// Shows one action with its parameter and result schemas.
#[utoipa::path(get, path = "/actions/{ref}", tag = "actions",
    params(("ref" = String, Path, description = "Action ref, e.g. core.echo")),
    responses((status = 200, body = ActionView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<axum::Json<ActionView>, ApiError> {
    caller.require(Role::Viewer)?;
    let action = catalog::action(&state, &r#ref)
        .await?
        .ok_or_else(|| ApiError::not_found("action", &r#ref))?;
    Ok(axum::Json(action.into()))
}
