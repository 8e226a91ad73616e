//! State that outlives one execution, from `attune:action/kv`: keys scoped to
//! the action's pack (a cursor, a counter, ids already handled).
//!
//! Keys are 1 to 256 bytes, values up to 64 KiB, at most 10,000 keys per
//! pack. On a server the keys live in its database; `attune action run`
//! keeps them in memory for the one run.

use crate::bindings::attune::action::kv as host;

pub use host::Error;

/// The value of `key`, if it is set (and has not expired).
///
/// ```ignore
/// let cursor = attune_sdk::kv::get("cursor")?.unwrap_or_default();
/// ```
pub fn get(key: &str) -> Result<Option<String>, Error> {
    host::get(key)
}

/// Sets `key` to `value` for good.
pub fn set(key: &str, value: &str) -> Result<(), Error> {
    host::set(key, value, None)
}

/// Sets `key` to `value` for `ttl`; afterwards it reads as absent.
pub fn set_for(key: &str, value: &str, ttl: std::time::Duration) -> Result<(), Error> {
    host::set(
        key,
        value,
        Some(ttl.as_millis().min(u64::MAX as u128) as u64),
    )
}

/// Removes `key`; true when it was set.
pub fn delete(key: &str) -> Result<bool, Error> {
    host::delete(key)
}

/// The keys starting with `prefix`, in order (at most 1,000).
pub fn list_keys(prefix: &str) -> Result<Vec<String>, Error> {
    host::list_keys(prefix)
}

/// Adds `delta` to the whole number at `key` (absent counts as 0) and
/// returns the sum.
///
/// ```ignore
/// let runs = attune_sdk::kv::increment("runs", 1)?;
/// ```
pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
    host::increment(key, delta)
}
