//! Durable timers: one row per enabled timer rule with its next fire time,
//! claimed like work so that several nodes never fire the same tick twice
//! and a restart neither loses nor duplicates ticks (misfire policy explicit).

use serde_json::{Value, json};

use super::records::*;
use super::{Pool, Result, Storage, now_ms};
use attune_util::schedule::Plan;

/// A timer's misfire policy after downtime.
pub const MISFIRE_FIRE_ONCE: &str = "fire_once";
/// Skip the ticks missed during downtime.
pub const MISFIRE_SKIP: &str = "skip";

/// A one-shot timer later than this after its time counts as missed.
const ONCE_GRACE_MS: i64 = 60_000;

/// Ticks of `plan` after `scheduled` that are also due by `now`, and the
/// first tick after `now`.
fn ticks_missed(plan: &Plan, scheduled: i64, now: i64) -> (i64, Option<i64>) {
    if let Plan::Interval { every_ms } = plan {
        // Closed form: a long downtime on a short interval costs nothing.
        let every = (*every_ms).max(1);
        let missed = (now - scheduled).max(0) / every;
        return (missed, Some(scheduled + (missed + 1) * every));
    }
    let mut missed = 0;
    let mut next = plan.next_after(scheduled);
    while let Some(n) = next {
        if n > now || missed >= 100_000 {
            break;
        }
        missed += 1;
        next = plan.next_after(n);
    }
    (missed, next)
}

/// A timer tick that is due: the event its rule's trigger emits. The tick
/// is claimed (the timer advanced) when this is returned; the event goes
/// through the engine's event door like any other.
#[derive(Debug, Clone)]
pub struct Tick {
    /// The rule whose timer fired.
    pub rule: String,
    /// Its trigger type.
    pub trigger: &'static str,
    /// `{"count", "scheduled_at", "missed"}`.
    pub payload: Value,
}

/// A timer that is due, as [`Storage::fire_due_timers`] reads it.
#[derive(sqlx::FromRow)]
struct DueTimer {
    rule: String,
    every_ms: i64,
    next_fire_at: i64,
    count: i64,
    skipped: i64,
    misfire: String,
    schedule: Option<String>,
}

impl Storage {
    /// Creates, updates or removes the timer of `rule` to match its
    /// definition: enabled rules on timer triggers have one.
    pub async fn sync_timer(&self, rule: &RuleRecord, plan: Option<&Plan>) -> Result<()> {
        let now = now_ms();
        let misfire = rule.spec.trigger_params["misfire"]
            .as_str()
            .unwrap_or(MISFIRE_FIRE_ONCE)
            .to_string();
        let plan = plan.filter(|_| rule.spec.enabled);
        on_writer!(self, |p| {
            match plan.and_then(|plan| plan.first(now).map(|first| (plan.stored(), first))) {
                None => {
                    sqlx::query("DELETE FROM timer WHERE rule = $1")
                        .bind(&rule.spec.r#ref)
                        .execute(&mut *p)
                        .await?;
                }
                Some(((every, schedule), first)) => {
                    // A changed schedule restarts; an unchanged one keeps its
                    // next tick (restarts neither lose nor add ticks).
                    sqlx::query(
                        "INSERT INTO timer (rule, every_ms, next_fire_at, misfire, schedule) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (rule) DO UPDATE SET misfire = excluded.misfire, \
                         next_fire_at = CASE WHEN timer.every_ms = excluded.every_ms \
                           AND timer.schedule IS NOT DISTINCT FROM excluded.schedule \
                           THEN timer.next_fire_at ELSE excluded.next_fire_at END, \
                         every_ms = excluded.every_ms, schedule = excluded.schedule",
                    )
                    .bind(&rule.spec.r#ref)
                    .bind(every)
                    .bind(first)
                    .bind(&misfire)
                    .bind(schedule)
                    .execute(&mut *p)
                    .await?;
                }
            }
            Ok(())
        })
    }

    /// Removes a rule's timer.
    pub async fn delete_timer(&self, rule: &str) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query("DELETE FROM timer WHERE rule = $1")
                .bind(rule)
                .execute(&mut *p)
                .await?;
            Ok(())
        })
    }

    /// When the next timer is due, if any.
    pub async fn next_timer_due(&self) -> Result<Option<i64>> {
        on_pool!(self, |p| {
            Ok(
                sqlx::query_scalar("SELECT MIN(next_fire_at) AS due FROM timer")
                    .fetch_one(p)
                    .await?,
            )
        })
    }

    /// Claims every due timer: advances it in one transaction, so a tick is
    /// claimed exactly once even with several nodes and across restarts.
    /// Returns the tick of each timer that fires (a skipped misfire fires
    /// none).
    pub async fn fire_due_timers(&self, limit: i64) -> Result<Vec<Tick>> {
        let now = now_ms();
        let lock = self.skip_locked();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let due: Vec<DueTimer> = sqlx::query_as(&format!(
                "SELECT rule, every_ms, next_fire_at, count, skipped, misfire, schedule FROM timer \
                 WHERE next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2{lock}"
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut fired = Vec::new();
            for row in due {
                let DueTimer {
                    rule,
                    next_fire_at: scheduled,
                    ..
                } = row;
                let Some(plan) = Plan::from_stored(row.every_ms, row.schedule.as_deref()) else {
                    sqlx::query("DELETE FROM timer WHERE rule = $1")
                        .bind(&rule)
                        .execute(&mut *tx)
                        .await?;
                    continue;
                };
                let (missed, next) = ticks_missed(&plan, scheduled, now);
                let late = missed > 0
                    || (matches!(plan, Plan::Once { .. }) && now - scheduled > ONCE_GRACE_MS);
                let skip = row.misfire == MISFIRE_SKIP && late;
                let count = row.count + if skip { 0 } else { 1 };
                let skipped = row.skipped + if skip { missed + 1 } else { missed };
                match next {
                    Some(next) => {
                        sqlx::query("UPDATE timer SET next_fire_at = $2, count = $3, skipped = $4 WHERE rule = $1")
                            .bind(&rule)
                            .bind(next)
                            .bind(count)
                            .bind(skipped)
                            .execute(&mut *tx)
                            .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM timer WHERE rule = $1")
                            .bind(&rule)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                if skip {
                    tracing::info!(
                        rule,
                        skipped = missed + 1,
                        "skipped ticks missed during downtime"
                    );
                    continue;
                }
                let trigger = match plan {
                    Plan::Interval { .. } => "core.interval",
                    Plan::Cron { .. } => "core.cron",
                    Plan::Once { .. } => "core.once",
                };
                let payload = json!({"count": count, "scheduled_at": scheduled, "missed": missed});
                fired.push(Tick {
                    rule,
                    trigger,
                    payload,
                });
            }
            tx.commit().await?;
            Ok(fired)
        })
    }

    /// A timer's state: `(next_fire_at, count, skipped)`.
    pub async fn timer_state(&self, rule: &str) -> Result<Option<(i64, i64, i64)>> {
        on_pool!(self, |p| {
            Ok(
                sqlx::query_as("SELECT next_fire_at, count, skipped FROM timer WHERE rule = $1")
                    .bind(rule)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }

    /// Moves a timer's next tick (as downtime would leave it), for tests and
    /// operators re-arming a timer.
    pub async fn set_timer_next(&self, rule: &str, at: i64) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query("UPDATE timer SET next_fire_at = $2 WHERE rule = $1")
                .bind(rule)
                .bind(at)
                .execute(&mut *p)
                .await?;
            Ok(())
        })
    }
}
