//! What a workflow's `ask` or `wait` task waits for.

use serde::Serialize;
use serde_json::Value;

/// A `pending` execution's inquiry: an `ask` (a person's answer) or a
/// `wait` (an event).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InquiryRecord {
    /// The task's own execution.
    pub id: i64,
    /// Its workflow's execution.
    pub workflow: i64,
    /// The task's name.
    pub task: String,
    /// `ask` or `wait`.
    pub kind: String,
    /// What it waits for, as the engine describes it.
    #[sqlx(json)]
    pub spec: Value,
    /// A wait's trigger type.
    pub trigger: Option<String>,
    /// A wait looks at events after this id.
    pub after_event: i64,
    /// Unix ms when it times out.
    pub deadline: Option<i64>,
    /// The id of the token that started the workflow.
    pub requested_by: Option<i64>,
    /// The id of the token that last saved the rule that started it.
    pub rule_by: Option<i64>,
    /// `open`, `answered`, `timed_out` or `closed` (its task was cancelled).
    pub state: String,
    /// Who answered (a token's name, or `resume URL`), or the event that
    /// resumed a wait (`event <id>`).
    pub answered_by: Option<String>,
    /// Unix ms.
    pub answered_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
}
