//! The one error type at the HTTP boundary and its JSON shape.
//!
//! Every failure answers `{"error": {"code", "message", "details": [{"path",
//! "message"}]}}` — malformed JSON, unknown routes and database failures
//! included. Internal errors are logged with their cause and answered with a
//! generic message: no SQL or host detail reaches the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use attune_engine::EngineError;
use attune_engine::records::Refusal;
use attune_runtime::PathError;

/// One problem at a JSON path.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// JSON pointer into the request body (`/action_params/message`), or `""`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// The error body's content.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorInfo {
    /// Stable machine-readable code, e.g. `validation_failed`.
    pub code: String,
    /// For people.
    pub message: String,
    /// Per-path problems; empty when there are none.
    pub details: Vec<ErrorDetail>,
}

/// Every error response: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInfo,
}

/// Errors the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be understood (bad JSON, bad query, bad archive).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or one that is unknown or revoked.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403: the token's role may not do this.
    #[error("this needs the {0} role")]
    Forbidden(&'static str),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 403: the caller may not act on this resource (another worker's).
    #[error("{0}")]
    Denied(String),
    /// 409: conflicts with what exists.
    #[error("{0}")]
    Conflict(String),
    /// 405: the route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413: the body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// 415: the body's content type is not accepted here.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid; every problem listed with its path.
    #[error("{message}")]
    Invalid {
        /// Summary.
        message: String,
        /// Each problem.
        details: Vec<ErrorDetail>,
    },
    /// 429: too many requests; try again later.
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: not ready (database unreachable, read-only, or gone); with
    /// `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
    /// 502: a registry a pack is pulled from failed, could not be reached,
    /// or sent content that does not match its digest; the reason says
    /// which.
    #[error("{0}")]
    BadGateway(String),
    /// 507: the disk holding the database is full, so nothing that needs
    /// a write can be done now; with `Retry-After`.
    #[error("{0}")]
    DiskFull(String),
    /// 500: a bug or an infrastructure failure; details only in the log.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The status code of each variant.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Denied(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Denied(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Invalid { .. } => "validation_failed",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::DiskFull(_) => "insufficient_storage",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::Internal(_) => "internal",
        }
    }

    /// A 422 listing `errors`, each path prefixed with `prefix` (e.g. `/params`).
    pub fn invalid(message: impl Into<String>, prefix: &str, errors: &[PathError]) -> Self {
        EngineError::invalid(message, prefix, errors.to_vec()).into()
    }

    /// A 404 naming the resource.
    pub fn not_found(what: &str, key: impl std::fmt::Display) -> Self {
        ApiError::NotFound(format!("no {what} `{key}`"))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::Denied(m) => ApiError::Denied(m),
            EngineError::Invalid { message, errors } => ApiError::Invalid {
                message,
                details: errors
                    .into_iter()
                    .map(|e| ErrorDetail {
                        path: e.path,
                        message: e.message,
                    })
                    .collect(),
            },
            EngineError::Unavailable(m) => ApiError::Unavailable(m),
            EngineError::Refused(r) => r.into(),
            EngineError::Database(s) => ApiError::Internal(s.into()),
            EngineError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// A full disk is a 507; a database that takes no writes for another
/// reason, a 503.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::DiskFull => ApiError::DiskFull(r.reason().into()),
            Refusal::ReadOnly | Refusal::Gone => ApiError::Unavailable(r.reason().into()),
        }
    }
}

/// What a 503 or 507 asks a client to wait before trying again: about the
/// time a database restart or an operator freeing space takes to be seen.
const RETRY_AFTER_SECONDS: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = ?cause, "internal error");
        }
        let mut response = (status, Json(self.body())).into_response();
        if matches!(self, ApiError::Unavailable(_) | ApiError::DiskFull(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

impl ApiError {
    /// The error's body, as every response carries it.
    pub fn body(&self) -> ErrorBody {
        let details = match self {
            ApiError::Invalid { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        ErrorBody {
            error: ErrorInfo {
                code: self.code().to_string(),
                message: self.to_string(),
                details,
            },
        }
    }
}
