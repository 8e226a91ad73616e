//! Timer triggers' parameters turned into a [`Plan`]: `core.interval`
//! (`every`), `core.cron` (`expression`, `timezone`) and `core.once` (`at`),
//! each problem reported with its path under `/trigger_params`.

use std::str::FromStr;

use serde_json::Value;

use attune_runtime::PathError;
use attune_util::schedule::Plan;
use attune_util::units::{millis, parse_duration};

fn err(path: &str, message: String) -> Vec<PathError> {
    vec![PathError {
        path: path.to_string(),
        message,
    }]
}

/// The plan of a rule on `trigger` with `params`; `Ok(None)` for triggers
/// that are not timers. Errors carry paths under `/trigger_params`.
pub fn plan(trigger: &str, params: &Value) -> Result<Option<Plan>, Vec<PathError>> {
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
                every_ms: millis(d).max(1),
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
                    format!("not a cron expression (sec min hour day month weekday [year]): {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    #[test]
    fn intervals_cron_and_once_plan_their_ticks() {
        let p = plan("core.interval", &json!({"every": "10s"}))
            .unwrap()
            .unwrap();
        assert_eq!(p.next_after(1_000), Some(11_000));
        let p = plan("core.cron", &json!({"expression": "*/5 * * * * *"}))
            .unwrap()
            .unwrap();
        // 2026-01-01T00:00:01Z → next multiple of 5 s.
        let t = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 1)
            .unwrap()
            .timestamp_millis();
        assert_eq!(p.next_after(t), Some(t + 4_000));
        let p = plan(
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
        let p = plan("core.once", &json!({"at": "2030-05-01T12:00:00Z"}))
            .unwrap()
            .unwrap();
        assert_eq!(p.next_after(0), None);
        assert!(p.first(0).is_some());
        let (every, schedule) = p.stored();
        assert_eq!(Plan::from_stored(every, schedule.as_deref()), Some(p));
        assert_eq!(plan("core.manual", &json!({})), Ok(None));
    }

    #[test]
    fn bad_schedules_are_errors_with_paths() {
        let e = plan("core.cron", &json!({"expression": "every day"})).unwrap_err();
        assert_eq!(e[0].path, "/trigger_params/expression");
        let e = plan(
            "core.cron",
            &json!({"expression": "0 * * * * *", "timezone": "Mars/Olympus"}),
        )
        .unwrap_err();
        assert_eq!(e[0].path, "/trigger_params/timezone");
        let e = plan("core.once", &json!({"at": "tomorrow"})).unwrap_err();
        assert_eq!(e[0].path, "/trigger_params/at");
    }
}
