//! `/packs`: upload, list, show, delete.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::json::ApiJson;
use super::views::{GrantsView, PackView, PageQuery};
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::catalog;
use attune_engine::packs::oci::{self, OciError, PullLimits};
use attune_engine::packs::{self, PackError, Upload};
use attune_engine::records::{Grants, PackRecord, Registered, Role};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, upload))
        .routes(routes!(show, delete))
        .routes(routes!(grant))
        // The upload route checks its own, configurable limit.
        .layer(DefaultBodyLimit::disable())
}

/// Query of a single-component upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Pack name (required for `application/wasm`).
    pub name: Option<String>,
    /// Pack version (required for `application/wasm`).
    pub version: Option<String>,
}

/// A pack to install from an OCI registry the server allows.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallFromRegistry {
    /// `oci://REGISTRY/REPO:TAG` or `oci://REGISTRY/REPO@sha256:DIGEST`.
    #[schema(example = "oci://ghcr.io/acme/net-tools:1.2.0")]
    pub oci: String,
    /// Replace a pack of the same name installed from another repository
    /// or uploaded (without it, that is a 409).
    #[serde(default)]
    pub replace: bool,
}

/// What an upload registered.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadResult {
    /// The pack.
    pub pack: PackView,
    /// `created`, `upgraded` or `unchanged`.
    pub outcome: String,
    /// Action refs.
    pub actions: Vec<String>,
    /// Rules registered from `pack.toml`.
    pub rules: Vec<String>,
}

/// Registers a pack: one component (`application/wasm`, name and version in
/// the query), a `.tar.gz` with `pack.toml` (`application/gzip`), or one
/// pulled from an OCI registry the server allows (`application/json`,
/// `{"oci": "oci://REGISTRY/REPO:TAG"}`). A pulled pack is checked layer by
/// layer against the manifest's digests and sizes and the upload limit,
/// then registered exactly as an upload; it records its reference and
/// manifest digest.
#[utoipa::path(post, path = "/packs", tag = "packs",
    params(UploadQuery),
    request_body(description = "A component, a .tar.gz pack, or a registry reference",
        content(
            (Vec<u8> = "application/wasm"),
            (Vec<u8> = "application/gzip"),
            (InstallFromRegistry = "application/json"),
        )),
    responses(
        (status = 201, description = "Registered", body = UploadResult),
        (status = 200, description = "Same name, version and content: nothing changed", body = UploadResult),
        (status = 400, description = "Malformed body or reference (a reference without a tag or digest)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin, or the registry or an address it leads to is not allowed", body = ErrorBody),
        (status = 404, description = "The registry has no such repository, tag or digest", body = ErrorBody),
        (status = 409, description = "Same name and version, different content; or an artifact naming a pack installed from elsewhere, without `replace`", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, description = "A component or rule is invalid, or the artifact is not a pack", body = ErrorBody),
        (status = 502, description = "The registry failed, could not be reached, or sent content that does not match its digest", body = ErrorBody),
    ))]
async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<UploadResult>), ApiError> {
    // The body is a stream, read only after the caller's role and the
    // declared length pass, and never past the limit: a token that may not
    // upload cannot make the server hold a large body.
    let limit = state.config.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Err(refused) = caller.require(Role::Admin) {
        // A body of an allowed size is read and dropped chunk by chunk
        // first, so the client reads the 403 instead of a reset connection;
        // anything larger, or of unknown length, is not read at all.
        if declared.is_some_and(|n| n <= limit) {
            let drain = async {
                let mut body = body.into_data_stream();
                while let Some(Ok(_)) = futures_util::StreamExt::next(&mut body).await {}
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
        }
        return Err(refused);
    }
    if let Some(len) = declared
        && len > limit
    {
        return Err(ApiError::TooLarge(format!(
            "uploads are limited to {limit} bytes"
        )));
    }
    let body: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            ApiError::TooLarge(format!("uploads are limited to {limit} bytes"))
        } else {
            ApiError::BadRequest(format!("reading the upload: {e}"))
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let upload = match content_type.as_str() {
        "application/wasm" => {
            let (Some(name), Some(version)) = (query.name, query.version) else {
                return Err(ApiError::BadRequest(
                    "a single component needs `name` and `version` query parameters".into(),
                ));
            };
            Upload::single(&name, &version, body.to_vec())
        }
        "application/gzip"
        | "application/x-gzip"
        | "application/x-tar+gzip"
        | "application/x-compressed-tar" => {
            let max = (limit as u64).saturating_mul(4);
            let bytes = body.clone();
            tokio::task::spawn_blocking(move || Upload::from_archive(&bytes, max))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .map_err(pack_error)?
        }
        "application/json" => {
            let input: InstallFromRegistry = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
            let limits = PullLimits {
                max_layer: limit as u64,
                max_total: (limit as u64).saturating_mul(4),
            };
            let upload = oci::pull(&state.config.registries, &input.oci, limits)
                .await
                .map_err(oci_error)?;
            oci::check_origin(&state, &upload, input.replace).await?;
            upload
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "`{other}` is not a pack: send application/wasm, application/gzip, or application/json with a registry reference"
            )));
        }
    };
    let outcome = packs::install(&state, upload).await.map_err(pack_error)?;
    let (status, word) = match outcome.registered {
        Registered::Created => (StatusCode::CREATED, "created"),
        Registered::Upgraded => (StatusCode::CREATED, "upgraded"),
        Registered::Unchanged => (StatusCode::OK, "unchanged"),
    };
    let name = outcome.name.clone();
    let pack = catalog::pack(&state, &name)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("pack {name} vanished")))?;
    Ok((
        status,
        axum::Json(UploadResult {
            pack: pack.into(),
            outcome: word.into(),
            actions: outcome.actions,
            rules: outcome.rules,
        }),
    ))
}

fn oci_error(e: OciError) -> ApiError {
    match e {
        OciError::BadReference(m) => ApiError::BadRequest(m),
        OciError::NotAllowed(m) => ApiError::Denied(m),
        OciError::NotFound(m) => ApiError::NotFound(m),
        OciError::WrongMediaType(m) => ApiError::Invalid {
            message: format!("the artifact is not a pack: {m}"),
            details: Vec::new(),
        },
        OciError::TooLarge(m) => ApiError::TooLarge(m),
        OciError::Registry(m) => ApiError::BadGateway(m),
        OciError::Pack(e) => pack_error(e),
    }
}

fn pack_error(e: PackError) -> ApiError {
    match e {
        PackError::BadArchive(m) => ApiError::BadRequest(format!("bad archive: {m}")),
        PackError::TooLarge(m) => ApiError::TooLarge(m),
        PackError::BadManifest(m) => ApiError::Invalid {
            message: "pack.toml is invalid".into(),
            details: vec![ErrorDetail {
                path: "/pack.toml".into(),
                message: m,
            }],
        },
        PackError::InvalidComponent { file, reason } => ApiError::Invalid {
            message: format!("component `{file}` is not a usable action pack"),
            details: vec![ErrorDetail {
                path: format!("/components/{file}"),
                message: reason,
            }],
        },
        PackError::InvalidRule { rule, errors } => ApiError::invalid(
            format!("rule `{rule}` in pack.toml is invalid"),
            &format!("/rules/{rule}"),
            &errors,
        ),
        PackError::InvalidSensors { errors } => {
            ApiError::invalid("the sensors are invalid", "/pack.toml", &errors)
        }
        PackError::InvalidWorkflow { file, errors } => ApiError::invalid(
            format!("workflow `{file}` is invalid"),
            &format!("/{}", file.trim_start_matches("./")),
            &errors,
        ),
        PackError::InvalidGrants { errors } => {
            ApiError::invalid("the grants are invalid", "/pack.toml", &errors)
        }
        PackError::InvalidPolicies { errors } => {
            ApiError::invalid("the policies are invalid", "/pack.toml", &errors)
        }
        PackError::Database(e) => attune_engine::EngineError::from(e).into(),
        PackError::Engine(e) => e.into(),
    }
}

/// Replaces what a pack is granted: outbound HTTP destinations and secrets.
#[utoipa::path(put, path = "/packs/{name}/grants", tag = "packs", request_body = GrantsView,
    params(("name" = String, Path, description = "Pack name")),
    responses((status = 200, body = PackView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, description = "A pattern or name is invalid", body = ErrorBody)))]
async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<GrantsView>,
) -> Result<axum::Json<PackView>, ApiError> {
    caller.require(Role::Admin)?;
    let grants = Grants::from(input);
    packs::check_grants(&grants)
        .map_err(|errors| ApiError::invalid("the grants are invalid", "", &errors))?;
    let pack = catalog::set_grants(&state, &name, &grants)
        .await?
        .ok_or_else(|| ApiError::not_found("pack", &name))?;
    Ok(axum::Json(pack.into()))
}

/// The pack named `name`, or a 404.
async fn existing(state: &AppState, name: &str) -> Result<PackRecord, ApiError> {
    catalog::pack(state, name)
        .await?
        .ok_or_else(|| ApiError::not_found("pack", name))
}

/// Lists packs by name.
#[utoipa::path(get, path = "/packs", tag = "packs", params(PageQuery),
    responses((status = 200, body = Listing<PackView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<PackView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let page = page.checked(super::views::Keyed::Ref)?;
    let items = catalog::packs(&state, &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |p| p.name.clone())))
}

/// Shows one pack.
#[utoipa::path(get, path = "/packs/{name}", tag = "packs",
    params(("name" = String, Path, description = "Pack name")),
    responses((status = 200, body = PackView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<PackView>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(axum::Json(existing(&state, &name).await?.into()))
}

/// Deletes a pack and its actions (rules stay, and warn until an action returns).
#[utoipa::path(delete, path = "/packs/{name}", tag = "packs",
    params(("name" = String, Path, description = "Pack name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if catalog::delete_pack(&state, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("pack", &name))
    }
}
