//! The running execution's identity: id, action ref and attempt.
//!
//! Useful for idempotency keys (`id` + `attempt`) and for messages that name
//! the action. Comes from `attune:action/context`.

use crate::bindings::attune::action::context as host;

pub use host::Execution;

/// Returns the context of the execution that is running.
///
/// ```ignore
/// let ctx = attune_sdk::context::current();
/// println!("{} attempt {}", ctx.action, ctx.attempt);
/// ```
pub fn current() -> Execution {
    host::current()
}
