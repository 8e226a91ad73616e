//! Policies: how many executions of an action (or of a rule) may run at
//! once and how many may start per time window, per rendered key.

use serde::{Deserialize, Serialize};

/// What happens to an execution that arrives past a policy's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// It waits (`delayed`) and starts in order of arrival per key.
    #[default]
    Queue,
    /// It is created `cancelled`, with the policy as its reason.
    Cancel,
    /// It is not created; its enforcement records why.
    Drop,
}

impl OnLimit {
    /// The name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Cancel => "cancel",
            Self::Drop => "drop",
        }
    }

    /// The value of a stored name; queue for anything else.
    pub fn from_name(name: &str) -> Self {
        match name {
            "cancel" => Self::Cancel,
            "drop" => Self::Drop,
            _ => Self::Queue,
        }
    }
}

/// A policy as stored on an action or a rule (already validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// At most this many running (or claimed) at once, per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// A template over `params` whose value is the key; one key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// At most `N` started per window, as `N/<duration>` (`10/1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// What happens past the limit.
    #[serde(default)]
    pub on_limit: OnLimit,
}

/// One policy's hold on one execution, written with the execution: the
/// limits are copied, so an execution waits under the policy it was created
/// with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// The policy's name: `<action ref>#<n>` or `rule:<rule ref>#<n>`.
    pub policy: String,
    /// The rendered key (empty without a key template).
    pub key: String,
    /// Concurrency limit.
    pub concurrency: Option<i64>,
    /// Rate limit: at most `.0` starts per `.1` milliseconds.
    pub rate: Option<(i64, i64)>,
    /// What happens past the limit.
    pub on_limit: OnLimit,
}

/// How one key of one policy stands, as `GET /policies` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GateCount {
    /// The policy's name.
    pub policy: String,
    /// The key.
    pub key: String,
    /// Executions holding a slot: queued for a worker, claimed or running.
    pub running: i64,
    /// Executions waiting (`delayed`).
    pub waiting: i64,
}

/// What one admission pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Executions let through to the queue.
    pub admitted: Vec<i64>,
    /// Executions made to wait (newly), with the reason.
    pub delayed: Vec<(i64, String)>,
    /// Executions cancelled by a policy (`on_limit = "cancel"`), with the
    /// policy's name and the reason.
    pub cancelled: Vec<(i64, String, String)>,
    /// Executions refused (`on_limit = "drop"`), with the policy's name and
    /// the reason; they no longer exist.
    pub dropped: Vec<(i64, String, String)>,
    /// Whether executions still wait.
    pub waiting: bool,
    /// When a rate window next lets one more start (Unix ms).
    pub next_due: Option<i64>,
}

/// A run a policy refused (`on_limit = "drop"`): it was never created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The policy's name.
    pub policy: String,
    /// Why, naming the policy, the key and the limit.
    pub reason: String,
}
