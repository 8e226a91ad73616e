//! The wire types of what happened: events, executions, their attempts
//! and what each used.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use attune_engine::records::{AttemptRecord, EventRecord, ExecutionRecord, ExecutionStatus};

/// What an execution used, with its host calls timed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourcesView {
    #[serde(flatten)]
    pub used: attune_runtime::Resources,
    /// Its host calls in start order (at most 256): kind, name, start and
    /// duration from the run's start, and why one failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallView>,
}

/// One host call of an execution, timed from its run's start.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallView {
    /// `http`, `kv` or `secret`.
    pub kind: String,
    /// `GET example.com`, `kv get`, `secret api_token`.
    pub name: String,
    /// Microseconds from the run's start.
    pub start_us: u64,
    /// Microseconds it took.
    pub duration_us: u64,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something that happened.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Id, increasing.
    pub id: i64,
    /// Trigger type ref.
    pub trigger: String,
    /// Payload.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Who produced it (rule ref for timers, hook name for webhooks, token
    /// name for manual events).
    pub source: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Set (true) when the event is stored but its rules' enforcements could
    /// not be yet: the server enforces it later, nothing is lost.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enforcement_pending: bool,
    /// How deep in a chain of causes it is: 0 for what came from outside;
    /// an execution's `core.execution_finished` event is one deeper than
    /// the event behind the execution.
    pub depth: i64,
    /// Why no rule saw it (its chain went past `--max-chain-depth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_reason: Option<String>,
}

impl From<EventRecord> for EventView {
    fn from(r: EventRecord) -> Self {
        EventView {
            id: r.id,
            depth: r.depth,
            held_reason: r.held_reason,
            trigger: r.trigger,
            payload: r.payload,
            source: r.source,
            created_at: r.created_at,
            enforcement_pending: false,
        }
    }
}

/// One run of one action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionView {
    /// Id, increasing.
    pub id: i64,
    /// Action ref.
    pub action: String,
    /// Parameters (omitted in list summaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// requested, scheduled, running, succeeded, failed, timed_out,
    /// cancelled or abandoned.
    #[schema(value_type = String)]
    pub status: ExecutionStatus,
    /// Why it is in this status, when that needs saying.
    pub status_reason: Option<String>,
    /// Capabilities a worker needs.
    pub capabilities: Vec<String>,
    /// Rule that caused it.
    pub rule: Option<String>,
    /// Enforcement that caused it.
    pub enforcement: Option<i64>,
    /// Current attempt, from 1.
    pub attempt: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// Timeout in ms.
    pub timeout_ms: Option<i64>,
    /// Worker holding it.
    pub worker: Option<i64>,
    /// Result value (omitted in list summaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Error value or message.
    pub error: Option<Value>,
    /// Captured stdout (omitted in list summaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Captured stderr (omitted in list summaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Log lines (omitted in list summaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Value>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub scheduled_at: Option<i64>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: Option<i64>,
    /// A cancel was asked for while it ran.
    pub cancel_requested: bool,
    /// Time from creation to running, in ms (once started).
    pub queued_ms: Option<i64>,
    /// Time from running to finished, in ms (once finished).
    pub running_ms: Option<i64>,
    /// The workflow execution this one runs a task of.
    pub parent: Option<i64>,
    /// That task: `name`, or `name[item]` for an item of `with_items`.
    pub task: Option<String>,
    /// Who asked for a direct run (`mcp`: an agent's tool call).
    pub source: Option<String>,
    /// The sensor whose poll it is.
    pub sensor: Option<String>,
    /// What it used, as its worker measured it (once it ran in a sandbox).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesView>,
    /// A workflow's progress (detail route only): each task reached with its
    /// status, runs and children, the published `vars`, and the unhandled
    /// error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub workflow: Option<Value>,
}

impl ExecutionView {
    /// The view without its large fields (params, result, output, logs),
    /// as lists send it unless asked for everything.
    pub fn summary(self) -> Self {
        ExecutionView {
            params: None,
            result: None,
            stdout: None,
            stderr: None,
            logs: None,
            ..self
        }
    }
}

impl From<ExecutionRecord> for ExecutionView {
    fn from(r: ExecutionRecord) -> Self {
        ExecutionView {
            id: r.id,
            action: r.action,
            params: Some(r.params),
            status: r.status,
            status_reason: r.status_reason,
            capabilities: r.capabilities,
            rule: r.rule,
            enforcement: r.enforcement,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            timeout_ms: r.timeout_ms,
            worker: r.worker,
            result: r.result,
            error: r.error,
            stdout: r.stdout,
            stderr: r.stderr,
            logs: r.logs,
            created_at: r.created_at,
            scheduled_at: r.scheduled_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            cancel_requested: r.cancel_requested,
            queued_ms: r.queued_ms,
            running_ms: r.running_ms,
            parent: r.parent,
            task: r.task,
            source: r.source,
            sensor: r.sensor,
            resources: r.resources.and_then(|v| serde_json::from_value(v).ok()),
            workflow: None,
        }
    }
}

/// One ended attempt of an execution.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Worker that ran it.
    pub worker: Option<i64>,
    /// How it ended.
    #[schema(value_type = String)]
    pub status: ExecutionStatus,
    /// Error value or message.
    pub error: Option<Value>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: i64,
}

impl From<AttemptRecord> for AttemptView {
    fn from(r: AttemptRecord) -> Self {
        AttemptView {
            attempt: r.attempt,
            worker: r.worker,
            status: r.status,
            error: r.error,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}
