//! Events: one at a time, or a batch of them in one statement.

use sqlx::types::Json;

use super::records::*;
use super::sql::*;
use super::{Dialect, Pool, Result, Storage, fewer_rows, now_ms};

/// The insert of `n` events with their [`bind_events`] columns, reading
/// back their ids.
pub(super) fn insert_events_sql(dialect: Dialect, n: usize) -> String {
    format!(
        "INSERT INTO event (trigger, payload, source, created_at, rules, enforced_at, depth, held_reason, requested_by) VALUES {}{}",
        rows_of(dialect, n, 9, None),
        returning_id(dialect)
    )
}

/// The records of `events`, inserted at `now` with `ids`.
pub(super) fn event_records(events: &[NewEvent<'_>], ids: Vec<i64>, now: i64) -> Vec<EventRecord> {
    events
        .iter()
        .zip(ids)
        .map(|(e, id)| EventRecord {
            id,
            trigger: e.trigger.to_string(),
            payload: e.payload.clone(),
            source: e.source.map(str::to_string),
            created_at: now,
            depth: e.depth,
            held_reason: e.held_reason.map(str::to_string),
            requested_by: e.requested_by,
        })
        .collect()
}

/// An event whose enforcements were never stored, with the rules it is
/// addressed to (`None`: every rule on its trigger).
#[derive(sqlx::FromRow)]
struct Unenforced {
    #[sqlx(flatten)]
    event: EventRecord,
    #[sqlx(json(nullable))]
    rules: Option<Vec<String>>,
}

impl Storage {
    /// Records events in one statement, to be enforced; returns them in the
    /// order given. (The event door records and enforces in one
    /// transaction: [`Storage::record_events`].)
    pub async fn insert_events(&self, events: &[NewEvent<'_>]) -> Result<Vec<EventRecord>> {
        if events.is_empty() {
            return Ok(vec![]);
        }
        let now = now_ms();
        let sql = insert_events_sql(self.dialect(), events.len());
        let ids = on_writer!(self, |p| {
            let query = bind_events!(&sql, events, now, None::<i64>);
            Ok(inserted_ids(query, &mut *p, events.len()).await?)
        })?
        .ok_or_else(|| fewer_rows("event"))?;
        Ok(event_records(events, ids, now))
    }

    /// Events stored at least `min_age_ms` ago whose enforcements were never
    /// stored (a crash or a failed write in between), oldest first, with
    /// the rules each is addressed to.
    pub async fn unenforced_events(
        &self,
        min_age_ms: i64,
        limit: i64,
    ) -> Result<Vec<(EventRecord, Option<Vec<String>>)>> {
        on_pool!(self, |p| {
            let rows: Vec<Unenforced> = sqlx::query_as(&format!(
                "SELECT {EVENT_COLUMNS}, rules FROM event \
                 WHERE enforced_at IS NULL AND created_at <= $1 ORDER BY id LIMIT $2"
            ))
            .bind(now_ms() - min_age_ms)
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|r| (r.event, r.rules)).collect())
        })
    }

    /// Events, newest first, optionally of one trigger type.
    pub async fn list_events(
        &self,
        trigger: Option<&str>,
        page: &Page,
    ) -> Result<Vec<EventRecord>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(&format!(
                "SELECT {EVENT_COLUMNS} FROM event \
                 WHERE id < $1 AND ($2 IS NULL OR trigger = $2) ORDER BY id DESC LIMIT $3"
            ))
            .bind(page.before_id())
            .bind(trigger)
            .bind(page.limit())
            .fetch_all(p)
            .await?)
        })
    }

    /// One event.
    pub async fn get_event(&self, id: i64) -> Result<Option<EventRecord>> {
        on_pool!(self, |p| {
            Ok(
                sqlx::query_as(&format!("SELECT {EVENT_COLUMNS} FROM event WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }

    /// The event an enforcement judged.
    pub async fn event_of_enforcement(&self, enforcement: i64) -> Result<Option<i64>> {
        on_pool!(self, |p| {
            Ok(
                sqlx::query_scalar("SELECT event FROM enforcement WHERE id = $1")
                    .bind(enforcement)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }

    /// How the rules that exist now judged each of these events: `(event,
    /// rule, status)`, in one read that looks up each (rule, event) pair in
    /// the enforcement table's unique index rather than scanning it.
    pub async fn enforcements_of_events(
        &self,
        events: &[i64],
    ) -> Result<Vec<(i64, String, String)>> {
        if events.is_empty() {
            return Ok(vec![]);
        }
        let dialect = self.dialect();
        on_pool!(self, |p| {
            Ok(sqlx::query_as(&format!(
                "SELECT event, rule, status FROM enforcement \
                 WHERE rule IN (SELECT ref FROM rule) AND event {} ORDER BY id",
                id_in(dialect, 1)
            ))
            .bind(id_array(dialect, events))
            .fetch_all(p)
            .await?)
        })
    }
}
