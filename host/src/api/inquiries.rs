//! `/inquiries`: a workflow's `ask` tasks waiting for a person, and their
//! answers.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::{ApiPath, ApiQuery, AppState};
use attune_engine::inquiries;
use attune_engine::records::{InquiryRecord, Role};

/// The largest answer taken, in bytes of JSON.
pub const MAX_ANSWER: usize = 64 * 1024;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(respond))
}

/// An inquiry: what an `ask` (or a `wait`) task waits for.
#[derive(Debug, Serialize, ToSchema)]
pub struct InquiryView {
    /// Its id: the task's own execution.
    pub id: i64,
    /// Its workflow's execution.
    pub execution: i64,
    /// The task's name.
    pub task: String,
    /// `ask` (a person answers) or `wait` (an event resumes it).
    pub kind: String,
    /// What it asks.
    pub prompt: Option<String>,
    /// JSON Schema of the answer.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// The trigger type a wait waits for.
    pub trigger: Option<String>,
    /// `open`, `answered`, `timed_out` or `closed` (its workflow was
    /// cancelled).
    pub state: String,
    /// Who may answer: roles (a role admits those above it) and token names.
    #[schema(value_type = Option<Object>)]
    pub approvers: Option<Value>,
    /// Whether the token that started the workflow may answer.
    pub self_approval: bool,
    /// Unix ms when it times out.
    pub deadline: Option<i64>,
    /// Who answered (a token's name, `resume URL`), or the event that
    /// resumed a wait.
    pub answered_by: Option<String>,
    /// Unix ms.
    pub answered_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// Whether the caller may answer it now.
    pub may_answer: bool,
    /// A signed link that answers it without a token (a path under this
    /// server), shown to those who may answer when the ask allows one:
    /// good until its deadline (or a day), and only while it is open.
    pub resume_url: Option<String>,
}

impl InquiryView {
    /// `i` as `caller` sees it.
    pub fn of(i: InquiryRecord, caller: &Caller, core: &attune_engine::Core) -> Self {
        let spec = inquiries::spec(&i);
        let by = caller.answerer();
        let may_answer =
            i.kind == "ask" && i.state == "open" && inquiries::refusal(&i, &spec, by).is_none();
        let resume_url = may_answer
            .then(|| inquiries::resume_url(core, &i))
            .flatten();
        InquiryView {
            resume_url,
            id: i.id,
            execution: i.workflow,
            task: i.task,
            kind: i.kind,
            prompt: spec.prompt,
            schema: spec.schema,
            trigger: spec.trigger,
            state: i.state,
            approvers: spec
                .approvers
                .map(|a| serde_json::to_value(a).unwrap_or_default()),
            self_approval: spec.self_approval,
            deadline: i.deadline,
            answered_by: i.answered_by,
            answered_at: i.answered_at,
            created_at: i.created_at,
            may_answer,
        }
    }
}

/// Open inquiries.
#[derive(Debug, Serialize, ToSchema)]
pub struct InquiryList {
    /// Oldest first.
    pub items: Vec<InquiryView>,
}

/// Which inquiries to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InquiryQuery {
    /// Only those of this workflow execution, in any state (by default:
    /// the open asks the caller may answer).
    pub execution: Option<i64>,
}

/// Lists the open `ask` inquiries the caller may answer (or every
/// inquiry of one workflow execution).
#[utoipa::path(get, path = "/inquiries", tag = "inquiries", params(InquiryQuery),
    responses((status = 200, body = InquiryList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InquiryQuery>,
) -> Result<axum::Json<InquiryList>, ApiError> {
    caller.require(Role::Viewer)?;
    let found = match q.execution {
        Some(workflow) => inquiries::of_workflow(&state, workflow).await?,
        None => inquiries::list(&state, caller.answerer()).await?,
    };
    Ok(axum::Json(InquiryList {
        items: found
            .into_iter()
            .map(|i| InquiryView::of(i, &caller, &state))
            .collect(),
    }))
}

/// Shows one inquiry.
#[utoipa::path(get, path = "/inquiries/{id}", tag = "inquiries",
    params(("id" = i64, Path, description = "Inquiry id (its task's execution)")),
    responses((status = 200, body = InquiryView), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<InquiryView>, ApiError> {
    caller.require(Role::Viewer)?;
    let i = inquiries::get(&state, id).await?;
    Ok(axum::Json(InquiryView::of(i, &caller, &state)))
}

/// Answers an `ask` with the answer itself as the body; it becomes the
/// task's result, with `answered_by` and `answered_at`. 403 when the
/// caller may not answer it, 409 (naming who answered) when it is no longer
/// open, 422 with paths when the answer does not fit the schema.
#[utoipa::path(post, path = "/inquiries/{id}/respond", tag = "inquiries",
    params(("id" = i64, Path, description = "Inquiry id")),
    request_body(content = Object, description = "The answer, checked against the inquiry's schema"),
    responses(
        (status = 200, description = "Answered; its workflow goes on", body = InquiryView),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already answered, timed out or closed", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Every problem of the answer with its path", body = ErrorBody),
    ))]
async fn respond(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(answer): ApiJson<Value>,
) -> Result<axum::Json<InquiryView>, ApiError> {
    caller.require(Role::Viewer)?;
    if answer.to_string().len() > MAX_ANSWER {
        return Err(ApiError::TooLarge(format!(
            "an answer is at most {MAX_ANSWER} bytes"
        )));
    }
    let by = caller.answerer();
    let i = inquiries::respond(&state, id, answer, by).await?;
    Ok(axum::Json(InquiryView::of(i, &caller, &state)))
}
