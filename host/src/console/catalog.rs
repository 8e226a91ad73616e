//! Packs and their actions: each action's parameters and result as a
//! readable schema, and a run form generated from its parameter schema.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use minijinja::{Value as Ctx, context};
use serde_json::Value;

use super::form::{self, Field};
use super::session::Session;
use super::{Page, data, page, see, with_status};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::views::{ActionView, PackView};
use attune_engine::EngineError;
use attune_engine::catalog;
use attune_engine::executions::{self, RunRequest};
use attune_engine::records::{MAX_PAGE, Page as Keyset, Role};
use attune_runtime::PathError;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/packs", get(packs))
        .route("/actions/{ref}", get(action).post(run))
}

fn all() -> Keyset {
    Keyset {
        limit: Some(MAX_PAGE),
        after: None,
    }
}

/// Every pack with its actions.
async fn packs(State(state): State<AppState>, Session(user): Session) -> Page {
    let packs = catalog::packs(&state, &all()).await?;
    let actions = catalog::actions(&state, None, &all()).await?;
    let packs: Vec<Ctx> = packs
        .into_iter()
        .map(|p| {
            let of_pack: Vec<ActionView> = actions
                .iter()
                .filter(|a| a.pack == p.name)
                .cloned()
                .map(Into::into)
                .collect();
            let pack: PackView = p.into();
            context! { pack => data(&pack), actions => data(&of_pack) }
        })
        .collect();
    page(&user, "packs", "packs.html", context! { packs })
}

/// The action page: its schema, and its run form for operators, filled
/// with `submitted` values and `errors` at their fields.
async fn action_page(
    state: &AppState,
    user: &Caller,
    r#ref: &str,
    submitted: &HashMap<String, String>,
    errors: &[PathError],
) -> Page {
    let action = catalog::cached_export(state, r#ref)
        .await?
        .filter(|a| !a.sensor)
        .ok_or_else(|| ApiError::not_found("action", r#ref))?;
    let fields: Vec<Field> = form::fields(&action.params_schema, submitted, errors);
    // Problems no field shows (an unknown key, a workflow's own checks).
    let shown: Vec<&str> = names(&fields);
    let other: Vec<String> = errors
        .iter()
        .filter(|e| !shown.contains(&e.path.as_str()))
        .map(|e| {
            if e.path.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.path, e.message)
            }
        })
        .collect();
    let result = form::summary(&action.result_schema);
    // The spread of what its runs of the last day used.
    let used = attune_engine::history::recent_resources(state, r#ref).await?;
    let usage = context! {
        runs => used.len(),
        cpu => super::timeline::spread(&used, "cpu_us"),
        memory => super::timeline::spread(&used, "peak_memory_bytes"),
    };
    let view: ActionView = action.into();
    page(
        user,
        "packs",
        "action.html",
        context! {
            action => data(&view), fields => data(&fields), result, other, usage,
            json => submitted.get("_json").cloned().unwrap_or_default(),
        },
    )
}

fn names(fields: &[Field]) -> Vec<&str> {
    fields
        .iter()
        .flat_map(|f| std::iter::once(f.name.as_str()).chain(names(&f.fields)))
        .collect()
}

async fn action(
    State(state): State<AppState>,
    Session(user): Session,
    Path(r#ref): Path<String>,
) -> Page {
    action_page(&state, &user, &r#ref, &HashMap::new(), &[]).await
}

/// Runs the action with the form's params (or the JSON typed instead),
/// then shows the run; a bad value shows the form again with its error.
async fn run(
    State(state): State<AppState>,
    Session(user): Session,
    Path(r#ref): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Page {
    user.require(Role::Operator)?;
    let submitted: HashMap<String, String> = pairs.into_iter().collect();
    let action = catalog::cached_export(&state, &r#ref)
        .await?
        .filter(|a| !a.sensor)
        .ok_or_else(|| ApiError::not_found("action", &r#ref))?;
    let json = submitted.get("_json").map(|s| s.trim()).unwrap_or("");
    let params = if json.is_empty() {
        form::params(&action.params_schema, &submitted)
    } else {
        serde_json::from_str::<Value>(json)
            .map_err(|e| vec![PathError::new("/_json", format!("must be JSON: {e}"))])
    };
    let outcome: Result<(), Vec<PathError>> = match params {
        Err(errors) => Err(errors),
        Ok(params) => {
            let run = RunRequest {
                action: r#ref.clone(),
                params,
                timeout: None,
                max_attempts: None,
                source: Some("console".into()),
                depth: 0,
                requested_by: Some(user.token.id),
            };
            match executions::request(&state, run).await {
                Ok(execution) => return Ok(see(&format!("/ui/executions/{}", execution.id))),
                Err(EngineError::Invalid { errors, .. }) => Err(errors
                    .into_iter()
                    .map(|e| {
                        let path = e.path.strip_prefix("/params").unwrap_or(&e.path);
                        PathError::new(path, e.message)
                    })
                    .collect()),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let errors = outcome.unwrap_err();
    let page = action_page(&state, &user, &r#ref, &submitted, &errors).await;
    with_status(StatusCode::UNPROCESSABLE_ENTITY, page)
}
