//! What the storage layer stores and returns: plain data, no SQL.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rows::DbRow;
pub use super::status::ExecutionStatus;

/// Keyset pagination: `after` is the last ref/id of the previous page.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Page {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Cursor from the previous page's `next`.
    pub after: Option<String>,
}

impl Page {
    pub(crate) fn limit(&self) -> i64 {
        self.limit.unwrap_or(50).clamp(1, super::MAX_PAGE)
    }

    pub(crate) fn after_text(&self) -> String {
        self.after.clone().unwrap_or_default()
    }

    pub(crate) fn after_id(&self) -> i64 {
        self.after
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    }

    /// For newest-first lists: ids below the cursor.
    pub(crate) fn before_id(&self) -> i64 {
        self.after
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(i64::MAX)
    }
}

/// A token's permission level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Claim executions and report results, nothing else.
    Worker,
    /// Read everything.
    Viewer,
    /// Read, run actions, fire events, manage rules.
    Operator,
    /// Everything, including packs and tokens.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "worker" => Role::Worker,
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// A component to store with a pack.
#[derive(Debug, Clone)]
pub struct NewComponent {
    /// SHA-256, hex.
    pub digest: String,
    /// The component.
    pub bytes: Vec<u8>,
}

/// An action to register with a pack.
#[derive(Debug, Clone)]
pub struct NewAction {
    /// `<pack>.<name>`.
    pub r#ref: String,
    /// Name within the pack.
    pub name: String,
    /// Digest of the component exporting it.
    pub component: String,
    /// JSON Schema of the parameters.
    pub params_schema: Value,
    /// JSON Schema of the result.
    pub result_schema: Value,
    /// JSON Schema of the typed error.
    pub error_schema: Option<Value>,
    /// Required capabilities.
    pub capabilities: Vec<String>,
    /// Doc comment.
    pub description: Option<String>,
}

/// A pack to register.
#[derive(Debug, Clone)]
pub struct NewPack {
    /// Pack name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// Description.
    pub description: Option<String>,
    /// Content digest (manifest + component digests).
    pub digest: String,
    /// What it is granted.
    pub grants: Grants,
    /// Its components.
    pub components: Vec<NewComponent>,
    /// Its actions.
    pub actions: Vec<NewAction>,
}

/// What [`super::Storage::register_pack`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new pack.
    Created,
    /// A new version of an existing pack.
    Upgraded,
    /// The same name, version and content were already there.
    Unchanged,
}

/// What a pack is granted beyond the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP destinations (`https://api.github.com`, `https://*.slack.com`).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Names of the secrets its actions may read.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// A registered pack.
#[derive(Debug, Clone, Serialize)]
pub struct PackRecord {
    /// Pack name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: Option<String>,
    /// Content digest.
    pub digest: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// What it is granted.
    pub grants: Grants,
}

impl PackRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            grants: serde_json::from_value(r.json("grants")).unwrap_or_default(),
            name: r.text("name"),
            version: r.text("version"),
            description: r.opt_text("description"),
            digest: r.text("digest"),
            created_at: r.int("created_at"),
            updated_at: r.int("updated_at"),
        }
    }
}

/// A registered action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    /// `<pack>.<name>`.
    pub r#ref: String,
    /// Its pack.
    pub pack: String,
    /// Name within the pack.
    pub name: String,
    /// Digest of its component.
    pub component: String,
    /// JSON Schema of the parameters, derived from WIT.
    pub params_schema: Value,
    /// JSON Schema of the success value.
    pub result_schema: Value,
    /// JSON Schema of the typed error, if the action returns a `result`.
    pub error_schema: Option<Value>,
    /// Capabilities a worker needs.
    pub capabilities: Vec<String>,
    /// WIT doc comment.
    pub description: Option<String>,
}

impl ActionRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            r#ref: r.text("ref"),
            pack: r.text("pack"),
            name: r.text("name"),
            component: r.text("component"),
            params_schema: r.json("params_schema"),
            result_schema: r.json("result_schema"),
            error_schema: r.opt_json("error_schema"),
            capabilities: serde_json::from_value(r.json("capabilities")).unwrap_or_default(),
            description: r.opt_text("description"),
        }
    }
}

/// A kind of trigger rules can listen to.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerTypeRecord {
    /// e.g. `core.interval`.
    pub r#ref: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of a rule's `trigger_params`.
    pub params_schema: Value,
    /// JSON Schema of its events' payloads.
    pub payload_schema: Value,
}

impl TriggerTypeRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            r#ref: r.text("ref"),
            description: r.text("description"),
            params_schema: r.json("params_schema"),
            payload_schema: r.json("payload_schema"),
        }
    }
}

/// A rule as stored (already validated).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleSpec {
    /// `<pack>.<name>`, unique.
    pub r#ref: String,
    /// What it is for.
    pub description: Option<String>,
    /// Trigger type ref.
    pub trigger: String,
    /// Parameters of the trigger.
    pub trigger_params: Value,
    /// Expression over `event`; the rule fires when it is true.
    pub criteria: Option<String>,
    /// Action ref.
    pub action: String,
    /// Parameters for the action; strings may hold `{{ event… }}` templates.
    pub action_params: Value,
    /// Whether it fires.
    pub enabled: bool,
    /// Execution timeout in milliseconds; default when absent.
    pub timeout_ms: Option<i64>,
    /// Attempts each execution gets (retries after a lost worker), at least 1.
    #[serde(default = "one")]
    pub max_attempts: i64,
}

fn one() -> i64 {
    1
}

/// A stored rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleRecord {
    /// Internal id.
    pub id: i64,
    /// The definition.
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl RuleRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            id: r.int("id"),
            spec: RuleSpec {
                r#ref: r.text("ref"),
                description: r.opt_text("description"),
                trigger: r.text("trigger"),
                trigger_params: r.json("trigger_params"),
                criteria: r.opt_text("criteria"),
                action: r.text("action"),
                action_params: r.json("action_params"),
                enabled: r.boolean("enabled"),
                timeout_ms: r.opt_int("timeout_ms"),
                max_attempts: r.int("max_attempts"),
            },
            created_at: r.int("created_at"),
            updated_at: r.int("updated_at"),
        }
    }
}

/// Filters for listing rules.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleFilter {
    /// Only rules on this trigger type.
    pub trigger: Option<String>,
    /// Only rules running this action.
    pub action: Option<String>,
    /// Only enabled (true) or disabled (false) rules.
    pub enabled: Option<bool>,
}

/// Something that happened.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// Id, increasing.
    pub id: i64,
    /// Trigger type ref.
    pub trigger: String,
    /// Payload.
    pub payload: Value,
    /// Who produced it (rule ref for timers and webhooks, token name for manual events).
    pub source: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

impl EventRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            id: r.int("id"),
            trigger: r.text("trigger"),
            payload: r.json("payload"),
            source: r.opt_text("source"),
            created_at: r.int("created_at"),
        }
    }
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
}

/// One run of one action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// Id, increasing.
    pub id: i64,
    /// Action ref.
    pub action: String,
    /// Parameters.
    pub params: Value,
    /// Where it stands.
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
    /// Result value.
    pub result: Option<Value>,
    /// Error value or message.
    pub error: Option<Value>,
    /// Captured stdout.
    pub stdout: Option<String>,
    /// Captured stderr.
    pub stderr: Option<String>,
    /// Log lines.
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
    #[serde(default)]
    pub queued_ms: Option<i64>,
    /// Time from running to finished, in ms (once finished).
    #[serde(default)]
    pub running_ms: Option<i64>,
    /// The real params sealed for its worker, while it has not ended, when
    /// `params` masks secrets. Never serialized.
    #[serde(skip)]
    pub sealed_params: Option<Vec<u8>>,
}

impl ExecutionRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            id: r.int("id"),
            action: r.text("action"),
            params: r.json("params"),
            status: r.status("status"),
            status_reason: r.opt_text("status_reason"),
            capabilities: serde_json::from_value(r.json("capabilities")).unwrap_or_default(),
            rule: r.opt_text("rule"),
            enforcement: r.opt_int("enforcement"),
            attempt: r.int("attempt"),
            max_attempts: r.int("max_attempts"),
            timeout_ms: r.opt_int("timeout_ms"),
            worker: r.opt_int("worker"),
            result: r.opt_json("result"),
            error: r.opt_json("error"),
            stdout: r.opt_text("stdout"),
            stderr: r.opt_text("stderr"),
            logs: r.opt_json("logs"),
            created_at: r.int("created_at"),
            scheduled_at: r.opt_int("scheduled_at"),
            started_at: r.opt_int("started_at"),
            finished_at: r.opt_int("finished_at"),
            cancel_requested: r.boolean("cancel_requested"),
            queued_ms: r.opt_int("started_at").map(|s| s - r.int("created_at")),
            running_ms: r
                .opt_int("finished_at")
                .zip(r.opt_int("started_at"))
                .map(|(f, s)| f - s),
            sealed_params: r.opt_bytes("sealed_params"),
        }
    }
}

/// One ended attempt of an execution: its history, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Worker that ran it.
    pub worker: Option<i64>,
    /// How it ended.
    pub status: ExecutionStatus,
    /// Error value or message.
    pub error: Option<Value>,
    /// Unix ms.
    pub started_at: Option<i64>,
    /// Unix ms.
    pub finished_at: i64,
}

impl AttemptRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            attempt: r.int("attempt"),
            worker: r.opt_int("worker"),
            status: r.status("status"),
            error: r.opt_json("error"),
            started_at: r.opt_int("started_at"),
            finished_at: r.int("finished_at"),
        }
    }
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
}

/// A worker that registered with the server.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRecord {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// What it can run.
    pub capabilities: Vec<String>,
    /// Free labels.
    pub labels: Value,
    /// Unix ms.
    pub last_heartbeat: i64,
    /// Unix ms.
    pub created_at: i64,
    /// The API token that registered it (`EMBEDDED_OWNER` for the
    /// server's own); only that token or an admin may act as it.
    pub token: Option<i64>,
}

impl WorkerRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            token: r.opt_int("token_id"),
            id: r.int("id"),
            name: r.text("name"),
            capabilities: serde_json::from_value(r.json("capabilities")).unwrap_or_default(),
            labels: r.json("labels"),
            last_heartbeat: r.int("last_heartbeat"),
            created_at: r.int("created_at"),
        }
    }
}

/// An API token (never its secret or hash).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    /// Id.
    pub id: i64,
    /// Name, for people.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, when revoked.
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    pub(crate) fn from_row(r: &impl DbRow) -> Self {
        Self {
            id: r.int("id"),
            name: r.text("name"),
            role: Role::parse(&r.text("role")).unwrap_or(Role::Viewer),
            created_at: r.int("created_at"),
            revoked_at: r.opt_int("revoked_at"),
        }
    }
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
}

/// An enforcement to record: a rule's verdict on an event.
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

/// A secret's name and times (never its value).
#[derive(Debug, Clone, Serialize)]
pub struct SecretRecord {
    /// Its name.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, last set.
    pub updated_at: i64,
}

/// One key of a pack's key-value state.
#[derive(Debug, Clone, Serialize)]
pub struct KvRecord {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// When it expires (Unix ms), if it does.
    pub expires_at: Option<i64>,
    /// Unix ms, last written.
    pub updated_at: i64,
}
