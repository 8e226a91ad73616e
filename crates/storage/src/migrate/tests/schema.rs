//! Both dialects' migrations build the same schema: tables, columns (with
//! a type class and nullability), primary keys, unique constraints, and
//! indexes with their columns. Index predicates and access methods are
//! not compared (each dialect spells them its own way), nor sqlx's table.

use std::collections::BTreeSet;

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use super::{Raw, Scratch};
use crate::Storage;

/// SQLite's declared type by its affinity rules, in classes PostgreSQL's
/// types fall in too. SQLite has no boolean or JSON type: booleans are
/// INTEGER 0/1 there, JSON documents TEXT.
fn sqlite_class(declared: &str) -> String {
    let t = declared.to_ascii_uppercase();
    let class = if t.contains("INT") || t.contains("BOOL") {
        "integer"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") || t.contains("JSON") {
        "text"
    } else if t.contains("BLOB") {
        "blob"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "real"
    } else {
        return format!("unclassified {declared}");
    };
    class.to_string()
}

/// PostgreSQL's type (`information_schema`'s name) in [`sqlite_class`]'s classes.
fn postgres_class(data_type: &str) -> String {
    match data_type {
        "smallint" | "integer" | "bigint" | "boolean" => "integer",
        "text" | "character varying" | "character" | "json" | "jsonb" => "text",
        "bytea" => "blob",
        "real" | "double precision" | "numeric" => "real",
        other => return format!("unclassified {other}"),
    }
    .to_string()
}

/// The schema of a SQLite database, one line per fact.
async fn sqlite_schema(c: &mut SqliteConnection) -> BTreeSet<String> {
    let tables = "SELECT name FROM sqlite_master WHERE type = 'table' \
                  AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'";
    let columns: Vec<(String, String, String, bool, i64)> = sqlx::query_as(&format!(
        "SELECT t.name, p.name, p.type, p.\"notnull\", p.pk FROM ({tables}) t \
         JOIN pragma_table_info(t.name) p ORDER BY t.name, p.pk, p.cid"
    ))
    .fetch_all(&mut *c)
    .await
    .unwrap();
    let mut facts = BTreeSet::new();
    let mut keys = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (table, column, declared, not_null, pk) in columns {
        facts.insert(format!("table {table}"));
        // A primary key is NOT NULL whether or not it says so (SQLite lets
        // a non-integer key hold NULL only by a bug it keeps for old files).
        let null = if not_null || pk > 0 {
            "not null"
        } else {
            "null"
        };
        facts.insert(format!(
            "column {table}.{column} {} {null}",
            sqlite_class(&declared)
        ));
        if pk > 0 {
            keys.entry(table).or_default().push(column);
        }
    }
    for (table, key) in keys {
        facts.insert(format!("primary key {table}({})", key.join(", ")));
    }
    // (table, index, unique, origin: c for CREATE INDEX, u for UNIQUE, pk, columns)
    let indexes: Vec<(String, String, bool, String, String)> = sqlx::query_as(&format!(
        "SELECT t.name, l.name, l.\"unique\", l.origin, \
         (SELECT group_concat(name, ', ') FROM (SELECT i.name FROM pragma_index_info(l.name) i ORDER BY i.seqno)) \
         FROM ({tables}) t JOIN pragma_index_list(t.name) l"
    ))
    .fetch_all(&mut *c)
    .await
    .unwrap();
    for (table, name, unique, origin, columns) in indexes {
        match origin.as_str() {
            "pk" => {}
            "u" => drop(facts.insert(format!("unique {table}({columns})"))),
            _ => {
                let unique = if unique { "unique " } else { "" };
                facts.insert(format!("{unique}index {name} on {table}({columns})"));
            }
        }
    }
    facts
}

/// The schema of a PostgreSQL database (its current schema), as
/// [`sqlite_schema`] lists it.
async fn postgres_schema(c: &mut PgConnection) -> BTreeSet<String> {
    let columns: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable = 'YES' \
         FROM information_schema.columns c JOIN information_schema.tables t \
         ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
         AND c.table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut *c)
    .await
    .unwrap();
    let mut facts = BTreeSet::new();
    for (table, column, data_type, nullable) in columns {
        facts.insert(format!("table {table}"));
        let null = if nullable { "null" } else { "not null" };
        facts.insert(format!(
            "column {table}.{column} {} {null}",
            postgres_class(&data_type)
        ));
    }
    // (table, index, unique, primary, backs a constraint, columns)
    let indexes: Vec<(String, String, bool, bool, bool, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, x.indisunique, x.indisprimary, \
         EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid \
                 AND k.conrelid = t.oid AND k.contype IN ('p', 'u')), \
         (SELECT string_agg(a.attname::text, ', ' ORDER BY k.n) \
          FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
          JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND t.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&mut *c)
    .await
    .unwrap();
    for (table, name, unique, primary, constraint, columns) in indexes {
        if primary {
            facts.insert(format!("primary key {table}({columns})"));
        } else if constraint {
            facts.insert(format!("unique {table}({columns})"));
        } else {
            let unique = if unique { "unique " } else { "" };
            facts.insert(format!("{unique}index {name} on {table}({columns})"));
        }
    }
    facts
}

#[tokio::test]
async fn both_dialects_migrate_to_the_same_tables_columns_and_indexes() {
    let Some(postgres) = Scratch::postgres("schema").await else {
        return;
    };
    let sqlite = Scratch::sqlite();
    let mut schemas = vec![];
    for scratch in [&sqlite, &postgres] {
        Storage::connect(&scratch.url())
            .await
            .unwrap()
            .close()
            .await;
        schemas.push(match scratch.connect().await {
            Raw::Sqlite(mut c) => {
                let schema = sqlite_schema(&mut c).await;
                c.close().await.unwrap();
                schema
            }
            Raw::Postgres(mut c) => {
                let schema = postgres_schema(&mut c).await;
                c.close().await.unwrap();
                schema
            }
        });
    }
    let [sqlite_facts, postgres_facts] = <[_; 2]>::try_from(schemas).unwrap();
    assert!(
        sqlite_facts.iter().any(|f| f.starts_with("index ")),
        "{sqlite_facts:#?}"
    );
    let only_sqlite: Vec<_> = sqlite_facts.difference(&postgres_facts).collect();
    let only_postgres: Vec<_> = postgres_facts.difference(&sqlite_facts).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "only on SQLite: {only_sqlite:#?}\nonly on PostgreSQL: {only_postgres:#?}"
    );
    sqlite.drop().await;
    postgres.drop().await;
}
