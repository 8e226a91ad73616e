//! Journals: what each execution's sandbox received, kept beside it for
//! replay, and every registered version of every pack's actions.

use serde_json::Value;
use sqlx::types::Json;

use super::sql::param;
use super::{Dialect, Pool, Result, Storage};

/// The journal of one ended execution, as its worker reports it.
#[derive(Debug, Clone)]
pub struct NewJournal {
    /// Digest of the component that ran.
    pub component: String,
    /// The journal (the runtime's `Journal`, as JSON).
    pub journal: Value,
    /// Why it cannot be replayed, when it cannot.
    pub not_replayable: Option<String>,
}

/// A stored journal.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JournalRecord {
    /// The execution it belongs to.
    pub execution: i64,
    /// Digest of the component that ran.
    pub component: String,
    /// The journal.
    #[sqlx(json)]
    pub journal: Value,
    /// Why it cannot be replayed, when it cannot.
    pub not_replayable: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// Writes `journals` (execution id, journal) in one statement, replacing
/// an earlier attempt's.
pub(crate) async fn insert<DB, C>(
    conn: &mut C,
    dialect: Dialect,
    journals: &[(i64, &NewJournal)],
    now: i64,
) -> Result<()>
where
    DB: sqlx::Database<Connection = C>,
    C: sqlx::Connection<Database = DB>,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Json<&'q Value>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    if journals.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..journals.len())
        .map(|i| {
            let n = i * 5;
            format!(
                "({}, {}, {}, {}, {})",
                param(dialect, n + 1),
                param(dialect, n + 2),
                param(dialect, n + 3),
                param(dialect, n + 4),
                param(dialect, n + 5)
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO execution_journal (execution, component, journal, not_replayable, created_at) \
         VALUES {} ON CONFLICT (execution) DO UPDATE SET component = excluded.component, \
         journal = excluded.journal, not_replayable = excluded.not_replayable, \
         created_at = excluded.created_at",
        rows.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for (id, j) in journals {
        query = query
            .bind(*id)
            .bind(j.component.as_str())
            .bind(Json(&j.journal))
            .bind(j.not_replayable.as_deref())
            .bind(now);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

impl Storage {
    /// The journal of execution `id`, if it recorded one.
    pub async fn journal(&self, id: i64) -> Result<Option<JournalRecord>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(
                "SELECT execution, component, journal, not_replayable, created_at \
                 FROM execution_journal WHERE execution = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?)
        })
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
