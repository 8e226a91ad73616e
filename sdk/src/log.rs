//! Structured logging into the execution record.
//!
//! Lines go to the host through `attune:action/log`, are kept with the execution
//! and shown next to its stdout and stderr. Use [`with_fields`] for key/value
//! context; the level helpers cover the common case.

use crate::bindings::attune::action::log as host;

pub use host::Level;

/// Logs `message` at `level` with key/value `fields`.
///
/// ```ignore
/// use attune_sdk::log::{with_fields, Level};
/// with_fields(Level::Warn, "retrying", &[("host", "db1"), ("attempt", "2")]);
/// ```
pub fn with_fields(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<host::Field> = fields
        .iter()
        .map(|(key, value)| host::Field {
            key: (*key).to_string(),
            value: (*value).to_string(),
        })
        .collect();
    host::log(level, message, &fields);
}

/// Logs `message` at `trace` level.
///
/// ```ignore
/// attune_sdk::log::trace("entering parse");
/// ```
pub fn trace(message: &str) {
    with_fields(Level::Trace, message, &[]);
}

/// Logs `message` at `debug` level.
///
/// ```ignore
/// attune_sdk::log::debug("parsed 3 records");
/// ```
pub fn debug(message: &str) {
    with_fields(Level::Debug, message, &[]);
}

/// Logs `message` at `info` level.
///
/// ```ignore
/// attune_sdk::log::info("sent the notification");
/// ```
pub fn info(message: &str) {
    with_fields(Level::Info, message, &[]);
}

/// Logs `message` at `warn` level.
///
/// ```ignore
/// attune_sdk::log::warn("field `x` missing, using 0");
/// ```
pub fn warn(message: &str) {
    with_fields(Level::Warn, message, &[]);
}

/// Logs `message` at `error` level.
///
/// ```ignore
/// attune_sdk::log::error("upstream answered 503");
/// ```
pub fn error(message: &str) {
    with_fields(Level::Error, message, &[]);
}
