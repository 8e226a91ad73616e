//! Events (their payloads and the rules that judged them) and workers
//! (capabilities, labels, heartbeat, what they run).

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use minijinja::{Value as Ctx, context};
use serde::Deserialize;

use super::session::Session;
use super::{Page, data, page};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::views::{EventView, WorkerView};
use attune_engine::history;
use attune_engine::records::{ExecutionFilter, ExecutionStatus, MAX_PAGE, Page as Keyset};

/// Events on a page.
const PAGE: i64 = 50;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/events", get(events))
        .route("/workers", get(workers))
}

#[derive(Debug, Default, Deserialize)]
struct EventQuery {
    /// Only this trigger type.
    #[serde(default)]
    trigger: String,
    /// Older than this id (the next page).
    #[serde(default)]
    after: String,
}

async fn events(
    State(state): State<AppState>,
    Session(user): Session,
    Query(q): Query<EventQuery>,
) -> Page {
    if !q.after.is_empty() && q.after.parse::<i64>().is_err() {
        return Err(ApiError::BadRequest("`after` must be an event id".into()).into());
    }
    let keyset = Keyset {
        limit: Some(PAGE),
        after: (!q.after.is_empty()).then(|| q.after.clone()),
    };
    let trigger = (!q.trigger.is_empty()).then_some(q.trigger.as_str());
    let items = history::events(&state, trigger, &keyset).await?;
    let next = (items.len() as i64 == PAGE)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    let ids: Vec<i64> = items.iter().map(|e| e.id).collect();
    let enforcements = history::enforcements_of_events(&state, &ids).await?;
    let items: Vec<Ctx> = items
        .into_iter()
        .map(|e| {
            let rules: Vec<Ctx> = enforcements
                .iter()
                .filter(|(event, _, _)| *event == e.id)
                .map(|(_, rule, status)| context! { rule, status })
                .collect();
            let event: EventView = e.into();
            context! { event => data(&event), rules }
        })
        .collect();
    page(
        &user,
        "events",
        "events.html",
        context! { items, next, trigger => q.trigger },
    )
}

async fn workers(State(state): State<AppState>, Session(user): Session) -> Page {
    let all = Keyset {
        limit: Some(MAX_PAGE),
        after: None,
    };
    let workers = attune_engine::worker::standalone::list(&state, &all).await?;
    let running = ExecutionFilter {
        status: Some(ExecutionStatus::Running),
        ..Default::default()
    };
    let running = history::executions(&state, &running, &all).await?;
    let workers: Vec<Ctx> = workers
        .into_iter()
        .map(|w| {
            let runs: Vec<Ctx> = running
                .iter()
                .filter(|e| e.worker == Some(w.id))
                .map(|e| context! { id => e.id, action => e.action.clone() })
                .collect();
            let worker: WorkerView = w.into();
            context! { worker => data(&worker), runs }
        })
        .collect();
    page(&user, "workers", "workers.html", context! { workers })
}
