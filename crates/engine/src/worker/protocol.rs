//! The worker protocol's types, shared by the worker API (`api::worker_protocol`)
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

use attune_storage::{ExecutionRecord, ExecutionStatus, Finished};

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
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
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
    /// The secrets it may read and must redact.
    #[serde(default)]
    pub secrets: RunSecrets,
    /// Its depth in its chain of causes (what it causes through outbound
    /// HTTP is one deeper).
    #[serde(default)]
    pub depth: i64,
    /// Record the run's journal, keeping at most this many bytes of calls;
    /// none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_cap: Option<u64>,
    /// Its pack's quotas.
    #[serde(default, skip_serializing_if = "attune_runtime::Quotas::is_none")]
    pub quotas: attune_runtime::Quotas,
    /// The W3C `traceparent` of its execution's parent span, when traced:
    /// the worker's spans continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Whether its outbound requests carry its `traceparent`.
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub propagate_trace: bool,
}

fn yes() -> bool {
    true
}

/// The secrets of one run: the names its pack is granted, and the values
/// resolved for it — the granted ones that are set, and those its rule's
/// templates put into its params. The worker redacts every value from the
/// run's output, logs, result and error; values are never stored or logged.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RunSecrets {
    /// Names `attune:action/secrets.get` may read.
    #[serde(default)]
    pub granted: Vec<String>,
    /// Values by name.
    #[serde(default)]
    pub values: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for RunSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSecrets")
            .field("granted", &self.granted)
            .field("values", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RunSecrets {
    /// The runtime's view of them.
    pub fn to_set(&self) -> attune_runtime::secrets::SecretSet {
        attune_runtime::secrets::SecretSet::new(
            self.granted.iter().cloned(),
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), zeroize::Zeroizing::new(v.clone()))),
        )
    }
}

impl Assignment {
    /// The assignment of a claimed execution of an action exported as
    /// `export` by `component`.
    pub fn of(e: &ExecutionRecord, component: String, export: String) -> Self {
        Assignment {
            allowed_outbound_hosts: Vec::new(),
            secrets: RunSecrets::default(),
            id: e.id,
            action: e.action.clone(),
            params: e.params.clone(),
            attempt: e.attempt,
            timeout_ms: e.timeout_ms,
            component,
            export,
            depth: e.depth,
            journal_cap: None,
            quotas: attune_runtime::Quotas::default(),
            trace: e.trace.clone(),
            propagate_trace: true,
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
    pub result: Option<Value>,
    /// Error value or message.
    pub error: Option<Value>,
    /// Captured stdout.
    #[serde(default)]
    pub stdout: String,
    /// Captured stderr.
    #[serde(default)]
    pub stderr: String,
    /// Log lines.
    #[serde(default)]
    pub logs: Value,
    /// When the action began (Unix ms), if later than its claim.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// The attempt it ran (its assignment's): a report on an attempt the
    /// execution has moved past is not recorded.
    #[serde(default)]
    pub attempt: Option<i64>,
    /// What it used, as the worker measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<attune_runtime::Resources>,
    /// The run's journal, when its assignment asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<attune_runtime::Journal>,
    /// Its host calls, timed from the run's start (kept with its
    /// resources, for the console's timeline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<attune_runtime::CallSpan>,
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
            attempt: None,
            resources: None,
            journal: None,
            calls: Vec::new(),
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
            attempt: self.attempt,
            resources: self.resources.and_then(|r| {
                let mut used = serde_json::to_value(r).ok()?;
                if !self.calls.is_empty() {
                    // Names, kinds and times only: the attributes went to
                    // the trace, and the timeline needs none of them.
                    let calls: Vec<attune_runtime::CallSpan> = self
                        .calls
                        .into_iter()
                        .take(attune_runtime::calls::MAX_SPANS)
                        .map(|c| attune_runtime::CallSpan {
                            attributes: Vec::new(),
                            ..c
                        })
                        .collect();
                    used["calls"] = serde_json::to_value(calls).ok()?;
                }
                Some(used)
            }),
            journal: self
                .journal
                .and_then(|j| serde_json::value::to_raw_value(&j).ok()),
        }
    }

    /// Serialized size, roughly: what a batch of reports costs to send.
    pub fn weight(&self) -> usize {
        self.stdout.len()
            + self.stderr.len()
            + self.result.as_ref().map_or(0, |v| v.to_string().len())
            + self.error.as_ref().map_or(0, |v| v.to_string().len())
            + self.logs.to_string().len()
            + self
                .journal
                .as_ref()
                .map_or(0, |j| serde_json::to_string(j).map_or(0, |t| t.len()))
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

/// One `attune:action/kv` call of a running execution, as a standalone
/// worker sends it to `POST /workers/{id}/executions/{execution}/kv`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KvCall {
    /// The value of a key.
    Get {
        /// The key.
        key: String,
    },
    /// Sets a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Time to live in ms.
        #[serde(default)]
        ttl_ms: Option<u64>,
    },
    /// Removes a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Keys with a prefix.
    ListKeys {
        /// The prefix.
        prefix: String,
    },
    /// Adds to a whole number.
    Increment {
        /// The key.
        key: String,
        /// What to add.
        delta: i64,
    },
}

/// What a key-value call answers: `value` when it worked, else `error`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KvReply {
    /// The call's value (string or null, bool, list of keys, or the sum).
    #[serde(default)]
    pub value: Value,
    /// Why it did not work.
    #[serde(default)]
    pub error: Option<KvFailure>,
}

/// A refused or failed key-value call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KvFailure {
    /// `too_large`, `not_an_integer` or `unavailable`.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// Executions a worker claimed but never began, handed back by a clean stop.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Their ids (at most [`MAX_REPORTS`]).
    pub executions: Vec<i64>,
}

/// What a release answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Released {
    /// How many went back to the queue.
    pub released: u64,
}
