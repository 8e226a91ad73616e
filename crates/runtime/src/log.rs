//! `attune:action/log`: structured log lines from the guest, kept with the
//! execution's record.
//!
//! Linked for every worker and granted to every action; what it records is
//! capped ([`MAX_LOG_LINES`], [`MAX_LOG_BYTES`]) so a chatty guest cannot
//! grow the host — later lines are counted, not kept.

use std::time::Instant;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::attune::action::log;
pub use super::output::LogLine;

/// The capability string a worker advertises for it.
pub const CAPABILITY: &str = "attune:action/log@0.1.0";

/// Most log lines one execution keeps; later lines are counted, not kept.
pub const MAX_LOG_LINES: usize = 1000;
/// Most bytes of log messages and fields one execution keeps.
pub const MAX_LOG_BYTES: usize = 1 << 20;

/// One execution's log: what the guest logged, capped.
pub struct LogState {
    started: Instant,
    /// The lines kept.
    pub(crate) lines: Vec<LogLine>,
    bytes: usize,
    /// Lines past the caps, counted, not kept.
    pub(crate) dropped: u64,
}

impl LogState {
    /// An empty log for an execution that started at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            lines: Vec::new(),
            bytes: 0,
            dropped: 0,
        }
    }
}

impl log::Host for LogState {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<log::Field>) {
        let size = message.len()
            + fields
                .iter()
                .map(|f| f.key.len() + f.value.len())
                .sum::<usize>();
        if self.lines.len() >= MAX_LOG_LINES || self.bytes + size > MAX_LOG_BYTES {
            self.dropped += 1;
            return;
        }
        self.bytes += size;
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.lines.push(LogLine {
            level,
            message,
            fields: fields.into_iter().map(|f| (f.key, f.value)).collect(),
            at_ms: self.started.elapsed().as_millis() as u64,
        });
    }
}

/// Links `attune:action/log` to the [`LogState`] `get` finds in a store.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut LogState,
) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasSelf<LogState>>(linker, get)
}
