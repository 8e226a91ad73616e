//! The built-in trigger types and their schemas.

use serde_json::json;

use attune_storage::TriggerTypeRecord;

/// Pattern of a duration string: `500ms`, `10s`, `5m`, `1h`.
const DURATION: &str = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$";

/// Every built-in trigger type.
pub(super) fn all() -> Vec<TriggerTypeRecord> {
    vec![
        TriggerTypeRecord {
            r#ref: "core.interval".into(),
            description: "Fires every `every` (e.g. 500ms, 10s, 5m).".into(),
            params_schema: json!({
                "type": "object",
                "properties": {
                    "every": {"type": "string", "pattern": DURATION, "description": "Interval, e.g. 10s."},
                    "misfire": {"enum": ["fire_once", "skip"], "description": "After downtime: fire once, or skip missed ticks."}
                },
                "required": ["every"],
                "additionalProperties": false
            }),
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "description": "Ticks fired so far by this rule, from 1."},
                    "scheduled_at": {"type": "integer", "description": "Unix ms of the tick."},
                    "missed": {"type": "integer", "description": "Ticks missed during downtime before this one."}
                }
            }),
        },
        TriggerTypeRecord {
            r#ref: "core.cron".into(),
            description: "Fires on a cron schedule with seconds, in a time zone.".into(),
            params_schema: json!({
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "minLength": 1, "description": "sec min hour day month weekday [year]."},
                    "timezone": {"type": "string", "description": "IANA name, default UTC."},
                    "misfire": {"enum": ["fire_once", "skip"]}
                },
                "required": ["expression"],
                "additionalProperties": false
            }),
            payload_schema: timer_payload(),
        },
        TriggerTypeRecord {
            r#ref: "core.once".into(),
            description: "Fires once at a date-time.".into(),
            params_schema: json!({
                "type": "object",
                "properties": {
                    "at": {"type": "string", "minLength": 1, "description": "RFC 3339 date-time."}
                },
                "required": ["at"],
                "additionalProperties": false
            }),
            payload_schema: timer_payload(),
        },
        TriggerTypeRecord {
            r#ref: "core.webhook".into(),
            description: "Fires on a signed POST to /api/v1/webhooks/<name>.".into(),
            params_schema: json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9_.-]+$", "description": "Hook name in the URL; the rule ref by default."},
                    "secret": {"type": "string", "minLength": 16, "description": "HMAC-SHA256 key for X-Hub-Signature-256."}
                },
                "required": ["secret"],
                "additionalProperties": false
            }),
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "body": {"description": "The request body, parsed as JSON."},
                    "headers": {"type": "object"}
                }
            }),
        },
        TriggerTypeRecord {
            r#ref: super::FINISHED_TRIGGER.into(),
            description: "Fires when an execution ends, with how it ended. A rule on it never fires for the executions it caused itself (nor for their workflow's tasks).".into(),
            params_schema: json!({
                "type": "object",
                "properties": {},
                "additionalProperties": false
            }),
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "execution": {"type": "integer", "description": "The execution's id."},
                    "action": {"type": "string", "description": "Its action ref."},
                    "status": {"enum": ["succeeded", "failed", "timed_out", "cancelled", "abandoned"]},
                    "rule": {"type": ["string", "null"], "description": "The rule that caused it (or its workflow)."},
                    "parent": {"type": ["integer", "null"], "description": "Its workflow's execution, for a task."},
                    "result": {"description": "Its result."},
                    "error": {"description": "Its error."}
                },
                "required": ["execution", "action", "status"]
            }),
        },
        TriggerTypeRecord {
            r#ref: crate::inquiries::OPENED_TRIGGER.into(),
            description: "Fires when a workflow's `ask` task opens an inquiry, with its prompt: a rule can post it to chat.".into(),
            params_schema: no_params(),
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "inquiry": {"type": "integer", "description": "The inquiry's id (its task's execution)."},
                    "execution": {"type": "integer", "description": "Its workflow's execution."},
                    "task": {"type": "string"},
                    "prompt": {"type": "string"},
                    "schema": {"type": "object", "description": "JSON Schema of the answer."},
                    "deadline": {"type": ["integer", "null"], "description": "Unix ms when it times out."},
                    "resume_url": {"type": "string", "description": "A signed, expiring, single-use link to answer it without a token, when the ask sets `resume_url: true`."}
                },
                "required": ["inquiry", "execution", "task", "prompt"]
            }),
        },
        TriggerTypeRecord {
            r#ref: crate::inquiries::ANSWERED_TRIGGER.into(),
            description: "Fires when an inquiry is answered, with the answer and who gave it.".into(),
            params_schema: no_params(),
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "inquiry": {"type": "integer"},
                    "execution": {"type": "integer"},
                    "task": {"type": "string"},
                    "answered_by": {"type": "string"},
                    "answer": {"type": "object"}
                },
                "required": ["inquiry", "execution", "task", "answered_by", "answer"]
            }),
        },
        TriggerTypeRecord {
            r#ref: "core.manual".into(),
            description: "Events posted through POST /api/v1/events.".into(),
            params_schema: json!({
                "type": "object",
                "properties": {},
                "additionalProperties": false
            }),
            payload_schema: json!({"type": "object"}),
        },
    ]
}

fn no_params() -> serde_json::Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

/// What a timer's event carries: its tick count, when it was due (Unix
/// ms) and how many ticks it missed.
fn timer_payload() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "scheduled_at": {"type": "integer"},
            "missed": {"type": "integer"}
        }
    })
}
