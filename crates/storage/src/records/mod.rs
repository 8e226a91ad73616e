//! What the storage layer stores and returns: plain data, no SQL, one
//! file per concern: packs, rules, runs (events to executions), access
//! (workers, tokens, secrets, key-value).

use serde::{Deserialize, Serialize};

pub use super::status::ExecutionStatus;

mod access;
mod packs;
mod rules;
mod runs;

pub use access::*;
pub use packs::*;
pub use rules::*;
pub use runs::*;

/// Keyset pagination: `after` is the last ref/id of the previous page.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Page {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// Cursor from the previous page's `next`.
    pub after: Option<String>,
}

impl Page {
    pub fn limit(&self) -> i64 {
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
