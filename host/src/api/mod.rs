//! The HTTP API under `/api/v1`: one router per resource, no SQL here.
//!
//! [`router`] builds the whole application from an [`AppState`] without any
//! I/O, so tests can serve it on `127.0.0.1:0`. Routes are registered through
//! utoipa-axum together with their OpenAPI descriptions, so the document at
//! `/api/v1/openapi.json` is generated from the same code that routes.

pub mod auth;
pub mod error;
pub mod json;
pub mod views;

mod actions;
mod events;
mod executions;
mod health;
mod inquiries;
mod kv;
mod packs;
mod policies;
pub(crate) mod rules;
mod secrets;
mod sensors;
mod tokens;
mod triggers;
mod webhooks;
pub mod worker_protocol;
mod workers;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use attune_engine::Core;
use attune_engine::metrics::{RouteLabel, RouteLabels};
use attune_engine::records::Page;
use error::ApiError;

/// Settings the API needs at request time.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest pack upload accepted, in bytes.
    pub max_upload_bytes: usize,
    /// How long an MCP tool call waits for its execution.
    pub mcp_wait: std::time::Duration,
    /// Actions `/mcp` exposes (patterns like `ops.*`); empty: all.
    pub mcp_tools: Vec<String>,
    /// Host names `/mcp` answers besides loopback ones (DNS rebinding).
    pub mcp_hosts: Vec<String>,
    /// Whether the console's session cookie is `Secure` (served over TLS).
    pub secure_cookies: bool,
    /// The registries packs may be installed from, and how.
    pub registries: Arc<attune_engine::packs::oci::RegistryConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 << 20,
            mcp_wait: std::time::Duration::from_secs(60),
            mcp_tools: Vec::new(),
            mcp_hosts: Vec::new(),
            secure_cookies: false,
            registries: Arc::default(),
        }
    }
}

/// What handlers share: the engine's handle and the API's settings. Cheap
/// to clone. It dereferences to the [`Core`], so handlers hand it to
/// engine functions as they are.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub core: Core,
    /// Settings.
    pub config: Arc<ApiConfig>,
}

impl std::ops::Deref for AppState {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// A page of results and the cursor for the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listing<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

impl<T> Listing<T> {
    /// The page of `rows` as views, with the cursor after the last one when
    /// the page is full.
    fn of<R>(rows: Vec<R>, page: &Page, cursor: impl Fn(&R) -> String) -> Self
    where
        T: From<R>,
    {
        let next = (rows.len() as i64 == page.limit())
            .then(|| rows.last().map(&cursor))
            .flatten();
        Listing {
            items: rows.into_iter().map(T::from).collect(),
            next,
        }
    }
}

/// Query-string extractor with the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Path-parameter extractor with the API's error shape (`/executions/abc`
/// is a 400 in JSON, not axum's plain text).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Attune API",
        description = "Event-driven automation whose actions are WebAssembly components. \
                       Every route but /healthz, /readyz and webhook intake needs \
                       `Authorization: Bearer <token>`. Errors always have the shape \
                       {\"error\": {\"code\", \"message\", \"details\": [{\"path\", \"message\"}]}}."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::ErrorBody, error::ErrorInfo, error::ErrorDetail))
)]
struct ApiDoc;

/// The whole application: API, OpenAPI document, health and metrics.
pub fn router(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(packs::routes())
        .merge(actions::routes())
        .merge(triggers::routes())
        .merge(sensors::routes())
        .merge(rules::routes())
        .merge(policies::routes())
        .merge(inquiries::routes())
        .merge(events::routes())
        .merge(executions::routes())
        .merge(workers::routes())
        .merge(tokens::routes())
        .merge(secrets::routes())
        .merge(kv::routes())
        .merge(webhooks::routes())
        .merge(worker_protocol::routes())
        .split_for_parts();
    let mut doc = doc;
    // Routes are declared relative to /api/v1; publish them with the prefix.
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, item) in paths {
        doc.paths.paths.insert(format!("/api/v1{path}"), item);
    }
    document_errors(&mut doc);
    let doc = Arc::new(doc);
    let metrics = state.metrics.clone();
    Router::new()
        .nest("/api/v1", api)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move |caller: auth::Caller| {
                let doc = doc.clone();
                async move {
                    caller.require(attune_engine::records::Role::Viewer)?;
                    Ok::<_, ApiError>(axum::Json(doc.as_ref().clone()))
                }
            }),
        )
        .merge(health::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method".into())
        })
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let metrics = metrics.clone();
                count(metrics, req, next)
            },
        ))
        .with_state(state)
}

/// Gives every request of `app` (the API, `/mcp` and the console) an id, or
/// keeps the caller's `x-request-id`, traces it under that id and answers
/// with it. No global timeout: claims long-poll and output streams on
/// purpose; each bounds its own wait.
pub fn traced(app: Router) -> Router {
    app.layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // The path only: a query may carry a credential (a
                    // resume link's signature).
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), id)
                })
                .on_failure(on_failure),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The requests that cause work, and so begin (or continue) a trace: events,
/// webhooks, direct runs and MCP calls.
fn causes_work(method: &axum::http::Method, path: &str) -> bool {
    *method == axum::http::Method::POST
        && (path == "/api/v1/events"
            || path == "/api/v1/executions"
            || path.starts_with("/api/v1/webhooks/")
            || path == "/mcp")
}

/// With tracing on, a server span around each request that causes work:
/// a child of the caller's `traceparent` when it sends one, and the parent
/// of what the request causes (the engine reads it as
/// [`attune_engine::telemetry::current`]).
pub async fn request_span(
    State(telemetry): State<Arc<attune_engine::telemetry::Telemetry>>,
    req: Request,
    next: Next,
) -> Response {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{Span as _, SpanKind, Status};
    if !causes_work(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    // Read before the request goes on (its body is not `Sync`).
    let (parent, template) = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let parent = header("traceparent")
            .and_then(|t| attune_engine::telemetry::parse(t, header("tracestate")));
        let path = req.uri().path();
        let template = if path.starts_with("/api/v1/webhooks/") {
            "/api/v1/webhooks/{name}".to_string()
        } else {
            path.to_string()
        };
        (parent, template)
    };
    let method = req.method().to_string();
    let mut span = telemetry.start(
        format!("{method} {template}"),
        SpanKind::Server,
        parent.as_ref(),
        vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.template", template),
        ],
    );
    let context = opentelemetry::trace::Span::span_context(&span).clone();
    let response = attune_engine::telemetry::REQUEST
        .scope(context, next.run(req))
        .await;
    let status = response.status();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
        span.set_status(Status::error(status.to_string()));
    }
    span.end();
    response
}

/// Logs a 5xx answer, except the refusals the server logs as a state where
/// it begins and ends (a full disk: 507; the database unreachable or not
/// taking writes: 503), which would otherwise log every request they refuse.
fn on_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use axum::http::StatusCode;
    use tower_http::classify::ServerErrorsFailureClass::StatusCode as Status;
    match class {
        Status(StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE) => {
            tracing::debug!(classification = %class, ?latency, "request refused");
        }
        _ => tracing::error!(classification = %class, ?latency, "response failed"),
    }
}

/// Any operation can answer an error (no or a wrong token, malformed input,
/// a limit, the database unavailable …), always in the one error shape: the
/// document says so as each operation's `default` response. Operations that
/// write also list 507, a full disk, with its `Retry-After`.
fn document_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for item in doc.paths.paths.values_mut() {
        // Operations that may write: a full disk refuses them.
        let writes = [
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in writes.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("507".into())
                .or_insert_with(|| {
                    ResponseBuilder::new()
                        .description(
                            "The disk holding the database is full: nothing was stored. \
                             Retry after the `Retry-After` header's seconds; writes resume \
                             by themselves once space is freed.",
                        )
                        .header(
                            "Retry-After",
                            utoipa::openapi::HeaderBuilder::new()
                                .schema(
                                    utoipa::openapi::ObjectBuilder::new()
                                        .schema_type(utoipa::openapi::schema::Type::Integer),
                                )
                                .description(Some("Seconds to wait before trying again"))
                                .build(),
                        )
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build()
                        .into()
                });
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("default".into())
                .or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("An error, in the one error shape")
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build()
                        .into()
                });
        }
    }
}

async fn count(
    metrics: Arc<attune_engine::metrics::Metrics>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let began = std::time::Instant::now();
    let response = next.run(req).await;
    metrics
        .http_latency
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(began.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&RouteLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
