//! `POST /webhooks/{name}`: signed webhook intake, no API token.
//!
//! The body is authenticated GitHub-style: `X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256 of the raw body>` with the `secret` of a rule on
//! `core.webhook` whose hook name (`trigger_params.name`, or its ref) matches.
//! A missing or wrong signature is a 401 and stores nothing; so is a hook no
//! rule listens to, so that names cannot be probed. Bodies are capped.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::error::{ApiError, ErrorBody};

/// Largest webhook body accepted.
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
}

/// What a webhook delivery produced.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// The event recorded.
    pub event: i64,
    /// Executions queued for it.
    pub executions: Vec<i64>,
}

/// `sha256=<hex>` for `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn verifies(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&expected).is_ok()
}

/// Receives a signed webhook and runs the rules listening to it.
#[utoipa::path(post, path = "/webhooks/{name}", tag = "webhooks", security(()),
    params(("name" = String, Path, description = "Hook name"),
           ("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the body>")),
    request_body(content = Object, description = "Any body; JSON is parsed"),
    responses(
        (status = 202, body = Delivery),
        (status = 401, description = "Missing or wrong signature, or no such hook; nothing stored", body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
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
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let rules: Vec<_> = state
        .storage
        .enabled_rules("core.webhook")
        .await?
        .into_iter()
        .filter(|r| {
            let hook = r.spec.trigger_params["name"]
                .as_str()
                .unwrap_or(&r.spec.r#ref);
            hook == name
                && r.spec.trigger_params["secret"]
                    .as_str()
                    .is_some_and(|secret| verifies(secret, &body, signature))
        })
        .collect();
    if rules.is_empty() {
        return Err(ApiError::Unauthorized);
    }
    let parsed: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut kept = Map::new();
    for (k, v) in &headers {
        let k = k.as_str();
        if (k.starts_with("x-") && k != SIGNATURE_HEADER)
            || k == "content-type"
            || k == "user-agent"
        {
            kept.insert(
                k.to_string(),
                Value::String(v.to_str().unwrap_or_default().to_string()),
            );
        }
    }
    let payload = serde_json::json!({"body": parsed, "headers": kept});
    let event = state
        .storage
        .insert_event("core.webhook", &payload, Some(&name))
        .await?;
    let mut executions = Vec::new();
    for rule in &rules {
        let created =
            crate::scheduler::process_event(&state, &event, Some(&rule.spec.r#ref)).await?;
        executions.extend(created.iter().map(|e| e.id));
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Delivery {
            event: event.id,
            executions,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_secret_and_body() {
        let sig = sign("s3cret-s3cret-s3cret", b"{\"a\":1}");
        assert!(verifies("s3cret-s3cret-s3cret", b"{\"a\":1}", &sig));
        assert!(!verifies("other-secret-other", b"{\"a\":1}", &sig));
        assert!(!verifies("s3cret-s3cret-s3cret", b"{\"a\":2}", &sig));
        assert!(!verifies("s3cret-s3cret-s3cret", b"{\"a\":1}", "sha1=abc"));
        assert!(!verifies("s3cret-s3cret-s3cret", b"{\"a\":1}", "sha256=zz"));
    }
}
