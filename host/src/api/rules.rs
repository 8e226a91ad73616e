//! `/rules`: rules are validated completely when saved.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::ErrorDetail;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::views::RuleView;
use super::{ApiPath, ApiQuery, AppState, Listing};
use attune_engine::records::{Role, RuleFilter};
use attune_engine::rules;
use attune_engine::rules::RuleInput;
use attune_engine::rules::evaluate::dry_run;
use attune_engine::rules::save::{self, Mode};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, delete))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(test))
}

/// A saved rule and anything worth knowing about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleResponse {
    /// The rule as stored.
    pub rule: RuleView,
    /// Non-fatal problems, e.g. no live worker can run its action now.
    pub warnings: Vec<String>,
}

/// Filters and paging for listing rules.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RuleQuery {
    /// Only rules on this trigger type.
    pub trigger: Option<String>,
    /// Only rules running this action.
    pub action: Option<String>,
    /// Only enabled or disabled rules.
    pub enabled: Option<bool>,
    /// `true`: only rules that do not fire until fixed (each with its
    /// `problems`), e.g. one that hands a secret to an action whose pack is
    /// not granted it, or uses a secret other than whole.
    pub invalid: Option<bool>,
    /// Items per page (1-500).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub after: Option<String>,
}

#[utoipa::path(post, path = "/rules", tag = "rules", request_body = RuleInput,
    responses(
        (status = 201, body = RuleResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "A rule with this ref exists", body = ErrorBody),
        (status = 422, description = "Every problem with its JSON path", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<RuleInput>,
) -> Result<(StatusCode, axum::Json<RuleResponse>), ApiError> {
    caller.require(Role::Operator)?;
    let (spec, warnings) = save::check(&state, &input).await?;
    let rule = save::store(&state, &spec, Mode::Create, &spec.r#ref).await?;
    authored(&state, &rule.spec.r#ref, &caller).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RuleResponse {
            rule: rule.into(),
            warnings,
        }),
    ))
}

/// Replaces a rule, with the same checks as creation.
#[utoipa::path(put, path = "/rules/{ref}", tag = "rules", request_body = RuleInput,
    params(("ref" = String, Path, description = "Rule ref")),
    responses(
        (status = 200, body = RuleResponse),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    ))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
    ApiJson(input): ApiJson<RuleInput>,
) -> Result<axum::Json<RuleResponse>, ApiError> {
    caller.require(Role::Operator)?;
    let mut input = input;
    save::unmask(&state, &mut input, &r#ref).await?;
    let (spec, warnings) = save::check(&state, &input).await?;
    let rule = save::store(&state, &spec, Mode::Replace, &r#ref).await?;
    authored(&state, &rule.spec.r#ref, &caller).await?;
    Ok(axum::Json(RuleResponse {
        rule: rule.into(),
        warnings,
    }))
}

/// Lists rules by ref.
#[utoipa::path(get, path = "/rules", tag = "rules", params(RuleQuery),
    responses((status = 200, body = Listing<RuleView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RuleQuery>,
) -> Result<axum::Json<Listing<RuleView>>, ApiError> {
    caller.require(Role::Viewer)?;
    let filter = RuleFilter {
        trigger: q.trigger,
        action: q.action,
        enabled: q.enabled,
    };
    let page = super::views::page(q.limit, q.after, super::views::Keyed::Ref)?;
    if q.invalid == Some(true) {
        let items: Vec<RuleView> = save::invalid(&state, &filter, &page)
            .await?
            .into_iter()
            .map(|(rule, problems)| RuleView {
                problems: problems.into_iter().map(Into::into).collect(),
                ..rule.into()
            })
            .collect();
        return Ok(axum::Json(Listing::of(items, &page, |r| r.r#ref.clone())));
    }
    let items = rules::list(&state, &filter, &page).await?;
    Ok(axum::Json(Listing::of(items, &page, |r| {
        r.spec.r#ref.clone()
    })))
}

/// Shows one rule.
#[utoipa::path(get, path = "/rules/{ref}", tag = "rules",
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<axum::Json<RuleView>, ApiError> {
    caller.require(Role::Viewer)?;
    let rule = rules::get(&state, &r#ref)
        .await?
        .ok_or_else(|| ApiError::not_found("rule", &r#ref))?;
    Ok(axum::Json(rule.into()))
}

/// Deletes a rule.
#[utoipa::path(delete, path = "/rules/{ref}", tag = "rules",
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    save::delete(&state, &r#ref).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A sample event for a dry run.
/// What a rule would do with an event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnforcementView {
    /// Whether the criteria hold.
    pub matched: bool,
    /// The rendered action params, when it matched and rendered.
    pub params: Option<serde_json::Value>,
    /// Why it would not run (criteria error, template error, invalid params).
    pub errors: Vec<ErrorDetail>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The payload the event would carry.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// Dry run: would the rule match this payload, and what would it run?
/// Nothing is stored.
#[utoipa::path(post, path = "/rules/{ref}/test", tag = "rules", request_body = TestRequest,
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 200, body = EnforcementView), (status = 404, body = ErrorBody)))]
async fn test(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
    ApiJson(input): ApiJson<TestRequest>,
) -> Result<axum::Json<EnforcementView>, ApiError> {
    caller.require(Role::Viewer)?;
    let enforcement = dry_run(&state, &r#ref, input.payload).await?;
    Ok(axum::Json(EnforcementView {
        matched: enforcement.matched,
        params: enforcement.params,
        errors: enforcement.errors.into_iter().map(Into::into).collect(),
    }))
}

/// Enables a rule.
#[utoipa::path(post, path = "/rules/{ref}/enable", tag = "rules",
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody)))]
async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<axum::Json<RuleView>, ApiError> {
    caller.require(Role::Operator)?;
    let rule = save::set_enabled(&state, &r#ref, true).await?;
    authored(&state, &r#ref, &caller).await?;
    Ok(axum::Json(rule.into()))
}

/// Records `caller` as the last to save rule `rule`: what the rule starts is
/// its doing too, for asks that refuse self-approval.
pub(crate) async fn authored(
    state: &AppState,
    rule: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    Ok(attune_engine::inquiries::rule_saved(state, rule, caller.token.id).await?)
}

/// Disables a rule.
#[utoipa::path(post, path = "/rules/{ref}/disable", tag = "rules",
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 200, body = RuleView), (status = 404, body = ErrorBody)))]
async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(r#ref): ApiPath<String>,
) -> Result<axum::Json<RuleView>, ApiError> {
    caller.require(Role::Operator)?;
    let rule = save::set_enabled(&state, &r#ref, false).await?;
    authored(&state, &r#ref, &caller).await?;
    Ok(axum::Json(rule.into()))
}
