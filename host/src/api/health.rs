//! Liveness and readiness (no token) and metrics (a viewer token).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use attune_engine::records::Role;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is up.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// The database answers and takes writes: a full disk or a read-only
/// database is not ready (503, with the reason), though reads go on; nor
/// is a data directory deleted or replaced under the server.
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if let Some(refusal) = state.refusal() {
        return Err(ApiError::Unavailable(refusal.reason().into()));
    }
    if state.database_answers().await {
        Ok(axum::Json(json!({"status": "ready"})))
    } else {
        Err(ApiError::Unavailable("the database does not answer".into()))
    }
}

/// Prometheus text format (any valid token; scrape with a `viewer` token).
async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Viewer)?;
    attune_engine::policies::refresh_metrics(&state).await;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}
