//! Applies the per-dialect migrations embedded in the binary.
//!
//! Each migration runs in its own transaction and is recorded in
//! `attune_migration`; on PostgreSQL an advisory lock keeps several nodes
//! starting at once from applying the same migration twice.

use super::{Dialect, StorageError, now_ms};

/// `(version, sql)` per dialect, in order.
const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_pipeline.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_schedules.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_attempt_trigger.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_grants.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_worker_owner.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_secrets.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/sqlite/0008_sealed_params.sql"),
    ),
    (9, include_str!("../../../migrations/sqlite/0009_kv.sql")),
    (
        10,
        include_str!("../../../migrations/sqlite/0010_event_enforced.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/sqlite/0011_workflows.sql"),
    ),
    (
        12,
        include_str!("../../../migrations/sqlite/0012_sensors.sql"),
    ),
    (
        13,
        include_str!("../../../migrations/sqlite/0013_execution_source.sql"),
    ),
    (
        14,
        include_str!("../../../migrations/sqlite/0014_console.sql"),
    ),
    (
        17,
        include_str!("../../../migrations/sqlite/0017_chain_depth.sql"),
    ),
];
const POSTGRES: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_pipeline.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/postgres/0003_schedules.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/postgres/0004_attempt_trigger.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/postgres/0005_grants.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/postgres/0006_worker_owner.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/postgres/0007_secrets.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/postgres/0008_sealed_params.sql"),
    ),
    (9, include_str!("../../../migrations/postgres/0009_kv.sql")),
    (
        10,
        include_str!("../../../migrations/postgres/0010_event_enforced.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/postgres/0011_workflows.sql"),
    ),
    (
        12,
        include_str!("../../../migrations/postgres/0012_sensors.sql"),
    ),
    (
        13,
        include_str!("../../../migrations/postgres/0013_execution_source.sql"),
    ),
    (
        14,
        include_str!("../../../migrations/postgres/0014_console.sql"),
    ),
    (
        17,
        include_str!("../../../migrations/postgres/0017_chain_depth.sql"),
    ),
];

/// An arbitrary constant naming Attune's migration lock.
const LOCK_KEY: i64 = 0x6174_7475_6e65;

pub(super) async fn run<DB, C>(conn: &mut C, dialect: Dialect) -> Result<(), StorageError>
where
    DB: sqlx::Database<Connection = C>,
    C: sqlx::Connection<Database = DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use sqlx::Row;
    let migrations = match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    };
    if dialect == Dialect::Postgres {
        sqlx::query(&format!("SELECT pg_advisory_lock({LOCK_KEY})"))
            .execute(&mut *conn)
            .await?;
    }
    let result = async {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS attune_migration (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM attune_migration")
            .fetch_one(&mut *conn)
            .await?;
        let current: i64 = row.try_get(0)?;
        for (version, sql) in migrations.iter().filter(|(v, _)| *v > current) {
            let mut tx = conn.begin().await?;
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|source| StorageError::Migration {
                    version: *version,
                    source,
                })?;
            sqlx::query("INSERT INTO attune_migration (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "applied migration");
        }
        Ok::<(), StorageError>(())
    }
    .await;
    if dialect == Dialect::Postgres {
        let _ = sqlx::query(&format!("SELECT pg_advisory_unlock({LOCK_KEY})"))
            .execute(&mut *conn)
            .await;
    }
    result
}
