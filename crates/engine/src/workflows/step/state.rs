//! What a workflow run keeps between steps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A workflow run's state, stored between steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// What `publish` set.
    pub vars: serde_json::Map<String, Value>,
    /// Each task that has been reached.
    pub tasks: BTreeMap<String, TaskState>,
    /// Children in flight: execution id → what they run.
    pub running: BTreeMap<i64, Slot>,
    /// The first failure no transition handled; nothing new starts after it.
    pub error: Option<Value>,
    /// Task runs started so far.
    pub runs: u32,
    /// How deep this workflow is nested in workflows (0: top level).
    pub depth: u32,
    /// Set once the workflow has ended.
    pub ended: bool,
}

/// What one child runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// The task.
    pub task: String,
    /// Its item, for `with_items`.
    #[serde(default)]
    pub item: Option<usize>,
    /// Attempt, from 1 (`retry`).
    pub attempt: u32,
}

/// How far one task is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// `waiting` (for a join), `running`, `succeeded` or `failed`.
    pub status: String,
    /// Branches arrived while waiting for a join.
    #[serde(default)]
    pub arrivals: u32,
    /// Arrivals while it was running: it runs again after.
    #[serde(default)]
    pub queued: u32,
    /// Times it started.
    pub runs: u32,
    /// Its result (for `with_items`, the list of results in item order).
    #[serde(default)]
    pub result: Option<Value>,
    /// Its error.
    #[serde(default)]
    pub error: Option<Value>,
    /// `with_items`: the items, the next to start, how many ended and failed.
    #[serde(default)]
    pub items: Option<Vec<Value>>,
    #[serde(default)]
    pub next_item: usize,
    #[serde(default)]
    pub done: usize,
    #[serde(default)]
    pub failed: usize,
    /// Every child it started, in order.
    #[serde(default)]
    pub children: Vec<i64>,
}
