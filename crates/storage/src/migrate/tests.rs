//! Migrating on both backends: a database the release before sqlx's
//! migrator created upgrades with its data, an applied migration that was
//! edited is refused, and the two dialects' migrations build one schema.

mod schema;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};

use super::{LEGACY_TABLE, migrator};
use crate::{Dialect, Storage, StorageError};

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of a test's own: a file in a temporary directory, or a
/// PostgreSQL database dropped at the end.
enum Scratch {
    Sqlite(tempfile::TempDir),
    Postgres { admin: PgConnection, name: String },
}

impl Scratch {
    fn sqlite() -> Self {
        Scratch::Sqlite(tempfile::tempdir().unwrap())
    }

    /// `None` when no PostgreSQL answers at [`ADMIN`]: the test is skipped.
    async fn postgres(what: &str) -> Option<Self> {
        let Ok(mut admin) = PgConnection::connect(ADMIN).await else {
            eprintln!("skipped: no PostgreSQL at {ADMIN}");
            return None;
        };
        let name = format!("attune_{what}_{}", hex::encode(rand::random::<[u8; 6]>()));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        Some(Scratch::Postgres { admin, name })
    }

    fn dialect(&self) -> Dialect {
        match self {
            Scratch::Sqlite(_) => Dialect::Sqlite,
            Scratch::Postgres { .. } => Dialect::Postgres,
        }
    }

    fn url(&self) -> String {
        match self {
            Scratch::Sqlite(dir) => format!("sqlite://{}", dir.path().join("attune.db").display()),
            Scratch::Postgres { name, .. } => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }

    /// A connection of its own, beside any [`Storage`].
    async fn connect(&self) -> Raw {
        match self {
            Scratch::Sqlite(dir) => Raw::Sqlite(
                SqliteConnectOptions::new()
                    .filename(dir.path().join("attune.db"))
                    .create_if_missing(true)
                    .connect()
                    .await
                    .unwrap(),
            ),
            Scratch::Postgres { .. } => {
                Raw::Postgres(PgConnection::connect(&self.url()).await.unwrap())
            }
        }
    }

    async fn drop(self) {
        if let Scratch::Postgres { mut admin, name } = self {
            sqlx::raw_sql(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}

/// A plain connection to either backend.
enum Raw {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// A row of `_sqlx_migrations`: version, checksum, success, and when.
type Applied = (i64, Vec<u8>, bool, String);

impl Raw {
    async fn execute(&mut self, sql: &str) {
        match self {
            Raw::Sqlite(c) => drop(sqlx::raw_sql(sql).execute(c).await.unwrap()),
            Raw::Postgres(c) => drop(sqlx::raw_sql(sql).execute(c).await.unwrap()),
        }
    }

    /// What `_sqlx_migrations` holds, by version.
    async fn applied(&mut self) -> Vec<Applied> {
        const SQL: &str = "SELECT version, checksum, success, CAST(installed_on AS TEXT) \
                           FROM _sqlx_migrations ORDER BY version";
        match self {
            Raw::Sqlite(c) => sqlx::query_as(SQL).fetch_all(c).await.unwrap(),
            Raw::Postgres(c) => sqlx::query_as(SQL).fetch_all(c).await.unwrap(),
        }
    }

    /// The versions `attune_migration` lists.
    async fn legacy_versions(&mut self) -> Vec<i64> {
        let sql = format!("SELECT version FROM {LEGACY_TABLE} ORDER BY version");
        match self {
            Raw::Sqlite(c) => sqlx::query_scalar(&sql).fetch_all(c).await.unwrap(),
            Raw::Postgres(c) => sqlx::query_scalar(&sql).fetch_all(c).await.unwrap(),
        }
    }

    /// Migrates as releases before sqlx's migrator did, up to `last`.
    async fn migrate_as_before(&mut self, dialect: Dialect, last: i64) {
        match self {
            Raw::Sqlite(c) => previous_release(c, dialect, last).await,
            Raw::Postgres(c) => previous_release(c, dialect, last).await,
        }
    }

    async fn close(self) {
        match self {
            Raw::Sqlite(c) => c.close().await.unwrap(),
            Raw::Postgres(c) => c.close().await.unwrap(),
        }
    }
}

/// The migration runner of the releases before sqlx's migrator, as it
/// recorded what it did: `attune_migration (version, applied_at)`, each
/// migration above the highest recorded one run in a transaction of its
/// own with its row. Here it stops after migration `last`.
async fn previous_release<DB, C>(conn: &mut C, dialect: Dialect, last: i64)
where
    DB: sqlx::Database<Connection = C>,
    C: sqlx::Connection<Database = DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use sqlx::Row;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS attune_migration (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM attune_migration")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let current: i64 = row.try_get(0).unwrap();
    let files = migrator(dialect)
        .iter()
        .filter(|m| m.version > current && m.version <= last);
    for m in files {
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql(&m.sql).execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO attune_migration (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// The versions and checksums of `dialect`'s migrations, as applied.
fn every_migration(dialect: Dialect) -> Vec<(i64, Vec<u8>, bool)> {
    migrator(dialect)
        .iter()
        .map(|m| (m.version, m.checksum.to_vec(), true))
        .collect()
}

fn without_times(applied: &[Applied]) -> Vec<(i64, Vec<u8>, bool)> {
    applied
        .iter()
        .map(|(v, c, s, _)| (*v, c.clone(), *s))
        .collect()
}

/// A database the previous release migrated up to `last`, with an event
/// in it, opens with its event, every migration recorded (and those after
/// `last` applied), and opens again without a change.
async fn a_database_of_the_previous_release_upgrades(scratch: Scratch, last: i64) {
    let dialect = scratch.dialect();
    let mut raw = scratch.connect().await;
    raw.migrate_as_before(dialect, last).await;
    raw.execute(
        r#"INSERT INTO event (trigger, payload, source, created_at) VALUES ('core.manual', '{"kept": true}', 'before', 1)"#,
    )
    .await;
    let recorded = raw.legacy_versions().await;
    let expected: Vec<i64> = migrator(dialect)
        .iter()
        .map(|m| m.version)
        .filter(|v| *v <= last)
        .collect();
    assert_eq!(recorded, expected, "the previous release's record");

    let storage = Storage::connect(&scratch.url()).await.unwrap();
    let event = storage
        .get_event(1)
        .await
        .unwrap()
        .expect("the event is kept");
    assert_eq!(event.payload, serde_json::json!({"kept": true}));
    assert_eq!(event.source.as_deref(), Some("before"));
    assert_eq!(event.depth, 0);
    storage.close().await;
    let applied = raw.applied().await;
    assert_eq!(without_times(&applied), every_migration(dialect));
    assert_eq!(raw.legacy_versions().await, recorded, "left as it was");

    let storage = Storage::connect(&scratch.url()).await.unwrap();
    assert!(storage.get_event(1).await.unwrap().is_some());
    storage.close().await;
    assert_eq!(
        raw.applied().await,
        applied,
        "a second open changes nothing"
    );
    raw.close().await;
    scratch.drop().await;
}

/// The last migration the release before sqlx's migrator shipped, and one
/// of an older release.
const PREVIOUS: i64 = 17;
const OLDER: i64 = 14;

#[tokio::test]
async fn a_sqlite_database_of_the_previous_release_upgrades_with_its_data() {
    a_database_of_the_previous_release_upgrades(Scratch::sqlite(), PREVIOUS).await;
    a_database_of_the_previous_release_upgrades(Scratch::sqlite(), OLDER).await;
}

#[tokio::test]
async fn a_postgres_database_of_the_previous_release_upgrades_with_its_data() {
    for last in [PREVIOUS, OLDER] {
        let Some(scratch) = Scratch::postgres("upgrade").await else {
            return;
        };
        a_database_of_the_previous_release_upgrades(scratch, last).await;
    }
}

/// A database whose record of an applied migration differs from this
/// release's file is refused on open, saying which migration. (Changing
/// the checksum recorded is, to the migrator, what changing the file after
/// it was applied is.)
async fn an_edited_migration_is_refused(scratch: Scratch) {
    Storage::connect(&scratch.url())
        .await
        .unwrap()
        .close()
        .await;
    let mut raw = scratch.connect().await;
    let other = match scratch.dialect() {
        Dialect::Sqlite => "zeroblob(48)",
        Dialect::Postgres => "decode(repeat('00', 48), 'hex')",
    };
    raw.execute(&format!(
        "UPDATE _sqlx_migrations SET checksum = {other} WHERE version = 1"
    ))
    .await;
    let refused = Storage::connect(&scratch.url()).await.err();
    assert!(
        matches!(
            refused,
            Some(StorageError::Migration(
                sqlx::migrate::MigrateError::VersionMismatch(1)
            ))
        ),
        "{refused:?}"
    );
    let message = refused.unwrap().to_string();
    assert!(
        message.contains("migration 1 was previously applied but has been modified"),
        "{message}"
    );
    raw.close().await;
    scratch.drop().await;
}

#[tokio::test]
async fn an_edited_migration_is_refused_on_sqlite() {
    an_edited_migration_is_refused(Scratch::sqlite()).await;
}

#[tokio::test]
async fn an_edited_migration_is_refused_on_postgres() {
    if let Some(scratch) = Scratch::postgres("edited").await {
        an_edited_migration_is_refused(scratch).await;
    }
}
