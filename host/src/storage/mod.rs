//! Persistence on SQLite (embedded default) or PostgreSQL, behind one type.
//!
//! [`Storage`] holds either pool; every query is written once and compiled
//! for both through [`on_pool!`], so the two backends cannot drift apart.
//! SQL sticks to what both dialects share (`$n` placeholders, `RETURNING`,
//! JSON bound through `sqlx::types::Json`); what differs lives in the
//! per-dialect migrations under `migrations/`. Times are Unix milliseconds.
//!
//! The API layer calls these methods and never sees SQL; errors carry a
//! [`StorageError`] kind (conflict, not found) so callers can answer 409/404
//! without inspecting database text.

mod migrate;
mod rows;

pub mod records;

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;

pub use records::*;
use rows::DbRow;

/// Storage failures, by kind.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique constraint was violated (e.g. a rule ref already exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The database URL is not one Attune understands.
    #[error("unsupported database URL `{0}`: use sqlite://<file> or postgres://…")]
    BadUrl(String),
    /// Anything else from the database; logged, never shown to clients.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration {version} failed: {source}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// What went wrong.
        source: sqlx::Error,
    },
}

impl StorageError {
    /// Maps unique violations to [`StorageError::Conflict`], by error kind so
    /// it works on both backends.
    fn from_sqlx(e: sqlx::Error, what: impl FnOnce() -> String) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                StorageError::Conflict(what())
            }
            sqlx::Error::Database(db)
                if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
            {
                StorageError::NotFound(what())
            }
            _ => StorageError::Database(e),
        }
    }
}

type Result<T> = std::result::Result<T, StorageError>;

/// Which SQL dialect a [`Storage`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

#[derive(Clone)]
enum Pool {
    /// Readers, and the one connection every write goes through: SQLite
    /// takes one writer at a time anyway, and writers queued here wait their
    /// turn in order instead of sleeping in SQLite's busy handler (a
    /// millisecond or more each time they find the file locked).
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool this storage holds (for
/// reads); the body is compiled once per backend.
macro_rules! on_pool {
    ($storage:expr, |$pool:ident| $body:expr) => {
        match &$storage.pool {
            Pool::Sqlite { read: $pool, .. } => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// [`on_pool`] for statements that write.
macro_rules! on_writer {
    ($storage:expr, |$pool:ident| $body:expr) => {
        match &$storage.pool {
            Pool::Sqlite { write: $pool, .. } => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Binds a [`NewExecution`]'s columns of [`INSERT_EXECUTION`] (nine a row)
/// with its enforcement and creation time.
macro_rules! bind_execution {
    ($query:expr, $e:expr, $enforcement:expr, $now:expr) => {
        $query
            .bind(&$e.action)
            .bind(Json(&$e.params))
            .bind(&$e.status_reason)
            .bind(Json(&$e.capabilities))
            .bind(&$e.rule)
            .bind($enforcement)
            .bind($e.max_attempts)
            .bind($e.timeout_ms)
            .bind($now)
    };
}

mod pipeline;

pub use pipeline::{Finished, MISFIRE_FIRE_ONCE, MISFIRE_SKIP, NewEnforcement, NewEvent, Reaped};

/// Binds a rule's [`RULE_FIELDS`] and then `$now`, for inserts and updates alike.
macro_rules! bind_rule {
    ($query:expr, $rule:expr, $now:expr) => {
        $query
            .bind(&$rule.r#ref)
            .bind(&$rule.description)
            .bind(&$rule.trigger)
            .bind(Json(&$rule.trigger_params))
            .bind(&$rule.criteria)
            .bind(&$rule.action)
            .bind(Json(&$rule.action_params))
            .bind($rule.enabled)
            .bind($rule.timeout_ms)
            .bind($rule.max_attempts)
            .bind($now)
    };
}

/// The database: SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pool: Pool,
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Longest page a list call returns.
pub const MAX_PAGE: i64 = 500;

impl Storage {
    /// Connects to `url` (`sqlite://path` or `postgres://…`) and applies
    /// migrations. SQLite files are created if missing and run in WAL mode.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            // The writer first: it creates the file and sets WAL mode. A
            // connection to a local file needs no ping before each use (the
            // pool's default), which would double the hand-offs to its thread.
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await?;
            let read = SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            Pool::Sqlite { read, write }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StorageError::BadUrl(url.to_string()));
        };
        let storage = Storage { pool };
        storage.migrate().await?;
        Ok(storage)
    }

    /// How write transactions begin. On SQLite `IMMEDIATE` takes the write
    /// lock up front: a deferred transaction that reads, then writes, fails
    /// with "database is locked" when another writer committed in between,
    /// instead of waiting its turn.
    fn begin_sql(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite { .. } => "BEGIN IMMEDIATE",
            Pool::Postgres(_) => "BEGIN",
        }
    }

    /// Suffix that lets concurrent claimers pass over rows another
    /// transaction holds: PostgreSQL's `FOR UPDATE SKIP LOCKED`; nothing on
    /// SQLite, whose `BEGIN IMMEDIATE` already serializes writers.
    fn skip_locked(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Pool::Sqlite { .. } => "",
        }
    }

    /// Which dialect this storage speaks.
    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite { .. } => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Applies pending migrations for this dialect.
    pub async fn migrate(&self) -> Result<()> {
        on_writer!(self, |p| migrate::run(p, self.dialect()).await)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        on_pool!(self, |p| sqlx::query("SELECT 1").execute(p).await.is_ok())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// Wakes workers on other nodes (PostgreSQL `NOTIFY`; nothing on SQLite,
    /// where one process holds the database).
    pub async fn notify_work(&self) -> Result<()> {
        if let Pool::Postgres(p) = &self.pool {
            sqlx::query("SELECT pg_notify('attune_work', '')")
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// A listener for [`Storage::notify_work`] (PostgreSQL only).
    pub async fn work_listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        match &self.pool {
            Pool::Postgres(p) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(p).await?;
                listener.listen("attune_work").await?;
                Ok(Some(listener))
            }
            Pool::Sqlite { .. } => Ok(None),
        }
    }

    // ---- packs and components ------------------------------------------

    /// Registers a pack with its components and actions, all or nothing.
    ///
    /// Same name and version with the same digest is a no-op
    /// ([`Registered::Unchanged`]); with a different digest it is a conflict.
    /// A new version replaces the pack's actions.
    pub async fn register_pack(&self, pack: &NewPack) -> Result<Registered> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let existing = sqlx::query("SELECT version, digest FROM pack WHERE name = $1")
                .bind(&pack.name)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match existing {
                Some(row) => {
                    let version = row.text("version");
                    let digest = row.text("digest");
                    if version == pack.version && digest == pack.digest {
                        return Ok(Registered::Unchanged);
                    }
                    if version == pack.version {
                        return Err(StorageError::Conflict(format!(
                            "pack {} {} is already registered with different content",
                            pack.name, pack.version
                        )));
                    }
                    sqlx::query(
                        "UPDATE pack SET version = $2, description = $3, digest = $4, updated_at = $5 WHERE name = $1",
                    )
                    .bind(&pack.name)
                    .bind(&pack.version)
                    .bind(&pack.description)
                    .bind(&pack.digest)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM action WHERE pack = $1")
                        .bind(&pack.name)
                        .execute(&mut *tx)
                        .await?;
                    Registered::Upgraded
                }
                None => {
                    sqlx::query(
                        "INSERT INTO pack (name, version, description, digest, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(&pack.name)
                    .bind(&pack.version)
                    .bind(&pack.description)
                    .bind(&pack.digest)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    Registered::Created
                }
            };
            for c in &pack.components {
                sqlx::query(
                    "INSERT INTO component (digest, size, bytes, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING",
                )
                .bind(&c.digest)
                .bind(c.bytes.len() as i64)
                .bind(&c.bytes[..])
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            for a in &pack.actions {
                sqlx::query(
                    "INSERT INTO action (ref, pack, name, component, params_schema, result_schema, error_schema, capabilities, description) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&a.r#ref)
                .bind(&pack.name)
                .bind(&a.name)
                .bind(&a.component)
                .bind(Json(&a.params_schema))
                .bind(Json(&a.result_schema))
                .bind(a.error_schema.as_ref().map(Json))
                .bind(Json(&a.capabilities))
                .bind(&a.description)
                .execute(&mut *tx)
                .await
                .map_err(|e| StorageError::from_sqlx(e, || format!("action {} exists in another pack", a.r#ref)))?;
            }
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Packs ordered by name, after `after`.
    pub async fn list_packs(&self, page: &Page) -> Result<Vec<PackRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT name, version, description, digest, created_at, updated_at FROM pack WHERE name > $1 ORDER BY name LIMIT $2",
            )
            .bind(page.after_text())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(PackRecord::from_row).collect())
        })
    }

    /// One pack by name.
    pub async fn get_pack(&self, name: &str) -> Result<Option<PackRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT name, version, description, digest, created_at, updated_at FROM pack WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(PackRecord::from_row))
        })
    }

    /// Deletes a pack and its actions; false when there was none.
    pub async fn delete_pack(&self, name: &str) -> Result<bool> {
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query("DELETE FROM action WHERE pack = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM pack WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// The bytes of a stored component.
    pub async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        on_pool!(self, |p| {
            let row = sqlx::query("SELECT bytes FROM component WHERE digest = $1")
                .bind(digest)
                .fetch_optional(p)
                .await?;
            Ok(row.map(|r| r.bytes("bytes")))
        })
    }

    // ---- actions ---------------------------------------------------------

    /// Actions ordered by ref, optionally of one pack.
    pub async fn list_actions(&self, pack: Option<&str>, page: &Page) -> Result<Vec<ActionRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT ref, pack, name, component, params_schema, result_schema, error_schema, capabilities, description \
                 FROM action WHERE ref > $1 AND ($2 IS NULL OR pack = $2) ORDER BY ref LIMIT $3",
            )
            .bind(page.after_text())
            .bind(pack)
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(ActionRecord::from_row).collect())
        })
    }

    /// One action by ref.
    pub async fn get_action(&self, r#ref: &str) -> Result<Option<ActionRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT ref, pack, name, component, params_schema, result_schema, error_schema, capabilities, description \
                 FROM action WHERE ref = $1",
            )
            .bind(r#ref)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(ActionRecord::from_row))
        })
    }

    // ---- trigger types -----------------------------------------------------

    /// Inserts or refreshes a trigger type.
    pub async fn upsert_trigger_type(&self, t: &TriggerTypeRecord) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO trigger_type (ref, description, params_schema, payload_schema) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (ref) DO UPDATE SET description = excluded.description, \
                 params_schema = excluded.params_schema, payload_schema = excluded.payload_schema",
            )
            .bind(&t.r#ref)
            .bind(&t.description)
            .bind(Json(&t.params_schema))
            .bind(Json(&t.payload_schema))
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Trigger types ordered by ref.
    pub async fn list_trigger_types(&self, page: &Page) -> Result<Vec<TriggerTypeRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT ref, description, params_schema, payload_schema FROM trigger_type WHERE ref > $1 ORDER BY ref LIMIT $2",
            )
            .bind(page.after_text())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(TriggerTypeRecord::from_row).collect())
        })
    }

    /// One trigger type.
    pub async fn get_trigger_type(&self, r#ref: &str) -> Result<Option<TriggerTypeRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT ref, description, params_schema, payload_schema FROM trigger_type WHERE ref = $1",
            )
            .bind(r#ref)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(TriggerTypeRecord::from_row))
        })
    }

    // ---- rules -------------------------------------------------------------

    /// Saves a new rule.
    pub async fn insert_rule(&self, rule: &RuleSpec) -> Result<RuleRecord> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row = bind_rule!(
                sqlx::query(&format!(
                    "INSERT INTO rule ({RULE_FIELDS}, updated_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {RULE_COLUMNS}"
                )),
                rule,
                now
            )
            .fetch_one(p)
            .await
            .map_err(|e| StorageError::from_sqlx(e, || format!("rule {} already exists", rule.r#ref)))?;
            Ok(RuleRecord::from_row(&row))
        })
    }

    /// Replaces a rule's definition; `None` when it does not exist.
    pub async fn update_rule(&self, r#ref: &str, rule: &RuleSpec) -> Result<Option<RuleRecord>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row = bind_rule!(
                sqlx::query(&format!(
                    "UPDATE rule SET ({RULE_FIELDS}, updated_at) = \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) WHERE ref = $12 RETURNING {RULE_COLUMNS}"
                )),
                rule,
                now
            )
            .bind(r#ref)
            .fetch_optional(p)
            .await
            .map_err(|e| StorageError::from_sqlx(e, || format!("rule {} already exists", rule.r#ref)))?;
            Ok(row.as_ref().map(RuleRecord::from_row))
        })
    }

    /// Enables or disables a rule; `None` when it does not exist.
    pub async fn set_rule_enabled(&self, r#ref: &str, enabled: bool) -> Result<Option<RuleRecord>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row = sqlx::query(&format!(
                "UPDATE rule SET enabled = $2, updated_at = $3 WHERE ref = $1 RETURNING {RULE_COLUMNS}"
            ))
            .bind(r#ref)
            .bind(enabled)
            .bind(now)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(RuleRecord::from_row))
        })
    }

    /// One rule by ref.
    pub async fn get_rule(&self, r#ref: &str) -> Result<Option<RuleRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(&format!("SELECT {RULE_COLUMNS} FROM rule WHERE ref = $1"))
                .bind(r#ref)
                .fetch_optional(p)
                .await?;
            Ok(row.as_ref().map(RuleRecord::from_row))
        })
    }

    /// Rules ordered by ref, filtered by trigger, action and enabled.
    pub async fn list_rules(&self, filter: &RuleFilter, page: &Page) -> Result<Vec<RuleRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(&format!(
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
            Ok(rows.iter().map(RuleRecord::from_row).collect())
        })
    }

    /// Deletes a rule; false when there was none.
    pub async fn delete_rule(&self, r#ref: &str) -> Result<bool> {
        on_writer!(self, |p| {
            let done = sqlx::query("DELETE FROM rule WHERE ref = $1")
                .bind(r#ref)
                .execute(p)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    // ---- events ------------------------------------------------------------

    /// Records an event.
    pub async fn insert_event(
        &self,
        trigger: &str,
        payload: &Value,
        source: Option<&str>,
    ) -> Result<EventRecord> {
        let mut events = self
            .insert_events(&[NewEvent {
                trigger,
                payload,
                source,
            }])
            .await?;
        Ok(events.remove(0))
    }

    /// Events, newest first, optionally of one trigger type.
    pub async fn list_events(
        &self,
        trigger: Option<&str>,
        page: &Page,
    ) -> Result<Vec<EventRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT id, trigger, payload, source, created_at FROM event \
                 WHERE id < $1 AND ($2 IS NULL OR trigger = $2) ORDER BY id DESC LIMIT $3",
            )
            .bind(page.before_id())
            .bind(trigger)
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(EventRecord::from_row).collect())
        })
    }

    /// One event.
    pub async fn get_event(&self, id: i64) -> Result<Option<EventRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT id, trigger, payload, source, created_at FROM event WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(EventRecord::from_row))
        })
    }

    // ---- executions --------------------------------------------------------

    /// Queues an execution as `requested`.
    pub async fn insert_execution(&self, e: &NewExecution) -> Result<ExecutionRecord> {
        let now = now_ms();
        let sql = format!(
            "{INSERT_EXECUTION} VALUES {} RETURNING {EXECUTION_COLUMNS}",
            pipeline::rows_of(1, 9, Some(EXECUTION_LITERALS))
        );
        on_writer!(self, |p| {
            let row = bind_execution!(sqlx::query(&sql), e, e.enforcement, now)
                .fetch_one(p)
                .await?;
            Ok(ExecutionRecord::from_row(&row))
        })
    }

    /// One execution.
    pub async fn get_execution(&self, id: i64) -> Result<Option<ExecutionRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(ExecutionRecord::from_row))
        })
    }

    /// The ended attempts of an execution, oldest first.
    pub async fn attempts_of(&self, execution: i64) -> Result<Vec<AttemptRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT attempt, worker, status, error, started_at, finished_at FROM execution_attempt \
                 WHERE execution = $1 ORDER BY attempt",
            )
            .bind(execution)
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(AttemptRecord::from_row).collect())
        })
    }

    /// Executions, newest first, filtered by status, action and rule.
    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &Page,
    ) -> Result<Vec<ExecutionRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id < $1 AND ($2 IS NULL OR status = $2) \
                 AND ($3 IS NULL OR action = $3) AND ($4 IS NULL OR rule = $4) ORDER BY id DESC LIMIT $5"
            ))
            .bind(page.before_id())
            .bind(&filter.status)
            .bind(&filter.action)
            .bind(&filter.rule)
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(ExecutionRecord::from_row).collect())
        })
    }

    /// Cancels an execution: one not yet running ends `cancelled` at once; a
    /// running one is flagged for its worker. `None` when it does not exist.
    pub async fn cancel_execution(&self, id: i64) -> Result<Option<ExecutionRecord>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            sqlx::query(
                "UPDATE execution SET status = 'cancelled', status_reason = 'cancelled before it ran', finished_at = $2 \
                 WHERE id = $1 AND status IN ('requested', 'scheduled')",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE execution SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM execution WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(row.as_ref().map(ExecutionRecord::from_row))
        })
    }

    // ---- workers -----------------------------------------------------------

    /// Workers ordered by id.
    pub async fn list_workers(&self, page: &Page) -> Result<Vec<WorkerRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at FROM worker WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(page.after_id())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(WorkerRecord::from_row).collect())
        })
    }

    /// Every registered worker (there are few), ordered by id.
    pub async fn all_workers(&self) -> Result<Vec<WorkerRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at FROM worker ORDER BY id",
            )
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(WorkerRecord::from_row).collect())
        })
    }

    /// One worker.
    pub async fn get_worker(&self, id: i64) -> Result<Option<WorkerRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT id, name, capabilities, labels, last_heartbeat, created_at FROM worker WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(WorkerRecord::from_row))
        })
    }

    /// Registers (or refreshes) a worker by name.
    pub async fn upsert_worker(
        &self,
        name: &str,
        capabilities: &[String],
        labels: &Value,
    ) -> Result<WorkerRecord> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row = sqlx::query(
                "INSERT INTO worker (name, capabilities, labels, last_heartbeat, created_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (name) DO UPDATE SET capabilities = excluded.capabilities, labels = excluded.labels, \
                 last_heartbeat = excluded.last_heartbeat \
                 RETURNING id, name, capabilities, labels, last_heartbeat, created_at",
            )
            .bind(name)
            .bind(Json(capabilities))
            .bind(Json(labels))
            .bind(now)
            .fetch_one(p)
            .await?;
            Ok(WorkerRecord::from_row(&row))
        })
    }

    // ---- tokens ------------------------------------------------------------

    /// Stores a token's hash with its role.
    pub async fn insert_token(&self, name: &str, role: Role, hash: &str) -> Result<TokenRecord> {
        let now = now_ms();
        on_writer!(self, |p| {
            let row = sqlx::query(
                "INSERT INTO api_token (name, role, hash, created_at) VALUES ($1, $2, $3, $4) \
                 RETURNING id, name, role, created_at, revoked_at",
            )
            .bind(name)
            .bind(role.as_str())
            .bind(hash)
            .bind(now)
            .fetch_one(p)
            .await?;
            Ok(TokenRecord::from_row(&row))
        })
    }

    /// The live (not revoked) token with this hash.
    pub async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        on_pool!(self, |p| {
            let row = sqlx::query(
                "SELECT id, name, role, created_at, revoked_at FROM api_token WHERE hash = $1 AND revoked_at IS NULL",
            )
            .bind(hash)
            .fetch_optional(p)
            .await?;
            Ok(row.as_ref().map(TokenRecord::from_row))
        })
    }

    /// Tokens ordered by id (hashes are never returned).
    pub async fn list_tokens(&self, page: &Page) -> Result<Vec<TokenRecord>> {
        on_pool!(self, |p| {
            let rows = sqlx::query(
                "SELECT id, name, role, created_at, revoked_at FROM api_token WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(page.after_id())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows.iter().map(TokenRecord::from_row).collect())
        })
    }

    /// Revokes a token; false when there was no live one with this id.
    pub async fn revoke_token(&self, id: i64) -> Result<bool> {
        let now = now_ms();
        on_writer!(self, |p| {
            let done = sqlx::query(
                "UPDATE api_token SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(p)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// How many tokens exist (revoked included).
    pub async fn count_tokens(&self) -> Result<i64> {
        on_pool!(self, |p| {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM api_token")
                .fetch_one(p)
                .await?;
            Ok(row.int("n"))
        })
    }
}

/// The columns a [`RuleSpec`] fills, in the order [`bind_rule!`] binds them
/// (`$1` to `$10`, then the time as `$11`).
const RULE_FIELDS: &str = "ref, description, trigger, trigger_params, criteria, action, action_params, enabled, timeout_ms, max_attempts";

const RULE_COLUMNS: &str = "id, ref, description, trigger, trigger_params, criteria, action, action_params, enabled, timeout_ms, max_attempts, created_at, updated_at";

/// An execution's insert: nine bound columns ([`bind_execution!`]), then
/// [`EXECUTION_LITERALS`].
const INSERT_EXECUTION: &str = "INSERT INTO execution (action, params, status_reason, capabilities, rule, enforcement, \
     max_attempts, timeout_ms, created_at, status, attempt)";

/// A new execution is `requested`, on its first attempt.
const EXECUTION_LITERALS: &str = "'requested', 1";

const EXECUTION_COLUMNS: &str = "id, action, params, status, status_reason, capabilities, rule, enforcement, attempt, max_attempts, \
     timeout_ms, worker, result, error, stdout, stderr, logs, created_at, scheduled_at, started_at, finished_at, cancel_requested";
