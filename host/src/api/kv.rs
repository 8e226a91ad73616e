//! `/packs/{name}/kv`: admins read a pack's key-value state (what its
//! actions keep through `attune:action/kv`).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::views::{Keyed, page};
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::records::{KvRecord, Role};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// One key of a pack.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KvView {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// When it expires (Unix ms), if it does.
    pub expires_at: Option<i64>,
    /// Unix ms, last written.
    pub updated_at: i64,
}

impl From<KvRecord> for KvView {
    fn from(r: KvRecord) -> Self {
        KvView {
            key: r.key,
            value: r.value,
            expires_at: r.expires_at,
            updated_at: r.updated_at,
        }
    }
}

/// Which keys, and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KvQuery {
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Cursor (a key) from the previous page's `next`.
    pub after: Option<String>,
}

/// A pack's live keys and values, by key.
#[utoipa::path(get, path = "/packs/{name}/kv", tag = "packs", params(("name" = String, Path, description = "Pack name"), KvQuery),
    responses((status = 200, body = Listing<KvView>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<KvQuery>,
) -> Result<axum::Json<Listing<KvView>>, ApiError> {
    caller.require(Role::Admin)?;
    let page = page(q.limit, q.after, Keyed::Ref)?;
    let items = attune_engine::kv::list(&state, &name, &q.prefix, &page)
        .await?
        .ok_or_else(|| ApiError::not_found("pack", &name))?;
    Ok(axum::Json(Listing::of(items, &page, |k| k.key.clone())))
}
