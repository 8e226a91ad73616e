//! `attune:action/context`: which execution, action and attempt is running.
//!
//! Linked for every worker and granted to every action; it only reads the
//! identity the host set, so it records nothing.

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker};

use super::bindings::attune::action::context;

/// The capability string a worker advertises for it.
pub const CAPABILITY: &str = "attune:action/context@0.1.0";

/// Who is running: what `attune:action/context.current` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutionContext {
    /// The execution's id.
    pub id: String,
    /// The action being run, `<pack>.<action>`.
    pub action: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// How deep in a chain of causes the execution is; what it causes
    /// through outbound HTTP is one deeper (see
    /// [`crate::http::CHAIN_DEPTH_HEADER`]).
    pub depth: i64,
}

impl context::Host for ExecutionContext {
    fn current(&mut self) -> context::Execution {
        context::Execution {
            id: self.id.clone(),
            action: self.action.clone(),
            attempt: self.attempt,
        }
    }
}

/// Links `attune:action/context` to the identity `get` finds in a store.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ExecutionContext,
) -> wasmtime::Result<()> {
    context::add_to_linker::<T, HasSelf<ExecutionContext>>(linker, get)
}
