//! Packs' key-value state (`attune:action/kv`): one row per (pack, key).
//! A key whose `expires_at` has passed reads as absent everywhere here and
//! is deleted by retention.

use super::records::*;
use super::{Pool, Result, Storage, now_ms};

/// Why a write was refused (the database itself worked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvRefusal {
    /// The key is new and the pack already holds the most keys allowed.
    TooManyKeys,
    /// `increment` found a value that is not a whole number (or overflowed).
    NotAnInteger,
}

/// Keys that are live at `$now`.
const LIVE: &str = "(expires_at IS NULL OR expires_at > $NOW)";

/// Writes a key whether or not it exists.
const UPSERT: &str = "INSERT INTO kv (pack, key, value, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (pack, key) DO UPDATE SET value = excluded.value, \
     expires_at = excluded.expires_at, updated_at = excluded.updated_at";

fn live(now_param: &str) -> String {
    LIVE.replace("$NOW", now_param)
}

/// Whether `key` may be written inside the transaction open on `tx`: it
/// exists (live or not), or the pack holds fewer than `max` live keys.
async fn kv_room<DB, C>(tx: &mut C, pack: &str, key: &str, now: i64, max: usize) -> Result<bool>
where
    DB: sqlx::Database<Connection = C>,
    C: sqlx::Connection<Database = DB>,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let exists = sqlx::query("SELECT 1 FROM kv WHERE pack = $1 AND key = $2")
        .bind(pack)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if exists {
        return Ok(true);
    }
    let count: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM kv WHERE pack = $1 AND {}",
        live("$2")
    ))
    .bind(pack)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    Ok(usize::try_from(count).is_ok_and(|n| n < max))
}

impl Storage {
    /// The value of a live key.
    pub async fn kv_get(&self, pack: &str, key: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT value FROM kv WHERE pack = $1 AND key = $2 AND {}",
            live("$3")
        );
        on_pool!(self, |p| {
            Ok(sqlx::query_scalar(&sql)
                .bind(pack)
                .bind(key)
                .bind(now_ms())
                .fetch_optional(p)
                .await?)
        })
    }

    /// Sets a key (expiring at `expires_at`, Unix ms, when given) unless it
    /// is new and the pack already holds `max_keys` live keys.
    pub async fn kv_set(
        &self,
        pack: &str,
        key: &str,
        value: &str,
        expires_at: Option<i64>,
        max_keys: usize,
    ) -> Result<std::result::Result<(), KvRefusal>> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            if !kv_room(&mut *tx, pack, key, now, max_keys).await? {
                return Ok(Err(KvRefusal::TooManyKeys));
            }
            sqlx::query(UPSERT)
                .bind(pack)
                .bind(key)
                .bind(value)
                .bind(expires_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// Adds `delta` to the whole number at a key (absent or expired: 0),
    /// keeping its expiry; returns the sum.
    pub async fn kv_increment(
        &self,
        pack: &str,
        key: &str,
        delta: i64,
        max_keys: usize,
    ) -> Result<std::result::Result<i64, KvRefusal>> {
        let now = now_ms();
        let read = format!(
            "SELECT value, expires_at FROM kv WHERE pack = $1 AND key = $2 AND {}",
            live("$3")
        );
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let current: Option<(String, Option<i64>)> = sqlx::query_as(&read)
                .bind(pack)
                .bind(key)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if current.is_none() && !kv_room(&mut *tx, pack, key, now, max_keys).await? {
                return Ok(Err(KvRefusal::TooManyKeys));
            }
            let (value, expires_at) = current.unwrap_or_else(|| ("0".into(), None));
            let Some(sum) = value
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(|n| n.checked_add(delta))
            else {
                return Ok(Err(KvRefusal::NotAnInteger));
            };
            sqlx::query(UPSERT)
                .bind(pack)
                .bind(key)
                .bind(sum.to_string())
                .bind(expires_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(sum))
        })
    }

    /// Removes a key; true when it was live.
    pub async fn kv_delete(&self, pack: &str, key: &str) -> Result<bool> {
        let sql = format!(
            "DELETE FROM kv WHERE pack = $1 AND key = $2 RETURNING {} AS live",
            live("$3")
        );
        on_writer!(self, |p| {
            let live: Option<bool> = sqlx::query_scalar(&sql)
                .bind(pack)
                .bind(key)
                .bind(now_ms())
                .fetch_optional(&mut *p)
                .await?;
            Ok(live == Some(true))
        })
    }

    /// Live keys of a pack starting with `prefix`, after the cursor, in order.
    pub async fn kv_list(&self, pack: &str, prefix: &str, page: &Page) -> Result<Vec<KvRecord>> {
        let sql = format!(
            "SELECT key, value, expires_at, updated_at FROM kv WHERE pack = $1 \
             AND substr(key, 1, length($2)) = $2 AND key > $3 AND {} ORDER BY key LIMIT $5",
            live("$4")
        );
        on_pool!(self, |p| {
            Ok(sqlx::query_as(&sql)
                .bind(pack)
                .bind(prefix)
                .bind(page.after_text())
                .bind(now_ms())
                .bind(page.limit())
                .fetch_all(p)
                .await?)
        })
    }
}
