//! `/events`: recorded events; `POST` fires a manual one.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::views::EventView;
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::history;
use attune_engine::ingest::IncomingEvent;
use attune_engine::records::Role;

/// Trigger types whose events may be posted by hand.
const POSTABLE: &[&str] = &["core.manual"];

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, fire))
        .routes(routes!(show))
}

/// An event posted by hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// Trigger type ref; `core.manual`.
    pub trigger: String,
    /// Any JSON object.
    #[serde(default = "empty")]
    #[schema(value_type = Object)]
    pub payload: Value,
}

fn empty() -> Value {
    Value::Object(Default::default())
}

/// Paging and filter for events.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of this trigger type.
    pub trigger: Option<String>,
    /// Items per page (1-500).
    pub limit: Option<i64>,
    /// Cursor (an event id) from the previous page; newest first.
    pub after: Option<String>,
}

/// Records a manual event.
#[utoipa::path(post, path = "/events", tag = "events", request_body = NewEvent,
    responses((status = 201, body = EventView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn fire(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiJson(input): ApiJson<NewEvent>,
) -> Result<(StatusCode, axum::Json<EventView>), ApiError> {
    caller.require(Role::Operator)?;
    if !POSTABLE.contains(&input.trigger.as_str()) {
        return Err(ApiError::Invalid {
            message: "only manual events can be posted".into(),
            details: vec![super::error::ErrorDetail {
                path: "/trigger".into(),
                message: format!("expected one of {}", POSTABLE.join(", ")),
            }],
        });
    }
    let errors = attune_engine::triggers::payload_errors(&input.trigger, &input.payload)
        .ok_or_else(|| ApiError::not_found("trigger type", &input.trigger))?;
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "the payload is invalid",
            "/payload",
            &errors,
        ));
    }
    let admitted = state
        .ingest
        .event(
            &state,
            IncomingEvent {
                trigger: input.trigger,
                payload: input.payload,
                source: Some(caller.token.name.clone()),
                requested_by: Some(caller.token.id),
                rules: None,
                depth: attune_runtime::http::chain_depth(
                    headers
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
                ),
                trace: None,
            },
        )
        .await?;
    let view = EventView {
        enforcement_pending: admitted.enforcement_pending,
        ..admitted.event.into()
    };
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Lists events, newest first.
#[utoipa::path(get, path = "/events", tag = "events", params(EventQuery),
    responses((status = 200, body = Listing<EventView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<axum::Json<Listing<EventView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = super::views::page(q.limit, q.after, super::views::Keyed::Id)?;
    let items = history::events(&state, q.trigger.as_deref(), &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |e| e.id.to_string())))
}

/// Shows one event.
#[utoipa::path(get, path = "/events/{id}", tag = "events",
    params(("id" = i64, Path, description = "Event id")),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<EventView>, ApiError> {
    caller.require(Role::Viewer)?;
    let event = history::event(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("event", id))?;
    Ok(axum::Json(event.into()))
}
