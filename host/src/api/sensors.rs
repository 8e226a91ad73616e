//! `/sensors`: packs' sensors, their schedules and their last polls.

use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::views::PageQuery;
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::records::{Role, SensorRecord, SensorRunRecord};
use attune_engine::sensors;

/// Polls shown with a sensor.
const RUNS_SHOWN: i64 = 20;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(enable))
        .routes(routes!(disable))
}

/// A sensor: an export of a pack polled on a schedule, whose records become
/// events on its trigger type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SensorView {
    /// `<pack>.<name>`, also the trigger type its events have.
    pub r#ref: String,
    /// Its pack.
    pub pack: String,
    /// The export it calls.
    pub export: String,
    /// Poll interval in ms (absent for a cron schedule).
    pub every_ms: Option<i64>,
    /// Cron schedule and time zone.
    #[schema(value_type = Option<Object>)]
    pub cron: Option<Value>,
    /// What it watches.
    pub description: Option<String>,
    /// Whether it polls.
    pub enabled: bool,
    /// Unix ms of its next poll.
    pub next_run_at: i64,
    /// Failed polls in a row (each delays the next, doubling up to an hour).
    pub failures: i64,
    /// Its last polls, newest first (detail route only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<SensorRunView>>,
}

/// One poll of a sensor.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SensorRunView {
    /// The poll's execution.
    pub execution: i64,
    /// How it ended.
    pub status: String,
    /// Events it emitted.
    pub events: i64,
    /// Its error (trap, timeout, `err`).
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// What was off, e.g. records past the cap dropped.
    pub warning: Option<String>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: i64,
    /// Its duration in ms.
    pub duration_ms: Option<i64>,
}

impl From<SensorRecord> for SensorView {
    fn from(s: SensorRecord) -> Self {
        let export = s
            .action
            .split_once('.')
            .map_or(s.action.clone(), |(_, e)| e.to_string());
        SensorView {
            r#ref: s.r#ref,
            pack: s.pack,
            export,
            every_ms: s.schedule.is_none().then_some(s.every_ms),
            cron: s.schedule.and_then(|t| serde_json::from_str(&t).ok()),
            description: s.description,
            enabled: s.enabled,
            next_run_at: s.next_run_at,
            failures: s.failures,
            runs: None,
        }
    }
}

impl From<SensorRunRecord> for SensorRunView {
    fn from(r: SensorRunRecord) -> Self {
        SensorRunView {
            duration_ms: r.started_at.map(|s| r.finished_at - s),
            execution: r.execution,
            status: r.status,
            events: r.events,
            error: r.error,
            warning: r.warning,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

/// Lists sensors.
#[utoipa::path(get, path = "/sensors", tag = "sensors", params(PageQuery),
    responses((status = 200, body = Listing<SensorView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<SensorView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = page.checked(super::views::Keyed::Ref)?;
    let items = sensors::list(&state, &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |s| s.r#ref.clone())))
}

/// Shows a sensor with its last polls.
#[utoipa::path(get, path = "/sensors/{ref}", tag = "sensors",
    params(("ref" = String, Path, description = "Sensor ref, `<pack>.<name>`")),
    responses((status = 200, body = SensorView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<axum::Json<SensorView>, ApiError> {
    caller.require(Role::Viewer)?;
    let (sensor, runs) = sensors::get(&state, &r#ref, RUNS_SHOWN)
        .await?
        .ok_or_else(|| ApiError::not_found("sensor", &r#ref))?;
    let mut view = SensorView::from(sensor);
    view.runs = Some(runs.into_iter().map(Into::into).collect());
    Ok(axum::Json(view))
}

/// Enables a sensor: it polls from now on, its failures forgotten.
#[utoipa::path(post, path = "/sensors/{ref}/enable", tag = "sensors",
    params(("ref" = String, Path, description = "Sensor ref")),
    responses((status = 200, body = SensorView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<axum::Json<SensorView>, ApiError> {
    set_enabled(state, caller, r#ref, true).await
}

/// Disables a sensor: it polls no more.
#[utoipa::path(post, path = "/sensors/{ref}/disable", tag = "sensors",
    params(("ref" = String, Path, description = "Sensor ref")),
    responses((status = 200, body = SensorView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<axum::Json<SensorView>, ApiError> {
    set_enabled(state, caller, r#ref, false).await
}

async fn set_enabled(
    state: AppState,
    caller: Caller,
    r#ref: String,
    enabled: bool,
) -> Result<axum::Json<SensorView>, ApiError> {
    caller.require(Role::Operator)?;
    let sensor = sensors::set_enabled(&state, &r#ref, enabled)
        .await?
        .ok_or_else(|| ApiError::not_found("sensor", &r#ref))?;
    Ok(axum::Json(sensor.into()))
}
