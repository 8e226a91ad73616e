//! Applies the per-dialect migrations embedded in the binary, with sqlx's
//! migrator: `_sqlx_migrations` records each one applied with the checksum
//! of its file, and a database whose applied migration differs from this
//! release's file (an edited migration) is refused rather than run on.
//! Each migration runs in its own transaction; on PostgreSQL an advisory
//! lock keeps several nodes starting at once from applying one twice.
//!
//! Releases before sqlx's migrator recorded versions alone in
//! `attune_migration`. A database that has that table and not
//! `_sqlx_migrations` is bridged once, in one transaction: every version it
//! lists is recorded in `_sqlx_migrations` as applied, with the checksum of
//! this release's file and its original time, and the migrator then
//! applies whatever came later. `attune_migration` is left in place,
//! no longer written: the record of what the old runner did.

#[cfg(test)]
mod tests;

use sqlx::migrate::{Migrate, MigrateError, Migrator};

use super::{Dialect, StorageError};

/// The migrations of each dialect, embedded at build time (`build.rs`
/// rebuilds the crate when a file under `migrations/` changes).
pub(crate) static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
pub(crate) static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The table releases before sqlx's migrator recorded versions in.
pub(crate) const LEGACY_TABLE: &str = "attune_migration";

/// An arbitrary constant naming the lock held while bridging
/// `attune_migration` (sqlx's migrator takes its own while it migrates).
const LOCK_KEY: i64 = 0x6174_7475_6e65;

/// The migrations of `dialect`.
pub(crate) fn migrator(dialect: Dialect) -> &'static Migrator {
    match dialect {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    }
}

/// Migrating failed: a failure to reach or write the database keeps its
/// kind (a full disk is a refusal); anything else, an edited migration
/// above all, is a [`StorageError::Migration`].
impl From<MigrateError> for StorageError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::Execute(e) => e.into(),
            e => StorageError::Migration(e),
        }
    }
}

/// Bridges a database of an older release (see the module's docs), then
/// applies the pending migrations of `dialect` on `conn`.
pub(super) async fn run<DB, C>(conn: &mut C, dialect: Dialect) -> Result<(), StorageError>
where
    DB: sqlx::Database<Connection = C>,
    C: sqlx::Connection<Database = DB> + Migrate,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    let bridged = bridge(conn, dialect).await;
    if dialect == Dialect::Postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await;
    }
    bridged?;
    let migrated = migrator(dialect).run_direct(conn).await;
    if migrated.is_err() {
        // The migrator returns early without releasing its lock, and on
        // PostgreSQL the lock belongs to a pooled connection's session.
        let _ = conn.unlock().await;
    }
    Ok(migrated?)
}

/// Whether `table` exists in the database (the current schema on
/// PostgreSQL).
async fn table_exists<DB, C>(
    conn: &mut C,
    dialect: Dialect,
    table: &str,
) -> Result<bool, sqlx::Error>
where
    DB: sqlx::Database<Connection = C>,
    C: sqlx::Connection<Database = DB>,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let sql = match dialect {
        Dialect::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// Records in `_sqlx_migrations` every migration `attune_migration` says
/// was applied, when that table exists and `_sqlx_migrations` does not.
async fn bridge<DB, C>(conn: &mut C, dialect: Dialect) -> Result<(), StorageError>
where
    DB: sqlx::Database<Connection = C>,
    C: sqlx::Connection<Database = DB> + Migrate,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    if !table_exists(conn, dialect, LEGACY_TABLE).await?
        || table_exists(conn, dialect, "_sqlx_migrations").await?
    {
        return Ok(());
    }
    let migrations = migrator(dialect);
    // Its original time, in the type `installed_on` has.
    let installed_on = match dialect {
        Dialect::Sqlite => "datetime($5 / 1000, 'unixepoch')",
        Dialect::Postgres => "to_timestamp(CAST($5 AS double precision) / 1000)",
    };
    let insert = format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time, installed_on) \
         VALUES ($1, $2, TRUE, $3, $4, {installed_on})"
    );
    let mut tx = conn.begin().await?;
    let applied: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT version, applied_at FROM {LEGACY_TABLE} ORDER BY version"
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.ensure_migrations_table().await?;
    for (version, applied_at) in &applied {
        // A version this release does not have: the database is a later
        // release's, and migrating it back is not something to guess at.
        let Some(migration) = migrations.iter().find(|m| m.version == *version) else {
            return Err(StorageError::Migration(MigrateError::VersionMissing(
                *version,
            )));
        };
        sqlx::query(&insert)
            .bind(*version)
            .bind(&*migration.description)
            .bind(&*migration.checksum)
            .bind(0_i64)
            .bind(*applied_at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    tracing::info!(
        migrations = applied.len(),
        "recorded the migrations {LEGACY_TABLE} lists in _sqlx_migrations"
    );
    Ok(())
}
