//! The web console at `/ui`: server-rendered pages over the engine, for
//! people.
//!
//! Pages are minijinja templates compiled into the binary (auto-escaped as
//! HTML), with a small stylesheet and htmx with its server-sent-events
//! extension, vendored under `host/assets/console/vendor` with their
//! licences. Every page reads without JavaScript; htmx only makes lists and
//! output live.
//!
//! Signing in trades an API token for a session cookie (`session`); the
//! token's role decides what the pages offer, and the same role checks as
//! the API's guard every change. Every request that is not a GET must come
//! from a page of this origin (its `Origin` header), and no page may be
//! framed.

mod assets;
mod catalog;
mod executions;
mod form;
mod inquiries;
mod overview;
mod rules;
mod session;
mod timeline;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::{Environment, Value as Ctx, context};

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use attune_engine::EngineError;
use attune_engine::records::Role;

/// Largest form a console page posts (a dry-run payload, a run's params).
const MAX_FORM_BYTES: usize = 256 << 10;

/// Resolves when the server stops: live streams end then, so that they do
/// not hold the drain.
#[derive(Clone)]
pub(crate) struct Closing(tokio::sync::watch::Receiver<bool>);

impl Closing {
    /// Waits for the stop.
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|closed| *closed).await;
    }
}

/// The console's routes, under `/ui`; `closed` turns true when the server
/// stops.
pub fn router(state: AppState, closed: tokio::sync::watch::Receiver<bool>) -> Router {
    let pages = Router::new()
        .route(
            "/",
            axum::routing::get(|| async { Redirect::to("/ui/executions") }),
        )
        .merge(session::routes())
        .merge(executions::routes())
        .merge(rules::routes())
        .merge(inquiries::routes())
        .merge(catalog::routes())
        .merge(overview::routes())
        .merge(assets::routes())
        .fallback(|| async { UiError::from(ApiError::NotFound("no such page".into())) })
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn(guard))
        .layer(axum::Extension(Closing(closed)))
        .with_state(state);
    // `/ui` and `/ui/` both lead in (to the login page without a session).
    Router::new().nest("/ui", pages).route(
        "/ui/",
        axum::routing::get(|| async { Redirect::to("/ui/executions") }),
    )
}

/// Refuses changes from other origins (CSRF) and sets the headers every
/// answer carries: no framing, no sniffing, scripts and styles only from
/// here, and no caching of pages (assets set their own).
async fn guard(req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) && !session::same_origin(req.headers())
    {
        return UiError::from(ApiError::Denied(
            "this form must be sent from a page of this console (the Origin header does not match)"
                .into(),
        ))
        .into_response();
    }
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Why a page cannot be shown: not signed in (to the login page), or an
/// error of the API's kinds, shown as a page with its status.
#[derive(Debug)]
pub(crate) enum UiError {
    /// No live session.
    Login,
    /// Anything else.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthorized => UiError::Login,
            e => UiError::Api(e),
        }
    }
}

impl From<EngineError> for UiError {
    fn from(e: EngineError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<minijinja::Error> for UiError {
    fn from(e: minijinja::Error) -> Self {
        UiError::Api(ApiError::Internal(e.into()))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::Login => Redirect::to("/ui/login").into_response(),
            UiError::Api(e) => {
                let status = e.status_code();
                if let ApiError::Internal(cause) = &e {
                    tracing::error!(error = ?cause, "internal error");
                }
                let body = e.body();
                let page = render(
                    "error.html",
                    context! { status => status.as_u16(), error => data(&body.error) },
                );
                match page {
                    Ok(html) => (status, html).into_response(),
                    Err(_) => (status, body.error.message).into_response(),
                }
            }
        }
    }
}

/// A page or a fragment, or why not.
pub(crate) type Page = Result<Response, UiError>;

/// The templates, parsed once.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("console template {name}: {e}"));
        }
        env.add_filter("time", time);
        env.add_filter("pretty", pretty);
        env.add_global("style", assets::stylesheet());
        env
    })
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../assets/console/templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "macros.html",
    "fields.html",
    "error.html",
    "login.html",
    "logout.html",
    "executions.html",
    "execution_rows.html",
    "execution.html",
    "execution_end.html",
    "replay.html",
    "rules.html",
    "rule.html",
    "packs.html",
    "action.html",
    "events.html",
    "workers.html",
    "inquiries.html",
    "respond.html",
);

/// Renders template `name` with `ctx`.
pub(crate) fn render(name: &str, ctx: Ctx) -> Result<Html<String>, UiError> {
    Ok(Html(templates().get_template(name)?.render(ctx)?))
}

/// Renders a whole page for `user`: `ctx` plus who is signed in and what
/// their role lets the page offer.
pub(crate) fn page(user: &Caller, section: &str, name: &str, ctx: Ctx) -> Page {
    let me = context! {
        user => context! {
            name => user.token.name.clone(),
            role => user.token.role.as_str(),
            operator => user.require(Role::Operator).is_ok(),
            admin => user.require(Role::Admin).is_ok(),
        },
        section => section,
    };
    Ok(render(name, context! { ..me, ..ctx })?.into_response())
}

/// `{{ ms | time }}`: a Unix-ms time as `2026-12-04 18:03:59 UTC`.
fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `{{ value | pretty }}`: JSON, indented.
fn pretty(v: Ctx) -> String {
    serde_json::to_value(&v)
        .and_then(|j| serde_json::to_string_pretty(&j))
        .unwrap_or_default()
}

/// A 303 to `to` after a change.
pub(crate) fn see(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Any serializable value for a template.
pub(crate) fn data<T: serde::Serialize>(value: T) -> Ctx {
    Ctx::from(minijinja::value::Serde(value))
}

/// A status with a page.
pub(crate) fn with_status(status: StatusCode, page: Page) -> Page {
    page.map(|mut r| {
        *r.status_mut() = status;
        r
    })
}
