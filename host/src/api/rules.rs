//! `/rules`: rules are validated completely when saved.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::{ApiQuery, AppState, Listing};
use crate::rules::{RuleInput, validate_rule};
use crate::storage::{Page, Role, RuleFilter, RuleRecord, RuleSpec};

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
    pub rule: RuleRecord,
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
    /// Items per page (1-500).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub after: Option<String>,
}

/// Validates a rule against its trigger type and action; warns when no live
/// worker covers the action's capabilities.
async fn check(state: &AppState, input: &RuleInput) -> Result<(RuleSpec, Vec<String>), ApiError> {
    let trigger = state.storage.get_trigger_type(&input.trigger).await?;
    let record = state.storage.get_action(&input.action).await?;
    let pack = match &record {
        Some(a) => Some(state.pack(&a.component).await?),
        None => None,
    };
    let action = match (&record, &pack) {
        (Some(a), Some(p)) => p.action(&a.name),
        _ => None,
    };
    let spec = validate_rule(input, trigger.as_ref(), action)
        .map_err(|errors| ApiError::invalid("the rule is invalid", "", &errors))?;
    let mut warnings = Vec::new();
    if let Some(a) = &record
        && !super::workers::served(state, &a.capabilities).await?
    {
        warnings.push(format!(
            "no live worker can run {} now (it needs {}); executions will wait until one joins",
            a.r#ref,
            a.capabilities.join(", ")
        ));
    }
    Ok((spec, warnings))
}

/// Creates a rule after checking its trigger, criteria, action and params.
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
    let (spec, warnings) = check(&state, &input).await?;
    let rule = state.storage.insert_rule(&spec).await?;
    crate::scheduler::sync_rule(&state, &rule).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RuleResponse { rule, warnings }),
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
    Path(r#ref): Path<String>,
    ApiJson(input): ApiJson<RuleInput>,
) -> Result<axum::Json<RuleResponse>, ApiError> {
    caller.require(Role::Operator)?;
    let (spec, warnings) = check(&state, &input).await?;
    let rule = state
        .storage
        .update_rule(&r#ref, &spec)
        .await?
        .ok_or_else(|| ApiError::not_found("rule", &r#ref))?;
    if rule.spec.r#ref != r#ref {
        state.storage.delete_timer(&r#ref).await?;
    }
    crate::scheduler::sync_rule(&state, &rule).await?;
    Ok(axum::Json(RuleResponse { rule, warnings }))
}

/// Lists rules by ref.
#[utoipa::path(get, path = "/rules", tag = "rules", params(RuleQuery),
    responses((status = 200, body = Listing<RuleRecord>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RuleQuery>,
) -> Result<axum::Json<Listing<RuleRecord>>, ApiError> {
    caller.require(Role::Viewer)?;
    let filter = RuleFilter {
        trigger: q.trigger,
        action: q.action,
        enabled: q.enabled,
    };
    let page = Page {
        limit: q.limit,
        after: q.after,
    };
    let items = state.storage.list_rules(&filter, &page).await?;
    Ok(axum::Json(Listing::new(items, &page, |r| {
        r.spec.r#ref.clone()
    })))
}

/// Shows one rule.
#[utoipa::path(get, path = "/rules/{ref}", tag = "rules",
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 200, body = RuleRecord), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(r#ref): Path<String>,
) -> Result<axum::Json<RuleRecord>, ApiError> {
    caller.require(Role::Viewer)?;
    let rule = state
        .storage
        .get_rule(&r#ref)
        .await?
        .ok_or_else(|| ApiError::not_found("rule", &r#ref))?;
    Ok(axum::Json(rule))
}

/// Deletes a rule.
#[utoipa::path(delete, path = "/rules/{ref}", tag = "rules",
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(r#ref): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    if state.storage.delete_rule(&r#ref).await? {
        state.storage.delete_timer(&r#ref).await?;
        state.dispatch.timers.notify_one();
        state.cache.rules_changed();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("rule", &r#ref))
    }
}

async fn set_enabled(state: &AppState, r#ref: &str, enabled: bool) -> Result<RuleRecord, ApiError> {
    let rule = state
        .storage
        .set_rule_enabled(r#ref, enabled)
        .await?
        .ok_or_else(|| ApiError::not_found("rule", r#ref))?;
    crate::scheduler::sync_rule(state, &rule).await?;
    Ok(rule)
}

/// A sample event for a dry run.
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
    responses((status = 200, body = crate::scheduler::Verdict), (status = 404, body = ErrorBody)))]
async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(r#ref): Path<String>,
    ApiJson(input): ApiJson<TestRequest>,
) -> Result<axum::Json<crate::scheduler::Verdict>, ApiError> {
    caller.require(Role::Viewer)?;
    let rule = state
        .storage
        .get_rule(&r#ref)
        .await?
        .ok_or_else(|| ApiError::not_found("rule", &r#ref))?;
    let event = crate::storage::EventRecord {
        id: 0,
        trigger: rule.spec.trigger.clone(),
        payload: input.payload,
        source: Some("test".into()),
        created_at: crate::storage::now_ms(),
    };
    let (verdict, _) = crate::scheduler::evaluate(&state, &rule, &event).await?;
    Ok(axum::Json(verdict))
}

/// Enables a rule.
#[utoipa::path(post, path = "/rules/{ref}/enable", tag = "rules",
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 200, body = RuleRecord), (status = 404, body = ErrorBody)))]
async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(r#ref): Path<String>,
) -> Result<axum::Json<RuleRecord>, ApiError> {
    caller.require(Role::Operator)?;
    Ok(axum::Json(set_enabled(&state, &r#ref, true).await?))
}

/// Disables a rule.
#[utoipa::path(post, path = "/rules/{ref}/disable", tag = "rules",
    params(("ref" = String, Path, description = "Rule ref")),
    responses((status = 200, body = RuleRecord), (status = 404, body = ErrorBody)))]
async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(r#ref): Path<String>,
) -> Result<axum::Json<RuleRecord>, ApiError> {
    caller.require(Role::Operator)?;
    Ok(axum::Json(set_enabled(&state, &r#ref, false).await?))
}
