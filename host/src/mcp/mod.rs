//! Every action an MCP tool, over the Model Context Protocol (`rmcp`).
//!
//! One handler serves both transports: streamable HTTP at `/mcp` on
//! `attune serve` ([`engine_backend`], calling the engine with the caller's role) and
//! stdio from `attune mcp` ([`api_backend`], calling a server's API with a
//! token). A tool is an enabled action (workflows too): its name is the
//! action's ref, its description the WIT docs, its input schema the
//! action's parameter schema and its output schema the result's when that is
//! an object. A call is an ordinary execution, waited for up to a limit;
//! `attune.execution` reads one (for runs longer than the limit), and
//! `attune.respond` ([`respond`]) answers a workflow's `ask`, offered only
//! while the caller has one open to answer.
//! Arguments that do not fit the schema answer a tool result with
//! `isError: true` listing every problem with its path, so a model can
//! correct its call; an unknown tool or a refused role is a protocol error.

pub mod api_backend;
pub mod engine_backend;
mod respond;

use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_runtime::PathError;
use rmcp::ErrorData;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerInfo, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};

/// The tool that reads an execution by id.
pub const EXECUTION_TOOL: &str = "attune.execution";
pub use respond::RESPOND_TOOL;

/// Tools one `tools/list` page holds.
const PAGE: usize = 100;

/// How often a waiting call reports progress (seconds elapsed) to a client
/// that asked for it.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Why a backend refused: an API-style error code, message and details.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `invalid`, `forbidden`, `not_found`, …
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// Each problem with its path.
    pub details: Vec<PathError>,
}

impl Refusal {
    fn into_error(self) -> ErrorData {
        let data = json!({
            "code": self.code,
            "details": self.details,
        });
        match self.code.as_str() {
            "validation_failed" | "not_found" => {
                ErrorData::invalid_params(self.message, Some(data))
            }
            "forbidden" | "unauthorized" => ErrorData::invalid_request(self.message, Some(data)),
            _ => ErrorData::internal_error(self.message, Some(data)),
        }
    }

    /// Whether the tool's arguments were refused: the model can correct
    /// them, so the answer is a tool result, not a protocol error.
    fn is_input_error(&self) -> bool {
        self.code == "validation_failed"
    }

    /// Arguments refused as a tool execution error (`isError: true`), as
    /// the 2025-11-25 specification asks for input validation errors: the
    /// message and every problem with its JSON path, relative to the
    /// arguments (the API's `/params` prefix is the run request's, not the
    /// tool's).
    fn into_tool_error(self, tool: &str) -> CallToolResult {
        let details: Vec<PathError> = self
            .details
            .into_iter()
            .map(|PathError { path, message }| {
                let path = match path.strip_prefix("/params") {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_string(),
                    _ => path,
                };
                PathError { path, message }
            })
            .collect();
        let mut text = format!("invalid arguments for {tool}: {}", self.message);
        for PathError { path, message } in &details {
            let at = if path.is_empty() {
                "(the arguments)"
            } else {
                path
            };
            text.push_str(&format!("\n{at}: {message}"));
        }
        let mut r = CallToolResult::structured_error(json!({
            "error": self.code,
            "message": self.message,
            "details": details,
        }));
        r.content = vec![ContentBlock::text(text)];
        r
    }
}

/// Where the tools come from: the engine of this process, or a server's API.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Enabled actions (as the API shows them) after `after`, in ref order,
    /// and the cursor of the next page.
    async fn actions(&self, after: Option<&str>) -> Result<(Vec<Value>, Option<String>), Refusal>;
    /// Queues a run of `action`; the execution as the API shows it.
    async fn run(
        &self,
        ctx: &RequestContext<RoleServer>,
        action: &str,
        params: Value,
    ) -> Result<Value, Refusal>;
    /// One execution as the API shows it.
    async fn execution(&self, ctx: &RequestContext<RoleServer>, id: i64) -> Result<Value, Refusal>;
    /// Asks for an execution to be cancelled.
    async fn cancel(&self, ctx: &RequestContext<RoleServer>, id: i64) -> Result<(), Refusal>;
    /// The open asks the caller may answer, oldest first, as the API shows
    /// inquiries (`id`, `execution`, `task`, `prompt`, `schema`, …).
    async fn inquiries(&self, ctx: &RequestContext<RoleServer>) -> Result<Vec<Value>, Refusal>;
    /// Answers ask `id` with `answer` as the caller (whom its approvers
    /// must admit); the inquiry as the API shows it.
    async fn respond(
        &self,
        ctx: &RequestContext<RoleServer>,
        id: i64,
        answer: Value,
    ) -> Result<Value, Refusal>;
    /// Whether the caller may see the tools (the HTTP transport checks the
    /// token's role; over stdio the server does).
    fn may_list(&self, ctx: &RequestContext<RoleServer>) -> Result<(), Refusal>;
}

/// Settings of one MCP endpoint.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a call waits for its execution before answering with its id.
    pub wait: Duration,
    /// Only actions matching one of these patterns (`ops.*`, `core.echo`);
    /// empty: every action. `attune.respond` is offered only when empty or
    /// matched too, so limiting an agent's tools limits what it approves.
    pub tools: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(60),
            tools: Vec::new(),
        }
    }
}

impl Options {
    fn allows(&self, action: &str) -> bool {
        self.tools.is_empty()
            || self.tools.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => action.starts_with(prefix),
                None => p == action,
            })
    }
}

/// The clients of an endpoint, told when the tool list changes.
pub type Peers = std::sync::Mutex<Vec<rmcp::service::Peer<RoleServer>>>;

/// The MCP server: tools from a [`Backend`].
pub struct Attune<B> {
    backend: Arc<B>,
    options: Arc<Options>,
    peers: Option<Arc<Peers>>,
}

impl<B> Clone for Attune<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            options: self.options.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl<B: Backend> Attune<B> {
    /// A server over `backend`.
    pub fn new(backend: Arc<B>, options: Arc<Options>) -> Self {
        Self {
            backend,
            options,
            peers: None,
        }
    }

    /// A server whose clients are remembered in `peers`, to be told
    /// `notifications/tools/list_changed`.
    pub fn announcing(backend: Arc<B>, options: Arc<Options>, peers: Arc<Peers>) -> Self {
        Self {
            backend,
            options,
            peers: Some(peers),
        }
    }
}

/// An action as a tool.
fn tool_of(action: &Value) -> Option<Tool> {
    let name = action["ref"].as_str()?.to_string();
    let schema = action["params_schema"].as_object()?.clone();
    let description = action["description"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("Runs the Attune action {name}."));
    let mut tool = Tool::new(name, description, Arc::new(schema));
    if action["result_schema"]["type"] == "object"
        && let Some(out) = action["result_schema"].as_object()
    {
        tool.output_schema = Some(Arc::new(out.clone()));
    }
    Some(tool)
}

fn execution_tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {"id": {"type": "integer", "description": "The execution's id."}},
        "required": ["id"],
        "additionalProperties": false
    });
    Tool::new(
        EXECUTION_TOOL,
        "Reads an execution: status, result, error, stdout, stderr. For a call that answered with an execution id before it ended.",
        Arc::new(schema.as_object().cloned().unwrap_or_default()),
    )
}

/// The fields an agent reads of an execution.
fn summary(e: &Value) -> Value {
    json!({
        "execution": e["id"], "action": e["action"], "status": e["status"],
        "result": e["result"], "error": e["error"],
        "stdout": e["stdout"], "stderr": e["stderr"],
    })
}

fn is_finished(e: &Value) -> bool {
    matches!(
        e["status"].as_str(),
        Some("succeeded" | "failed" | "timed_out" | "cancelled" | "abandoned")
    )
}

/// The tool result of an ended execution.
fn ended(e: &Value) -> CallToolResult {
    if e["status"] == "succeeded" {
        let value = match &e["result"] {
            Value::Object(_) => e["result"].clone(),
            other => json!({"result": other}),
        };
        return CallToolResult::structured(value);
    }
    let mut r = CallToolResult::structured_error(summary(e));
    r.content = vec![ContentBlock::text(format!(
        "execution {} {}: {}",
        e["id"],
        e["status"].as_str().unwrap_or_default(),
        match &e["error"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    ))];
    r
}

impl<B: Backend> Attune<B> {
    async fn call(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        // A client that sent a progress token hears about a long run.
        let progress = request
            .meta
            .as_ref()
            .and_then(|m| m.get_progress_token())
            .or_else(|| ctx.meta.get_progress_token());
        let args = Value::Object(request.arguments.unwrap_or_default());
        if request.name == EXECUTION_TOOL {
            let Some(id) = args["id"].as_i64() else {
                let refused = Refusal {
                    code: "validation_failed".into(),
                    message: "`id` must be an execution id".into(),
                    details: vec![PathError::new("/id", "must be an integer")],
                };
                return Ok(refused.into_tool_error(EXECUTION_TOOL));
            };
            let e = self
                .backend
                .execution(&ctx, id)
                .await
                .map_err(Refusal::into_error)?;
            return Ok(CallToolResult::structured(summary(&e)));
        }
        if request.name == RESPOND_TOOL && self.options.allows(RESPOND_TOOL) {
            let (id, answer) = match respond::arguments(&args) {
                Ok(parsed) => parsed,
                Err(refused) => return Ok(respond::refused(refused, false)),
            };
            return match self.backend.respond(&ctx, id, answer).await {
                Ok(view) => Ok(respond::answered(&view)),
                Err(r) if respond::is_refused_answer(&r) => Ok(respond::refused(r, true)),
                Err(r) => Err(r.into_error()),
            };
        }
        if !self.options.allows(&request.name) {
            return Err(ErrorData::invalid_params(
                format!("no tool `{}`", request.name),
                None,
            ));
        }
        let started = match self.backend.run(&ctx, &request.name, args).await {
            Ok(started) => started,
            Err(refused) if refused.is_input_error() => {
                return Ok(refused.into_tool_error(&request.name));
            }
            Err(refused) => return Err(refused.into_error()),
        };
        let id = started["id"].as_i64().unwrap_or_default();
        let began = Instant::now();
        let deadline = began + self.options.wait;
        let mut pause = Duration::from_millis(1);
        let mut told = began;
        loop {
            let e = self
                .backend
                .execution(&ctx, id)
                .await
                .map_err(Refusal::into_error)?;
            if is_finished(&e) {
                return Ok(ended(&e));
            }
            if let Some(token) = &progress
                && told.elapsed() >= PROGRESS_EVERY
            {
                told = Instant::now();
                let mut note = rmcp::model::ProgressNotificationParam::new(
                    token.clone(),
                    began.elapsed().as_secs_f64(),
                );
                note.message = Some(format!(
                    "execution {id} is {}",
                    e["status"].as_str().unwrap_or_default()
                ));
                let _ = ctx.peer.notify_progress(note).await;
            }
            if Instant::now() >= deadline {
                let mut r = CallToolResult::structured(json!({
                    "execution": id, "status": e["status"],
                    "note": format!("still running; read it later with {EXECUTION_TOOL}"),
                }));
                r.is_error = Some(false);
                return Ok(r);
            }
            tokio::select! {
                () = ctx.ct.cancelled() => {
                    let _ = self.backend.cancel(&ctx, id).await;
                    return Err(ErrorData::invalid_request(format!("cancelled; execution {id} was cancelled"), None));
                }
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    async fn list(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.backend.may_list(ctx).map_err(Refusal::into_error)?;
        let cursor = request.and_then(|r| r.cursor);
        let mut tools = Vec::new();
        if cursor.is_none() {
            tools.push(execution_tool());
            if self.options.allows(RESPOND_TOOL) {
                // Listing the asks must not cost the caller its other tools.
                let open = self.backend.inquiries(ctx).await.unwrap_or_else(|r| {
                    tracing::warn!(error = %r.message, "listing open inquiries for MCP");
                    Vec::new()
                });
                tools.extend(respond::tool(&open));
            }
        }
        let mut after = cursor;
        let mut next = None;
        while tools.len() < PAGE {
            let (actions, more) = self
                .backend
                .actions(after.as_deref())
                .await
                .map_err(Refusal::into_error)?;
            let last = actions
                .last()
                .and_then(|a| a["ref"].as_str())
                .map(str::to_string);
            for a in &actions {
                if let Some(t) = tool_of(a).filter(|t| self.options.allows(&t.name)) {
                    tools.push(t);
                }
            }
            match more {
                Some(m) if tools.len() >= PAGE => {
                    next = last.or(Some(m));
                    break;
                }
                Some(m) => after = Some(m),
                None => break,
            }
        }
        Ok(ListToolsResult {
            tools,
            next_cursor: next,
            ..Default::default()
        })
    }
}

impl<B: Backend> ServerHandler for Attune<B> {
    fn get_info(&self) -> ServerInfo {
        let capabilities = match self.peers {
            Some(_) => ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
            None => ServerCapabilities::builder().enable_tools().build(),
        };
        let mut info = ServerInfo::new(capabilities);
        info.server_info = Implementation::new("attune", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Each tool runs an Attune action in its sandbox and returns its result; every call is recorded as an execution. `attune.respond`, offered while a workflow asks you something, answers it.".into(),
        );
        info
    }

    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        if let Some(peers) = &self.peers {
            let mut peers = peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.retain(|p| !p.is_transport_closed());
            peers.push(context.peer);
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.list(request, &context).await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(request, context).await.map(Into::into)
    }
}
