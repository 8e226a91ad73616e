//! Column access that reads the same on SQLite and PostgreSQL rows.
//!
//! The schema guarantees the types (NOT NULL where read with the non-`opt`
//! accessors); a mismatch is a bug in this module, so it panics with the column
//! name rather than threading impossible errors through every caller.

use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;

pub(crate) trait DbRow {
    fn text(&self, col: &str) -> String;
    fn opt_text(&self, col: &str) -> Option<String>;
    fn int(&self, col: &str) -> i64;
    fn opt_int(&self, col: &str) -> Option<i64>;
    fn boolean(&self, col: &str) -> bool;
    fn json(&self, col: &str) -> Value;
    fn opt_json(&self, col: &str) -> Option<Value>;
    fn bytes(&self, col: &str) -> Vec<u8>;
    fn opt_bytes(&self, col: &str) -> Option<Vec<u8>>;
    /// An execution status; the schema's CHECK holds it to the known names.
    fn status(&self, col: &str) -> super::ExecutionStatus {
        let s = self.text(col);
        super::ExecutionStatus::parse(&s).unwrap_or_else(|| panic!("column {col}: status `{s}`"))
    }
}

macro_rules! impl_db_row {
    ($row:ty) => {
        impl DbRow for $row {
            fn text(&self, col: &str) -> String {
                self.try_get(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
            }
            fn opt_text(&self, col: &str) -> Option<String> {
                self.try_get(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
            }
            fn int(&self, col: &str) -> i64 {
                self.try_get(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
            }
            fn opt_int(&self, col: &str) -> Option<i64> {
                self.try_get(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
            }
            fn boolean(&self, col: &str) -> bool {
                self.try_get(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
            }
            fn json(&self, col: &str) -> Value {
                self.try_get::<Json<Value>, _>(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
                    .0
            }
            fn opt_json(&self, col: &str) -> Option<Value> {
                self.try_get::<Option<Json<Value>>, _>(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
                    .map(|j| j.0)
            }
            fn bytes(&self, col: &str) -> Vec<u8> {
                self.try_get(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
            }
            fn opt_bytes(&self, col: &str) -> Option<Vec<u8>> {
                self.try_get(col)
                    .unwrap_or_else(|e| panic!("column {col}: {e}"))
            }
        }
    };
}

impl_db_row!(sqlx::sqlite::SqliteRow);
impl_db_row!(sqlx::postgres::PgRow);
