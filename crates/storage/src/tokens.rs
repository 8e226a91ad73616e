//! API tokens, stored by hash only.

use super::records::*;
use super::{Pool, Result, Storage, StorageError, now_ms};

impl Storage {
    /// Stores a token's hash with its role.
    pub async fn insert_token(&self, name: &str, role: Role, hash: &str) -> Result<TokenRecord> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row: TokenRecord = sqlx::query_as(
                "INSERT INTO api_token (name, role, hash, created_at) VALUES ($1, $2, $3, $4) \
                 RETURNING id, name, role, created_at, revoked_at",
            )
            .bind(name)
            .bind(role.as_str())
            .bind(hash)
            .bind(now)
            .fetch_one(&mut *p)
            .await?;
            Ok(row)
        })
    }

    /// The live (not revoked) token with this hash.
    pub async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        on_pool!(self, |p| {
            let row: Option<TokenRecord> = sqlx::query_as(
                "SELECT id, name, role, created_at, revoked_at FROM api_token WHERE hash = $1 AND revoked_at IS NULL",
            )
            .bind(hash)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }

    /// The live (not revoked) token with this id.
    pub async fn get_live_token(&self, id: i64) -> Result<Option<TokenRecord>> {
        on_pool!(self, |p| {
            let row: Option<TokenRecord> = sqlx::query_as(
                "SELECT id, name, role, created_at, revoked_at FROM api_token WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }

    /// Tokens ordered by id (hashes are never returned).
    pub async fn list_tokens(&self, page: &Page) -> Result<Vec<TokenRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<TokenRecord> = sqlx::query_as(
                "SELECT id, name, role, created_at, revoked_at FROM api_token WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(page.after_id())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// Revokes a token; false when there was no live one with this id.
    /// The last live admin token is never revoked: that is a
    /// [`StorageError::Conflict`], since nobody could get back in.
    pub async fn revoke_token(&self, id: i64) -> Result<bool> {
        let now = now_ms();
        // The live admin rows are locked (PostgreSQL) or the database is
        // (SQLite's immediate transaction) while counting, so two revokes
        // at once cannot each leave the other as the last one.
        let lock = match self.dialect() {
            super::Dialect::Postgres => " FOR UPDATE",
            super::Dialect::Sqlite => "",
        };
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let admins: Vec<i64> = sqlx::query_scalar(&format!(
                "SELECT id FROM api_token WHERE role = 'admin' AND revoked_at IS NULL{lock}"
            ))
            .fetch_all(&mut *tx)
            .await?;
            if admins == [id] {
                return Err(StorageError::Conflict(
                    "this is the last admin token; create another admin token first".into(),
                ));
            }
            let done = sqlx::query(
                "UPDATE api_token SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// How many tokens exist (revoked included).
    pub async fn count_tokens(&self) -> Result<i64> {
        on_pool!(self, |p| {
            Ok(sqlx::query_scalar("SELECT COUNT(*) AS n FROM api_token")
                .fetch_one(p)
                .await?)
        })
    }
}
