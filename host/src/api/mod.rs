//! The HTTP API under `/api/v1`: one router per resource, no SQL here.
//!
//! [`router`] builds the whole application from an [`AppState`] without any
//! I/O, so tests can serve it on `127.0.0.1:0`. Routes are registered through
//! utoipa-axum together with their OpenAPI descriptions, so the document at
//! `/api/v1/openapi.json` is generated from the same code that routes.

pub mod auth;
pub mod cache;
pub mod error;
pub mod json;

mod actions;
mod events;
mod executions;
mod health;
mod packs;
mod remote;
mod rules;
mod tokens;
mod triggers;
pub mod webhooks;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::packs::files::ComponentFiles;
use crate::runtime::{Pack, Runtime};
use crate::storage::{Page, Storage};
use error::ApiError;

/// Settings the API needs at request time.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest pack upload accepted, in bytes.
    pub max_upload_bytes: usize,
    /// How long a worker counts as alive after its last heartbeat.
    pub worker_ttl_ms: i64,
    /// How long a claim lasts without a heartbeat (remote workers).
    pub lease_ms: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 << 20,
            worker_ttl_ms: 30_000,
            lease_ms: 30_000,
        }
    }
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(String, u16), u64>>,
    /// Packs registered or upgraded.
    pub packs_registered: AtomicU64,
    /// Executions queued.
    pub executions_requested: AtomicU64,
    /// Events recorded.
    pub events_recorded: AtomicU64,
    /// Writes that recorded posted events (each holds one or more events).
    pub event_batches: AtomicU64,
}

impl Metrics {
    fn record(&self, route: String, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, status))
            .or_default() += 1;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP attune_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE attune_http_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<_> = requests.iter().collect();
        keys.sort();
        for ((route, status), n) in keys {
            out.push_str(&format!(
                "attune_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
            ));
        }
        for (name, help, v) in [
            (
                "attune_packs_registered_total",
                "Packs registered or upgraded.",
                &self.packs_registered,
            ),
            (
                "attune_executions_requested_total",
                "Executions queued.",
                &self.executions_requested,
            ),
            (
                "attune_events_recorded_total",
                "Events recorded.",
                &self.events_recorded,
            ),
            (
                "attune_event_batches_total",
                "Writes that recorded posted events, each holding one or more.",
                &self.event_batches,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Loaded components by digest, so executions and rule checks reuse them.
#[derive(Default)]
pub struct PackCache {
    packs: Mutex<HashMap<String, Pack>>,
}

impl PackCache {
    /// Remembers a loaded component.
    pub fn insert(&self, pack: Pack) {
        self.packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pack.digest().to_string(), pack);
    }

    /// The loaded component with this digest, loading it from disk or the
    /// database when needed.
    pub async fn get(
        &self,
        digest: &str,
        runtime: &Runtime,
        storage: &Storage,
        files: &ComponentFiles,
    ) -> Result<Pack, ApiError> {
        if let Some(p) = self
            .packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            return Ok(p.clone());
        }
        let bytes = match files.read(digest) {
            Ok(b) => b,
            Err(_) => {
                let b = storage
                    .component_bytes(digest)
                    .await?
                    .ok_or_else(|| ApiError::not_found("component", digest))?;
                let _ = files.store(digest, &b);
                b
            }
        };
        let pack = crate::packs::load_bounded(runtime, bytes)
            .await
            .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("reloading component {digest}: {e}"))
            })?;
        self.insert(pack.clone());
        Ok(pack)
    }
}

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub storage: Storage,
    /// The component runtime.
    pub runtime: Runtime,
    /// Component files on disk.
    pub files: Arc<ComponentFiles>,
    /// Loaded components.
    pub packs: Arc<PackCache>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Wake-ups and cancellation for the pipeline.
    pub dispatch: Arc<crate::scheduler::Dispatch>,
    /// Hot-path read caches.
    pub cache: Arc<cache::ReadCache>,
}

impl AppState {
    /// The loaded component with this digest (see [`PackCache::get`]).
    pub async fn pack(&self, digest: &str) -> Result<Pack, ApiError> {
        self.packs
            .get(digest, &self.runtime, &self.storage, &self.files)
            .await
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
    fn new(items: Vec<T>, page: &Page, cursor: impl Fn(&T) -> String) -> Self {
        let next = (items.len() as i64 == page.limit())
            .then(|| items.last().map(&cursor))
            .flatten();
        Listing { items, next }
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
        .merge(rules::routes())
        .merge(events::routes())
        .merge(executions::routes())
        .merge(workers::routes())
        .merge(tokens::routes())
        .merge(webhooks::routes())
        .merge(remote::routes())
        .split_for_parts();
    let mut doc = doc;
    // Routes are declared relative to /api/v1; publish them with the prefix.
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, item) in paths {
        doc.paths.paths.insert(format!("/api/v1{path}"), item);
    }
    let doc = Arc::new(doc);
    let metrics = state.metrics.clone();
    Router::new()
        .nest("/api/v1", api)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move |caller: auth::Caller| {
                let doc = doc.clone();
                async move {
                    caller.require(crate::storage::Role::Viewer)?;
                    Ok::<_, ApiError>(axum::Json(doc.as_ref().clone()))
                }
            }),
        )
        .merge(health::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let metrics = metrics.clone();
                count(metrics, req, next)
            },
        ))
        .with_state(state)
}

async fn count(metrics: Arc<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    metrics.record(route, response.status().as_u16());
    response
}
