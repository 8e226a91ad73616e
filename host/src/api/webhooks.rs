//! `POST /webhooks/{name}`: signed webhook intake, no API token.
//!
//! The handler only reads the request; verification, the event's shape and
//! which rules see it live in `engine::triggers::webhook`, and the event
//! enters through the engine's one event door. A missing or wrong signature
//! is a 401 and stores nothing; so is a hook no rule listens to, so that
//! names cannot be probed. Bodies are capped.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ErrorBody};
use super::{ApiPath, AppState};
use attune_engine::triggers::webhook::{self, MAX_WEBHOOK_BYTES, SIGNATURE_HEADER, WebhookError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
}

/// What a delivery produced.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// The event's id.
    pub event: i64,
    /// Executions queued by the rules the signature verified for.
    pub executions: Vec<i64>,
    /// Set (true) when the event is stored but its rules' enforcements could
    /// not be yet: the server enforces it later, nothing is lost.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enforcement_pending: bool,
}

/// Receives a signed delivery for hook `name`.
#[utoipa::path(post, path = "/webhooks/{name}", tag = "webhooks", security(()),
    params(("name" = String, Path, description = "Hook name"),
           ("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the body>")),
    request_body(content = Object, description = "Any body; JSON is parsed"),
    responses(
        (status = 202, body = Delivery),
        (status = 401, description = "Missing or wrong signature, or no such hook; nothing stored", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 429, description = "More deliveries to this hook than it accepts per second", body = ErrorBody),
    ))]
async fn receive(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, axum::Json<Delivery>), ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "webhook bodies are limited to {MAX_WEBHOOK_BYTES} bytes"
            ))
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let admitted = webhook::receive(&state, &name, signature, pairs.iter().copied(), &body)
        .await
        .map_err(|e| match e {
            WebhookError::Unauthenticated => ApiError::Unauthorized,
            WebhookError::Throttled => ApiError::TooManyRequests(e.to_string()),
            WebhookError::Engine(e) => e.into(),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Delivery {
            event: admitted.event.id,
            executions: admitted.executions.iter().map(|e| e.id).collect(),
            enforcement_pending: admitted.enforcement_pending,
        }),
    ))
}
