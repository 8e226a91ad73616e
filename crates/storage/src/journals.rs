//! Journals: what each execution's sandbox received, kept beside it for
//! replay, and every registered version of every pack's actions.

use serde_json::Value;
use sqlx::types::Json;

use super::{Pool, Result, Storage};

/// A stored journal (kept in its execution's row, written with how the
/// execution ended).
#[derive(Debug, Clone)]
pub struct JournalRecord {
    /// The execution it belongs to.
    pub execution: i64,
    /// Digest of the component that ran.
    pub component: String,
    /// The journal (the runtime's `Journal`, as JSON).
    pub journal: Value,
    /// Why it cannot be replayed, when it cannot.
    pub not_replayable: Option<String>,
}

impl Storage {
    /// The journal of execution `id`, if it recorded one.
    pub async fn journal(&self, id: i64) -> Result<Option<JournalRecord>> {
        let stored: Option<Option<Json<Value>>> = on_pool!(self, |p| {
            Ok::<_, super::StorageError>(
                sqlx::query_scalar("SELECT journal FROM execution WHERE id = $1")
                    .bind(id)
                    .fetch_optional(p)
                    .await?,
            )
        })?;
        Ok(stored.flatten().map(|Json(journal)| JournalRecord {
            execution: id,
            component: journal["component"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            not_replayable: journal["not_replayable"].as_str().map(str::to_string),
            journal,
        }))
    }

    /// Whether `component` is what `action` (its export name) of `pack` was
    /// in some version registered since the pack was last deleted.
    pub async fn was_component_of(
        &self,
        pack: &str,
        action: &str,
        component: &str,
    ) -> Result<bool> {
        on_pool!(self, |p| {
            let found: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pack_version WHERE pack = $1 AND action = $2 AND component = $3",
            )
            .bind(pack)
            .bind(action)
            .bind(component)
            .fetch_one(p)
            .await?;
            Ok(found > 0)
        })
    }

    /// The component digest of `action` (its export name) in `version` of
    /// `pack`, for any version registered since the pack was last deleted.
    pub async fn versioned_component(
        &self,
        pack: &str,
        version: &str,
        action: &str,
    ) -> Result<Option<String>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_scalar(
                "SELECT component FROM pack_version WHERE pack = $1 AND version = $2 AND action = $3",
            )
            .bind(pack)
            .bind(version)
            .bind(action)
            .fetch_optional(p)
            .await?)
        })
    }
}
