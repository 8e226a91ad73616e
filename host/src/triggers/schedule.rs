//! When timer rules fire: intervals, cron expressions (with seconds, in a
//! time zone) and one-shot date-times.
//!
//! A plan is stored with its timer row (`every_ms` for intervals, a JSON
//! `schedule` for the others), so the timer task computes the next tick
//! without reading the rule again.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use crate::cli::units::parse_duration;
use crate::runtime::PathError;

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

fn err(path: &str, message: String) -> Vec<PathError> {
    vec![PathError {
        path: path.to_string(),
        message,
    }]
}

impl Plan {
    /// The plan of a rule on `trigger` with `params`; `Ok(None)` for triggers
    /// that are not timers. Errors carry paths under `/trigger_params`.
    pub fn of(trigger: &str, params: &Value) -> Result<Option<Plan>, Vec<PathError>> {
        match trigger {
            "core.interval" => {
                let every = params["every"].as_str().unwrap_or_default();
                let d = parse_duration(every).map_err(|e| err("/trigger_params/every", e))?;
                if d.is_zero() {
                    return Err(err(
                        "/trigger_params/every",
                        "must be greater than zero".into(),
                    ));
                }
                Ok(Some(Plan::Interval {
                    every_ms: (d.as_millis() as i64).max(1),
                }))
            }
            "core.cron" => {
                let expression = params["expression"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                cron::Schedule::from_str(&expression).map_err(|e| {
                    err(
                        "/trigger_params/expression",
                        format!(
                            "not a cron expression (sec min hour day month weekday [year]): {e}"
                        ),
                    )
                })?;
                let timezone = params["timezone"].as_str().unwrap_or("UTC").to_string();
                chrono_tz::Tz::from_str(&timezone).map_err(|_| {
                    err(
                        "/trigger_params/timezone",
                        format!("unknown time zone `{timezone}`"),
                    )
                })?;
                Ok(Some(Plan::Cron {
                    expression,
                    timezone,
                }))
            }
            "core.once" => {
                let at = params["at"].as_str().unwrap_or_default();
                let when = chrono::DateTime::parse_from_rfc3339(at).map_err(|e| {
                    err(
                        "/trigger_params/at",
                        format!("not an RFC 3339 date-time: {e}"),
                    )
                })?;
                Ok(Some(Plan::Once {
                    at_ms: when.timestamp_millis(),
                }))
            }
            _ => Ok(None),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_cron_and_once_plan_their_ticks() {
        let p = Plan::of("core.interval", &json!({"every": "10s"}))
            .unwrap()
            .unwrap();
        assert_eq!(p.next_after(1_000), Some(11_000));
        let p = Plan::of("core.cron", &json!({"expression": "*/5 * * * * *"}))
            .unwrap()
            .unwrap();
        // 2026-01-01T00:00:01Z → next multiple of 5 s.
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 1)
            .unwrap()
            .timestamp_millis();
        assert_eq!(p.next_after(t), Some(t + 4_000));
        let p = Plan::of(
            "core.cron",
            &json!({"expression": "0 0 9 * * *", "timezone": "Europe/Paris"}),
        )
        .unwrap()
        .unwrap();
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let nine_paris = Utc
            .with_ymd_and_hms(2026, 1, 1, 8, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(p.next_after(t), Some(nine_paris));
        let p = Plan::of("core.once", &json!({"at": "2030-05-01T12:00:00Z"}))
            .unwrap()
            .unwrap();
        assert_eq!(p.next_after(0), None);
        assert!(p.first(0).is_some());
        let (every, schedule) = p.stored();
        assert_eq!(Plan::from_stored(every, schedule.as_deref()), Some(p));
        assert_eq!(Plan::of("core.manual", &json!({})), Ok(None));
    }

    #[test]
    fn bad_schedules_are_errors_with_paths() {
        let e = Plan::of("core.cron", &json!({"expression": "every day"})).unwrap_err();
        assert_eq!(e[0].path, "/trigger_params/expression");
        let e = Plan::of(
            "core.cron",
            &json!({"expression": "0 * * * * *", "timezone": "Mars/Olympus"}),
        )
        .unwrap_err();
        assert_eq!(e[0].path, "/trigger_params/timezone");
        let e = Plan::of("core.once", &json!({"at": "tomorrow"})).unwrap_err();
        assert_eq!(e[0].path, "/trigger_params/at");
    }
}
