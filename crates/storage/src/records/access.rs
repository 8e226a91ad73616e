//! Who acts and what they keep: workers, tokens, secrets (names only) and key-value state.

use serde::Serialize;
use serde_json::Value;

use super::Role;
use crate::rows::DbRow;

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
    /// server's own); only that token may act as it, until an admin
    /// reassigns it. `None` only for a worker an admin registered before
    /// every registration recorded its token.
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
