//! Per-execution host state and the bindings of the `attune:action` world.
//!
//! One [`HostState`] lives in each execution's `Store`: the WASI context (no
//! environment, one scratch directory under its quota, no network), the memory limiter, and
//! each host interface's own state — the identity for
//! `attune:action/context`, the log of `attune:action/log`, the secrets of
//! `attune:action/secrets`, the pack's store of `attune:action/kv`, the
//! outbound HTTP of `wasi:http`. Each interface is a module beside this one that
//! knows only its own state; `capabilities.rs` links them to these fields.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use super::context::ExecutionContext;
use super::http::Outbound;
use super::kv::KvState;
use super::log::LogState;
pub use super::output::LogLine;
use super::scratch::quota::ScratchQuota;
use super::secrets::SecretsState;

/// Everything one execution's store holds.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) scratch_quota: ScratchQuota,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryCap,
    pub(crate) context: ExecutionContext,
    pub(crate) log: LogState,
    pub(crate) secrets: SecretsState,
    pub(crate) kv: KvState,
    pub(crate) http: WasiHttpCtx,
    pub(crate) outbound: Outbound,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.outbound,
            table: &mut self.table,
            ctx: &mut self.http,
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
    /// The largest a linear memory grew to, in bytes.
    pub peak: usize,
    /// The largest size a refused growth asked for, in bytes.
    pub refused: usize,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes && maximum.is_none_or(|m| desired <= m);
        // Only our cap counts as hit: a memory's own declared maximum is
        // the guest's business (its growth just fails).
        self.hit |= desired > self.memory_bytes;
        if allowed {
            self.peak = self.peak.max(desired);
        } else {
            self.refused = self.refused.max(desired);
        }
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
