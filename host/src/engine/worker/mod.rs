//! Workers: who can run what, the protocol between the server and
//! standalone workers, the one function that runs an assignment, and the
//! worker embedded in `attune serve`.
//!
//! - [`protocol`] — the types both sides of the worker API share.
//! - [`run`] — runs one assignment in the sandbox and produces its report;
//!   the embedded worker and `attune worker` both call it.
//! - [`embedded`] — claims, starts and reports through the database directly.

pub mod embedded;
pub mod pace;
pub mod protocol;
pub mod run;

use super::{Core, EngineError};
use crate::storage::now_ms;

/// The capabilities every worker of this build advertises: the runtime kind
/// and each host interface it links, as the runtime lists them.
pub fn capabilities() -> Vec<String> {
    crate::runtime::capabilities::advertised()
}

/// Whether a live worker advertises every one of `capabilities`.
pub async fn served(core: &Core, capabilities: &[String]) -> Result<bool, EngineError> {
    let cutoff = now_ms() - core.config.worker_ttl_ms();
    Ok(core.cache.workers(&core.storage).await?.iter().any(|w| {
        w.last_heartbeat >= cutoff && capabilities.iter().all(|c| w.capabilities.contains(c))
    }))
}
