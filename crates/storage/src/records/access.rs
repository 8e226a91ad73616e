//! Who acts and what they keep: workers, tokens, secrets (names only) and key-value state.

use serde::Serialize;
use serde_json::Value;

use super::Role;

/// A worker that registered with the server.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WorkerRecord {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// What it can run.
    #[sqlx(json)]
    pub capabilities: Vec<String>,
    /// Free labels.
    #[sqlx(json)]
    pub labels: Value,
    /// Unix ms.
    pub last_heartbeat: i64,
    /// Unix ms.
    pub created_at: i64,
    /// The API token that registered it (`EMBEDDED_OWNER` for the
    /// server's own); only that token may act as it, until an admin
    /// reassigns it. `None` only for a worker an admin registered before
    /// every registration recorded its token.
    #[sqlx(rename = "token_id")]
    pub token: Option<i64>,
}

/// An API token (never its secret or hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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

/// A secret's name and times (never its value).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SecretRecord {
    /// Its name.
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, last set.
    pub updated_at: i64,
}

/// One key of a pack's key-value state.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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
