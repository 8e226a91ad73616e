//! The console's static files: its stylesheet and vendored htmx, served
//! with long-lived caching under names that change with their content.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::UiError;
use crate::api::AppState;
use crate::api::error::ApiError;

const STYLE: &str = include_str!("../../assets/console/style.css");

/// `(name, content type, bytes)`; the vendored files carry their version in
/// their name, the stylesheet a digest of its content.
fn files() -> &'static [(String, &'static str, &'static [u8])] {
    static FILES: OnceLock<Vec<(String, &'static str, &'static [u8])>> = OnceLock::new();
    FILES.get_or_init(|| {
        let digest = hex::encode(&Sha256::digest(STYLE.as_bytes())[..6]);
        let js = "text/javascript; charset=utf-8";
        let text = "text/plain; charset=utf-8";
        macro_rules! vendored {
            ($name:literal, $kind:expr) => {
                (
                    $name.to_string(),
                    $kind,
                    include_bytes!(concat!("../../assets/console/vendor/", $name)).as_slice(),
                )
            };
        }
        vec![
            (
                format!("style.{digest}.css"),
                "text/css; charset=utf-8",
                STYLE.as_bytes(),
            ),
            vendored!("htmx-2.0.11.min.js", js),
            vendored!("htmx-ext-sse-2.2.4.min.js", js),
            vendored!("htmx.LICENSE", text),
            vendored!("htmx-ext-sse.LICENSE", text),
        ]
    })
}

/// The stylesheet's path, for the pages' `<link>`.
pub(super) fn stylesheet() -> String {
    format!("/ui/assets/{}", files()[0].0)
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/assets/{name}", axum::routing::get(asset))
}

/// A static file. Public: the login page needs the stylesheet, and nothing
/// here is private.
async fn asset(Path(name): Path<String>) -> Result<Response, UiError> {
    let (_, kind, bytes) = files()
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::NotFound("no such file".into()))?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}
