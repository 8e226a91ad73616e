//! `attune:action/log`: structured log lines from the guest, kept with the
//! execution's record.
//!
//! Linked for every worker and granted to every action; what it records is
//! capped ([`MAX_LOG_LINES`], [`MAX_LOG_BYTES`]) so a chatty guest cannot
//! grow the host — later lines are counted, not kept.

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker};

use super::host::HostState;
use super::host::attune::action::log;

/// The capability string a worker advertises for it.
pub const CAPABILITY: &str = "attune:action/log@0.1.0";

/// Most log lines one execution keeps; later lines are counted, not kept.
pub const MAX_LOG_LINES: usize = 1000;
/// Most bytes of log messages and fields one execution keeps.
pub const MAX_LOG_BYTES: usize = 1 << 20;

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

/// Links `attune:action/log`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}
