//! `/policies`: every concurrency and rate policy with how its keys stand.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use attune_engine::policies::{self, PolicyView};
use attune_engine::records::Role;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Every policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    /// Action policies (`pack.toml`) and rule policies, by name.
    pub items: Vec<PolicyView>,
}

/// Lists every policy (on actions and on rules) with, per key, the
/// executions holding a slot (`running`: queued for a worker, claimed or
/// running) and those waiting (`delayed`).
#[utoipa::path(get, path = "/policies", tag = "policies",
    responses((status = 200, body = PolicyList), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<PolicyList>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(axum::Json(PolicyList {
        items: policies::list(&state).await?,
    }))
}
