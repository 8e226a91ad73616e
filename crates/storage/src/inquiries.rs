//! Inquiries: what a workflow's `ask` or `wait` task waits for, and its
//! end. A task's execution is `pending` until an answer, a matching event,
//! its deadline or a cancel ends it; each of those ends it only while it is
//! still `pending`, in the transaction that records the inquiry's end, so
//! two answers racing (on two nodes) end it once.

use serde_json::Value;
use sqlx::types::Json;

use super::records::*;
use super::{Pool, Result, Storage, now_ms};

const COLUMNS: &str = "id, workflow, task, kind, spec, trigger, after_event, deadline, requested_by, rule_by, state, \
     answered_by, answered_at, created_at";

/// How an inquiry ends: its state, who ended it, and its execution's end.
pub struct InquiryEnd<'a> {
    /// `answered` or `timed_out`.
    pub state: &'a str,
    /// Who answered, or what resumed it.
    pub by: Option<&'a str>,
    /// The execution's final status.
    pub status: ExecutionStatus,
    /// Its result.
    pub result: Option<&'a Value>,
    /// Its error.
    pub error: Option<&'a Value>,
    /// When what ends it happened (an event's time; now when `None`): an
    /// answer or an event counts only before the deadline.
    pub at: Option<i64>,
}

impl Storage {
    /// Records that token `token` saved rule `rule`.
    pub async fn set_rule_author(&self, rule: &str, token: i64) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO rule_author (ref, token, at) VALUES ($1, $2, $3) \
                 ON CONFLICT (ref) DO UPDATE SET token = excluded.token, at = excluded.at",
            )
            .bind(rule)
            .bind(token)
            .bind(now_ms())
            .execute(&mut *p)
            .await?;
            Ok(())
        })
    }

    /// The token that last saved rule `rule`, if one did.
    pub async fn rule_author(&self, rule: &str) -> Result<Option<i64>> {
        on_pool!(self, |p| {
            Ok(
                sqlx::query_scalar("SELECT token FROM rule_author WHERE ref = $1")
                    .bind(rule)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }

    /// Open inquiries of `kind` (`ask` or `wait`), oldest first, at most
    /// `limit`.
    pub async fn open_inquiries(&self, kind: &str, limit: i64) -> Result<Vec<InquiryRecord>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM inquiry WHERE state = 'open' AND kind = $1 ORDER BY id LIMIT $2"
            ))
            .bind(kind)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// Open inquiries whose deadline has passed, oldest first (at most 500).
    pub async fn inquiries_due(&self, now: i64) -> Result<Vec<InquiryRecord>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM inquiry WHERE state = 'open' AND deadline IS NOT NULL AND deadline <= $1 \
                 ORDER BY deadline LIMIT 500"
            ))
            .bind(now)
            .fetch_all(p)
            .await?)
        })
    }

    /// Open waits with an event of their trigger they have not looked at,
    /// oldest first (at most `limit`): a wait that looked at every event
    /// so far costs nothing until another arrives.
    pub async fn waits_with_news(&self, limit: i64) -> Result<Vec<InquiryRecord>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM inquiry i WHERE state = 'open' AND kind = 'wait' \
                 AND EXISTS (SELECT 1 FROM event e WHERE e.trigger = i.trigger AND e.id > i.after_event) \
                 ORDER BY looked_at, id LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }

    /// One inquiry.
    pub async fn get_inquiry(&self, id: i64) -> Result<Option<InquiryRecord>> {
        on_pool!(self, |p| {
            Ok(
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM inquiry WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }

    /// The inquiries of workflow `workflow`, oldest first.
    pub async fn inquiries_of(&self, workflow: i64) -> Result<Vec<InquiryRecord>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM inquiry WHERE workflow = $1 ORDER BY id LIMIT 500"
            ))
            .bind(workflow)
            .fetch_all(p)
            .await?)
        })
    }

    /// Ends inquiry `id` and its execution as `end` says, if it is still
    /// open; false when something else ended it first.
    pub async fn end_inquiry(&self, id: i64, end: &InquiryEnd<'_>) -> Result<bool> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            // An answer or an event counts only before the deadline.
            let timely = if end.state == "timed_out" {
                ""
            } else {
                " AND NOT EXISTS (SELECT 1 FROM inquiry q WHERE q.id = $1 AND q.deadline IS NOT NULL AND q.deadline <= $6)"
            };
            let sql = format!(
                "UPDATE execution SET status = $2, result = $3, error = $4, started_at = COALESCE(started_at, created_at), \
                 finished_at = $5 WHERE id = $1 AND status = 'pending'{timely}",
            );
            let mut query = sqlx::query(&sql)
                .bind(id)
                .bind(end.status.as_str())
                .bind(end.result.map(Json))
                .bind(end.error.map(Json))
                .bind(now);
            if !timely.is_empty() {
                query = query.bind(end.at.unwrap_or(now));
            }
            let ended = query.execute(&mut *tx).await?.rows_affected() > 0;
            if !ended {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE inquiry SET state = $2, answered_by = $3, answered_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(end.state)
            .bind(end.by)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Moves an open wait past the events it has looked at, and to the
    /// back of the turn.
    pub async fn wait_looked(&self, id: i64, after_event: i64) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query(
                "UPDATE inquiry SET after_event = $2, looked_at = $3 WHERE id = $1 AND state = 'open' AND after_event < $2",
            )
            .bind(id)
            .bind(after_event)
            .bind(now_ms())
            .execute(&mut *p)
            .await?;
            Ok(())
        })
    }

    /// Events of `trigger` after event `after`, oldest first.
    pub async fn events_after(
        &self,
        trigger: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(&format!(
                "SELECT {} FROM event WHERE trigger = $1 AND id > $2 ORDER BY id LIMIT $3",
                super::sql::EVENT_COLUMNS
            ))
            .bind(trigger)
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?)
        })
    }
}
