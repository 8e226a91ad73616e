//! The worker protocol's types, shared by the worker API (`api::remote`)
//! and the standalone worker (`client::worker`), so the two cannot drift.
//!
//! A standalone worker registers, then long-polls `claim` for up to as many
//! assignments as it has room for (each already marked running for it),
//! runs them, and sends their [`Report`]s in batches to `results`. Its
//! heartbeats extend its leases and bring back the ids of executions
//! cancelled meanwhile.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::storage::{ExecutionRecord, ExecutionStatus, Finished};

/// Most reports one `results` request may carry.
pub const MAX_REPORTS: usize = 1024;

/// A worker introducing itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Unique name; registering again under it updates the worker.
    pub name: String,
    /// Runtimes and host interfaces it links, and free labels it matches.
    pub capabilities: Vec<String>,
    /// Free labels (`{"region": "eu"}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub labels: Value,
}

/// What a heartbeat answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Beat {
    /// Executions of this worker that were cancelled: stop them.
    pub cancel: Vec<i64>,
    /// How long a lease lasts without a heartbeat, in ms.
    pub lease_ms: i64,
}

/// One execution for a worker to run, marked running for it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    /// Execution id.
    pub id: i64,
    /// Action ref, `<pack>.<name>`.
    pub action: String,
    /// Validated parameters.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Timeout in ms; the worker's default when absent.
    pub timeout_ms: Option<i64>,
    /// SHA-256 of the component to run.
    pub component: String,
    /// The component export that is the action.
    pub export: String,
    /// Where it may send HTTP requests: its pack's grant.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
}

impl Assignment {
    /// The assignment of a claimed execution of an action exported as
    /// `export` by `component`.
    pub fn of(e: &ExecutionRecord, component: String, export: String) -> Self {
        Assignment {
            allowed_outbound_hosts: Vec::new(),
            id: e.id,
            action: e.action.clone(),
            params: e.params.clone(),
            attempt: e.attempt,
            timeout_ms: e.timeout_ms,
            component,
            export,
        }
    }
}

/// How one execution ended, as its worker reports it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Execution id.
    pub id: i64,
    /// succeeded, failed, timed_out or cancelled.
    #[schema(value_type = String)]
    pub status: ExecutionStatus,
    /// Result value.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
    /// Error value or message.
    #[schema(value_type = Object)]
    pub error: Option<Value>,
    /// Captured stdout.
    #[serde(default)]
    pub stdout: String,
    /// Captured stderr.
    #[serde(default)]
    pub stderr: String,
    /// Log lines.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub logs: Value,
    /// When the action began (Unix ms), if later than its claim.
    #[serde(default)]
    pub started_at: Option<i64>,
}

impl Report {
    /// An end with no output: `status` with `message` as its error.
    pub fn without_output(id: i64, status: ExecutionStatus, message: impl Into<String>) -> Self {
        Report {
            id,
            status,
            result: None,
            error: Some(Value::String(message.into())),
            stdout: String::new(),
            stderr: String::new(),
            logs: Value::Array(vec![]),
            started_at: None,
        }
    }

    /// The row storage records for it.
    pub fn into_finished(self) -> Finished {
        Finished {
            status: self.status,
            result: self.result,
            error: self.error,
            stdout: self.stdout,
            stderr: self.stderr,
            logs: if self.logs.is_null() {
                Value::Array(vec![])
            } else {
                self.logs
            },
            started_at: self.started_at,
        }
    }

    /// Serialized size, roughly: what a batch of reports costs to send.
    pub fn weight(&self) -> usize {
        self.stdout.len()
            + self.stderr.len()
            + self.result.as_ref().map_or(0, |v| v.to_string().len())
            + self.error.as_ref().map_or(0, |v| v.to_string().len())
            + self.logs.to_string().len()
            + 256
    }
}

/// What `results` answers: per report, whether it was recorded (false: the
/// execution was no longer this worker's, e.g. its lease expired).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Recorded {
    /// One flag per report, in order.
    pub recorded: Vec<bool>,
}
