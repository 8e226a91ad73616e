//! A JSON body extractor whose rejections use the API's error shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorDetail};

/// Like `axum::Json`, but a malformed body answers 400/415/422 in the API's
/// error shape, with the offending path when serde knows it.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with `Content-Type: application/json`".into(),
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Invalid {
                message: "the body does not have the expected shape".into(),
                details: vec![ErrorDetail {
                    path: String::new(),
                    message: std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.body_text()),
                }],
            }),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::BadRequest(format!(
                "malformed JSON: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.body_text())
            ))),
            Err(JsonRejection::BytesRejection(e)) => {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Err(ApiError::TooLarge("the body is too large".into()))
                } else {
                    Err(ApiError::BadRequest(e.body_text()))
                }
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// An optional JSON body: an empty one (`Content-Length: 0`, or neither a
/// length nor a chunked body) is `None`; anything else must be valid JSON
/// of `T`.
impl<S, T> axum::extract::OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let headers = req.headers();
        let empty = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        if empty
            || !headers.contains_key(axum::http::header::CONTENT_TYPE)
                && headers.get(axum::http::header::CONTENT_LENGTH).is_none()
                && headers.get(axum::http::header::TRANSFER_ENCODING).is_none()
        {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}
