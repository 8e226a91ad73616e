//! Attune: event-driven automation whose actions are WebAssembly components.
//!
//! # Layout
//!
//! Layers, from the bottom up; a module imports only from layers below it,
//! and there are no import cycles.
//!
//! - [`util`] — durations, sizes, private files, timer-schedule arithmetic
//!   and TLS material from PEM files. Uses nothing of Attune.
//! - [`runtime`] — wasmtime only: loading and caching components, deriving
//!   JSON Schemas from WIT, converting JSON ↔ component values, running
//!   actions in a sandbox. One module per host interface (`log`, `context`,
//!   `secrets` — granted secrets and their redaction, `kv` — the pack's
//!   key-value store behind a trait, `http` — outbound HTTP checked against
//!   the pack's grant), composed in
//!   `runtime::capabilities`, from which a worker's advertised capability
//!   list is derived; `runtime::scratch` — each execution's `/scratch`
//!   and its quota, enforced by a `wasi:filesystem` view linked over
//!   wasmtime-wasi's. Knows nothing of the API or SQL.
//! - [`storage`] — sqlx only: SQLite and PostgreSQL behind one type, every
//!   query written once for both, one file per table or concern (packs,
//!   rules, events, executions, workers, tokens, timers, claims, retention,
//!   secrets, kv, workflows, sensors), and SQLite's log checkpointed beside
//!   its one writer connection (`wal`), that connection kept out of any
//!   transaction a failed write left (`writer`), and whether the database
//!   takes writes — a full disk, a read-only database, its files deleted
//!   under it (`health`).
//!   Its rows are plain data, not wire types.
//! - [`engine`] — the domain: takes one [`engine::Core`] handle and returns
//!   [`engine::EngineError`]s, never HTTP status codes. Holds the one event
//!   door (`engine::ingest`, group-committed, for posted events, webhooks,
//!   timer ticks and direct runs; one writer records each batch of events
//!   with their rules' verdicts in one transaction), the one execution path
//!   (`engine::worker::run`) and the worker protocol types both sides share
//!   (`engine::worker::protocol`), the one place that saves a rule
//!   (`engine::rules::save`), secrets in templates as whole references
//!   substituted after rendering (`engine::rules::secret_refs`), triggers (webhooks among them), the
//!   scheduler's background tasks (and the reconciler of events left
//!   unenforced), packs with their grants, secrets sealed at rest
//!   (`engine::secrets`), packs' key-value state (`engine::kv`, for the
//!   embedded worker and the worker API alike), workflows (a pure step
//!   function in `engine::workflows::step` and the conductor that applies
//!   each step in one transaction), sensors (`engine::sensors`: polls on a
//!   durable schedule, their records turned into events) and metrics.
//! - [`api`] — the HTTP API over the engine: one router per resource, auth,
//!   wire types (`api::views`), the error shape, the OpenAPI document. No SQL.
//! - [`mcp`] — every action an MCP tool (`rmcp`): one handler over the
//!   engine (`/mcp`, streamable HTTP) or over a server's API (`attune mcp`,
//!   stdio).
//! - [`console`] — the web console at `/ui`: server-rendered pages over the
//!   engine (templates, stylesheet and vendored htmx in
//!   `host/assets/console`), a token login kept as a session cookie, run
//!   forms generated from parameter schemas. Uses the API's auth, error
//!   kinds and wire types, so a page shows what the API would.
//! - [`client`] — the HTTP client of the CLI's client commands, and the
//!   standalone worker (`attune worker`) that speaks the worker protocol.
//! - [`server`] — `attune serve`: data directory, first start, serving.
//! - [`cli`] — the `attune` command line: argument parsing and output.
//! - [`builtin`] — packs compiled into the binary (the core pack).

pub mod api;
pub mod builtin;
pub mod cli;
pub mod client;
pub mod console;
pub mod engine;
pub mod mcp;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod util;
