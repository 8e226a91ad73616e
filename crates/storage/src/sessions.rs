//! Console sessions, stored by the hash of their cookie value only.

use super::records::*;
use super::{Pool, Result, Storage, now_ms};

impl Storage {
    /// Stores a session for token `token` until `expires_at` (Unix ms).
    pub async fn insert_session(&self, hash: &str, token: i64, expires_at: i64) -> Result<()> {
        let now = now_ms();
        on_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO console_session (hash, token, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(hash)
            .bind(token)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *p)
            .await?;
            Ok(())
        })
    }

    /// The live token of the unexpired session with this hash: none once
    /// the session expired, ended or its token was revoked.
    pub async fn session_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let now = now_ms();
        on_pool!(self, |p| {
            let row: Option<TokenRecord> = sqlx::query_as(
                "SELECT t.id, t.name, t.role, t.created_at, t.revoked_at FROM console_session s \
                 JOIN api_token t ON t.id = s.token \
                 WHERE s.hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }

    /// Ends a session (logout).
    pub async fn delete_session(&self, hash: &str) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query("DELETE FROM console_session WHERE hash = $1")
                .bind(hash)
                .execute(&mut *p)
                .await?;
            Ok(())
        })
    }
}
