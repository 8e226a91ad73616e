//! What the storage layer stores and returns: plain data, no SQL, one
//! file per concern: packs, rules, executions (events, enforcements, executions), access
//! (workers, tokens, secrets, key-value).

use serde::{Deserialize, Serialize};

pub use super::status::ExecutionStatus;

mod access;
mod executions;
mod inquiries;
mod packs;
mod policies;
mod rules;

pub use access::*;
pub use executions::*;
pub use inquiries::*;
pub use packs::*;
pub use policies::*;
pub use rules::*;

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

impl TryFrom<String> for Role {
    type Error = UnknownName;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Role::parse(&name).ok_or(UnknownName { kind: "role", name })
    }
}

stored_as_name!(Role);

/// A stored name that is none of its kind's (a status, a role): what
/// decoding its row fails with.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{name}`")]
pub struct UnknownName {
    /// What it should have named.
    pub kind: &'static str,
    /// What it holds.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use crate::{NewEvent, NewExecution, Storage, StorageError};

    /// The column a decode error names, when that is what `e` is.
    fn undecodable(e: &StorageError) -> Option<&str> {
        match e {
            StorageError::Database(sqlx::Error::ColumnDecode { index, .. }) => {
                Some(index.trim_matches('"'))
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_row_that_does_not_decode_is_an_error_naming_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("attune.db").display());
        let storage = Storage::connect(&url).await.unwrap();
        let payload = serde_json::json!({"n": 1});
        let events = [NewEvent::of("core.manual", &payload)];
        let event = storage.insert_events(&events).await.unwrap().remove(0);
        let run = NewExecution::of("core.echo", payload.clone(), vec![]);
        let execution = storage
            .insert_executions(&[run])
            .await
            .unwrap()
            .remove(0)
            .unwrap();

        storage
            .writer_sql("UPDATE event SET payload = 'not json'")
            .await
            .unwrap();
        let e = storage.get_event(event.id).await.unwrap_err();
        assert_eq!(undecodable(&e), Some("payload"), "{e:?}");

        storage
            .writer_sql("UPDATE execution SET status = 'misplaced'")
            .await
            .unwrap();
        let e = storage.get_execution(execution.id).await.unwrap_err();
        assert_eq!(undecodable(&e), Some("status"), "{e:?}");
        assert!(e.to_string().contains("misplaced"), "{e}");
        storage.close().await;
    }
}
