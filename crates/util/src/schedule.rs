//! When a schedule ticks: intervals, cron expressions (with seconds, in a
//! time zone) and one-shot date-times. Pure time arithmetic.
//!
//! A plan is stored with its timer row (`every_ms` for intervals, a JSON
//! `schedule` for the others), so storage computes the next tick when it
//! claims a due timer, without reading the rule again. Turning a rule's
//! trigger parameters into a plan is the triggers' business
//! (`engine::triggers::schedule`).

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

/// How a timer rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Every `every_ms`.
    Interval {
        /// Interval in ms.
        every_ms: i64,
    },
    /// On a cron schedule in a time zone.
    Cron {
        /// `sec min hour day-of-month month day-of-week [year]`.
        expression: String,
        /// IANA time zone name.
        timezone: String,
    },
    /// Once, at a Unix ms time.
    Once {
        /// When.
        at_ms: i64,
    },
}

impl Plan {
    /// `(every_ms, schedule)` as stored in the timer row.
    pub fn stored(&self) -> (i64, Option<String>) {
        match self {
            Plan::Interval { every_ms } => (*every_ms, None),
            Plan::Cron {
                expression,
                timezone,
            } => (
                0,
                Some(json!({"cron": expression, "timezone": timezone}).to_string()),
            ),
            Plan::Once { at_ms } => (0, Some(json!({"once": at_ms}).to_string())),
        }
    }

    /// The plan a timer row holds.
    pub fn from_stored(every_ms: i64, schedule: Option<&str>) -> Option<Plan> {
        let Some(schedule) = schedule else {
            return Some(Plan::Interval {
                every_ms: every_ms.max(1),
            });
        };
        let v: Value = serde_json::from_str(schedule).ok()?;
        if let Some(at) = v["once"].as_i64() {
            return Some(Plan::Once { at_ms: at });
        }
        Some(Plan::Cron {
            expression: v["cron"].as_str()?.to_string(),
            timezone: v["timezone"].as_str().unwrap_or("UTC").to_string(),
        })
    }

    /// The first tick after `now` (for a one-shot: its time, even if past).
    pub fn first(&self, now: i64) -> Option<i64> {
        match self {
            Plan::Once { at_ms } => Some(*at_ms),
            other => other.next_after(now),
        }
    }

    /// The tick after `after_ms`, if any.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Plan::Interval { every_ms } => Some(after_ms + every_ms),
            Plan::Once { .. } => None,
            Plan::Cron {
                expression,
                timezone,
            } => {
                let schedule = cron::Schedule::from_str(expression).ok()?;
                let tz = chrono_tz::Tz::from_str(timezone).ok()?;
                let after = Utc
                    .timestamp_millis_opt(after_ms)
                    .single()?
                    .with_timezone(&tz);
                schedule.after(&after).next().map(|t| t.timestamp_millis())
            }
        }
    }
}
