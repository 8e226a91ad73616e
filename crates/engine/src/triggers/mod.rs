//! Built-in trigger types, the schedules of timer triggers, and webhooks.
//!
//! [`bundled`] lists the types with their parameter and payload schemas; they
//! are stored at startup so rules can be validated against them.
//! [`schedule`] turns a timer rule's parameters into a schedule;
//! [`webhook`] verifies signed deliveries and shapes their events.

mod builtin_types;
pub mod schedule;
pub mod webhook;

use std::sync::LazyLock;

use serde_json::Value;

use attune_runtime::{PathError, validator_errors};
use attune_storage::TriggerTypeRecord;

/// The trigger type of the event every ended execution emits.
pub const FINISHED_TRIGGER: &str = "core.execution_finished";

/// The built-in types, with their payload schemas compiled, made once.
static BUILTIN: LazyLock<Vec<(TriggerTypeRecord, jsonschema::Validator)>> = LazyLock::new(|| {
    builtin_types::all()
        .into_iter()
        .map(|t| {
            let payload = jsonschema::validator_for(&t.payload_schema)
                .expect("built-in payload schemas are valid");
            (t, payload)
        })
        .collect()
});

/// Every built-in trigger type.
pub fn builtin() -> impl Iterator<Item = &'static TriggerTypeRecord> {
    BUILTIN.iter().map(|(t, _)| t)
}

/// Errors of `payload` against the payload schema of the built-in type
/// `r#ref`; `None` when there is no such type. Posted events are checked
/// here, on the hot path, without a query or a schema compile.
pub fn payload_errors(r#ref: &str, payload: &Value) -> Option<Vec<PathError>> {
    BUILTIN
        .iter()
        .find(|(t, _)| t.r#ref == r#ref)
        .map(|(_, validator)| validator_errors(validator, payload))
}
