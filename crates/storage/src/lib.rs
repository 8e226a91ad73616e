//! Persistence on SQLite (embedded default) or PostgreSQL, behind one type.
//!
//! [`Storage`] holds either pool; every query is written once and compiled
//! for both through [`on_pool!`], so the two backends cannot drift apart.
//! SQL sticks to what both dialects share (`$n` placeholders, `RETURNING`,
//! JSON bound through `sqlx::types::Json`); what differs lives in the
//! per-dialect migrations under `migrations/` and in the few fragments of
//! `sql.rs` (id sets, reading inserted ids). Times are Unix milliseconds.
//! [`Storage::connect`] applies the migrations with sqlx's migrator, which
//! refuses a database whose applied migration differs from its file (see
//! `migrate`); a test holds the two dialects' schemas to the same tables,
//! columns and indexes.
//!
//! The API layer calls these methods and never sees SQL; errors carry a
//! [`StorageError`] kind (conflict, not found, refused) so callers can
//! answer 409/404/507 without inspecting database text. Rows decode into
//! the records through `sqlx::FromRow` (JSON columns as `#[sqlx(json)]`,
//! statuses and roles by name): a value that does not decode is a
//! [`StorageError::Database`] naming its column, never a panic. Statements
//! that run inside another's transaction are generic functions over the
//! connection, compiled for each backend like the bodies of [`on_pool!`].
//!
//! Acknowledged means committed: a write returns `Ok` only once its commit
//! returned, and a write that fails leaves no transaction behind on the
//! connection it used (see [`on_writer!`]), so it fails its own callers and
//! never the next write's. Whether the database takes writes at all (a full
//! disk, a read-only database, a data directory deleted under the server)
//! is a state kept in [`health`].

mod health;
mod migrate;
mod sql;
#[macro_use]
mod status;
mod wal;
mod writer;

pub mod records;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use health::Refusal;
pub use journals::JournalRecord;
pub use records::*;

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
    /// The database takes no writes now (a full disk, a read-only
    /// database, a data directory deleted under the server).
    #[error("{0}")]
    Refused(Refusal),
    /// Anything else from the database; logged, never shown to clients.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// Migrating the schema failed: a migration did not apply, or one the
    /// database applied differs from this release's file (its checksum).
    #[error("migrating the database failed: {0}")]
    Migration(sqlx::migrate::MigrateError),
}

/// A full disk or a read-only database is told apart here, once for every
/// query and both backends, so callers can answer 507/503 by kind.
impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        match Refusal::of(&e) {
            Some(refusal) => StorageError::Refused(refusal),
            None => StorageError::Database(e),
        }
    }
}

impl StorageError {
    /// Why the database refused the write, when that is what failed.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            StorageError::Refused(r) => Some(*r),
            _ => None,
        }
    }

    /// Whether the database refused the write (see [`StorageError::Refused`]).
    pub fn is_refused(&self) -> bool {
        matches!(self, StorageError::Refused(_))
    }

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
            _ => e.into(),
        }
    }

    /// Whether the database could not be reached (down, restarting, every
    /// connection busy past the wait): worth a 503 and a retry, not a 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                ) || matches!(e, sqlx::Error::Database(db)
                    // admin_shutdown, crash_shutdown, cannot_connect_now
                    if db.code().is_some_and(|c| c.starts_with("57P")))
            }
            _ => false,
        }
    }
}

/// How long a statement waits for a connection before failing as
/// unavailable, and how long `/readyz` waits for its answer.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// millisecond or more each time they find the file locked). `wal`
    /// checkpoints the log beside the writer (see [`wal`]).
    Sqlite {
        read: SqlitePool,
        write: Arc<tokio::sync::Mutex<writer::Writer>>,
        wal: wal::Wal,
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

/// [`on_pool`] for statements that write: `$pool` is a connection held for
/// the whole body, which evaluates to a `Result`. On SQLite it is the one
/// writer connection, held by the storage rather than a pool: a pool would
/// test it with a round trip to its thread every time it went back, and the
/// next write would wait for that.
///
/// Around the body: a storage whose files were deleted or replaced takes
/// no write; a body that fails leaves no transaction open on the writer
/// (`Writer::settle`); its failure enters or counts a refusal (full disk,
/// read-only), and a write that succeeds ends one; a write that succeeds
/// while a file the storage opened is gone is answered as refused, not as
/// stored. A storage that was closed answers `PoolClosed`.
macro_rules! on_writer {
    ($storage:expr, |$pool:ident| $body:expr) => {{
        #[allow(unused_imports)] // for the bodies that begin a transaction
        use sqlx::Connection as _;
        let storage: &$crate::Storage = &$storage;
        let result: std::result::Result<_, $crate::StorageError> =
            if !storage.health.files_in_place() {
                Err($crate::StorageError::Refused($crate::Refusal::Gone))
            } else {
                match &storage.pool {
                    Pool::Sqlite { write, wal, .. } => {
                        let mut held = write.lock().await;
                        let result: std::result::Result<_, $crate::StorageError> =
                            match held.ready().await {
                                Ok($pool) => {
                                    wal.wrote();
                                    async {
                                        let r: std::result::Result<_, $crate::StorageError> =
                                            { $body };
                                        r
                                    }
                                    .await
                                }
                                Err(e) => Err(e.into()),
                            };
                        if let Err(e) = &result {
                            held.settle(Some(e)).await;
                        }
                        result
                    }
                    Pool::Postgres(pool) => match pool.acquire().await {
                        Ok(mut held) => {
                            let $pool: &mut sqlx::PgConnection = &mut held;
                            async {
                                let r: std::result::Result<_, $crate::StorageError> = { $body };
                                r
                            }
                            .await
                        }
                        Err(e) => Err(e.into()),
                    },
                }
            };
        storage.wrote(result)
    }};
}

/// Binds a [`NewExecution`]'s columns of [`INSERT_EXECUTION`] (as
/// [`execution_rows`] lays them out in a [`Shape`]) with its enforcement
/// and creation time, in `$status` with `$reason` (by default its
/// [`NewExecution::initial_status`] and its own reason).
macro_rules! bind_execution {
    ($query:expr, $e:expr, $enforcement:expr, $now:expr, $shape:expr) => {
        bind_execution!(
            $query,
            $e,
            $enforcement,
            $now,
            $shape,
            $e.initial_status(),
            &$e.status_reason
        )
    };
    ($query:expr, $e:expr, $enforcement:expr, $now:expr, $shape:expr, $status:expr, $reason:expr) => {{
        let query = $query
            .bind(&$e.action)
            .bind(Json(&$e.params))
            .bind($reason)
            .bind(Json(&$e.capabilities))
            .bind(&$e.rule)
            .bind($enforcement)
            .bind($e.max_attempts)
            .bind($e.timeout_ms)
            .bind($now)
            .bind(&$e.sealed_params);
        match $shape {
            Shape::Plain => query,
            Shape::Status => query.bind($status.as_str()),
            Shape::Full => query
                .bind($status.as_str())
                .bind($e.parent)
                .bind(&$e.task)
                .bind(&$e.sensor)
                .bind(&$e.source)
                .bind($e.not_before)
                .bind($e.workflow.then_some($now))
                .bind($e.depth)
                .bind(&$e.trace)
                .bind(&$e.requested_by),
        }
    }};
}

/// Binds the columns of [`insert_events_sql`] for each of `$events`
/// (`$enforced`: when their enforcements are stored, or `None`).
macro_rules! bind_events {
    ($sql:expr, $events:expr, $now:expr, $enforced:expr) => {{
        let mut query = sqlx::query($sql);
        for e in $events {
            query = query
                .bind(e.trigger)
                .bind(Json(e.payload))
                .bind(e.source)
                .bind($now)
                .bind(e.rules.map(Json))
                .bind($enforced)
                .bind(e.depth)
                .bind(e.held_reason)
                .bind(e.requested_by);
        }
        query
    }};
}

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
            .bind(Json(&$rule.policies))
            .bind($now)
    };
}

// Each concern's queries, declared after the macros they use.
mod claims;
mod events;
mod executions;
mod gates;
mod inquiries;
mod journals;
mod kv;
mod packs;
mod retention;
mod rules;
mod secrets;
mod sensors;
mod sessions;
mod timers;
mod tokens;
mod workers;
mod workflows;

pub use claims::{Finished, FinishedMany, Reaped};
pub use inquiries::InquiryEnd;
pub use kv::KvRefusal;
pub use secrets::SealedSecret;
pub use sensors::{PollEnded, PollRecord};
pub use timers::{MISFIRE_FIRE_ONCE, MISFIRE_SKIP, Tick};
pub use workers::EMBEDDED_OWNER;
pub use workflows::{ChildEnded, WorkflowStep};

/// The database: SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pool: Pool,
    /// Whether writes are taken, shared by every clone.
    health: Arc<health::Health>,
    /// What policies cancelled and dropped here, shared by every clone.
    outcomes: Arc<gates::Outcomes>,
}

/// An insert that wrote fewer rows than it was given, where nothing may
/// skip one: a broken invariant, reported rather than mislabelling records.
fn fewer_rows(table: &str) -> StorageError {
    StorageError::Database(sqlx::Error::Protocol(format!(
        "an insert into {table} stored fewer rows than it was given"
    )))
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
        let health = Arc::new(health::Health::default());
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .pragma("wal_autocheckpoint", wal::BACKSTOP_PAGES.to_string());
            // The writer first: it creates the file and sets WAL mode. A
            // reader connection to a local file needs no ping before each use
            // (the pool's default), which would double the hand-offs to its
            // thread.
            let write = options.connect().await?;
            let read = SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                // Readers never create the file: opened again after the
                // data directory was deleted, they would start an empty one.
                .connect_with(options.clone().create_if_missing(false))
                .await?;
            let wal = wal::Wal::start(read.clone());
            // The file as opened: a write that finds another (or none) at
            // its path is refused (`health`).
            health.watch(options.get_filename());
            Pool::Sqlite {
                read,
                write: Arc::new(tokio::sync::Mutex::new(writer::Writer::new(write, options))),
                wal,
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StorageError::BadUrl(url.to_string()));
        };
        let storage = Storage {
            pool,
            health,
            outcomes: Default::default(),
        };
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

    /// Accounts for a write's outcome (see [`on_writer!`]): a refusal
    /// enters or counts the refusal state, a success ends it, unless a file
    /// the storage opened went away meanwhile: then what was written went
    /// into a deleted file, and is answered as refused.
    fn wrote<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Ok(_) if !self.health.files_in_place() => Err(StorageError::Refused(Refusal::Gone)),
            Ok(value) => {
                self.health.committed();
                Ok(value)
            }
            Err(StorageError::Refused(refusal)) => {
                self.health.refused(refusal);
                Err(StorageError::Refused(refusal))
            }
            Err(e) => Err(e),
        }
    }

    /// Why the database takes no writes now, if it does not: what
    /// `/readyz` says. Checks that the files it opened are still in place.
    pub fn refusal(&self) -> Option<Refusal> {
        self.health.files_in_place();
        self.health.refusal()
    }

    /// Remembers `path` (the data directory's lock file) as opened now:
    /// from then on, a write that finds it deleted or replaced is refused,
    /// and so is every one after it.
    pub fn watch_file(&self, path: &std::path::Path) -> bool {
        self.health.watch(path)
    }

    /// Runs `sql` on the writer connection (SQLite) or a connection of the
    /// pool: a test's way to make writes fail.
    #[cfg(test)]
    pub(crate) async fn writer_sql(&self, sql: &str) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::raw_sql(sql).execute(&mut *p).await?;
            Ok(())
        })
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
        let dialect = self.dialect();
        on_writer!(self, |p| migrate::run(p, dialect).await)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        let ping = async { on_pool!(self, |p| sqlx::query("SELECT 1").execute(p).await.is_ok()) };
        tokio::time::timeout(PING_TIMEOUT, ping)
            .await
            .unwrap_or(false)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { read, write, .. } => {
                read.close().await;
                write.lock().await.close().await;
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
}
