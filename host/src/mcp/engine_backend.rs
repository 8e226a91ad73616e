//! `/mcp` on `attune serve`: streamable HTTP over the engine of this
//! process. A bearer token is required (401 otherwise, in the API's error
//! shape); a `viewer` lists tools, calling needs `operator`. `Host` is
//! checked against loopback names and `--mcp-host` (DNS rebinding), and an
//! `Origin`, when a browser sends one, must be this server's own origin —
//! scheme, host *and port* of the request — or a `--mcp-host` (whose port,
//! when it names none, is the scheme's default): a page on another port of
//! the same host is another origin. A session ends (`DELETE`) with 204.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use super::{Attune, Backend, Options, Refusal};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::api::views::{ActionView, ExecutionView, Keyed};
use attune_engine::inquiries;
use attune_engine::records::{InquiryRecord, Role};
use attune_engine::{Core, EngineError, executions};
use attune_engine::{catalog, history};

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
            .map(|d| attune_runtime::PathError::new(d.path.clone(), d.message.clone()))
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

/// An inquiry with the fields of the API's view that an agent reads.
fn inquiry_view(i: &InquiryRecord) -> Value {
    let spec = inquiries::spec(i);
    json!({
        "id": i.id, "execution": i.workflow, "task": i.task, "kind": i.kind,
        "prompt": spec.prompt, "schema": spec.schema, "state": i.state,
        "deadline": i.deadline, "answered_by": i.answered_by,
        "answered_at": i.answered_at, "created_at": i.created_at,
    })
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
        let actions = catalog::actions(&self.core, None, &page)
            .await
            .map_err(refusal)?;
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
            depth: 0,
            requested_by: caller(ctx).map(|c| c.token.id),
        };
        let span = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<attune_engine::telemetry::TraceContext>())
            .cloned();
        let queued = executions::request(&self.core, run);
        let e = match span {
            Some(span) => attune_engine::telemetry::REQUEST.scope(span, queued).await,
            None => queued.await,
        }
        .map_err(refusal)?;
        Ok(serde_json::to_value(ExecutionView::from(e)).unwrap_or_default())
    }

    async fn execution(&self, ctx: &RequestContext<RoleServer>, id: i64) -> Result<Value, Refusal> {
        require(ctx, Role::Viewer)?;
        let e = history::execution(&self.core, id)
            .await
            .map_err(refusal)?
            .ok_or_else(|| refusal(EngineError::not_found("execution", id)))?;
        Ok(serde_json::to_value(ExecutionView::from(e)).unwrap_or_default())
    }

    async fn cancel(&self, ctx: &RequestContext<RoleServer>, id: i64) -> Result<(), Refusal> {
        require(ctx, Role::Operator)?;
        executions::cancel(&self.core, id).await.map_err(refusal)?;
        Ok(())
    }

    async fn inquiries(&self, ctx: &RequestContext<RoleServer>) -> Result<Vec<Value>, Refusal> {
        require(ctx, Role::Viewer)?;
        let Some(c) = caller(ctx) else {
            return Ok(Vec::new());
        };
        let open = inquiries::list(&self.core, c.answerer())
            .await
            .map_err(refusal)?;
        Ok(open.iter().map(inquiry_view).collect())
    }

    async fn respond(
        &self,
        ctx: &RequestContext<RoleServer>,
        id: i64,
        answer: Value,
    ) -> Result<Value, Refusal> {
        // As `POST /inquiries/{id}/respond`: any reader may try; the ask's
        // approvers decide (a worker token is no reader).
        require(ctx, Role::Viewer)?;
        let c = caller(ctx).ok_or_else(|| refusal(ApiError::Unauthorized))?;
        let by = c.answerer();
        let i = inquiries::respond(&self.core, id, answer, by)
            .await
            .map_err(refusal)?;
        Ok(inquiry_view(&i))
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
    // rmcp's Origin check takes an entry without a port for any port, so
    // `Origin` is checked in [`authenticate`] instead, ports included.
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed)
        .disable_allowed_origins();
    let sessions = config.cancellation_token.clone();
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        config,
    );
    (service, move || sessions.cancel())
}

/// How often the endpoint looks at the open asks while it has clients: a
/// change offers or withdraws `attune.respond` (or changes what its
/// description lists). Asks open in workflows on any node, so it polls.
const ASKS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The ids of the open asks; `None` when they cannot be read.
async fn open_asks(core: &Core) -> Option<Vec<i64>> {
    inquiries::open_asks(core).await.ok()
}

/// Tells every client of the endpoint when packs (and so tools) change,
/// and when the open asks do.
async fn announce(core: Core, peers: Arc<super::Peers>) {
    let mut asks = None;
    let mut tick = tokio::time::interval(ASKS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = core.dispatch.packs_changed.notified() => {}
            _ = tick.tick() => {
                // Nobody to tell: read nothing, and forget what was open.
                if peers.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                    asks = None;
                    continue;
                }
                let Some(now) = open_asks(&core).await else { continue };
                // Not knowing what a client saw, any open ask is news (a
                // needless notice costs it one `tools/list`).
                let changed = match &asks {
                    Some(known) => *known != now,
                    None => !now.is_empty(),
                };
                asks = Some(now);
                if !changed {
                    continue;
                }
            }
        }
        let clients: Vec<_> = peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for peer in clients {
            if peer.notify_tool_list_changed().await.is_err() {
                let mut peers = peers.lock().unwrap_or_else(|e| e.into_inner());
                peers.retain(|p| !p.is_transport_closed());
            }
        }
    }
}

/// Refuses a browser's cross-origin request, requires a valid token on
/// every `/mcp` request and hands the caller to the handler; answers the
/// end of a session as the official SDKs expect.
pub async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    // Before the token: a page elsewhere learns nothing from a 401 either.
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        // `secure_cookies` is set exactly when the server speaks TLS.
        let scheme = if state.config.secure_cookies {
            "https"
        } else {
            "http"
        };
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| origin_allowed(origin, scheme, host, &state.config.mcp_hosts));
        if !allowed {
            return Err(ApiError::Denied(
                "this Origin may not use /mcp: only pages of this server (same scheme, host and port) or of a --mcp-host".into(),
            ));
        }
    }
    let caller = Caller::from_request_parts(&mut parts, &state).await?;
    parts.extensions.insert(caller);
    // The request's span, for what its tool calls cause: they run in the
    // session's task, where the request's task-local is not.
    if let Some(span) = attune_engine::telemetry::current() {
        parts.extensions.insert(span);
    }
    let ends_session = parts.method == Method::DELETE;
    let response = next.run(Request::from_parts(parts, body)).await;
    // rmcp answers a session's end with 202 Accepted; the official SDKs
    // take anything but 200 or 204 for a failed termination.
    if ends_session && response.status() == StatusCode::ACCEPTED {
        let (mut head, _) = response.into_parts();
        head.status = StatusCode::NO_CONTENT;
        head.headers.remove(header::CONTENT_LENGTH);
        head.headers.remove(header::CONTENT_TYPE);
        return Ok(Response::from_parts(head, axum::body::Body::empty()));
    }
    Ok(response)
}

/// `(scheme, host, port)` of an origin or authority: the host lowercase
/// without brackets or a trailing dot, the port explicit (the scheme's
/// default when absent), so `http://h` and `http://h:80` compare equal.
fn tuple(scheme: &str, authority: &str) -> Option<(String, String, u16)> {
    let authority: axum::http::uri::Authority = authority.parse().ok()?;
    let scheme = scheme.to_ascii_lowercase();
    let port = match (authority.port_u16(), scheme.as_str()) {
        (Some(port), _) => port,
        (None, "http") => 80,
        (None, "https") => 443,
        (None, _) => return None,
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    Some((scheme, host, port))
}

/// Whether a page at `origin` may call `/mcp` on a server speaking `scheme`
/// and reached as `host` (the `Host` header): the page is this server's
/// own origin, or a `--mcp-host` entry names its host (and port, the
/// scheme's default when the entry has none). An opaque origin (`null`,
/// sandboxed frames) or one that does not parse is refused.
fn origin_allowed(origin: &str, scheme: &str, host: Option<&str>, mcp_hosts: &[String]) -> bool {
    let Some((o_scheme, authority)) = origin.trim().split_once("://") else {
        return false;
    };
    if authority.contains(['/', '@']) {
        return false;
    }
    let Some(page) = tuple(o_scheme, authority) else {
        return false;
    };
    let own = host.and_then(|h| tuple(scheme, h));
    own.as_ref() == Some(&page)
        || mcp_hosts
            .iter()
            .any(|entry| tuple(&page.0, entry).is_some_and(|(_, h, p)| h == page.1 && p == page.2))
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn an_origin_must_match_the_requests_scheme_host_and_port() {
        let host = Some("localhost:8080");
        assert!(origin_allowed("http://localhost:8080", "http", host, &[]));
        assert!(origin_allowed("HTTP://LocalHost:8080", "http", host, &[]));
        for origin in [
            "http://localhost:9999",
            "http://localhost",
            "https://localhost:8080",
            "http://127.0.0.1:8080",
            "http://attacker.example:8080",
            "null",
            "localhost:8080",
            "http://user@localhost:8080",
            "",
        ] {
            assert!(!origin_allowed(origin, "http", host, &[]), "{origin}");
        }
        assert!(!origin_allowed("http://localhost:8080", "http", None, &[]));
        // Default ports are the same origin written either way.
        assert!(origin_allowed(
            "http://localhost",
            "http",
            Some("localhost:80"),
            &[]
        ));
        assert!(origin_allowed("https://[::1]", "https", Some("[::1]"), &[]));
        assert!(!origin_allowed(
            "http://[::1]:81",
            "http",
            Some("[::1]"),
            &[]
        ));
    }

    #[test]
    fn an_mcp_host_allows_its_origin_at_its_port_or_the_default_one() {
        let hosts = ["attune.example".to_string(), "ops.example:8443".to_string()];
        // Behind a proxy the request's own Host may be anything.
        let host = Some("127.0.0.1:8080");
        assert!(origin_allowed(
            "https://attune.example",
            "http",
            host,
            &hosts
        ));
        assert!(origin_allowed(
            "http://attune.example",
            "http",
            host,
            &hosts
        ));
        assert!(origin_allowed(
            "https://ops.example:8443",
            "http",
            host,
            &hosts
        ));
        for origin in [
            "https://attune.example:9999",
            "https://ops.example",
            "https://evil.attune.example",
        ] {
            assert!(!origin_allowed(origin, "http", host, &hosts), "{origin}");
        }
    }
}
