//! Attune: event-driven automation whose actions are WebAssembly components.
//!
//! # Layout
//!
//! - [`runtime`] — wasmtime: loading and caching components, deriving JSON
//!   Schemas from WIT, converting JSON ↔ component values, and running actions
//!   in a sandbox. Knows nothing of HTTP or SQL.
//! - [`storage`] — SQLite and PostgreSQL behind one type; every query written
//!   once for both. No HTTP.
//! - [`api`] — the HTTP API: one router per resource, the error shape, auth,
//!   the OpenAPI document. No SQL.
//! - [`packs`] — uploads: archives, manifests, validation, registration.
//! - [`rules`] — rule input and its validation at save time.
//! - [`triggers`] — built-in trigger types and timer schedules.
//! - [`scheduler`] — the pipeline: timers, rule matching and templating,
//!   enforcements, the embedded worker, leases and retries, standalone workers.
//! - [`server`] — `attune serve`: data directory, first start, serving.
//! - [`client`] — HTTP client for the CLI's client commands.
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
