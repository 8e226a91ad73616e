//! `attune:action/context`: which execution, action and attempt is running.
//!
//! Linked for every worker and granted to every action; it only reads the
//! identity the host set, so it records nothing.

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker};

use super::host::HostState;
use super::host::attune::action::context;

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
}

impl context::Host for HostState {
    fn current(&mut self) -> context::Execution {
        context::Execution {
            id: self.context.id.clone(),
            action: self.context.action.clone(),
            attempt: self.context.attempt,
        }
    }
}

/// Links `attune:action/context`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    context::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}
