//! "Waiting for you": the open asks a signed-in user may answer, each with a
//! form generated from its answer's schema; and the page a resume URL
//! opens for people without a token, which shows one prompt and its form
//! and nothing else.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use minijinja::context;
use serde::Deserialize;
use serde_json::Value;

use super::form::{self, Field};
use super::session::Session;
use super::{Page, data, page, render, see, with_status};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use attune_engine::EngineError;
use attune_engine::inquiries::{self, By};
use attune_engine::records::InquiryRecord;
use attune_runtime::PathError;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/inquiries", get(list))
        .route("/inquiries/{id}", axum::routing::post(answer))
        .route("/respond/{id}", get(resume_page).post(resume_answer))
}

/// One inquiry as a page shows it: its prompt and the form's fields.
fn shown(
    i: &InquiryRecord,
    submitted: &HashMap<String, String>,
    errors: &[PathError],
) -> minijinja::Value {
    let spec = inquiries::spec(i);
    let schema = spec
        .schema
        .clone()
        .unwrap_or_else(|| serde_json::json!({"type": "object"}));
    let fields: Vec<Field> = form::fields(&schema, submitted, errors);
    let shown: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
    let other: Vec<String> = errors
        .iter()
        .filter(|e| !shown.contains(&e.path))
        .map(|e| {
            if e.path.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.path, e.message)
            }
        })
        .collect();
    context! {
        id => i.id, execution => i.workflow, task => i.task.clone(),
        prompt => spec.prompt, deadline => i.deadline, created_at => i.created_at,
        fields => data(&fields), other,
    }
}

/// The open asks `user` may answer; `failed`: one answered with problems.
async fn list_page(
    state: &AppState,
    user: &Caller,
    failed: Option<(i64, &HashMap<String, String>, &[PathError])>,
) -> Page {
    let open = inquiries::list(state, user.answerer()).await?;
    let items: Vec<minijinja::Value> = open
        .iter()
        .map(|i| match failed {
            Some((id, submitted, errors)) if id == i.id => shown(i, submitted, errors),
            _ => shown(i, &HashMap::new(), &[]),
        })
        .collect();
    page(user, "inquiries", "inquiries.html", context! { items })
}

async fn list(State(state): State<AppState>, Session(user): Session) -> Page {
    list_page(&state, &user, None).await
}

/// The answer a form describes, read against the inquiry's schema.
fn answer_of(
    i: &InquiryRecord,
    submitted: &HashMap<String, String>,
) -> Result<Value, Vec<PathError>> {
    let schema = inquiries::spec(i)
        .schema
        .unwrap_or_else(|| serde_json::json!({"type": "object"}));
    form::params(&schema, submitted)
}

/// Answers an inquiry from the "Waiting for you" form, then shows its
/// workflow; an answer that does not fit shows the form again.
async fn answer(
    State(state): State<AppState>,
    Session(user): Session,
    Path(id): Path<i64>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Page {
    let submitted: HashMap<String, String> = pairs.into_iter().collect();
    let i = inquiries::get(&state, id).await?;
    let by = user.answerer();
    let errors = match answer_of(&i, &submitted) {
        Ok(answer) => match inquiries::respond(&state, id, answer, by).await {
            Ok(i) => return Ok(see(&format!("/ui/executions/{}", i.workflow))),
            Err(EngineError::Invalid { errors, .. }) => errors,
            Err(e) => return Err(e.into()),
        },
        Err(errors) => errors,
    };
    with_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        list_page(&state, &user, Some((id, &submitted, &errors))).await,
    )
}

/// What a resume URL carries besides the inquiry's id.
#[derive(Debug, Deserialize)]
struct Signed {
    #[serde(default)]
    expires: i64,
    #[serde(default)]
    sig: String,
}

/// The inquiry a resume URL opens, when its signature holds, it has not
/// expired and the inquiry is still open.
async fn resumable(state: &AppState, id: i64, signed: &Signed) -> Result<InquiryRecord, ApiError> {
    if signed.sig.len() > 128 {
        return Err(ApiError::Denied("this link is not valid".into()));
    }
    inquiries::check_resume(state, id, signed.expires, &signed.sig)?;
    let i = inquiries::get(state, id).await?;
    if inquiries::resume_url(state, &i).is_none() {
        return Err(ApiError::Denied("this link is not valid".into()));
    }
    if i.state != "open" {
        return Err(ApiError::Conflict(
            "this link was used: the question is answered or closed".into(),
        ));
    }
    Ok(i)
}

/// A page without a session: the prompt and its form, nothing else.
fn resume_view(
    i: &InquiryRecord,
    signed: &Signed,
    submitted: &HashMap<String, String>,
    errors: &[PathError],
    done: bool,
) -> Page {
    let html = render(
        "respond.html",
        context! {
            i => shown(i, submitted, errors), expires => signed.expires,
            sig => signed.sig.clone(), done,
        },
    )?;
    Ok(html.into_response())
}

async fn resume_page(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(signed): Query<Signed>,
) -> Page {
    let i = resumable(&state, id, &signed).await?;
    resume_view(&i, &signed, &HashMap::new(), &[], false)
}

async fn resume_answer(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Page {
    let mut submitted: HashMap<String, String> = pairs.into_iter().collect();
    let signed = Signed {
        expires: submitted
            .remove("_expires")
            .and_then(|e| e.parse().ok())
            .unwrap_or_default(),
        sig: submitted.remove("_sig").unwrap_or_default(),
    };
    let i = resumable(&state, id, &signed).await?;
    let errors = match answer_of(&i, &submitted) {
        Ok(answer) => match inquiries::respond(&state, id, answer, By::ResumeUrl).await {
            Ok(_) => return resume_view(&i, &signed, &HashMap::new(), &[], true),
            Err(EngineError::Invalid { errors, .. }) => errors,
            // Who answered first is not the link holder's business.
            Err(EngineError::Conflict(_)) => {
                return Err(ApiError::Conflict(
                    "this link was used: the question is answered or closed".into(),
                )
                .into());
            }
            Err(e) => return Err(e.into()),
        },
        Err(errors) => errors,
    };
    with_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        resume_view(&i, &signed, &submitted, &errors, false),
    )
}
