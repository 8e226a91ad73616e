//! Rules: the list with enable/disable, one rule with its recent
//! enforcements and why each did or did not run, and a dry run.

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::routing::{get, post};
use minijinja::{Value as Ctx, context};
use serde::Deserialize;

use super::session::Session;
use super::{Page, data, page, see};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::error::ErrorDetail;
use crate::api::views::RuleView;
use attune_engine::records::{Page as Keyset, Role, RuleFilter};
use attune_engine::rules;
use attune_engine::rules::evaluate::dry_run;
use attune_engine::rules::save;

/// Rules on a page of the list.
const PAGE: i64 = 100;

/// Enforcements shown on a rule's page.
const RECENT: i64 = 20;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/rules", get(list))
        .route("/rules/{ref}", get(show))
        .route("/rules/{ref}/enable", post(enable))
        .route("/rules/{ref}/disable", post(disable))
        .route("/rules/{ref}/test", post(test))
        .route("/rules/{ref}/policies", post(set_policies))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    /// After this ref (the next page).
    #[serde(default)]
    after: String,
}

async fn list(
    State(state): State<AppState>,
    Session(user): Session,
    Query(q): Query<ListQuery>,
) -> Page {
    let keyset = Keyset {
        limit: Some(PAGE),
        after: (!q.after.is_empty()).then_some(q.after),
    };
    let rules = rules::list(&state, &RuleFilter::default(), &keyset).await?;
    let next = (rules.len() as i64 == PAGE)
        .then(|| rules.last().map(|r| r.spec.r#ref.clone()))
        .flatten();
    let rules: Vec<RuleView> = rules.into_iter().map(Into::into).collect();
    page(
        &user,
        "rules",
        "rules.html",
        context! { rules => data(&rules), next },
    )
}

/// The rule page, with `extra` (a dry run's form and enforcement).
async fn rule_page(state: &AppState, user: &Caller, r#ref: &str, extra: Ctx) -> Page {
    let rule = rules::get(state, r#ref)
        .await?
        .ok_or_else(|| ApiError::not_found("rule", r#ref))?;
    let enforcements = rules::enforcements(state, r#ref, RECENT).await?;
    let rule: RuleView = rule.into();
    page(
        user,
        "rules",
        "rule.html",
        context! { rule => data(&rule), enforcements => data(&enforcements), ..extra },
    )
}

async fn show(
    State(state): State<AppState>,
    Session(user): Session,
    Path(r#ref): Path<String>,
) -> Page {
    rule_page(&state, &user, &r#ref, context! { payload => "{}" }).await
}

#[derive(Debug, Deserialize)]
struct PoliciesForm {
    policies: String,
}

/// Most bytes of a policies form: eight policies fit many times over.
const POLICIES_FORM_MAX: usize = 16 * 1024;

/// Replaces the rule's policies (a JSON array, as the API takes them); a
/// problem shows on the page at its path, 422, with what was typed kept.
async fn set_policies(
    State(state): State<AppState>,
    Session(user): Session,
    Path(r#ref): Path<String>,
    Form(form): Form<PoliciesForm>,
) -> Page {
    user.require(Role::Operator)?;
    let problem = |message: String| {
        vec![ErrorDetail {
            path: "/policies".into(),
            message,
        }]
    };
    if form.policies.len() > POLICIES_FORM_MAX {
        // Not echoed back: the stored policies show, so saving again keeps them.
        let message = format!("at most {POLICIES_FORM_MAX} bytes");
        return policies_refused(&state, &user, &r#ref, problem(message), String::new()).await;
    }
    let text = if form.policies.trim().is_empty() {
        "[]"
    } else {
        form.policies.as_str()
    };
    let policies = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let problems = problem(format!("not a JSON array of policies: {e}"));
            return policies_refused(&state, &user, &r#ref, problems, form.policies).await;
        }
    };
    match save::set_policies(&state, &r#ref, policies).await {
        Ok(_) => {
            crate::api::rules::authored(&state, &r#ref, &user).await?;
            Ok(see(&format!(
                "/ui/rules/{}",
                form_urlencoded::byte_serialize(r#ref.as_bytes()).collect::<String>()
            )))
        }
        Err(e) => match ApiError::from(e) {
            ApiError::Invalid { details, .. } => {
                policies_refused(&state, &user, &r#ref, details, form.policies).await
            }
            e => Err(e.into()),
        },
    }
}

async fn enable(
    State(state): State<AppState>,
    Session(user): Session,
    Path(r#ref): Path<String>,
) -> Page {
    toggle(&state, &user, &r#ref, true).await
}

async fn disable(
    State(state): State<AppState>,
    Session(user): Session,
    Path(r#ref): Path<String>,
) -> Page {
    toggle(&state, &user, &r#ref, false).await
}

async fn toggle(state: &AppState, user: &Caller, r#ref: &str, enabled: bool) -> Page {
    user.require(Role::Operator)?;
    save::set_enabled(state, r#ref, enabled).await?;
    crate::api::rules::authored(state, r#ref, user).await?;
    Ok(see(&format!(
        "/ui/rules/{}",
        form_urlencoded::byte_serialize(r#ref.as_bytes()).collect::<String>()
    )))
}

/// The rule page answering a policies form that was refused: 422, each
/// problem at its path, what was typed kept.
async fn policies_refused(
    state: &AppState,
    user: &Caller,
    r#ref: &str,
    problems: Vec<ErrorDetail>,
    typed: String,
) -> Page {
    let extra =
        context! { payload => "{}", policies_text => typed, policy_errors => data(&problems) };
    let page = rule_page(state, user, r#ref, extra).await;
    super::with_status(axum::http::StatusCode::UNPROCESSABLE_ENTITY, page)
}

#[derive(Debug, Deserialize)]
struct TestForm {
    payload: String,
}

/// Dry run: would the rule match this payload, and what would it run?
/// Nothing is stored.
async fn test(
    State(state): State<AppState>,
    Session(user): Session,
    Path(r#ref): Path<String>,
    Form(form): Form<TestForm>,
) -> Page {
    let payload: serde_json::Value = match serde_json::from_str(&form.payload) {
        Ok(v) => v,
        Err(e) => {
            let extra = context! {
                payload => form.payload,
                payload_error => format!("not JSON: {e}"),
            };
            let page = rule_page(&state, &user, &r#ref, extra).await;
            return super::with_status(axum::http::StatusCode::UNPROCESSABLE_ENTITY, page);
        }
    };
    let enforcement = dry_run(&state, &r#ref, payload).await?;
    let errors: Vec<ErrorDetail> = enforcement.errors.into_iter().map(Into::into).collect();
    let extra = context! {
        payload => form.payload,
        dry_run => context! { matched => enforcement.matched, params => data(&enforcement.params), errors => data(&errors) },
    };
    rule_page(&state, &user, &r#ref, extra).await
}
