//! Events, enforcements, executions and their attempts.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ExecutionStatus, Gate};

/// Something that happened.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventRecord {
    /// Id, increasing.
    pub id: i64,
    /// Trigger type ref.
    pub trigger: String,
    /// Payload.
    #[sqlx(json)]
    pub payload: Value,
    /// Who produced it (rule ref for timers and webhooks, token name for manual events).
    pub source: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// How deep in a chain of causes it is (0: nothing Attune ran caused it).
    pub depth: i64,
    /// Why no rule saw it (its chain went too deep), when none did.
    pub held_reason: Option<String>,
    /// The id of the token that caused it (posted it, or asked for the run
    /// or gave the answer it announces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<i64>,
}

/// An event to record.
pub struct NewEvent<'a> {
    /// Trigger type ref.
    pub trigger: &'a str,
    /// Payload.
    pub payload: &'a Value,
    /// Who produced it.
    pub source: Option<&'a str>,
    /// The rules it is addressed to; `None`: every enabled rule on its trigger.
    pub rules: Option<&'a [String]>,
    /// How deep in a chain of causes it is.
    pub depth: i64,
    /// Why no rule sees it, when none does.
    pub held_reason: Option<&'a str>,
    /// The id of the token that caused it.
    pub requested_by: Option<i64>,
}

impl<'a> NewEvent<'a> {
    /// An event of `trigger` with `payload`, from nobody in particular, for
    /// every rule on its trigger, caused by nothing Attune ran.
    pub fn of(trigger: &'a str, payload: &'a Value) -> Self {
        Self {
            trigger,
            payload,
            source: None,
            rules: None,
            depth: 0,
            held_reason: None,
            requested_by: None,
        }
    }
}

/// An enforcement to record: a rule's enforcement of an event.
#[derive(Debug, Clone)]
pub struct NewEnforcement {
    /// Rule ref.
    pub rule: String,
    /// Event id.
    pub event: i64,
    /// Rendered params, when rendering got that far.
    pub params: Option<Value>,
    /// Why it failed; `None` when enforced.
    pub reason: Option<String>,
    /// The execution to queue when enforced.
    pub execution: Option<NewExecution>,
}

/// An execution to queue.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Action ref.
    pub action: String,
    /// Validated parameters.
    pub params: Value,
    /// Capabilities a worker needs.
    pub capabilities: Vec<String>,
    /// Why it may wait (e.g. no capable worker).
    pub status_reason: Option<String>,
    /// Rule ref, for rule-driven runs.
    pub rule: Option<String>,
    /// Enforcement id, for rule-driven runs.
    pub enforcement: Option<i64>,
    /// Attempts allowed, at least 1.
    pub max_attempts: i64,
    /// Timeout in ms; default when absent.
    pub timeout_ms: Option<i64>,
    /// The real params sealed for the worker when `params` masks secrets.
    pub sealed_params: Option<Vec<u8>>,
    /// The workflow execution this one runs a task of.
    pub parent: Option<i64>,
    /// That task (`name`, or `name[item]`).
    pub task: Option<String>,
    /// Not claimable before this (Unix ms; 0: at once), e.g. a task's retry delay.
    pub not_before: i64,
    /// A workflow's own execution: it starts `running` and no worker claims
    /// it; the workflow conductor advances it.
    pub workflow: bool,
    /// The sensor this execution polls for.
    pub sensor: Option<String>,
    /// Who asked for a direct run (`mcp` for an agent's tool call).
    pub source: Option<String>,
    /// How deep in a chain of causes it is: its event's depth, or its
    /// workflow's.
    pub depth: i64,
    /// The policies that limit it, each with its key: it starts `delayed`
    /// and an admission pass lets it through.
    pub gates: Vec<Gate>,
    /// The W3C `traceparent` of the span its own span is a child of, when
    /// it is traced.
    pub trace: Option<String>,
    /// The id of the token that asked for it (direct runs, and the tasks
    /// of a directly run workflow).
    pub requested_by: Option<i64>,
    /// What it waits for, for a workflow's `ask` or `wait` task: it starts
    /// `pending` and no worker claims it.
    pub inquiry: Option<NewInquiry>,
}

/// What a `pending` execution waits for (see [`NewExecution::inquiry`]).
#[derive(Debug, Clone)]
pub struct NewInquiry {
    /// `ask` or `wait`.
    pub kind: String,
    /// What it waits for, as the engine describes it.
    pub spec: Value,
    /// A wait's trigger type.
    pub trigger: Option<String>,
    /// Unix ms when it times out.
    pub deadline: Option<i64>,
    /// The id of the token that started the workflow.
    pub requested_by: Option<i64>,
    /// The id of the token that last saved the rule that started it.
    pub rule_by: Option<i64>,
}

impl NewExecution {
    /// Whether it sets nothing but what every run has: no parent, task,
    /// sensor, source or delay, and it is no workflow.
    pub fn is_plain(&self) -> bool {
        self.parent.is_none()
            && self.task.is_none()
            && self.sensor.is_none()
            && self.source.is_none()
            && self.not_before == 0
            && self.depth == 0
            && !self.workflow
            && self.trace.is_none()
            && self.requested_by.is_none()
            && self.inquiry.is_none()
    }

    /// The status it is stored with: a workflow's own execution starts
    /// `running` (its conductor advances it), one a policy limits
    /// `delayed`, everything else `requested`.
    pub fn initial_status(&self) -> ExecutionStatus {
        if !self.gates.is_empty() {
            ExecutionStatus::Delayed
        } else if self.inquiry.is_some() {
            ExecutionStatus::Pending
        } else if self.workflow {
            ExecutionStatus::Running
        } else {
            ExecutionStatus::Requested
        }
    }

    /// A run of `action` with `params` and nothing else set: one attempt,
    /// the default timeout, no rule, no parent.
    pub fn of(action: &str, params: Value, capabilities: Vec<String>) -> Self {
        Self {
            action: action.to_string(),
            params,
            capabilities,
            status_reason: None,
            rule: None,
            enforcement: None,
            max_attempts: 1,
            timeout_ms: None,
            sealed_params: None,
            parent: None,
            task: None,
            not_before: 0,
            workflow: false,
            sensor: None,
            source: None,
            depth: 0,
            gates: Vec::new(),
            trace: None,
            requested_by: None,
            inquiry: None,
        }
    }
}

/// One run of one action. Read from the storage's `EXECUTION_COLUMNS`,
/// which compute `queued_ms` and `running_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct ExecutionRecord {
    /// Id, increasing.
    pub id: i64,
    /// Action ref.
    pub action: String,
    /// Parameters.
    #[sqlx(json)]
    pub params: Value,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// Why it is in this status, when that needs saying.
    pub status_reason: Option<String>,
    /// Capabilities a worker needs.
    #[sqlx(json)]
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
    /// Result value.
    #[sqlx(json(nullable))]
    pub result: Option<Value>,
    /// Error value or message.
    #[sqlx(json(nullable))]
    pub error: Option<Value>,
    /// Captured stdout.
    pub stdout: Option<String>,
    /// Captured stderr.
    pub stderr: Option<String>,
    /// Log lines.
    #[sqlx(json(nullable))]
    pub logs: Option<Value>,
    /// What it used, as its worker measured it (see
    /// [`Finished::resources`](crate::Finished::resources)).
    #[sqlx(json(nullable))]
    pub resources: Option<Value>,
    /// The id of the token that asked for it (a direct run, and the tasks
    /// of a directly run workflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<i64>,
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
    #[serde(default)]
    pub queued_ms: Option<i64>,
    /// Time from running to finished, in ms (once finished).
    #[serde(default)]
    pub running_ms: Option<i64>,
    /// The workflow execution it runs a task of.
    #[serde(default)]
    pub parent: Option<i64>,
    /// That task (`name`, or `name[item]`).
    #[serde(default)]
    pub task: Option<String>,
    /// The sensor it polls for.
    #[serde(default)]
    pub sensor: Option<String>,
    /// Who asked for it, for a direct run (`mcp`: an agent's tool call).
    #[serde(default)]
    pub source: Option<String>,
    /// How deep in a chain of causes it is.
    #[serde(default)]
    pub depth: i64,
    /// The real params sealed for its worker, while it has not ended, when
    /// `params` masks secrets. Never serialized.
    #[serde(skip)]
    pub sealed_params: Option<Vec<u8>>,
    /// The W3C `traceparent` of the span its own span is a child of, when
    /// it is traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl ExecutionRecord {
    /// The record of `e` as the insert of [`NewExecution`]s stores it with
    /// id `id` at `now` (the columns it leaves out take their defaults), so
    /// that queueing reads nothing back.
    pub(crate) fn queued(id: i64, e: &NewExecution, enforcement: Option<i64>, now: i64) -> Self {
        let started_at = e.workflow.then_some(now);
        Self {
            id,
            action: e.action.clone(),
            params: e.params.clone(),
            status: e.initial_status(),
            status_reason: e.status_reason.clone(),
            capabilities: e.capabilities.clone(),
            rule: e.rule.clone(),
            enforcement,
            attempt: 1,
            max_attempts: e.max_attempts,
            timeout_ms: e.timeout_ms,
            worker: None,
            result: None,
            error: None,
            stdout: None,
            stderr: None,
            logs: None,
            resources: None,
            requested_by: e.requested_by,
            created_at: now,
            scheduled_at: None,
            started_at,
            finished_at: None,
            cancel_requested: false,
            queued_ms: started_at.map(|s| s - now),
            running_ms: None,
            parent: e.parent,
            task: e.task.clone(),
            sensor: e.sensor.clone(),
            source: e.source.clone(),
            depth: e.depth,
            sealed_params: e.sealed_params.clone(),
            trace: e.trace.clone(),
        }
    }
}

/// One ended attempt of an execution: its history, oldest first.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Worker that ran it.
    pub worker: Option<i64>,
    /// How it ended.
    pub status: ExecutionStatus,
    /// Error value or message.
    #[sqlx(json(nullable))]
    pub error: Option<Value>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: i64,
}

/// Filters for listing executions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExecutionFilter {
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// Only this action.
    pub action: Option<String>,
    /// Only runs caused by this rule.
    pub rule: Option<String>,
    /// Only the tasks of this workflow execution.
    pub parent: Option<i64>,
    /// Only those created at or after this time (Unix ms).
    pub since: Option<i64>,
}

/// A rule's enforcement of one event, as the console shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EnforcementRecord {
    /// The event.
    pub event: i64,
    /// `enforced`, `not_matched` or `failed`.
    pub status: String,
    /// Why it did not run.
    pub reason: Option<String>,
    /// The execution it queued.
    pub execution: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
}
