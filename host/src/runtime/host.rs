//! Per-execution host state and the bindings of the `attune:action` world.
//!
//! One [`HostState`] lives in each execution's `Store`: the WASI context (no
//! environment, one scratch directory, no network), the memory limiter, the
//! execution's identity for `attune:action/context` and the log lines sent
//! through `attune:action/log`. Each host interface is a module beside this
//! one (`log.rs`, `context.rs`), composed in `capabilities.rs`.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "attune:action/action",
});

pub use super::context::ExecutionContext;
pub use super::log::LogLine;

/// Everything one execution's store holds.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryCap,
    pub(crate) context: ExecutionContext,
    pub(crate) started: std::time::Instant,
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) outbound: super::http::Outbound,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) log_bytes: usize,
    pub(crate) logs_dropped: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps each linear memory and table of an instance, and remembers whether
/// the cap was hit so a resulting trap can be explained.
#[derive(Debug)]
pub struct MemoryCap {
    /// Most bytes one linear memory may grow to.
    pub memory_bytes: usize,
    /// Most elements one table may grow to.
    pub table_elements: usize,
    /// Set when a growth request was refused.
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes && maximum.is_none_or(|m| desired <= m);
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements && maximum.is_none_or(|m| desired <= m))
    }
}
