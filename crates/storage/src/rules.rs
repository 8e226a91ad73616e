//! Rules: saved definitions, and the enabled rules of a trigger type.

use sqlx::types::Json;

use super::records::*;
use super::sql::*;
use super::{Pool, Result, Storage, StorageError, now_ms};

impl Storage {
    /// Saves a new rule.
    pub async fn insert_rule(&self, rule: &RuleSpec) -> Result<RuleRecord> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row: RuleRecord = bind_rule!(
                sqlx::query_as(&format!(
                    "INSERT INTO rule ({RULE_FIELDS}, updated_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING {RULE_COLUMNS}"
                )),
                rule,
                now
            )
            .fetch_one(&mut *p)
            .await
            .map_err(|e| StorageError::from_sqlx(e, || format!("rule {} already exists", rule.r#ref)))?;
            Ok(row)
        })
    }

    /// Replaces a rule's definition; `None` when it does not exist.
    pub async fn update_rule(&self, r#ref: &str, rule: &RuleSpec) -> Result<Option<RuleRecord>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row: Option<RuleRecord> = bind_rule!(
                sqlx::query_as(&format!(
                    "UPDATE rule SET ({RULE_FIELDS}, updated_at) = \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) WHERE ref = $13 RETURNING {RULE_COLUMNS}"
                )),
                rule,
                now
            )
            .bind(r#ref)
            .fetch_optional(&mut *p)
            .await
            .map_err(|e| StorageError::from_sqlx(e, || format!("rule {} already exists", rule.r#ref)))?;
            Ok(row)
        })
    }

    /// Enables or disables a rule; `None` when it does not exist.
    pub async fn set_rule_enabled(&self, r#ref: &str, enabled: bool) -> Result<Option<RuleRecord>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row: Option<RuleRecord> = sqlx::query_as(&format!(
                "UPDATE rule SET enabled = $2, updated_at = $3, disabled_reason = NULL WHERE ref = $1 RETURNING {RULE_COLUMNS}"
            ))
            .bind(r#ref)
            .bind(enabled)
            .bind(now)
            .fetch_optional(&mut *p)
            .await?;
            Ok(row)
        })
    }

    /// Sets a rule's policies (checked), leaving the rest of it as it is.
    pub async fn set_rule_policies(
        &self,
        r#ref: &str,
        policies: &[Policy],
    ) -> Result<Option<RuleRecord>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row: Option<RuleRecord> = sqlx::query_as(&format!(
                "UPDATE rule SET policies = $2, updated_at = $3 WHERE ref = $1 RETURNING {RULE_COLUMNS}"
            ))
            .bind(r#ref)
            .bind(Json(policies))
            .bind(now)
            .fetch_optional(&mut *p)
            .await?;
            Ok(row)
        })
    }

    /// One rule by ref.
    pub async fn get_rule(&self, r#ref: &str) -> Result<Option<RuleRecord>> {
        on_pool!(self, |p| {
            let row: Option<RuleRecord> =
                sqlx::query_as(&format!("SELECT {RULE_COLUMNS} FROM rule WHERE ref = $1"))
                    .bind(r#ref)
                    .fetch_optional(p)
                    .await?;
            Ok(row)
        })
    }

    /// Rules ordered by ref, filtered by trigger, action and enabled.
    pub async fn list_rules(&self, filter: &RuleFilter, page: &Page) -> Result<Vec<RuleRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<RuleRecord> = sqlx::query_as(&format!(
                "SELECT {RULE_COLUMNS} FROM rule WHERE ref > $1 AND ($2 IS NULL OR trigger = $2) \
                 AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR enabled = $4) ORDER BY ref LIMIT $5"
            ))
            .bind(page.after_text())
            .bind(&filter.trigger)
            .bind(&filter.action)
            .bind(filter.enabled)
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// Deletes a rule; false when there was none.
    pub async fn delete_rule(&self, r#ref: &str) -> Result<bool> {
        on_writer!(self, |p| {
            let done = sqlx::query("DELETE FROM rule WHERE ref = $1")
                .bind(r#ref)
                .execute(&mut *p)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Enabled rules listening to `trigger`.
    pub async fn enabled_rules(&self, trigger: &str) -> Result<Vec<RuleRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<RuleRecord> = sqlx::query_as(&format!(
                "SELECT {RULE_COLUMNS} FROM rule WHERE trigger = $1 AND enabled = TRUE ORDER BY ref"
            ))
            .bind(trigger)
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }
}
