//! `/mcp` on `attune serve`: streamable HTTP over the engine of this
//! process. A bearer token is required (401 otherwise, in the API's error
//! shape); a `viewer` lists tools, calling needs `operator`. `Host` is
//! checked against loopback names and `--mcp-host` (DNS rebinding), and an
//! `Origin`, when a browser sends one, against the same hosts.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;

use super::{Attune, Backend, Options, Refusal};
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::views::{ActionView, ExecutionView, Keyed};
use crate::engine::{Core, EngineError, executions};
use crate::storage::Role;

/// The engine as the tools' backend; the caller comes with each request.
pub struct Local {
    core: Core,
}

fn refusal(e: impl Into<ApiError>) -> Refusal {
    let e: ApiError = e.into();
    let body = e.body();
    Refusal {
        code: body.error.code.to_string(),
        message: body.error.message.clone(),
        details: body
            .error
            .details
            .iter()
            .map(|d| (d.path.clone(), d.message.clone()))
            .collect(),
    }
}

/// The caller of this MCP request, put there by [`authenticate`].
fn caller(ctx: &RequestContext<RoleServer>) -> Option<Caller> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .cloned()
}

fn require(ctx: &RequestContext<RoleServer>, role: Role) -> Result<(), Refusal> {
    match caller(ctx) {
        Some(c) => c.require(role).map_err(refusal),
        None => Err(refusal(ApiError::Unauthorized)),
    }
}

#[async_trait]
impl Backend for Local {
    async fn actions(&self, after: Option<&str>) -> Result<(Vec<Value>, Option<String>), Refusal> {
        let page = crate::api::views::page(Some(100), after.map(str::to_string), Keyed::Ref)
            .map_err(refusal)?;
        let actions = self
            .core
            .storage
            .list_actions(None, &page)
            .await
            .map_err(|e| refusal(EngineError::from(e)))?;
        let next = (actions.len() as i64 >= page.limit())
            .then(|| actions.last().map(|a| a.r#ref.clone()))
            .flatten();
        let views = actions
            .into_iter()
            .map(|a| serde_json::to_value(ActionView::from(a)).unwrap_or_default())
            .collect();
        Ok((views, next))
    }

    async fn run(
        &self,
        ctx: &RequestContext<RoleServer>,
        action: &str,
        params: Value,
    ) -> Result<Value, Refusal> {
        require(ctx, Role::Operator)?;
        let run = executions::RunRequest {
            action: action.to_string(),
            params,
            timeout: None,
            max_attempts: None,
            source: Some("mcp".into()),
        };
        let e = executions::request(&self.core, run)
            .await
            .map_err(refusal)?;
        Ok(serde_json::to_value(ExecutionView::from(e)).unwrap_or_default())
    }

    async fn execution(&self, ctx: &RequestContext<RoleServer>, id: i64) -> Result<Value, Refusal> {
        require(ctx, Role::Viewer)?;
        let e = self
            .core
            .storage
            .get_execution(id)
            .await
            .map_err(|e| refusal(EngineError::from(e)))?
            .ok_or_else(|| refusal(EngineError::not_found("execution", id)))?;
        Ok(serde_json::to_value(ExecutionView::from(e)).unwrap_or_default())
    }

    async fn cancel(&self, ctx: &RequestContext<RoleServer>, id: i64) -> Result<(), Refusal> {
        require(ctx, Role::Operator)?;
        executions::cancel(&self.core, id).await.map_err(refusal)?;
        Ok(())
    }

    fn may_list(&self, ctx: &RequestContext<RoleServer>) -> Result<(), Refusal> {
        require(ctx, Role::Viewer)
    }
}

/// The `/mcp` service: the streamable-HTTP transport over [`Local`], and a
/// function that ends its sessions (their open streams) for a clean stop.
pub fn service(
    core: Core,
    options: Options,
    hosts: &[String],
) -> (
    StreamableHttpService<Attune<Local>, LocalSessionManager>,
    impl FnOnce() + Send + 'static,
) {
    let peers: Arc<super::Peers> = Arc::default();
    core.dispatch.spawn(announce(core.clone(), peers.clone()));
    let server = Attune::announcing(Arc::new(Local { core }), Arc::new(options), peers);
    let mut allowed: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    allowed.extend(hosts.iter().cloned());
    let origins: Vec<String> = allowed
        .iter()
        .flat_map(|h| [format!("http://{h}"), format!("https://{h}")])
        .collect();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed)
        .with_allowed_origins(origins);
    let sessions = config.cancellation_token.clone();
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    (service, move || sessions.cancel())
}

/// Tells every client of the endpoint when packs (and so tools) change.
async fn announce(core: Core, peers: Arc<super::Peers>) {
    loop {
        core.dispatch.packs_changed.notified().await;
        let clients: Vec<_> = peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for peer in clients {
            if peer.notify_tool_list_changed().await.is_err() {
                let mut peers = peers.lock().unwrap_or_else(|e| e.into_inner());
                peers.retain(|p| !p.is_transport_closed());
            }
        }
    }
}

/// Requires a valid token on every `/mcp` request and hands the caller to
/// the handler.
pub async fn authenticate(
    caller: Caller,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
