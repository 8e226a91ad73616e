//! Attune: event-driven automation whose actions are WebAssembly components.
//!
//! # Layout
//!
//! Attune is a workspace of crates along its layers; each depends only on
//! those below it, so Cargo keeps the layering:
//!
//! - `attune-util` (`crates/util`) — durations, sizes, private files,
//!   timer-schedule arithmetic and TLS material from PEM files. Uses
//!   nothing of Attune.
//! - `attune-runtime` (`crates/runtime`) — wasmtime only: loading and
//!   caching components, deriving JSON Schemas from WIT, converting JSON ↔
//!   component values, running actions in a sandbox, one module per host
//!   interface (`log`, `context`, `secrets`, `kv`, `http`, `scratch`), and
//!   the journal that records a run's host calls and answers a replay's
//!   (`journal`). Knows nothing of the API or SQL.
//! - `attune-storage` (`crates/storage`) — sqlx only: SQLite and PostgreSQL
//!   behind one type, one file per table or concern, the migrations, and
//!   whether the database takes writes. Its rows are plain data.
//! - `attune-engine` (`crates/engine`) — the domain over one `Core` handle:
//!   the event door, rules, triggers, the scheduler, workers, packs and
//!   grants, sealed secrets, key-value state, workflows (with their `ask`
//!   and `wait` tasks, and the inquiries that answer them), sensors, replay
//!   and metrics. Returns its own errors, never HTTP status codes.
//!
//! This crate, `attune`, holds the surfaces over the engine and the binary:
//!
//! - [`api`] — the HTTP API over the engine: one router per resource, auth,
//!   wire types (`api::views`), the error shape, the OpenAPI document, and
//!   the worker protocol's routes (`api::worker_protocol`). It names no
//!   storage: every read and write is an engine function.
//! - [`mcp`] — every action an MCP tool (`rmcp`): one handler over the
//!   engine (`mcp::engine_backend`: `/mcp`, streamable HTTP) or over a
//!   server's API (`mcp::api_backend`: `attune mcp`, stdio); and
//!   `attune.respond`, answering a workflow's ask (`mcp::respond`).
//! - [`console`] — the web console at `/ui`: server-rendered pages over the
//!   engine (templates, stylesheet and vendored htmx in
//!   `host/assets/console`), a token login kept as a session cookie, run
//!   forms generated from parameter and answer schemas ("Waiting for you",
//!   and the page a resume link opens). Uses the API's auth, error
//!   kinds and wire types, so a page shows what the API would.
//! - [`client`] — the HTTP client of the CLI's client commands, and the
//!   standalone worker (`attune worker`) that speaks the worker protocol.
//! - [`server`] — `attune serve`: data directory, first start, serving;
//!   the one place that opens the storage and builds the engine over it.
//! - [`cli`] — the `attune` command line: argument parsing and output,
//!   and the binary's entry (`cli::main`; `main.rs` only picks the allocator).
//! - [`bundled`] — packs compiled into the binary (the core pack).
//! - [`telemetry`] — exporting the engine's trace spans over OTLP/HTTP
//!   when `--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

pub mod api;
pub mod bundled;
pub mod cli;
pub mod client;
pub mod console;
pub mod mcp;
pub mod server;
pub mod telemetry;
