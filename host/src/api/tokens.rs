//! `/tokens`: API tokens (admin only). The secret is shown once, at creation.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Caller, hash_token, new_token};
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::views::{PageQuery, TokenView};
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::records::Role;
use attune_engine::tokens;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Name, for people.
    pub name: String,
    /// worker, viewer, operator or admin.
    #[schema(value_type = String)]
    pub role: Role,
}

/// A created token: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The record.
    #[serde(flatten)]
    pub record: TokenView,
    /// The secret; send as `Authorization: Bearer <token>`.
    pub token: String,
}

/// Creates a token.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    caller.require(Role::Admin)?;
    let token = new_token();
    let record = tokens::create(&state, &input.name, input.role, &hash_token(&token)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            record: record.into(),
            token,
        }),
    ))
}

/// Lists tokens (never their secrets).
#[utoipa::path(get, path = "/tokens", tag = "tokens", params(PageQuery),
    responses((status = 200, body = Listing<TokenView>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Listing<TokenView>>, ApiError> {
    caller.require(Role::Admin)?;
    let page = page.checked(super::views::Keyed::Id)?;
    let items = tokens::list(&state, &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |t| t.id.to_string())))
}

/// Revokes a token; it stops working at once on this node and within a
/// second on the others.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path, description = "Token id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, description = "The last live admin token", body = ErrorBody)))]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    if tokens::revoke(&state, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token", id))
    }
}
