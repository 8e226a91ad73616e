//! Executions: the list (filters, keyset pages, live rows, counts by
//! status), one execution (params, result, logs, live output, attempts,
//! what caused it), cancel, re-run and replay.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Form, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::session::Session;
use super::{Closing, Page, UiError, data, page, render, see};
use crate::api::AppState;
use crate::api::error::{ApiError, ErrorDetail};
use crate::api::views::ExecutionView;
use attune_engine::executions::{self, RunRequest};
use attune_engine::history;
use attune_engine::output::{self, Output};
use attune_engine::records::{
    ExecutionFilter, ExecutionRecord, ExecutionStatus, MAX_PAGE, Page as Keyset, Role, now_ms,
};
use attune_runtime::secrets::MASK;
use attune_util::units::{millis, parse_duration};

/// Rows on a page of the list.
const PAGE: i64 = 50;

/// How often a live list looks for changes, and how long it stays open
/// before the browser reconnects.
const LIVE_TICK: Duration = Duration::from_secs(1);
const LIVE_FOR: Duration = Duration::from_secs(3600);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/executions", get(list))
        .route("/executions/live", get(live))
        .route("/executions/{id}", get(show))
        .route("/executions/{id}/output", get(output))
        .route("/executions/{id}/cancel", post(cancel))
        .route("/executions/{id}/rerun", post(rerun))
        .route("/executions/{id}/replay", post(replay))
}

/// The list's filters, as the filter form sends them (empty: any).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
struct Filters {
    #[serde(default)]
    status: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    rule: String,
    /// Only the last … (`1h`, `24h`, `7d`, any duration).
    #[serde(default)]
    since: String,
    /// The workflow whose tasks to list.
    #[serde(default)]
    parent: String,
    /// Older than this id (the next page).
    #[serde(default)]
    after: String,
}

impl Filters {
    /// The execution filter and page, or every problem at its field.
    fn checked(&self) -> Result<(ExecutionFilter, Keyset), UiError> {
        let mut details = Vec::new();
        let mut problem = |path: &str, message: &str| {
            details.push(ErrorDetail {
                path: path.into(),
                message: message.into(),
            })
        };
        let some = |s: &String| (!s.trim().is_empty()).then(|| s.trim().to_string());
        let status = some(&self.status).and_then(|s| {
            let parsed = ExecutionStatus::parse(&s);
            if parsed.is_none() {
                problem("/status", "unknown status");
            }
            parsed
        });
        let since = some(&self.since).and_then(|s| match parse_duration(&s) {
            Ok(d) => Some(now_ms() - millis(d)),
            Err(e) => {
                problem("/since", &e);
                None
            }
        });
        let mut number = |path: &str, s: &String| {
            some(s).and_then(|s| {
                let n = s.parse::<i64>().ok();
                if n.is_none() {
                    problem(path, "must be an execution id");
                }
                n
            })
        };
        let parent = number("/parent", &self.parent);
        let after = number("/after", &self.after);
        if !details.is_empty() {
            return Err(ApiError::Invalid {
                message: "the filters are invalid".into(),
                details,
            }
            .into());
        }
        let filter = ExecutionFilter {
            status,
            action: some(&self.action),
            rule: some(&self.rule),
            parent,
            since,
        };
        let keyset = Keyset {
            limit: Some(PAGE),
            after: after.map(|a| a.to_string()),
        };
        Ok((filter, keyset))
    }

    /// The filters as a query string, without the page.
    fn query(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &self.status),
            ("action", &self.action),
            ("rule", &self.rule),
            ("since", &self.since),
            ("parent", &self.parent),
        ] {
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        }
        out.finish()
    }
}

/// The rows of a page, as views (params and results masked as the API
/// shows them).
async fn rows(state: &AppState, filters: &Filters) -> Result<Vec<ExecutionView>, UiError> {
    let (filter, keyset) = filters.checked()?;
    let items = history::executions(state, &filter, &keyset).await?;
    Ok(items
        .into_iter()
        .map(|e| ExecutionView::summary(e.into()))
        .collect())
}

async fn list(
    State(state): State<AppState>,
    Session(user): Session,
    Query(filters): Query<Filters>,
) -> Page {
    let items = rows(&state, &filters).await?;
    let next = (items.len() as i64 == PAGE)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    let now = now_ms();
    let counted = history::counts_since(&state, now - 3_600_000, now - 86_400_000).await?;
    let counts: Vec<_> = ExecutionStatus::ALL
        .iter()
        .map(|s| {
            let (hour, day) = counted
                .iter()
                .find(|(x, _, _)| x == s)
                .map_or((0, 0), |(_, h, d)| (*h, *d));
            context! { status => s.as_str(), hour, day }
        })
        .collect();
    page(
        &user,
        "executions",
        "executions.html",
        context! {
            items => data(&items), next, counts, filters => data(&filters),
            query => filters.query(),
            live => filters.after.is_empty(),
            statuses => ExecutionStatus::ALL.map(ExecutionStatus::as_str),
        },
    )
}

/// The first page's rows as server-sent `rows` events: now, then whenever
/// they change (new executions, changed statuses).
async fn live(
    State(state): State<AppState>,
    Extension(closing): Extension<Closing>,
    Session(_): Session,
    Query(filters): Query<Filters>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let filters = Filters {
        after: String::new(),
        ..filters
    };
    filters.checked()?;
    let began = tokio::time::Instant::now();
    let ticks = futures_util::stream::unfold(
        (state, filters, String::new(), true),
        move |(state, filters, last, first)| async move {
            if began.elapsed() > LIVE_FOR {
                return None;
            }
            if !first {
                tokio::time::sleep(LIVE_TICK).await;
            }
            let html = match rows(&state, &filters).await {
                Ok(items) => render("execution_rows.html", context! { items => data(&items) })
                    .map(|h| h.0)
                    .unwrap_or_default(),
                // The database may be away for a moment: keep what is shown.
                Err(_) => last.clone(),
            };
            let event = (html != last).then(|| Event::default().event("rows").data(&html));
            Some((event, (state, filters, html, false)))
        },
    );
    let events = ticks
        .filter_map(|e| async move { e.map(Ok) })
        .take_until(closing.wait());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Default, Deserialize)]
struct DetailQuery {
    /// Log lines at this level or above.
    #[serde(default)]
    level: String,
}

const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

async fn show(
    State(state): State<AppState>,
    Session(user): Session,
    Path(id): Path<i64>,
    Query(q): Query<DetailQuery>,
) -> Page {
    let record = history::execution(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("execution", id))?;
    let attempts = history::attempts(&state, id).await?;
    let event = match record.enforcement {
        Some(n) => history::event_of_enforcement(&state, n).await?,
        None => None,
    };
    let level = LEVELS.iter().position(|l| *l == q.level).unwrap_or(0);
    let logs: Vec<serde_json::Value> = record
        .logs
        .as_ref()
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .filter(|line| {
            let at = line["level"].as_str().unwrap_or_default();
            LEVELS.iter().position(|l| *l == at).unwrap_or(0) >= level
        })
        .cloned()
        .collect();
    // A workflow's own execution (nested ones too) lists its tasks.
    let workflow = attune_engine::catalog::cached_export(&state, &record.action)
        .await?
        .is_some_and(|a| a.workflow.is_some());
    let tasks = if workflow {
        let filter = ExecutionFilter {
            parent: Some(id),
            ..Default::default()
        };
        let keyset = Keyset {
            limit: Some(MAX_PAGE),
            after: None,
        };
        history::executions(&state, &filter, &keyset).await?
    } else {
        Vec::new()
    };
    let tasks: Vec<ExecutionRecord> = tasks.into_iter().rev().collect();
    // Its asks still waiting for someone.
    let asking: Vec<(i64, String, Option<String>)> =
        if tasks.iter().any(|t| t.status == ExecutionStatus::Pending) {
            attune_engine::inquiries::of_workflow(&state, id)
                .await?
                .into_iter()
                .filter(|i| i.kind == "ask" && i.state == "open")
                .map(|i| {
                    let prompt = attune_engine::inquiries::spec(&i).prompt;
                    (i.id, i.task, prompt)
                })
                .collect()
        } else {
            Vec::new()
        };
    let timeline = super::timeline::bars(&record, &tasks);
    let tasks: Vec<ExecutionView> = tasks.into_iter().map(Into::into).collect();
    let finished = record.status.is_finished();
    let view: ExecutionView = record.into();
    page(
        &user,
        "executions",
        "execution.html",
        context! {
            e => data(&view), attempts => data(&attempts), event, logs => data(&logs), tasks => data(&tasks), finished,
            timeline => data(&timeline), asking => data(&asking),
            levels => LEVELS, level => LEVELS[level],
        },
    )
}

/// Output as server-sent events for the page: `stdout` and `stderr` as
/// escaped text to append, then `end` with the outcome to show.
async fn output(
    State(state): State<AppState>,
    Extension(closing): Extension<Closing>,
    Session(_): Session,
    Path(id): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    history::execution(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("execution", id))?;
    let stream = output::stream(state.core.clone(), id).map(|piece| {
        let escaped = |text: &str| minijinja::HtmlEscape(text).to_string();
        Ok(match piece {
            Output::Stdout(text) => Event::default().event("stdout").data(escaped(&text)),
            Output::Stderr(text) => Event::default().event("stderr").data(escaped(&text)),
            Output::End(record) => {
                let view: ExecutionView = (*record).into();
                let html = render("execution_end.html", context! { e => data(&view) })
                    .map(|h| h.0)
                    .unwrap_or_default();
                Event::default().event("end").data(html)
            }
        })
    });
    Ok(Sse::new(stream.take_until(closing.wait())).keep_alive(KeepAlive::default()))
}

async fn cancel(
    State(state): State<AppState>,
    Session(user): Session,
    Path(id): Path<i64>,
) -> Page {
    user.require(Role::Operator)?;
    executions::cancel(&state, id).await?;
    Ok(see(&format!("/ui/executions/{id}")))
}

/// Runs the same action with the same params again. Params that held
/// secrets are stored masked, so such a run cannot be repeated from here.
async fn rerun(State(state): State<AppState>, Session(user): Session, Path(id): Path<i64>) -> Page {
    user.require(Role::Operator)?;
    let record = history::execution(&state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("execution", id))?;
    if record.params.to_string().contains(MASK) {
        return Err(ApiError::Conflict(
            "this run's parameters held secrets, which are never stored; run it from its action's page"
                .into(),
        )
        .into());
    }
    let run = RunRequest {
        action: record.action,
        params: record.params,
        timeout: record.timeout_ms.map(|ms| format!("{ms}ms")),
        max_attempts: Some(record.max_attempts),
        source: Some("console".into()),
        depth: 0,
        requested_by: Some(user.token.id),
    };
    let new = executions::request(&state, run).await?;
    Ok(see(&format!("/ui/executions/{}", new.id)))
}

#[derive(Debug, Deserialize)]
struct ReplayForm {
    /// Another registered version of the pack; empty: the one that ran.
    #[serde(default)]
    pack_version: String,
}

/// Replays the execution against its journal and shows the report: the
/// two results side by side and the first divergence.
async fn replay(
    State(state): State<AppState>,
    Session(user): Session,
    Path(id): Path<i64>,
    Form(form): Form<ReplayForm>,
) -> Page {
    user.require(Role::Operator)?;
    let version = form.pack_version.trim();
    if version.len() > 128 {
        return Err(ApiError::Invalid {
            message: "the pack version is at most 128 characters".into(),
            details: vec![ErrorDetail {
                path: "/pack_version".into(),
                message: "at most 128 characters".into(),
            }],
        }
        .into());
    }
    let version = (!version.is_empty()).then_some(version);
    let report = attune_engine::replay::replay(&state, id, version).await?;
    page(
        &user,
        "executions",
        "replay.html",
        context! { id => id, r => data(&report) },
    )
}
