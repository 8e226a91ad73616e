//! Per-execution host state and the `attune:action` host interfaces.
//!
//! One [`HostState`] lives in each execution's `Store`: the WASI context (no
//! environment, one scratch directory, no network), the memory limiter, the
//! execution's identity for `attune:action/context`, and the log lines sent
//! through `attune:action/log`, capped so a chatty guest cannot grow the host.

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "attune:action/action",
});

use self::attune::action::{context, log};

/// Most log lines one execution keeps; later lines are counted, not kept.
pub const MAX_LOG_LINES: usize = 1000;
/// Most bytes of log messages and fields one execution keeps.
pub const MAX_LOG_BYTES: usize = 1 << 20;

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

/// One line logged by the guest through `attune:action/log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message.
    pub message: String,
    /// Key/value fields, in the order given.
    pub fields: Vec<(String, String)>,
    /// Milliseconds since the execution started.
    pub at_ms: u64,
}

/// Everything one execution's store holds.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryCap,
    pub(crate) context: ExecutionContext,
    pub(crate) started: std::time::Instant,
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

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<log::Field>) {
        let size = message.len()
            + fields
                .iter()
                .map(|f| f.key.len() + f.value.len())
                .sum::<usize>();
        if self.logs.len() >= MAX_LOG_LINES || self.log_bytes + size > MAX_LOG_BYTES {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += size;
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.logs.push(LogLine {
            level,
            message,
            fields: fields.into_iter().map(|f| (f.key, f.value)).collect(),
            at_ms: self.started.elapsed().as_millis() as u64,
        });
    }
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

/// Adds the `attune:action` interfaces to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    context::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
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
