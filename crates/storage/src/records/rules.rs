//! Rules and the filter that lists them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A rule as stored (already validated).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct RuleSpec {
    /// `<pack>.<name>`, unique.
    pub r#ref: String,
    /// What it is for.
    pub description: Option<String>,
    /// Trigger type ref.
    pub trigger: String,
    /// Parameters of the trigger.
    #[sqlx(json)]
    pub trigger_params: Value,
    /// Expression over `event`; the rule fires when it is true.
    pub criteria: Option<String>,
    /// Action ref.
    pub action: String,
    /// Parameters for the action; strings may hold `{{ event… }}` templates.
    #[sqlx(json)]
    pub action_params: Value,
    /// Whether it fires.
    pub enabled: bool,
    /// Execution timeout in milliseconds; default when absent.
    pub timeout_ms: Option<i64>,
    /// Attempts each execution gets (retries after a lost worker), at least 1.
    #[serde(default = "one")]
    pub max_attempts: i64,
    /// Concurrency and rate policies on its executions.
    #[sqlx(json)]
    #[serde(default)]
    pub policies: Vec<super::Policy>,
}

fn one() -> i64 {
    1
}

/// A stored rule.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RuleRecord {
    /// Internal id.
    pub id: i64,
    /// The definition.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub spec: RuleSpec,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// Why the server disabled it (its trigger type went away with its pack).
    #[serde(default)]
    pub disabled_reason: Option<String>,
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
