//! A pack's sensors at upload: each names an export of one of its components
//! returning `list<T>` (or `result<list<T>, E>`) and a schedule; it becomes a
//! trigger type `<pack>.<name>` whose payload schema is `T`'s, and its
//! export is no longer an action.

use attune_runtime::PathError;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::PackError;
use crate::triggers::schedule::plan;
use attune_storage::{NewAction, NewSensor, TriggerTypeRecord, now_ms};
use attune_util::schedule::Plan;

/// The shortest interval a sensor may poll at.
pub const MIN_INTERVAL_MS: i64 = 1000;

/// `[[sensors]]` in `pack.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorInput {
    /// Its trigger type is `<pack>.<name>`.
    pub name: String,
    /// The component export to call.
    pub export: String,
    /// Poll interval, like `30s`.
    #[serde(default)]
    pub every: Option<String>,
    /// Or a cron schedule (with seconds).
    #[serde(default)]
    pub cron: Option<String>,
    /// The cron schedule's time zone (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// What it watches; the export's WIT docs by default.
    #[serde(default)]
    pub description: Option<String>,
}

/// Checks `sensors` against the pack's component `actions` (by ref), marks
/// their exports as sensors, and returns the sensors with their trigger types.
pub fn check(
    pack: &str,
    sensors: &[SensorInput],
    actions: &mut BTreeMap<String, NewAction>,
) -> Result<(Vec<NewSensor>, Vec<TriggerTypeRecord>), PackError> {
    let mut errors: Vec<PathError> = Vec::new();
    let mut out = Vec::new();
    let mut types = Vec::new();
    for (n, input) in sensors.iter().enumerate() {
        let at = format!("/sensors/{n}");
        let r#ref = format!("{pack}.{}", input.name);
        if !crate::rules::valid_ref(&r#ref) || input.name.contains('.') {
            errors.push(PathError::new(
                format!("{at}/name"),
                "lowercase letters, digits, `_` and `-`",
            ));
            continue;
        }
        if sensors[..n].iter().any(|s| s.name == input.name) {
            errors.push(PathError::new(
                format!("{at}/name"),
                format!("a second sensor `{}`", input.name),
            ));
        }
        let action_ref = format!("{pack}.{}", input.export);
        let Some(action) = actions.get_mut(&action_ref) else {
            errors.push(PathError::new(
                format!("{at}/export"),
                format!("no component of the pack exports `{}`", input.export),
            ));
            continue;
        };
        let takes_nothing = action.params_schema["properties"]
            .as_object()
            .is_none_or(|p| p.is_empty());
        let items = match (
            &action.result_schema["type"],
            &action.result_schema["items"],
        ) {
            (Value::String(t), items) if t == "array" && !items.is_null() => Some(items.clone()),
            _ => None,
        };
        let (true, Some(items)) = (takes_nothing, items) else {
            errors.push(PathError::new(
                format!("{at}/export"),
                format!(
                    "`{}` must be `func() -> list<T>` or `func() -> result<list<T>, E>`",
                    input.export
                ),
            ));
            continue;
        };
        let schedule = match (&input.every, &input.cron) {
            (Some(every), None) => plan("core.interval", &json!({"every": every})),
            (None, Some(cron)) => plan(
                "core.cron",
                &json!({"expression": cron, "timezone": input.timezone.as_deref().unwrap_or("UTC")}),
            ),
            _ => {
                errors.push(PathError::new(
                    at.clone(),
                    "give `every` or `cron`, not both",
                ));
                continue;
            }
        };
        let plan = match schedule {
            Ok(Some(plan)) => plan,
            Ok(None) => continue,
            Err(found) => {
                for e in found {
                    let field = if input.every.is_some() {
                        "every"
                    } else {
                        "cron"
                    };
                    errors.push(PathError::new(format!("{at}/{field}"), e.message));
                }
                continue;
            }
        };
        if let Plan::Interval { every_ms } = plan
            && every_ms < MIN_INTERVAL_MS
        {
            errors.push(PathError::new(format!("{at}/every"), "at least 1s"));
            continue;
        }
        let (every_ms, stored) = plan.stored();
        let description = input
            .description
            .clone()
            .or_else(|| action.description.clone())
            .unwrap_or_else(|| format!("Records returned by {}'s `{}`", pack, input.export));
        action.sensor = true;
        types.push(TriggerTypeRecord {
            r#ref: r#ref.clone(),
            description: description.clone(),
            params_schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            payload_schema: items,
        });
        out.push(NewSensor {
            r#ref,
            action: action_ref,
            every_ms,
            schedule: stored,
            description: Some(description),
            first_run_at: plan.first(now_ms()).unwrap_or_else(now_ms),
        });
    }
    if errors.is_empty() {
        Ok((out, types))
    } else {
        Err(PackError::InvalidSensors { errors })
    }
}
