//! Attune: event-driven automation whose actions are WebAssembly components.
//!
//! # Layout
//!
//! - [`runtime`] — wasmtime: loading and caching components, deriving JSON
//!   Schemas from WIT, converting JSON ↔ component values, and running actions
//!   in a sandbox. Knows nothing of HTTP or SQL.
//! - [`cli`] — the `attune` command line: argument parsing and output, calling
//!   into the library.
//! - [`builtin`] — packs compiled into the binary (the core pack).

pub mod api;
pub mod builtin;
pub mod cli;
pub mod client;
pub mod packs;
pub mod rules;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod storage;
pub mod triggers;
