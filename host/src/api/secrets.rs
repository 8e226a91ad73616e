//! `/secrets`: admins set and delete secrets and list their names; no
//! route returns a value.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use zeroize::Zeroizing;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::views::{Keyed, PageQuery};
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::records::{Role, SecretRecord};
use attune_engine::secrets;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(set, delete))
}

/// A secret's value, on the way in only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The value (1 byte to 64 KiB).
    #[schema(value_type = String)]
    pub value: Zeroizing<String>,
}

/// A secret's name and times, never its value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretView {
    /// Its name.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, last set.
    pub updated_at: i64,
}

impl From<SecretRecord> for SecretView {
    fn from(r: SecretRecord) -> Self {
        SecretView {
            name: r.name,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Creates or replaces a secret.
#[utoipa::path(put, path = "/secrets/{name}", tag = "secrets", request_body = SecretValue,
    params(("name" = String, Path, description = "Secret name: letters, digits, `_`, `-` (`webhook:<rule>` names are rules' keys, set through the rule)")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<SecretValue>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    secrets::set(&state, &name, &input.value).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists secret names and times.
#[utoipa::path(get, path = "/secrets", tag = "secrets", params(PageQuery),
    responses((status = 200, body = Listing<SecretView>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<SecretView>>, ApiError> {
    caller.require(Role::Admin)?;
    let page = page.checked(Keyed::Ref)?;
    let items = attune_engine::secrets::list(&state, &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |s| s.name.clone())))
}

/// Deletes a secret.
#[utoipa::path(delete, path = "/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "Secret name; not a webhook rule's key (`webhook:<rule>`), which goes with its rule")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if secrets::delete(&state, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("secret", &name))
    }
}
